//! Shared claims: producers claim sequences with one CAS on the tail word,
//! publish their slots, and flag the head when they wait for room.

use crate::sync::Ordering;

use super::stamp::*;
use super::*;

/// A successful claim of `n` consecutive sequence numbers starting at `seq`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim {
    pub(crate) seq: usize,
    /// The drainer had announced that it parks: the claimer must unpark it
    /// once its items are published.
    pub(crate) wake_drainer: bool,
}

/// Why a claim failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// Not enough free slots.
    Full,
    /// The lane is closed.
    Closed,
}

impl<T> Ring<T> {
    /// Claims `n` consecutive sequence numbers (`1 <= n <= capacity`).
    ///
    /// `cached_head` is the caller's private copy of `head`; it is reloaded
    /// only when the lane looks full.
    #[inline]
    pub(crate) fn try_claim(&self, n: usize, cached_head: &mut usize) -> Result<Claim, ClaimError> {
        debug_assert!(n >= 1 && n <= self.capacity());
        let room = self.capacity() - n;
        let mut word = self.tail.load(Ordering::Relaxed);
        loop {
            if word & (CLOSED | EVICTS) != 0 {
                if word & CLOSED != 0 {
                    return Err(ClaimError::Closed);
                }
                return self.try_claim_evicting(n, cached_head);
            }
            let seq = word >> SEQ_SHIFT;
            if distance(*cached_head, seq) > room {
                *cached_head = self.head_seq();
                if distance(*cached_head, seq) > room {
                    return Err(ClaimError::Full);
                }
            }
            // Relaxed is enough: the RMW's atomicity gives each sequence to one
            // producer, slot reuse is ordered by the Acquire load of `head`
            // above, and the `PARKED` hand-off only depends on the tail word's
            // modification order (the drainer's `fetch_or` either sees our
            // claim or we see its flag).
            match self.tail.compare_exchange_weak(
                word,
                seq_add(seq, n) << SEQ_SHIFT,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(Claim {
                        seq,
                        wake_drainer: word & PARKED != 0,
                    });
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// An owner's claim found no room: [`ClaimError::Closed`] if the lane is
    /// closed (the tail word of an owned ring does not say so), else `Full`.
    #[cold]
    pub(super) fn full_or_closed(&self) -> ClaimError {
        // Acquire pairs with the AcqRel `fetch_or` in `close`.
        if self.owner.flags.load(Ordering::Acquire) & FLAG_CLOSED != 0 {
            ClaimError::Closed
        } else {
            ClaimError::Full
        }
    }

    /// Writes `value` into the claimed slot `seq` and publishes it; `ticket`
    /// is the index of the completion slot its submitter armed, if any.
    /// `claims`: how the caller claimed `seq`; an owner claiming with plain
    /// stores also moves its cursor (see [`OwnerWords::published`]).
    ///
    /// # Safety
    ///
    /// The caller claimed `seq` with [`try_claim`](Self::try_claim) (or, as
    /// the owner, [`try_claim_exclusive`](Self::try_claim_exclusive)) and
    /// has not published it yet. An owner publishes its sequences in order,
    /// each with the [`Claims`] it claimed them with.
    #[inline(always)]
    pub(crate) unsafe fn publish(
        &self,
        seq: usize,
        value: T,
        ticket: Option<usize>,
        claims: Claims,
    ) {
        let slot = self.slot(seq);
        // SAFETY: the caller owns the claimed slot; the drainer does not read it
        // until the stamp below is stored, and its previous value was moved out
        // before `head` passed it (checked in `try_claim`).
        slot.value.with_mut(|p| unsafe { (*p).write(value) });
        let extra = match ticket {
            Some(index) => {
                debug_assert!(index < crate::MAX_CAPACITY);
                (index << STAMP_SLOT_SHIFT) | STAMP_TICKET
            }
            None => 0,
        };
        // Release pairs with the Acquire load of the stamp in `drain_run`:
        // the value written above (and the completion slot armed before this
        // call) is visible to the drainer.
        slot.stamp.store(stamp_for(seq) | extra, Ordering::Release);
        if claims == Claims::Plain && self.is_split() {
            self.advance_cursor(seq, ticket.is_some());
        }
    }

    /// Publishes the claimed slot `seq` as empty: the drainer steps over it.
    /// `claims` as for [`publish`](Self::publish).
    ///
    /// # Safety
    ///
    /// As for [`publish`](Self::publish).
    pub(crate) unsafe fn publish_skip(&self, seq: usize, claims: Claims) {
        // Release pairs with the Acquire load in `drain_run`, as in `publish`.
        self.slot(seq)
            .stamp
            .store(stamp_for(seq) | STAMP_SKIP, Ordering::Release);
        if claims == Claims::Plain && self.is_split() {
            self.advance_cursor(seq, true);
        }
    }

    /// The owner published `seq` (a `special` one: with a ticket, or empty):
    /// moves the cursor past it, and the start of the plain run past a
    /// special one, whose stamp the drainer must read.
    ///
    /// Relaxed for `plain_from`: the Release store of `published` after it
    /// carries it (a drainer that sees the cursor past `seq` sees this
    /// `plain_from` or a later one, which only shortens the plain run).
    #[inline(always)]
    pub(super) fn advance_cursor(&self, seq: usize, special: bool) {
        let next = seq_add(seq, 1);
        if special {
            self.owner.plain_from.store(next, Ordering::Relaxed);
        }
        // Release pairs with the Acquire load in `owner_cursor`: the item
        // (and the stamp) written before are visible to a drainer that sees
        // the cursor past them.
        self.owner.published.store(next, Ordering::Release);
    }

    /// Producer side, under the lane notifier's lock: if a claim of `n` slots
    /// is still impossible (lane full, not closed), sets [`HEAD_WAITERS`] so
    /// that the drainer's next `finish_run` notifies, and returns true.
    pub(crate) fn arm_room_waiter(&self, n: usize) -> bool {
        let mut word = self.head.load(Ordering::Acquire);
        loop {
            let (tail, flags) = self.tail();
            if flags & CLOSED != 0 || distance(word >> HEAD_SHIFT, tail) <= self.capacity() - n {
                return false;
            }
            // The tail word of an owned ring does not say it closed.
            if !self.evicts && self.is_closed() {
                return false;
            }
            if word & HEAD_WAITERS != 0 {
                return true;
            }
            // Acquire: as for `head_seq`. If the drainer moved the head in
            // between, the CAS fails and we look again.
            match self.head.compare_exchange_weak(
                word,
                word | HEAD_WAITERS,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
    }
}
