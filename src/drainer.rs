//! The drainer: sweeps the lanes, assembles batches, dispatches them to the
//! handler and completes the items.
//!
//! Natural batching: the drainer keeps sweeping while sweeps find new items,
//! and dispatches when a sweep finds nothing new or the batch is full. At low
//! load a batch is one item and its latency one item's; under load batches
//! grow by themselves, up to `max_batch`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use crate::engine::Shared;
use crate::error::Error;
use crate::failure::{Outcome, Settled};
use crate::handler::{Batch, Handler, batch_failed, deliver};
use crate::pool::{BatchBuf, Origin};
use crate::ring::{ParkPlan, SEQ_MASK, announce_park_all, distance, prepare_park, withdraw_park};
use crate::shape::{Assembler, Force, NEVER};
use crate::stats::{DispatchReason, DrainerTally};
use crate::sync::{Arc, Ordering};
use crate::wait::Backoff;
#[cfg(feature = "tokio")]
use crate::wait::WaitStrategy;

/// Where the drainer sends its batches.
pub(crate) enum Sink<T, R> {
    /// A handler run on the drainer thread.
    Sync(Box<dyn Handler<T, R>>),
    /// Worker tasks on a tokio runtime (see `runtime`).
    #[cfg(feature = "tokio")]
    Async,
}

