//! Single submissions: `push` and `submit` in their waiting, timed and
//! non-blocking forms, deadlines, and the direct path of `inline_when_idle`.

use std::time::{Duration, Instant};

use crate::Producer;
use crate::completion::Ticket;
use crate::engine::Inline;
use crate::error::{Error, SubmitError};
use crate::producer::{Wait, deadline, refused};
use crate::shape::{NEVER, Priority};

impl<T, R> Producer<T, R> {
    /// Stamps sequence `seq`'s expiry before it is published, when the
    /// batcher keeps expiry stamps (deadlines or a maximum age); nothing
    /// otherwise.
    #[inline(always)]
    pub(crate) fn stamp_expiry(&self, seq: usize, explicit: u64) {
        if let Some(expiry) = &self.lane_ref().expiry {
            expiry.stamp(seq, explicit);
        }
    }

    /// `deadline` as an expiry stamp, if the batcher keeps expiry stamps.
    pub(crate) fn expiry_of(&self, deadline: Instant) -> Option<u64> {
        self.lane_ref()
            .expiry
            .as_ref()
            .map(|expiry| expiry.deadline_ns(deadline))
    }

    /// Publishes a fire-and-forget item at the claimed `seq`.
    ///
    /// # Safety
    ///
    /// `seq` was claimed by this producer and is published once.
    #[inline(always)]
    pub(crate) unsafe fn publish_plain(&self, seq: usize, item: T) {
        self.stamp_expiry(seq, NEVER);
        // SAFETY: the caller's contract.
        unsafe { self.lane_ref().ring.publish(seq, item, None, self.claims()) };
    }
}

impl<T, R> Producer<T, R> {
    #[inline(always)]
    pub(crate) fn push_with(&self, item: T, wait: Wait) -> Result<(), SubmitError<T>> {
        match self.claim(1, wait) {
            Ok(claim) => {
                // SAFETY: we claimed `claim.seq` and publish it once.
                unsafe { self.publish_plain(claim.seq, item) };
                if claim.wake_drainer {
                    self.shared.unpark_drainer();
                }
                Ok(())
            }
            Err(kind) if self.drops_when_full(kind, wait) => {
                self.drop_new(item);
                Ok(())
            }
            Err(kind) => Err(refused(self.refuse(kind, 1), item)),
        }
    }

    #[inline(always)]
    pub(crate) fn submit_with(&self, item: T, wait: Wait) -> Result<Ticket<R>, SubmitError<T>> {
        self.submit_expiring(item, wait, NEVER)
    }

    /// A submission with a ticket whose item expires at `expires` (ns since
    /// the batcher's epoch; [`NEVER`] for none).
    #[inline(always)]
    pub(crate) fn submit_expiring(
        &self,
        item: T,
        wait: Wait,
        expires: u64,
    ) -> Result<Ticket<R>, SubmitError<T>> {
        let item = match self.try_direct(item, expires) {
            Ok(ticket) => return Ok(ticket),
            Err(item) => item,
        };
        let mut index = [0usize; 1];
        match self.claim_ticketed(&mut index, wait) {
            Ok(claim) => {
                // SAFETY: we claimed `claim.seq` and armed completion slot
                // `index[0]`; both are used once, here.
                let ticket =
                    unsafe { self.publish_ticketed_expiring(claim.seq, index[0], item, expires) };
                if claim.wake_drainer {
                    // (`inline_when_idle`: may run the batch right here.)
                    self.shared.wake_for_ticket();
                }
                Ok(ticket)
            }
            Err(kind) if self.drops_when_full(kind, wait) => {
                self.drop_new(item);
                Ok(Ticket::ready(Err(Error::Dropped)))
            }
            Err(kind) => Err(refused(self.refuse(kind, 1), item)),
        }
    }

    /// `inline_when_idle`'s direct path: if the drainer sleeps (its park
    /// announcement is still on this lane), its state is free at once and
    /// nothing submitted before on this lane waits, handles `item` on this
    /// thread as a batch of one and returns a ticket that holds the result.
    /// Otherwise gives the item back for the path through the lane. Items
    /// with an expiry take the lane.
    #[inline(always)]
    pub(crate) fn try_direct(&self, item: T, expires: u64) -> Result<Ticket<R>, T> {
        self.try_direct_result(item, expires).map(Ticket::ready)
    }

