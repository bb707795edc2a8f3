//! The task side of a producer: polling for room instead of blocking.

use core::task::{Context, Poll};

use crate::Producer;
use crate::completion::Ticket;
use crate::config::Backpressure;
use crate::error::{Error, RefusedKind, SubmitError};
use crate::producer::{Wait, refused};
use crate::ring::ClaimError;

/// What stopped a submission attempt that does not wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// The lane's ring is full.
    Ring,
    /// Every completion slot of the lane is held by a ticket.
    Slots,
    /// The batcher is closed.
    Closed,
}

/// The task side: submissions that wait for room by returning `Pending` and
/// storing the task's waker with the lane's notifier, never by blocking the
/// thread. Each poll either accepts the item (claim and publish happen within
/// the poll) or leaves it with the caller, so a future dropped while pending
/// leaves nothing in the lane.
impl<T, R> Producer<T, R> {
    /// One fire-and-forget attempt, never waiting.
    pub(crate) fn attempt_push(&self, item: T) -> Result<(), (T, Blocked)> {
        match self.try_claim_or_evict(1) {
            Ok(claim) => {
                // SAFETY: we claimed `claim.seq` and publish it once.
                unsafe { self.publish_plain(claim.seq, item) };
                if claim.wake_drainer {
                    self.shared.unpark_drainer();
                }
                Ok(())
            }
            Err(ClaimError::Closed) => Err((item, Blocked::Closed)),
            Err(ClaimError::Full) => Err((item, Blocked::Ring)),
        }
    }

    /// One attempt with a ticket, never waiting; holds no completion slot
    /// when it fails.
    pub(crate) fn attempt_submit(&self, item: T, expires: u64) -> Result<Ticket<R>, (T, Blocked)> {
        let item = match self.try_direct(item, expires) {
            Ok(ticket) => return Ok(ticket),
            Err(item) => item,
        };
        let ring = &self.lane_ref().ring;
        let slots = self.shared.table.lane(self.ring);
        let mut index = [0usize; 1];
        let mut cursor = self.next_slot.get();
        let acquired = slots.try_acquire(&mut cursor, &mut index);
        self.next_slot.set(cursor);
        if !acquired {
            let blocked = if ring.is_closed() {
                Blocked::Closed
            } else {
                Blocked::Slots
            };
            return Err((item, blocked));
        }
        match self.try_claim_or_evict(1) {
            Ok(claim) => {
                // SAFETY: we claimed `claim.seq` and armed slot `index[0]`;
                // both are used once, here.
                let ticket =
                    unsafe { self.publish_ticketed_expiring(claim.seq, index[0], item, expires) };
                if claim.wake_drainer {
                    // (`inline_when_idle`: may run the batch right here.)
                    self.shared.wake_for_ticket();
                }
                Ok(ticket)
            }
            Err(error) => {
                // SAFETY: armed above, nothing published with it, no ticket.
                unsafe { slots.release_unused(&index) };
                let blocked = match error {
                    ClaimError::Closed => Blocked::Closed,
                    ClaimError::Full => Blocked::Ring,
                };
                Err((item, blocked))
            }
        }
    }

    /// Registers the task to be woken when what `blocked` names may have
    /// changed; `Ready` means "retry now" (it changed while arming).
    pub(crate) fn poll_room(&self, blocked: Blocked, cx: &mut Context<'_>) -> Poll<()> {
        let ring = &self.lane_ref().ring;
        let slots = self.shared.table.lane(self.ring);
        match blocked {
            // Under the notifier's lock, as in `claim_slow`.
            Blocked::Ring => slots
                .notifier
                .poll_if_armed(cx.waker(), || ring.arm_room_waiter(1)),
            // As in `acquire_slow`.
            Blocked::Slots => slots
                .notifier
                .poll_if_armed(cx.waker(), || !ring.is_closed() && slots.arm_waiter()),
            Blocked::Closed => Poll::Ready(()),
        }
    }

    /// Polls a fire-and-forget submission of `item` (taken from the option
    /// when accepted or refused; left there while pending), following the
    /// backpressure policy with a task's wait for `Block`.
    pub(crate) fn poll_push(
        &self,
        item: &mut Option<T>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SubmitError<T>>> {
        loop {
            let value = item
                .take()
                .expect("a submission future polled after it finished");
            let (value, blocked) = match self.attempt_push(value) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(refused_with) => refused_with,
            };
            match self.policy_for(blocked) {
                Some(kind) if self.drops_when_full(kind, Wait::Policy) => {
                    self.drop_new(value);
                    return Poll::Ready(Ok(()));
                }
                Some(kind) => return Poll::Ready(Err(refused(self.refuse(kind, 1), value))),
                // Room comes from the drainer, which waits for this handler.
                None if self.shared.called_back() => {
                    let kind = self.refuse(RefusedKind::Full, 1);
                    return Poll::Ready(Err(refused(kind, value)));
                }
                None => {}
            }
            *item = Some(value);
            if self.poll_room(blocked, cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// Polls a submission with a ticket; as [`poll_push`](Self::poll_push).
    /// Under `DropNewest` a dropped item's ticket resolves to
    /// [`Error::Dropped`].
    pub(crate) fn poll_submit(
        &self,
        item: &mut Option<T>,
        expires: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Ticket<R>, SubmitError<T>>> {
        loop {
            let value = item
                .take()
                .expect("a submission future polled after it finished");
            let (value, blocked) = match self.attempt_submit(value, expires) {
                Ok(ticket) => return Poll::Ready(Ok(ticket)),
                Err(refused_with) => refused_with,
            };
            match self.policy_for(blocked) {
                Some(kind) if self.drops_when_full(kind, Wait::Policy) => {
                    self.drop_new(value);
                    return Poll::Ready(Ok(Ticket::ready(Err(Error::Dropped))));
                }
                Some(kind) => return Poll::Ready(Err(refused(self.refuse(kind, 1), value))),
                // Room comes from the drainer, which waits for this handler.
                None if self.shared.called_back() => {
                    let kind = self.refuse(RefusedKind::Full, 1);
                    return Poll::Ready(Err(refused(kind, value)));
                }
                None => {}
            }
            *item = Some(value);
            if self.poll_room(blocked, cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// `None` if the task should wait (`Block`), else the refusal.
    pub(crate) fn policy_for(&self, blocked: Blocked) -> Option<RefusedKind> {
        match blocked {
            Blocked::Closed => Some(RefusedKind::Closed),
            Blocked::Ring | Blocked::Slots => match self.shared.config.backpressure {
                Backpressure::Block => None,
                Backpressure::IncreaseBatchSize => {
                    if matches!(blocked, Blocked::Ring) {
                        self.shared.signal_pressure();
                    }
                    None
                }
                Backpressure::Reject | Backpressure::DropNewest | Backpressure::DropOldest => {
                    Some(RefusedKind::Full)
                }
            },
        }
    }
}