impl<T, R> Sink<T, R> {
    /// The handler of a drainer that runs it itself.
    #[inline(always)]
    fn sync_handler(&mut self) -> &mut Box<dyn Handler<T, R>> {
        match self {
            Sink::Sync(handler) => handler,
            #[cfg(feature = "tokio")]
            Sink::Async => unreachable!("the drainer runs only a sync handler itself"),
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

/// The drainer's state shared with submitting threads (`inline_when_idle`):
/// the drainer thread holds the lock while it works; a submitter that finds
/// it asleep takes the lock if it is free and runs a turn itself.
pub(crate) type InlineCell<T, R> = crate::sync::Mutex<Option<Drainer<T, R>>>;

/// Most sweep-dispatch-announce passes of one inline turn before it wakes
/// the drainer thread instead (producers keep publishing into the lanes).
const INLINE_PASSES: usize = 4;

/// What a drainer's last plain turn came to (see `Drainer::last_turn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LastTurn {
    /// Its sweep found items: they keep coming.
    Found,
    /// Its sweep found nothing new, or it dispatched the first items after
    /// a wait: the lanes were caught up.
    Emptied,
    /// It found every lane empty and nothing in the batch, and waited: the
    /// next items come after a quiet spell.
    Waited,
}

/// Spin-loop hints the drainer waits after a sweep that found less than a
/// batch while items keep coming (see `Drainer::last_turn`): about 1.6 µs
/// where a hint takes 25 ns, as on the reference machine. A producer
/// streaming at 100 M items/s fills a batch of 160 in that time, and the
/// drainer reads lines it has finished writing instead of pulling each
/// line over while it is still being written. An item that arrives alone
/// is not held (it comes after a quiet spell and is dispatched at once),
/// but at a steady moderate rate every sweep finds a few, and batches wait
/// to fill: hence a setting (`spin_between_short_runs`), off by default.
const SLIP_SPINS: usize = 64;

/// The submitter's side of `inline_when_idle`: after a claim that took a
/// park announcement off its lane (so it must see the drainer woken), runs
/// `turn` on the drainer's state if the lock is free at once and the state
/// still there; `turn` returns true when it leaves the lanes announced
/// again with nothing to do. Otherwise `wake`s the drainer. Never blocks.
pub(crate) fn run_or_wake<S>(
    cell: &crate::sync::Mutex<Option<S>>,
    turn: impl FnOnce(&mut S) -> bool,
    wake: impl FnOnce(),
) {
    let ran = match cell.try_lock() {
        Ok(mut state) => state.as_mut().is_some_and(turn),
        // Held (by the drainer thread, awake or about to sleep, or by
        // another submitter's turn), or poisoned.
        Err(_) => false,
    };
    if !ran {
        wake();
    }
}

/// The submitter's fast path under `inline_when_idle`: if the drainer's
/// state is free at once (and still there), `run` may handle `item` on it
/// directly, as a batch of its own, and return its outcome; it gives the
/// item back when it cannot, as this does when the lock is held. Never
/// blocks, and changes nothing in the lanes: whatever announcements the
/// sleeping drainer left stay in place.
#[inline(always)]
pub(crate) fn run_direct<S, X, O>(
    cell: &crate::sync::Mutex<Option<S>>,
    item: X,
    run: impl FnOnce(&mut S, X) -> Result<O, X>,
) -> Result<O, X> {
    match cell.try_lock() {
        Ok(mut state) => match state.as_mut() {
            Some(state) => run(state, item),
            None => Err(item),
        },
        Err(_) => Err(item),
    }
}

/// The passes of an inline turn: `pass` takes what the lanes hold and
/// dispatches it; `announce` then announces the park on every lane again (as
/// the sleeping drainer did, so that the next claim on any lane wakes it or
/// runs a turn in turn) and says whether every lane was empty. A lane found
/// not empty was claimed before its announcement, by a producer that woke
/// nobody: another pass takes it. Returns whether the lanes were left empty
/// and announced within [`INLINE_PASSES`] passes (if not, the caller wakes
/// the drainer thread, which withdraws what is announced).
pub(crate) fn inline_passes<S>(
    state: &mut S,
    mut pass: impl FnMut(&mut S),
    announce: impl Fn(&S) -> bool,
) -> bool {
    for _ in 0..INLINE_PASSES {
        pass(state);
        if announce(state) {
            return true;
        }
    }
    false
}

/// The drainer thread's side: sleeps as `plan` says with its state
/// unlocked, then locks it again (waiting for a submitter's turn to end).
pub(crate) fn sleep_unlocked<'a, S>(
    cell: &'a crate::sync::Mutex<Option<S>>,
    state: crate::sync::MutexGuard<'a, Option<S>>,
    plan: &ParkPlan,
) -> crate::sync::MutexGuard<'a, Option<S>> {
    drop(state);
    plan.sleep();
    lock(cell)
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
        if let Err(message) = crate::contain::call(|| self.run_loop()) {
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
                    plan.sleep();
                    self.end_park(plan);
                    self.woke();
                    backoff.reset();
                }
                Step::Exit => break,
            }
        }
    }

    /// The drainer thread's body with `inline_when_idle`: the drainer's state
    /// lives in `Shared::inline`, locked by this thread while it works and
    /// released while it sleeps, when a submitting thread may take it and
    /// run a turn itself ([`inline_turn`](Self::inline_turn)).
    pub(crate) fn run_shared(shared: &Shared<T, R>) {
        let cell = &*shared
            .inline
            .as_ref()
            .expect("the drainer's state is shared with inline_when_idle")
            .cell;
        // Takes the state out of the cell however this thread ends (the
        // state holds an `Arc` of `shared`, which holds the cell).
        struct Evict<'a, T, R>(&'a InlineCell<T, R>);
        impl<T, R> Drop for Evict<'_, T, R> {
            fn drop(&mut self) {
                let taken = lock(self.0).take();
                drop(taken);
            }
        }
        let _evict = Evict(cell);
        let outcome = crate::contain::call(|| Self::run_shared_loop(cell));
        let taken = lock(cell).take();
        if let Some(mut drainer) = taken {
            if let Err(message) = outcome {
                drainer.fail_fatally(message);
            }
            drainer.finish();
        }
    }

    /// [`run_shared`](Self::run_shared)'s loop, until shutdown (or a
    /// submitter's turn failed fatally).
    fn run_shared_loop(cell: &InlineCell<T, R>) {
        // Sleep as soon as the lanes are empty, whatever the strategy: at low
        // load the submitters serve themselves, and only a sleeping drainer
        // lets them (a drainer spinning through its backoff would hold the
        // state and take every item itself).
        let mut backoff = Backoff::new(crate::wait::WaitStrategy::Park);
        let mut guard = lock(cell);
        loop {
            let drainer = guard
                .as_mut()
                .expect("only this thread takes the state out");
            if drainer.failed {
                break;
            }
            match drainer.step(&mut backoff) {
                Step::Continue => {}
                Step::Park => {
                    let plan = drainer.prepare_park();
                    // Sleep unlocked: a producer whose claim finds a lane
                    // announced may now run a turn in our place, and
                    // re-announces before it unlocks (or wakes us).
                    guard = sleep_unlocked(cell, guard, &plan);
                    let drainer = guard
                        .as_mut()
                        .expect("only this thread takes the state out");
                    drainer.end_park(plan);
                    drainer.woke();
                    backoff.reset();
                }
                Step::Exit => break,
            }
        }
    }

    /// One turn of the drainer's loop: requests, retries, a sweep, a
    /// dispatch; `Park` when the backoff says to sleep.
    fn step(&mut self, backoff: &mut Backoff) -> Step {
        self.refresh_settings();
        let control = &self.shared.control;
        // Acquire pairs with the Release store in `Batcher::stop`: every
        // lane is closed, and the tails read next are final.
        if control.closing.load(Ordering::Acquire) {
            self.drain_all(DispatchReason::Shutdown);
            self.wait_for_batches_in_flight();
            #[cfg(feature = "tokio")]
            if matches!(self.sink, Sink::Async) {
                crate::runtime::close(&self.shared);
            }
            return Step::Exit;
        }
        if let Some(until) = self.held() {
            // Paused, or the breaker is open and holds batches: take
            // nothing (producers meet backpressure); wake on a request
            // (the unpark of `resume`, a flush, shutdown) or the end.
            let wait = until.map_or(HELD_POLL, |u| {
                u.saturating_duration_since(Instant::now()).min(HELD_POLL)
            });
            crate::sync::thread::park_timeout(wait);
            backoff.reset();
            return Step::Continue;
        }
        // Acquire pairs with the AcqRel increment in `Batcher::flush`.
        let flush = control.flush_requested.load(Ordering::Acquire);
        if flush != self.flush_done {
            self.drain_all(DispatchReason::Flush);
            self.wait_for_batches_in_flight();
            self.flush_done = flush;
            self.shared.progress.flushed(flush);
            backoff.reset();
            return Step::Continue;
        }
        if !self.retries.is_empty() && self.run_due_retries() {
            backoff.reset();
            return Step::Continue;
        }
        if self.asm.is_some() {
            if self.shaped_turn() {
                backoff.reset();
            } else if backoff.snooze() {
                self.park_until_due();
                self.woke();
                backoff.reset();
            }
            return Step::Continue;
        }
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
        if backoff.snooze() {
            Step::Park
        } else {
            Step::Continue
        }
    }

    /// After the loop: the batch buffer goes back to the pool.
    fn finish(&mut self) {
        self.shared.pool.put(core::mem::replace(
            &mut self.buf,
            BatchBuf::with_capacity(0),
        ));
        self.finished = true;
    }

    /// A turn run by a submitting thread (`inline_when_idle`) that found the
    /// drainer asleep: its claim took the park announcement off its lane,
    /// so it must either see its item handled or wake the drainer. Sweeps
    /// and dispatches until the lanes are empty, then announces the park
    /// again on every lane, as the sleeping drainer did, so that the next
    /// claim on any lane wakes it or runs a turn in turn.
    ///
    /// Returns false when the drainer thread must wake instead: a request
    /// is pending (flush, shutdown, pause, an open breaker), or the lanes
    /// kept filling for [`INLINE_PASSES`] passes.
    pub(crate) fn inline_turn(&mut self) -> bool {
        if self.failed || self.requested() || self.held().is_some() {
            return false;
        }
        match crate::contain::call(|| self.inline_passes()) {
            Ok(idle) => idle,
            Err(message) => {
                // As in `run`; the drainer thread, woken by our caller,
                // sees `failed` and exits.
                self.fail_fatally(message);
                false
            }
        }
    }

    /// [`inline_turn`](Self::inline_turn)'s passes.
    fn inline_passes(&mut self) -> bool {
        self.refresh_settings();
        self.woke();
        let idle = inline_passes(
            self,
            |drainer| {
                // One sweep (full batches are dispatched within it): a lane
                // still holding items is found by the announcement, and
                // taken by the next pass.
                drainer.sweep();
                if !drainer.buf.is_empty() {
                    drainer.dispatch(DispatchReason::LanesIdle);
                }
            },
            |drainer| {
                let lanes = drainer
                    .shared
                    .lanes
                    .iter()
                    .map(|lane| &lane.ring)
                    .zip(drainer.heads.iter().copied());
                let found = announce_park_all(lanes);
                // Not a park of the drainer's (it sleeps on), but a fence
                // run on this submitter's thread.
                drainer.shared.counters.note_park(false, found.fenced);
                found.empty
            },
        );
        idle && !self.requested()
    }

    /// The submitter's side of the direct path: [`run_direct`] on `cell`
    /// with [`Drainer::run_direct`] (one call from the producer, through
    /// the pointer kept in the shared state).
    pub(crate) fn direct(
        cell: &InlineCell<T, R>,
        lane: usize,
        item: T,
    ) -> Result<Result<R, Error>, T> {
        run_direct(cell, item, |drainer: &mut Self, item| {
            drainer.run_direct(lane, item)
        })
    }

    /// The submitter's fast path under `inline_when_idle` (see
    /// [`run_direct`]): with the drainer asleep and its state locked by the
    /// submitter, handles `item`, submitted on `lane`, as a batch of one and
    /// returns its result, provided that nothing submitted before it on its
    /// lane is still waiting (the lane is caught up and the batch buffer
    /// empty), no request is pending and the batcher is not paused.
    /// Otherwise gives the item back, for the usual path through the lane.
    #[inline]
    pub(crate) fn run_direct(&mut self, lane: usize, item: T) -> Result<Result<R, Error>, T> {
        let shared = &*self.shared;
        let lane_state = &shared.lanes[lane];
        if self.failed
            || !self.buf.is_empty()
            || !lane_state.ring.caught_up(self.heads[lane])
            || self.requested()
            // Acquire pairs with the Release stores of `pause` and `resume`.
            || shared.control.paused.load(Ordering::Acquire)
        {
            return Err(item);
        }
        let handled = &lane_state.counters.direct;
        // A Relaxed load and store, not an RMW: every writer holds the
        // drainer's state, which orders them; readers take a statistic.
        handled.store(handled.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        self.buf.push(item, Origin::DIRECT);
        // `dispatch` without what a batcher with the direct path never has
        // (histograms, failure policies, an async sink).
        self.handle_sync();
        self.count_dispatch(1, DispatchReason::LanesIdle);
        // `handle_sync` completes every item (failing those the handler
        // left), so the cell is never empty here.
        match self.direct.take() {
            Some(result) => Ok(result),
            None => Ok(Err(Error::NotCompleted)),
        }
    }

    /// Whether a flush, `flush_now` or shutdown request is pending.
    fn requested(&self) -> bool {
        let control = &self.shared.control;
        // Acquire pairs with the Release store of `closing` in `begin_stop`
        // and the AcqRel increments in `flush_until` and `flush_now`.
        control.closing.load(Ordering::Acquire)
            || control.flush_requested.load(Ordering::Acquire) != self.flush_done
            || control.flush_now.load(Ordering::Acquire) != self.flush_now_done
    }

    /// One pass over every lane. Returns the number of slots consumed.
    fn sweep(&mut self) -> usize {
        if self.asm.is_some() {
            return self.sweep_shaped();
        }
        if self.recording {
            self.sweep_now = self.shared.clock();
        }
        let lanes = self.heads.len();
        let mut found = 0;
        let mut lane = self.start;
        for _ in 0..lanes {
            #[cfg(feature = "tokio")]
            if self.need_buffer {
                // Task mode, every buffer in flight: the caller awaits one.
                break;
            }
            found += self.drain_lane(lane);
            if self.buf.len() == self.max_batch {
                self.dispatch(DispatchReason::Full);
            }
            lane += 1;
            if lane == lanes {
                lane = 0;
            }
        }
        self.start = if self.start + 1 == lanes {
            0
        } else {
            self.start + 1
        };
        found
    }

    /// Moves one run of published items from `lane` into the batch. Returns
    /// the number of slots consumed.
    #[inline]
    fn drain_lane(&mut self, lane: usize) -> usize {
        let room = self.max_batch - self.buf.len();
        debug_assert!(room > 0, "a full batch is dispatched before the next run");
        let head = self.heads[lane];
        let shared = &*self.shared;
        let ring = &shared.lanes[lane].ring;
        if ring.evicts() {
            return self.drain_lane_evicting(lane, room);
        }
        let mut out = self.buf.appender(room);
        let room = out.room();
        // SAFETY: this thread is the ring's only consumer and `head` is the
        // head it last published.
        let new_head = unsafe {
            ring.drain_run(head, room, |item, _seq, ticket| {
                let origin = match ticket {
                    Some(index) => Origin::ticket(lane, index),
                    None => Origin::NONE,
                };
                // At most `room` calls: `drain_run` takes at most `room` items.
                out.push(item, origin);
            })
        };
        drop(out);
        if new_head == head {
            return 0;
        }
        if ring.finish_run(new_head) {
            shared.table.lane(lane).notifier.notify_all();
        }
        self.heads[lane] = new_head;
        let count = distance(head, new_head);
        self.note_run(lane, count, room);
        count
    }

    /// [`drain_lane`](Self::drain_lane) for a lane whose producers evict
    /// (`DropOldest`): the run starts at the ring's head, wherever evictions
    /// have moved it. Out of line, to keep `drain_lane` as it was.
    #[inline(never)]
    fn drain_lane_evicting(&mut self, lane: usize, room: usize) -> usize {
        let shared = &*self.shared;
        let ring = &shared.lanes[lane].ring;
        let buf = &mut self.buf;
        // SAFETY: this thread is the drainer.
        let run = unsafe {
            ring.take_run_evicting(room, |item, _seq, ticket| {
                let origin = match ticket {
                    Some(index) => Origin::ticket(lane, index),
                    None => Origin::NONE,
                };
                buf.push(item, origin);
            })
        };
        if run.notify {
            shared.table.lane(lane).notifier.notify_all();
        }
        self.heads[lane] = run.end;
        let count = distance(run.start, run.end);
        if count > 0 {
            self.note_run(lane, count, room);
        }
        count
    }

    /// Books a run of `count` items taken from ring `lane` when `room` were
    /// allowed: the lane's high-water mark, and (recording) the run's
    /// publication bound.
    #[inline]
    fn note_run(&mut self, lane: usize, count: usize, room: usize) {
        if count as u64 > self.high_water[lane] {
            self.high_water[lane] = count as u64;
            // Relaxed: a statistic.
            self.shared.high_water[lane].store(count as u64, Ordering::Relaxed);
        }
        if self.recording {
            self.buf.note_run(self.since[lane], count as u64);
            if count < room {
                // Caught up: what comes next was published after now.
                self.since[lane] = self.sweep_now;
            }
        }
    }

    /// After a sleep: items published during it woke us, so date them from
    /// the wake-up (histograms, and the starvation age of priority classes).
    fn woke(&mut self) {
        if self.recording || self.asm.is_some() {
            let now = self.shared.clock();
            self.since.iter_mut().for_each(|s| *s = now);
        }
    }

    /// Drains every lane up to the tails as they are now (waiting for claimed
    /// items to be published), then dispatches what is left with `reason`.
    fn drain_all(&mut self, reason: DispatchReason) {
        self.set_drain_targets();
        // Producers that claimed a slot publish it promptly; never park here,
        // since they do not wake a drainer that has not announced a park.
        let mut backoff = Backoff::new(crate::wait::WaitStrategy::Yield);
        loop {
            if self.past_give_back() {
                self.give_back_leftovers();
                return;
            }
            let found = self.sweep();
            if self.asm.is_some() {
                self.dispatch_shaped(false, Force::All(reason));
            }
            if self.drain_targets_reached() {
                break;
            }
            if found == 0 {
                backoff.snooze();
            } else {
                backoff.reset();
            }
        }
        if self.asm.is_some() {
            self.dispatch_shaped(false, Force::All(reason));
        } else if !self.buf.is_empty() {
            self.dispatch(reason);
        }
    }

    /// One turn of the shaping drainer: takes what the lanes hold, then
    /// dispatches every batch that is due. Returns whether it did anything.
    fn shaped_turn(&mut self) -> bool {
        // Acquire pairs with the Release increment in `flush_now`.
        let requested = self.shared.control.flush_now.load(Ordering::Acquire);
        let force = if requested != self.flush_now_done {
            self.flush_now_done = requested;
            Force::All(DispatchReason::Flush)
        } else {
            Force::No
        };
        let found = self.sweep();
        let dispatched = self.dispatch_shaped(found == 0, force);
        found > 0 || dispatched
    }

    /// One pass over every ring into the staging area, classes in priority
    /// order, as far as the staging area has room. Returns the number of
    /// slots consumed.
    fn sweep_shaped(&mut self) -> usize {
        let shared = &*self.shared;
        let asm = self.asm.as_deref_mut().expect("shaping drainer");
        let lanes = shared.lane_count;
        let now = asm.now_ns(Instant::now());
        self.sweep_now = now;
        let mut found = 0;
        'classes: for class in 0..shared.classes {
            let mut lane = self.start;
            for _ in 0..lanes {
                let room = asm.room_for(class);
                if room == 0 {
                    // The rest is kept for lower classes.
                    continue 'classes;
                }
                let ring_index = class * lanes + lane;
                let head = self.heads[ring_index];
                let lane_state = &shared.lanes[ring_index];
                let expiry = lane_state.expiry.as_ref();
                let since = self.since[ring_index];
                // SAFETY: this thread is the drainer and `head` is the head
                // it last published.
                let run = unsafe {
                    lane_state.ring.take_run(head, room, |item, seq, ticket| {
                        let origin = match ticket {
                            Some(index) => Origin::ticket(ring_index, index),
                            None => Origin::NONE,
                        };
                        let expires = expiry.map_or(NEVER, |e| e.get(seq));
                        asm.take(item, origin, class, expires, now, since);
                    })
                };
                // Evicting producers may have moved the head: the run starts
                // where it was.
                let (head, new_head) = (run.start, run.end);
                self.heads[ring_index] = new_head;
                if new_head != head {
                    if run.notify {
                        shared.table.lane(ring_index).notifier.notify_all();
                    }
                    let count = distance(head, new_head);
                    found += count;
                    if count as u64 > self.high_water[ring_index] {
                        self.high_water[ring_index] = count as u64;
                        // Relaxed: a statistic.
                        shared.high_water[ring_index].store(count as u64, Ordering::Relaxed);
                    }
                }
                if distance(head, new_head) < room {
                    // Caught up: what comes next was published after now.
                    self.since[ring_index] = now;
                }
                lane += 1;
                if lane == lanes {
                    lane = 0;
                }
            }
        }
        self.start = if self.start + 1 >= lanes {
            0
        } else {
            self.start + 1
        };
        found
    }

    /// Dispatches every batch the assembler says is due (all that is staged
    /// with `Force::All`). Returns whether it dispatched any.
    fn dispatch_shaped(&mut self, idle: bool, force: Force) -> bool {
        let mut dispatched = false;
        loop {
            #[cfg(feature = "tokio")]
            if self.need_buffer {
                // Task mode, every buffer in flight: the caller awaits one.
                break;
            }
            let shared = &*self.shared;
            let asm = self.asm.as_deref_mut().expect("shaping drainer");
            // Relaxed: a tuning value, ordered with nothing.
            let effective = shared.control.effective_max.load(Ordering::Relaxed);
            let now = asm.now_ns(Instant::now());
            let reason = asm.next_batch(
                &mut self.buf,
                now,
                effective,
                self.adaptive_max,
                idle,
                force,
                &mut |origin, error| {
                    if let Some((lane, index)) = origin.pending() {
                        deliver(&shared.table, lane, index, Err(error));
                    }
                },
            );
            let (tally, asm_tally, staged) = (&mut self.tally, asm.tally, asm.len() as u64);
            let changed = tally.expired != asm_tally.expired
                || tally.superseded != asm_tally.superseded
                || tally.too_large != asm_tally.too_large
                || tally.staged != staged;
            tally.expired = asm_tally.expired;
            tally.superseded = asm_tally.superseded;
            tally.too_large = asm_tally.too_large;
            tally.staged = staged;
            match reason {
                Some(reason) => {
                    self.dispatch(reason);
                    dispatched = true;
                }
                None => {
                    if changed {
                        self.shared.counters.publish(&self.tally);
                    }
                    break;
                }
            }
        }
        dispatched
    }

    /// Parks until a producer publishes, a request arrives, or the next
    /// staged batch is due (its linger ends).
    fn park_until_due(&mut self) {
        let asm = self.asm.as_deref().expect("shaping drainer");
        if asm.len() == 0 {
            self.park();
            return;
        }
        let now = Instant::now();
        // Relaxed: a tuning value.
        let effective = self.shared.control.effective_max.load(Ordering::Relaxed);
        let now_ns = asm.now_ns(now);
        let mut timeout = match asm.next_due(now_ns, effective, self.adaptive_max) {
            Some(due) if due <= now_ns => return,
            Some(due) => Duration::from_nanos(due - now_ns),
            // Staged items wait for no timer (a full staging area waits for
            // the handler): look again soon.
            None => Duration::from_millis(1),
        };
        if let Some(due) = self.next_retry() {
            timeout = timeout.min(due.saturating_duration_since(now));
        }
        let shared = &*self.shared;
        let control = &shared.control;
        let (flush_done, flush_now_done) = (self.flush_done, self.flush_now_done);
        let lanes = || {
            shared
                .lanes
                .iter()
                .map(|lane| &lane.ring)
                .zip(self.heads.iter().copied())
        };
        let found = announce_park_all(lanes());
        // Acquire, as in `park`.
        let requested = control.closing.load(Ordering::Acquire)
            || control.flush_requested.load(Ordering::Acquire) != flush_done
            || control.flush_now.load(Ordering::Acquire) != flush_now_done;
        let sleep = found.empty && !requested;
        shared.counters.note_park(sleep, found.fenced);
        if sleep {
            crate::sync::thread::park_timeout(timeout);
        }
        withdraw_park(lanes(), found.announced);
    }

    /// Sends the current batch to the sink and starts a new one: runs the
    /// handler and completes every item it left uncompleted, or hands the
    /// buffer to the async workers and takes a fresh one from the pool.
    fn dispatch(&mut self, reason: DispatchReason) {
        let len = self.buf.len();
        debug_assert!(len > 0);
        if let Some(recorder) = &self.shared.recorder {
            let now = self.shared.clock();
            lock(recorder).dispatched(
                len,
                self.buf
                    .runs
                    .iter()
                    .map(|&(since, count)| (now.saturating_sub(since), count)),
            );
        }
        match &mut self.sink {
            Sink::Sync(_) if self.shared.failure.is_some() => {
                let mut buf = core::mem::replace(&mut self.buf, BatchBuf::with_capacity(0));
                if let Some(retry) = self.handle_with_policies(&mut buf, 0) {
                    self.retries.push(retry);
                    self.buf = self.free_buffer();
                } else {
                    self.shared.pool.recycle(&mut buf);
                    self.buf = buf;
                }
            }
            Sink::Sync(_) => self.handle_sync(),
            #[cfg(feature = "tokio")]
            Sink::Async => {
                let full = core::mem::replace(&mut self.buf, BatchBuf::with_capacity(0));
                crate::runtime::dispatch(&self.shared, full);
                if self.on_runtime {
                    // A task must not block: take a buffer if one is free,
                    // else await one in `run_async`.
                    match self.shared.pool.take() {
                        Some(buf) => self.buf = buf,
                        None => self.need_buffer = true,
                    }
                } else {
                    self.buf = self.next_buffer();
                }
            }
        }
        self.count_dispatch(len, reason);
    }

    /// Runs the sync handler on the batch buffer (no failure policies),
    /// fails what it left and empties the buffer.
    #[inline(always)]
    fn handle_sync(&mut self) {
        let handler = self.sink.sync_handler();
        let shared = &*self.shared;
        let started = (shared.controller.is_some() || shared.recorder.is_some()).then(Instant::now);
        let mut batch = Batch::with_direct(&mut self.buf, &shared.table, &mut self.direct);
        let running = crate::scope::Running::enter(shared.id());
        let outcome = catch_unwind(AssertUnwindSafe(|| handler.handle(&mut batch)));
        drop(running);
        if let Some(started) = started {
            let elapsed = started.elapsed();
            shared.observe_batch(elapsed, self.buf.feedback.take());
            shared.record_finished(elapsed, &self.buf);
        }
        let mut batch = Batch::with_direct(&mut self.buf, &shared.table, &mut self.direct);
        let leftover = match outcome {
            Ok(Ok(())) => Error::NotCompleted,
            Ok(Err(error)) => {
                self.tally.batch_errors += 1;
                batch_failed(error)
            }
            Err(payload) => {
                self.tally.panics += 1;
                Error::HandlerPanicked {
                    message: panic_message(&*payload),
                }
            }
        };
        batch.fail_remaining(leftover);
        self.tally.items_failed += self.buf.failed as u64;
        shared.pool.recycle(&mut self.buf);
    }

    /// Counts a dispatched batch of `len` items and publishes the tally.
    #[inline(always)]
    fn count_dispatch(&mut self, len: usize, reason: DispatchReason) {
        let tally = &mut self.tally;
        tally.batches += 1;
        tally.items += len as u64;
        tally.max_batch = tally.max_batch.max(len as u64);
        tally.reasons[reason.index()] += 1;
        if self.asm.is_some() {
            // The assembler's counts changed too.
            self.shared.counters.publish(tally);
        } else {
            self.shared.counters.publish_batch(tally, reason);
        }
    }

    /// Runs the sync handler on `buf` (attempt `attempt`) under the failure
    /// policies: the breaker may refuse it; afterwards failed items are
    /// retried or dead-lettered. Returns the retry to queue, if any (the
    /// buffer then holds only the items to retry); otherwise `buf` is done.
    fn handle_with_policies(&mut self, buf: &mut BatchBuf<T>, attempt: u32) -> Option<Retry<T>> {
        let handler = self.sink.sync_handler();
        let shared = &*self.shared;
        let failure = shared.failure.as_ref().expect("failure policies are on");
        let deliver_to = |origin: Origin, error: Error| {
            if let Some((lane, index)) = origin.pending() {
                deliver(&shared.table, lane, index, Err(error));
            }
        };
        if !lock(failure).admit(Instant::now()) {
            lock(failure).reject(buf, &mut { deliver_to });
            self.tally.items_failed += buf.failed as u64;
            return None;
        }
        buf.prepare_marks();
        let started = Instant::now();
        let mut batch = Batch::new(buf, &shared.table);
        let running = crate::scope::Running::enter(shared.id());
        let outcome = catch_unwind(AssertUnwindSafe(|| handler.handle(&mut batch)));
        drop(running);
        let elapsed = started.elapsed();
        shared.observe_batch(elapsed, buf.feedback.take());
        shared.record_finished(elapsed, buf);
        let outcome = match outcome {
            Ok(Ok(())) => Outcome::Ok,
            Ok(Err(error)) => {
                self.tally.batch_errors += 1;
                Outcome::Failed(error)
            }
            Err(payload) => {
                self.tally.panics += 1;
                Outcome::Panicked(panic_message(&*payload))
            }
        };
        let settled =
            lock(failure).settle(buf, outcome, attempt, Instant::now(), &mut { deliver_to });
        self.tally.items_failed += buf.failed as u64;
        buf.failed = 0;
        match settled {
            Settled::Done => None,
            Settled::Retry { delay } => Some(Retry {
                due: crate::failure::later(Instant::now(), delay),
                attempt: attempt + 1,
                buf: core::mem::replace(buf, BatchBuf::with_capacity(0)),
            }),
        }
    }

    /// Runs every retry that is due. Returns whether it ran any.
    fn run_due_retries(&mut self) -> bool {
        let mut ran = false;
        let now = Instant::now();
        while let Some(i) = self.retries.iter().position(|r| r.due <= now) {
            let Retry {
                attempt, mut buf, ..
            } = self.retries.swap_remove(i);
            ran = true;
            match self.handle_with_policies(&mut buf, attempt) {
                Some(retry) => self.retries.push(retry),
                None => self.shared.pool.put(buf),
            }
        }
        if ran {
            self.shared.counters.publish(&self.tally);
        }
        ran
    }

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

    /// Whether `shutdown_timeout`'s deadline has passed.
    fn past_give_back(&self) -> bool {
        // Acquire pairs with the Release store in `shutdown_timeout`.
        let at = self.shared.control.give_back_at.load(Ordering::Acquire);
        at != NEVER && self.shared.clock() >= at
    }

    /// `shutdown_timeout`'s deadline passed: moves every item not handled
    /// (the batch being filled, the staging area, the retry queue, the
    /// lanes, which are closed) to the batcher's leftovers and fails their
    /// tickets with `Closed`.
    fn give_back_leftovers(&mut self) {
        self.give_back(&Error::Closed);
    }

    /// Whether the drainer must hold off, and until when if known: paused
    /// (until resumed), or the breaker is open and holds batches.
    fn held(&self) -> Option<Option<Instant>> {
        let control = &self.shared.control;
        // Acquire pairs with the Release stores of `pause` and `resume`.
        if control.paused.load(Ordering::Acquire) {
            return Some(None);
        }
        let failure = self.shared.failure.as_ref()?;
        let failure = lock(failure);
        failure.holds(Instant::now()).then(|| failure.open_until())
    }

    /// When the next retry is due, if any.
    fn next_retry(&self) -> Option<Instant> {
        self.retries.iter().map(|r| r.due).min()
    }

    /// A free buffer for the sync drainer whose buffer went to the retry
    /// queue: from the pool, or, if every buffer waits to retry, after
    /// running the next retry when it is due (backpressure).
    fn free_buffer(&mut self) -> BatchBuf<T> {
        loop {
            if let Some(buf) = self.shared.pool.take() {
                return buf;
            }
            match self.next_retry() {
                Some(due) => {
                    let now = Instant::now();
                    if due > now {
                        crate::sync::thread::park_timeout(due - now);
                    }
                    self.run_due_retries();
                }
                None => unreachable!("a buffer is either in the pool or waiting to retry"),
            }
        }
    }

    /// A free buffer from the pool, waiting (spin, yield, then park until a
    /// worker returns one) while every buffer is in flight.
    #[cfg(feature = "tokio")]
    fn next_buffer(&mut self) -> BatchBuf<T> {
        let pool = &self.shared.pool;
        let mut found = pool.take();
        self.wait_async(|| {
            found = found.take().or_else(|| pool.take());
            found.is_some()
        });
        found.expect("waited until a buffer was found")
    }

    /// With async workers, waits until every batch handed to them has
    /// finished (a flush or shutdown is complete only then); with a sync
    /// handler, until every batch waiting to retry has settled.
    fn wait_for_batches_in_flight(&mut self) {
        while let Some(due) = self.next_retry() {
            if self.past_give_back() {
                self.give_back_leftovers();
                break;
            }
            let now = Instant::now();
            if due > now {
                let mut wait = due - now;
                let give_back = self.shared.control.give_back_at.load(Ordering::Acquire);
                if give_back != NEVER {
                    let left = give_back.saturating_sub(self.shared.clock());
                    wait = wait.min(Duration::from_nanos(left));
                }
                std::thread::sleep(wait);
            }
            self.run_due_retries();
        }
        #[cfg(feature = "tokio")]
        if matches!(self.sink, Sink::Async) {
            let pipeline = self.shared.pipeline();
            self.wait_async(|| pipeline.in_flight() == 0);
        }
    }

    /// Waits until `ready()` holds, by the batcher's wait strategy; parks
    /// only after announcing it, so that the worker returning a buffer
    /// unparks it (see `Pipeline::announce_wait`).
    #[cfg(feature = "tokio")]
    fn wait_async(&self, mut ready: impl FnMut() -> bool) {
        let mut backoff = Backoff::new(self.shared.config.wait);
        loop {
            if ready() {
                return;
            }
            if backoff.snooze() {
                let pipeline = self.shared.pipeline();
                if pipeline.announce_wait(&mut ready) {
                    crate::sync::thread::park();
                    pipeline.withdraw_wait();
                }
            }
        }
    }

    /// Parks until a producer publishes into a lane (or a request arrives).
    fn park(&mut self) {
        let plan = self.prepare_park();
        plan.sleep();
        self.end_park(plan);
    }

    /// Announces the park on every lane ([`prepare_park`]); with a retry
    /// waiting, the sleep ends when it is due.
    ///
    /// A producer whose claim clears a lane's announcement wakes us after
    /// publishing; a requester posts its request, then wakes us: the park
    /// token makes the sleep return either way.
    fn prepare_park(&mut self) -> ParkPlan {
        let shared = &*self.shared;
        if self.asm.is_none() {
            // Nothing lingers without shaping: a `flush_now` has nothing to
            // do beyond waking us. Acquire pairs with its AcqRel increment.
            self.flush_now_done = shared.control.flush_now.load(Ordering::Acquire);
        }
        let timeout = match self.next_retry() {
            // A retry is waiting: sleep no longer than until it is due.
            Some(due) => match due.saturating_duration_since(Instant::now()) {
                timeout if timeout.is_zero() => return ParkPlan::AWAKE,
                timeout => Some(timeout),
            },
            None => None,
        };
        let lanes = shared
            .lanes
            .iter()
            .map(|lane| &lane.ring)
            .zip(self.heads.iter().copied());
        // A request posted after this check unparks us (park token).
        let plan = prepare_park(lanes, || self.requested(), timeout);
        shared.counters.note_park(plan.sleeps(), plan.fenced());
        plan
    }

    /// Withdraws the announcements of `plan` (after the sleep).
    fn end_park(&self, plan: ParkPlan) {
        plan.end(
            self.shared
                .lanes
                .iter()
                .map(|lane| &lane.ring)
                .zip(self.heads.iter().copied()),
        );
    }
}

