//! The sinks against real servers, each against the obvious way to do
//! without ringbatch, same servers, same run:
//!
//! - **PostgreSQL**: `PRODUCERS` tasks write trades through a batcher and
//!   [`PostgresSink`] (one `unnest` insert per batch, in a transaction),
//!   against the same tasks each sending one prepared `INSERT` per row on a
//!   connection of its own (autocommit: one transaction per row).
//! - **JetStream**: `PRODUCERS` tasks publish events through a batcher and
//!   [`JetStreamSink`] (a batch published at once, its acks awaited
//!   together), against one task publishing each event and awaiting its
//!   ack before the next. Both send a de-duplication id with every message,
//!   to an R3 stream when three URLs are given.
//!
//! Each measurement runs `ROUNDS` times, alternating systems; the median
//! round is reported with the others. Every round checks that all its rows
//! or messages arrived.
//!
//! It needs the servers: `bin/services start`, `eval "$(bin/services env)"`,
//! then
//!
//! ```text
//! cargo bench --features postgres,nats --bench sinks
//! ```
//!
//! Without `RINGBATCH_PG_URL` / `RINGBATCH_NATS_URLS` the matching half is
//! skipped, saying so.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ringbatch::sinks::nats::async_nats::jetstream::{self, Context, stream};
use ringbatch::sinks::nats::{JetStreamMessage, JetStreamSink, async_nats};
use ringbatch::sinks::postgres::PostgresSink;
use ringbatch::sinks::postgres::tokio_postgres::{Client, Config, NoTls};
use ringbatch::{AsyncProducer, Batcher, Ticket};

/// Producer tasks, for ringbatch and for the per-row baseline.
const PRODUCERS: u64 = 4;
/// Rows per round through ringbatch, and through the per-row baseline
/// (slower, so fewer: the rate is what is compared).
const PG_ROWS: u64 = 200_000;
const PG_ROWS_PER_ROW_INSERT: u64 = 20_000;
/// Messages per round through ringbatch, and through the sequential loop.
const JS_MESSAGES: u64 = 200_000;
const JS_MESSAGES_SEQUENTIAL: u64 = 10_000;
const ROUNDS: usize = 3;
/// Tickets a producer task holds before awaiting the oldest.
const WINDOW: usize = 256;
const TABLE: &str = "ringbatch_bench_trades";
const STREAM: &str = "RINGBATCH_BENCH";

#[derive(Debug, Clone, Copy)]
struct Trade {
    key: i64,
    account: i32,
    qty: i64,
    price_cents: i64,
}

impl Trade {
    fn new(round: usize, producer: u64, n: u64) -> Self {
        Self {
            key: ((round as i64) << 48) | ((producer as i64) << 32) | n as i64,
            account: (n % 97) as i32,
            qty: 1 + (n % 500) as i64,
            price_cents: 10_000 + (n % 1_000) as i64,
        }
    }
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(|a, b| a.total_cmp(b));
    rates[rates.len() / 2]
}

fn show(rates: &[f64]) -> String {
    let all: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    all.join(", ")
}

/// Submits every item of `items` through `producer`, `WINDOW` at a time.
async fn submit_windowed<T: Send + 'static, R: Send + 'static>(
    mut producer: AsyncProducer<T, R>,
    items: impl Iterator<Item = T>,
) {
    let mut in_flight: VecDeque<Ticket<R>> = VecDeque::with_capacity(WINDOW);
    for item in items {
        if in_flight.len() == WINDOW {
            let ticket = in_flight.pop_front().expect("the window is full");
            assert!(ticket.await.is_ok(), "an item failed");
        }
        match producer.submit(item).await {
            Ok(ticket) => in_flight.push_back(ticket),
            Err(_) => panic!("the batcher refused an item"),
        }
    }
    for ticket in in_flight {
        assert!(ticket.await.is_ok(), "an item failed");
    }
}

async fn pg_connect(config: &Config) -> Client {
    let (client, connection) = config.connect(NoTls).await.expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

async fn pg_reset(admin: &Client) {
    admin
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {TABLE};
             CREATE TABLE {TABLE} (
                 id bigserial PRIMARY KEY,
                 key int8 NOT NULL UNIQUE,
                 account int4 NOT NULL,
                 qty int8 NOT NULL,
                 price_cents int8 NOT NULL
             );"
        ))
        .await
        .expect("create the bench table");
}

