//! Inline turns (`inline_when_idle`): a submitting thread that finds the
//! drainer idle runs its batch itself, and the direct path for a batch of one.

use crate::batch::Origin;
use crate::contain::lock;
use crate::engine::Shared;
use crate::engine::drainer::{Drainer, Step};
use crate::error::Error;
use crate::ring::{ParkPlan, announce_park_all};
use crate::stats::DispatchReason;
use crate::sync::Ordering;
use crate::wait::Backoff;

/// The drainer's state shared with submitting threads (`inline_when_idle`):
/// the drainer thread holds the lock while it works; a submitter that finds
/// it asleep takes the lock if it is free and runs a turn itself.
pub(crate) type InlineCell<T, R> = crate::sync::Mutex<Option<Drainer<T, R>>>;

/// Most sweep-dispatch-announce passes of one inline turn before it wakes
/// the drainer thread instead (producers keep publishing into the lanes).
pub(super) const INLINE_PASSES: usize = 4;

/// What a drainer's last plain turn came to (see `Drainer::last_turn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LastTurn {
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
/// batch while items keep coming (see `Drainer::last_turn`): long enough
/// for a streaming producer to fill several lines, so that the drainer
/// reads lines it has finished writing instead of pulling each line over
/// while it is still being written (BENCHMARKS.md, run J). An item that arrives alone
/// is not held (it comes after a quiet spell and is dispatched at once),
/// but at a steady moderate rate every sweep finds a few, and batches wait
/// to fill: hence a setting (`spin_between_short_runs`), off by default.
pub(super) const SLIP_SPINS: usize = 64;

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

impl<T: Send + 'static, R: Send + 'static> Drainer<T, R> {
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
    pub(super) fn run_shared_loop(cell: &InlineCell<T, R>) {
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
}

impl<T: Send + 'static, R: Send + 'static> Drainer<T, R> {
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
        if self.failed || self.requested() || self.held().waits() {
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
    pub(super) fn inline_passes(&mut self) -> bool {
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
                drainer.shared.note_park(false, found.fenced);
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
        self.buf.tag.set_reason(DispatchReason::LanesIdle.name());
        self.stamp_batch();
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
}
