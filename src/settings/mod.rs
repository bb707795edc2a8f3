//! Settings from a file (feature `serde`): every data setting of the
//! [`BatcherBuilder`](crate::BatcherBuilder), read from TOML and applied with
//! [`BatcherBuilder::with_config`](crate::BatcherBuilder::with_config), while
//! the closures (the handler, a weigher, key functions, dead letters, spill)
//! stay in code.
//!
//! The file has four tables, `[core]`, `[shape]` (with `[shape.adaptive]`),
//! `[failure]` (`[failure.retry]`, `[failure.circuit_breaker]`) and
//! `[metrics]`; each key is named after its builder method and documented
//! there. Every key is optional: a file sets only what it changes, and
//! `with_config` leaves the rest as the builder has it. The crate ships
//! `examples/ringbatch.toml`, which lists every key at its default. With
//! the `durable` feature a fifth, `[durable]`, sets the durable store
//! ([`DurableSettings`]).
//!
//! - Enums by their snake_case names: `backpressure = "drop_newest"`,
//!   `wait_strategy = "busy_spin"`.
//! - Durations as human strings: `linger = "2ms"`, `recovery_timeout = "1m 30s"`.
//! - A setting whose default is unset takes a keyword: `"auto"` where the
//!   default follows other settings (`lanes`, `result_slots`, `staging`,
//!   `max_bytes`, the adaptive `max`), `"none"` where it is off
//!   (`pin_drainer`, `min_interval`, `max_age`, `linger`).
//! - Retries and the circuit breaker are turned on with `enabled = true`,
//!   adaptive sizing with `mode = "latency"` or `"load"`.
//!
//! [`Settings::from_toml_str`] refuses an unknown key, a value of the wrong
//! type, an unknown enum name or a duration that does not parse, with the
//! key's dotted name and its line ([`SettingsError`]). Values in range are
//! the builder's business: `build` refuses what it would refuse through the
//! builder's methods, with the same [`ConfigError`](crate::ConfigError).
//!
//! ```
//! use ringbatch::{Batch, Batcher, Settings};
//!
//! let settings = Settings::from_toml_str(
//!     r#"
//!     [core]
//!     capacity = 4096
//!     backpressure = "drop_newest"
//!
//!     [shape]
//!     linger = "2ms"
//!
//!     [failure.retry]
//!     enabled = true
//!     max_retries = 5
//!     "#,
//! )?;
//! let batcher = Batcher::builder()
//!     .with_config(&settings)
//!     .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
//!         batch.ok_with(|_| ());
//!         Ok(())
//!     })
//!     .build()?;
//! assert_eq!(batcher.config().capacity, 4096);
//! batcher.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod apply;
mod de;

use core::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Backpressure, LaneAssignment};
use crate::shape::{Linger, Oversize};
use crate::wait::WaitStrategy;

/// Every data setting of a batcher, as a file gives them: each `None` is a
/// key the file leaves out, which [`with_config`](crate::BatcherBuilder::with_config)
/// leaves as the builder has it.
///
/// A setting whose own default is unset is an `Option<Option<_>>`: the inner
/// `None` is the file's keyword (`"auto"` or `"none"`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
#[non_exhaustive]
pub struct Settings {
    /// `[core]`: lanes, sizes, waiting, backpressure, the drainer.
    pub core: CoreSettings,
    /// `[shape]`: batch shaping.
    pub shape: ShapeSettings,
    /// `[failure]`: retries and the circuit breaker.
    pub failure: FailureSettings,
    /// `[metrics]`: histograms.
    pub metrics: MetricsSettings,
    /// `[durable]` (feature `durable`): the durable store.
    #[cfg(feature = "durable")]
    pub durable: DurableSettings,
}

