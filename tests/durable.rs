//! The durable store (feature `durable`): a restart replays what was not
//! handled, exactly once after a graceful stop; retries and ids survive;
//! a corrupt tail, a full store and an unwritable directory each give
//! their documented outcome.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ringbatch::durable::{CorruptTail, Durability, ItemId, Postcard, StoreError};
use ringbatch::{Batch, Batcher, ConfigError, Error, Failure, RetryPolicy, SubmitError};

/// A fresh directory under the system's temporary one, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "ringbatch-durable-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A gate a handler waits at until the test opens it (bounded: a test that
/// never opens it fails rather than hangs).
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn wait(&self) {
        let open = self.open.lock().unwrap();
        let (open, timeout) = self
            .cv
            .wait_timeout_while(open, Duration::from_secs(60), |open| !*open)
            .unwrap();
        assert!(
            *open && !timeout.timed_out(),
            "the test never opened the gate"
        );
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// Waits until `done()` holds, failing with `what` after 30 s.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// An item of producer `p`, number `i`.
fn item(p: u64, i: u64) -> u64 {
    (p << 32) | i
}

#[test]
fn a_graceful_restart_hands_every_item_over_exactly_once_in_producer_order() {
    const PRODUCERS: u64 = 4;
    const ITEMS: u64 = 100_000;
    let dir = TempDir::new("graceful");
    let handled: Arc<Mutex<Vec<u64>>> = Arc::default();
    let gate = Arc::new(Gate::default());
    let batches = Arc::new(AtomicUsize::new(0));
    let first = {
        let (handled, gate, batches) = (handled.clone(), gate.clone(), batches.clone());
        Batcher::builder()
            .lanes(4)
            .capacity(1 << 19)
            .max_batch(512)
            .durable(Durability::new(dir.path()), Postcard)
            .handler_fn(move |batch: &mut Batch<'_, u64, ()>| {
                // The tenth batch stalls until the test has begun the shutdown.
                if batches.fetch_add(1, Ordering::SeqCst) == 9 {
                    gate.wait();
                }
                handled.lock().unwrap().extend_from_slice(batch.items());
                batch.ok_with(|_| ());
                Ok(())
            })
            .build()
            .unwrap()
    };
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let producer = first.producer();
            std::thread::spawn(move || {
                for i in 0..ITEMS {
                    producer
                        .push(item(p, i))
                        .expect("accepted: the lanes hold every item");
                }
            })
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }
    wait_for("the handler to stall", || {
        batches.load(Ordering::SeqCst) >= 10
    });
    // Items of a fifth producer, pushed until the shutdown closes the lanes:
    // every one accepted must be handled too.
    let probe = first.producer();
    let stopping = std::thread::spawn(move || first.shutdown_timeout(Duration::ZERO));
    let mut probes = 0;
    loop {
        match probe.push(item(PRODUCERS, probes)) {
            Ok(()) => probes += 1,
            Err(SubmitError::Closed(_)) => break,
            Err(other) => panic!("a probe was refused for another reason: {other:?}"),
        }
        assert!(probes < 1_000_000, "the shutdown never closed the lanes");
    }
    gate.open();
    let (stats, unhandled) = stopping.join().unwrap();
    // The store is released with the batcher's last handle.
    drop(probe);
    assert!(
        unhandled.is_empty(),
        "every item went to the store, none came back"
    );
    let durable = stats.durable.expect("a durable batcher reports its store");
    let handled_first = handled.lock().unwrap().len() as u64;
    let total = PRODUCERS * ITEMS + probes;
    assert_eq!(
        durable.written_at_shutdown,
        total - handled_first,
        "every item not handled was written at shutdown"
    );
    assert!(
        durable.written_at_shutdown > 0,
        "the stalled handler left items"
    );

    let second = Batcher::builder()
        .max_batch(512)
        .durable(Durability::new(dir.path()), Postcard)
        .handler_fn({
            let handled = handled.clone();
            move |batch: &mut Batch<'_, u64, ()>| {
                handled.lock().unwrap().extend_from_slice(batch.items());
                batch.ok_with(|_| ());
                Ok(())
            }
        })
        .build()
        .unwrap();
    second.flush();
    let stats = second.shutdown();
    let durable = stats.durable.unwrap();
    assert_eq!(
        durable.replayed,
        total - handled_first,
        "the rest was replayed"
    );
    assert_eq!(durable.incarnation, 2);

    let handled = handled.lock().unwrap();
    assert_eq!(
        handled.len() as u64,
        total,
        "every item handled once, none twice"
    );
    let mut next: HashMap<u64, u64> = HashMap::new();
    for &x in handled.iter() {
        let (p, i) = (x >> 32, x & 0xffff_ffff);
        let expected = next.entry(p).or_insert(0);
        assert_eq!(i, *expected, "producer {p}: item {i} out of order");
        *expected += 1;
    }
    for p in 0..PRODUCERS {
        assert_eq!(next[&p], ITEMS, "producer {p}: every item handled");
    }
}

