//! Adaptive sizing: the settings, the load feedback a handler reports, and
//! the controller that moves the effective batch size.

use std::time::{Duration, Instant};

use crate::batch::LoadFeedback;
use crate::config::ConfigError;

/// The weights that combine [`LoadFeedback`] into one score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadWeights {
    /// Weight of `cpu` (default 0.4).
    pub cpu: f64,
    /// Weight of `error_rate` (default 0.3).
    pub error_rate: f64,
    /// Weight of `queue_depth` (default 0.2).
    pub queue_depth: f64,
    /// Weight of `contention` (default 0.1).
    pub contention: f64,
}

impl Default for LoadWeights {
    fn default() -> Self {
        Self {
            cpu: 0.4,
            error_rate: 0.3,
            queue_depth: 0.2,
            contention: 0.1,
        }
    }
}

impl LoadFeedback {
    /// The weighted score, each figure clamped to 0..=1 first.
    pub fn score(&self, weights: &LoadWeights) -> f64 {
        let c = |x: f64| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
        weights.cpu * c(self.cpu)
            + weights.error_rate * c(self.error_rate)
            + weights.queue_depth * c(self.queue_depth)
            + weights.contention * c(self.contention)
    }
}

/// What the adaptive controller reacts to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AdaptiveMode {
    /// The handler's time per batch against a target.
    Latency {
        /// The handler time to aim for.
        target: Duration,
    },
    /// Load feedback reported by the handler, weighted into a score.
    Load {
        /// How the four figures combine.
        weights: LoadWeights,
        /// The controller changes the size at most once per interval.
        interval: Duration,
    },
}

/// Adaptive batch sizing: a controller that moves the effective maximum
/// batch size (and the [`Linger::Adaptive`](crate::Linger::Adaptive) linger) within `[min, max]`.
///
/// In latency mode, after each batch: shrink by `shrink_by` when the handler
/// took more than `shrink_above` × target, grow by `grow_by` when it took less
/// than `grow_below` × target (defaults 1.2, 0.8, 10 %, 10 %). In load mode, at
/// most once per interval: grow when the score of the latest feedback is under
/// `grow_below`, shrink when it is over `shrink_above` (defaults 0.3, 0.7, 10 %).
///
/// ```
/// use std::time::Duration;
/// use ringbatch::Adaptive;
///
/// let latency = Adaptive::latency(Duration::from_millis(2)).bounds(8, 512);
/// let load = Adaptive::load().bounds(16, 1024).steps(0.2, 0.2);
/// # let _ = (latency, load);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Adaptive {
    /// What drives the controller.
    pub mode: AdaptiveMode,
    /// The smallest effective size (default 1).
    pub min: usize,
    /// The largest effective size; `None` means `max_batch`.
    pub max: Option<usize>,
    /// Grow below this (latency: ratio to target; load: score).
    pub grow_below: f64,
    /// Shrink above this (latency: ratio to target; load: score).
    pub shrink_above: f64,
    /// Growth factor per step (0.1 grows by 10 %).
    pub grow_by: f64,
    /// Shrink factor per step (0.1 shrinks by 10 %).
    pub shrink_by: f64,
}

impl Adaptive {
    /// Latency mode, aiming the handler's time per batch at `target`.
    pub fn latency(target: Duration) -> Self {
        Self {
            mode: AdaptiveMode::Latency { target },
            min: 1,
            max: None,
            grow_below: 0.8,
            shrink_above: 1.2,
            grow_by: 0.1,
            shrink_by: 0.1,
        }
    }

    /// Load mode, with the default weights and a 100 ms check interval.
    pub fn load() -> Self {
        Self {
            mode: AdaptiveMode::Load {
                weights: LoadWeights::default(),
                interval: Duration::from_millis(100),
            },
            min: 1,
            max: None,
            grow_below: 0.3,
            shrink_above: 0.7,
            grow_by: 0.1,
            shrink_by: 0.1,
        }
    }

    /// The range the effective size moves in.
    pub fn bounds(mut self, min: usize, max: usize) -> Self {
        self.min = min;
        self.max = Some(max);
        self
    }

    /// The thresholds: grow below `grow_below`, shrink above `shrink_above`.
    pub fn thresholds(mut self, grow_below: f64, shrink_above: f64) -> Self {
        self.grow_below = grow_below;
        self.shrink_above = shrink_above;
        self
    }

    /// The step factors.
    pub fn steps(mut self, grow_by: f64, shrink_by: f64) -> Self {
        self.grow_by = grow_by;
        self.shrink_by = shrink_by;
        self
    }

    /// Load mode's weights (ignored in latency mode).
    pub fn weights(mut self, weights: LoadWeights) -> Self {
        if let AdaptiveMode::Load { interval, .. } = self.mode {
            self.mode = AdaptiveMode::Load { weights, interval };
        }
        self
    }