/// `[core]`: the settings of [`Config`](crate::Config) and the drainer's
/// placement.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
#[non_exhaustive]
pub struct CoreSettings {
    /// [`lanes`](crate::BatcherBuilder::lanes); `"auto"` (inner `None`): one per core.
    #[serde(deserialize_with = "de::or_auto")]
    pub lanes: Option<Option<usize>>,
    /// [`capacity`](crate::BatcherBuilder::capacity).
    pub capacity: Option<usize>,
    /// [`max_batch`](crate::BatcherBuilder::max_batch). The default value
    /// (256) follows a smaller capacity, as when it is never set.
    pub max_batch: Option<usize>,
    /// [`pool_size`](crate::BatcherBuilder::pool_size). The default value
    /// (2) grows to fit `max_in_flight` and retries, as when it is never set.
    pub pool_size: Option<usize>,
    /// [`result_slots`](crate::BatcherBuilder::result_slots); `"auto"`:
    /// `capacity` or [`DEFAULT_RESULT_SLOTS`](crate::DEFAULT_RESULT_SLOTS),
    /// whichever is larger.
    #[serde(deserialize_with = "de::or_auto")]
    pub result_slots: Option<Option<usize>>,
    /// [`wait_strategy`](crate::BatcherBuilder::wait_strategy): `"busy_spin"`,
    /// `"yield"`, `"backoff"` or `"park"`.
    #[serde(deserialize_with = "de::named")]
    pub wait_strategy: Option<WaitStrategy>,
    /// [`backpressure`](crate::BatcherBuilder::backpressure): `"block"`,
    /// `"reject"`, `"drop_newest"`, `"drop_oldest"` or `"increase_batch_size"`.
    #[serde(deserialize_with = "de::named")]
    pub backpressure: Option<Backpressure>,
    /// [`pin_drainer`](crate::BatcherBuilder::pin_drainer); `"none"`: not pinned.
    #[serde(deserialize_with = "de::or_none")]
    pub pin_drainer: Option<Option<usize>>,
    /// [`lane_assignment`](crate::BatcherBuilder::lane_assignment):
    /// `"current_core"` or `"round_robin"`.
    #[serde(deserialize_with = "de::named")]
    pub lane_assignment: Option<LaneAssignment>,
    /// [`thread_name`](crate::BatcherBuilder::thread_name).
    pub thread_name: Option<String>,
    /// [`max_in_flight`](crate::BatcherBuilder::max_in_flight).
    pub max_in_flight: Option<usize>,
    /// [`exclusive_lanes`](crate::BatcherBuilder::exclusive_lanes).
    pub exclusive_lanes: Option<usize>,
    /// [`spin_between_short_runs`](crate::BatcherBuilder::spin_between_short_runs).
    pub spin_between_short_runs: Option<bool>,
    /// [`inline_when_idle`](crate::BatcherBuilder::inline_when_idle).
    pub inline_when_idle: Option<bool>,
    /// `drain_on_runtime` (feature `tokio`). The key is read without the
    /// feature too, so that one file serves both builds; `true` without it
    /// makes `build` fail.
    pub drain_on_runtime: Option<bool>,
}

