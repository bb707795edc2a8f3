//! The public shaping settings: linger, priority classes, oversize items
//! and per-group limits.

use std::hash::Hash;
use std::time::Duration;

/// A numeric priority level above [`Priority::MAX_LEVEL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriorityLevelError {
    /// The level given.
    pub level: u8,
}

impl core::fmt::Display for PriorityLevelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "priority level {} is out of range: levels run from 0 to {}",
            self.level,
            Priority::MAX_LEVEL
        )
    }
}

impl std::error::Error for PriorityLevelError {}

impl TryFrom<u8> for Priority {
    type Error = PriorityLevelError;

    fn try_from(level: u8) -> Result<Self, Self::Error> {
        Priority::from_level(level)
    }
}

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
    /// [`Adaptive`](crate::Adaptive) controller is set).
    Adaptive {
        /// The longest linger.
        target: Duration,
    },
}

/// A priority class. With [`BatcherBuilder::priorities`](crate::BatcherBuilder::priorities)
/// each lane has one ring per class. A producer submits in its own class
/// ([`Batcher::producer_with_priority`](crate::Batcher::producer_with_priority)),
/// or item by item in any
/// ([`Producer::submit_with_priority`](crate::Producer::submit_with_priority));
/// within a class, each producer's items keep their order.
///
/// Numeric levels from 0 to 10 map onto the classes
/// ([`Priority::from_level`], or `Priority::try_from(level)`):
///
/// | level | class | dispatched |
/// | --- | --- | --- |
/// | 8 to 10 | `Critical` | at once, never lingering |
/// | 6, 7 | `High` | before `Normal` and `Low` |
/// | 3 to 5 | `Normal` | in turn |
/// | 0 to 2 | `Low` | last, unless older than the starvation age |
///
/// ```
/// use ringbatch::Priority;
///
/// assert_eq!(Priority::from_level(8), Ok(Priority::Critical));
/// assert_eq!(Priority::from_level(5), Ok(Priority::Normal));
/// assert!(Priority::from_level(11).is_err());
/// ```
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

    /// The highest numeric level.
    pub const MAX_LEVEL: u8 = 10;

    /// The class of numeric level `level` (see the table above); levels 8
    /// and above are `Critical`, dispatched at once.
    ///
    /// # Errors
    ///
    /// [`PriorityLevelError`] for a level above [`MAX_LEVEL`](Self::MAX_LEVEL).
    pub fn from_level(level: u8) -> Result<Priority, PriorityLevelError> {
        match level {
            0..=2 => Ok(Priority::Low),
            3..=5 => Ok(Priority::Normal),
            6..=7 => Ok(Priority::High),
            8..=Self::MAX_LEVEL => Ok(Priority::Critical),
            _ => Err(PriorityLevelError { level }),
        }
    }

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
    /// Its ticket fails with [`Error::TooLarge`](crate::Error::TooLarge) and it is counted in
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
#[non_exhaustive]
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
    pub(crate) fn max_items(&self, max: usize) -> usize {
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
