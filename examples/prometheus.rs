//! Serves a batcher's stats in the Prometheus text format on 127.0.0.1
//! while producers keep it busy.
//!
//! ```text
//! cargo run --release --example prometheus            # port 9898, until Ctrl-C
//! cargo run --release --example prometheus -- --port 9100 --seconds 30
//! curl -s http://127.0.0.1:9898/metrics
//! ```
//!
//! Two producer threads push items at a steady rate (`--rate` per second in
//! all; every 64th is submitted with a ticket and waited for), a handler
//! spends a little time per batch and fails one item in a hundred, and a
//! small HTTP server ([`tiny_http`]) answers `GET /metrics` with
//! [`Stats::prometheus_with`](ringbatch::Stats::prometheus_with) of a fresh
//! [`Batcher::stats`] snapshot (histograms on, as Prometheus histograms;
//! every series labelled `batcher="orders"`, `--batcher` to change it),
//! content type `text/plain; version=0.0.4`. A Prometheus scrape config for it:
//!
//! ```yaml
//! scrape_configs:
//!   - job_name: ringbatch
//!     static_configs:
//!       - targets: ["127.0.0.1:9898"]
//! ```

use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use ringbatch::metrics::PrometheusOptions;
use ringbatch::{Batch, Batcher};
use tiny_http::{Header, Method, Response, Server};

/// Serves a busy batcher's stats as Prometheus text on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "prometheus")]
struct Args {
    /// TCP port on 127.0.0.1.
    #[arg(long, default_value_t = 9898)]
    port: u16,
    /// Stop after this many seconds (default: serve until interrupted).
    #[arg(long)]
    seconds: Option<u64>,
    /// Items per second the producers push, in all.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    rate: u64,
    /// The metric names' namespace.
    #[arg(long, default_value = "ringbatch")]
    namespace: String,
    /// The constant `batcher` label on every series, so that several
    /// batchers can share one endpoint.
    #[arg(long, default_value = "orders")]
    batcher: String,
}

/// A producer's loop: `rate` items per second until `stop`.
fn produce(batcher: &Batcher<u64, u64>, rate: f64, stop: &AtomicBool) {
    let producer = batcher.producer();
    let start = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            sent += 1;
            if sent % 64 == 0 {
                // A ticket, waited for: the result comes back through the
                // batcher (a failed item is a normal outcome here).
                if let Ok(mut ticket) = producer.submit(sent) {
                    let _ = ticket.wait_timeout(Duration::from_secs(5));
                }
            } else if producer.push(sent).is_err() {
                return; // closed
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn main() -> Result<(), Box<dyn StdError>> {
    let args = Args::parse();
    let batcher = Batcher::builder()
        .max_batch(256)
        .histograms(true)
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            // A sink with a fixed cost per batch and a small one per item.
            let cost = Duration::from_micros(50) + Duration::from_nanos(300) * batch.len() as u32;
            thread::sleep(cost);
            for i in 0..batch.len() {
                let item = batch.items()[i];
                let result = if item % 100 == 0 {
                    batch.fail(i, "the sink refused it")
                } else {
                    batch.ok(i, item)
                };
                result.expect("each item is completed once");
            }
            Ok(())
        })
        .build()?;

    let options =
        PrometheusOptions::new(args.namespace.as_str()).label("batcher", args.batcher.as_str())?;
    let server = Server::http(("127.0.0.1", args.port))
        .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", args.port))?;
    let content_type =
        Header::from_bytes("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .map_err(|()| "invalid header")?;
    println!(
        "serving http://127.0.0.1:{}/metrics ({} items/s pushed{})",
        args.port,
        args.rate,
        args.seconds
            .map_or_else(|| ", Ctrl-C to stop".to_owned(), |s| format!(", for {s} s"))
    );

    let stop = AtomicBool::new(false);
    let deadline = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    let served = thread::scope(|s| -> Result<u64, Box<dyn StdError>> {
        for _ in 0..2 {
            let (batcher, stop) = (&batcher, &stop);
            let rate = args.rate as f64 / 2.0;
            s.spawn(move || produce(batcher, rate, stop));
        }
        let mut served = 0u64;
        while deadline.is_none_or(|d| Instant::now() < d) {
            let Some(request) = server.recv_timeout(Duration::from_millis(100))? else {
                continue;
            };
            let response = match (request.method(), request.url()) {
                (Method::Get, "/metrics") => {
                    served += 1;
                    let body = batcher.stats().prometheus_with(&options);
                    Response::from_string(body).with_header(content_type.clone())
                }
                _ => Response::from_string("try GET /metrics\n").with_status_code(404),
            };
            if let Err(e) = request.respond(response) {
                eprintln!("could not answer a request: {e}");
            }
        }
        stop.store(true, Ordering::Relaxed);
        Ok(served)
    })?;
    let stats = batcher.shutdown();
    println!(
        "served {served} scrapes; {} items in {} batches, {} failed",
        stats.items_handled, stats.batches, stats.items_failed
    );
    Ok(())
}
