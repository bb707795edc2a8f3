//! The public [`WaitStrategy`] and the spin/yield/park stepper that
//! implements it.

use crate::sync::{self, thread};

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
/// looks again after every hint, so it notices a result or an item within
/// one hint; the spin phase as a whole spends as many hints as steps
/// spinning `1, 2, 4 ... 64` times would, but those let a result wait up to
/// 64 hints before it was seen. Under loom a shorter phase keeps the models
/// small.
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
