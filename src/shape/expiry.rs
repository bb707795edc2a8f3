//! Expiry stamps: the per-sequence deadlines producers write beside their
//! items when deadlines or a maximum age are on.

use std::time::{Duration, Instant};

use crate::sync::{AtomicU64, Ordering};

/// An expiry stamp that never expires.
pub(crate) const NEVER: u64 = u64::MAX;

/// Per-item expiry stamps of one ring, written by producers before they
/// publish the slot (their Release stamp store carries it to the drainer,
/// whose Acquire load of the stamp precedes its read here).
pub(crate) struct ExpiryStamps {
    pub(crate) stamps: Box<[AtomicU64]>,
    pub(crate) mask: usize,
    pub(crate) epoch: Instant,
    pub(crate) max_age_ns: u64,
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