/// `[shape]`: batch shaping (see [`BatcherBuilder`](crate::BatcherBuilder)'s
/// shaping methods).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
#[non_exhaustive]
pub struct ShapeSettings {
    /// [`max_bytes`](crate::BatcherBuilder::max_bytes); `"auto"`:
    /// [`DEFAULT_MAX_BYTES`](crate::DEFAULT_MAX_BYTES) once a weigher is set,
    /// no limit otherwise.
    #[serde(deserialize_with = "de::or_auto")]
    pub max_bytes: Option<Option<usize>>,
    /// [`max_staged_bytes`](crate::BatcherBuilder::max_staged_bytes);
    /// `"none"`: no threshold on the bytes staged across every group.
    #[serde(deserialize_with = "de::or_none")]
    pub max_staged_bytes: Option<Option<usize>>,
    /// [`oversize`](crate::BatcherBuilder::oversize): `"fail"` or `"alone"`.
    #[serde(deserialize_with = "de::named")]
    pub oversize: Option<Oversize>,
    /// [`linger`](crate::BatcherBuilder::linger): `"none"`, a duration
    /// ([`Linger::Fixed`]) or `{ adaptive = "5ms" }` ([`Linger::Adaptive`]).
    #[serde(deserialize_with = "de::linger")]
    pub linger: Option<Linger>,
    /// [`min_interval`](crate::BatcherBuilder::min_interval); `"none"`: no minimum.
    #[serde(deserialize_with = "de::or_none")]
    pub min_interval: Option<Option<Duration>>,
    /// [`priorities`](crate::BatcherBuilder::priorities).
    pub priorities: Option<bool>,
    /// [`starvation_age`](crate::BatcherBuilder::starvation_age).
    #[serde(deserialize_with = "de::value")]
    pub starvation_age: Option<Duration>,
    /// [`max_open_groups`](crate::BatcherBuilder::max_open_groups).
    pub max_open_groups: Option<usize>,
    /// [`deadlines`](crate::BatcherBuilder::deadlines).
    pub deadlines: Option<bool>,
    /// [`max_age`](crate::BatcherBuilder::max_age); `"none"`: no maximum.
    #[serde(deserialize_with = "de::or_none")]
    pub max_age: Option<Option<Duration>>,
    /// [`staging`](crate::BatcherBuilder::staging); `"auto"`: four times `max_batch`.
    #[serde(deserialize_with = "de::or_auto")]
    pub staging: Option<Option<usize>>,
    /// `[shape.adaptive]`: [`adaptive`](crate::BatcherBuilder::adaptive) sizing.
    pub adaptive: AdaptiveSettings,
}

/// Which adaptive controller runs, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
#[non_exhaustive]
pub enum AdaptiveKind {
    /// No adaptive sizing (the default).
    Off,
    /// [`Adaptive::latency`](crate::Adaptive::latency): aims the handler's
    /// time per batch at `target`.
    Latency,
    /// [`Adaptive::load`](crate::Adaptive::load): follows the load feedback
    /// the handler reports.
    Load,
}

/// `[shape.adaptive]`: the fields of [`Adaptive`](crate::Adaptive).
///
/// A `mode` other than the builder's starts from that mode's defaults
/// ([`Adaptive::latency`](crate::Adaptive::latency) or
/// [`Adaptive::load`](crate::Adaptive::load)), then takes the keys given;
/// with the same mode the keys change the builder's controller. With the
/// mode `"off"` the other keys are not used.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
#[non_exhaustive]
pub struct AdaptiveSettings {
    /// `"off"`, `"latency"` or `"load"`.
    pub mode: Option<AdaptiveKind>,
    /// Latency mode's target handler time per batch, which that mode needs;
    /// `"none"` (inner `None`) outside it.
    #[serde(deserialize_with = "de::or_none")]
    pub target: Option<Option<Duration>>,
    /// Load mode's check interval.
    #[serde(deserialize_with = "de::value")]
    pub interval: Option<Duration>,
    /// The smallest effective batch size.
    pub min: Option<usize>,
    /// The largest effective batch size; `"auto"`: `max_batch`.
    #[serde(deserialize_with = "de::or_auto")]
    pub max: Option<Option<usize>>,
    /// Grow below this; `"auto"`: the mode's default (latency 0.8, load 0.3).
    #[serde(deserialize_with = "de::or_auto")]
    pub grow_below: Option<Option<f64>>,
    /// Shrink above this; `"auto"`: the mode's default (latency 1.2, load 0.7).
    #[serde(deserialize_with = "de::or_auto")]
    pub shrink_above: Option<Option<f64>>,
    /// Growth factor per step.
    pub grow_by: Option<f64>,
    /// Shrink factor per step.
    pub shrink_by: Option<f64>,
    /// [`Adaptive::initial`](crate::Adaptive::initial); `"auto"`: the
    /// largest size.
    #[serde(deserialize_with = "de::or_auto")]
    pub initial: Option<Option<usize>>,
    /// [`Adaptive::smoothing`](crate::Adaptive::smoothing): how many recent
    /// signals the controller averages.
    pub smoothing: Option<usize>,
    /// `[shape.adaptive.weights]`: load mode's [`LoadWeights`](crate::LoadWeights).
    pub weights: WeightSettings,
}

