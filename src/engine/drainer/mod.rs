//! The drainer: sweeps the lanes, assembles batches, dispatches them to the
//! handler and completes the items.
//!
//! Natural batching: the drainer keeps sweeping while sweeps find new items,
//! and dispatches when a sweep finds nothing new or the batch is full. At low
//! load a batch is one item and its latency one item's; under load batches
//! grow by themselves, up to `max_batch`.

mod dispatch;
#[cfg(feature = "durable")]
mod durable;
mod inline;
#[cfg(feature = "tokio")]
mod on_runtime;
mod park;
mod shutdown;
mod sweep;

pub(crate) use inline::{InlineCell, run_or_wake};
#[cfg(all(loom, test))]
pub(crate) use inline::{inline_passes, run_direct, sleep_unlocked};

use std::time::{Duration, Instant};

use crate::batch::BatchBuf;
use crate::contain::lock;
use crate::engine::Shared;
use crate::engine::drainer::inline::{LastTurn, SLIP_SPINS};
use crate::error::Error;
use crate::handler::Handler;
use crate::shape::Assembler;
use crate::stats::{DispatchReason, DrainerTally, Moment};
use crate::sync::{Arc, Ordering};
use crate::wait::Backoff;

/// Where the drainer sends its batches.
pub(crate) enum Sink<T, R> {
    /// A handler run on the drainer thread.
    Sync(Box<dyn Handler<T, R>>),
    /// Worker tasks on a tokio runtime (see `runtime`).
    #[cfg(feature = "tokio")]
    Async,
    /// Handler threads (see `threads`).
    Threads,
}

impl<T, R> Sink<T, R> {
    /// The handler of a drainer that runs it itself.
    #[inline(always)]
    fn sync_handler(&mut self) -> &mut Box<dyn Handler<T, R>> {
        match self {
            Sink::Sync(handler) => handler,
            #[cfg(feature = "tokio")]
            Sink::Async => unreachable!("the drainer runs only a sync handler itself"),
            Sink::Threads => unreachable!("the drainer runs only a sync handler itself"),
        }
    }
}

pub(crate) struct Drainer<T, R> {
    shared: Arc<Shared<T, R>>,
    sink: Sink<T, R>,
    /// Each lane's head; the drainer is its only writer, so it keeps a copy.
    heads: Box<[usize]>,
    /// Per-lane targets of a flush or shutdown drain (allocated once).
    targets: Box<[usize]>,
    /// The batch being filled.
    buf: BatchBuf<T>,
    max_batch: usize,
    /// The lane the next sweep starts at (rotates, so that no lane starves).
    start: usize,
    /// What the last plain turn (sweep, dispatch, wait) came to: after
    /// [`LastTurn::Waited`] the first items are dispatched at once; after
    /// [`LastTurn::Found`], with `slip`, a sweep that finds some more, but
    /// less than a batch, is followed by a short spin ([`SLIP_SPINS`]).
    last_turn: LastTurn,
    /// `spin_between_short_runs` is set.
    slip: bool,
    /// The retry policy keeps retries in order (`RetryPolicy::in_order`).
    in_order: bool,
    /// The last flush request completed.
    flush_done: u64,
    tally: DrainerTally,
    /// Runs as a task on the runtime (`run_async`) rather than a thread.
    #[cfg(feature = "tokio")]
    on_runtime: bool,
    /// (task mode) Every buffer is in flight: `buf` is an empty placeholder
    /// until one comes back.
    #[cfg(feature = "tokio")]
    need_buffer: bool,
    /// The loop ended normally (shutdown), not by the runtime dropping it.
    finished: bool,
    /// The loop panicked and [`fail_fatally`](Self::fail_fatally) closed
    /// the batcher: no more turns.
    failed: bool,
    /// The staging area and its rules, when a shaping policy is on.
    asm: Option<Box<Assembler<T>>>,
    /// The last `flush_now` request acted on.
    flush_now_done: u64,
    /// The largest effective batch size (the adaptive maximum).
    adaptive_max: usize,
    /// Histograms are recorded.
    recording: bool,
    /// (recording) Per ring: the last time (ns since the epoch) a sweep
    /// found the ring caught up, or the drainer woke; every item taken
    /// since was published after it.
    since: Box<[u64]>,
    /// (recording) When the current sweep began.
    sweep_now: u64,
    /// Per ring: the longest run found (published to `Shared::high_water`).
    high_water: Box<[u64]>,
    /// (sync handler, retry policy) Batches waiting to be retried.
    retries: Vec<Retry<T>>,
    /// The live settings' version last applied.
    settings_seen: u64,
    /// (`inline_when_idle`) The result of the item [`run_direct`](Self::run_direct)
    /// handles, until it takes it.
    direct: Option<Result<R, Error>>,
    /// (feature `durable`) The calls of the handler the replayed batch
    /// being dispatched has had (0 for a new batch).
    #[cfg(feature = "durable")]
    replay_attempt: u32,
}