#[cfg(feature = "tokio")]
impl<T: Send + 'static, R: Send + 'static> Drainer<T, R> {
    /// Makes this drainer run as a task (`run_async`).
    pub(crate) fn on_runtime(mut self) -> Self {
        self.on_runtime = true;
        self
    }

    /// The drainer task's body: `run` without blocking the worker thread.
    /// Where the thread spins, the task yields to the executor; where the
    /// thread parks, the task stores its waker and returns `Pending`.
    pub(crate) async fn run_async(mut self) {
        let outcome = {
            let run = core::pin::pin!(self.run_async_loop());
            crate::contain::CatchUnwind(run).await
        };
        if let Err(message) = outcome {
            // As in `run`.
            self.fail_fatally(message);
        }
        if !self.need_buffer {
            self.shared.pool.put(core::mem::replace(
                &mut self.buf,
                BatchBuf::with_capacity(0),
            ));
        }
        self.finished = true;
    }

    /// [`run_async`](Self::run_async)'s loop, until shutdown.
    async fn run_async_loop(&mut self) {
        loop {
            if self.need_buffer {
                self.await_buffer().await;
            }
            self.refresh_settings();
            let control = &self.shared.control;
            // Acquire pairs with the Release store in `Batcher::begin_stop`.
            if control.closing.load(Ordering::Acquire) {
                self.drain_all_async(DispatchReason::Shutdown).await;
                self.await_in_flight().await;
                if matches!(self.sink, Sink::Async) {
                    crate::runtime::close(&self.shared);
                }
                break;
            }
            if self.held().is_some() {
                // Paused, or a holding breaker is open: the task yields
                // until it may go on.
                tokio::task::yield_now().await;
                continue;
            }
            // Acquire pairs with the AcqRel increment in `Batcher::flush`.
            let flush = control.flush_requested.load(Ordering::Acquire);
            if flush != self.flush_done {
                self.drain_all_async(DispatchReason::Flush).await;
                self.await_in_flight().await;
                self.flush_done = flush;
                self.shared.progress.flushed(flush);
                continue;
            }
            if self.asm.is_some() {
                if self.shaped_turn() || self.need_buffer {
                    continue;
                }
                if self.asm.as_deref().is_some_and(|asm| asm.len() > 0) {
                    // Staged items wait for a linger or interval to end: the
                    // task yields rather than arming a timer (the runtime
                    // need not have one).
                    tokio::task::yield_now().await;
                    continue;
                }
                self.park_async().await;
                self.woke();
                continue;
            }
            if self.sweep() > 0 || self.need_buffer {
                continue;
            }
            if !self.buf.is_empty() {
                self.dispatch(DispatchReason::LanesIdle);
                continue;
            }
            // An idle drainer task sleeps at once under `Backoff` and `Park`:
            // yielding would keep it running on a worker thread of its own,
            // and a sleeping task is woken onto the worker of the producer
            // that wakes it, which is where the result is awaited too.
            let yield_first = match self.shared.config.wait {
                WaitStrategy::BusySpin | WaitStrategy::Yield => true,
                WaitStrategy::Backoff | WaitStrategy::Park => false,
            };
            if yield_first {
                tokio::task::yield_now().await;
            } else {
                self.park_async().await;
                self.woke();
            }
        }
    }