    /// Load mode's check interval (ignored in latency mode).
    pub fn check_interval(mut self, interval: Duration) -> Self {
        if let AdaptiveMode::Load { weights, .. } = self.mode {
            self.mode = AdaptiveMode::Load { weights, interval };
        }
        self
    }

    pub(crate) fn validate(&self, max_batch: usize) -> Result<(), ConfigError> {
        let invalid = |reason| {
            Err(ConfigError::Invalid {
                field: "adaptive",
                reason,
            })
        };
        if self.min == 0 {
            return invalid("min must be at least 1");
        }
        let max = self.max.unwrap_or(max_batch);
        if max > max_batch {
            return invalid("max must not exceed max_batch");
        }
        if self.min > max {
            return invalid("min must not exceed max");
        }
        let fraction = |x: f64| x.is_finite() && x > 0.0 && x < 1.0;
        if !fraction(self.grow_by) || !fraction(self.shrink_by) {
            return invalid("grow_by and shrink_by must be between 0 and 1 (exclusive)");
        }
        if !(self.grow_below.is_finite()
            && self.shrink_above.is_finite()
            && self.grow_below >= 0.0
            && self.grow_below < self.shrink_above)
        {
            return invalid("grow_below must be at least 0 and below shrink_above");
        }
        match self.mode {
            AdaptiveMode::Latency { target } if target.is_zero() => {
                invalid("the latency target must be above zero")
            }
            AdaptiveMode::Latency { target } if target > crate::MAX_DURATION => {
                crate::config::duration_at_most_max("adaptive", target)
            }
            AdaptiveMode::Load { interval, .. } if interval > crate::MAX_DURATION => {
                crate::config::duration_at_most_max("adaptive", interval)
            }
            AdaptiveMode::Load { weights, .. }
                if [
                    weights.cpu,
                    weights.error_rate,
                    weights.queue_depth,
                    weights.contention,
                ]
                .iter()
                .any(|w| !w.is_finite() || *w < 0.0) =>
            {
                invalid("load weights must be finite and not negative")
            }
            _ => Ok(()),
        }
    }
}

/// The adaptive controller. Shared by the drainer (sync handler) and the
/// async workers, which report each batch's handler time and feedback.
#[derive(Debug)]
pub(crate) struct Controller {
    pub(crate) settings: Adaptive,
    pub(crate) max: usize,
    /// The effective size as a real number, so that 10 % steps of small
    /// sizes accumulate.
    pub(crate) size: f64,
    pub(crate) last_change: Option<Instant>,
    /// The latest feedback not acted on yet (load mode).
    pub(crate) feedback: Option<LoadFeedback>,
}

impl Controller {
    pub(crate) fn new(settings: Adaptive, max_batch: usize) -> Self {
        let max = settings.max.unwrap_or(max_batch);
        Self {
            settings,
            max,
            size: max as f64,
            last_change: None,
            feedback: None,
        }
    }

    /// The effective size now.
    pub(crate) fn size(&self) -> usize {
        (self.size.round() as usize).clamp(self.settings.min, self.max)
    }

    /// The largest effective size.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// New bounds (a live setting); returns the effective size within them.
    pub(crate) fn set_bounds(&mut self, min: Option<usize>, max: Option<usize>) -> usize {
        if let Some(max) = max {
            self.max = max;
        }
        if let Some(min) = min {
            self.settings.min = min;
        }
        self.settings.min = self.settings.min.min(self.max);
        self.size = self.size.clamp(self.settings.min as f64, self.max as f64);
        self.size()
    }

    /// Takes one batch's handler time and feedback; returns the new size.
    pub(crate) fn observe(
        &mut self,
        handler_time: Duration,
        feedback: Option<LoadFeedback>,
        now: Instant,
    ) -> usize {
        let s = &self.settings;
        let grow = 1.0 + s.grow_by;
        let shrink = 1.0 - s.shrink_by;
        match s.mode {
            AdaptiveMode::Latency { target } => {
                let ratio = handler_time.as_secs_f64() / target.as_secs_f64();
                if ratio > s.shrink_above {
                    self.size *= shrink;
                } else if ratio < s.grow_below {
                    // At least one item more, so that small sizes can grow.
                    self.size = (self.size * grow).max(self.size + 1.0);
                }
            }
            AdaptiveMode::Load { weights, interval } => {
                if feedback.is_some() {
                    self.feedback = feedback;
                }
                let due = self
                    .last_change
                    .is_none_or(|last| now.saturating_duration_since(last) >= interval);
                if let Some(feedback) = self.feedback.take_if(|_| due) {
                    let score = feedback.score(&weights);
                    if score < s.grow_below {
                        self.size = (self.size * grow).max(self.size + 1.0);
                    } else if score > s.shrink_above {
                        self.size *= shrink;
                    }
                    self.last_change = Some(now);
                }
            }
        }
        self.size = self.size.clamp(self.settings.min as f64, self.max as f64);
        self.size()
    }
}
