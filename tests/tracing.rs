//! The `tracing` feature: a span per batch with its size, reason, attempt
//! and group; events for a failed batch, a handler panic, the breaker
//! opening and closing, items dropped with no dead-letter callback, retries
//! exhausted and the drainer's exit; blocking and async handlers; with
//! `durable`, the store's cut tail, replay and failed write.
//!
//! One capturing subscriber is the global default (the drainer and the
//! runtime's workers are other threads); each test names its batcher (its
//! thread name) uniquely and reads only what carries that name.

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use common::{BOUND, Gate, wait_ticket};
use ringbatch::{Batch, BatchError, Batcher, CircuitBreaker, Error, Failure, RetryPolicy};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, Registry};

/// A span's or an event's fields, as text (strings without quotes).
#[derive(Clone, Debug, Default, PartialEq)]
struct Fields(BTreeMap<String, String>);

impl Fields {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The field `name`, which the test expects to be there.
    fn must(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| panic!("expected a field `{name}` in {self:?}"))
    }

    fn number(&self, name: &str) -> u64 {
        let text = self.must(name);
        text.parse()
            .unwrap_or_else(|_| panic!("expected `{name}` to be a number, got {text:?}"))
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Span,
    Event,
}

/// A span as it was opened, or an event with the batch span it was in.
#[derive(Clone, Debug)]
struct Record {
    kind: Kind,
    level: Level,
    target: String,
    /// The span's name, or the event's message.
    name: String,
    fields: Fields,
    /// (events) The fields of the innermost `batch` span it was emitted in.
    batch: Option<Fields>,
}

impl Record {
    fn is_event(&self, message: &str) -> bool {
        self.kind == Kind::Event && self.name == message
    }

    fn is_batch_span(&self) -> bool {
        self.kind == Kind::Span && self.name == "batch"
    }
}

/// Everything recorded by the process, and a wake-up for waiters.
static RECORDS: Mutex<Vec<Record>> = Mutex::new(Vec::new());
static RECORDED: Condvar = Condvar::new();

struct Capture;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields.clone());
        }
        push(Record {
            kind: Kind::Span,
            level: *attrs.metadata().level(),
            target: attrs.metadata().target().to_owned(),
            name: attrs.metadata().name().to_owned(),
            fields,
            batch: None,
        });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let name = fields.0.remove("message").unwrap_or_default();
        let batch = ctx.event_scope(event).and_then(|mut scope| {
            scope
                .find(|span| span.name() == "batch")
                .and_then(|span| span.extensions().get::<Fields>().cloned())
        });
        push(Record {
            kind: Kind::Event,
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            name,
            fields,
            batch,
        });
    }
}

fn push(record: Record) {
    RECORDS.lock().unwrap().push(record);
    RECORDED.notify_all();
}

/// Installs the capturing subscriber once for the process.
fn capture() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        tracing::subscriber::set_global_default(Registry::default().with(Capture))
            .expect("no other global subscriber in this test binary");
    });
}

/// What the batcher named `batcher` has recorded so far, in order.
fn records_of(batcher: &str) -> Vec<Record> {
    RECORDS
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.fields.get("batcher") == Some(batcher))
        .cloned()
        .collect()
}

/// Waits (at most [`BOUND`]) until the records of `batcher` satisfy `done`,
/// and returns them.
fn wait_records(batcher: &str, what: &str, done: impl Fn(&[Record]) -> bool) -> Vec<Record> {
    let deadline = Instant::now() + BOUND;
    let mut all = RECORDS.lock().unwrap();
    loop {
        let mine: Vec<Record> = all
            .iter()
            .filter(|r| r.fields.get("batcher") == Some(batcher))
            .cloned()
            .collect();
        if done(&mine) {
            return mine;
        }
        let now = Instant::now();
        assert!(
            now < deadline,
            "expected {what} from batcher {batcher:?} within {BOUND:?}; it recorded {mine:#?}"
        );
        all = RECORDED.wait_timeout(all, deadline - now).unwrap().0;
    }
}

