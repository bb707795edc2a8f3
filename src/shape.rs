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
//!   completed with [`Error::Superseded`];
//! - deadlines and a maximum age: expired items never reach the handler, their
//!   tickets fail with [`Error::Expired`];
//! - adaptive sizing ([`Adaptive`]): a controller moves the effective batch
//!   size (and the adaptive linger) from handler latency or load feedback.

use core::fmt;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc as StdArc;
use std::time::{Duration, Instant};

use crate::config::ConfigError;
use crate::error::{Callback, CallbackPanic, Error, PanicMessage};
use crate::pool::{BatchBuf, Origin};
use crate::stats::{ContainedPanics, DispatchReason};
use crate::sync::{AtomicU64, Ordering};

/// An expiry stamp that never expires.
pub(crate) const NEVER: u64 = u64::MAX;

/// How long a batch may wait for more items before it is dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Linger {
    /// Natural batching (the default): dispatch as soon as a sweep over the
    /// lanes finds nothing new.
    #[default]
    None,
    /// Wait up to this long, measured from the batch's oldest item, for a
    /// fuller batch.
    Fixed(Duration),
    /// Wait up to a linger that the adaptive controller moves with the batch
    /// size: `target × effective size / adaptive maximum` (`target` when no
    /// [`Adaptive`] controller is set).
    Adaptive {
        /// The longest linger.
        target: Duration,
    },
}

/// A priority class. With [`BatcherBuilder::priorities`](crate::BatcherBuilder::priorities)
/// each lane has one ring per class; a producer is bound to one class
/// ([`Batcher::producer_with_priority`](crate::Batcher::producer_with_priority)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Priority {
    /// Dispatched at once, never lingering.
    Critical,
    /// Taken before Normal and Low.
    High,
    /// The class of plain producers (the default).
    #[default]
    Normal,
    /// Taken last, unless it has waited longer than the starvation age.
    Low,
}

impl Priority {
    /// Every class, highest first.
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// The class's rank: 0 for Critical up to 3 for Low.
    pub fn index(self) -> usize {
        match self {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Normal => 2,
            Priority::Low => 3,
        }
    }
}

/// What happens to an item heavier than `max_bytes` on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Oversize {
    /// Its ticket fails with [`Error::TooLarge`] and it is counted in
    /// [`Stats::too_large`](crate::Stats::too_large) (the default).
    #[default]
    Fail,
    /// It travels alone, in a batch of one.
    Alone,
}

/// How large one key group's batches may grow.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum GroupSize {
    /// The batcher's effective maximum (the default).
    #[default]
    Max,
    /// At most this many items (and never above the effective maximum).
    Items(usize),
    /// This share of the effective maximum, rounded up (0.25 for a quarter).
    Share(f64),
}

/// One key group's limits, from [`BatcherBuilder::group_limits`](crate::BatcherBuilder::group_limits).
///
/// ```
/// use std::time::Duration;
/// use ringbatch::GroupLimits;
///
/// // A quarter of the maximum batch, lingering up to 2 ms.
/// let adds = GroupLimits::share(0.25).with_linger(Duration::from_millis(2));
/// // Dispatched as soon as the drainer sees it.
/// let pubsub = GroupLimits::immediate();
/// # let _ = (adds, pubsub);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GroupLimits {
    /// The group's batch size limit.
    pub size: GroupSize,
    /// The group's linger; `None` follows the batcher's [`Linger`].
    pub linger: Option<Duration>,
    /// Dispatch the group as soon as the drainer has it, never lingering.
    pub immediate: bool,
}

impl GroupLimits {
    /// At most `items` per batch.
    pub fn items(items: usize) -> Self {
        Self {
            size: GroupSize::Items(items),
            ..Self::default()
        }
    }

    /// At most `share` of the effective maximum per batch (rounded up).
    pub fn share(share: f64) -> Self {
        Self {
            size: GroupSize::Share(share),
            ..Self::default()
        }
    }

    /// Dispatched at once.
    pub fn immediate() -> Self {
        Self {
            immediate: true,
            ..Self::default()
        }
    }

    /// The same limits with the group's own linger.
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = Some(linger);
        self
    }

    /// The item limit against `max`, at least 1 and at most `max`.
    fn max_items(&self, max: usize) -> usize {
        let limit = match self.size {
            GroupSize::Max => max,
            GroupSize::Items(n) => n,
            GroupSize::Share(share) if share.is_finite() && share > 0.0 => {
                (max as f64 * share).ceil() as usize
            }
            GroupSize::Share(_) => max,
        };
        limit.clamp(1, max.max(1))
    }
}

