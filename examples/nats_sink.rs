//! Telemetry events shipped to a NATS JetStream stream through a
//! [`JetStreamSink`]: each batch is published at once and its
//! acknowledgements collected together; each event's submitter gets back
//! the stream sequence it was stored at.
//!
//! It needs a server: set `RINGBATCH_NATS_URLS` to one or more
//! comma-separated client URLs (for example with `bin/services start` and
//! `eval "$(bin/services env)"`, a 3-node cluster). Without it the example
//! says so and exits.
//!
//! ```text
//! cargo run --release --features nats --example nats_sink
//! ```
//!
//! It creates (and at the end deletes) a stream `RINGBATCH_TELEMETRY` on
//! subjects `telemetry.>`, replicated on up to 3 nodes, has `SENSORS`
//! tasks each send `READINGS` readings (each task keeps up to `WINDOW`
//! awaiting their sequences) and prints events/s, the batch sizes and a
//! few sequences. Every event carries a de-duplication id, so a batch the
//! sink retries is stored once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ringbatch::Batcher;
use ringbatch::sinks::nats::async_nats::jetstream::{self, stream};
use ringbatch::sinks::nats::{JetStreamMessage, JetStreamSink, async_nats};

const SENSORS: u32 = 8;
const READINGS: u32 = 25_000;
const WINDOW: usize = 256;
const STREAM: &str = "RINGBATCH_TELEMETRY";

/// One reading of one sensor.
#[derive(Debug, Clone, Copy)]
struct Reading {
    sensor: u32,
    n: u32,
    celsius: f32,
}

impl Reading {
    /// The payload: a small JSON document.
    fn to_json(self) -> String {
        format!(
            r#"{{"sensor":{},"n":{},"celsius":{:.2}}}"#,
            self.sensor, self.n, self.celsius
        )
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(urls) = std::env::var("RINGBATCH_NATS_URLS") else {
        println!(
            "nats_sink: RINGBATCH_NATS_URLS is not set; nothing to do. Start a cluster with \
             `bin/services start`, then `eval \"$(bin/services env)\"` and run again."
        );
        return Ok(());
    };
    let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_string()).collect();
    // Connected to every node: the client moves to another if one goes away.
    let client = async_nats::connect(urls.clone()).await?;
    let js = jetstream::new(client);
    let _ = js.delete_stream(STREAM).await;
    js.create_stream(stream::Config {
        name: STREAM.to_string(),
        subjects: vec!["telemetry.>".to_string()],
        num_replicas: urls.len().min(3),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await?;

    let sink = JetStreamSink::new(js.clone(), |r: &Reading| {
        JetStreamMessage::new(format!("telemetry.sensor{}", r.sensor), r.to_json())
            .with_id(format!("{}-{}", r.sensor, r.n))
    });
    let metrics = sink.metrics();
    let batcher = Batcher::builder()
        .lanes(4)
        .capacity(1024)
        .max_batch(512)
        .max_in_flight(4)
        .async_handler(sink)
        .build()?;

    println!(
        "nats_sink: {SENSORS} sensors x {READINGS} readings -> stream {STREAM} \
         ({} replicas, max_batch 512, max_in_flight 4)",
        urls.len().min(3)
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for sensor in 0..SENSORS {
        let mut producer = batcher.async_producer();
        tasks.push(tokio::spawn(async move {
            let mut in_flight = VecDeque::with_capacity(WINDOW);
            let mut first = None;
            for n in 0..READINGS {
                if in_flight.len() == WINDOW {
                    let (reading, ticket): (Reading, ringbatch::Ticket<u64>) =
                        in_flight.pop_front().expect("the window is full");
                    let sequence = ticket.await.expect("every reading is stored");
                    first.get_or_insert((reading, sequence));
                }
                let reading = Reading {
                    sensor,
                    n,
                    celsius: 20.0 + (n % 100) as f32 / 10.0,
                };
                let ticket = producer.submit(reading).await.expect("the batcher is open");
                in_flight.push_back((reading, ticket));
            }
            for (_, ticket) in in_flight {
                ticket.await.expect("every reading is stored");
            }
            first
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await?);
    }
    let elapsed = started.elapsed();
    let stats = batcher.shutdown_async().await;

    let mut handle = js.get_stream(STREAM).await?;
    let stored = handle.info().await?.state.messages;
    let m = metrics.get();
    let secs = elapsed.as_secs_f64();
    println!(
        "events:       {stored} in the stream ({} sent)",
        stats.items_handled
    );
    println!("elapsed:      {secs:.2} s");
    println!("throughput:   {:.0} events/s", stored as f64 / secs);
    println!(
        "batches:      {} (mean {:.0} events); {} republished after a failure, {} duplicates",
        stats.batches,
        stats.items_handled as f64 / stats.batches.max(1) as f64,
        m.retried,
        m.duplicates
    );
    for (reading, sequence) in samples.iter().take(3) {
        println!(
            "reading:      sensor {} #{} ({:.1} °C) -> stream sequence {sequence}",
            reading.sensor, reading.n, reading.celsius
        );
    }
    assert_eq!(stored, u64::from(SENSORS * READINGS), "events stored");
    js.delete_stream(STREAM).await?;
    Ok(())
}
