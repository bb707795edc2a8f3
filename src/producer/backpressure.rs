//! Claims under each backpressure policy: waiting for room, eviction,
//! spilling and dropping.

use std::time::Instant;

use crate::Producer;
use crate::config::Backpressure;
use crate::error::{Error, RefusedKind};
use crate::handler::deliver;
use crate::producer::{Wait, retry_until_room};
use crate::ring::Claims;
use crate::ring::{Claim, ClaimError, Evicted};
use crate::stats::LaneCounters;
use crate::wait::{WaitStrategy, Waits};

impl<T, R> Producer<T, R> {
    /// One claim attempt of `n` ring slots.
    #[inline(always)]
    pub(crate) fn try_claim(&self, n: usize) -> Result<Claim, ClaimError> {
        let mut head = self.cached_head.get();
        let ring = &self.lane_ref().ring;
        let result = if self.claims() == Claims::Plain {
            // SAFETY: this producer owns the ring (`Lane::take`), so no other
            // thread claims on it, and `Ring::own` accepted it.
            unsafe { ring.try_claim_exclusive(n, &mut head) }
        } else {
            ring.try_claim(n, &mut head)
        };
        self.cached_head.set(head);
        result
    }

    /// Claims `n` ring slots, waiting as `wait` says.
    #[inline(always)]
    pub(crate) fn claim(&self, n: usize, wait: Wait) -> Result<Claim, RefusedKind> {
        match self.try_claim(n) {
            Ok(claim) => Ok(claim),
            Err(ClaimError::Closed) => Err(RefusedKind::Closed),
            Err(ClaimError::Full) => match self.blocks(wait) {
                Waits::No => self.claim_or_evict(n, wait),
                waits => self.claim_slow(n, waits.deadline()),
            },
        }
    }

    /// The lane is full and `wait` does not wait: evicts under `DropOldest`,
    /// else refuses.
    #[cold]
    #[inline(never)]
    pub(crate) fn claim_or_evict(&self, n: usize, wait: Wait) -> Result<Claim, RefusedKind> {
        if self.evicts(wait) {
            self.claim_evicting(n).map_err(|_| RefusedKind::Closed)
        } else {
            Err(RefusedKind::Full)
        }
    }

    /// Whether a submission with `wait` evicts the oldest items of a full
    /// lane (`DropOldest`; explicit waits and `try_` calls do not).
    #[inline(always)]
    pub(crate) fn evicts(&self, wait: Wait) -> bool {
        matches!(wait, Wait::Policy) && self.shared.config.backpressure == Backpressure::DropOldest
    }

    /// One claim attempt of `n` ring slots that, under `DropOldest`, evicts
    /// from a full lane (the async submissions' attempt).
    #[inline(always)]
    pub(crate) fn try_claim_or_evict(&self, n: usize) -> Result<Claim, ClaimError> {
        match self.try_claim(n) {
            Err(ClaimError::Full) if self.evicts(Wait::Policy) => self.claim_evicting(n),
            result => result,
        }
    }

    /// `DropOldest`, the lane is full: evicts its oldest items until a claim
    /// of `n` slots succeeds (or the lane closes).
    #[cold]
    #[inline(never)]
    pub(crate) fn claim_evicting(&self, n: usize) -> Result<Claim, ClaimError> {
        let ring = &self.lane_ref().ring;
        let mut backoff = crate::wait::Backoff::new(WaitStrategy::Yield);
        loop {
            match ring.evict_oldest(n) {
                Evicted::Item(item, ticket) => {
                    backoff.reset();
                    self.evicted(item, ticket);
                }
                Evicted::Skip | Evicted::Room => backoff.reset(),
                // The oldest slot's producer is still publishing, or another
                // consumer took it first.
                Evicted::Busy => {
                    backoff.snooze();
                }
            }
            match self.try_claim(n) {
                Err(ClaimError::Full) => {}
                result => return result,
            }
        }
    }

    /// An item this producer evicted: counts it, fails its ticket with
    /// `Dropped`, and hands it to the spill callback.
    #[cold]
    pub(crate) fn evicted(&self, item: T, ticket: Option<usize>) {
        let counters = &self.lane_ref().counters;
        LaneCounters::add(&counters.evicted, 1);
        LaneCounters::add(&counters.dropped, 1);
        if let Some(index) = ticket {
            deliver(&self.shared.table, self.ring, index, Err(Error::Dropped));
        }
        self.spill(item);
    }

    /// An item a drop policy discards: to the spill callback, if any, else
    /// dropped. Either runs user code on this producer's thread: a panic
    /// is contained and counted, so that the submission still returns (its
    /// item is the new one, accepted or dropped as the policy says).
    #[cold]
    pub(crate) fn spill(&self, item: T) {
        let panics = &self.shared.panics;
        match &self.shared.spill {
            Some(spill) => {
                if crate::contain::call(|| spill(item)).is_err() {
                    panics.callback();
                }
            }
            None => {
                if !crate::contain::drop_value(item) {
                    panics.drops(1);
                }
            }
        }
    }