    /// `drain_all` for the task: yields while a producer finishes
    /// publishing a claimed slot, awaits a buffer when all are in flight.
    async fn drain_all_async(&mut self, reason: DispatchReason) {
        self.set_drain_targets();
        loop {
            if self.need_buffer {
                self.await_buffer().await;
            }
            if self.past_give_back() {
                self.give_back_leftovers();
                return;
            }
            let found = self.sweep();
            if self.asm.is_some() {
                self.dispatch_shaped(false, Force::All(reason));
            }
            if self.drain_targets_reached()
                && !self.need_buffer
                && self.asm.as_deref().is_none_or(|asm| asm.len() == 0)
            {
                break;
            }
            if found == 0 && !self.need_buffer {
                tokio::task::yield_now().await;
            }
        }
        if !self.buf.is_empty() {
            self.dispatch(reason);
        }
        if self.need_buffer {
            self.await_buffer().await;
        }
    }

    /// Awaits a free buffer from the pool (every one is in flight).
    async fn await_buffer(&mut self) {
        let shared = Arc::clone(&self.shared);
        let mut found = None;
        core::future::poll_fn(|cx| {
            if let Some(task) = &shared.drainer_task {
                task.register(cx.waker());
            }
            let pipeline = shared.pipeline();
            let ready = || {
                found = shared.pool.take();
                found.is_some()
            };
            // The flag makes a worker that returns a buffer wake us.
            if pipeline.announce_wait(ready) {
                core::task::Poll::Pending
            } else {
                core::task::Poll::Ready(())
            }
        })
        .await;
        self.shared.pipeline().withdraw_wait();
        self.buf = found.expect("a buffer was found");
        self.need_buffer = false;
    }

