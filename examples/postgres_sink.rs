//! Producers submitting trades to PostgreSQL through a [`PostgresSink`]:
//! each batch is one `INSERT ... SELECT FROM unnest(...)` in a transaction,
//! and each trade's submitter gets back the id of its row.
//!
//! It needs a server: set `RINGBATCH_PG_URL` (for example with
//! `bin/services start` and `eval "$(bin/services env)"`). Without it the
//! example says so and exits.
//!
//! ```text
//! cargo run --release --features postgres --example postgres_sink
//! ```
//!
//! It creates (and at the end drops) a table `ringbatch_example_trades`,
//! has `PRODUCERS` tasks submit `TRADES_PER_PRODUCER` trades each (each task
//! keeps up to `WINDOW` trades awaiting their ids), and prints rows/s, the
//! batch sizes the load produced, and a few trades with their ids.

use std::collections::VecDeque;
use std::time::Instant;

use ringbatch::Batcher;
use ringbatch::sinks::postgres::PostgresSink;
use ringbatch::sinks::postgres::tokio_postgres::{Config, NoTls};

const PRODUCERS: u32 = 4;
const TRADES_PER_PRODUCER: u32 = 50_000;
/// Trades a task has in flight before it awaits the oldest one's id.
const WINDOW: usize = 256;
const TABLE: &str = "ringbatch_example_trades";

/// One trade; `order_id` is the client's id for it, unique, and the key
/// that makes a retried batch write each trade once.
#[derive(Debug, Clone)]
struct Trade {
    order_id: i64,
    account: i32,
    symbol: &'static str,
    qty: i64,
    price_cents: i64,
}

const SYMBOLS: [&str; 4] = ["ACME", "GLOBEX", "INITECH", "UMBRELLA"];

impl Trade {
    fn new(producer: u32, n: u32) -> Self {
        let order_id = i64::from(producer) << 32 | i64::from(n);
        Self {
            order_id,
            account: (n % 97) as i32,
            symbol: SYMBOLS[(n % 4) as usize],
            qty: 1 + i64::from(n % 500),
            price_cents: 10_000 + i64::from(n % 1_000),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(url) = std::env::var("RINGBATCH_PG_URL") else {
        println!(
            "postgres_sink: RINGBATCH_PG_URL is not set; nothing to do. Start a server with \
             `bin/services start`, then `eval \"$(bin/services env)\"` and run again."
        );
        return Ok(());
    };
    let config: Config = url.parse()?;

    let (admin, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    admin
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {TABLE};
             CREATE TABLE {TABLE} (
                 id bigserial PRIMARY KEY,
                 order_id int8 NOT NULL UNIQUE,
                 account int4 NOT NULL,
                 symbol text NOT NULL,
                 qty int8 NOT NULL CHECK (qty > 0),
                 price_cents int8 NOT NULL,
                 at timestamptz NOT NULL DEFAULT now()
             );"
        ))
        .await?;

    let sink = PostgresSink::builder(config, TABLE)
        .key("order_id", "int8", |t: &Trade| t.order_id)
        .column("account", "int4", |t: &Trade| t.account)
        .column("symbol", "text", |t: &Trade| t.symbol)
        .column("qty", "int8", |t: &Trade| t.qty)
        .column("price_cents", "int8", |t: &Trade| t.price_cents)
        .returning(["id"], |row| row.try_get::<_, i64>("id"))
        .build()?;
    let metrics = sink.metrics();
    let batcher = Batcher::builder()
        .lanes(PRODUCERS as usize)
        .capacity(1024)
        .max_batch(1024)
        .max_in_flight(4)
        .async_handler(sink)
        .build()?;

    println!(
        "postgres_sink: {PRODUCERS} producers x {TRADES_PER_PRODUCER} trades -> {TABLE} \
         (max_batch 1024, max_in_flight 4)"
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for producer in 0..PRODUCERS {
        let mut submitter = batcher.async_producer();
        tasks.push(tokio::spawn(async move {
            let mut in_flight = VecDeque::with_capacity(WINDOW);
            let mut samples = Vec::new();
            for n in 0..TRADES_PER_PRODUCER {
                if in_flight.len() == WINDOW {
                    let (trade, ticket): (Trade, ringbatch::Ticket<i64>) =
                        in_flight.pop_front().expect("the window is full");
                    let id = ticket.await.expect("every trade is written");
                    if samples.len() < 2 {
                        samples.push((trade, id));
                    }
                }
                let trade = Trade::new(producer, n);
                let ticket = submitter
                    .submit(trade.clone())
                    .await
                    .expect("the batcher is open");
                in_flight.push_back((trade, ticket));
            }
            for (_, ticket) in in_flight {
                ticket.await.expect("every trade is written");
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await?);
    }
    let elapsed = started.elapsed();
    let stats = batcher.shutdown_async().await;

    let rows: i64 = admin
        .query_one(&format!("SELECT count(*) FROM {TABLE}"), &[])
        .await?
        .get(0);
    let m = metrics.get();
    let secs = elapsed.as_secs_f64();
    println!(
        "rows:         {rows} in the table ({} trades submitted)",
        stats.items_handled
    );
    println!("elapsed:      {secs:.2} s");
    println!("throughput:   {:.0} rows/s", rows as f64 / secs);
    println!(
        "batches:      {} (mean {:.0} rows), {} statements, {} retries, {} connections",
        stats.batches,
        stats.items_handled as f64 / stats.batches.max(1) as f64,
        m.statements,
        m.retries,
        m.connects
    );
    let d = stats.dispatched;
    println!(
        "dispatched:   {} full (1024 rows), {} when the lanes ran dry, {} at shutdown",
        d.full, d.lanes_idle, d.shutdown
    );
    for (trade, id) in samples.iter().take(4) {
        println!(
            "trade:        order {} ({} x {} @ {}) -> row id {id}",
            trade.order_id, trade.qty, trade.symbol, trade.price_cents
        );
    }
    assert_eq!(
        rows as u64,
        u64::from(PRODUCERS * TRADES_PER_PRODUCER),
        "rows written"
    );
    admin.batch_execute(&format!("DROP TABLE {TABLE}")).await?;
    Ok(())
}