    /// The new item is dropped (`DropNewest`, or `DropOldest` without a free
    /// completion slot): counts it and spills it.
    #[cold]
    pub(crate) fn drop_new(&self, item: T) {
        self.count_dropped(1);
        self.spill(item);
    }

    /// Whether a submission with `wait` waits for room, and until when.
    #[inline(always)]
    pub(crate) fn blocks(&self, wait: Wait) -> Waits {
        match wait {
            Wait::Never => Waits::No,
            Wait::Policy => match self.shared.config.backpressure {
                Backpressure::Block | Backpressure::IncreaseBatchSize => Waits::Indefinitely,
                Backpressure::Reject | Backpressure::DropNewest | Backpressure::DropOldest => {
                    Waits::No
                }
            },
            Wait::Block(deadline) => Waits::until(deadline),
        }
    }

    /// The lane is full: wait for room by the wait strategy.
    #[cold]
    #[inline(never)]
    pub(crate) fn claim_slow(
        &self,
        n: usize,
        deadline: Option<Instant>,
    ) -> Result<Claim, RefusedKind> {
        if self.shared.called_back() {
            // Room comes from the drainer, which waits for this handler.
            return Err(RefusedKind::Full);
        }
        if self.shared.config.backpressure == Backpressure::IncreaseBatchSize {
            self.shared.signal_pressure();
        }
        let ring = &self.lane_ref().ring;
        retry_until_room(
            self.shared.config.wait,
            &self.shared.table.lane(self.ring).notifier,
            deadline,
            || self.try_claim(n),
            // Under the notifier's lock: flag the head word so that the
            // drainer's next run notifies (false if there is room already).
            || ring.arm_room_waiter(n),
        )
    }

    /// Takes `out.len()` completion slots for tickets, then claims as many
    /// ring slots, waiting for either as `wait` says. On success the slots'
    /// indexes are in `out`; on failure none is held.
    #[inline(always)]
    pub(crate) fn claim_ticketed(
        &self,
        out: &mut [usize],
        wait: Wait,
    ) -> Result<Claim, RefusedKind> {
        let slots = self.shared.table.lane(self.ring);
        let mut cursor = self.next_slot.get();
        let acquired = slots.try_acquire(&mut cursor, out);
        self.next_slot.set(cursor);
        if !acquired {
            match self.blocks(wait) {
                Waits::No => return Err(RefusedKind::Full),
                waits => self.acquire_slow(out, waits.deadline())?,
            }
        }
        self.claim(out.len(), wait).inspect_err(|_| {
            // SAFETY: taken above, nothing published with them, no tickets.
            unsafe { slots.release_unused(out) };
        })
    }

    /// Every completion slot of the lane is held by a ticket: wait until
    /// enough are freed.
    #[cold]
    #[inline(never)]
    pub(crate) fn acquire_slow(
        &self,
        out: &mut [usize],
        deadline: Option<Instant>,
    ) -> Result<(), RefusedKind> {
        if self.shared.called_back() {
            // Slots come back when results do, from the drainer, which
            // waits for this handler.
            return Err(RefusedKind::Full);
        }
        let ring = &self.lane_ref().ring;
        let slots = self.shared.table.lane(self.ring);
        retry_until_room(
            self.shared.config.wait,
            &slots.notifier,
            deadline,
            || {
                if ring.is_closed() {
                    return Err(ClaimError::Closed);
                }
                let mut cursor = self.next_slot.get();
                let acquired = slots.try_acquire(&mut cursor, out);
                self.next_slot.set(cursor);
                if acquired {
                    Ok(())
                } else {
                    Err(ClaimError::Full)
                }
            },
            // Under the notifier's lock: flag the held slots so that the
            // next one freed notifies (false if one is free, or the lane
            // closed, whose closer notifies after closing).
            || !ring.is_closed() && slots.arm_waiter(),
        )
    }

    /// Counts a refusal and builds the error.
    #[cold]
    pub(crate) fn refuse(&self, kind: RefusedKind, n: u64) -> RefusedKind {
        let counters = &self.lane_ref().counters;
        match kind {
            RefusedKind::Full | RefusedKind::Timeout => LaneCounters::add(&counters.rejected, n),
            RefusedKind::Closed => LaneCounters::add(&counters.refused_closed, n),
            RefusedKind::NoDeadlines | RefusedKind::NoPriorities => {}
        }
        kind
    }

    /// Whether a full lane drops the new item instead of refusing it (under
    /// `DropOldest` a full ring evicts instead, so only a lane without a free
    /// completion slot gets here).
    #[inline(always)]
    pub(crate) fn drops_when_full(&self, kind: RefusedKind, wait: Wait) -> bool {
        kind == RefusedKind::Full
            && matches!(wait, Wait::Policy)
            && matches!(
                self.shared.config.backpressure,
                Backpressure::DropNewest | Backpressure::DropOldest
            )
    }

    #[cold]
    pub(crate) fn count_dropped(&self, n: u64) {
        LaneCounters::add(&self.lane_ref().counters.dropped, n);
    }
}
