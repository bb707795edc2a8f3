//! The drainer's side of a ring: runs of published slots moved out in
//! order, and the head committed for every item moved out, even when the
//! sink unwinds.

use crate::sync::Ordering;

use super::stamp::*;
use super::storage::{Cells, SplitCells};
use super::*;

/// A run of sequences `start..end` the drainer took from a ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    /// The first sequence taken (the head the run started at: on an evicting
    /// ring, producers may have moved the head past the drainer's copy).
    pub(crate) start: usize,
    /// The ring's head after the run: the drainer's new copy.
    pub(crate) end: usize,
    /// A producer waits for room: notify the lane's notifier.
    pub(crate) notify: bool,
}

/// The drainer's run on a plain ring, should the code it calls per item
/// unwind (it runs none of the user's; this is for a bug of ours): moves the
/// head past every item already moved out, so that none is read, or dropped
/// by [`Ring`]'s drop, a second time. Forgotten when the run ends normally
/// (the drainer then moves the head itself).
pub(super) struct CommitOnUnwind<'a, T> {
    pub(super) ring: &'a Ring<T>,
    /// The sequence after the last item moved out.
    pub(super) next: usize,
}

impl<T> Drop for CommitOnUnwind<'_, T> {
    #[inline]
    fn drop(&mut self) {
        let _ = self.ring.finish_run(self.next);
    }
}

/// The drainer's run on an evicting ring, should the code it calls per item
/// unwind: marks every slot it claimed and has not marked yet as taken (the
/// item being handed over was moved out; later ones are leaked, not read),
/// so that producers waiting for those slots do not wait for ever.
/// Forgotten when the run ends normally.
pub(super) struct MarkTakenOnUnwind<'a, T> {
    pub(super) ring: &'a Ring<T>,
    pub(super) next: usize,
    pub(super) end: usize,
}

impl<T> Drop for MarkTakenOnUnwind<'_, T> {
    #[cold]
    fn drop(&mut self) {
        while self.next != self.end {
            // Release, as in `take_run_evicting`.
            self.ring
                .slot(self.next)
                .stamp
                .store(taken_stamp(self.next), Ordering::Release);
            self.next = seq_add(self.next, 1);
        }
    }
}

impl<T> Ring<T> {
    /// Reads up to `max` published items starting at `head`, in order,
    /// calling `sink(item, seq, ticket)` for each (`ticket`: the completion
    /// slot index; at most `max` calls), and returns the new head (the
    /// caller then calls [`finish_run`](Self::finish_run)). Stops at the
    /// first slot that is not yet published.
    ///
    /// Where the owner's cursor is ahead of `head` (see
    /// [`owner_cursor`](Self::owner_cursor)), the plain items below it are
    /// read without their stamps. While the ring is owned the run ends at the
    /// cursor: the owner's items past it are picked up by a later run, and
    /// the stamps the owner keeps writing are not pulled into this thread's
    /// cache.
    ///
    /// # Safety
    ///
    /// Only the single consumer calls this, with `head` equal to the ring's
    /// current head (the value it last passed to `finish_run`), and never on
    /// an evicting ring.
    #[inline]
    pub(crate) unsafe fn drain_run(
        &self,
        head: usize,
        max: usize,
        mut sink: impl FnMut(T, usize, Option<usize>),
    ) -> usize {
        debug_assert!(!self.evicts, "an evicting ring is drained by take_run");
        let mut taken = CommitOnUnwind {
            ring: self,
            next: head,
        };
        let end = match &self.storage {
            // SAFETY: the caller's contract.
            Storage::Interleaved(cells) => unsafe {
                self.drain_stamped(&**cells, head, max, &mut sink, &mut taken.next)
            },
            // SAFETY: the caller's contract.
            Storage::Split { stamps, values } => unsafe {
                self.drain_split(
                    SplitCells {
                        stamps: stamps.as_slice(),
                        values: values.as_slice(),
                    },
                    head,
                    max,
                    &mut sink,
                    &mut taken.next,
                )
            },
        };
        // No unwinding: the caller moves the head.
        core::mem::forget(taken);
        end
    }

    /// [`drain_run`](Self::drain_run) on a split ring: through the owner's
    /// cursor first, where it is ahead of `head`, then by stamp unless the
    /// ring is owned.
    ///
    /// # Safety
    ///
    /// As for `drain_run`; `cells` are this ring's.
    #[inline(always)]
    pub(super) unsafe fn drain_split(
        &self,
        cells: SplitCells<'_, T>,
        head: usize,
        max: usize,
        sink: &mut impl FnMut(T, usize, Option<usize>),
        taken: &mut usize,
    ) -> usize {
        let mut seq = head;
        let mut left = max;
        if let Some((plain, published)) = self.owner_cursor(head) {
            // Published by the owner (or, below the start of its cursor, by
            // shared producers that have left): the stamps of `head..plain`
            // say which hold tickets or nothing.
            let stamped = distance(head, plain).min(left);
            // SAFETY: the caller's contract.
            let end = unsafe { self.drain_stamped(cells, seq, stamped, sink, taken) };
            if end != seq_add(seq, stamped) {
                // Not published after all (a stamp not yet visible): stop.
                return end;
            }
            seq = end;
            left -= stamped;
            let plain_run = distance(seq, published).min(left);
            // SAFETY: the caller's contract; `seq..seq + plain_run` lies in
            // the cursor's plain run.
            seq = unsafe { self.drain_plain(cells, seq, plain_run, sink, taken) };
            left -= plain_run;
            if left == 0 {
                return seq;
            }
        }
        // Relaxed: a hint. A ring owned since is read by stamp, which the
        // owner writes too; one disowned since is read by the next run.
        if self.owner.flags.load(Ordering::Relaxed) & FLAG_OWNED != 0 {
            return seq;
        }
        // SAFETY: the caller's contract.
        unsafe { self.drain_stamped(cells, seq, left, sink, taken) }
    }