    /// Awaits the end of every batch handed to async workers.
    async fn await_in_flight(&mut self) {
        if !matches!(self.sink, Sink::Async) {
            return;
        }
        let shared = Arc::clone(&self.shared);
        core::future::poll_fn(|cx| {
            if let Some(task) = &shared.drainer_task {
                task.register(cx.waker());
            }
            let pipeline = shared.pipeline();
            if pipeline.announce_wait(|| pipeline.in_flight() == 0) {
                core::task::Poll::Pending
            } else {
                core::task::Poll::Ready(())
            }
        })
        .await;
        self.shared.pipeline().withdraw_wait();
    }

    /// The task's park: stores the waker, then announces the park on every
    /// lane (as the thread's `park_drainer` does); sleeps only if every lane
    /// is empty and no request is pending. A producer whose claim clears an
    /// announcement wakes the stored waker.
    async fn park_async(&mut self) {
        let shared = Arc::clone(&self.shared);
        if self.asm.is_none() {
            // As in `park`. Acquire, as below.
            self.flush_now_done = shared.control.flush_now.load(Ordering::Acquire);
        }
        let heads = &self.heads;
        let flush_done = self.flush_done;
        let flush_now_done = self.flush_now_done;
        let lanes = || {
            shared
                .lanes
                .iter()
                .map(|lane| &lane.ring)
                .zip(heads.iter().copied())
        };
        let mut announced = None;
        core::future::poll_fn(|cx| {
            if let Some(count) = announced.take() {
                withdraw_park(lanes(), count);
                return core::task::Poll::Ready(());
            }
            if let Some(task) = &shared.drainer_task {
                task.register(cx.waker());
            }
            let found = announce_park_all(lanes());
            let control = &shared.control;
            // Acquire, as in `park`; a request posted after this check wakes
            // the waker stored above.
            let requested = control.closing.load(Ordering::Acquire)
                || control.flush_requested.load(Ordering::Acquire) != flush_done
                || control.flush_now.load(Ordering::Acquire) != flush_now_done;
            let sleep = found.empty && !requested;
            shared.counters.note_park(sleep, found.fenced);
            if sleep {
                announced = Some(found.announced);
                return core::task::Poll::Pending;
            }
            withdraw_park(lanes(), found.announced);
            core::task::Poll::Ready(())
        })
        .await;
    }
}

