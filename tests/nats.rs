//! The JetStream sink against a real 3-node cluster, found through
//! `RINGBATCH_NATS_URLS` (comma-separated client URLs) and, to stop and
//! restart a node, `RINGBATCH_SERVICES` (the `bin/services` script that
//! started the cluster). `bin/services start` starts one; `bin/services env`
//! prints the variables. Without them each test says it was skipped, and in
//! CI (`CI` set) fails.
//!
//! Each test publishes to a stream of its own, replicated on all three
//! nodes, made for the run and deleted at the end.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringbatch::sinks::default_retry_policy;
use ringbatch::sinks::nats::async_nats::jetstream::{self, Context, stream};
use ringbatch::sinks::nats::{JetStreamMessage, JetStreamMetrics, JetStreamSink, async_nats};
use ringbatch::{AsyncProducer, Batcher, Error, RetryPolicy, Stats};

/// The longest a whole test may take.
const TEST_BOUND: Duration = Duration::from_secs(300);
/// The longest the cluster may take to settle (a stream created, a node
/// back in sync).
const SETTLE: Duration = Duration::from_secs(60);
/// Tickets a producer holds before awaiting the oldest.
const WINDOW: usize = 256;

/// The tests take turns: one kills a node of the cluster the others use.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One telemetry event: producer `source`, its `seq`-th.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Event {
    source: u32,
    seq: u64,
}

impl Event {
    fn id(&self) -> String {
        format!("{}-{}", self.source, self.seq)
    }
}

/// An event and its ticket's result.
type Outcome = (Event, Result<u64, Error>);

fn nats_urls(test: &str) -> Option<Vec<String>> {
    let urls = common::server_env("RINGBATCH_NATS_URLS", test)?;
    Some(urls.split(',').map(|u| u.trim().to_string()).collect())
}

async fn jetstream(urls: &[String]) -> Context {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(urls.to_vec())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to NATS at {urls:?}: {e}"));
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client)
}