/// `[shape.adaptive.weights]`: the fields of [`LoadWeights`](crate::LoadWeights).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
#[non_exhaustive]
pub struct WeightSettings {
    /// Weight of the CPU figure.
    pub cpu: Option<f64>,
    /// Weight of the error rate.
    pub error_rate: Option<f64>,
    /// Weight of the queue depth.
    pub queue_depth: Option<f64>,
    /// Weight of the contention figure.
    pub contention: Option<f64>,
}

/// `[failure]`: the failure policies that are data (dead letters stay in code).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
#[non_exhaustive]
pub struct FailureSettings {
    /// `[failure.retry]`: the [`RetryPolicy`](crate::RetryPolicy).
    pub retry: RetrySettings,
    /// `[failure.circuit_breaker]`: the [`CircuitBreaker`](crate::CircuitBreaker).
    pub circuit_breaker: BreakerSettings,
}

/// `[failure.retry]`: the fields of [`RetryPolicy`](crate::RetryPolicy).
///
/// `enabled = true` turns retries on (from the builder's policy, or the
/// default one), `false` off; left out, they stay as the builder has them.
/// The other keys apply only while retries are on.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
#[non_exhaustive]
pub struct RetrySettings {
    /// Whether failed items are retried.
    pub enabled: Option<bool>,
    /// Retries after the first attempt.
    pub max_retries: Option<u32>,
    /// The delay before the first retry.
    #[serde(deserialize_with = "de::value")]
    pub initial_delay: Option<Duration>,
    /// The longest delay.
    #[serde(deserialize_with = "de::value")]
    pub max_delay: Option<Duration>,
    /// The delay's growth per retry.
    pub multiplier: Option<f64>,
    /// The share by which each delay moves at random.
    pub jitter: Option<f64>,
    /// Whether items waiting to retry keep their place ahead of later items.
    pub in_order: Option<bool>,
}