impl<T, R> Drainer<T, R> {
    /// A flush or shutdown drains every lane up to its tail as it is now.
    fn set_drain_targets(&mut self) {
        for (target, lane) in self.targets.iter_mut().zip(self.shared.lanes.iter()) {
            *target = lane.ring.tail().0;
        }
    }

    /// Whether every lane's head has reached its drain target.
    fn drain_targets_reached(&self) -> bool {
        self.heads
            .iter()
            .zip(self.targets.iter())
            .all(|(&head, &target)| distance(target, head) <= SEQ_MASK / 2)
    }

    /// Moves every item not handled to the batcher's leftovers (for
    /// `shutdown_timeout` to return), failing their tickets with `error`.
    fn give_back(&mut self, error: &Error) {
        let shared = Arc::clone(&self.shared);
        let mut out = lock(&shared.leftovers);
        self.take_unhandled(&mut |item, origin| {
            if let Some((lane, index)) = origin.pending() {
                deliver(&shared.table, lane, index, Err(error.clone()));
            }
            out.push(item);
        });
    }

    /// Hands every item not handled to `each` with its origin: the batch
    /// being filled, the staging area, the retry queue, then the lanes up
    /// to their tails (which must be closed). `each` runs outside the lane
    /// runs, so what it does (a drop, a ticket's wake-up) cannot leave a
    /// ring half taken.
    fn take_unhandled(&mut self, each: &mut dyn FnMut(T, Origin)) {
        let buf = &mut self.buf;
        for (item, origin) in buf.items.drain(..).zip(buf.origins.drain(..)) {
            each(item, origin);
        }
        let _ = buf.clear();
        if let Some(asm) = self.asm.as_deref_mut() {
            asm.take_all(&mut *each);
        }
        for mut retry in self.retries.drain(..) {
            let buf = &mut retry.buf;
            for (item, origin) in buf.items.drain(..).zip(buf.origins.drain(..)) {
                each(item, origin);
            }
            self.shared.pool.put(retry.buf);
        }
        self.take_lanes(&mut |buf| {
            for (item, origin) in buf.items.drain(..).zip(buf.origins.drain(..)) {
                each(item, origin);
            }
            let _ = buf.clear();
        });
    }