/// A handler call as a test sees it: the attempt, the ids, the items.
type Call = (u32, Vec<ItemId>, Vec<u64>);

#[test]
fn a_batch_waiting_to_retry_resumes_its_attempts_and_keeps_its_ids_after_a_restart() {
    let dir = TempDir::new("retry");
    let seen: Arc<Mutex<Vec<Call>>> = Arc::default();
    let policy = RetryPolicy::default()
        .with_max_retries(3)
        .with_initial_delay(Duration::from_secs(600))
        .with_max_delay(Duration::from_secs(600))
        .with_jitter(0.0);
    let first = Batcher::builder()
        .max_batch(8)
        .durable(Durability::new(dir.path()), Postcard)
        .retry_policy(policy)
        .handler_fn({
            let seen = seen.clone();
            move |batch: &mut Batch<'_, u64, ()>| {
                seen.lock().unwrap().push((
                    batch.attempt(),
                    batch.item_ids().to_vec(),
                    batch.items().to_vec(),
                ));
                Err(Failure::retryable("the sink is down").into())
            }
        })
        .build()
        .unwrap();
    let producer = first.producer();
    for i in 0..5 {
        producer.push(i).unwrap();
    }
    first.flush_now();
    wait_for("the first attempt", || !seen.lock().unwrap().is_empty());
    let (_, unhandled) = first.shutdown_timeout(Duration::ZERO);
    assert!(
        unhandled.is_empty(),
        "the batch waiting to retry is in the store"
    );
    // The store is released with the batcher's last handle.
    drop(producer);
    let first_calls = seen.lock().unwrap().clone();
    let ids_before: Vec<ItemId> = first_calls.iter().flat_map(|c| c.1.clone()).collect();
    let items_before: Vec<u64> = first_calls.iter().flat_map(|c| c.2.clone()).collect();
    assert_eq!(items_before, vec![0, 1, 2, 3, 4]);
    assert!(
        first_calls.iter().all(|c| c.0 == 1),
        "one attempt each before the restart"
    );
    assert!(ids_before.iter().all(|id| id.incarnation == 1));

    seen.lock().unwrap().clear();
    let second = Batcher::builder()
        .max_batch(8)
        .durable(Durability::new(dir.path()), Postcard)
        .retry_policy(policy)
        .handler_fn({
            let seen = seen.clone();
            move |batch: &mut Batch<'_, u64, ()>| {
                seen.lock().unwrap().push((
                    batch.attempt(),
                    batch.item_ids().to_vec(),
                    batch.items().to_vec(),
                ));
                batch.ok_with(|_| ());
                Ok(())
            }
        })
        .build()
        .unwrap();
    second.flush();
    let stats = second.shutdown();
    let calls = seen.lock().unwrap().clone();
    let ids_after: Vec<ItemId> = calls.iter().flat_map(|c| c.1.clone()).collect();
    let items_after: Vec<u64> = calls.iter().flat_map(|c| c.2.clone()).collect();
    assert_eq!(items_after, items_before, "the same items, in order");
    assert_eq!(ids_after, ids_before, "a replayed item keeps its id");
    assert!(
        calls.iter().all(|c| c.0 == 2),
        "the replayed batch is the second attempt: {:?}",
        calls.iter().map(|c| c.0).collect::<Vec<_>>()
    );
    assert_eq!(stats.durable.unwrap().replayed, 5);
    assert_eq!(stats.dispatched.replay, calls.len() as u64);
}

