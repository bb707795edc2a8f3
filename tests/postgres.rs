//! The PostgreSQL sink against a real server, found through
//! `RINGBATCH_PG_URL` (`bin/services start` starts one; `bin/services env`
//! prints the variable). Without it each test says it was skipped, and in CI
//! (`CI` set) fails.
//!
//! Each test writes to a table of its own, made for the run and dropped at
//! the end.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringbatch::sinks::default_retry_policy;
use ringbatch::sinks::postgres::tokio_postgres::error::SqlState;
use ringbatch::sinks::postgres::tokio_postgres::{Client, Config, NoTls};
use ringbatch::sinks::postgres::{PostgresMetrics, PostgresSink, PostgresSinkError};
use ringbatch::{AsyncProducer, Batcher, Error, RetryPolicy, Stats};

/// The longest a whole test may take.
const TEST_BOUND: Duration = Duration::from_secs(300);
/// Tickets a producer holds before awaiting the oldest (under the lane's
/// 1024 result slots).
const WINDOW: usize = 256;

/// A trade's key and its ticket's result.
type Outcome = (i64, Result<(i64, i64), Error>);

/// One trade: `key` is unique over a run unless a test says otherwise.
#[derive(Debug, Clone)]
struct Trade {
    key: i64,
    producer: i32,
    seq: i64,
    qty: i64,
    reference: Option<String>,
    note: String,
}

impl Trade {
    fn new(producer: i32, seq: i64) -> Self {
        Self {
            key: i64::from(producer) << 32 | seq,
            producer,
            seq,
            qty: 1 + (seq * 7 + i64::from(producer)) % 1000,
            reference: None,
            note: format!("p{producer}/{seq}"),
        }
    }
}

/// The server's URL, or `None` (the test is skipped) outside CI.
fn pg_url(test: &str) -> Option<Config> {
    let url = common::server_env("RINGBATCH_PG_URL", test)?;
    Some(
        url.parse().unwrap_or_else(|e| {
            panic!("RINGBATCH_PG_URL={url} is not a valid connection string: {e}")
        }),
    )
}

async fn connect(config: &Config) -> Client {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the PostgreSQL server: {e}"));
    tokio::spawn(connection);
    client
}

/// A fresh table named after the test and this process.
async fn create_table(client: &Client, test: &str) -> String {
    let table = format!("rb_{test}_{}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (
                 id bigserial PRIMARY KEY,
                 key int8 NOT NULL UNIQUE,
                 producer int4 NOT NULL,
                 seq int8 NOT NULL,
                 qty int8 NOT NULL CHECK (qty > 0),
                 reference text UNIQUE,
                 note text NOT NULL
             );"
        ))
        .await
        .expect("create the test table");
    table
}

/// A sink writing trades to `table`; each item resolves to `(id, key)` of
/// its row, so a ticket can be checked against its own item.
fn trade_sink(config: Config, table: &str, retry: RetryPolicy) -> PostgresSink<Trade, (i64, i64)> {
    PostgresSink::builder(config, table)
        .key("key", "int8", |t: &Trade| t.key)
        .column("producer", "int4", |t: &Trade| t.producer)
        .column("seq", "int8", |t: &Trade| t.seq)
        .column("qty", "int8", |t: &Trade| t.qty)
        .column("reference", "text", |t: &Trade| t.reference.clone())
        .column("note", "text", |t: &Trade| t.note.clone())
        .returning(["id", "key"], |row| {
            Ok((row.try_get("id")?, row.try_get("key")?))
        })
        .retry(retry)
        .attempt_timeout(Duration::from_secs(20))
        .build()
        .expect("a valid sink")
}

fn batcher(sink: PostgresSink<Trade, (i64, i64)>) -> Batcher<Trade, (i64, i64)> {
    Batcher::builder()
        .lanes(4)
        .capacity(1024)
        .max_batch(1024)
        .max_in_flight(4)
        .async_handler(sink)
        .build()
        .expect("a valid batcher")
}