/// A stream for this test and process, replicated R3, its subjects
/// `rb.<name>.<pid>.>`. Creating it is retried while the cluster settles.
async fn create_stream(js: &Context, name: &str) -> (stream::Stream, String) {
    let stream_name = format!("RB_{}_{}", name.to_uppercase(), std::process::id());
    let prefix = format!("rb.{name}.{}", std::process::id());
    let _ = js.delete_stream(&stream_name).await;
    let config = stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("{prefix}.>")],
        num_replicas: 3,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let deadline = Instant::now() + SETTLE;
    loop {
        match js.create_stream(config.clone()).await {
            Ok(stream) => break (stream, prefix),
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "could not create stream {stream_name} (R3) within {SETTLE:?}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Waits until the stream has a leader and every replica is current.
async fn wait_stream_healthy(js: &Context, name: &str) -> stream::Info {
    let deadline = Instant::now() + SETTLE;
    loop {
        let last = match js.get_stream(name).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info) => {
                    let cluster = info.cluster.clone().unwrap_or_default();
                    let healthy = cluster.leader.is_some()
                        && cluster.replicas.len() == 2
                        && cluster.replicas.iter().all(|r| r.current && !r.offline);
                    if healthy {
                        return info.clone();
                    }
                    format!("{cluster:?}")
                }
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "stream {name} not healthy (a leader and 2 current replicas) within {SETTLE:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The stream's message count, asked until the cluster answers.
async fn stream_state(js: &Context, name: &str) -> stream::State {
    let deadline = Instant::now() + SETTLE;
    loop {
        let error = match js.get_stream(name).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info) => return info.state.clone(),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "no answer about stream {name} within {SETTLE:?}: {error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn event_sink(js: Context, prefix: &str, retry: RetryPolicy) -> JetStreamSink<Event> {
    let prefix = prefix.to_string();
    JetStreamSink::new(js, move |e: &Event| {
        let mut payload = Vec::with_capacity(16);
        payload.extend_from_slice(&u64::from(e.source).to_le_bytes());
        payload.extend_from_slice(&e.seq.to_le_bytes());
        JetStreamMessage::new(format!("{prefix}.{}", e.source), payload).with_id(e.id())
    })
    .retry(retry)
}

fn batcher(sink: JetStreamSink<Event>) -> Batcher<Event, u64> {
    Batcher::builder()
        .lanes(4)
        .capacity(1024)
        .max_batch(512)
        .max_in_flight(4)
        .async_handler(sink)
        .build()
        .expect("a valid batcher")
}

/// Submits `events`, at most `WINDOW` awaiting at once; counts each
/// resolved ticket in `done`.
async fn submit_all(
    mut producer: AsyncProducer<Event, u64>,
    events: Vec<Event>,
    done: Arc<AtomicU64>,
) -> Vec<Outcome> {
    let mut results = Vec::with_capacity(events.len());
    let mut pending = VecDeque::with_capacity(WINDOW);
    for event in events {
        if pending.len() == WINDOW {
            let (event, ticket): (Event, ringbatch::Ticket<u64>) =
                pending.pop_front().expect("the window is full");
            results.push((event, ticket.await));
            done.fetch_add(1, Ordering::Relaxed);
        }
        let ticket = producer
            .submit(event)
            .await
            .unwrap_or_else(|e| panic!("the batcher refused event {event:?}: {e}"));
        pending.push_back((event, ticket));
    }
    for (event, ticket) in pending {
        results.push((event, ticket.await));
        done.fetch_add(1, Ordering::Relaxed);
    }
    results
}

/// `producers` tasks each submit `per_producer` events.
async fn run_events(
    batcher: Batcher<Event, u64>,
    producers: u32,
    per_producer: u64,
    done: Arc<AtomicU64>,
) -> (Vec<Outcome>, Stats) {
    let mut tasks = Vec::new();
    for source in 0..producers {
        let events = (0..per_producer).map(|seq| Event { source, seq }).collect();
        tasks.push(tokio::spawn(submit_all(
            batcher.async_producer(),
            events,
            Arc::clone(&done),
        )));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.extend(task.await.expect("a producer task panicked"));
    }
    (results, batcher.shutdown_async().await)
}

/// Every event resolved to a distinct sequence in `1..=total`, the stream
/// holds exactly `total` messages, and a sample of tickets point at their
/// own event's message.
async fn check_exactly_once(js: &Context, stream: &str, results: &[Outcome], total: u64) {
    assert_eq!(results.len() as u64, total, "tickets resolved");
    let mut sequences = HashSet::with_capacity(results.len());
    for (event, result) in results {
        let sequence = match result {
            Ok(sequence) => *sequence,
            Err(e) => panic!("the ticket of event {event:?} failed: {e}"),
        };
        assert!(
            (1..=total).contains(&sequence),
            "event {event:?} resolved to sequence {sequence}, outside 1..={total}"
        );
        assert!(
            sequences.insert(sequence),
            "two events resolved to sequence {sequence}"
        );
    }
    let state = stream_state(js, stream).await;
    assert_eq!(state.messages, total, "messages in the stream");
    assert_eq!(
        state.last_sequence, total,
        "the stream's last sequence (a message stored twice would push it past {total})"
    );
    let handle = js.get_stream(stream).await.expect("the stream");
    for (event, result) in results.iter().step_by(997) {
        let sequence = *result.as_ref().expect("checked above");
        let message = handle
            .get_raw_message(sequence)
            .await
            .unwrap_or_else(|e| panic!("read message {sequence}: {e}"));
        let id = message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_string());
        assert_eq!(
            id,
            Some(event.id()),
            "message {sequence}'s Nats-Msg-Id is not event {event:?}'s"
        );
        let mut payload = Vec::new();
        payload.extend_from_slice(&u64::from(event.source).to_le_bytes());
        payload.extend_from_slice(&event.seq.to_le_bytes());
        assert_eq!(
            &message.payload[..],
            &payload[..],
            "message {sequence}'s payload is not event {event:?}'s"
        );
    }
}

fn report(test: &str, elapsed: Duration, stats: &Stats, metrics: &JetStreamMetrics) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{test}: {} events in {:.2} s, {} batches (mean {:.0} events), sink {:?}",
        stats.items_handled,
        elapsed.as_secs_f64(),
        stats.batches,
        stats.items_handled as f64 / stats.batches.max(1) as f64,
        metrics
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_producers_publish_200k_events_exactly_once() {
    const TEST: &str = "four_producers_publish_200k_events_exactly_once";
    let Some(urls) = nats_urls(TEST) else { return };
    let _turn = SERIAL.lock().await;
    tokio::time::timeout(TEST_BOUND, async {
        let js = jetstream(&urls).await;
        let (stream, prefix) = create_stream(&js, "exactly_once").await;
        let name = stream.cached_info().config.name.clone();
        wait_stream_healthy(&js, &name).await;
        let sink = event_sink(js.clone(), &prefix, default_retry_policy());
        let metrics = sink.metrics();
        let started = Instant::now();
        let (results, stats) =
            run_events(batcher(sink), 4, 50_000, Arc::new(AtomicU64::new(0))).await;
        report(TEST, started.elapsed(), &stats, &metrics);
        check_exactly_once(&js, &name, &results, 200_000).await;
        assert_eq!(metrics.get().stored, 200_000, "messages stored by the sink");

        // A retried batch: the same events (same ids) again resolve to the
        // sequences they were stored at, and the stream does not grow.
        let again: Vec<Event> = results.iter().step_by(200).map(|(e, _)| *e).collect();
        let first: HashMap<Event, u64> = results
            .iter()
            .map(|(e, r)| (*e, *r.as_ref().expect("checked")))
            .collect();
        let sink = event_sink(js.clone(), &prefix, default_retry_policy());
        let retry_metrics = sink.metrics();
        let retry_batcher = batcher(sink);
        let repeated = submit_all(
            retry_batcher.async_producer(),
            again.clone(),
            Arc::new(AtomicU64::new(0)),
        )
        .await;
        retry_batcher.shutdown_async().await;
        for (event, result) in &repeated {
            assert_eq!(
                result.as_ref().ok(),
                first.get(event),
                "event {event:?} sent again resolved elsewhere than its first copy"
            );
        }
        let m = retry_metrics.get();
        assert_eq!(
            (m.duplicates, m.stored),
            (again.len() as u64, 0),
            "the copies were acknowledged as duplicates: {m:?}"
        );
        assert_eq!(
            stream_state(&js, &name).await.messages,
            200_000,
            "messages in the stream after sending copies"
        );
        js.delete_stream(&name).await.expect("delete the stream");
    })
    .await
    .expect("the test finished within its bound");
}

/// Restarts a killed node when dropped (also when the test fails), so that
/// the cluster is whole again for the next test.
struct Restart {
    script: PathBuf,
    node: String,
}

impl Drop for Restart {
    fn drop(&mut self) {
        let status = Command::new(&self.script)
            .args(["nats-start", &self.node])
            .status();
        if !matches!(status, Ok(s) if s.success()) && !std::thread::panicking() {
            panic!("could not restart nats node {}: {status:?}", self.node);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_stream_leader_mid_run_loses_nothing() {
    const TEST: &str = "losing_the_stream_leader_mid_run_loses_nothing";
    let Some(urls) = nats_urls(TEST) else { return };
    let Some(script) = common::server_env("RINGBATCH_SERVICES", TEST) else {
        return;
    };
    let _turn = SERIAL.lock().await;
    tokio::time::timeout(TEST_BOUND, async {
        let js = jetstream(&urls).await;
        let (stream, prefix) = create_stream(&js, "node_loss").await;
        let name = stream.cached_info().config.name.clone();
        let info = wait_stream_healthy(&js, &name).await;
        let leader = info
            .cluster
            .and_then(|c| c.leader)
            .expect("a healthy stream has a leader");

        // Enough retries to outlast a leader election and a reconnect.
        let retry = default_retry_policy()
            .with_max_retries(30)
            .with_max_delay(Duration::from_secs(1));
        let sink = event_sink(js.clone(), &prefix, retry);
        let metrics = sink.metrics();
        let (producers, per_producer) = (4, 50_000);
        let total = u64::from(producers) * per_producer;
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let run = tokio::spawn(run_events(
            batcher(sink),
            producers,
            per_producer,
            Arc::clone(&done),
        ));

        // At 30%, kill the stream's leader.
        let deadline = Instant::now() + Duration::from_secs(120);
        while done.load(Ordering::Relaxed) < total * 3 / 10 {
            assert!(
                Instant::now() < deadline,
                "the run did not reach 30% within 120 s ({} of {total})",
                done.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let status = Command::new(&script)
            .args(["nats-kill", &leader])
            .status()
            .expect("run the services script");
        assert!(status.success(), "could not kill node {leader}: {status}");
        let _restart = Restart {
            script: PathBuf::from(&script),
            node: leader.clone(),
        };
        let at_kill = done.load(Ordering::Relaxed);

        let (results, stats) = run.await.expect("the run panicked");
        report(TEST, started.elapsed(), &stats, &metrics);
        assert!(
            at_kill < total,
            "the run had already finished when the node was killed"
        );
        check_exactly_once(&js, &name, &results, total).await;
        let mut handle = js.get_stream(&name).await.expect("the stream");
        let new_leader = handle
            .info()
            .await
            .expect("stream info")
            .cluster
            .clone()
            .and_then(|c| c.leader);
        assert!(
            new_leader.is_some() && new_leader.as_deref() != Some(leader.as_str()),
            "the stream should have a new leader after {leader} was killed, has {new_leader:?}"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "{TEST}: killed leader {leader} after {at_kill} of {total} events; new leader {new_leader:?}"
        );
        drop(_restart);
        wait_stream_healthy(&js, &name).await;
        js.delete_stream(&name).await.expect("delete the stream");
    })
    .await
    .expect("the test finished within its bound");
}

/// (feature `durable`) A crash after the sink published a batch but before
/// the store recorded it done: the next incarnation replays the batch with
/// the same item ids, which the sink sends as message ids, and the stream
/// keeps one copy of each message.
#[cfg(feature = "durable")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_replayed_after_a_crash_are_stored_once_by_their_store_ids() {
    use ringbatch::durable::{Durability, Postcard};
    const TEST: &str = "messages_replayed_after_a_crash_are_stored_once_by_their_store_ids";
    const ITEMS: u64 = 2_000;
    let Some(urls) = nats_urls(TEST) else { return };
    let _turn = SERIAL.lock().await;
    tokio::time::timeout(TEST_BOUND, async {
        let js = jetstream(&urls).await;
        let (stream, prefix) = create_stream(&js, "store_ids").await;
        let name = stream.cached_info().config.name.clone();
        wait_stream_healthy(&js, &name).await;
        // Messages without ids of their own: the store's ids stand in.
        let sink = || {
            let subject = format!("{prefix}.values");
            JetStreamSink::new(js.clone(), move |v: &u64| {
                JetStreamMessage::new(subject.clone(), v.to_le_bytes().to_vec())
            })
            .with_store_ids(format!("nats-{}", std::process::id()))
        };
        let store = common::TempDir::new("nats-store");
        let image = common::TempDir::new("nats-image");

        // The first incarnation, with a crash image taken while batches
        // were in its handler.
        let in_handler =
            common::run_then_crash_image(sink(), Postcard, &store, &image, (0..ITEMS).collect())
                .await;
        assert_eq!(
            stream_state(&js, &name).await.messages,
            ITEMS,
            "messages in the stream after the first run"
        );

        // The next incarnation on the crash image: what the image holds as
        // not done (at least the batches that were in the handler) is
        // published again with the same ids, and the stream drops the copies.
        let sink = sink();
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
            (m.duplicates, m.stored),
            (replayed, 0),
            "every replayed message was acknowledged as a duplicate: {m:?}"
        );
        assert_eq!(
            stream_state(&js, &name).await.messages,
            ITEMS,
            "messages in the stream after the replay"
        );
        js.delete_stream(&name).await.expect("delete the stream");
    })
    .await
    .expect("the test finished within its bound");
}