/// Load feedback a handler reports for a batch ([`Batch::report_load`](crate::Batch::report_load)):
/// each figure from 0 (idle) to 1 (saturated).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoadFeedback {
    /// The sink's CPU load.
    pub cpu: f64,
    /// The share of recent requests that failed.
    pub error_rate: f64,
    /// How full the sink's own queue is.
    pub queue_depth: f64,
    /// Lock or resource contention in the sink.
    pub contention: f64,
}

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
/// batch size (and the [`Linger::Adaptive`] linger) within `[min, max]`.
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

    fn validate(&self, max_batch: usize) -> Result<(), ConfigError> {
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
    settings: Adaptive,
    max: usize,
    /// The effective size as a real number, so that 10 % steps of small
    /// sizes accumulate.
    size: f64,
    last_change: Option<Instant>,
    /// The latest feedback not acted on yet (load mode).
    feedback: Option<LoadFeedback>,
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

/// A key function made object-safe: a hash to look keys up by, and an
/// equality check so that two keys with the same hash are never merged.
pub(crate) struct KeyPolicy<T> {
    hash: Box<dyn Fn(&T) -> u64 + Send>,
    eq: KeyEq<T>,
}

type KeyEq<T> = Box<dyn Fn(&T, &T) -> bool + Send>;

impl<T: 'static> KeyPolicy<T> {
    pub(crate) fn new<K, F>(key: F) -> Self
    where
        K: Hash + Eq,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        let key = StdArc::new(key);
        let for_eq = StdArc::clone(&key);
        Self {
            hash: Box::new(move |item| {
                let mut hasher = KeyHasher::default();
                key(item).hash(&mut hasher);
                hasher.finish()
            }),
            eq: Box::new(move |a, b| for_eq(a) == for_eq(b)),
        }
    }
}

impl<T> KeyPolicy<T> {
    /// The hash of `item`'s key; `Err` if the key function panicked
    /// (contained).
    fn key_hash(&self, item: &T) -> Result<u64, PanicMessage> {
        crate::contain::call(|| (self.hash)(item))
    }

    /// Whether `a` and `b` have the same key; `Err` if the key function
    /// panicked (contained).
    fn same_key(&self, a: &T, b: &T) -> Result<bool, PanicMessage> {
        crate::contain::call(|| (self.eq)(a, b))
    }
}

/// A fast, non-cryptographic hasher for keys (multiply-rotate per word, a
/// final mix): keys come from the user's own items, and two keys with one
/// hash are still told apart by the key's equality, so a collision costs
/// an early dispatch, never a wrong merge.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

impl KeyHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(MIX);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let h = self.0;
        (h ^ (h >> 29)).wrapping_mul(MIX) ^ (h >> 32)
    }
}

/// Maps already-hashed keys: the hash is the key.
#[derive(Default, Clone, Copy)]
pub(crate) struct PreHashed(u64);

impl Hasher for PreHashed {
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys are hashed");
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type HashIndex = HashMap<u64, usize, std::hash::BuildHasherDefault<PreHashed>>;

impl<T> fmt::Debug for KeyPolicy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyPolicy(..)")
    }
}

type Weigher<T> = Box<dyn Fn(&T) -> usize + Send>;
type LimitsFn<T> = Box<dyn Fn(&T) -> GroupLimits + Send>;

/// The shaping settings, collected by the builder.
pub(crate) struct Shaping<T> {
    pub(crate) max_bytes: Option<usize>,
    pub(crate) weigher: Option<Weigher<T>>,
    pub(crate) oversize: Oversize,
    pub(crate) linger: Linger,
    pub(crate) min_interval: Option<Duration>,
    pub(crate) priorities: bool,
    pub(crate) starvation_age: Duration,
    pub(crate) group: Option<KeyPolicy<T>>,
    pub(crate) group_limits: Option<LimitsFn<T>>,
    pub(crate) max_open_groups: usize,
    pub(crate) conflate: Option<KeyPolicy<T>>,
    pub(crate) max_age: Option<Duration>,
    pub(crate) deadlines: bool,
    pub(crate) adaptive: Option<Adaptive>,
    /// Items the staging area holds; `None` means four batches' worth.
    pub(crate) staging: Option<usize>,
}

/// The default byte limit once a weigher is set.
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;

/// The largest byte limit: [`Error::TooLarge`] carries it as a `u32`, which
/// keeps [`Error`] two words wide.
const MAX_BYTES_LIMIT: usize = u32::MAX as usize;
/// The default bound on open key groups.
pub const DEFAULT_MAX_OPEN_GROUPS: usize = 64;
/// The default starvation age of lower priority classes.
pub const DEFAULT_STARVATION_AGE: Duration = Duration::from_millis(10);

impl<T> Default for Shaping<T> {
    fn default() -> Self {
        Self {
            max_bytes: None,
            weigher: None,
            oversize: Oversize::Fail,
            linger: Linger::None,
            min_interval: None,
            priorities: false,
            starvation_age: DEFAULT_STARVATION_AGE,
            group: None,
            group_limits: None,
            max_open_groups: DEFAULT_MAX_OPEN_GROUPS,
            conflate: None,
            max_age: None,
            deadlines: false,
            adaptive: None,
            staging: None,
        }
    }
}

impl<T> fmt::Debug for Shaping<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shaping")
            .field("max_bytes", &self.max_bytes)
            .field("weigher", &self.weigher.is_some())
            .field("oversize", &self.oversize)
            .field("linger", &self.linger)
            .field("min_interval", &self.min_interval)
            .field("priorities", &self.priorities)
            .field("starvation_age", &self.starvation_age)
            .field("group_by", &self.group.is_some())
            .field("max_open_groups", &self.max_open_groups)
            .field("conflate_by", &self.conflate.is_some())
            .field("max_age", &self.max_age)
            .field("deadlines", &self.deadlines)
            .field("adaptive", &self.adaptive)
            .field("staging", &self.staging)
            .finish()
    }
}