/// Waits for the first event of `batcher` with `message` and returns it.
fn wait_event(batcher: &str, message: &str) -> Record {
    let records = wait_records(batcher, &format!("an event {message:?}"), |records| {
        records.iter().any(|r| r.is_event(message))
    });
    records.into_iter().find(|r| r.is_event(message)).unwrap()
}

fn batch_spans(records: &[Record]) -> Vec<&Record> {
    records.iter().filter(|r| r.is_batch_span()).collect()
}

/// Fast retries for tests.
fn quick_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_max_retries(max_retries)
        .with_initial_delay(Duration::from_millis(1))
        .with_max_delay(Duration::from_millis(5))
        .with_multiplier(2.0)
        .with_jitter(0.0)
}

const FAILED: &str = "batch failed";
const PANICKED: &str = "handler panicked";
const OPENED: &str = "circuit breaker opened";
const HALF_OPEN: &str = "circuit breaker half open: one trial batch";
const CLOSED: &str = "circuit breaker closed";
const EXHAUSTED: &str = "retries exhausted";
const DROPPED: &str = "dead-lettered items dropped: no dead-letter callback";
const EXITED: &str = "drainer exited";

#[test]
fn each_batch_has_a_span_with_its_size_reason_and_attempt() {
    capture();
    let name = "trace-spans";
    let gate = Gate::closed();
    let seen: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
    let (hold, batches) = (gate.clone(), Arc::clone(&seen));
    let batcher = Batcher::builder()
        .thread_name(name)
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            batches.lock().unwrap().push(batch.items().to_vec());
            if batch.items().contains(&0) {
                hold.pass();
            }
            batch.complete_with(|&x| Ok::<_, Error>(x));
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let first = producer.submit(0).unwrap();
    // The handler holds the first batch while three more items queue up:
    // the next sweep takes them together.
    gate.wait_arrived(1);
    let rest: Vec<_> = (1..=3).map(|x| producer.submit(x).unwrap()).collect();
    gate.open();
    assert_eq!(wait_ticket(first).unwrap(), 0);
    for ticket in rest {
        wait_ticket(ticket).unwrap();
    }
    let records = wait_records(name, "two batch spans", |r| batch_spans(r).len() >= 2);
    assert_eq!(
        *seen.lock().unwrap(),
        [vec![0], vec![1, 2, 3]],
        "expected the handler to see a batch of one, then one of three"
    );
    let spans = batch_spans(&records);
    assert_eq!(
        spans.len(),
        2,
        "expected one span per batch, got {spans:#?}"
    );
    for (span, size) in spans.iter().zip([1, 3]) {
        assert_eq!(span.level, Level::DEBUG, "{span:?}");
        assert_eq!(span.target, "ringbatch", "{span:?}");
        assert_eq!(span.fields.number("size"), size, "{span:?}");
        assert_eq!(span.fields.must("reason"), "lanes_idle", "{span:?}");
        assert_eq!(span.fields.number("attempt"), 1, "{span:?}");
        assert_eq!(span.fields.get("group"), None, "no group_by: {span:?}");
    }
    assert!(
        !records
            .iter()
            .any(|r| r.kind == Kind::Event && r.level <= Level::WARN),
        "expected no warning or error for batches that succeeded, got {records:#?}"
    );
    drop(producer);
    batcher.shutdown();
}

