//! [`AsyncProducer`]: submissions that wait for room as tasks do, by
//! returning `Pending`, never by blocking the thread.
//!
//! It works with any executor: a task waiting for room stores its waker with
//! the lane's notifier, which the drainer wakes when it frees ring slots and
//! a ticket wakes when it frees a completion slot (the same protocol that
//! parks waiting threads, so no wake-up is lost). Results come back through
//! [`Ticket`], which is a `Future`.

use core::fmt;
use core::future::poll_fn;

use crate::completion::Ticket;
use crate::error::{Error, SubmitError};
use crate::producer::Producer;
use crate::shape::Priority;

/// A producer for async tasks: `push(item).await` (fire and forget),
/// `submit(item).await` (a [`Ticket`] once accepted, as on a thread) and
/// `call(item).await` (the result).
///
/// Made by [`Batcher::async_producer`](crate::Batcher::async_producer). Like
/// [`Producer`] it is bound to one lane for its life (its items stay in
/// order), `Send` and cheap; its methods take `&mut self`, so the futures
/// they return are `Send` and a task can hold one across `.await`.
///
/// When the lane is full the backpressure policy applies as for
/// [`Producer`], except that [`Backpressure::Block`](crate::Backpressure::Block)
/// waits asynchronously: the task is woken when the drainer frees room.
///
/// # Cancel safety
///
/// Every method is cancel-safe in this sense: a future dropped before it
/// completes has either not accepted the item (the item is dropped with the
/// future and nothing is left in the lane) or, for
/// [`call`](Self::call), has accepted it, in which case the item is
/// still handled exactly once and its result is dropped when it arrives.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use ringbatch::{Batch, Batcher, Error};
///
/// let batcher = Batcher::builder()
///     .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
///         batch.complete_with(|x| Ok::<_, Error>(x * 10));
///         Ok(())
///     })
///     .build()
///     .unwrap();
/// let mut producer = batcher.async_producer();
/// producer.push(1).await.unwrap();
/// let ticket = producer.submit(4).await.unwrap();
/// assert_eq!(ticket.await.unwrap(), 40);
/// assert_eq!(producer.call(5).await.unwrap(), 50);
/// # }
/// ```
pub struct AsyncProducer<T, R = ()> {
    inner: Producer<T, R>,
}

impl<T, R> AsyncProducer<T, R> {
    pub(crate) fn new(inner: Producer<T, R>) -> Self {
        Self { inner }
    }

    /// The lane this producer is bound to.
    pub fn lane(&self) -> usize {
        self.inner.lane()
    }

    /// Whether the batcher has been shut down.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// The blocking producer underneath, for code that mixes both.
    pub fn as_sync(&self) -> &Producer<T, R> {
        &self.inner
    }

    /// Submits `item` fire-and-forget, waiting asynchronously for room under
    /// `Block`.
    ///
    /// Cancel safety: dropped before it completes, the item was not accepted
    /// and nothing is left in the lane.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Closed`] after shutdown; [`SubmitError::Full`] under
    /// `Reject`. Under `DropNewest` a full lane drops the item (counted);
    /// under `DropOldest` it evicts the oldest queued item (counted).
    pub async fn push(&mut self, item: T) -> Result<(), SubmitError<T>> {
        let producer = &mut self.inner;
        let mut item = Some(item);
        poll_fn(move |cx| producer.poll_push(&mut item, cx)).await
    }

    /// Submits `item` and returns its [`Ticket`] once accepted (await the
    /// ticket for the result), waiting asynchronously for room under `Block`.
    /// As [`Producer::submit`], which returns a ticket too.
    ///
    /// Cancel safety: dropped before it completes, the item was not accepted
    /// and nothing is left in the lane.
    ///
    /// # Errors
    ///
    /// As for [`push`](Self::push), with the item handed back; under
    /// `DropNewest` the ticket resolves to [`Error::Dropped`].
    pub async fn submit(&mut self, item: T) -> Result<Ticket<R>, SubmitError<T>> {
        let producer = &mut self.inner;
        let mut item = Some(item);
        poll_fn(move |cx| producer.poll_submit(&mut item, crate::shape::NEVER, cx)).await
    }