impl<T> Shaping<T> {
    /// Whether any policy asks for the staging drainer.
    pub(crate) fn is_active(&self) -> bool {
        self.max_bytes.is_some()
            || self.weigher.is_some()
            || self.linger != Linger::None
            || self.min_interval.is_some()
            || self.priorities
            || self.group.is_some()
            || self.conflate.is_some()
            || self.max_age.is_some()
            || self.deadlines
            || self.adaptive.is_some()
    }

    /// Priority classes (rings per lane).
    pub(crate) fn classes(&self) -> usize {
        if self.priorities { 4 } else { 1 }
    }

    /// Whether producers stamp each item's expiry.
    pub(crate) fn stamps_expiry(&self) -> bool {
        self.deadlines || self.max_age.is_some()
    }

    /// Checks the settings against `max_batch`; fills in defaults.
    pub(crate) fn validate(&mut self, max_batch: usize) -> Result<(), ConfigError> {
        if self.weigher.is_some() && self.max_bytes.is_none() {
            self.max_bytes = Some(DEFAULT_MAX_BYTES);
        }
        if self.max_bytes == Some(0) {
            return Err(ConfigError::Zero { field: "max_bytes" });
        }
        if let Some(limit) = self.max_bytes.filter(|&limit| limit > MAX_BYTES_LIMIT) {
            return Err(ConfigError::TooLarge {
                field: "max_bytes",
                value: limit,
                max: MAX_BYTES_LIMIT,
            });
        }
        if self.max_bytes.is_some() && self.weigher.is_none() {
            return Err(ConfigError::Invalid {
                field: "max_bytes",
                reason: "a byte limit needs a weigher (`weigher`) to measure items",
            });
        }
        if self.max_open_groups == 0 {
            return Err(ConfigError::Zero {
                field: "max_open_groups",
            });
        }
        if self.max_open_groups > 1 << 16 {
            return Err(ConfigError::TooLarge {
                field: "max_open_groups",
                value: self.max_open_groups,
                max: 1 << 16,
            });
        }
        if self.group_limits.is_some() && self.group.is_none() {
            return Err(ConfigError::Invalid {
                field: "group_limits",
                reason: "group limits need key groups (`group_by`)",
            });
        }
        if self.max_age == Some(Duration::ZERO) {
            return Err(ConfigError::Zero { field: "max_age" });
        }
        // Every duration within `MAX_DURATION`, so that no deadline made
        // from one overflows the clock.
        let long = crate::config::duration_at_most_max;
        match self.linger {
            Linger::None => {}
            Linger::Fixed(linger) => long("linger", linger)?,
            Linger::Adaptive { target } => long("linger", target)?,
        }
        if let Some(interval) = self.min_interval {
            long("min_interval", interval)?;
        }
        long("starvation_age", self.starvation_age)?;
        if let Some(age) = self.max_age {
            long("max_age", age)?;
        }
        if let Some(staging) = self.staging {
            if staging < max_batch {
                return Err(ConfigError::Invalid {
                    field: "staging",
                    reason: "the staging area must hold at least max_batch items",
                });
            }
            if staging > crate::MAX_CAPACITY {
                return Err(ConfigError::TooLarge {
                    field: "staging",
                    value: staging,
                    max: crate::MAX_CAPACITY,
                });
            }
        }
        if let Some(adaptive) = &self.adaptive {
            adaptive.validate(max_batch)?;
        }
        Ok(())
    }
}

/// Per-item expiry stamps of one ring, written by producers before they
/// publish the slot (their Release stamp store carries it to the drainer,
/// whose Acquire load of the stamp precedes its read here).
pub(crate) struct ExpiryStamps {
    stamps: Box<[AtomicU64]>,
    mask: usize,
    epoch: Instant,
    max_age_ns: u64,
}

impl ExpiryStamps {
    pub(crate) fn new(capacity: usize, epoch: Instant, max_age: Option<Duration>) -> Self {
        Self {
            stamps: (0..capacity).map(|_| AtomicU64::new(NEVER)).collect(),
            mask: capacity - 1,
            epoch,
            max_age_ns: max_age.map_or(NEVER, duration_ns),
        }
    }

    /// Producer side: stamps sequence `seq` with the earlier of `explicit`
    /// and now + the maximum age.
    #[inline]
    pub(crate) fn stamp(&self, seq: usize, explicit: u64) {
        let mut expires = explicit;
        if self.max_age_ns != NEVER {
            expires = expires.min(self.now_ns().saturating_add(self.max_age_ns));
        }
        // Relaxed: published by the producer's Release stamp store that
        // follows (see the type's documentation).
        self.stamps[seq & self.mask].store(expires, Ordering::Relaxed);
    }

    /// Drainer side: the expiry of sequence `seq`, after its Acquire load of
    /// the slot's stamp.
    #[inline]
    pub(crate) fn get(&self, seq: usize) -> u64 {
        // Relaxed: ordered by the drainer's Acquire load of the slot stamp.
        self.stamps[seq & self.mask].load(Ordering::Relaxed)
    }

    /// Nanoseconds since the batcher's epoch.
    pub(crate) fn now_ns(&self) -> u64 {
        duration_ns(self.epoch.elapsed())
    }