    /// [`try_direct`](Self::try_direct), returning the result itself.
    #[inline(always)]
    pub(crate) fn try_direct_result(&self, item: T, expires: u64) -> Result<Result<R, Error>, T> {
        match &self.shared.inline {
            Some(Inline {
                cell,
                direct: Some(direct),
                ..
            }) if expires == NEVER && self.lane_ref().ring.looks_parked(self.claims()) => {
                direct(cell, self.ring, item)
            }
            _ => Err(item),
        }
    }

    /// Publishes `item` at the claimed `seq` with the armed completion slot
    /// `index`, and returns its ticket. The caller wakes the drainer if its
    /// claim asked for it.
    ///
    /// # Safety
    ///
    /// `seq` was claimed and completion slot `index` armed by this producer;
    /// each is used once, here.
    #[inline(always)]
    pub(crate) unsafe fn publish_ticketed_at(
        &self,
        seq: usize,
        index: usize,
        item: T,
    ) -> Ticket<R> {
        // SAFETY: the caller's contract.
        unsafe { self.publish_ticketed_expiring(seq, index, item, NEVER) }
    }

    /// [`publish_ticketed_at`](Self::publish_ticketed_at) with an explicit
    /// expiry (nanoseconds since the batcher's epoch).
    ///
    /// # Safety
    ///
    /// As for `publish_ticketed_at`.
    #[inline(always)]
    pub(crate) unsafe fn publish_ticketed_expiring(
        &self,
        seq: usize,
        index: usize,
        item: T,
        expires: u64,
    ) -> Ticket<R> {
        self.stamp_expiry(seq, expires);
        // SAFETY: the caller's contract; the slot was armed before the
        // stamp's Release store in `publish`, which carries it to the drainer.
        unsafe {
            self.lane_ref()
                .ring
                .publish(seq, item, Some(index), self.claims());
            self.shared.table.ticket(self.ring, index, seq)
        }
    }

    /// Submits `item` fire-and-forget, following the batcher's
    /// [`Backpressure`](crate::Backpressure) policy when the lane is full.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Closed`] after shutdown; [`SubmitError::Full`] under
    /// [`Backpressure::Reject`](crate::Backpressure::Reject). Under `DropNewest` a full lane drops the item
    /// (counted) and returns `Ok`; under `DropOldest` it evicts the oldest
    /// queued item (counted) and accepts this one.
    #[inline]
    pub fn push(&self, item: T) -> Result<(), SubmitError<T>> {
        self.push_with(item, Wait::Policy)
    }

    /// Submits `item` fire-and-forget if there is room now; never waits.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] or [`SubmitError::Closed`], with the item.
    #[inline]
    pub fn try_push(&self, item: T) -> Result<(), SubmitError<T>> {
        self.push_with(item, Wait::Never)
    }

    /// Submits `item` fire-and-forget, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Timeout`] or [`SubmitError::Closed`], with the item.
    pub fn push_timeout(&self, item: T, timeout: Duration) -> Result<(), SubmitError<T>> {
        self.push_with(item, deadline(timeout))
    }

    /// Submits `item` and returns a [`Ticket`] for its result, following the
    /// batcher's [`Backpressure`](crate::Backpressure) policy when the lane is full.
    ///
    /// # Errors
    ///
    /// As for [`push`](Self::push); under `DropNewest` the ticket resolves to
    /// [`Error::Dropped`] (as does an evicted item's, under `DropOldest`).
    #[inline]
    pub fn submit(&self, item: T) -> Result<Ticket<R>, SubmitError<T>> {
        self.submit_with(item, Wait::Policy)
    }

    /// Submits `item` with a ticket if there is room now; never waits.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] or [`SubmitError::Closed`], with the item.
    #[inline]
    pub fn try_submit(&self, item: T) -> Result<Ticket<R>, SubmitError<T>> {
        self.submit_with(item, Wait::Never)
    }

