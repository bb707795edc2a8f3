//! Validated configuration: every invalid value is a typed error naming the
//! field and the reason.

use core::fmt;

use crate::wait::WaitStrategy;

/// What a producer does when its lane is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backpressure {
    /// Wait for room, by the batcher's [`WaitStrategy`] (the default). Nothing
    /// is lost; the producer slows to the drainer's pace.
    #[default]
    Block,
    /// Return [`SubmitError::Full`](crate::SubmitError::Full) with the item.
    Reject,
    /// Drop the new item and count it in [`Stats::dropped`](crate::Stats::dropped);
    /// a submission's ticket resolves to [`Error::Dropped`](crate::Error::Dropped).
    DropNewest,
    /// Evict the lane's oldest queued item(s) to make room, then accept the
    /// new item (for telemetry, where fresh data matters most). An evicted
    /// item is counted in [`Stats::dropped`](crate::Stats::dropped) (and no
    /// longer in `accepted`), its ticket resolves to
    /// [`Error::Dropped`](crate::Error::Dropped), and it goes to the
    /// [`spill`](crate::BatcherBuilder::spill) callback if one is set. The
    /// eviction runs on the submitting thread, without a lock.
    ///
    /// Should every completion slot of the lane be held by an outstanding
    /// ticket, evicting cannot make room for a new ticket: the new item is
    /// dropped as under `DropNewest`.
    DropOldest,
    /// Raise the effective maximum batch size while a lane is full, then
    /// wait for room as under `Block`. Each batch the drainer hands over
    /// after a producer found its lane full raises the adaptive size by one
    /// growth step ([`Adaptive::grow_by`](crate::Adaptive::grow_by)), up to
    /// its maximum; each batch after which no producer did lowers it by one
    /// step again, until the steps taken this way are undone. Needs
    /// [`adaptive`](crate::BatcherBuilder::adaptive) sizing: `build`
    /// refuses it otherwise ([`ConfigError::Invalid`], field
    /// `"backpressure"`).
    IncreaseBatchSize,
}

/// How a new [`Producer`](crate::Producer) picks its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LaneAssignment {
    /// The lane of the core the creating thread runs on (`core % lanes`), or
    /// round-robin where the core cannot be read (the default). Create each
    /// producer on the thread that uses it.
    #[default]
    CurrentCore,
    /// Lanes in turn, one producer after another.
    RoundRobin,
}

/// How [`handler_threads`](crate::BatcherBuilder::handler_threads) spreads
/// batches over its threads, and so which order batches run in.
///
/// Whatever the routing, the items of one batch keep the order they were
/// taken in (per producer, the order of submission), and each batch runs
/// on one thread, one attempt after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ThreadRouting {
    /// Each batch goes to the first free thread (the default): up to `n`
    /// batches run at once, and nothing orders them. A later batch may
    /// finish before an earlier one, even of the same producer or key
    /// group. With one thread, batches run in dispatch order.
    #[default]
    AnyFree,
    /// Each thread has a queue of its own, and every batch of a key group
    /// goes to the same thread (`group_key_hash % n`), so a group's batches
    /// run one at a time, in dispatch order, retries included (a batch
    /// waiting to retry holds its thread). Groups on different threads run
    /// at once, in no order. Needs
    /// [`group_by`](crate::BatcherBuilder::group_by); a busy group's thread
    /// may queue batches while another thread is idle.
    ByGroup,
}

/// Most handler threads ([`handler_threads`](crate::BatcherBuilder::handler_threads)).
pub const MAX_HANDLER_THREADS: usize = 1 << 10;

/// Completion slots per lane when `result_slots` is not set and the lane
/// capacity is smaller: room for that many outstanding tickets per lane.
pub const DEFAULT_RESULT_SLOTS: usize = 1024;

/// Largest number of lanes.
pub const MAX_LANES: usize = 1 << 16;
/// Largest lane capacity and result-slot count per lane.
pub const MAX_CAPACITY: usize = 1 << 30;

/// Longest duration any setting takes (a linger, an age, a retry delay, a
/// breaker's recovery time...): 365 days. Longer values are refused with
/// [`ConfigError::TooLong`], so that no deadline the batcher computes from
/// one can overflow the clock. Durations given to calls (`push_timeout`,
/// `wait_timeout`, `shutdown_timeout`...) are not limited: one beyond what
/// the clock can represent means no deadline.
pub const MAX_DURATION: core::time::Duration = core::time::Duration::from_secs(365 * 24 * 60 * 60);