#[test]
fn a_grouped_batch_span_names_its_group() {
    capture();
    let name = "trace-groups";
    let gate = Gate::closed();
    let seen: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
    let (hold, batches) = (gate.clone(), Arc::clone(&seen));
    let batcher = Batcher::builder()
        .thread_name(name)
        .group_by(|x: &u64| x % 2)
        .handler_fn(move |batch: &mut Batch<'_, u64, u64>| {
            batches.lock().unwrap().push(batch.items().to_vec());
            if batch.items().contains(&0) {
                hold.pass();
            }
            batch.complete_with(|&x| Ok::<_, Error>(x));
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let first = producer.submit(0).unwrap();
    gate.wait_arrived(1);
    let rest: Vec<_> = (1..=4).map(|x| producer.submit(x).unwrap()).collect();
    gate.open();
    wait_ticket(first).unwrap();
    for ticket in rest {
        wait_ticket(ticket).unwrap();
    }
    let records = wait_records(name, "three batch spans", |r| batch_spans(r).len() >= 3);
    let spans = batch_spans(&records);
    let batches = seen.lock().unwrap().clone();
    assert_eq!(spans.len(), batches.len(), "one span per batch: {spans:#?}");
    // The spans come in the order the drainer ran the batches.
    let group_of = |parity: u64| -> Vec<&str> {
        spans
            .iter()
            .zip(&batches)
            .filter(|(_, items)| items.iter().all(|x| x % 2 == parity))
            .map(|(span, _)| span.fields.must("group"))
            .collect()
    };
    let (even, odd) = (group_of(0), group_of(1));
    assert_eq!(
        even.len() + odd.len(),
        batches.len(),
        "expected every batch to hold one key, got {batches:?}"
    );
    assert!(
        even.iter().all(|g| *g == even[0]) && odd.iter().all(|g| *g == odd[0]),
        "expected one group value per key, got even {even:?}, odd {odd:?}"
    );
    assert_ne!(even[0], odd[0], "expected the two keys' groups to differ");
    drop(producer);
    batcher.shutdown();
}

#[test]
fn a_failed_batch_and_a_handler_panic_are_reported_in_their_span() {
    capture();
    let name = "trace-failures";
    let batcher = Batcher::builder()
        .thread_name(name)
        .handler_fn(
            |batch: &mut Batch<'_, u64, u64>| -> Result<(), BatchError> {
                match batch.items()[0] {
                    1 => Err("disk full".into()),
                    2 => panic!("kaboom"),
                    _ => {
                        batch.complete_with(|&x| Ok::<_, Error>(x));
                        Ok(())
                    }
                }
            },
        )
        .build()
        .unwrap();
    let producer = batcher.producer();
    let failed = wait_ticket(producer.submit(1).unwrap());
    assert!(
        matches!(failed, Err(Error::BatchFailed(_))),
        "expected BatchFailed, got {failed:?}"
    );
    let event = wait_event(name, FAILED);
    assert_eq!(event.level, Level::WARN);
    assert_eq!(event.fields.must("error"), "disk full");
    assert_eq!(event.fields.number("size"), 1);
    assert_eq!(event.fields.number("attempt"), 1);
    let span = event.batch.expect("the event is in its batch's span");
    assert_eq!(span.number("size"), 1);

    let panicked = wait_ticket(producer.submit(2).unwrap());
    assert!(
        matches!(panicked, Err(Error::HandlerPanicked { .. })),
        "expected HandlerPanicked, got {panicked:?}"
    );
    let event = wait_event(name, PANICKED);
    assert_eq!(event.level, Level::ERROR);
    assert_eq!(event.fields.must("panic"), "kaboom");
    assert_eq!(event.fields.number("size"), 1);
    assert!(event.batch.is_some(), "expected the event in a batch span");
    drop(producer);
    batcher.shutdown();
}