    /// [`drain_run`](Self::drain_run) by stamp: up to `max` published items
    /// from `seq`, stopping at the first slot not published. Returns the
    /// next sequence; `taken` follows the sequence after the last item
    /// moved out, for the run's guard (see [`CommitOnUnwind`]).
    ///
    /// # Safety
    ///
    /// As for `drain_run`, with `seq` at or past its `head` and every
    /// sequence below `seq` drained; `cells` are this ring's.
    #[inline(always)]
    pub(super) unsafe fn drain_stamped<'a>(
        &self,
        cells: impl Cells<'a, T>,
        mut seq: usize,
        max: usize,
        sink: &mut impl FnMut(T, usize, Option<usize>),
        taken: &mut usize,
    ) -> usize
    where
        T: 'a,
    {
        // In a local: the Acquire loads below keep the compiler from reusing
        // fields it read before them, so it would reload this per item.
        let mask = self.mask;
        for _ in 0..max {
            // SAFETY: masked by `capacity - 1`.
            let slot = unsafe { cells.slot(seq & mask) };
            // Acquire pairs with the Release store in `publish`/`publish_skip`.
            let stamp = slot.stamp.load(Ordering::Acquire);
            if !publishes(stamp, seq) {
                break;
            }
            if stamp & STAMP_SKIP == 0 {
                // SAFETY: the stamp shows the slot published for `seq`, so it
                // holds an initialised value that no producer touches until
                // `head` moves past it; we move it out exactly once.
                let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
                *taken = seq_add(seq, 1);
                // Two calls, so that the plain item's (the common case)
                // is inlined with its origin known.
                if stamp & STAMP_TICKET == 0 {
                    sink(value, seq, None);
                } else {
                    sink(value, seq, Some(stamp >> STAMP_SLOT_SHIFT));
                }
            }
            seq = seq_add(seq, 1);
        }
        seq
    }

    /// [`drain_run`](Self::drain_run) through the owner's cursor: the `n`
    /// plain items from `seq`, read without their stamps. Returns the next
    /// sequence.
    ///
    /// # Safety
    ///
    /// As for [`drain_stamped`](Self::drain_stamped), and
    /// [`owner_cursor`](Self::owner_cursor) said that `seq..seq + n` are
    /// published plain items.
    #[inline(always)]
    pub(super) unsafe fn drain_plain(
        &self,
        cells: SplitCells<'_, T>,
        mut seq: usize,
        n: usize,
        sink: &mut impl FnMut(T, usize, Option<usize>),
        taken: &mut usize,
    ) -> usize {
        let mask = self.mask;
        for _ in 0..n {
            // SAFETY: masked by `capacity - 1`.
            let slot = unsafe { cells.slot(seq & mask) };
            // The owner wrote this item before its Release store moved the
            // cursor past it, which `owner_cursor` loaded with Acquire; no
            // producer touches the slot until `head` moves past it.
            // SAFETY: initialised (above); we move it out exactly once.
            let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
            *taken = seq_add(seq, 1);
            sink(value, seq, None);
            seq = seq_add(seq, 1);
        }
        seq
    }

    /// Moves `head` to `new_head` after a run: the slots below it are free.
    /// Returns true if a producer flagged that it waits for room (the caller
    /// then notifies the lane's [`Notifier`](crate::wait::Notifier)).
    ///
    /// AcqRel swap: Release pairs with the Acquire loads of `head` in
    /// `try_claim` (the slots below it were read); being an RMW, it sees a
    /// waiter flag set by any earlier RMW on the word.
    #[inline]
    pub(crate) fn finish_run(&self, new_head: usize) -> bool {
        debug_assert!(!self.evicts, "an evicting ring is drained by take_run");
        self.head.swap(new_head << HEAD_SHIFT, Ordering::AcqRel) & HEAD_WAITERS != 0
    }

    /// The drainer's run on any ring: up to `max` published items, in order,
    /// each passed to `sink(item, seq, ticket)` as in
    /// [`drain_run`](Self::drain_run), then the head moved on. On a plain
    /// ring this is `drain_run` and `finish_run` from `head`; on an evicting
    /// ring, [`take_run_evicting`](Self::take_run_evicting) from the ring's
    /// current head (`head` is ignored).
    ///
    /// # Safety
    ///
    /// Only the drainer calls this, with `head` as for `drain_run`.
    #[inline(always)]
    pub(crate) unsafe fn take_run(
        &self,
        head: usize,
        max: usize,
        sink: impl FnMut(T, usize, Option<usize>),
    ) -> Run {
        if self.evicts {
            // SAFETY: the caller is the drainer.
            return unsafe { self.take_run_evicting(max, sink) };
        }
        // SAFETY: the caller's contract.
        let end = unsafe { self.drain_run(head, max, sink) };
        Run {
            start: head,
            end,
            notify: end != head && self.finish_run(end),
        }
    }
}
