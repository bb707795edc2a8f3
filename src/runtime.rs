//! The tokio facade: async handlers that run batches on a tokio runtime with
//! a bounded number in flight.
//!
//! The drainer thread still sweeps the lanes and assembles batches; instead
//! of calling a handler itself it hands each full buffer to one of
//! `max_in_flight` worker tasks spawned on the runtime when the batcher is
//! built, takes a fresh buffer from the pool and goes on assembling. When
//! every buffer is in flight it waits for one to come back, so backpressure
//! flows through the rings to the producers. A worker runs the handler's
//! future, completes the tickets the handler left (from the task), and puts
//! the buffer back in the pool. Nothing is allocated per batch: the workers,
//! their hand-off queue and the buffers all exist from the start.
//!
//! If the runtime shuts down while batches are in flight, their tickets fail
//! with [`Error::RuntimeShutdown`], and so does every later batch: nothing
//! hangs.

use core::fmt;
use core::future::{Future, poll_fn};
use core::pin::pin;
use core::task::{Context, Poll, Waker};
use std::time::Instant;

use crossbeam_queue::ArrayQueue;
use tokio::sync::Notify;

use crate::batch::{BatchBuf, Origin};
use crate::completion::TableOwner;
use crate::contain::lock;
use crate::engine::Shared;
use crate::error::Error;
use crate::failure::{Outcome, Settled};
use crate::handler::{Batch, BatchError, CompleteError, batch_failed, deliver};
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, fence};

/// An async sink: receives each batch as an owned [`AsyncBatch`] and returns
/// a future that sends it (to a database, an HTTP exporter) and completes its
/// items.
///
/// Up to `max_in_flight` batches run at once, so `handle` takes `&self`: keep
/// shared state behind a connection pool, a mutex or atomics. For the simple
/// case pass a closure to
/// [`BatcherBuilder::async_handler_fn`](crate::BatcherBuilder::async_handler_fn).
///
/// After the future finishes, items it left uncompleted fail as with
/// [`Handler`](crate::Handler): `Ok(())` gives [`Error::NotCompleted`], an
/// error [`Error::BatchFailed`], a panic [`Error::HandlerPanicked`].
///
/// # Examples
///
/// ```
/// use ringbatch::{AsyncBatch, AsyncHandler, BatchError, Batcher};
///
/// /// Pretends to write each batch to a remote store.
/// struct Store;
///
/// impl AsyncHandler<String, usize> for Store {
///     async fn handle(&self, mut batch: AsyncBatch<String, usize>) -> Result<(), BatchError> {
///         tokio::task::yield_now().await; // the network round trip
///         batch.complete_with(|line| Ok::<_, ringbatch::Error>(line.len()));
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let batcher = Batcher::builder().async_handler(Store).build().unwrap();
/// let mut producer = batcher.async_producer();
/// assert_eq!(producer.submit("hello".to_string()).await.unwrap(), 5);
/// batcher.shutdown_async().await;
/// # }
/// ```
pub trait AsyncHandler<T, R>: Send + Sync + 'static {
    /// Handles one batch.
    ///
    /// # Errors
    ///
    /// An error fails every item of the batch not completed yet.
    fn handle(
        &self,
        batch: AsyncBatch<T, R>,
    ) -> impl Future<Output = Result<(), BatchError>> + Send;
}

/// A closure returning a future, as an [`AsyncHandler`].
pub(crate) struct FnAsyncHandler<F>(pub(crate) F);

