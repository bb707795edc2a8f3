//! One lane: its ring, its expiry stamps, its producer-side counters and
//! the count of producers on it (or its owner).

use crossbeam_utils::CachePadded;

use crate::ring::Claims;
use crate::ring::Ring;
use crate::shape::ExpiryStamps;
use crate::stats::LaneCounters;
use crate::sync::{AtomicUsize, Ordering};

/// Whether a producer shares its ring or owns it, and how it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// One of the ring's shared producers.
    Shared,
    /// The ring's exclusive producer.
    Owned(Claims),
}

impl Ownership {
    /// How a producer with this ownership claims.
    #[inline(always)]
    pub(crate) fn claims(self) -> Claims {
        match self {
            Ownership::Owned(claims) => claims,
            Ownership::Shared => Claims::Cas,
        }
    }
}

/// One lane: its ring and its producer-side counters.
pub(crate) struct Lane<T> {
    pub(crate) ring: Ring<T>,
    /// Per-item expiry stamps, when deadlines or a maximum age are on.
    pub(crate) expiry: Option<ExpiryStamps>,
    pub(crate) counters: CachePadded<LaneCounters>,
    /// Producers on this ring, or [`OWNED`] while an exclusive producer owns
    /// it. Changed only when producers are made and dropped.
    pub(crate) producers: AtomicUsize,
}

/// [`Lane::producers`] while an exclusive producer owns the ring.
pub(crate) const OWNED: usize = usize::MAX;

impl<T> Lane<T> {
    /// Counts one more shared producer; false if the ring is owned.
    ///
    /// AcqRel: pairs with the Release of [`leave`](Self::leave) by an owner
    /// that left, so that its plain-store claims come before ours.
    pub(crate) fn join(&self) -> bool {
        let mut count = self.producers.load(Ordering::Relaxed);
        loop {
            if count == OWNED {
                return false;
            }
            match self.producers.compare_exchange_weak(
                count,
                count + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => count = actual,
            }
        }
    }

    /// Takes the ring for an exclusive producer if no producer is on it.
    ///
    /// AcqRel: pairs with the Release of every earlier producer's `leave`,
    /// so that their claims come before the owner's plain-store claims.
    pub(crate) fn take(&self) -> bool {
        self.producers
            .compare_exchange(0, OWNED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// A producer leaves the ring.
    pub(crate) fn leave(&self, ownership: Ownership) {
        // Release: this producer's claims come before those of the next
        // producer to join or take the ring (Acquire in `join`, `take`).
        match ownership {
            Ownership::Owned(_) => self.producers.store(0, Ordering::Release),
            Ownership::Shared => {
                self.producers.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}
