//! How threads wait: the public [`WaitStrategy`], the spin/yield/park stepper
//! that implements it, and the notifier that wakes producers waiting for room.

use core::task::{Poll, Waker};
use std::time::Instant;

use crate::error::RefusedKind;
use crate::ring::ClaimError;
use crate::sync::{self, Condvar, Mutex, thread};

/// How a thread that has nothing to do waits: the drainer when every lane is
/// empty, a producer when its lane is full (under [`Backpressure::Block`]) and
/// a thread in [`Ticket::wait`].
///
/// [`Backpressure::Block`]: crate::Backpressure::Block
/// [`Ticket::wait`]: crate::Ticket::wait
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Spin on the CPU without ever yielding: the lowest latency, and one busy
    /// core per waiting thread. Use only with a core to spare for the drainer.
    BusySpin,
    /// Spin briefly, then yield to the scheduler between checks; never sleeps.
    Yield,
    /// Spin, then yield, then park until woken (the default): low latency
    /// under load, no CPU when idle. The spin phase checks after every
    /// spin-loop hint (127 checks, a few microseconds), then 64 yields
    /// follow, then the thread parks.
    #[default]
    Backoff,
    /// Park at once until woken: the least CPU, the highest wake-up latency.
    Park,
}

/// Checks in the spin phase, with one spin-loop hint before each. A waiter
/// looks again after every hint (about 25 ns on the reference machine), so it
/// notices a result or an item within one hint; the spin phase as a whole
/// spends as many hints as steps spinning `1, 2, 4 ... 64` times would, but
/// those let a result wait up to 64 hints (1.6 µs) before it was seen. Under
/// loom a shorter phase keeps the models small.
#[cfg(not(loom))]
const SPIN_CHECKS: u32 = 127;
#[cfg(loom)]
const SPIN_CHECKS: u32 = 7;
/// Yield steps after the spin phase, before parking.
const YIELD_STEPS: u32 = 64;

/// A spin, yield, park stepper following a [`WaitStrategy`].
#[derive(Debug)]
pub(crate) struct Backoff {
    strategy: WaitStrategy,
    step: u32,
}

impl Backoff {
    pub(crate) fn new(strategy: WaitStrategy) -> Self {
        Self { strategy, step: 0 }
    }

    /// Starts over after progress was made.
    #[inline]
    pub(crate) fn reset(&mut self) {
        self.step = 0;
    }

    /// Waits a little. Returns `true` when the strategy says it is time to park
    /// instead (the caller then parks by its own wake-up protocol).
    #[inline]
    pub(crate) fn snooze(&mut self) -> bool {
        match self.strategy {
            WaitStrategy::BusySpin => {
                sync::spin_loop();
                false
            }
            WaitStrategy::Yield => {
                if self.step < SPIN_CHECKS {
                    sync::spin_loop();
                } else {
                    thread::yield_now();
                }
                self.step = self.step.saturating_add(1);
                false
            }
            WaitStrategy::Backoff => {
                if self.step < SPIN_CHECKS {
                    sync::spin_loop();
                } else if self.step < SPIN_CHECKS + YIELD_STEPS {
                    thread::yield_now();
                } else {
                    return true;
                }
                self.step += 1;
                false
            }
            WaitStrategy::Park => true,
        }
    }
}

/// Wakes producers that wait for room in a lane (ring slots or completion
/// slots). Waiting is the slow path: producers that find room never touch it.
///
/// Protocol: a waiter takes the lock, then *arms*: with an RMW on the very
/// word that blocks it (the ring's head word, or the completion slot's state)
/// it sets a waiter flag, but only while that word still says "no room"; then
/// it sleeps on the condvar (which releases the lock). The freer changes that
/// word with a swap; if the swap returns the flag, it takes the lock and
/// notifies. Both sides are RMWs of one location, so one comes first in its
/// modification order: either the waiter's RMW sees the room (and it does not
/// sleep), or the freer's swap sees the flag, and its lock waits until the
/// waiter sleeps. No wake-up is lost, and the freer's fast path pays nothing
/// beyond the swap it does anyway.
///
/// Tasks wait the same way ([`poll_if_armed`](Self::poll_if_armed)): under
/// the lock they arm and store their waker, which `notify_all` wakes under
/// the same lock. The waker list keeps its capacity, so waiting tasks
/// allocate only when more of them wait at once than ever before.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    lock: Mutex<Vec<Waker>>,
    cond: Condvar,
}