/// What the drainer loop does after a [`step`](Drainer::step).
enum Step {
    /// Go on.
    Continue,
    /// Sleep until a producer or a request wakes it.
    Park,
    /// Shut down.
    Exit,
}

/// A batch waiting in the drainer's timer queue to be retried.
struct Retry<T> {
    due: Instant,
    attempt: u32,
    buf: BatchBuf<T>,
}

impl<T: Send + 'static, R: Send + 'static> Drainer<T, R> {
    pub(crate) fn new(
        shared: Arc<Shared<T, R>>,
        sink: Sink<T, R>,
        asm: Option<Assembler<T>>,
    ) -> Self {
        let lanes = shared.lanes.len();
        let max_batch = shared.config.max_batch;
        let recording = shared.recorder.is_some();
        let slip = shared.config.spin_between_short_runs;
        let shared_in_order = shared.failure.as_ref().is_some_and(|f| lock(f).in_order());
        let buf = shared.pool.take().unwrap_or_else(|| {
            let buf = BatchBuf::with_capacity(max_batch);
            if recording { buf.with_runs() } else { buf }
        });
        let adaptive_max = shared
            .controller
            .as_ref()
            .map_or(max_batch, |c| lock(c).max());
        Self {
            recording,
            since: vec![0; lanes].into_boxed_slice(),
            sweep_now: 0,
            high_water: vec![0; lanes].into_boxed_slice(),
            retries: Vec::with_capacity(shared.config.pool_size),
            settings_seen: 0,
            direct: None,
            #[cfg(feature = "durable")]
            replay_attempt: 0,
            asm: asm.map(Box::new),
            flush_now_done: 0,
            adaptive_max,
            shared,
            sink,
            heads: vec![0; lanes].into_boxed_slice(),
            targets: vec![0; lanes].into_boxed_slice(),
            buf,
            max_batch,
            start: 0,
            last_turn: LastTurn::Emptied,
            slip,
            in_order: shared_in_order,
            flush_done: 0,
            tally: DrainerTally::default(),
            #[cfg(feature = "tokio")]
            on_runtime: false,
            #[cfg(feature = "tokio")]
            need_buffer: false,
            finished: false,
            failed: false,
        }
    }

    /// The drainer thread's body. A panic of the loop (a bug of ours: user
    /// code is contained where it is called) closes the batcher instead of
    /// ending the thread silently (see [`fail_fatally`](Self::fail_fatally)).
    pub(crate) fn run(mut self) {
        if let Err(message) = crate::contain::call(|| {
            #[cfg(feature = "durable")]
            self.replay();
            self.run_loop();
        }) {
            self.fail_fatally(message);
        }
        self.finish();
    }