async fn pg_count(admin: &Client) -> u64 {
    let count: i64 = admin
        .query_one(&format!("SELECT count(*) FROM {TABLE}"), &[])
        .await
        .expect("count rows")
        .get(0);
    count as u64
}

/// Rows/s through a batcher and the sink; also the mean batch size.
async fn pg_ringbatch(config: &Config, admin: &Client, round: usize) -> (f64, f64) {
    pg_reset(admin).await;
    let sink = PostgresSink::builder(config.clone(), TABLE)
        .key("key", "int8", |t: &Trade| t.key)
        .column("account", "int4", |t: &Trade| t.account)
        .column("qty", "int8", |t: &Trade| t.qty)
        .column("price_cents", "int8", |t: &Trade| t.price_cents)
        .returning(["id"], |row| row.try_get::<_, i64>("id"))
        .build()
        .expect("a valid sink");
    let batcher = Batcher::builder()
        .lanes(PRODUCERS as usize)
        .capacity(1024)
        .max_batch(1024)
        .max_in_flight(4)
        .async_handler(sink)
        .build()
        .expect("a valid batcher");
    let per_producer = PG_ROWS / PRODUCERS;
    let started = Instant::now();
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let items = (0..per_producer).map(move |n| Trade::new(round, p, n));
            tokio::spawn(submit_windowed(batcher.async_producer(), items))
        })
        .collect();
    for task in tasks {
        task.await.expect("a producer panicked");
    }
    let elapsed = started.elapsed();
    let stats = batcher.shutdown_async().await;
    assert_eq!(
        pg_count(admin).await,
        PG_ROWS,
        "rows written through ringbatch"
    );
    (
        PG_ROWS as f64 / elapsed.as_secs_f64(),
        stats.items_handled as f64 / stats.batches.max(1) as f64,
    )
}