/// Refuses a duration setting above [`MAX_DURATION`].
pub(crate) fn duration_at_most_max(
    field: &'static str,
    value: core::time::Duration,
) -> Result<(), ConfigError> {
    if value > MAX_DURATION {
        Err(ConfigError::TooLong {
            field,
            value,
            max: MAX_DURATION,
        })
    } else {
        Ok(())
    }
}

/// The settings a batcher is built with; see [`BatcherBuilder`](crate::BatcherBuilder)
/// for what each means.
///
/// More settings may come, so a `Config` is not built with a struct
/// expression: start from [`Default`] and set fields, or use the builder's
/// methods, which set the same fields. [`Batcher::config`](crate::Batcher::config)
/// reads them back.
///
/// ```
/// use ringbatch::{Batch, Batcher, Config};
///
/// let mut config = Config::default();
/// config.capacity = 256;
/// config.max_batch = 64;
/// let batcher = Batcher::builder()
///     .config(config)
///     .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
///         batch.ok_with(|_| ());
///         Ok(())
///     })
///     .build()
///     .unwrap();
/// assert_eq!(batcher.config().capacity, 256);
/// assert_eq!(batcher.config().max_batch, 64);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Number of lanes; `None` means one per core.
    pub lanes: Option<usize>,
    /// Slots per lane ring (a power of two).
    pub capacity: usize,
    /// Most items in one batch (at most `capacity`).
    pub max_batch: usize,
    /// Batch buffers allocated at build time.
    pub pool_size: usize,
    /// Completion slots per lane (a power of two); `None` means `capacity`
    /// or [`DEFAULT_RESULT_SLOTS`], whichever is larger.
    pub result_slots: Option<usize>,
    /// How waiting threads wait.
    pub wait: WaitStrategy,
    /// What producers do when their lane is full.
    pub backpressure: Backpressure,
    /// Core to pin the drainer thread to.
    pub pin_drainer: Option<usize>,
    /// How producers pick lanes.
    pub lane_assignment: LaneAssignment,
    /// The drainer thread's name.
    pub thread_name: String,
    /// Most batches an async handler runs at once (default 4).
    pub max_in_flight: usize,
    /// Lanes laid out for exclusive producers (the last ones; default 0).
    pub exclusive_lanes: usize,
    /// The drainer spins briefly between short runs while items keep coming
    /// (default false).
    pub spin_between_short_runs: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            lanes: None,
            capacity: 1024,
            max_batch: 256,
            pool_size: 2,
            result_slots: None,
            wait: WaitStrategy::Backoff,
            backpressure: Backpressure::Block,
            pin_drainer: None,
            lane_assignment: LaneAssignment::CurrentCore,
            thread_name: "ringbatch-drainer".to_owned(),
            max_in_flight: 4,
            exclusive_lanes: 0,
            spin_between_short_runs: false,
        }
    }
}

impl Config {
    /// Checks every setting; the first invalid one is reported.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field and the reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(lanes) = self.lanes {
            nonzero("lanes", lanes)?;
            at_most("lanes", lanes, MAX_LANES)?;
        }
        power_of_two("capacity", self.capacity)?;
        nonzero("max_batch", self.max_batch)?;
        if self.max_batch > self.capacity {
            return Err(ConfigError::MaxBatchAboveCapacity {
                max_batch: self.max_batch,
                capacity: self.capacity,
            });
        }
        nonzero("pool_size", self.pool_size)?;
        at_most("pool_size", self.pool_size, 1 << 16)?;
        nonzero("max_in_flight", self.max_in_flight)?;
        at_most("max_in_flight", self.max_in_flight, 1 << 12)?;
        if let Some(slots) = self.result_slots {
            power_of_two("result_slots", slots)?;
        }
        if self.exclusive_lanes > 0 && self.exclusive_lanes >= self.lane_count() {
            return Err(ConfigError::Invalid {
                field: "exclusive_lanes",
                reason: "one lane stays open to shared producers: at most `lanes - 1`",
            });
        }
        if self.thread_name.contains('\0') {
            return Err(ConfigError::InvalidThreadName {
                name: self.thread_name.clone(),
            });
        }
        if let Some(core) = self.pin_drainer {
            let available = available_cores().ok_or(ConfigError::PinningUnsupported { core })?;
            if !available.contains(&core) {
                return Err(ConfigError::NoSuchCore { core, available });
            }
        }
        Ok(())
    }

    /// The lane count after defaults.
    pub(crate) fn lane_count(&self) -> usize {
        self.lanes.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(MAX_LANES)
        })
    }

    /// The completion slots per lane after defaults.
    pub(crate) fn result_slot_count(&self) -> usize {
        self.result_slots
            .unwrap_or(self.capacity.max(DEFAULT_RESULT_SLOTS))
    }
}

