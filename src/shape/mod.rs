//! Batch shaping: the opt-in policies that decide what goes into a batch and
//! when it leaves.
//!
//! With every policy off (the default) the drainer moves items straight from
//! the lanes into the batch buffer (natural batching) and nothing here runs.
//! With any policy on, the drainer moves items from the lanes into a staging
//! area allocated at build time (an intake queue, then per-group FIFO lists
//! threaded through one slab), and an [`Assembler`] decides, after each sweep,
//! which batch to form and why. Producers pay for a policy only where it needs
//! their help: a per-item expiry stamp when deadlines or a maximum age are on.
//!
//! The policies:
//! - flush rules: max items, max bytes by a user weigher, linger
//!   ([`Linger`]), a minimum interval between batches, `flush_now`;
//! - priority classes ([`Priority`]): one ring per class in each lane, higher
//!   classes first, Critical dispatched at once, lower classes taken first
//!   once their oldest item is older than the starvation age;
//! - key groups: every batch holds one key, with per-group limits
//!   ([`GroupLimits`]) and a bound on open groups;
//! - conflation: the latest item per key within a batch, superseded items
//!   completed with [`Error::Superseded`](crate::Error::Superseded);
//! - deadlines and a maximum age: expired items never reach the handler, their
//!   tickets fail with [`Error::Expired`](crate::Error::Expired);
//! - adaptive sizing ([`Adaptive`]): a controller moves the effective batch
//!   size (and the adaptive linger) from handler latency or load feedback.

mod adaptive;
mod assembler;
mod expiry;
mod keys;
mod policy;
#[cfg(all(test, not(loom)))]
mod props;
mod settings;