    /// `deadline` as nanoseconds since the epoch (0 if it has passed the
    /// epoch already: expired).
    pub(crate) fn deadline_ns(&self, deadline: Instant) -> u64 {
        duration_ns(deadline.saturating_duration_since(self.epoch)).min(NEVER - 1)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.stamps.len() * core::mem::size_of::<AtomicU64>()
    }
}

/// Nanoseconds in `d`, saturating.
pub(crate) fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NEVER - 1)
}

/// An item in the staging area.
struct Staged<T> {
    item: T,
    origin: Origin,
    class: u8,
    /// Drainer time (ns since the epoch) when the drainer took it.
    arrived: u64,
    /// A time it is known to have been published after: the last time the
    /// drainer found its lane caught up, or woke (histograms).
    since: u64,
    /// The order the drainer took items in (breaks ties between items
    /// taken in one sweep).
    order: u64,
    /// Expiry (ns since the epoch), or [`NEVER`].
    expires: u64,
    weight: usize,
}

/// A slab entry: a staged item and the next entry of its group's list.
struct Entry<T> {
    staged: Option<Staged<T>>,
    next: u32,
}

const NIL: u32 = u32::MAX;

/// One FIFO list of staged items: a priority class, or a key group.
#[derive(Debug, Clone, Copy)]
struct Group {
    /// The key's hash mixed with the class (key groups only).
    key: u64,
    class: u8,
    head: u32,
    tail: u32,
    len: usize,
    bytes: usize,
    /// The limits of a key group (from its first item).
    limits: GroupLimits,
    /// Whether a key group is open (holds items).
    open: bool,
}

impl Group {
    fn empty(class: u8) -> Self {
        Self {
            key: 0,
            class,
            head: NIL,
            tail: NIL,
            len: 0,
            bytes: 0,
            limits: GroupLimits::default(),
            open: false,
        }
    }
}

/// Counts kept by the assembler (published with the drainer's tally).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ShapeTally {
    pub(crate) expired: u64,
    pub(crate) superseded: u64,
    pub(crate) too_large: u64,
}

/// Why the assembler is asked for a batch regardless of its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Force {
    /// Follow the rules.
    No,
    /// Dispatch everything staged (flush, `flush_now`, shutdown).
    All(DispatchReason),
}

/// The staging area and the rules that turn it into batches.
pub(crate) struct Assembler<T> {
    policy: Shaping<T>,
    epoch: Instant,
    classes: usize,
    /// Items taken from the lanes, not yet routed to a group.
    intake: VecDeque<Staged<T>>,
    slab: Vec<Entry<T>>,
    free: Vec<u32>,
    /// Ungrouped: one list per class. Grouped: the key group slots.
    groups: Vec<Group>,
    /// Grouped: open groups by key, and the free group slots.
    index: HashIndex,
    free_groups: Vec<usize>,
    /// Conflation: key hash to position in the batch being filled.
    positions: HashIndex,
    /// Items in the slab, and their weight.
    staged: usize,
    staged_bytes: usize,
    capacity: usize,
    last_dispatch: Option<u64>,
    /// Items taken so far (their `order`).
    taken: u64,
    pub(crate) tally: ShapeTally,
    /// Where contained panics of the callbacks and drops are counted.
    panics: StdArc<ContainedPanics>,
}

impl<T> fmt::Debug for Assembler<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Assembler")
            .field("policy", &self.policy)
            .field("staged", &self.staged)
            .field("intake", &self.intake.len())
            .finish()
    }
}

/// What the assembler decided.
struct Pick {
    reason: DispatchReason,
    /// A key group, or every class list (`None`).
    group: Option<usize>,
}

impl<T> Assembler<T> {
    pub(crate) fn new(
        policy: Shaping<T>,
        max_batch: usize,
        epoch: Instant,
        panics: StdArc<ContainedPanics>,
    ) -> Self {
        let classes = policy.classes();
        let capacity = policy.staging.unwrap_or(max_batch.saturating_mul(4));
        let grouped = policy.group.is_some();
        let group_slots = if grouped {
            policy.max_open_groups
        } else {
            classes
        };
        let groups = (0..group_slots)
            .map(|i| Group::empty(if grouped { 0 } else { i as u8 }))
            .collect();
        let conflating = policy.conflate.is_some();
        Self {
            epoch,
            classes,
            intake: VecDeque::with_capacity(capacity),
            slab: (0..capacity)
                .map(|_| Entry {
                    staged: None,
                    next: NIL,
                })
                .collect(),
            free: (0..capacity as u32).rev().collect(),
            groups,
            index: HashIndex::with_capacity_and_hasher(
                if grouped { group_slots } else { 0 },
                Default::default(),
            ),
            free_groups: if grouped {
                (0..group_slots).rev().collect()
            } else {
                Vec::new()
            },
            positions: HashIndex::with_capacity_and_hasher(
                if conflating { max_batch } else { 0 },
                Default::default(),
            ),
            staged: 0,
            staged_bytes: 0,
            capacity,
            last_dispatch: None,
            taken: 0,
            tally: ShapeTally::default(),
            panics,
            policy,
        }
    }

    /// Nanoseconds since the epoch.
    pub(crate) fn now_ns(&self, now: Instant) -> u64 {
        duration_ns(now.saturating_duration_since(self.epoch))
    }