#[test]
fn retries_in_order_let_no_later_item_pass_a_failed_one() {
    let dir = TempDir::new("in-order");
    let handled: Arc<Mutex<Vec<u64>>> = Arc::default();
    let failed_once = Arc::new(AtomicUsize::new(0));
    let batcher = Batcher::builder()
        .max_batch(4)
        .durable(Durability::new(dir.path()), Postcard)
        .retry_policy(
            RetryPolicy::default()
                .with_initial_delay(Duration::from_millis(20))
                .with_in_order(true),
        )
        .handler_fn({
            let (handled, failed_once) = (handled.clone(), failed_once.clone());
            move |batch: &mut Batch<'_, u64, ()>| {
                if batch.items().contains(&10) && failed_once.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(Failure::retryable("the first try of item 10 fails").into());
                }
                handled.lock().unwrap().extend_from_slice(batch.items());
                batch.ok_with(|_| ());
                Ok(())
            }
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    for i in 0..200 {
        producer.push(i).unwrap();
    }
    let stats = batcher.shutdown();
    let handled = handled.lock().unwrap();
    assert_eq!(
        *handled,
        (0..200).collect::<Vec<_>>(),
        "handled in submission order"
    );
    assert!(stats.retried >= 1, "a retry happened");
    assert!(failed_once.load(Ordering::SeqCst) >= 1);
}

#[test]
fn retries_in_order_need_a_handler_on_the_drainer() {
    let error = Batcher::<u64, ()>::builder()
        .retry_policy(RetryPolicy::default().with_in_order(true))
        .handler_threads_fn(2, |_| {
            |batch: &mut Batch<'_, u64, ()>| {
                batch.ok_with(|_| ());
                Ok(())
            }
        })
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "retry_policy.in_order");
}

/// The store's segment files, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// Writes `n` items to a store in `dir` at shutdown (the drainer is
/// paused, so none is handled), and returns them.
fn leave_items(dir: &Path, n: u64, corrupt_tail: CorruptTail) -> Vec<u64> {
    let batcher = Batcher::builder()
        .max_batch(16)
        .durable(
            Durability::new(dir).with_corrupt_tail(corrupt_tail),
            Postcard,
        )
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap();
    batcher.pause();
    let producer = batcher.producer();
    let items: Vec<u64> = (0..n).collect();
    for &i in &items {
        producer.push(i).unwrap();
    }
    let (stats, unhandled) = batcher.shutdown_timeout(Duration::ZERO);
    assert!(unhandled.is_empty());
    assert_eq!(stats.durable.unwrap().written_at_shutdown, n);
    items
}

/// Builds a batcher on `dir` that records what it handles, replays,
/// shuts down, and returns the items and the stats.
fn replay(
    dir: &Path,
    corrupt_tail: CorruptTail,
) -> Result<(Vec<u64>, ringbatch::Stats), ConfigError> {
    let handled: Arc<Mutex<Vec<u64>>> = Arc::default();
    let batcher = Batcher::builder()
        .max_batch(16)
        .durable(
            Durability::new(dir).with_corrupt_tail(corrupt_tail),
            Postcard,
        )
        .handler_fn({
            let handled = handled.clone();
            move |batch: &mut Batch<'_, u64, ()>| {
                handled.lock().unwrap().extend_from_slice(batch.items());
                batch.ok_with(|_| ());
                Ok(())
            }
        })
        .build()?;
    batcher.flush();
    let stats = batcher.shutdown();
    let handled = handled.lock().unwrap().clone();
    Ok((handled, stats))
}

#[test]
fn a_corrupt_tail_is_cut_and_every_record_before_it_replayed() {
    let dir = TempDir::new("corrupt");
    let items = leave_items(dir.path(), 100, CorruptTail::Truncate);
    let last = segments(dir.path()).pop().expect("a segment");
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0x2a, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3]);
    std::fs::write(&last, &bytes).unwrap();
    let (handled, stats) = replay(dir.path(), CorruptTail::Truncate).unwrap();
    assert_eq!(handled, items, "every record before the bad one replayed");
    let durable = stats.durable.unwrap();
    assert!(
        durable.corrupt_records_cut >= 1,
        "the bad record was counted"
    );
    assert_eq!(
        durable.corrupt_bytes_cut, 11,
        "exactly the bad bytes were cut"
    );
}