/// Rows/s with one prepared INSERT per row, each task on its own
/// connection.
async fn pg_per_row(config: &Config, admin: &Client, round: usize) -> f64 {
    pg_reset(admin).await;
    let per_producer = PG_ROWS_PER_ROW_INSERT / PRODUCERS;
    let mut clients = Vec::new();
    for _ in 0..PRODUCERS {
        clients.push(pg_connect(config).await);
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(p, client)| {
            tokio::spawn(async move {
                let insert = client
                    .prepare(&format!(
                        "INSERT INTO {TABLE} (key, account, qty, price_cents) \
                         VALUES ($1, $2, $3, $4) RETURNING id"
                    ))
                    .await
                    .expect("prepare");
                for n in 0..per_producer {
                    let t = Trade::new(round, p as u64, n);
                    client
                        .query_one(&insert, &[&t.key, &t.account, &t.qty, &t.price_cents])
                        .await
                        .expect("insert a row");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a producer panicked");
    }
    let elapsed = started.elapsed();
    assert_eq!(
        pg_count(admin).await,
        PG_ROWS_PER_ROW_INSERT,
        "rows written one by one"
    );
    PG_ROWS_PER_ROW_INSERT as f64 / elapsed.as_secs_f64()
}

async fn postgres(url: &str) {
    let config: Config = url.parse().expect("a valid RINGBATCH_PG_URL");
    let admin = pg_connect(&config).await;
    let (mut batched, mut per_row, mut batch_sizes) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (rate, mean_batch) = pg_ringbatch(&config, &admin, round).await;
        batched.push(rate);
        batch_sizes.push(mean_batch);
        per_row.push(pg_per_row(&config, &admin, round).await);
    }
    admin
        .batch_execute(&format!("DROP TABLE IF EXISTS {TABLE}"))
        .await
        .expect("drop the bench table");
    let (b, r) = (median(batched.clone()), median(per_row.clone()));
    println!("PostgreSQL, {PRODUCERS} producers (rows/s, median of {ROUNDS}; all rounds)");
    println!(
        "  ringbatch + PostgresSink ({PG_ROWS} rows/round, mean batch {:.0}): {b:.0}  [{}]",
        median(batch_sizes),
        show(&batched)
    );
    println!(
        "  one INSERT per row ({PG_ROWS_PER_ROW_INSERT} rows/round):          {r:.0}  [{}]",
        show(&per_row)
    );
    println!("  ratio: {:.1}x", b / r);
}

async fn js_reset(js: &Context, replicas: usize) {
    let _ = js.delete_stream(STREAM).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let created = js
            .create_stream(stream::Config {
                name: STREAM.to_string(),
                subjects: vec!["bench.>".to_string()],
                num_replicas: replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await;
        match created {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("creating the stream: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("could not create the bench stream: {e}"),
        }
    }
}

async fn js_count(js: &Context) -> u64 {
    js.get_stream(STREAM)
        .await
        .expect("the bench stream")
        .info()
        .await
        .expect("stream info")
        .state
        .messages
}

fn event(round: usize, producer: u64, n: u64) -> JetStreamMessage {
    JetStreamMessage::new(format!("bench.{producer}"), format!("{{\"n\":{n}}}"))
        .with_id(format!("{round}-{producer}-{n}"))
}

async fn js_ringbatch(js: &Context, replicas: usize, round: usize) -> (f64, f64) {
    js_reset(js, replicas).await;
    let sink = JetStreamSink::new(js.clone(), move |&(p, n): &(u64, u64)| event(round, p, n));
    let batcher = Batcher::builder()
        .lanes(PRODUCERS as usize)
        .capacity(1024)
        .max_batch(512)
        .max_in_flight(4)
        .async_handler(sink)
        .build()
        .expect("a valid batcher");
    let per_producer = JS_MESSAGES / PRODUCERS;
    let started = Instant::now();
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let items = (0..per_producer).map(move |n| (p, n));
            tokio::spawn(submit_windowed(batcher.async_producer(), items))
        })
        .collect();
    for task in tasks {
        task.await.expect("a producer panicked");
    }
    let elapsed = started.elapsed();
    let stats = batcher.shutdown_async().await;
    assert_eq!(
        js_count(js).await,
        JS_MESSAGES,
        "messages through ringbatch"
    );
    (
        JS_MESSAGES as f64 / elapsed.as_secs_f64(),
        stats.items_handled as f64 / stats.batches.max(1) as f64,
    )
}

async fn js_sequential(js: &Context, replicas: usize, round: usize) -> f64 {
    js_reset(js, replicas).await;
    let started = Instant::now();
    for n in 0..JS_MESSAGES_SEQUENTIAL {
        let message = event(round, 0, n);
        let mut publish = jetstream::message::PublishMessage::build().payload(message.payload);
        if let Some(id) = message.id {
            publish = publish.message_id(id);
        }
        js.send_publish(message.subject, publish)
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    let elapsed = started.elapsed();
    assert_eq!(
        js_count(js).await,
        JS_MESSAGES_SEQUENTIAL,
        "messages published one by one"
    );
    JS_MESSAGES_SEQUENTIAL as f64 / elapsed.as_secs_f64()
}

async fn nats(urls: &str) {
    let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_string()).collect();
    let replicas = urls.len().min(3);
    let client = async_nats::connect(urls).await.expect("connect to NATS");
    let js = jetstream::new(client);
    let (mut batched, mut sequential, mut batch_sizes) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (rate, mean_batch) = js_ringbatch(&js, replicas, round).await;
        batched.push(rate);
        batch_sizes.push(mean_batch);
        sequential.push(js_sequential(&js, replicas, round).await);
    }
    let _ = js.delete_stream(STREAM).await;
    let (b, s) = (median(batched.clone()), median(sequential.clone()));
    println!("JetStream, R{replicas} stream (messages/s, median of {ROUNDS}; all rounds)");
    println!(
        "  ringbatch + JetStreamSink, {PRODUCERS} producers ({JS_MESSAGES} msgs/round, mean batch {:.0}): {b:.0}  [{}]",
        median(batch_sizes),
        show(&batched)
    );
    println!(
        "  publish, await ack, repeat ({JS_MESSAGES_SEQUENTIAL} msgs/round):                     {s:.0}  [{}]",
        show(&sequential)
    );
    println!("  ratio: {:.1}x", b / s);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; there are no options.
    match std::env::var("RINGBATCH_PG_URL") {
        Ok(url) => postgres(&url).await,
        Err(_) => println!(
            "sinks bench: RINGBATCH_PG_URL is not set, skipping PostgreSQL \
             (bin/services start; eval \"$(bin/services env)\")"
        ),
    }
    match std::env::var("RINGBATCH_NATS_URLS") {
        Ok(urls) => nats(&urls).await,
        Err(_) => println!(
            "sinks bench: RINGBATCH_NATS_URLS is not set, skipping JetStream \
             (bin/services start; eval \"$(bin/services env)\")"
        ),
    }
}
