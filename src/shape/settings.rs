//! `Shaping`: every shaping setting together, as the builder collects and
//! validates them.

use core::fmt;
use std::time::Duration;

use crate::config::ConfigError;
use crate::shape::KeyPolicy;
use crate::shape::keys::{LimitsFn, Weigher};
use crate::{Adaptive, Linger, Oversize};

/// The shaping settings, collected by the builder.
pub(crate) struct Shaping<T> {
    pub(crate) max_bytes: Option<usize>,
    /// A flush threshold on the bytes staged across every group.
    pub(crate) max_staged_bytes: Option<usize>,
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

/// The largest byte limit: [`Error::TooLarge`](crate::Error::TooLarge) carries it as a `u32`, which
/// keeps [`Error`](crate::Error) two words wide.
pub(crate) const MAX_BYTES_LIMIT: usize = u32::MAX as usize;
/// The default bound on open key groups.
pub const DEFAULT_MAX_OPEN_GROUPS: usize = 64;
/// The default starvation age of lower priority classes.
pub const DEFAULT_STARVATION_AGE: Duration = Duration::from_millis(10);

impl<T> Default for Shaping<T> {
    fn default() -> Self {
        Self {
            max_bytes: None,
            max_staged_bytes: None,
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
            .field("max_staged_bytes", &self.max_staged_bytes)
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
            || self.max_staged_bytes.is_some()
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
        if self.max_staged_bytes == Some(0) {
            return Err(ConfigError::Zero {
                field: "max_staged_bytes",
            });
        }
        if self.max_staged_bytes.is_some() && self.weigher.is_none() {
            return Err(ConfigError::Invalid {
                field: "max_staged_bytes",
                reason: "a staged-bytes threshold needs a weigher (`weigher`) to measure items",
            });
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