pub(crate) use adaptive::Controller;
#[cfg(feature = "serde")]
pub(crate) use adaptive::DEFAULT_LOAD_INTERVAL;
pub use adaptive::{Adaptive, AdaptiveMode, LoadWeights};
pub(crate) use assembler::{Assembler, Force};
pub(crate) use expiry::{ExpiryStamps, NEVER, duration_ns};
pub(crate) use keys::KeyPolicy;
pub use keys::group_key_hash;
pub use policy::{GroupLimits, GroupSize, Linger, Oversize, Priority, PriorityLevelError};
pub(crate) use settings::Shaping;
pub use settings::{DEFAULT_MAX_BYTES, DEFAULT_MAX_OPEN_GROUPS, DEFAULT_STARVATION_AGE};

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::batch::LoadFeedback;

    #[test]
    fn group_limits_resolve_against_the_effective_size() {
        assert_eq!(GroupLimits::share(0.25).max_items(100), 25);
        assert_eq!(GroupLimits::share(0.33).max_items(100), 33);
        assert_eq!(GroupLimits::share(0.5).max_items(7), 4);
        assert_eq!(GroupLimits::items(500).max_items(100), 100);
        assert_eq!(GroupLimits::items(0).max_items(100), 1);
        assert_eq!(GroupLimits::default().max_items(64), 64);
    }

    #[test]
    fn load_score_uses_the_weights() {
        let feedback = LoadFeedback {
            cpu: 1.0,
            error_rate: 0.0,
            queue_depth: 1.0,
            contention: 0.0,
        };
        let score = feedback.score(&LoadWeights::default());
        assert!((score - 0.6).abs() < 1e-9, "0.4 + 0.2, got {score}");
    }

    #[test]
    fn latency_controller_steps_by_its_factors() {
        let now = Instant::now();
        let mut c = Controller::new(
            Adaptive::latency(Duration::from_millis(10)).bounds(10, 100),
            100,
        );
        assert_eq!(c.size(), 100);
        assert_eq!(c.observe(Duration::from_millis(13), None, now), 90);
        assert_eq!(c.observe(Duration::from_millis(11), None, now), 90);
        assert_eq!(c.observe(Duration::from_millis(7), None, now), 99);
        for _ in 0..100 {
            c.observe(Duration::from_millis(50), None, now);
        }
        assert_eq!(c.size(), 10, "never below min");
    }

    #[test]
    fn smoothing_rides_out_one_slow_batch_that_would_shrink_the_size() {
        let now = Instant::now();
        let adaptive = Adaptive::latency(Duration::from_millis(10))
            .bounds(10, 100)
            .initial(50);
        let fast = Duration::from_millis(5);
        let slow = Duration::from_millis(14);
        let mut latest = Controller::new(adaptive, 100);
        let mut smoothed = Controller::new(adaptive.smoothing(4), 100);
        for c in [&mut latest, &mut smoothed] {
            assert_eq!(c.size(), 50, "the initial size");
            for _ in 0..3 {
                c.observe(fast, None, now);
            }
            assert_eq!(c.size(), 67, "three fast batches grow 50 by 10 % each");
        }
        // 1.4 × target alone shrinks; the mean of 0.5, 0.5, 0.5, 1.4 is 0.725,
        // under the 0.8 growth threshold.
        assert_eq!(latest.observe(slow, None, now), 60, "the latest alone");
        assert_eq!(smoothed.observe(slow, None, now), 73, "the mean of four");
        // The window's mean crosses 1.2 × target only when every signal in
        // it is slow: 0.95, then 1.175 hold still; four slow ones shrink.
        assert_eq!(smoothed.observe(slow, None, now), 73, "a mean of 0.95");
        assert_eq!(smoothed.observe(slow, None, now), 73, "a mean of 1.175");
        assert_eq!(
            smoothed.observe(slow, None, now),
            66,
            "four slow batches shrink it"
        );
    }

    #[test]
    fn raised_steps_are_undone_step_by_step_back_to_the_size_before() {
        let adaptive = Adaptive::load().bounds(2, 16).initial(2).steps(0.5, 0.5);
        let mut c = Controller::new(adaptive, 16);
        let raised: Vec<usize> = (0..7).map(|_| c.raise()).collect();
        assert_eq!(
            raised,
            [3, 5, 7, 10, 15, 16, 16],
            "50 % steps up to the bound"
        );
        let lowered: Vec<usize> = (0..8).map(|_| c.relax()).collect();
        assert_eq!(
            lowered,
            [11, 7, 5, 3, 2, 2, 2, 2],
            "six steps taken, six undone (the bound stops the seventh)"
        );
    }

    #[test]
    fn load_smoothing_acts_on_the_mean_score_of_the_window() {
        let start = Instant::now();
        let adaptive = Adaptive::load()
            .bounds(1, 100)
            .check_interval(Duration::ZERO)
            .smoothing(2);
        let mut c = Controller::new(adaptive, 100);
        let score = |s: f64| LoadFeedback {
            cpu: s,
            error_rate: s,
            queue_depth: s,
            contention: s,
        };
        // Idle (0.0) then busy (0.8): the mean 0.4 is inside the 0.3-0.7 band.
        assert_eq!(c.observe(Duration::ZERO, Some(score(0.0)), start), 100);
        assert_eq!(
            c.observe(Duration::ZERO, Some(score(0.8)), start),
            100,
            "the mean of 0.0 and 0.8 holds still"
        );
        assert_eq!(
            c.observe(Duration::ZERO, Some(score(0.8)), start),
            90,
            "two busy reports shrink"
        );
    }

    #[test]
    fn load_controller_acts_once_per_interval() {
        let start = Instant::now();
        let mut c = Controller::new(
            Adaptive::load()
                .bounds(1, 100)
                .check_interval(Duration::from_millis(100)),
            100,
        );
        let busy = LoadFeedback {
            cpu: 1.0,
            error_rate: 1.0,
            queue_depth: 1.0,
            contention: 1.0,
        };
        assert_eq!(c.observe(Duration::ZERO, Some(busy), start), 90);
        assert_eq!(
            c.observe(
                Duration::ZERO,
                Some(busy),
                start + Duration::from_millis(50)
            ),
            90,
            "within the interval nothing changes"
        );
        assert_eq!(
            c.observe(Duration::ZERO, None, start + Duration::from_millis(150)),
            81,
            "the feedback kept from the interval acts when it ends"
        );
    }
}