/// `[failure.circuit_breaker]`: the fields of [`CircuitBreaker`](crate::CircuitBreaker).
///
/// `enabled` works as for [`RetrySettings`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
#[non_exhaustive]
pub struct BreakerSettings {
    /// Whether a circuit breaker runs in front of the handler.
    pub enabled: Option<bool>,
    /// Consecutive failed batches that open it.
    pub failure_threshold: Option<u32>,
    /// How long it stays open before a trial batch.
    #[serde(deserialize_with = "de::value")]
    pub recovery_timeout: Option<Duration>,
    /// Hold new batches in the lanes while open, instead of failing them.
    pub hold_while_open: Option<bool>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
#[non_exhaustive]
pub struct MetricsSettings {
    /// [`histograms`](crate::BatcherBuilder::histograms).
    pub histograms: Option<bool>,
    /// The batch size histogram's bucket bounds, in items
    /// ([`BucketBounds::batch_size`](crate::metrics::BucketBounds::batch_size));
    /// `"auto"`: powers of two up to `max_batch`.
    #[serde(deserialize_with = "de::list_or_auto")]
    pub batch_size_buckets: Option<Option<Vec<u64>>>,
    /// The queue wait histogram's bucket bounds (durations); `"auto"`:
    /// [`BucketBounds::DEFAULT_TIMES`](crate::metrics::BucketBounds::DEFAULT_TIMES).
    #[serde(deserialize_with = "de::list_or_auto")]
    pub queue_wait_buckets: Option<Option<Vec<Duration>>>,
    /// The handler time histogram's bucket bounds; `"auto"` as above.
    #[serde(deserialize_with = "de::list_or_auto")]
    pub handler_buckets: Option<Option<Vec<Duration>>>,
    /// The end-to-end histogram's bucket bounds; `"auto"` as above.
    #[serde(deserialize_with = "de::list_or_auto")]
    pub end_to_end_buckets: Option<Option<Vec<Duration>>>,
}

/// `[durable]` (feature `durable`): the durable store's
/// [`Durability`](crate::durable::Durability). The store needs a codec,
/// which a file cannot give: [`with_config`](crate::BatcherBuilder::with_config)
/// applies these keys to a store set before it with
/// [`durable`](crate::BatcherBuilder::durable), and
/// [`durability`](Self::durability) makes one from them.
///
/// ```
/// use ringbatch::durable::{FsyncPolicy, Postcard};
/// use ringbatch::{Batch, Batcher, Settings};
///
/// let dir = std::env::temp_dir().join(format!("ringbatch-doc-settings-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let text = format!("[durable]\ndir = {:?}\nfsync = \"every_batch\"\n", dir.display().to_string());
/// let settings = Settings::from_toml_str(&text)?;
/// let durability = settings.durable.durability().expect("the file names a directory");
/// assert_eq!(durability.fsync(), FsyncPolicy::EveryBatch);
/// let batcher = Batcher::builder()
///     .durable(durability, Postcard)
///     .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
///         batch.ok_with(|_| ());
///         Ok(())
///     })
///     .build()?;
/// batcher.shutdown();
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "durable")]
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(docsrs, doc(cfg(all(feature = "serde", feature = "durable"))))]
#[non_exhaustive]
pub struct DurableSettings {
    /// The store's directory ([`Durability::new`](crate::durable::Durability::new)).
    pub dir: Option<std::path::PathBuf>,
    /// [`with_fsync`](crate::durable::Durability::with_fsync):
    /// `"every_batch"`, `"never"`, or a duration (`"10ms"`): at most that
    /// long after a write.
    #[serde(deserialize_with = "de::value")]
    pub fsync: Option<crate::durable::FsyncPolicy>,
    /// [`with_max_bytes`](crate::durable::Durability::with_max_bytes).
    pub max_bytes: Option<u64>,
    /// [`with_segment_bytes`](crate::durable::Durability::with_segment_bytes).
    pub segment_bytes: Option<u64>,
    /// [`with_corrupt_tail`](crate::durable::Durability::with_corrupt_tail):
    /// `"truncate"` or `"refuse"`.
    #[serde(deserialize_with = "de::named")]
    pub corrupt_tail: Option<crate::durable::CorruptTail>,
}

#[cfg(feature = "durable")]
impl DurableSettings {
    /// A store in [`dir`](Self::dir) with these keys over the defaults;
    /// `None` when the settings name no directory.
    pub fn durability(&self) -> Option<crate::durable::Durability> {
        let dir = self.dir.as_ref()?;
        Some(self.apply_to(crate::durable::Durability::new(dir)))
    }

    /// `durability` with the keys these settings give (the directory
    /// among them) set, and the others as they are.
    pub fn apply_to(
        &self,
        mut durability: crate::durable::Durability,
    ) -> crate::durable::Durability {
        if let Some(dir) = &self.dir {
            durability.dir.clone_from(dir);
        }
        if let Some(fsync) = self.fsync {
            durability = durability.with_fsync(fsync);
        }
        if let Some(max_bytes) = self.max_bytes {
            durability = durability.with_max_bytes(max_bytes);
        }
        if let Some(segment_bytes) = self.segment_bytes {
            durability = durability.with_segment_bytes(segment_bytes);
        }
        if let Some(corrupt_tail) = self.corrupt_tail {
            durability = durability.with_corrupt_tail(corrupt_tail);
        }
        durability
    }

    /// Every key of `durability`.
    pub(crate) fn of(durability: &crate::durable::Durability) -> Self {
        DurableSettings {
            dir: Some(durability.dir.clone()),
            fsync: Some(durability.fsync),
            max_bytes: Some(durability.max_bytes),
            segment_bytes: Some(durability.segment_bytes),
            corrupt_tail: Some(durability.corrupt_tail),
        }
    }
}