    /// Submits `item` with a ticket, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Timeout`] or [`SubmitError::Closed`], with the item.
    pub fn submit_timeout(&self, item: T, timeout: Duration) -> Result<Ticket<R>, SubmitError<T>> {
        self.submit_with(item, deadline(timeout))
    }

    /// Submits `item` with a ticket that must be dispatched before
    /// `deadline`: if it is still waiting in the lane or the drainer's
    /// staging area then, it never reaches the handler and its ticket fails
    /// with [`Error::Expired`] (counted in [`Stats::expired`](crate::Stats::expired)). Follows the
    /// [`Backpressure`](crate::Backpressure) policy while the lane is full. A batcher-wide
    /// `max_age` applies too; the earlier limit wins.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ringbatch::{Batch, Batcher, Error};
    ///
    /// let batcher = Batcher::builder()
    ///     .deadlines(true)
    ///     .handler_fn(|batch: &mut Batch<'_, u32, u32>| {
    ///         batch.ok_with(|x| *x);
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let producer = batcher.producer();
    /// let late = producer.submit_with_deadline(1, Instant::now()).unwrap();
    /// assert!(matches!(late.wait(), Err(Error::Expired)));
    /// let fresh = Instant::now() + Duration::from_secs(60);
    /// assert_eq!(producer.submit_with_deadline(2, fresh).unwrap().wait().unwrap(), 2);
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`submit`](Self::submit), and [`SubmitError::NoDeadlines`] if
    /// the batcher was built without [`deadlines`](crate::BatcherBuilder::deadlines)
    /// or `max_age`.
    pub fn submit_with_deadline(
        &self,
        item: T,
        deadline: Instant,
    ) -> Result<Ticket<R>, SubmitError<T>> {
        let Some(expiry) = &self.lane_ref().expiry else {
            return Err(SubmitError::NoDeadlines(item));
        };
        let expires = expiry.deadline_ns(deadline);
        self.submit_expiring(item, Wait::Policy, expires)
    }

    /// [`submit`](Self::submit) in priority class `priority`, whatever this
    /// producer's own class: the item goes into that class's ring of this
    /// producer's lane. Items this producer submits in one class keep their
    /// order; items in different classes are taken by class (see
    /// [`Priority`], which maps numeric levels onto classes: levels 8 and
    /// above are dispatched at once). The first submission in a class
    /// joins its ring (once); later ones cost what `submit` costs.
    ///
    /// ```
    /// use ringbatch::{Batch, Batcher, Priority};
    ///
    /// let batcher = Batcher::builder()
    ///     .priorities(true)
    ///     .handler_fn(|batch: &mut Batch<'_, &str, ()>| {
    ///         batch.ok_with(|_| ());
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let producer = batcher.producer();
    /// producer.push("routine").unwrap();
    /// let urgent = Priority::from_level(9).unwrap();
    /// producer.submit_with_priority("cancel order", urgent).unwrap().wait().unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`submit`](Self::submit), and [`SubmitError::NoPriorities`] if
    /// the batcher was built without [`priorities`](crate::BatcherBuilder::priorities)
    /// and `priority` is not `Normal`.
    pub fn submit_with_priority(
        &self,
        item: T,
        priority: Priority,
    ) -> Result<Ticket<R>, SubmitError<T>> {
        match self.in_class(priority) {
            Some(producer) => producer.submit(item),
            None => Err(SubmitError::NoPriorities(item)),
        }
    }

    /// [`push`](Self::push) in priority class `priority`; see
    /// [`submit_with_priority`](Self::submit_with_priority).
    ///
    /// # Errors
    ///
    /// As for [`push`](Self::push), and [`SubmitError::NoPriorities`] as for
    /// `submit_with_priority`.
    pub fn push_with_priority(&self, item: T, priority: Priority) -> Result<(), SubmitError<T>> {
        match self.in_class(priority) {
            Some(producer) => producer.push(item),
            None => Err(SubmitError::NoPriorities(item)),
        }
    }
}