fn nonzero(field: &'static str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::Zero { field })
    } else {
        Ok(())
    }
}

fn at_most(field: &'static str, value: usize, max: usize) -> Result<(), ConfigError> {
    if value > max {
        Err(ConfigError::TooLarge { field, value, max })
    } else {
        Ok(())
    }
}

fn power_of_two(field: &'static str, value: usize) -> Result<(), ConfigError> {
    nonzero(field, value)?;
    if !value.is_power_of_two() {
        return Err(ConfigError::NotPowerOfTwo { field, value });
    }
    at_most(field, value, MAX_CAPACITY)
}

/// The ids of the cores this process may run on, if the platform says.
pub(crate) fn available_cores() -> Option<Vec<usize>> {
    core_affinity::get_core_ids().map(|ids| ids.into_iter().map(|c| c.id).collect())
}

/// Why a batcher could not be built, or a live setting not changed. Which
/// producers a batcher can make at a given moment is a [`LaneError`](crate::LaneError).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The field must not be zero.
    Zero {
        /// The setting.
        field: &'static str,
    },
    /// The field must be a power of two.
    NotPowerOfTwo {
        /// The setting.
        field: &'static str,
        /// The value given.
        value: usize,
    },
    /// The field is above its maximum.
    TooLarge {
        /// The setting.
        field: &'static str,
        /// The value given.
        value: usize,
        /// The largest value allowed.
        max: usize,
    },
    /// A duration setting is above [`MAX_DURATION`].
    TooLong {
        /// The setting.
        field: &'static str,
        /// The value given.
        value: core::time::Duration,
        /// The longest value allowed.
        max: core::time::Duration,
    },
    /// `max_batch` is larger than the lane `capacity`.
    MaxBatchAboveCapacity {
        /// The `max_batch` given.
        max_batch: usize,
        /// The `capacity` given.
        capacity: usize,
    },
    /// `pin_drainer` names a core this process cannot run on.
    NoSuchCore {
        /// The core asked for.
        core: usize,
        /// The cores available.
        available: Vec<usize>,
    },
    /// `pin_drainer` was set on a platform where threads cannot be pinned.
    PinningUnsupported {
        /// The core asked for.
        core: usize,
    },
    /// The operating system refused to pin the drainer to the core.
    PinFailed {
        /// The core asked for.
        core: usize,
    },
    /// `thread_name` contains a NUL byte.
    InvalidThreadName {
        /// The name given.
        name: String,
    },
    /// No handler was given.
    MissingHandler,
    /// The drainer thread could not be started.
    Spawn {
        /// The operating system's error.
        message: String,
    },
    /// An async handler needs `max_in_flight` buffers in flight plus one
    /// being filled, handler threads one buffer per thread plus one:
    /// `pool_size` must be at least `max_in_flight + 1` (`n + 1` for
    /// `handler_threads(n, ..)`).
    PoolTooSmall {
        /// The `pool_size` given.
        pool_size: usize,
        /// The smallest pool that works (`max_in_flight + 1`, or
        /// `handler_threads + 1`).
        needed: usize,
    },
    /// `pin_drainer` was set together with `drain_on_runtime`: a drainer
    /// task runs on the runtime's threads, not a thread of its own.
    PinOnRuntime {
        /// The core asked for.
        core: usize,
    },
    /// An async handler was given, but `build` was called outside a tokio
    /// runtime and no runtime handle was set.
    NoRuntime,
    /// A setting is out of its range or needs another setting.
    Invalid {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A histogram's bucket bounds
    /// ([`histogram_buckets`](crate::BatcherBuilder::histogram_buckets)) do
    /// not increase strictly.
    BucketsNotIncreasing {
        /// The histogram (`histogram_buckets.batch_size`, `.queue_wait`,
        /// `.handler` or `.end_to_end`).
        field: &'static str,
        /// The position of the first bound not above the one before.
        index: usize,
        /// That bound (items, or nanoseconds for times).
        bound: u64,
        /// The bound before it.
        previous: u64,
    },
    /// (feature `durable`) The durable store could not be opened: its
    /// directory cannot be created or written, another batcher has it
    /// open, or a corrupt record was found under [`CorruptTail::Refuse`](crate::durable::CorruptTail::Refuse).
    #[cfg(feature = "durable")]
    Store(crate::durable::StoreError),
}

