//! Evicting rings (`Backpressure::DropOldest`): claims gated on taken
//! stamps, the drainer's run claimed by a CAS on the head, and a producer's
//! eviction of the oldest item.

use crate::sync::Ordering;

use super::drain::MarkTakenOnUnwind;
use super::stamp::*;
use super::*;

/// What [`Ring::evict_oldest`] did.
#[derive(Debug)]
pub(crate) enum Evicted<T> {
    /// Moved the oldest item out: the item, and its completion slot index if
    /// it carries a ticket.
    Item(T, Option<usize>),
    /// Stepped over a slot published empty (room made, nothing dropped).
    Skip,
    /// Nothing evicted: the claim has room now, or the lane is closed.
    Room,
    /// Nothing evicted: the oldest slot is claimed but not yet published, or
    /// another consumer moved the head first. Retry after a pause.
    Busy,
}

impl<T> Ring<T> {
    /// [`try_claim`](Self::try_claim) on an evicting ring: the claim keeps
    /// the `EVICTS` flag, and returns only once the claimed slots are free
    /// (see [`await_taken`](Self::await_taken)).
    #[inline(never)]
    pub(super) fn try_claim_evicting(
        &self,
        n: usize,
        cached_head: &mut usize,
    ) -> Result<Claim, ClaimError> {
        debug_assert!(self.evicts);
        let room = self.capacity() - n;
        let mut word = self.tail.load(Ordering::Relaxed);
        loop {
            if word & CLOSED != 0 {
                return Err(ClaimError::Closed);
            }
            let seq = word >> SEQ_SHIFT;
            if distance(*cached_head, seq) > room {
                *cached_head = self.head_seq();
                if distance(*cached_head, seq) > room {
                    return Err(ClaimError::Full);
                }
            }
            // Relaxed, as in `try_claim`.
            match self.tail.compare_exchange_weak(
                word,
                (seq_add(seq, n) << SEQ_SHIFT) | EVICTS,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.await_taken(seq, n);
                    return Ok(Claim {
                        seq,
                        wake_drainer: word & PARKED != 0,
                    });
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Evicting ring, after a claim of `seq..seq + n`: waits until the
    /// consumers that claimed the previous lap of those slots have moved
    /// their items out (they are between their head CAS and their taken
    /// stamp, so the wait is short).
    #[inline]
    pub(super) fn await_taken(&self, seq: usize, n: usize) {
        let capacity = self.capacity();
        let mut backoff = crate::wait::Backoff::new(crate::wait::WaitStrategy::Yield);
        for k in 0..n {
            let seq = seq_add(seq, k);
            let free = taken_stamp(previous_lap(seq, capacity));
            // Acquire pairs with the Release store of the taken stamp in
            // `take_run_evicting` / `evict_oldest`: the consumer's reads of
            // the slot (and of the sequence's expiry stamp) happen before
            // our writes. The stamp is the previous lap's, published or
            // taken: our claim saw `head` past it, and consumers move `head`
            // only over published slots.
            while self.slot(seq).stamp.load(Ordering::Acquire) != free {
                backoff.snooze();
            }
        }
    }

    /// The drainer's run on an evicting ring: finds up to `max` published
    /// slots from the current head, claims them with one CAS on the head
    /// (clearing [`HEAD_WAITERS`] and reporting it), then moves the items out
    /// in order, passing each to `sink` as [`drain_run`](Self::drain_run)
    /// does, and marks each slot taken after its `sink` call returns (so
    /// `sink` may read data kept per sequence).
    ///
    /// # Safety
    ///
    /// Only the drainer calls this (producers consume by `evict_oldest`).
    pub(crate) unsafe fn take_run_evicting(
        &self,
        max: usize,
        mut sink: impl FnMut(T, usize, Option<usize>),
    ) -> Run {
        debug_assert!(self.evicts);
        // Acquire: as for `head_seq` (and a failed CAS below re-reads it so).
        let mut word = self.head.load(Ordering::Acquire);
        let (start, end, notify) = loop {
            let start = word >> HEAD_SHIFT;
            let stop = seq_add(start, max);
            let mut end = start;
            // Acquire pairs with the Release store in `publish` /
            // `publish_skip`: the items of the run are visible to us.
            while end != stop && holds(self.slot(end).stamp.load(Ordering::Acquire), end) {
                end = seq_add(end, 1);
            }
            if end == start {
                return Run {
                    start,
                    end,
                    notify: false,
                };
            }
            // AcqRel: Release pairs with the Acquire loads of `head` by
            // producers (`try_claim`, `await_taken` relies on it) and by
            // evictors; Acquire on failure sees the head another consumer
            // moved. Being an RMW it sees a waiter flag set before it.
            match self.head.compare_exchange(
                word,
                end << HEAD_SHIFT,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break (start, end, word & HEAD_WAITERS != 0),
                Err(actual) => word = actual,
            }
        };
        let mut marks = MarkTakenOnUnwind {
            ring: self,
            next: start,
            end,
        };
        while marks.next != end {
            let seq = marks.next;
            let slot = self.slot(seq);
            // Relaxed: the stamp is the one loaded with Acquire above (only the
            // consumer that claimed `seq`, we, changes it now).
            let stamp = slot.stamp.load(Ordering::Relaxed);
            debug_assert!(holds(stamp, seq));
            if stamp & STAMP_SKIP == 0 {
                // SAFETY: our CAS claimed `seq` for us alone, its stamp shows
                // an initialised item, and no producer writes the slot before
                // our taken stamp below; we move the item out exactly once.
                let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
                let ticket = (stamp & STAMP_TICKET != 0).then_some(stamp >> STAMP_SLOT_SHIFT);
                sink(value, seq, ticket);
            }
            // Release pairs with the Acquire load in `await_taken`: our read of
            // the slot happens before the next lap's producer writes it.
            slot.stamp.store(taken_stamp(seq), Ordering::Release);
            marks.next = seq_add(seq, 1);
        }
        core::mem::forget(marks);
        Run { start, end, notify }
    }

    /// Producer side on an evicting ring whose claim of `n` slots failed: if
    /// the lane is still full (and open), claims the oldest slot with a CAS
    /// on the head (keeping the [`HEAD_WAITERS`] flag for the drainer to
    /// clear) and moves its item out.
    pub(crate) fn evict_oldest(&self, n: usize) -> Evicted<T> {
        debug_assert!(self.evicts);
        // Acquire: as for `head_seq`. Loaded before the tail, so the tail
        // read below is at or past it.
        let word = self.head.load(Ordering::Acquire);
        let head = word >> HEAD_SHIFT;
        let (tail, flags) = self.tail();
        if flags & CLOSED != 0 || distance(head, tail) <= self.capacity() - n {
            return Evicted::Room;
        }
        let slot = self.slot(head);
        // Acquire pairs with the Release store in `publish` / `publish_skip`.
        let stamp = slot.stamp.load(Ordering::Acquire);
        if !holds(stamp, head) {
            // Claimed and not yet published (or taken since we read `head`).
            return Evicted::Busy;
        }
        // AcqRel, as in `take_run_evicting`. Failure: another consumer moved the
        // head; Relaxed, since we start over from a fresh load.
        if self
            .head
            .compare_exchange(
                word,
                (seq_add(head, 1) << HEAD_SHIFT) | (word & HEAD_WAITERS),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return Evicted::Busy;
        }
        let evicted = if stamp & STAMP_SKIP == 0 {
            // SAFETY: as in `take_run_evicting`: our CAS claimed `head`, its
            // stamp shows an initialised item, moved out once, here.
            let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
            let ticket = (stamp & STAMP_TICKET != 0).then_some(stamp >> STAMP_SLOT_SHIFT);
            Evicted::Item(value, ticket)
        } else {
            Evicted::Skip
        };
        // Release: as in `take_run_evicting`.
        slot.stamp.store(taken_stamp(head), Ordering::Release);
        evicted
    }
}