    /// Items the drainer may still take from the lanes now.
    #[inline]
    pub(crate) fn room(&self) -> usize {
        self.capacity - self.staged - self.intake.len()
    }

    /// Items the drainer may take now from a ring of class `class`: the
    /// room, less a share kept for each lower class, so that a stream of
    /// higher-class items cannot keep lower classes out of the staging area
    /// (where their age counts).
    #[inline]
    pub(crate) fn room_for(&self, class: usize) -> usize {
        let lower = self.classes - 1 - class;
        let reserve = ((self.capacity / (4 * self.classes)).max(1) * lower).min(self.capacity / 2);
        self.room().saturating_sub(reserve)
    }

    /// Items staged or in the intake.
    pub(crate) fn len(&self) -> usize {
        self.staged + self.intake.len()
    }

    /// Bytes of the staging area, for the memory report.
    pub(crate) fn footprint(&self) -> usize {
        self.capacity * (core::mem::size_of::<Entry<T>>() + core::mem::size_of::<Staged<T>>())
            + self.groups.len() * core::mem::size_of::<Group>()
    }

    /// Drainer side, inside a lane run: takes one item (the caller keeps
    /// `room() > 0`).
    #[inline]
    pub(crate) fn take(
        &mut self,
        item: T,
        origin: Origin,
        class: usize,
        expires: u64,
        now: u64,
        since: u64,
    ) {
        debug_assert!(self.room() > 0);
        self.intake.push_back(Staged {
            item,
            origin,
            class: class as u8,
            arrived: now,
            since,
            order: {
                self.taken += 1;
                self.taken
            },
            expires,
            weight: 0,
        });
    }

    /// The linger for a group with `limits`, given the effective size.
    fn linger_ns(&self, limits: Option<&GroupLimits>, effective: usize, max: usize) -> Option<u64> {
        if let Some(linger) = limits.and_then(|l| l.linger) {
            return Some(duration_ns(linger));
        }
        match self.policy.linger {
            Linger::None => None,
            Linger::Fixed(d) => Some(duration_ns(d)),
            Linger::Adaptive { target } => {
                let scaled = target.as_nanos() as f64 * effective as f64 / max.max(1) as f64;
                Some(scaled as u64)
            }
        }
    }