impl ConfigError {
    /// The setting at fault.
    pub fn field(&self) -> &'static str {
        match self {
            ConfigError::Zero { field }
            | ConfigError::NotPowerOfTwo { field, .. }
            | ConfigError::TooLarge { field, .. }
            | ConfigError::TooLong { field, .. } => field,
            ConfigError::MaxBatchAboveCapacity { .. } => "max_batch",
            ConfigError::NoSuchCore { .. }
            | ConfigError::PinningUnsupported { .. }
            | ConfigError::PinFailed { .. } => "pin_drainer",
            ConfigError::InvalidThreadName { .. } | ConfigError::Spawn { .. } => "thread_name",
            ConfigError::MissingHandler => "handler",
            ConfigError::PoolTooSmall { .. } => "pool_size",
            ConfigError::NoRuntime => "runtime",
            ConfigError::PinOnRuntime { .. } => "pin_drainer",
            ConfigError::Invalid { field, .. } => field,
            ConfigError::BucketsNotIncreasing { field, .. } => field,
            #[cfg(feature = "durable")]
            ConfigError::Store(_) => "durable",
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Zero { field } => write!(f, "{field} must be at least 1"),
            ConfigError::NotPowerOfTwo { field, value } => {
                write!(f, "{field} must be a power of two, got {value}")
            }
            ConfigError::TooLarge { field, value, max } => {
                write!(f, "{field} must be at most {max}, got {value}")
            }
            ConfigError::TooLong { field, value, max } => {
                write!(f, "{field} must be at most {max:?}, got {value:?}")
            }
            ConfigError::MaxBatchAboveCapacity {
                max_batch,
                capacity,
            } => write!(
                f,
                "max_batch ({max_batch}) must not exceed the lane capacity ({capacity})"
            ),
            ConfigError::NoSuchCore { core, available } => write!(
                f,
                "pin_drainer: core {core} is not available to this process (available: {available:?})"
            ),
            ConfigError::PinningUnsupported { core } => {
                write!(
                    f,
                    "pin_drainer: cannot pin to core {core}: this platform does not support it"
                )
            }
            ConfigError::PinFailed { core } => {
                write!(
                    f,
                    "pin_drainer: the operating system refused to pin the drainer to core {core}"
                )
            }
            ConfigError::InvalidThreadName { name } => {
                write!(f, "thread_name must not contain a NUL byte, got {name:?}")
            }
            ConfigError::MissingHandler => f.write_str("handler: no handler was given"),
            ConfigError::PoolTooSmall { pool_size, needed } => write!(
                f,
                "pool_size ({pool_size}) must be at least {needed}: one buffer per batch in flight \
                 (max_in_flight with an async handler, handler_threads with handler threads) plus one"
            ),
            ConfigError::PinOnRuntime { core } => write!(
                f,
                "pin_drainer: cannot pin to core {core} a drainer that runs on the async runtime (drain_on_runtime)"
            ),
            ConfigError::NoRuntime => f.write_str(
                "runtime: an async handler needs a tokio runtime: build inside one, or set `runtime(handle)`",
            ),
            ConfigError::Spawn { message } => {
                write!(f, "the drainer thread could not start: {message}")
            }
            ConfigError::Invalid { field, reason } => write!(f, "{field}: {reason}"),
            ConfigError::BucketsNotIncreasing {
                field,
                index,
                bound,
                previous,
            } => write!(
                f,
                "{field}: bounds must increase, but bound {index} ({bound}) is not above the one before ({previous})"
            ),
            #[cfg(feature = "durable")]
            ConfigError::Store(error) => write!(f, "durable: {error}"),
        }
    }
}

impl std::error::Error for ConfigError {}