    /// Takes every item in the lanes up to their tails as they are now
    /// (waiting for claimed slots to be published), a run at a time into a
    /// batch buffer that `each` then empties: the end of the drainer's life
    /// (closed lanes). No code but the buffer's runs into it runs inside a
    /// lane run.
    fn take_lanes(&mut self, each: &mut dyn FnMut(&mut BatchBuf<T>)) {
        let shared = Arc::clone(&self.shared);
        debug_assert!(self.buf.is_empty(), "the batch is emptied first");
        // The batch buffer, or a new one while every pooled one is out (a
        // drainer task awaiting one): the end of the batcher's life, where
        // one allocation does no harm.
        let own = self.buf.items.capacity() > 0;
        let mut buf = if own {
            core::mem::replace(&mut self.buf, BatchBuf::with_capacity(0))
        } else {
            BatchBuf::with_capacity(shared.config.max_batch)
        };
        for (index, lane) in shared.lanes.iter().enumerate() {
            let target = lane.ring.tail().0;
            let mut head = self.heads[index];
            while head != target {
                let run = {
                    let mut out = buf.appender(usize::MAX);
                    let room = out.room();
                    // SAFETY: the drainer, and `head` is the head it last
                    // published.
                    unsafe {
                        lane.ring.take_run(head, room, |item, _, ticket| {
                            let origin = match ticket {
                                Some(slot) => Origin::ticket(index, slot),
                                None => Origin::NONE,
                            };
                            // At most `room` calls, as in `drain_lane`.
                            out.push(item, origin);
                        })
                    }
                };
                if run.notify {
                    shared.table.lane(index).notifier.notify_all();
                }
                // (On an evicting ring the head may have moved on without us.)
                head = run.end;
                if !buf.is_empty() {
                    each(&mut buf);
                    debug_assert!(buf.is_empty(), "`each` empties the buffer");
                }
                if run.start == run.end {
                    // A producer is still publishing a claimed slot.
                    crate::sync::thread::yield_now();
                }
            }
            self.heads[index] = head;
        }
        if own {
            self.buf = buf;
        }
    }