impl<T, R, F, Fut> AsyncHandler<T, R> for FnAsyncHandler<F>
where
    F: Fn(AsyncBatch<T, R>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BatchError>> + Send,
{
    fn handle(
        &self,
        batch: AsyncBatch<T, R>,
    ) -> impl Future<Output = Result<(), BatchError>> + Send {
        (self.0)(batch)
    }
}

/// One batch, owned by an [`AsyncHandler`]'s future: the items and a way to
/// complete each. The same operations as [`Batch`]; [`view`](Self::view)
/// gives the full [`Batch`] API.
///
/// Dropping it hands the buffer back to the worker, which completes what the
/// handler left and returns the buffer to the pool.
pub struct AsyncBatch<T, R> {
    /// `Some` until dropped.
    buf: Option<BatchBuf<T>>,
    shared: Arc<Shared<T, R>>,
    slot: Arc<WorkerSlot<T>>,
}

impl<T, R> AsyncBatch<T, R> {
    fn buf(&self) -> &BatchBuf<T> {
        self.buf.as_ref().expect("present until dropped")
    }

    /// A [`Batch`] view of this batch, for its whole API.
    pub fn view(&mut self) -> Batch<'_, T, R> {
        let table: &TableOwner<R> = &self.shared.table;
        Batch::new(self.buf.as_mut().expect("present until dropped"), table)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.buf().len()
    }

    /// Whether the batch has no items (never true for a dispatched batch).
    pub fn is_empty(&self) -> bool {
        self.buf().is_empty()
    }

    /// The items, in dispatch order.
    pub fn items(&self) -> &[T] {
        &self.buf().items
    }

    /// The items, mutably.
    pub fn items_mut(&mut self) -> &mut [T] {
        &mut self.buf.as_mut().expect("present until dropped").items
    }

    /// Items not completed yet.
    pub fn remaining(&self) -> usize {
        self.buf().len() - self.buf().completed
    }

    /// Completes item `index` with `result`; see [`Batch::complete`].
    ///
    /// # Errors
    ///
    /// As for [`Batch::complete`].
    pub fn complete(
        &mut self,
        index: usize,
        result: Result<R, Error>,
    ) -> Result<(), CompleteError> {
        self.view().complete(index, result)
    }

    /// Completes item `index` with `Ok(value)`.
    ///
    /// # Errors
    ///
    /// As for [`Batch::complete`].
    pub fn ok(&mut self, index: usize, value: R) -> Result<(), CompleteError> {
        self.view().ok(index, value)
    }

    /// Fails item `index` with `error`.
    ///
    /// # Errors
    ///
    /// As for [`Batch::complete`].
    pub fn fail(
        &mut self,
        index: usize,
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Result<(), CompleteError> {
        self.view().fail(index, error)
    }

    /// Completes every item not completed yet with `f(item)`, in order.
    pub fn complete_with<E>(&mut self, f: impl FnMut(&T) -> Result<R, E>)
    where
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        self.view().complete_with(f);
    }

    /// Completes every item not completed yet with `Ok(f(item))`, in order.
    pub fn ok_with(&mut self, f: impl FnMut(&T) -> R) {
        self.view().ok_with(f);
    }

    /// Asks for item `index` to be retried; see [`Batch::retry`].
    ///
    /// # Errors
    ///
    /// As for [`Batch::complete`].
    pub fn retry(
        &mut self,
        index: usize,
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Result<(), CompleteError> {
        self.view().retry(index, error)
    }

    /// Asks for item `index` to be retried after the maximum delay; see
    /// [`Batch::rate_limited`].
    ///
    /// # Errors
    ///
    /// As for [`Batch::complete`].
    pub fn rate_limited(
        &mut self,
        index: usize,
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Result<(), CompleteError> {
        self.view().rate_limited(index, error)
    }

    /// Reports the sink's load for adaptive sizing; see
    /// [`Batch::report_load`].
    pub fn report_load(&mut self, feedback: crate::LoadFeedback) {
        self.view().report_load(feedback);
    }
}

impl<T, R> Drop for AsyncBatch<T, R> {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.slot.give_back(buf, &self.shared);
        }
    }
}

impl<T: fmt::Debug, R> fmt::Debug for AsyncBatch<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncBatch")
            .field("items", &self.items())
            .field("remaining", &self.remaining())
            .finish()
    }
}

/// Where a worker's current batch comes back when its [`AsyncBatch`] is
/// dropped (inside the handler's future, or later if the handler kept it).
#[derive(Debug)]
struct WorkerSlot<T> {
    state: Mutex<SlotState<T>>,
}

