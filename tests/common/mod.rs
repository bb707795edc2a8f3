//! Helpers shared by the integration tests: a gate that holds the handler,
//! bounded joins, and a tally of what the handler saw.

#![allow(dead_code)]

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any single wait in these tests may take before the test fails
/// (generous: the machines are shared and slow).
pub const BOUND: Duration = Duration::from_secs(60);

/// Holds the handler inside `handle` until opened, so that a test can fill a
/// lane while the drainer is busy.
#[derive(Clone, Default)]
pub struct Gate {
    inner: Arc<(Mutex<GateState>, Condvar)>,
}

#[derive(Default)]
struct GateState {
    open: bool,
    /// Batches that reached the gate.
    arrived: u64,
}

impl Gate {
    /// A closed gate.
    pub fn closed() -> Self {
        Self::default()
    }

    /// Called by the handler: counts the arrival and waits until open (at
    /// most [`BOUND`], then panics so the test fails instead of hanging).
    pub fn pass(&self) {
        let (lock, cond) = &*self.inner;
        let mut state = lock.lock().unwrap();
        state.arrived += 1;
        cond.notify_all();
        let deadline = Instant::now() + BOUND;
        while !state.open {
            let now = Instant::now();
            assert!(now < deadline, "the gate was never opened");
            state = cond.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Waits until at least `n` batches have reached the gate.
    pub fn wait_arrived(&self, n: u64) {
        let (lock, cond) = &*self.inner;
        let mut state = lock.lock().unwrap();
        let deadline = Instant::now() + BOUND;
        while state.arrived < n {
            let now = Instant::now();
            assert!(
                now < deadline,
                "expected {n} batches at the gate within {BOUND:?}, saw {}",
                state.arrived
            );
            state = cond.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    pub fn open(&self) {
        let (lock, cond) = &*self.inner;
        lock.lock().unwrap().open = true;
        cond.notify_all();
    }

    pub fn close(&self) {
        let (lock, _) = &*self.inner;
        lock.lock().unwrap().open = false;
    }
}

/// Runs `f` on a new thread and returns a handle whose `join` fails the test
/// if the thread does not finish within [`BOUND`].
pub struct Bounded<T> {
    rx: mpsc::Receiver<thread::Result<T>>,
    name: String,
}

pub fn spawn_bounded<T: Send + 'static>(
    name: impl Into<String>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Bounded<T> {
    let name = name.into();
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(result);
        })
        .expect("spawn a test thread");
    Bounded { rx, name }
}

impl<T> Bounded<T> {
    /// The thread's result; fails the test if it panicked or did not finish
    /// within [`BOUND`].
    pub fn join(self) -> T {
        match self.rx.recv_timeout(BOUND) {
            Ok(Ok(value)) => value,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!(
                "thread {} did not finish within {BOUND:?} (hung?)",
                self.name
            ),
        }
    }

    /// Whether the thread is still running after `wait` (used to show that a
    /// producer is blocked; a `true` here is then confirmed by later events).
    pub fn still_running_after(&self, wait: Duration) -> bool {
        matches!(
            self.rx.recv_timeout(wait),
            Err(mpsc::RecvTimeoutError::Timeout)
        )
    }
}

/// Waits for `cond` to hold, polling, for at most [`BOUND`].
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// An item value that names its producer and its index in that producer's
/// stream.
pub fn encode(producer: u64, index: u64) -> u64 {
    (producer << 40) | index
}

pub fn decode(value: u64) -> (usize, u64) {
    ((value >> 40) as usize, value & ((1 << 40) - 1))
}

/// The result every test handler computes from an item.
pub fn f(value: u64) -> u64 {
    value.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

/// What a handler saw, per producer: the next index it expects (so that each
/// producer's items must arrive once each, in order), and any violation.
#[derive(Default, Debug)]
pub struct Tally {
    pub next: Vec<u64>,
    pub items: u64,
    pub batches: u64,
    pub out_of_order: Vec<(usize, u64, u64)>,
}

impl Tally {
    pub fn new(producers: usize) -> Self {
        Self {
            next: vec![0; producers],
            ..Self::default()
        }
    }

    /// Records one item; an index other than the expected one is a duplicate,
    /// a loss or a reordering.
    pub fn see(&mut self, value: u64) {
        let (producer, index) = decode(value);
        self.items += 1;
        let expected = self.next[producer];
        if index != expected && self.out_of_order.len() < 16 {
            self.out_of_order.push((producer, expected, index));
        }
        self.next[producer] = index + 1;
    }
}

/// Number of cores, at least 1.
pub fn cores() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// A handler that records every item of each batch in `tally` (counting the
/// batch), then answers each item with `f(item)`.
pub fn tallying_handler(
    tally: std::sync::Arc<Mutex<Tally>>,
) -> impl for<'a> FnMut(&mut ringbatch::Batch<'a, u64, u64>) -> Result<(), ringbatch::BatchError>
+ Send
+ 'static {
    move |batch| {
        let mut seen = tally.lock().unwrap();
        seen.batches += 1;
        for &item in batch.items() {
            seen.see(item);
        }
        drop(seen);
        batch.ok_with(|&x| f(x));
        Ok(())
    }
}

/// Waits for a ticket's result for at most [`BOUND`]; fails the test if none
/// arrives.
pub fn wait_ticket<R>(mut ticket: ringbatch::Ticket<R>) -> Result<R, ringbatch::Error> {
    ticket
        .wait_timeout(BOUND)
        .unwrap_or_else(|| panic!("no result within {BOUND:?}"))
}

/// Whether this is a CI run (`CI` set to anything but empty, `0` or
/// `false`): tests that need a server must then find it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The value of `var`, which names a server `test` needs. When it is not
/// set the test is skipped, saying so on stderr (written directly, so that
/// the test harness does not capture it); in CI a missing server fails the
/// test instead.
pub fn server_env(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Some(value),
        _ => {
            assert!(
                !in_ci(),
                "{test}: {var} is not set, and CI is: in CI the sink tests must run \
                 against real servers (`bin/services start`, then \
                 `eval \"$(bin/services env)\"`)"
            );
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {var} is not set; start the servers with `bin/services start` \
                 and load their variables with `eval \"$(bin/services env)\"`"
            );
            None
        }
    }
}