#[test]
fn the_breaker_reports_opening_a_failed_trial_and_closing() {
    capture();
    let name = "trace-breaker";
    let failing = Arc::new(AtomicBool::new(true));
    let fails = Arc::clone(&failing);
    let recovery = Duration::from_millis(20);
    let batcher = Batcher::builder()
        .thread_name(name)
        .circuit_breaker(
            CircuitBreaker::default()
                .with_failure_threshold(2)
                .with_recovery_timeout(recovery)
                .with_hold_while_open(false),
        )
        // Refused items go to the callback: no warning for them.
        .dead_letter(|_| {})
        .handler_fn(
            move |batch: &mut Batch<'_, u64, u64>| -> Result<(), BatchError> {
                if fails.load(Ordering::SeqCst) {
                    return Err("sink down".into());
                }
                batch.complete_with(|&x| Ok::<_, Error>(x));
                Ok(())
            },
        )
        .build()
        .unwrap();
    let producer = batcher.producer();
    for x in 0..2 {
        let result = wait_ticket(producer.submit(x).unwrap());
        assert!(result.is_err(), "expected item {x} to fail, got {result:?}");
    }
    let opened = wait_event(name, OPENED);
    assert_eq!(opened.level, Level::WARN);
    assert_eq!(opened.fields.number("consecutive_failures"), 2);
    assert_eq!(opened.fields.must("trial"), "false");
    assert_eq!(
        opened.fields.must("recovery_timeout"),
        format!("{recovery:?}")
    );

    // Still failing: the trial batch after the timeout fails and reopens it.
    submit_until(&producer, "a failed trial", || {
        records_of(name)
            .iter()
            .any(|r| r.is_event(OPENED) && r.fields.get("trial") == Some("true"))
    });
    // The sink is back: the next trial closes it.
    failing.store(false, Ordering::SeqCst);
    submit_until(&producer, "an item handled", || false);
    let closed = wait_event(name, CLOSED);
    assert_eq!(closed.level, Level::INFO);
    let records = records_of(name);
    let position = |pred: &dyn Fn(&Record) -> bool| records.iter().position(pred);
    let order = [
        position(&|r| r.is_event(OPENED) && r.fields.get("trial") == Some("false")),
        position(&|r| r.is_event(HALF_OPEN)),
        position(&|r| r.is_event(OPENED) && r.fields.get("trial") == Some("true")),
        position(&|r| r.is_event(CLOSED)),
    ];
    assert!(
        order.iter().all(Option::is_some) && order.windows(2).all(|w| w[0] < w[1]),
        "expected opened, half open, reopened by the trial, closed in that order; \
         got positions {order:?} in {records:#?}"
    );
    assert!(
        !records.iter().any(|r| r.is_event(DROPPED)),
        "expected no dropped letters with a callback set"
    );
    drop(producer);
    batcher.shutdown();
}

/// Submits items one at a time (paced by their results) until one is
/// handled or `seen()` holds, within [`BOUND`].
fn submit_until(producer: &ringbatch::Producer<u64, u64>, what: &str, seen: impl Fn() -> bool) {
    let deadline = Instant::now() + BOUND;
    let mut x = 100;
    loop {
        if wait_ticket(producer.submit(x).unwrap()).is_ok() || seen() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected {what} within {BOUND:?}"
        );
        // Items meet the open breaker at once: let its timeout run.
        thread::sleep(Duration::from_millis(1));
        x += 1;
    }
}