    /// The drainer will never run again: closes every lane, fails the
    /// tickets of every item still in the batch, the staging area, the
    /// retry queue or the lanes with `error`, and drops the items (each
    /// drop contained).
    #[cfg(feature = "tokio")]
    fn abandon(&mut self, error: Error) {
        let shared = Arc::clone(&self.shared);
        self.close_lanes();
        let mut dropped_badly = 0;
        self.take_unhandled(&mut |item, origin| {
            if let Some((lane, slot)) = origin.pending() {
                deliver(&shared.table, lane, slot, Err(error.clone()));
            }
            dropped_badly += usize::from(!crate::contain::drop_value(item));
        });
        shared.panics.drops(dropped_badly);
        if !self.need_buffer {
            shared.pool.put(core::mem::replace(
                &mut self.buf,
                BatchBuf::with_capacity(0),
            ));
            self.need_buffer = true;
        }
    }

    /// Closes every lane to producers and wakes those waiting for room, so
    /// that they see the close.
    fn close_lanes(&self) {
        let shared = &*self.shared;
        for lane in shared.lanes.iter() {
            lane.ring.close();
        }
        for index in 0..shared.lanes.len() {
            shared.table.lane(index).notifier.notify_all();
        }
    }

    /// The drainer's loop panicked (a bug of the batcher's: user code is
    /// contained where it is called): closes every lane at once, fails the
    /// ticket of every item not handled with [`Error::DrainerPanicked`] and
    /// gives the items back (to `shutdown_timeout`, or to be dropped with
    /// the batcher), so that producers get `Closed` and shutdown returns.
    #[cold]
    fn fail_fatally(&mut self, message: crate::error::PanicMessage) {
        self.failed = true;
        let shared = Arc::clone(&self.shared);
        // Whatever the panic interrupted, the rings' heads are where the
        // runs taken so far left them (their guards commit on unwinding).
        for (head, lane) in self.heads.iter_mut().zip(shared.lanes.iter()) {
            *head = lane.ring.head();
        }
        self.close_lanes();
        // Release, as in `Batcher::begin_stop`: requests and waits end.
        shared.control.closing.store(true, Ordering::Release);
        let error = Error::DrainerPanicked { message };
        if self.buf.completed > 0 {
            // The handler had this batch: its items are not given back.
            Batch::new(&mut self.buf, &shared.table).fail_remaining(error.clone());
            shared.pool.recycle(&mut self.buf);
        }
        let outcome = crate::contain::call(|| self.give_back(&error));
        debug_assert!(outcome.is_ok(), "giving back after a failure panicked");
        #[cfg(feature = "tokio")]
        if matches!(self.sink, Sink::Async) {
            crate::runtime::close(&shared);
        }
        shared.progress.flushed(u64::MAX);
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

/// Locks `mutex`, going on after a panic of another holder (the data it
/// guards stays consistent: every update is a single assignment).
pub(crate) fn lock<T>(mutex: &crate::sync::Mutex<T>) -> crate::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The message of a panic payload, when it is a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> crate::error::PanicMessage {
    let text: &str = if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a non-string panic payload"
    };
    std::sync::Arc::new(text.to_owned())
}