/// Submits `trades` through `producer`, at most `WINDOW` awaiting at once;
/// returns each trade's key with its ticket's result, in order. Counts each
/// resolved ticket in `done`.
async fn submit_all(
    mut producer: AsyncProducer<Trade, (i64, i64)>,
    trades: Vec<Trade>,
    done: Arc<AtomicU64>,
) -> Vec<Outcome> {
    let mut results = Vec::with_capacity(trades.len());
    let mut pending = std::collections::VecDeque::with_capacity(WINDOW);
    for trade in trades {
        if pending.len() == WINDOW {
            let (key, ticket): (i64, ringbatch::Ticket<_>) = pending.pop_front().unwrap();
            results.push((key, ticket.await));
            done.fetch_add(1, Ordering::Relaxed);
        }
        let key = trade.key;
        let ticket = producer
            .submit(trade)
            .await
            .unwrap_or_else(|e| panic!("the batcher refused trade {key}: {e}"));
        pending.push_back((key, ticket));
    }
    for (key, ticket) in pending {
        results.push((key, ticket.await));
        done.fetch_add(1, Ordering::Relaxed);
    }
    results
}

/// Runs `producers` tasks, each submitting `per_producer` trades; returns
/// every (key, result) and the batcher's final stats.
async fn run_trades(
    batcher: Batcher<Trade, (i64, i64)>,
    producers: i32,
    per_producer: i64,
    done: Arc<AtomicU64>,
) -> (Vec<Outcome>, Stats) {
    let mut tasks = Vec::new();
    for p in 0..producers {
        let trades: Vec<Trade> = (0..per_producer).map(|s| Trade::new(p, s)).collect();
        tasks.push(tokio::spawn(submit_all(
            batcher.async_producer(),
            trades,
            Arc::clone(&done),
        )));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.extend(task.await.expect("a producer task panicked"));
    }
    let stats = batcher.shutdown_async().await;
    (results, stats)
}

/// Checks that every trade of the run landed once and that every ticket
/// resolved to its own row: count, distinct keys and a checksum in the
/// table, and each ticket's `(id, key)` against the table's.
async fn check_exactly_once(
    client: &Client,
    table: &str,
    results: &[Outcome],
    producers: i32,
    per_producer: i64,
) {
    let expected_rows = i64::from(producers) * per_producer;
    assert_eq!(results.len() as i64, expected_rows, "tickets resolved");
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT key), coalesce(sum(qty), 0)::int8, \
                 coalesce(sum(key % 1000003), 0)::int8 FROM {table}"
            ),
            &[],
        )
        .await
        .expect("count the rows");
    let (count, distinct, qty_sum, key_sum): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let (mut want_qty, mut want_key) = (0i64, 0i64);
    for p in 0..producers {
        for s in 0..per_producer {
            let trade = Trade::new(p, s);
            want_qty += trade.qty;
            want_key += trade.key % 1_000_003;
        }
    }
    assert_eq!(count, expected_rows, "rows in the table (each trade once)");
    assert_eq!(distinct, expected_rows, "distinct keys in the table");
    assert_eq!(qty_sum, want_qty, "checksum of qty over the table");
    assert_eq!(key_sum, want_key, "checksum of the keys over the table");

    let ids: HashMap<i64, i64> = client
        .query(&format!("SELECT key, id FROM {table}"), &[])
        .await
        .expect("read the ids")
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (key, result) in results {
        let (id, returned_key) = match result {
            Ok(value) => *value,
            Err(e) => panic!("the ticket of trade {key} failed: {e}"),
        };
        assert_eq!(
            returned_key, *key,
            "a ticket resolved to another item's row"
        );
        assert_eq!(
            ids.get(key),
            Some(&id),
            "trade {key}: the ticket's id differs from the table's"
        );
    }
}

async fn drop_table(client: &Client, table: &str) {
    client
        .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
        .await
        .expect("drop the test table");
}