#[test]
fn items_dead_lettered_without_a_callback_are_reported_once_per_batch() {
    capture();
    let name = "trace-dropped";
    let batcher = Batcher::builder()
        .thread_name(name)
        .retry_policy(quick_retries(3))
        .handler_fn(|_: &mut Batch<'_, u64, u64>| -> Result<(), BatchError> {
            Err(Failure::permanent("bad record").into())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let tickets: Vec<_> = (0..3).map(|x| producer.submit(x).unwrap()).collect();
    let mut errors = Vec::new();
    for ticket in tickets {
        match wait_ticket(ticket) {
            Err(error) => errors.push(error.to_string()),
            Ok(x) => panic!("expected a failure, got Ok({x})"),
        }
    }
    assert!(
        errors.iter().all(|e| e.contains("bad record")),
        "expected the handler's error, got {errors:?}"
    );
    let records = wait_records(name, "3 dropped items", |records| {
        records
            .iter()
            .filter(|r| r.is_event(DROPPED))
            .map(|r| r.fields.number("items"))
            .sum::<u64>()
            == 3
    });
    let spans = batch_spans(&records).len();
    for event in records.iter().filter(|r| r.is_event(DROPPED)) {
        assert_eq!(event.level, Level::WARN);
        // The error the tickets got.
        assert_eq!(event.fields.must("error"), errors[0]);
        assert_eq!(event.fields.number("attempts"), 1, "a permanent failure");
        assert!(event.batch.is_some(), "expected the event in a batch span");
    }
    let dropped = records.iter().filter(|r| r.is_event(DROPPED)).count();
    assert_eq!(dropped, spans, "expected one event per batch, not per item");
    assert!(
        !records.iter().any(|r| r.is_event(EXHAUSTED)),
        "a permanent failure is not retried"
    );
    drop(producer);
    batcher.shutdown();
}

#[test]
fn retries_exhausted_are_reported_after_a_span_per_attempt() {
    capture();
    let name = "trace-retries";
    let batcher = Batcher::builder()
        .thread_name(name)
        .retry_policy(quick_retries(2))
        .handler_fn(|_: &mut Batch<'_, u64, u64>| -> Result<(), BatchError> {
            Err("flaky sink".into())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    let error = match wait_ticket(producer.submit(7).unwrap()) {
        Err(error) => error.to_string(),
        Ok(x) => panic!("expected the item to fail, got Ok({x})"),
    };
    assert!(error.contains("flaky sink"), "got {error}");
    let exhausted = wait_event(name, EXHAUSTED);
    assert_eq!(exhausted.level, Level::WARN);
    assert_eq!(exhausted.fields.number("items"), 1);
    assert_eq!(exhausted.fields.number("attempts"), 3);
    assert_eq!(exhausted.fields.must("error"), error, "the ticket's error");
    let span = exhausted.batch.expect("the event is in its batch's span");
    assert_eq!(span.number("attempt"), 3);
    // With no callback the item is dropped too, and says so.
    let dropped = wait_event(name, DROPPED);
    assert_eq!(dropped.fields.number("items"), 1);
    let records = records_of(name);
    let attempts: Vec<u64> = batch_spans(&records)
        .iter()
        .map(|s| s.fields.number("attempt"))
        .collect();
    assert_eq!(attempts, [1, 2, 3], "expected a span per attempt");
    let failed: Vec<u64> = records
        .iter()
        .filter(|r| r.is_event(FAILED))
        .map(|r| r.fields.number("attempt"))
        .collect();
    assert_eq!(
        failed,
        [1, 2, 3],
        "expected a failed-batch event per attempt"
    );
    drop(producer);
    batcher.shutdown();
}

#[test]
fn the_drainer_reports_its_exit_with_its_totals() {
    capture();
    let name = "trace-exit";
    let batcher = Batcher::builder()
        .thread_name(name)
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.complete_with(|&x| Ok::<_, Error>(x));
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    for x in 0..10 {
        producer.push(x).unwrap();
    }
    drop(producer);
    let stats = batcher.shutdown();
    let exited = wait_event(name, EXITED);
    assert_eq!(exited.level, Level::INFO);
    assert_eq!(exited.fields.number("items"), stats.items_handled);
    assert_eq!(exited.fields.number("batches"), stats.batches);
    let exits = records_of(name)
        .iter()
        .filter(|r| r.is_event(EXITED))
        .count();
    assert_eq!(exits, 1, "expected one exit event");
}

#[cfg(feature = "tokio")]
#[test]
fn an_async_handler_reports_in_its_span_with_and_without_policies() {
    use ringbatch::AsyncBatch;
    capture();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (name, retries) in [("trace-async", None), ("trace-async-retry", Some(1))] {
        let mut builder = Batcher::builder()
            .thread_name(name)
            .runtime(runtime.handle().clone())
            .async_handler_fn(|batch: AsyncBatch<u64, u64>| async move {
                if batch.items()[0] == 1 {
                    return Err::<(), BatchError>("remote refused".into());
                }
                if batch.items()[0] == 2 {
                    panic!("async kaboom");
                }
                let mut batch = batch;
                batch.complete_with(|&x| Ok::<_, Error>(x));
                Ok(())
            });
        if let Some(n) = retries {
            builder = builder.retry_policy(quick_retries(n));
        }
        let batcher = builder.build().unwrap();
        let producer = batcher.producer();
        assert_eq!(wait_ticket(producer.submit(0).unwrap()).unwrap(), 0);
        let failed = wait_ticket(producer.submit(1).unwrap());
        assert!(failed.is_err(), "expected a failure, got {failed:?}");
        let panicked = wait_ticket(producer.submit(2).unwrap());
        assert!(
            matches!(panicked, Err(Error::HandlerPanicked { .. })),
            "expected HandlerPanicked, got {panicked:?}"
        );
        let attempts = retries.map_or(1, |n| n + 1);
        let records = wait_records(name, "every failed attempt and the panic", |r| {
            r.iter().filter(|r| r.is_event(FAILED)).count() == attempts as usize
                && r.iter().any(|r| r.is_event(PANICKED))
        });
        let failed: Vec<&Record> = records.iter().filter(|r| r.is_event(FAILED)).collect();
        for (event, attempt) in failed.iter().zip(1..) {
            assert_eq!(event.fields.must("error"), "remote refused", "{event:?}");
            assert_eq!(event.fields.number("attempt"), attempt, "{event:?}");
            let span = event.batch.as_ref().expect("in its batch's span");
            assert_eq!(span.number("attempt"), attempt, "{event:?}");
            assert_eq!(span.must("reason"), "lanes_idle", "{event:?}");
        }
        let panic = records.iter().find(|r| r.is_event(PANICKED)).unwrap();
        assert_eq!(panic.fields.must("panic"), "async kaboom");
        assert!(panic.batch.is_some(), "expected the panic in a batch span");
        // Three batches, and the retries of the failed one.
        assert_eq!(batch_spans(&records).len(), 2 + attempts as usize);
        if retries.is_some() {
            let exhausted = wait_event(name, EXHAUSTED);
            assert_eq!(exhausted.fields.number("attempts"), u64::from(attempts));
        }
        drop(producer);
        batcher.shutdown();
        wait_event(name, EXITED);
    }
}

/// (feature `durable`) Opening a store whose last segment ends in garbage
/// warns of the cut, the replay is reported, and a batch the store cannot
/// take (here its codec refuses an item) is an error event.
#[cfg(feature = "durable")]
#[test]
fn the_durable_store_reports_a_cut_tail_its_replay_and_a_failed_write() {
    use ringbatch::durable::{CodecError, Durability, codec_fn};
    capture();
    let name = "trace-durable";
    let dir = common::TempDir::new("trace-durable");
    // Every item but 999 encodes.
    let codec = || {
        codec_fn(
            |&x: &u64, out: &mut Vec<u8>| {
                if x == 999 {
                    return Err(CodecError::new("999 does not encode"));
                }
                out.extend_from_slice(&x.to_le_bytes());
                Ok(())
            },
            |bytes: &[u8]| {
                let bytes: [u8; 8] = bytes
                    .try_into()
                    .map_err(|_| CodecError::new("not 8 bytes"))?;
                Ok(u64::from_le_bytes(bytes))
            },
        )
    };
    let build = || {
        Batcher::<u64, ()>::builder()
            .thread_name(name)
            .durable(Durability::new(dir.path()), codec())
            .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
                batch.ok_with(|_| ());
                Ok(())
            })
            .build()
            .unwrap()
    };
    // Ten items left in the store at shutdown.
    let first = build();
    first.pause();
    let producer = first.producer();
    for i in 0..10 {
        producer.push(i).unwrap();
    }
    drop(producer);
    let (_, unhandled) = first.shutdown_timeout(Duration::ZERO);
    assert!(unhandled.is_empty(), "the store took every item");
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let last = segments.pop().expect("a segment");
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0x2a, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3]);
    std::fs::write(&last, &bytes).unwrap();

    let second = build();
    let cut = wait_event(name, "durable store cut a corrupt tail");
    assert_eq!(cut.level, Level::WARN, "{cut:?}");
    assert!(cut.fields.number("records") >= 1, "{cut:?}");
    assert_eq!(cut.fields.number("bytes"), 11, "{cut:?}");
    let replayed = wait_event(name, "durable store replayed");
    assert_eq!(replayed.level, Level::INFO, "{replayed:?}");
    assert_eq!(replayed.fields.number("items"), 10, "{replayed:?}");
    second.producer().submit(999).unwrap().wait().unwrap();
    let failed = wait_event(name, "durable store failed");
    assert_eq!(failed.level, Level::ERROR, "{failed:?}");
    assert!(
        failed.fields.must("error").contains("999 does not encode"),
        "{failed:?}"
    );
    second.shutdown();
}