impl Settings {
    /// Reads settings from TOML text.
    ///
    /// # Errors
    ///
    /// A [`SettingsError`] with the line and column: [`Syntax`](SettingsError::Syntax)
    /// for text that is not TOML, [`Key`](SettingsError::Key) with the key's
    /// dotted name for an unknown key or a value that does not fit its key.
    ///
    /// ```
    /// use ringbatch::{Settings, SettingsError};
    ///
    /// let err = Settings::from_toml_str("[shape]\nlinger = \"2 fortnights\"\n").unwrap_err();
    /// assert_eq!(err.key(), Some("shape.linger"));
    /// assert_eq!(err.line(), Some(2));
    /// ```
    pub fn from_toml_str(text: &str) -> Result<Settings, SettingsError> {
        let document = toml::Deserializer::parse(text)
            .map_err(|e| SettingsError::new(text, String::new(), &e))?;
        serde_path_to_error::deserialize(document).map_err(|e| {
            let key = e.path().to_string();
            SettingsError::new(text, key, e.inner())
        })
    }
}

/// Why TOML text could not be read as [`Settings`]: the place, and the key
/// when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
#[non_exhaustive]
pub enum SettingsError {
    /// The text is not TOML: a missing `=`, an unclosed string, a key
    /// given twice.
    Syntax {
        /// The line (from 1), if the parser gave the place.
        line: Option<usize>,
        /// The column in characters (from 1), if the parser gave the place.
        column: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// A key the settings do not have, or a value that does not fit its
    /// key: a wrong type, an unknown enum name, a duration that does not
    /// parse, a table where a value belongs.
    Key {
        /// The key's dotted name, as `shape.linger`.
        key: String,
        /// The line (from 1) of the key or its value, if the parser gave the place.
        line: Option<usize>,
        /// The column in characters (from 1), if the parser gave the place.
        column: Option<usize>,
        /// What is wrong, and what the key takes.
        message: String,
    },
}

impl SettingsError {
    /// `key` empty (or serde's `.` for the root) means no key.
    fn new(text: &str, key: String, error: &toml::de::Error) -> Self {
        let (line, column) = match error.span() {
            Some(span) => {
                let (line, column) = position(text, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        let message = error.message().to_owned();
        if key.is_empty() || key == "." {
            SettingsError::Syntax {
                line,
                column,
                message,
            }
        } else {
            SettingsError::Key {
                key,
                line,
                column,
                message,
            }
        }
    }

    /// The key's dotted name, for a [`Key`](SettingsError::Key) error.
    pub fn key(&self) -> Option<&str> {
        match self {
            SettingsError::Syntax { .. } => None,
            SettingsError::Key { key, .. } => Some(key),
        }
    }

    /// The line, from 1.
    pub fn line(&self) -> Option<usize> {
        match self {
            SettingsError::Syntax { line, .. } | SettingsError::Key { line, .. } => *line,
        }
    }

    /// The column in characters, from 1.
    pub fn column(&self) -> Option<usize> {
        match self {
            SettingsError::Syntax { column, .. } | SettingsError::Key { column, .. } => *column,
        }
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        match self {
            SettingsError::Syntax { message, .. } | SettingsError::Key { message, .. } => message,
        }
    }
}

/// The line and column (both from 1, the column in characters) of a byte
/// offset; an offset inside a character counts as that character.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(key) = self.key() {
            write!(f, "{key}")?;
        } else {
            f.write_str("settings")?;
        }
        if let (Some(line), Some(column)) = (self.line(), self.column()) {
            write!(f, " (line {line}, column {column})")?;
        }
        write!(f, ": {}", self.message())
    }
}

impl std::error::Error for SettingsError {}

#[cfg(test)]
mod tests {
    use super::position;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "a = 1\n# µs\nb = \"é\" x\n";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 6), (2, 1), "just after a newline");
        let x = text.find('x').expect("x is in the text");
        assert_eq!(position(text, x), (3, 9), "é is one character, two bytes");
        // An offset inside a character counts as that character.
        let e = text.find('é').expect("é is in the text");
        assert_eq!(position(text, e + 1), position(text, e));
        assert_eq!(position(text, text.len() + 10), (4, 1), "past the end");
    }
}