/// The batches a [`recording_with`] handler saw, in order.
pub type Batches<T> = Arc<Mutex<Vec<Vec<T>>>>;

/// A handler that records every batch in `batches` (after `gate`, if any,
/// lets it pass) and answers each item with `answer(item)`.
pub fn recording_with<T, R>(
    batches: &Batches<T>,
    gate: Option<&Gate>,
    answer: impl Fn(&T) -> R + Send + 'static,
) -> impl FnMut(&mut ringbatch::Batch<'_, T, R>) -> Result<(), ringbatch::BatchError> + Send + 'static
where
    T: Clone + Send + 'static,
    R: 'static,
{
    let (batches, gate) = (Arc::clone(batches), gate.cloned());
    move |batch| {
        if let Some(gate) = &gate {
            gate.pass();
        }
        batches.lock().unwrap().push(batch.items().to_vec());
        batch.ok_with(&answer);
        Ok(())
    }
}

/// A fresh directory under the system's temporary one, removed on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ringbatch-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// Copies the files of `self` into `to` as they are now: what a crash
    /// of the process at this moment would leave on disk (the files a
    /// process wrote are in the operating system's cache, which a crash
    /// of the process does not lose).
    pub fn crash_image(&self, to: &TempDir) {
        std::fs::create_dir_all(to.path()).expect("create the image directory");
        for entry in std::fs::read_dir(self.path()).expect("read the store directory") {
            let entry = entry.expect("a directory entry");
            if entry.file_type().expect("its type").is_file() {
                std::fs::copy(entry.path(), to.path().join(entry.file_name()))
                    .expect("copy a store file");
            }
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An async handler that counts the items reaching it and holds each batch
/// until the test opens it, then hands it to `inner`.
#[cfg(feature = "tokio")]
pub struct Held<H> {
    pub inner: H,
    pub entered: Arc<std::sync::atomic::AtomicU64>,
    pub open: tokio::sync::watch::Receiver<bool>,
}

#[cfg(feature = "tokio")]
impl<H> Held<H> {
    /// `inner`, held; open it with `true` on the sender.
    pub fn new(inner: H) -> (Self, tokio::sync::watch::Sender<bool>) {
        let (open_tx, open) = tokio::sync::watch::channel(false);
        let held = Held {
            inner,
            entered: Arc::default(),
            open,
        };
        (held, open_tx)
    }
}

#[cfg(feature = "tokio")]
impl<T, R, H> ringbatch::AsyncHandler<T, R> for Held<H>
where
    T: Send + 'static,
    R: Send + 'static,
    H: ringbatch::AsyncHandler<T, R>,
{
    async fn handle(
        &self,
        batch: ringbatch::AsyncBatch<T, R>,
    ) -> Result<(), ringbatch::BatchError> {
        self.entered
            .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::SeqCst);
        let mut open = self.open.clone();
        tokio::time::timeout(BOUND, open.wait_for(|open| *open))
            .await
            .expect("the test never opened the handler")
            .expect("the test dropped the handler's opener");
        self.inner.handle(batch).await
    }
}

/// (feature `durable`) The first incarnation of a crash test for a sink:
/// a durable batcher on `store` whose handler, `inner`, is held until the
/// first batch has reached it and the test has copied `store` into `image`
/// (what a crash at that moment would leave). Then the handler is opened,
/// every item of `items` is submitted (at most 256 tickets outstanding)
/// and must succeed, and the batcher shuts down. Returns how many items
/// were in the handler when the image was taken: the image holds them as
/// not done.
#[cfg(all(feature = "tokio", feature = "durable"))]
pub async fn run_then_crash_image<T, R, H>(
    inner: H,
    codec: impl ringbatch::durable::Codec<T> + 'static,
    store: &TempDir,
    image: &TempDir,
    items: Vec<T>,
) -> u64
where
    T: Send + std::fmt::Debug + Clone + 'static,
    R: Send + 'static,
    H: ringbatch::AsyncHandler<T, R>,
{
    use std::sync::atomic::Ordering;
    const WINDOW: usize = 256;
    let (held, open) = Held::new(inner);
    let entered = Arc::clone(&held.entered);
    let batcher = ringbatch::Batcher::builder()
        .max_batch(256)
        .max_in_flight(4)
        .durable(ringbatch::durable::Durability::new(store.path()), codec)
        .async_handler(held)
        .build()
        .expect("a valid batcher");
    let mut producer = batcher.async_producer();
    // The submitter waits for the handler, which waits for the image.
    let submitter = tokio::spawn(async move {
        let mut pending = std::collections::VecDeque::new();
        for item in items {
            if pending.len() == WINDOW {
                let (item, ticket): (T, ringbatch::Ticket<R>) = pending.pop_front().unwrap();
                if let Err(e) = ticket.await {
                    panic!("item {item:?} failed: {e}");
                }
            }
            let ticket = producer.submit(item.clone()).await.expect("submit");
            pending.push_back((item, ticket));
        }
        for (item, ticket) in pending {
            if let Err(e) = ticket.await {
                panic!("item {item:?} failed: {e}");
            }
        }
    });
    let deadline = Instant::now() + BOUND;
    while entered.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no batch reached the handler");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let in_handler = entered.load(Ordering::SeqCst);
    store.crash_image(image);
    open.send(true).expect("open the handler");
    submitter.await.expect("the submitter finished");
    batcher.shutdown_async().await;
    in_handler
}