#[test]
fn a_record_cut_short_loses_only_itself() {
    let dir = TempDir::new("truncated");
    let items = leave_items(dir.path(), 100, CorruptTail::Truncate);
    let last = segments(dir.path()).pop().expect("a segment");
    let len = std::fs::metadata(&last).unwrap().len();
    // The last record holds the last 4 items (100 = 6 × 16 + 4); cut it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let (handled, stats) = replay(dir.path(), CorruptTail::Truncate).unwrap();
    assert_eq!(handled, items[..96], "every whole record replayed");
    assert!(stats.durable.unwrap().corrupt_records_cut >= 1);
}

#[test]
fn refusing_a_corrupt_tail_fails_the_build_and_keeps_the_files() {
    let dir = TempDir::new("refuse");
    let items = leave_items(dir.path(), 20, CorruptTail::Refuse);
    let last = segments(dir.path()).pop().expect("a segment");
    let mut bytes = std::fs::read(&last).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    std::fs::write(&last, &bytes).unwrap();
    let error = replay(dir.path(), CorruptTail::Refuse).unwrap_err();
    assert!(
        matches!(error, ConfigError::Store(StoreError::Corrupt { .. })),
        "expected a corrupt-store error, got {error:?}"
    );
    assert_eq!(
        std::fs::read(&last).unwrap(),
        bytes,
        "the file is left as it was"
    );
    // Repaired by the truncating policy, the earlier records are all there.
    let (handled, _) = replay(dir.path(), CorruptTail::Truncate).unwrap();
    assert_eq!(
        handled,
        items[..16],
        "the record before the damaged one survives"
    );
}

#[test]
fn a_full_store_still_hands_the_batch_over_and_says_why_it_is_not_durable() {
    let dir = TempDir::new("full");
    let errors: Arc<Mutex<Vec<Option<StoreError>>>> = Arc::default();
    let handled: Arc<Mutex<Vec<u64>>> = Arc::default();
    let batcher = Batcher::builder()
        .max_batch(64)
        .durable(Durability::new(dir.path()).with_max_bytes(200), Postcard)
        .handler_fn({
            let (errors, handled) = (errors.clone(), handled.clone());
            move |batch: &mut Batch<'_, u64, ()>| {
                errors.lock().unwrap().push(batch.store_error().cloned());
                handled.lock().unwrap().extend_from_slice(batch.items());
                batch.ok_with(|_| ());
                Ok(())
            }
        })
        .build()
        .unwrap();
    batcher.pause();
    let producer = batcher.producer();
    for i in 0..64 {
        producer.push(i).unwrap();
    }
    batcher.resume();
    batcher.flush();
    let stats = batcher.shutdown();
    assert_eq!(
        *handled.lock().unwrap(),
        (0..64).collect::<Vec<_>>(),
        "nothing lost"
    );
    let errors = errors.lock().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, Some(StoreError::Full { limit: 200, .. }))),
        "a batch too big for the store says so: {errors:?}"
    );
    assert!(stats.durable.unwrap().write_errors >= 1, "and is counted");
}

#[test]
fn a_directory_that_cannot_be_written_fails_the_build() {
    let dir = TempDir::new("readonly");
    std::fs::create_dir_all(dir.path()).unwrap();
    let mut permissions = std::fs::metadata(dir.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o555);
    std::fs::set_permissions(dir.path(), permissions).unwrap();
    // Root writes anyway: then a directory no one may create files in.
    let probe = dir.path().join("probe");
    let target = if std::fs::write(&probe, b"").is_ok() {
        let _ = std::fs::remove_file(&probe);
        PathBuf::from("/proc/self")
    } else {
        dir.path().to_path_buf()
    };
    let error = Batcher::<u64, ()>::builder()
        .durable(Durability::new(&target), Postcard)
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap_err();
    match &error {
        ConfigError::Store(StoreError::Io { path, .. }) => {
            assert!(
                path.starts_with(&target),
                "the error names {path:?}, not under {target:?}"
            );
        }
        other => panic!("expected an I/O error of the store, got {other:?}"),
    }
    assert_eq!(error.field(), "durable");
    let mut permissions = std::fs::metadata(dir.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(dir.path(), permissions).unwrap();
}

#[test]
fn a_directory_open_in_one_batcher_is_refused_to_another() {
    let dir = TempDir::new("locked");
    let make = || {
        Batcher::<u64, ()>::builder()
            .durable(Durability::new(dir.path()), Postcard)
            .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
                batch.ok_with(|_| ());
                Ok(())
            })
            .build()
    };
    let first = make().unwrap();
    let error = make().unwrap_err();
    assert!(
        matches!(error, ConfigError::Store(StoreError::Locked { .. })),
        "{error:?}"
    );
    drop(first);
    make().expect("free again once the first batcher is gone");
}