    /// [`submit`](Self::submit) with a deadline for the item: see
    /// [`Producer::submit_with_deadline`].
    ///
    /// Cancel safety: as for `submit`.
    ///
    /// # Errors
    ///
    /// As for `submit`, and [`SubmitError::NoDeadlines`] if the batcher was
    /// built without deadlines.
    pub async fn submit_with_deadline(
        &mut self,
        item: T,
        deadline: std::time::Instant,
    ) -> Result<Ticket<R>, SubmitError<T>> {
        let Some(expires) = self.inner.expiry_of(deadline) else {
            return Err(SubmitError::NoDeadlines(item));
        };
        let producer = &mut self.inner;
        let mut item = Some(item);
        poll_fn(move |cx| producer.poll_submit(&mut item, expires, cx)).await
    }

    /// [`submit`](Self::submit) in priority class `priority`: see
    /// [`Producer::submit_with_priority`].
    ///
    /// Cancel safety: as for `submit`.
    ///
    /// # Errors
    ///
    /// As for `submit`, and [`SubmitError::NoPriorities`] if the batcher was
    /// built without priority classes and `priority` is not `Normal`.
    pub async fn submit_with_priority(
        &mut self,
        item: T,
        priority: Priority,
    ) -> Result<Ticket<R>, SubmitError<T>> {
        let Some(producer) = self.inner.in_class_mut(priority) else {
            return Err(SubmitError::NoPriorities(item));
        };
        let mut item = Some(item);
        poll_fn(move |cx| producer.poll_submit(&mut item, crate::shape::NEVER, cx)).await
    }

    /// [`push`](Self::push) in priority class `priority`: see
    /// [`Producer::push_with_priority`].
    ///
    /// Cancel safety: as for `push`.
    ///
    /// # Errors
    ///
    /// As for `push`, and [`SubmitError::NoPriorities`] as for
    /// [`submit_with_priority`](Self::submit_with_priority).
    pub async fn push_with_priority(
        &mut self,
        item: T,
        priority: Priority,
    ) -> Result<(), SubmitError<T>> {
        let Some(producer) = self.inner.in_class_mut(priority) else {
            return Err(SubmitError::NoPriorities(item));
        };
        let mut item = Some(item);
        poll_fn(move |cx| producer.poll_push(&mut item, cx)).await
    }

    /// Submits `item` and waits for its result: [`submit`](Self::submit)
    /// and await the ticket, in one call (on a thread:
    /// `producer.submit(item)?.wait()`).
    ///
    /// Cancel safety: dropped before the item is accepted, nothing is left in
    /// the lane; dropped after, the item is still handled exactly once and
    /// its result is dropped.
    ///
    /// # Errors
    ///
    /// The item's [`Error`], or [`Error::Refused`] if it was not accepted
    /// (the item is then dropped: use [`submit`](Self::submit) to get it
    /// back).
    pub async fn call(&mut self, item: T) -> Result<R, Error> {
        // `inline_when_idle`'s direct path, without a ticket in between.
        let item = match self.inner.try_direct_result(item, crate::shape::NEVER) {
            Ok(result) => return result,
            Err(item) => item,
        };
        match self.submit(item).await {
            Ok(ticket) => ticket.await,
            Err(refused) => Err(Error::Refused(refused.kind())),
        }
    }

    /// Renamed to [`submit`](Self::submit), which returns a ticket on
    /// threads and tasks alike.
    ///
    /// # Errors
    ///
    /// As for `submit`.
    #[deprecated(since = "0.1.0", note = "renamed to `submit`")]
    pub async fn enqueue(&mut self, item: T) -> Result<Ticket<R>, SubmitError<T>> {
        self.submit(item).await
    }

    /// Renamed to [`submit_with_deadline`](Self::submit_with_deadline).
    ///
    /// # Errors
    ///
    /// As for `submit_with_deadline`.
    #[deprecated(since = "0.1.0", note = "renamed to `submit_with_deadline`")]
    pub async fn enqueue_with_deadline(
        &mut self,
        item: T,
        deadline: std::time::Instant,
    ) -> Result<Ticket<R>, SubmitError<T>> {
        self.submit_with_deadline(item, deadline).await
    }
}

impl<T, R> fmt::Debug for AsyncProducer<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncProducer")
            .field("lane", &self.lane())
            .finish_non_exhaustive()
    }
}