fn report(test: &str, elapsed: Duration, stats: &Stats, metrics: &PostgresMetrics) {
    let m = metrics.get();
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{test}: {} items in {:.2} s, {} batches (mean {:.0} items), sink {:?}",
        stats.items_handled,
        elapsed.as_secs_f64(),
        stats.batches,
        stats.items_handled as f64 / stats.batches.max(1) as f64,
        m
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_producers_write_200k_rows_exactly_once() {
    const TEST: &str = "four_producers_write_200k_rows_exactly_once";
    let Some(config) = pg_url(TEST) else { return };
    tokio::time::timeout(TEST_BOUND, async {
        let admin = connect(&config).await;
        let table = create_table(&admin, "exactly_once").await;
        let sink = trade_sink(config.clone(), &table, default_retry_policy());
        let metrics = sink.metrics();
        let started = Instant::now();
        let (results, stats) =
            run_trades(batcher(sink), 4, 50_000, Arc::new(AtomicU64::new(0))).await;
        report(TEST, started.elapsed(), &stats, &metrics);
        check_exactly_once(&admin, &table, &results, 4, 50_000).await;
        let m = metrics.get();
        assert_eq!(m.rows_inserted, 200_000, "rows the sink inserted");
        assert_eq!(m.rejected, 0, "rows rejected");
        assert!(
            stats.batches < 200_000 / 4,
            "expected batches of several rows, got {} batches for 200000 rows",
            stats.batches
        );
        drop_table(&admin, &table).await;
    })
    .await
    .expect("the test finished within its bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_fail_only_their_own_tickets() {
    const TEST: &str = "bad_rows_fail_only_their_own_tickets";
    let Some(config) = pg_url(TEST) else { return };
    tokio::time::timeout(TEST_BOUND, async {
        let admin = connect(&config).await;
        let table = create_table(&admin, "bad_rows").await;
        // A row that holds the reference one of the trades will reuse.
        admin
            .execute(
                &format!(
                    "INSERT INTO {table} (key, producer, seq, qty, reference, note) \
                     VALUES (-1, -1, -1, 1, 'taken', 'before')"
                ),
                &[],
            )
            .await
            .expect("insert the row holding 'taken'");
        let n = 1000i64;
        let mut trades: Vec<Trade> = (0..n).map(|s| Trade::new(0, s)).collect();
        // What each bad trade breaks, and the SQLSTATE expected for it.
        let mut bad: HashMap<i64, SqlState> = HashMap::new();
        for s in [100, 101, 999] {
            trades[s as usize].qty = -(s % 3);
            bad.insert(trades[s as usize].key, SqlState::CHECK_VIOLATION);
        }
        trades[500].note = "nul \0 byte".to_string();
        bad.insert(trades[500].key, SqlState::CHARACTER_NOT_IN_REPERTOIRE);
        trades[777].reference = Some("taken".to_string());
        bad.insert(trades[777].key, SqlState::UNIQUE_VIOLATION);

        let sink = trade_sink(config.clone(), &table, default_retry_policy());
        let metrics = sink.metrics();
        let batcher = Batcher::builder()
            .lanes(1)
            .capacity(1024)
            .max_batch(1024)
            .max_in_flight(1)
            .async_handler(sink)
            .build()
            .expect("a valid batcher");
        let started = Instant::now();
        let results = submit_all(
            batcher.async_producer(),
            trades.clone(),
            Arc::new(AtomicU64::new(0)),
        )
        .await;
        let stats = batcher.shutdown_async().await;
        report(TEST, started.elapsed(), &stats, &metrics);

        for (key, result) in &results {
            match (bad.get(key), result) {
                (None, Ok((_, returned))) => assert_eq!(returned, key, "trade {key}'s row"),
                (None, Err(e)) => panic!("good trade {key} failed: {e}"),
                (Some(code), Ok(value)) => {
                    panic!("bad trade {key} (expected {code:?}) was written: {value:?}")
                }
                (Some(code), Err(e)) => {
                    let sink_error = e
                        .handler_error()
                        .and_then(|h| h.downcast_ref::<PostgresSinkError>())
                        .unwrap_or_else(|| panic!("trade {key}: not a sink error: {e:?}"));
                    assert!(
                        matches!(sink_error, PostgresSinkError::Rejected(_)),
                        "trade {key}: expected Rejected, got {sink_error:?}"
                    );
                    assert_eq!(
                        sink_error.code(),
                        Some(code),
                        "trade {key}: the database's SQLSTATE ({sink_error})"
                    );
                }
            }
        }
        let count: i64 = admin
            .query_one(&format!("SELECT count(*) FROM {table} WHERE key >= 0"), &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(count, n - bad.len() as i64, "good rows in the table");
        let landed_bad: i64 = admin
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE key = ANY($1)"),
                &[&bad.keys().copied().collect::<Vec<i64>>()],
            )
            .await
            .expect("count bad rows")
            .get(0);
        assert_eq!(landed_bad, 0, "bad rows in the table");
        let m = metrics.get();
        assert_eq!(
            m.rejected,
            bad.len() as u64,
            "rows the sink reports rejected"
        );
        assert_eq!(m.rows_inserted, (n as u64) - bad.len() as u64);
        // The bad rows shared batches with good ones: the batches were split.
        assert!(
            stats.items_handled > 2 * stats.batches,
            "expected batches of many rows, got {} batches for {} rows",
            stats.batches,
            stats.items_handled
        );
        assert!(
            m.statements > m.batches,
            "expected failed batches to be split: {m:?}"
        );
        drop_table(&admin, &table).await;
    })
    .await
    .expect("the test finished within its bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_already_landed_resolve_to_their_existing_ids() {
    const TEST: &str = "rows_that_already_landed_resolve_to_their_existing_ids";
    let Some(config) = pg_url(TEST) else { return };
    tokio::time::timeout(TEST_BOUND, async {
        let admin = connect(&config).await;
        let table = create_table(&admin, "landed").await;
        // As if an earlier attempt had committed half the trades and lost
        // the acknowledgement: their rows are there with ids of their own.
        let trades: Vec<Trade> = (0..200).map(|s| Trade::new(0, s)).collect();
        let mut landed = HashMap::new();
        for trade in trades.iter().step_by(2) {
            let id: i64 = admin
                .query_one(
                    &format!(
                        "INSERT INTO {table} (key, producer, seq, qty, note) \
                         VALUES ($1, $2, $3, $4, $5) RETURNING id"
                    ),
                    &[
                        &trade.key,
                        &trade.producer,
                        &trade.seq,
                        &trade.qty,
                        &trade.note,
                    ],
                )
                .await
                .expect("pre-insert a row")
                .get(0);
            landed.insert(trade.key, id);
        }
        let sink = trade_sink(config.clone(), &table, default_retry_policy());
        let metrics = sink.metrics();
        let batcher = batcher(sink);
        let results = submit_all(
            batcher.async_producer(),
            trades.clone(),
            Arc::new(AtomicU64::new(0)),
        )
        .await;
        batcher.shutdown_async().await;
        check_exactly_once(&admin, &table, &results, 1, 200).await;
        for (key, result) in &results {
            if let Some(id) = landed.get(key) {
                assert_eq!(
                    result.as_ref().ok().map(|r| r.0),
                    Some(*id),
                    "trade {key} landed before as row {id}"
                );
            }
        }
        let m = metrics.get();
        assert_eq!((m.rows_inserted, m.rows_existing), (100, 100), "{m:?}");
        drop_table(&admin, &table).await;
    })
    .await
    .expect("the test finished within its bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_retried_with_nothing_lost_or_duplicated() {
    const TEST: &str = "killed_connections_are_retried_with_nothing_lost_or_duplicated";
    let Some(mut config) = pg_url(TEST) else {
        return;
    };
    tokio::time::timeout(TEST_BOUND, async {
        let admin = connect(&config).await;
        let table = create_table(&admin, "killed").await;
        let app = format!("rb_kill_{}", std::process::id());
        config.application_name(&app);
        let retry = default_retry_policy()
            .with_max_retries(20)
            .with_initial_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_millis(500));
        let sink = trade_sink(config.clone(), &table, retry);
        let metrics = sink.metrics();
        let (producers, per_producer) = (4, 50_000);
        let total = (producers as u64) * per_producer as u64;
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let run = tokio::spawn(run_trades(
            batcher(sink),
            producers,
            per_producer,
            Arc::clone(&done),
        ));

        // Terminate every connection of the sink at 10%, 30%, 50%, 70% and
        // 90% of the run, from this second connection.
        let mut terminated = 0;
        for percent in [10, 30, 50, 70, 90] {
            let target = total * percent / 100;
            let deadline = Instant::now() + Duration::from_secs(120);
            while done.load(Ordering::Relaxed) < target {
                assert!(
                    Instant::now() < deadline,
                    "the run did not reach {percent}% within 120 s ({} of {total})",
                    done.load(Ordering::Relaxed)
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let rows = admin
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1",
                    &[&app],
                )
                .await
                .expect("terminate the sink's backends");
            terminated += rows.iter().filter(|r| r.get::<_, bool>(0)).count();
        }
        let (results, stats) = run.await.expect("the run panicked");
        report(TEST, started.elapsed(), &stats, &metrics);
        check_exactly_once(&admin, &table, &results, producers, per_producer).await;
        let m = metrics.get();
        assert!(terminated >= 1, "no connection of the sink was terminated");
        assert!(
            m.connects >= 2,
            "the sink never reconnected after {terminated} terminations: {m:?}"
        );
        drop_table(&admin, &table).await;
    })
    .await
    .expect("the test finished within its bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_error_fails_every_item_at_once() {
    const TEST: &str = "a_statement_error_fails_every_item_at_once";
    let Some(config) = pg_url(TEST) else { return };
    tokio::time::timeout(TEST_BOUND, async {
        let sink = trade_sink(config, "rb_no_such_table", default_retry_policy());
        let metrics = sink.metrics();
        let batcher = batcher(sink);
        let trades: Vec<Trade> = (0..100).map(|s| Trade::new(0, s)).collect();
        let results = submit_all(
            batcher.async_producer(),
            trades,
            Arc::new(AtomicU64::new(0)),
        )
        .await;
        batcher.shutdown_async().await;
        for (key, result) in &results {
            let e = result.as_ref().expect_err("nothing can be written");
            let sink_error = e
                .handler_error()
                .and_then(|h| h.downcast_ref::<PostgresSinkError>())
                .unwrap_or_else(|| panic!("trade {key}: not a sink error: {e:?}"));
            assert!(
                matches!(sink_error, PostgresSinkError::Statement(_)),
                "trade {key}: expected Statement, got {sink_error:?}"
            );
            assert_eq!(sink_error.code(), Some(&SqlState::UNDEFINED_TABLE));
        }
        let m = metrics.get();
        assert_eq!(m.retries, 0, "a missing table is not retried: {m:?}");
    })
    .await
    .expect("the test finished within its bound");
}

/// (feature `durable`) A crash after the sink wrote a batch but before the
/// store recorded it done: the next incarnation replays the batch with the
/// same item ids, and the sink's store key finds the rows instead of
/// writing them again.
#[cfg(feature = "durable")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_replayed_after_a_crash_are_found_by_their_store_keys_not_written_twice() {
    use ringbatch::durable::{Durability, Postcard};
    const TEST: &str = "rows_replayed_after_a_crash_are_found_by_their_store_keys";
    const ITEMS: i64 = 2_000;
    let Some(config) = pg_url(TEST) else { return };
    tokio::time::timeout(TEST_BOUND, async {
        let admin = connect(&config).await;
        let table = format!("rb_store_keys_{}", std::process::id());
        admin
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table};
                 CREATE TABLE {table} (
                     id bigserial PRIMARY KEY,
                     rb_key text NOT NULL UNIQUE,
                     value int8 NOT NULL
                 );"
            ))
            .await
            .expect("create the test table");
        let sink = |config: Config| {
            PostgresSink::builder(config, &table)
                .store_key("rb_key", format!("pg-{}", std::process::id()))
                .column("value", "int8", |&v: &i64| v)
                .returning(["id"], |row| row.try_get::<_, i64>("id"))
                .build()
                .expect("a valid sink")
        };
        let store = common::TempDir::new("pg-store");
        let image = common::TempDir::new("pg-image");

        // The first incarnation, with a crash image taken while batches
        // were in its handler.
        let in_handler = common::run_then_crash_image(
            sink(config.clone()),
            Postcard,
            &store,
            &image,
            (0..ITEMS).collect(),
        )
        .await;
        let counts = format!("SELECT count(*), count(DISTINCT rb_key) FROM {table}");
        let rows = || async {
            let row = admin.query_one(&counts, &[]).await.expect("count the rows");
            (row.get::<_, i64>(0), row.get::<_, i64>(1))
        };
        assert_eq!(rows().await, (ITEMS, ITEMS), "rows after the first run");

        // The next incarnation on the crash image: what the image holds
        // as not done (at least the batches that were in the handler) is
        // replayed, and every replayed row is found, none written again.
        let sink = sink(config.clone());
        let metrics = sink.metrics();
        let second = Batcher::builder()
            .max_batch(256)
            .durable(Durability::new(image.path()), Postcard)
            .async_handler(sink)
            .build()
            .expect("a valid batcher on the crash image");
        let stats = second.shutdown_async().await;
        let replayed = stats.durable.expect("durable stats").replayed;
        assert!(
            replayed >= in_handler,
            "the image held {in_handler} items in the handler, {replayed} were replayed"
        );
        let m = metrics.get();
        assert_eq!(
            (m.rows_inserted, m.rows_existing),
            (0, replayed),
            "every replayed row is found by its store key: {m:?}"
        );
        assert_eq!(rows().await, (ITEMS, ITEMS), "rows after the replay");
        drop_table(&admin, &table).await;
    })
    .await
    .expect("the test finished within its bound");
}
