//! Slices: `push_slice` and `submit_many`, one claim for a run of items.

use crate::Producer;
use crate::completion::Ticket;
use crate::error::{Error, SliceError};
use crate::producer::Wait;
use crate::ring::{Claim, distance};
use crate::stats::LaneCounters;

/// Most tickets one claim of [`Producer::submit_many`] covers: their
/// completion slot indexes are kept on the stack between claim and publish.
pub(crate) const TICKET_CHUNK: usize = 64;

impl<T, R> Producer<T, R> {
    /// Submits clones of `items` fire-and-forget, in order, claiming slots for
    /// up to a lane's capacity of them with one cursor move.
    ///
    /// # Errors
    ///
    /// A [`SliceError`] saying how many leading items were accepted and why
    /// the rest were not. Under `DropNewest`, items that do not fit are
    /// dropped and counted instead; under `DropOldest` the lane's oldest
    /// items are evicted to make room.
    pub fn push_slice(&self, items: &[T]) -> Result<(), SliceError>
    where
        T: Clone,
    {
        self.slice_with(items, None)
    }

    /// Submits clones of `items` in order, claiming slots for up to a lane's
    /// capacity of them with one cursor move, and appends one ticket per
    /// accepted item to `tickets`.
    ///
    /// # Errors
    ///
    /// As for [`push_slice`](Self::push_slice); a dropped item's ticket
    /// resolves to [`Error::Dropped`].
    pub fn submit_many(&self, items: &[T], tickets: &mut Vec<Ticket<R>>) -> Result<(), SliceError>
    where
        T: Clone,
    {
        self.slice_with(items, Some(tickets))
    }

    pub(crate) fn slice_with(
        &self,
        items: &[T],
        mut tickets: Option<&mut Vec<Ticket<R>>>,
    ) -> Result<(), SliceError>
    where
        T: Clone,
    {
        // A claim covers up to a lane's capacity; with tickets, also at most
        // `TICKET_CHUNK` (their completion slot indexes are kept on the
        // stack) and the lane's completion slot count.
        let capacity = self.shared.config.capacity;
        let chunk_size = match tickets {
            None => capacity,
            Some(_) => TICKET_CHUNK
                .min(capacity)
                .min(self.shared.table.lane(self.ring).len()),
        };
        let mut indexes = [0usize; TICKET_CHUNK];
        let mut accepted = 0;
        for chunk in items.chunks(chunk_size) {
            let n = chunk.len();
            if let Some(tickets) = tickets.as_deref_mut() {
                // Reserve before claiming, so nothing can fail between arming
                // a slot and handing out its ticket.
                tickets.reserve(n);
            }
            let claimed = match tickets {
                None => self.claim(n, Wait::Policy),
                Some(_) => self.claim_ticketed(&mut indexes[..n], Wait::Policy),
            };
            match claimed {
                Ok(claim) => {
                    let indexes = tickets.as_ref().map(|_| &indexes[..n]);
                    self.fill(claim, chunk, indexes, tickets.as_deref_mut());
                    accepted += n;
                }
                Err(kind) if self.drops_when_full(kind, Wait::Policy) => {
                    let rest = items.len() - accepted;
                    self.count_dropped(rest as u64);
                    if self.shared.spill.is_some() {
                        items[accepted..]
                            .iter()
                            .for_each(|item| self.spill(item.clone()));
                    }
                    if let Some(tickets) = tickets.as_deref_mut() {
                        tickets.extend((0..rest).map(|_| Ticket::ready(Err(Error::Dropped))));
                    }
                    return Ok(());
                }
                Err(kind) => {
                    let rest = (items.len() - accepted) as u64;
                    return Err(SliceError {
                        accepted,
                        kind: self.refuse(kind, rest),
                    });
                }
            }
        }
        Ok(())
    }

    /// Fills the claimed run with clones of `chunk` (with tickets when
    /// `indexes` holds the armed completion slots, one per item). If a clone
    /// panics, the rest of the run is published empty and its completion
    /// slots given back, so that the lane is not blocked.
    pub(crate) fn fill(
        &self,
        claim: Claim,
        chunk: &[T],
        indexes: Option<&[usize]>,
        mut tickets: Option<&mut Vec<Ticket<R>>>,
    ) where
        T: Clone,
    {
        struct Guard<'a, T, R> {
            producer: &'a Producer<T, R>,
            next: usize,
            end: usize,
            /// Completion slots armed for the items not yet published.
            unused: &'a [usize],
            wake: bool,
        }
        impl<T, R> Drop for Guard<'_, T, R> {
            fn drop(&mut self) {
                let lane = self.producer.lane_ref();
                let skipped = distance(self.next, self.end);
                if skipped > 0 {
                    LaneCounters::add(&lane.counters.skipped, skipped as u64);
                }
                while self.next != self.end {
                    // SAFETY: the run `next..end` is claimed by us and not yet
                    // published.
                    unsafe { lane.ring.publish_skip(self.next, self.producer.claims()) };
                    self.next = crate::ring::seq_add(self.next, 1);
                }
                let slots = self.producer.shared.table.lane(self.producer.ring);
                // SAFETY: armed by us for items that were never published.
                unsafe { slots.release_unused(self.unused) };
                if self.wake {
                    self.producer.shared.unpark_drainer();
                }
            }
        }
        let mut guard = Guard {
            producer: self,
            next: claim.seq,
            end: crate::ring::seq_add(claim.seq, chunk.len()),
            unused: indexes.unwrap_or(&[]),
            wake: claim.wake_drainer,
        };
        for item in chunk {
            let value = item.clone();
            let seq = guard.next;
            match (tickets.as_deref_mut(), guard.unused.split_first()) {
                (Some(tickets), Some((&index, rest))) => {
                    // SAFETY: `seq` is claimed and completion slot `index`
                    // armed by us, each used once; `tickets` has room
                    // reserved, so the push cannot fail after publishing.
                    tickets.push(unsafe { self.publish_ticketed_at(seq, index, value) });
                    guard.unused = rest;
                }
                // SAFETY: `seq` is claimed and published once.
                _ => unsafe { self.publish_plain(seq, value) },
            }
            guard.next = crate::ring::seq_add(seq, 1);
        }
        // Dropping the guard wakes the drainer if it asked to be.
    }
}