impl Notifier {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Wakes every waiter, threads and tasks (after a swap returned a waiter
    /// flag, or at shutdown).
    pub(crate) fn notify_all(&self) {
        // Taking the lock orders this after an armed waiter's sleep or waker
        // registration: a waiter holds the lock from arming until then.
        let mut tasks = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        for waker in tasks.drain(..) {
            waker.wake();
        }
        drop(tasks);
        self.cond.notify_all();
    }

    /// Under the lock, runs `arm`; if it returns true (a waiter flag is set
    /// and the caller is still blocked), sleeps until notified or `deadline`.
    pub(crate) fn sleep_if_armed(&self, deadline: Option<Instant>, arm: impl FnOnce() -> bool) {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if !arm() {
            return;
        }
        match deadline {
            None => drop(self.cond.wait(guard).unwrap_or_else(|e| e.into_inner())),
            Some(deadline) => {
                let now = Instant::now();
                if now < deadline {
                    drop(
                        self.cond
                            .wait_timeout(guard, deadline - now)
                            .unwrap_or_else(|e| e.into_inner()),
                    );
                }
            }
        }
    }

    /// The task version of [`sleep_if_armed`](Self::sleep_if_armed): under
    /// the lock, runs `arm`; if it returns true, stores `waker` to be woken by
    /// the next [`notify_all`](Self::notify_all) and returns `Pending`;
    /// otherwise `Ready` (retry at once).
    pub(crate) fn poll_if_armed(&self, waker: &Waker, arm: impl FnOnce() -> bool) -> Poll<()> {
        let mut tasks = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if !arm() {
            return Poll::Ready(());
        }
        if !tasks.iter().any(|w| w.will_wake(waker)) {
            tasks.push(waker.clone());
        }
        Poll::Pending
    }
}

/// Retries `attempt` until it succeeds, the lane closes, or `deadline`
/// passes, waiting between attempts by `strategy`; when the strategy says to
/// park, sleeps on `notifier` if `arm()` sets a waiter flag (see [`Notifier`]).
/// This is how a producer waits for room.
pub(crate) fn retry_until_room<C>(
    strategy: WaitStrategy,
    notifier: &Notifier,
    deadline: Option<Instant>,
    mut attempt: impl FnMut() -> Result<C, ClaimError>,
    mut arm: impl FnMut() -> bool,
) -> Result<C, RefusedKind> {
    let mut backoff = Backoff::new(strategy);
    loop {
        match attempt() {
            Ok(claim) => return Ok(claim),
            Err(ClaimError::Closed) => return Err(RefusedKind::Closed),
            Err(ClaimError::Full) => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(RefusedKind::Timeout);
        }
        if backoff.snooze() {
            notifier.sleep_if_armed(deadline, &mut arm);
        }
    }
}

/// Flush completion and drainer exit, as the drainer reports them. A plain
/// mutex and condvar, plus the wakers of tasks awaiting a flush or the exit:
/// flushes are rare, and the drainer touches this once per flush.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    state: Mutex<ProgressState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct ProgressState {
    /// The last flush request completed.
    flushed: u64,
    /// The drainer has exited.
    exited: bool,
    /// Tasks waiting for either.
    tasks: Vec<Waker>,
}

impl Progress {
    fn update(&self, f: impl FnOnce(&mut ProgressState)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state);
        for waker in state.tasks.drain(..) {
            waker.wake();
        }
        drop(state);
        self.cond.notify_all();
    }

    /// Drainer side: every flush request up to `request` is complete.
    pub(crate) fn flushed(&self, request: u64) {
        self.update(|state| state.flushed = state.flushed.max(request));
    }

    /// Drainer side: the drainer has exited; no flush will complete any more.
    pub(crate) fn exited(&self) {
        self.update(|state| state.exited = true);
    }

    /// Waits until flush `request` is complete (true), or the drainer exited
    /// or `deadline` passed first (false).
    pub(crate) fn wait_flushed(&self, request: u64, deadline: Option<Instant>) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.flushed >= request {
                return true;
            }
            if state.exited {
                return false;
            }
            match deadline {
                None => state = self.cond.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    state = self
                        .cond
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// Task side of [`wait_flushed`](Self::wait_flushed) (no deadline: wrap
    /// the future in a timeout instead). `request: None` waits for the exit.
    #[cfg(feature = "tokio")]
    pub(crate) fn poll_progress(&self, request: Option<u64>, waker: &Waker) -> Poll<bool> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(request) = request {
            if state.flushed >= request {
                return Poll::Ready(true);
            }
        }
        if state.exited {
            return Poll::Ready(request.is_none());
        }
        if !state.tasks.iter().any(|w| w.will_wake(waker)) {
            state.tasks.push(waker.clone());
        }
        Poll::Pending
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Snoozes a stepper until it says to park, at most `limit` times;
    /// returns how many snoozes it allowed first.
    fn snoozes_before_park(strategy: WaitStrategy, limit: u32) -> u32 {
        let mut backoff = Backoff::new(strategy);
        (0..limit).take_while(|_| !backoff.snooze()).count() as u32
    }

    #[test]
    fn backoff_checks_after_every_hint_then_yields_then_parks() {
        // One check per hint: the spin phase is SPIN_CHECKS snoozes (it was
        // 7 doubling steps, which let a waiter miss a result for 64 hints).
        assert_eq!(
            snoozes_before_park(WaitStrategy::Backoff, 1_000),
            SPIN_CHECKS + YIELD_STEPS,
            "Backoff parks after its spin checks and its yields"
        );
        let mut backoff = Backoff::new(WaitStrategy::Backoff);
        for _ in 0..SPIN_CHECKS + YIELD_STEPS {
            assert!(!backoff.snooze());
        }
        backoff.reset();
        assert!(!backoff.snooze(), "a reset stepper starts spinning again");
    }

    #[test]
    fn only_backoff_and_park_ever_park() {
        assert_eq!(snoozes_before_park(WaitStrategy::Park, 10), 0);
        assert_eq!(snoozes_before_park(WaitStrategy::BusySpin, 500), 500);
        assert_eq!(snoozes_before_park(WaitStrategy::Yield, 500), 500);
    }
}
