//! The hand-off between the drainer and the worker tasks: one slot per
//! worker, the in-flight count the drainer waits on, and the wake-up of a
//! drainer that runs as a task.

use core::task::{Context, Poll, Waker};

use crossbeam_queue::ArrayQueue;
use tokio::sync::Notify;

use crate::batch::BatchBuf;
use crate::engine::Shared;
use crate::error::Error;
use crate::handler::Batch;
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, fence};

/// Where a worker's current batch comes back when its [`AsyncBatch`](super::AsyncBatch) is
/// dropped (inside the handler's future, or later if the handler kept it).
#[derive(Debug)]
pub(super) struct WorkerSlot<T> {
    pub(super) state: Mutex<SlotState<T>>,
}

#[derive(Debug)]
pub(super) struct SlotState<T> {
    /// The buffer, once the batch was dropped and before the worker took it.
    pub(super) buf: Option<BatchBuf<T>>,
    /// The worker waiting for the buffer.
    pub(super) waker: Option<Waker>,
    /// The worker is gone (its runtime shut down): whoever drops the batch
    /// finishes it.
    pub(super) abandoned: bool,
}

impl<T> WorkerSlot<T> {
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(SlotState {
                buf: None,
                waker: None,
                abandoned: false,
            }),
        }
    }

    pub(super) fn lock(&self) -> crate::sync::MutexGuard<'_, SlotState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Batch side: the batch is dropped.
    pub(super) fn give_back<R>(&self, buf: BatchBuf<T>, shared: &Shared<T, R>) {
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
    pub(super) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<BatchBuf<T>> {
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
    pub(super) ready: ArrayQueue<BatchBuf<T>>,
    /// Workers wait here for a batch (or the end).
    pub(super) work: Notify,
    /// No more batches: idle workers exit.
    pub(super) closing: AtomicBool,
    /// Workers still running.
    pub(super) alive: AtomicUsize,
    /// Batches handed over (queued or running) and not yet finished.
    pub(super) in_flight: AtomicUsize,
    /// The drainer sleeps waiting for a buffer or for `in_flight == 0`.
    pub(super) drainer_waiting: WaitFlag,
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
    pub(super) fn wake_drainer<R>(&self, shared: &Shared<T, R>) {
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
    pub(super) waiting: AtomicBool,
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
pub(super) fn fail_queued<T, R>(shared: &Shared<T, R>) {
    while let Some(buf) = shared.pipeline().ready.pop() {
        finish(shared, buf, Error::RuntimeShutdown);
    }
}

/// Completes what the handler left with `error`, returns the buffer to the
/// pool and wakes the drainer if it waits for one.
pub(super) fn finish<T, R>(shared: &Shared<T, R>, mut buf: BatchBuf<T>, error: Error) {
    #[cfg(feature = "durable")]
    if let (Some(durable), Error::RuntimeShutdown) = (&shared.durable, &error) {
        // Not handled: the items stay in the store, to be replayed.
        durable.keep_unhandled(&mut buf, &shared.table);
    }
    Batch::new(&mut buf, &shared.table).fail_remaining(error);
    let pipeline = shared.pipeline();
    if buf.failed > 0 {
        // Relaxed: a statistic.
        pipeline
            .items_failed
            .fetch_add(buf.failed as u64, Ordering::Relaxed);
        shared.group_failed(buf.meta.group, buf.failed);
    }
    #[cfg(feature = "durable")]
    if let Some(durable) = &shared.durable {
        durable.done(&mut buf);
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
    pub(super) waker: Mutex<Option<Waker>>,
}

impl TaskWake {
    pub(super) fn lock(&self) -> crate::sync::MutexGuard<'_, Option<Waker>> {
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