    /// One decision: routes the intake, then fills `buf` with the next batch
    /// if one is due and returns why; `None` when nothing is due.
    ///
    /// `effective` is the current maximum batch size (the adaptive size),
    /// `adaptive_max` the largest it can be; `idle` says the last sweep found
    /// nothing new. Items that expire, are superseded or are too large are
    /// completed through `complete` and counted.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn next_batch(
        &mut self,
        buf: &mut BatchBuf<T>,
        now: u64,
        effective: usize,
        adaptive_max: usize,
        idle: bool,
        force: Force,
        complete: &mut dyn FnMut(Origin, Error),
    ) -> Option<DispatchReason> {
        debug_assert!(buf.is_empty());
        loop {
            let pick = match self.route(now, complete) {
                Some(group) => Some(Pick {
                    // No group slot is free for the next key (or its key's
                    // slot holds another key): make room.
                    reason: DispatchReason::Full,
                    group: Some(group),
                }),
                None => self.pick(now, effective, adaptive_max, idle, force),
            };
            let pick = pick?;
            self.fill(buf, pick.group, now, effective, complete);
            if !buf.is_empty() {
                self.last_dispatch = Some(now);
                return Some(pick.reason);
            }
            // Everything picked had expired or was superseded: look again.
        }
    }

    /// Moves the intake into the groups. Returns a group to dispatch when
    /// the next item needs a group slot and none is free.
    fn route(&mut self, now: u64, complete: &mut dyn FnMut(Origin, Error)) -> Option<usize> {
        while let Some(mut staged) = self.intake.pop_front() {
            if staged.expires <= now {
                self.expire(staged, complete);
                continue;
            }
            if let (Some(limit), Some(weigher)) = (self.policy.max_bytes, &self.policy.weigher) {
                staged.weight = match crate::contain::call(|| weigher(&staged.item)) {
                    Ok(weight) => weight,
                    Err(message) => {
                        self.panicked(staged, Callback::Weigher, &message, complete);
                        continue;
                    }
                };
                if staged.weight > limit && self.policy.oversize == Oversize::Fail {
                    self.tally.too_large += 1;
                    complete(
                        staged.origin,
                        Error::TooLarge {
                            // Saturates, as `Error::TooLarge` documents.
                            weight: u32::try_from(staged.weight).unwrap_or(u32::MAX),
                            // `validate` refuses limits above `u32::MAX`.
                            limit: u32::try_from(limit).unwrap_or(u32::MAX),
                        },
                    );
                    self.drop_item(staged.item);
                    continue;
                }
            }
            let group = match &self.policy.group {
                None => staged.class as usize,
                Some(keys) => {
                    let key = match keys.key_hash(&staged.item) {
                        Ok(hash) => hash ^ (u64::from(staged.class) << 61),
                        Err(message) => {
                            self.panicked(staged, Callback::GroupBy, &message, complete);
                            continue;
                        }
                    };
                    match self.index.get(&key).copied() {
                        Some(g) => {
                            let head = self.groups[g].head as usize;
                            let same = match &self.slab[head].staged {
                                Some(h) => keys.same_key(&h.item, &staged.item),
                                None => Ok(false),
                            };
                            match same {
                                Ok(true) => g,
                                Ok(false) => {
                                    // Two keys with one hash: dispatch the
                                    // group in the way first.
                                    self.intake.push_front(staged);
                                    return Some(g);
                                }
                                Err(message) => {
                                    self.panicked(staged, Callback::GroupBy, &message, complete);
                                    continue;
                                }
                            }
                        }
                        None => match self.free_groups.pop() {
                            Some(g) => {
                                let limits = match &self.policy.group_limits {
                                    None => Ok(GroupLimits::default()),
                                    Some(f) => crate::contain::call(|| f(&staged.item)),
                                };
                                let limits = match limits {
                                    Ok(limits) => limits,
                                    Err(message) => {
                                        self.free_groups.push(g);
                                        self.panicked(
                                            staged,
                                            Callback::GroupLimits,
                                            &message,
                                            complete,
                                        );
                                        continue;
                                    }
                                };
                                let group = &mut self.groups[g];
                                *group = Group::empty(staged.class);
                                group.key = key;
                                group.limits = limits;
                                group.open = true;
                                self.index.insert(key, g);
                                g
                            }
                            None => {
                                self.intake.push_front(staged);
                                return Some(self.oldest_group());
                            }
                        },
                    }
                }
            };
            self.append(group, staged);
        }
        None
    }

    /// A callback panicked on `staged` (contained): its ticket fails with
    /// [`Error::CallbackPanicked`] and the item is dropped.
    #[cold]
    #[inline(never)]
    fn panicked(
        &mut self,
        staged: Staged<T>,
        callback: Callback,
        message: &str,
        complete: &mut dyn FnMut(Origin, Error),
    ) {
        self.panics.callback();
        complete(
            staged.origin,
            Error::CallbackPanicked(CallbackPanic::new(callback, message)),
        );
        self.drop_item(staged.item);
    }

    /// Drops an item that leaves the staging area without reaching the
    /// handler, containing a panic of its `Drop` (counted).
    #[inline]
    fn drop_item(&self, item: T) {
        if !crate::contain::drop_value(item) {
            self.panics.drops(1);
        }
    }

    /// The open key group whose head is oldest.
    fn oldest_group(&self) -> usize {
        let mut best = None;
        for (g, group) in self.groups.iter().enumerate() {
            if group.len == 0 {
                continue;
            }
            let order = self.head_of(group).map_or(NEVER, |s| s.order);
            if best.is_none_or(|(_, o)| order < o) {
                best = Some((g, order));
            }
        }
        best.map_or(0, |(g, _)| g)
    }

    fn head_of(&self, group: &Group) -> Option<&Staged<T>> {
        if group.head == NIL {
            None
        } else {
            self.slab[group.head as usize].staged.as_ref()
        }
    }

    fn append(&mut self, g: usize, staged: Staged<T>) {
        let index = self
            .free
            .pop()
            .expect("the intake never holds more than the slab's free entries");
        let weight = staged.weight;
        self.slab[index as usize] = Entry {
            staged: Some(staged),
            next: NIL,
        };
        let group = &mut self.groups[g];
        if group.tail == NIL {
            group.head = index;
        } else {
            self.slab[group.tail as usize].next = index;
        }
        group.tail = index;
        group.len += 1;
        group.bytes += weight;
        self.staged += 1;
        self.staged_bytes += weight;
    }

    /// Removes the head of group `g`.
    fn pop(&mut self, g: usize) -> Option<Staged<T>> {
        let group = &mut self.groups[g];
        if group.head == NIL {
            return None;
        }
        let index = group.head;
        let entry = &mut self.slab[index as usize];
        let staged = entry.staged.take().expect("a listed entry holds an item");
        group.head = entry.next;
        if group.head == NIL {
            group.tail = NIL;
        }
        group.len -= 1;
        group.bytes -= staged.weight;
        self.staged -= 1;
        self.staged_bytes -= staged.weight;
        self.free.push(index);
        Some(staged)
    }

    fn expire(&mut self, staged: Staged<T>, complete: &mut dyn FnMut(Origin, Error)) {
        self.tally.expired += 1;
        complete(staged.origin, Error::Expired);
        self.drop_item(staged.item);
    }

    /// The earliest expiry among a group's items.
    fn earliest_expiry(&self, group: &Group) -> u64 {
        if !self.policy.stamps_expiry() {
            return NEVER;
        }
        let mut earliest = NEVER;
        let mut index = group.head;
        while index != NIL {
            let entry = &self.slab[index as usize];
            if let Some(s) = &entry.staged {
                earliest = earliest.min(s.expires);
            }
            index = entry.next;
        }
        earliest
    }

    /// Decides whether a batch is due, and from where.
    fn pick(
        &self,
        now: u64,
        effective: usize,
        adaptive_max: usize,
        idle: bool,
        force: Force,
    ) -> Option<Pick> {
        if self.staged == 0 {
            return None;
        }
        if self.policy.group.is_none() {
            return self.pick_classes(now, effective, adaptive_max, idle, force);
        }
        let mut best: Option<(Pick, (u8, u64))> = None;
        for (g, group) in self.groups.iter().enumerate() {
            if group.len == 0 {
                continue;
            }
            let Some(reason) = self.group_ready(group, now, effective, adaptive_max, idle, force)
            else {
                continue;
            };
            let (arrived, order) = self
                .head_of(group)
                .map_or((NEVER, NEVER), |s| (s.arrived, s.order));
            let starving = self.starving(group.class as usize, arrived, now);
            // Critical first, then starving classes, then by class, then age.
            let rank = if group.class == 0 || starving {
                0
            } else {
                group.class
            };
            let order = (rank, order);
            if best.as_ref().is_none_or(|(_, o)| order < *o) {
                best = Some((
                    Pick {
                        reason,
                        group: Some(g),
                    },
                    order,
                ));
            }
        }
        best.map(|(pick, _)| pick)
    }

    /// Whether a class-`class` item the drainer took at `arrived` has waited
    /// past the starvation age in the staging area (only classes below
    /// Critical starve). The age counts from the drainer taking the item,
    /// which the share of the staging area kept for lower classes makes
    /// prompt even under a stream of higher-class items.
    fn starving(&self, class: usize, arrived: u64, now: u64) -> bool {
        class > 0
            && self.classes > 1
            && arrived != NEVER
            && now.saturating_sub(arrived) >= duration_ns(self.policy.starvation_age)
    }

    /// The minimum interval holds dispatches back (not a Critical one).
    fn held_back(&self, now: u64) -> bool {
        match (self.policy.min_interval, self.last_dispatch) {
            (Some(interval), Some(last)) => now < last.saturating_add(duration_ns(interval)),
            _ => false,
        }
    }

    fn group_ready(
        &self,
        group: &Group,
        now: u64,
        effective: usize,
        adaptive_max: usize,
        idle: bool,
        force: Force,
    ) -> Option<DispatchReason> {
        if let Force::All(reason) = force {
            return Some(reason);
        }
        if group.class == 0 && self.classes > 1 {
            return Some(DispatchReason::Priority);
        }
        if group.limits.immediate {
            return Some(DispatchReason::Immediate);
        }
        if self.held_back(now) {
            return None;
        }
        let limit = group.limits.max_items(effective);
        self.ready(
            group.len >= limit,
            group.bytes,
            self.head_of(group).map_or(now, |s| s.arrived),
            || self.earliest_expiry(group),
            self.linger_ns(Some(&group.limits), effective, adaptive_max),
            now,
            idle,
        )
    }

    /// The common rules: full, bytes, deadline, linger, natural batching, a
    /// full staging area.
    #[allow(clippy::too_many_arguments)]
    fn ready(
        &self,
        full: bool,
        bytes: usize,
        oldest: u64,
        earliest_expiry: impl FnOnce() -> u64,
        linger: Option<u64>,
        now: u64,
        idle: bool,
    ) -> Option<DispatchReason> {
        if full {
            return Some(DispatchReason::Full);
        }
        if self.policy.max_bytes.is_some_and(|limit| bytes >= limit) {
            return Some(DispatchReason::Bytes);
        }
        match linger {
            None if idle => return Some(DispatchReason::LanesIdle),
            None => {}
            Some(linger) => {
                let due = oldest.saturating_add(linger);
                if now >= due {
                    return Some(DispatchReason::Linger);
                }
                // An item would expire before the linger ends: go now.
                if earliest_expiry() <= due {
                    return Some(DispatchReason::Deadline);
                }
            }
        }
        if self.room_for(0) == 0 {
            // The staging area is full (but for the share kept for lower
            // classes): make room.
            return Some(DispatchReason::Full);
        }
        None
    }

    fn pick_classes(
        &self,
        now: u64,
        effective: usize,
        adaptive_max: usize,
        idle: bool,
        force: Force,
    ) -> Option<Pick> {
        let pick = |reason| {
            Some(Pick {
                reason,
                group: None,
            })
        };
        if let Force::All(reason) = force {
            return pick(reason);
        }
        if self.classes > 1 && self.groups[0].len > 0 {
            return pick(DispatchReason::Priority);
        }
        if self.held_back(now) {
            return None;
        }
        let oldest = self
            .groups
            .iter()
            .filter_map(|g| self.head_of(g).map(|s| s.arrived))
            .min()
            .unwrap_or(now);
        let reason = self.ready(
            self.staged >= effective,
            self.staged_bytes,
            oldest,
            || {
                self.groups
                    .iter()
                    .map(|g| self.earliest_expiry(g))
                    .min()
                    .unwrap_or(NEVER)
            },
            self.linger_ns(None, effective, adaptive_max),
            now,
            idle,
        )?;
        pick(reason)
    }

    /// When the drainer must look again even if no item arrives: the
    /// earliest linger end, or the end of the minimum interval.
    pub(crate) fn next_due(&self, now: u64, effective: usize, adaptive_max: usize) -> Option<u64> {
        if self.staged == 0 {
            return None;
        }
        let mut due = NEVER;
        for group in &self.groups {
            if let Some(head) = self.head_of(group) {
                let limits = self.policy.group.as_ref().map(|_| &group.limits);
                if let Some(linger) = self.linger_ns(limits, effective, adaptive_max) {
                    due = due.min(head.arrived.saturating_add(linger));
                }
            }
        }
        if let (Some(interval), Some(last)) = (self.policy.min_interval, self.last_dispatch) {
            due = due.min(last.saturating_add(duration_ns(interval)).max(now));
        }
        (due != NEVER).then_some(due)
    }

    /// Fills `buf` from group `group` (a key group), or from the class lists
    /// in order: starving classes first, then by priority.
    fn fill(
        &mut self,
        buf: &mut BatchBuf<T>,
        group: Option<usize>,
        now: u64,
        effective: usize,
        complete: &mut dyn FnMut(Origin, Error),
    ) {
        self.positions.clear();
        let mut bytes = 0;
        match group {
            Some(g) => {
                let limit = self.groups[g].limits.max_items(effective);
                self.fill_from(buf, g, limit, &mut bytes, now, complete);
                if self.groups[g].len == 0 {
                    let key = self.groups[g].key;
                    self.index.remove(&key);
                    self.groups[g].open = false;
                    self.free_groups.push(g);
                }
            }
            None => {
                let limit = effective;
                let mut order = [0usize; 4];
                let mut n = 0;
                for class in 1..self.classes {
                    let arrived = self
                        .head_of(&self.groups[class])
                        .map_or(NEVER, |s| s.arrived);
                    if self.starving(class, arrived, now) {
                        order[n] = class;
                        n += 1;
                    }
                }
                // The longest-waiting starving class first.
                order[..n].sort_unstable_by_key(|&class| {
                    self.head_of(&self.groups[class]).map_or(NEVER, |s| s.order)
                });
                for class in 0..self.classes {
                    if !order[..n].contains(&class) {
                        order[n] = class;
                        n += 1;
                    }
                }
                for &class in &order[..n] {
                    if !self.fill_from(buf, class, limit, &mut bytes, now, complete) {
                        break;
                    }
                }
            }
        }
    }

    /// Moves items from group `g` into `buf` up to `limit` items and the
    /// byte limit, conflating and expiring on the way. Returns whether the
    /// batch has room for more (from another list).
    fn fill_from(
        &mut self,
        buf: &mut BatchBuf<T>,
        g: usize,
        limit: usize,
        bytes: &mut usize,
        now: u64,
        complete: &mut dyn FnMut(Origin, Error),
    ) -> bool {
        let max_bytes = self.policy.max_bytes;
        let limit = limit.min(buf.items.capacity());
        loop {
            let Some(head) = self.head_of(&self.groups[g]) else {
                return buf.len() < limit;
            };
            if head.expires <= now {
                let staged = self.pop(g).expect("a head exists");
                self.expire(staged, complete);
                continue;
            }
            // Conflation: the same key earlier in this batch is replaced.
            let mut conflation_key = None;
            if let Some(keys) = &self.policy.conflate {
                let same = keys.key_hash(&head.item).and_then(|key| {
                    conflation_key = Some(key);
                    match self.positions.get(&key) {
                        Some(&pos) => keys
                            .same_key(&buf.items[pos], &head.item)
                            .map(|same| same.then_some(pos)),
                        None => Ok(None),
                    }
                });
                let pos = match same {
                    Ok(pos) => pos,
                    Err(message) => {
                        let staged = self.pop(g).expect("a head exists");
                        self.panicked(staged, Callback::ConflateBy, &message, complete);
                        continue;
                    }
                };
                if let Some(pos) = pos {
                    // The superseded item's weight stays counted: the byte
                    // total errs on the safe side.
                    if max_bytes.is_some_and(|max| *bytes + head.weight > max) {
                        return false;
                    }
                    let staged = self.pop(g).expect("a head exists");
                    *bytes += staged.weight;
                    let (old_item, old_origin) = buf.replace(pos, staged.item, staged.origin);
                    self.tally.superseded += 1;
                    complete(old_origin, Error::Superseded);
                    self.drop_item(old_item);
                    continue;
                }
            }
            if buf.len() >= limit {
                return false;
            }
            if let Some(max) = max_bytes {
                if head.weight > max {
                    // Travels alone (`Oversize::Alone`).
                    if buf.is_empty() {
                        let staged = self.pop(g).expect("a head exists");
                        buf.note_run(staged.since, 1);
                        buf.push(staged.item, staged.origin);
                    }
                    return false;
                }
                if *bytes + head.weight > max {
                    return false;
                }
            }
            let staged = self.pop(g).expect("a head exists");
            *bytes += staged.weight;
            if let Some(key) = conflation_key {
                self.positions.entry(key).or_insert(buf.len());
            }
            buf.note_run(staged.since, 1);
            buf.push(staged.item, staged.origin);
        }
    }

    /// Moves every staged item out, oldest first per list.
    pub(crate) fn take_all(&mut self, mut f: impl FnMut(T, Origin)) {
        while let Some(staged) = self.intake.pop_front() {
            f(staged.item, staged.origin);
        }
        for g in 0..self.groups.len() {
            while let Some(staged) = self.pop(g) {
                f(staged.item, staged.origin);
            }
            if self.policy.group.is_some() && self.groups[g].open {
                self.groups[g].open = false;
                self.free_groups.push(g);
            }
        }
        self.index.clear();
    }

    /// Replaces the linger (a live setting).
    pub(crate) fn set_linger(&mut self, linger: Linger) {
        self.policy.linger = linger;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