#[derive(Debug)]
struct SlotState<T> {
    /// The buffer, once the batch was dropped and before the worker took it.
    buf: Option<BatchBuf<T>>,
    /// The worker waiting for the buffer.
    waker: Option<Waker>,
    /// The worker is gone (its runtime shut down): whoever drops the batch
    /// finishes it.
    abandoned: bool,
}

impl<T> WorkerSlot<T> {
    fn new() -> Self {
        Self {
            state: Mutex::new(SlotState {
                buf: None,
                waker: None,
                abandoned: false,
            }),
        }
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Batch side: the batch is dropped.
    fn give_back<R>(&self, buf: BatchBuf<T>, shared: &Shared<T, R>) {
        let mut state = self.lock();
        if state.abandoned {
            drop(state);
            finish(shared, buf, Error::RuntimeShutdown);
            return;
        }
        state.buf = Some(buf);
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Worker side: the batch's buffer, once its batch is dropped.
    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<BatchBuf<T>> {
        let mut state = self.lock();
        match state.buf.take() {
            Some(buf) => Poll::Ready(buf),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The hand-off between the drainer and the worker tasks.
pub(crate) struct Pipeline<T> {
    /// Full buffers waiting for a worker (room for every buffer of the pool).
    ready: ArrayQueue<BatchBuf<T>>,
    /// Workers wait here for a batch (or the end).
    work: Notify,
    /// No more batches: idle workers exit.
    closing: AtomicBool,
    /// Workers still running.
    alive: AtomicUsize,
    /// Batches handed over (queued or running) and not yet finished.
    in_flight: AtomicUsize,
    /// The drainer sleeps waiting for a buffer or for `in_flight == 0`.
    drainer_waiting: WaitFlag,
    /// Counted by the workers (the drainer counts the rest).
    pub(crate) batch_errors: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) items_failed: AtomicU64,
}

impl<T> Pipeline<T> {
    pub(crate) fn new(pool_size: usize) -> Self {
        Self {
            ready: ArrayQueue::new(pool_size),
            work: Notify::new(),
            closing: AtomicBool::new(false),
            alive: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            drainer_waiting: WaitFlag::default(),
            batch_errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            items_failed: AtomicU64::new(0),
        }
    }

    /// Batches handed over and not finished yet (a snapshot).
    pub(crate) fn in_flight(&self) -> usize {
        // Acquire pairs with the AcqRel decrement in `finish`: at zero, every
        // finished batch's completions happened before this load.
        self.in_flight.load(Ordering::Acquire)
    }

    /// Worker side, after returning a buffer: wakes the drainer if it waits.
    fn wake_drainer<R>(&self, shared: &Shared<T, R>) {
        self.drainer_waiting.notify(|| shared.unpark_drainer());
    }

    /// Drainer side: announces that it is about to sleep waiting for
    /// `ready()`; returns true if it should sleep (the condition still fails).
    pub(crate) fn announce_wait(&self, ready: impl FnOnce() -> bool) -> bool {
        self.drainer_waiting.announce(ready)
    }

    /// Drainer side: back from sleeping.
    pub(crate) fn withdraw_wait(&self) {
        self.drainer_waiting.withdraw();
    }
}

/// The handshake between a drainer about to sleep until some condition
/// holds and the thread or task that makes it hold: a store-buffering
/// pattern with a SeqCst fence on each side, so that either the sleeper sees
/// the condition, or the waker sees the flag (and wakes it). Both may
/// happen; neither missing is impossible.
#[derive(Debug, Default)]
pub(crate) struct WaitFlag {
    waiting: AtomicBool,
}

impl WaitFlag {
    /// Sleeper side: raises the flag, then checks `ready()`; returns true if
    /// the caller should sleep (it must then `withdraw` when it wakes).
    pub(crate) fn announce(&self, ready: impl FnOnce() -> bool) -> bool {
        // Relaxed: the fence below orders it before the check.
        self.waiting.store(true, Ordering::Relaxed);
        // SeqCst fence pairs with the one in `notify`.
        fence(Ordering::SeqCst);
        if ready() {
            self.waiting.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Sleeper side: lowers the flag after waking. Relaxed: at worst a
    /// waker sees a stale `true` and wakes the sleeper once for nothing.
    pub(crate) fn withdraw(&self) {
        self.waiting.store(false, Ordering::Relaxed);
    }

    /// Waker side, after making the condition hold: calls `wake` if the
    /// sleeper announced.
    pub(crate) fn notify(&self, wake: impl FnOnce()) {
        // SeqCst fence pairs with the one in `announce`: either the sleeper
        // sees our change, or we see its flag.
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence.
        if self.waiting.load(Ordering::Relaxed) {
            wake();
        }
    }
}

/// Drainer side: hands a full buffer to the workers (or fails it at once if
/// the runtime is gone).
pub(crate) fn dispatch<T, R>(shared: &Shared<T, R>, buf: BatchBuf<T>) {
    let pipeline = shared.pipeline();
    // Counted before the hand-off, so that a flush waiting for zero cannot
    // miss a batch that is queued but not yet taken (AcqRel: an RMW on the
    // counter, ordered with the decrements in `finish`).
    pipeline.in_flight.fetch_add(1, Ordering::AcqRel);
    // SeqCst pairs with the decrement in `Worker::drop` (see below).
    if pipeline.alive.load(Ordering::SeqCst) == 0 {
        finish(shared, buf, Error::RuntimeShutdown);
        return;
    }
    if let Err(buf) = pipeline.ready.push(buf) {
        // The queue holds every buffer of the pool, so this cannot happen;
        // fail the batch rather than lose it.
        debug_assert!(false, "the hand-off queue overflowed");
        finish(shared, buf, Error::Closed);
        return;
    }
    pipeline.work.notify_one();
    // The last worker may have exited between the check and the push: it
    // drains the queue as it leaves, and so do we. The fence and the
    // worker's SeqCst decrement (followed by its own fence) make sure that
    // one of us sees the other: either it pops our buffer, or we see zero.
    fence(Ordering::SeqCst);
    if pipeline.alive.load(Ordering::SeqCst) == 0 {
        fail_queued(shared);
    }
}

/// Drainer side, at shutdown (after every batch finished): workers exit.
pub(crate) fn close<T, R>(shared: &Shared<T, R>) {
    let pipeline = shared.pipeline();
    // Release pairs with the workers' Acquire load in `next_batch`.
    pipeline.closing.store(true, Ordering::Release);
    pipeline.work.notify_waiters();
}

/// Fails every batch still queued for the workers.
fn fail_queued<T, R>(shared: &Shared<T, R>) {
    while let Some(buf) = shared.pipeline().ready.pop() {
        finish(shared, buf, Error::RuntimeShutdown);
    }
}

/// Completes what the handler left with `error`, returns the buffer to the
/// pool and wakes the drainer if it waits for one.
fn finish<T, R>(shared: &Shared<T, R>, mut buf: BatchBuf<T>, error: Error) {
    Batch::new(&mut buf, &shared.table).fail_remaining(error);
    let pipeline = shared.pipeline();
    if buf.failed > 0 {
        // Relaxed: a statistic.
        pipeline
            .items_failed
            .fetch_add(buf.failed as u64, Ordering::Relaxed);
    }
    shared.pool.put(buf);
    // AcqRel: Release publishes the completions above to the drainer's
    // Acquire load in `in_flight` (a flush waits for zero).
    pipeline.in_flight.fetch_sub(1, Ordering::AcqRel);
    pipeline.wake_drainer(shared);
}

/// Wakes the drainer when it runs as a task on the runtime (see
/// `BatcherBuilder::drain_on_runtime`): the task version of unparking its
/// thread. The drainer stores its waker before it checks whether it may
/// sleep, so a wake that comes after the check finds it.
#[derive(Debug, Default)]
pub(crate) struct TaskWake {
    waker: Mutex<Option<Waker>>,
}

impl TaskWake {
    fn lock(&self) -> crate::sync::MutexGuard<'_, Option<Waker>> {
        self.waker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drainer side: stores the task's waker.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut slot = self.lock();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    /// Anyone: wakes the drainer task if it sleeps.
    pub(crate) fn wake(&self) {
        let waker = self.lock().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Starts `workers` worker tasks on `runtime`.
pub(crate) fn spawn_workers<T, R, H>(
    shared: &Arc<Shared<T, R>>,
    handler: H,
    workers: usize,
    runtime: &tokio::runtime::Handle,
) where
    T: Send + 'static,
    R: Send + 'static,
    H: AsyncHandler<T, R>,
{
    let handler = Arc::new(handler);
    let pipeline = shared.pipeline();
    // Before any worker runs or any batch is dispatched (SeqCst, as every
    // access to `alive`).
    pipeline.alive.store(workers, Ordering::SeqCst);
    for _ in 0..workers {
        let worker = Worker {
            shared: Arc::clone(shared),
            slot: Arc::new(WorkerSlot::new()),
        };
        runtime.spawn(worker.run(Arc::clone(&handler)));
    }
}

/// One worker task's state; dropping it (normal exit, or the runtime
/// shutting down) settles its batch and the queue.
struct Worker<T, R> {
    shared: Arc<Shared<T, R>>,
    slot: Arc<WorkerSlot<T>>,
}

impl<T: Send + 'static, R: Send + 'static> Worker<T, R> {
    async fn run<H: AsyncHandler<T, R>>(self, handler: Arc<H>) {
        loop {
            let Some(buf) = self.next_batch().await else {
                return;
            };
            if self.shared.failure.is_some() {
                self.run_with_policies(&*handler, buf).await;
                continue;
            }
            let batch = AsyncBatch {
                buf: Some(buf),
                shared: Arc::clone(&self.shared),
                slot: Arc::clone(&self.slot),
            };
            // The handler's future is dropped at the end of this block, and
            // with it the batch (unless the handler kept it elsewhere).
            let shared = &*self.shared;
            let started =
                (shared.controller.is_some() || shared.recorder.is_some()).then(Instant::now);
            let outcome = self.handle(handler.handle(batch)).await;
            let pipeline = self.shared.pipeline();
            let leftover = match outcome {
                Ok(Ok(())) => Error::NotCompleted,
                Ok(Err(error)) => {
                    // Relaxed: a statistic, ordered with nothing.
                    pipeline.batch_errors.fetch_add(1, Ordering::Relaxed);
                    batch_failed(error)
                }
                Err(message) => {
                    // Relaxed: a statistic.
                    pipeline.panics.fetch_add(1, Ordering::Relaxed);
                    Error::HandlerPanicked { message }
                }
            };
            // The batch was dropped by the future (or later, if the handler
            // kept it somewhere): take its buffer back.
            let mut buf = poll_fn(|cx| self.slot.poll_take(cx)).await;
            if let Some(started) = started {
                let elapsed = started.elapsed();
                self.shared.observe_batch(elapsed, buf.feedback.take());
                self.shared.record_finished(elapsed, &buf);
            }
            finish(&self.shared, buf, leftover);
        }
    }

    /// One batch under the failure policies: the breaker may refuse it;
    /// failed items are retried on this task after their backoff (a tokio
    /// timer: the runtime needs its time driver), or dead-lettered.
    async fn run_with_policies<H: AsyncHandler<T, R>>(&self, handler: &H, mut buf: BatchBuf<T>) {
        let shared = &*self.shared;
        let failure = shared.failure.as_ref().expect("failure policies are on");
        let table = &shared.table;
        let mut deliver_to = |origin: Origin, error: Error| {
            if let Some((lane, index)) = origin.pending() {
                deliver(table, lane, index, Err(error));
            }
        };
        let pipeline = shared.pipeline();
        let mut attempt = 0;
        loop {
            if !lock(failure).admit(Instant::now()) {
                lock(failure).reject(&mut buf, &mut deliver_to);
                break;
            }
            buf.prepare_marks();
            let batch = AsyncBatch {
                buf: Some(buf),
                shared: Arc::clone(&self.shared),
                slot: Arc::clone(&self.slot),
            };
            let started = Instant::now();
            let outcome = self.handle(handler.handle(batch)).await;
            buf = poll_fn(|cx| self.slot.poll_take(cx)).await;
            let elapsed = started.elapsed();
            shared.observe_batch(elapsed, buf.feedback.take());
            shared.record_finished(elapsed, &buf);
            let outcome = match outcome {
                Ok(Ok(())) => Outcome::Ok,
                Ok(Err(error)) => {
                    // Relaxed: a statistic.
                    pipeline.batch_errors.fetch_add(1, Ordering::Relaxed);
                    Outcome::Failed(error)
                }
                Err(message) => {
                    // Relaxed: a statistic.
                    pipeline.panics.fetch_add(1, Ordering::Relaxed);
                    Outcome::Panicked(message)
                }
            };
            // The dead-letter callback runs here: marked as the handler.
            let running = crate::scope::Running::enter(shared.id());
            let settled =
                lock(failure).settle(&mut buf, outcome, attempt, Instant::now(), &mut deliver_to);
            drop(running);
            if buf.failed > 0 {
                // Relaxed: a statistic.
                pipeline
                    .items_failed
                    .fetch_add(buf.failed as u64, Ordering::Relaxed);
                buf.failed = 0;
            }
            match settled {
                Settled::Done => break,
                Settled::Retry { delay } => {
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
        finish(shared, buf, Error::NotCompleted);
    }

    /// Runs a handler's future to the end, then drops it, each with its
    /// panics contained (a panicking drop is counted; the batch the future
    /// held still comes back, as the rest of the future is dropped while
    /// that panic unwinds).
    async fn handle<F: Future>(&self, future: F) -> Result<F::Output, crate::error::PanicMessage> {
        let id = self.shared.id();
        let mut future = pin!(crate::contain::Contained::new(future));
        // Marked as the handler for each poll (the task may change threads
        // between polls), and while it is dropped.
        let outcome = poll_fn(|cx| {
            let _running = crate::scope::Running::enter(id);
            future.as_mut().poll(cx)
        })
        .await;
        let _running = crate::scope::Running::enter(id);
        if !future.as_mut().drop_future() {
            self.shared.panics.drops(1);
        }
        outcome
    }

    /// The next full buffer, or `None` once the batcher is closing.
    async fn next_batch(&self) -> Option<BatchBuf<T>> {
        let pipeline = self.shared.pipeline();
        loop {
            // Registered before looking, so that neither a `notify_one` for a
            // new batch nor the closing `notify_waiters` can be missed.
            let mut notified = pin!(pipeline.work.notified());
            notified.as_mut().enable();
            if let Some(buf) = pipeline.ready.pop() {
                return Some(buf);
            }
            // Acquire pairs with the Release store in `close`.
            if pipeline.closing.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
        }
    }
}

impl<T, R> Drop for Worker<T, R> {
    fn drop(&mut self) {
        let mut state = self.slot.lock();
        let buf = state.buf.take();
        // A batch still held by a dropped future finishes when it is dropped.
        state.abandoned = true;
        drop(state);
        if let Some(buf) = buf {
            finish(&self.shared, buf, Error::RuntimeShutdown);
        }
        let pipeline = self.shared.pipeline();
        // SeqCst, with the fence, pairs with the fence in `dispatch`.
        let last = pipeline.alive.fetch_sub(1, Ordering::SeqCst) == 1;
        fence(Ordering::SeqCst);
        if last {
            // The last worker: nobody will take queued batches any more.
            fail_queued(&self.shared);
        }
        pipeline.wake_drainer(&self.shared);
    }
}