    /// The drainer thread's loop, until shutdown.
    fn run_loop(&mut self) {
        let mut backoff = Backoff::new(self.shared.config.wait);
        loop {
            match self.step(&mut backoff) {
                Step::Continue => {}
                Step::Park => {
                    let plan = self.prepare_park();
                    if !plan.sleeps() {
                        // A lane holds a claim not yet published (or a
                        // request came): let its producer run before looking
                        // again (a hint here; under loom, a yield).
                        crate::sync::spin_loop();
                    }
                    plan.sleep();
                    self.end_park(plan);
                    self.woke();
                    backoff.reset();
                }
                Step::Exit => break,
            }
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Drainer<T, R> {
    /// One turn of the drainer's loop: requests, retries, a sweep, a
    /// dispatch; `Park` when the backoff says to sleep.
    fn step(&mut self, backoff: &mut Backoff) -> Step {
        self.refresh_settings();
        if let Some(step) = self.serve_requests(backoff) {
            return step;
        }
        if self.asm.is_some() {
            if self.shaped_turn() {
                backoff.reset();
            } else if backoff.snooze() {
                #[cfg(feature = "durable")]
                if let Some(durable) = &self.shared.durable {
                    durable.idle();
                }
                self.park_until_due();
                self.woke();
                backoff.reset();
            }
            return Step::Continue;
        }
        self.natural_turn(backoff)
    }

    /// Shutdown, a pause or an open breaker, a flush, due retries: the turn
    /// they take, if any is there.
    #[inline(always)]
    fn serve_requests(&mut self, backoff: &mut Backoff) -> Option<Step> {
        let control = &self.shared.control;
        // Acquire pairs with the Release store in `Batcher::stop`: every
        // lane is closed, and the tails read next are final.
        if control.closing.load(Ordering::Acquire) {
            self.drain_all(DispatchReason::Shutdown);
            self.wait_for_batches_in_flight();
            #[cfg(feature = "tokio")]
            if matches!(self.sink, Sink::Async) {
                crate::engine::runtime::close(&self.shared);
            }
            if matches!(self.sink, Sink::Threads) {
                crate::engine::threads::close(&self.shared);
            }
            return Some(Step::Exit);
        }
        let held = self.held();
        if held.waits() {
            // Paused, or the breaker is open and holds batches: take
            // nothing (producers meet backpressure); wake on a request
            // (the unpark of `resume`, a flush, shutdown) or the end.
            let wait = held.deadline().map_or(HELD_POLL, |u| {
                u.saturating_duration_since(Instant::now()).min(HELD_POLL)
            });
            crate::sync::thread::park_timeout(wait);
            backoff.reset();
            return Some(Step::Continue);
        }
        // Acquire pairs with the AcqRel increment in `Batcher::flush`.
        let flush = control.flush_requested.load(Ordering::Acquire);
        if flush != self.flush_done {
            self.drain_all(DispatchReason::Flush);
            self.wait_for_batches_in_flight();
            self.flush_done = flush;
            self.shared.flushed(flush);
            backoff.reset();
            return Some(Step::Continue);
        }
        if !self.retries.is_empty() && self.run_due_retries() {
            backoff.reset();
            return Some(Step::Continue);
        }
        None
    }

    /// A turn of natural batching: sweep, and dispatch once the lanes are
    /// caught up; `Park` when the backoff says to sleep.
    #[inline(always)]
    fn natural_turn(&mut self, backoff: &mut Backoff) -> Step {
        let found = self.sweep();
        if found > 0 {
            backoff.reset();
            let last = core::mem::replace(&mut self.last_turn, LastTurn::Found);
            if last == LastTurn::Waited && !self.buf.is_empty() {
                // The first items after a quiet spell, and every lane was
                // caught up when the sweep left it (a lane that filled the
                // batch dispatched it within the sweep): dispatch now,
                // rather than sweep once more to see the lanes empty. A
                // lone request's result comes back that much sooner; under
                // a steady stream the drainer is never quiet, and batches
                // form as before.
                self.dispatch(DispatchReason::LanesIdle);
                self.last_turn = LastTurn::Emptied;
                return Step::Continue;
            }
            if self.slip && last == LastTurn::Found && found < self.max_batch {
                // Items keep coming, a few at a time: the sweep read slots
                // the producers are still writing, pulling each line back
                // and forth between the cores. Let a run build up first.
                for _ in 0..SLIP_SPINS {
                    crate::sync::spin_loop();
                }
            }
            return Step::Continue;
        }
        self.last_turn = LastTurn::Emptied;
        if !self.buf.is_empty() {
            self.dispatch(DispatchReason::LanesIdle);
            backoff.reset();
            return Step::Continue;
        }
        self.last_turn = LastTurn::Waited;
        // Caught up: a drainer that never parks syncs the metrics here.
        self.shared.metrics_sync(Moment::Idle);
        if backoff.snooze() {
            #[cfg(feature = "durable")]
            if let Some(durable) = &self.shared.durable {
                durable.idle();
            }
            Step::Park
        } else {
            Step::Continue
        }
    }

    /// After the loop: the batch buffer goes back to the pool.
    fn finish(&mut self) {
        #[cfg(feature = "durable")]
        if let Some(durable) = &self.shared.durable {
            durable.sync();
        }
        self.shared.pool.put(core::mem::replace(
            &mut self.buf,
            BatchBuf::with_capacity(0),
        ));
        self.finished = true;
    }
}

impl<T: Send + 'static, R: Send + 'static> Drainer<T, R> {
    /// Whether a flush, `flush_now` or shutdown request is pending.
    fn requested(&self) -> bool {
        let control = &self.shared.control;
        // Acquire pairs with the Release store of `closing` in `begin_stop`
        // and the AcqRel increments in `flush_until` and `flush_now`.
        control.closing.load(Ordering::Acquire)
            || control.flush_requested.load(Ordering::Acquire) != self.flush_done
            || control.flush_now.load(Ordering::Acquire) != self.flush_now_done
    }
}

impl<T: Send + 'static, R: Send + 'static> Drainer<T, R> {
    /// Applies live settings changed since the last turn: `max_batch`
    /// (between batches) and the linger.
    fn refresh_settings(&mut self) {
        let control = &self.shared.control;
        if self.buf.is_empty() {
            // Relaxed: a tuning value (`set_max_batch`).
            self.max_batch = control.max_batch.load(Ordering::Relaxed);
        }
        // Acquire pairs with the Release increment in `set_linger`.
        let version = control.settings_version.load(Ordering::Acquire);
        if version != self.settings_seen {
            self.settings_seen = version;
            let linger = lock(&self.shared.new_linger).take();
            if let (Some(linger), Some(asm)) = (linger, self.asm.as_deref_mut()) {
                asm.set_linger(linger);
            }
        }
    }
}

impl<T, R> Drop for Drainer<T, R> {
    fn drop(&mut self) {
        /// Reports the exit however this drop ends, panics included.
        struct ReportExit<T, R>(Arc<Shared<T, R>>);
        impl<T, R> Drop for ReportExit<T, R> {
            fn drop(&mut self) {
                // Flush and shutdown waiters must not wait for us any longer.
                self.0.progress.exited();
            }
        }
        let _exit = ReportExit(Arc::clone(&self.shared));
        // Before the exit is reported: `shutdown` may read the handles next.
        self.shared.metrics_sync(Moment::Final);
        // Whichever way it ends (a thread, a task, a runtime dropping it),
        // and before the waiters of `shutdown` are released.
        crate::trace::drainer_exited(
            &self.shared.config.thread_name,
            self.tally.batches,
            self.tally.items,
        );
        #[cfg(feature = "tokio")]
        if !self.finished && self.on_runtime {
            // The runtime dropped the drainer task (it shut down): nobody
            // will drain the lanes. Close them and fail every item in them.
            self.abandon(Error::RuntimeShutdown);
        }
    }
}

/// Longest a held drainer sleeps before looking again.
const HELD_POLL: Duration = Duration::from_millis(20);