#[test]
fn tickets_of_items_written_at_shutdown_say_persisted() {
    let dir = TempDir::new("persisted");
    let batcher = Batcher::<u64, u64>::builder()
        .durable(Durability::new(dir.path()), Postcard)
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.complete_with(|x| Ok::<_, Error>(*x));
            Ok(())
        })
        .build()
        .unwrap();
    batcher.pause();
    let ticket = batcher.producer().submit(7).unwrap();
    let (stats, unhandled) = batcher.shutdown_timeout(Duration::ZERO);
    assert!(unhandled.is_empty());
    assert!(matches!(ticket.wait(), Err(Error::Persisted)));
    assert_eq!(stats.durable.unwrap().written_at_shutdown, 1);
}

#[test]
fn a_durable_batcher_refuses_inline_when_idle() {
    let dir = TempDir::new("inline");
    let error = Batcher::<u64, ()>::builder()
        .durable(Durability::new(dir.path()), Postcard)
        .inline_when_idle(true)
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "inline_when_idle");
}

#[test]
fn the_prometheus_export_carries_the_store_counts() {
    let dir = TempDir::new("prometheus");
    let batcher = Batcher::<u64, ()>::builder()
        .durable(Durability::new(dir.path()), Postcard)
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .unwrap();
    batcher.producer().submit(1).unwrap().wait().unwrap();
    let text = batcher.stats().prometheus("app");
    for name in [
        "app_durable_items_written_total 1",
        "app_durable_replayed_total 0",
        "app_durable_fsyncs_total",
        "app_durable_corrupt_records_cut_total 0",
        "app_durable_bytes_on_disk",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

#[cfg(feature = "tokio")]
#[test]
fn an_async_batch_abandoned_by_its_runtime_stays_in_the_store() {
    let dir = TempDir::new("abandoned");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let batcher = {
        let started = started.clone();
        Batcher::<u64, u64>::builder()
            .lanes(1)
            .max_in_flight(1)
            .durable(Durability::new(dir.path()), Postcard)
            .runtime(runtime.handle().clone())
            .async_handler_fn(move |mut batch: ringbatch::AsyncBatch<u64, u64>| {
                let started = started.clone();
                async move {
                    // The first item is handled; the sink never answers for
                    // the others.
                    let first = batch.items()[0];
                    batch.ok(0, first).unwrap();
                    started.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<()>().await;
                    drop(batch);
                    Ok(())
                }
            })
            .build()
            .unwrap()
    };
    let producer = batcher.producer();
    batcher.pause();
    let tickets: Vec<_> = (1..=4).map(|x| producer.submit(x).unwrap()).collect();
    batcher.resume();
    wait_for("the batch to reach the handler", || {
        started.load(Ordering::SeqCst) == 1
    });
    drop(runtime);
    let outcomes: Vec<_> = tickets.into_iter().map(|t| t.wait()).collect();
    assert!(matches!(outcomes[0], Ok(1)), "{:?}", outcomes[0]);
    for outcome in &outcomes[1..] {
        assert!(
            matches!(outcome, Err(Error::Persisted)),
            "an abandoned item's ticket should say it is in the store: {outcome:?}"
        );
    }
    drop(producer);
    let stats = batcher.shutdown();
    assert_eq!(stats.items_failed, 0, "abandoned items are not failed ones");

    let (handled, stats) = replay(dir.path(), CorruptTail::Truncate).unwrap();
    assert_eq!(
        handled,
        vec![2, 3, 4],
        "the items the handler never finished"
    );
    assert_eq!(stats.durable.unwrap().replayed, 3);
}
