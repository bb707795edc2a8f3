//! The sink side: the [`Handler`] trait, and the [`Batch`] it receives.

use core::fmt;

use crate::batch::{BatchBuf, Origin};
use crate::completion::TableOwner;
use crate::error::{Error, SharedError};

/// An error a handler returns for a whole batch: every item of the batch that
/// it has not completed fails with [`Error::BatchFailed`] carrying it.
pub type BatchError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The sink: receives each batch on the drainer thread and completes its
/// items.
///
/// Implement it for a stateful sink (a connection, a buffered writer); for the
/// simple case pass a closure to
/// [`BatcherBuilder::handler_fn`](crate::BatcherBuilder::handler_fn).
///
/// Each item should be completed with [`Batch::ok`], [`Batch::fail`],
/// [`Batch::complete`] or [`Batch::complete_with`]. After `handle` returns:
/// - `Ok(())`: items left uncompleted fail with [`Error::NotCompleted`];
/// - `Err(e)`: items left uncompleted fail with [`Error::BatchFailed`];
/// - a panic: items left uncompleted fail with [`Error::HandlerPanicked`],
///   and the drainer goes on with the next batch.
///
/// Fire-and-forget items (from `push`) take part the same way; their results
/// are simply not delivered anywhere.
///
/// # Examples
///
/// ```
/// use ringbatch::{Batch, BatchError, Batcher, Handler};
///
/// /// Sums what it is given and answers each item with the running total.
/// struct Summer {
///     total: u64,
/// }
///
/// impl Handler<u64, u64> for Summer {
///     fn handle(&mut self, batch: &mut Batch<'_, u64, u64>) -> Result<(), BatchError> {
///         let total = &mut self.total;
///         batch.complete_with(|x| {
///             *total += x;
///             Ok::<_, ringbatch::Error>(*total)
///         });
///         Ok(())
///     }
/// }
///
/// let batcher = Batcher::builder().handler(Summer { total: 0 }).build().unwrap();
/// let producer = batcher.producer();
/// assert_eq!(producer.submit(5).unwrap().wait().unwrap(), 5);
/// assert_eq!(producer.submit(7).unwrap().wait().unwrap(), 12);
/// ```
pub trait Handler<T, R>: Send + 'static {
    /// Handles one batch.
    ///
    /// # Errors
    ///
    /// An error fails every item of the batch not completed yet.
    fn handle(&mut self, batch: &mut Batch<'_, T, R>) -> Result<(), BatchError>;
}

impl<T: 'static, R: 'static> Handler<T, R> for Box<dyn Handler<T, R>> {
    fn handle(&mut self, batch: &mut Batch<'_, T, R>) -> Result<(), BatchError> {
        (**self).handle(batch)
    }
}

/// A closure as a [`Handler`].
pub(crate) struct FnHandler<F>(pub(crate) F);

impl<T, R, F> Handler<T, R> for FnHandler<F>
where
    F: FnMut(&mut Batch<'_, T, R>) -> Result<(), BatchError> + Send + 'static,
{
    fn handle(&mut self, batch: &mut Batch<'_, T, R>) -> Result<(), BatchError> {
        (self.0)(batch)
    }
}

/// Why [`Batch::complete`] (or `ok` / `fail`) did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompleteError {
    /// No item has this index.
    OutOfRange {
        /// The index given.
        index: usize,
        /// The batch's length.
        len: usize,
    },
    /// The item was completed already; the first result stands.
    AlreadyCompleted {
        /// The index given.
        index: usize,
    },
}

impl fmt::Display for CompleteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompleteError::OutOfRange { index, len } => {
                write!(f, "item index {index} is out of range for a batch of {len}")
            }
            CompleteError::AlreadyCompleted { index } => {
                write!(f, "item {index} was already completed")
            }
        }
    }
}

impl std::error::Error for CompleteError {}

/// One batch, lent to the [`Handler`]: the items in dispatch order, and a way
/// to complete each with its result.
///
/// Items from one producer appear in the order it submitted them; items from
/// different lanes interleave.
pub struct Batch<'a, T, R> {
    /// The items, their origins and the count completed so far (kept in the
    /// buffer, so that a new view of the same batch continues the count).
    buf: &'a mut BatchBuf<T>,
    table: &'a TableOwner<R>,
    /// (`inline_when_idle`) Where the result of an item whose origin is
    /// [`Origin::DIRECT`] goes: the submitter running it takes it from there.
    direct: Option<&'a mut Option<Result<R, Error>>>,
}

impl<T, R> Batch<'_, T, R> {
    /// The batch's number: the batcher's dispatch sequence, from 1. A retry
    /// of the batch (see [`RetryPolicy`](crate::RetryPolicy)) keeps it, so
    /// a sink can tell a retry from a new batch.
    pub fn id(&self) -> u64 {
        self.buf.meta.id
    }

    /// Which call of the handler on this batch this is: 1 for the first, 2
    /// for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.buf.meta.attempt
    }

    /// When the batch's oldest item was accepted, as the drainer knows it:
    /// with [`histograms`](crate::BatcherBuilder::histograms) on, a time no
    /// later than its acceptance (and earlier by at most the drainer's time
    /// between two looks at its lane); with batch shaping alone, when the
    /// drainer took it from its lane. `None` otherwise: producers do not
    /// read the clock, and the drainer reads it only for those features.
    pub fn oldest_accepted(&self) -> Option<std::time::Instant> {
        self.buf.meta.oldest
    }

    /// (feature `durable`) Item `index`'s stable id in the durable store:
    /// the same in every delivery of the item, replays after a restart
    /// included, so a sink can deduplicate on it. `None` without a store,
    /// when the batch could not be written ([`store_error`](Self::store_error)),
    /// or out of range.
    #[cfg(feature = "durable")]
    pub fn item_id(&self, index: usize) -> Option<crate::durable::ItemId> {
        self.buf.durable.ids.get(index).copied()
    }

    /// (feature `durable`) Every item's id, in the items' order (empty
    /// when the batch is not in a durable store): see [`item_id`](Self::item_id).
    #[cfg(feature = "durable")]
    pub fn item_ids(&self) -> &[crate::durable::ItemId] {
        &self.buf.durable.ids
    }

    /// (feature `durable`) Why this batch is not durable, when the store
    /// could not take it: full after waiting for the batches in flight,
    /// or an I/O or encoding error. The batch is handled all the same;
    /// a handler that must not handle it without the store can return an
    /// error (its retry policy then applies). Also set when the batch was
    /// written but the sync its fsync policy asked for failed (the items
    /// then have ids).
    #[cfg(feature = "durable")]
    pub fn store_error(&self) -> Option<&crate::durable::StoreError> {
        self.buf.durable.error.as_ref()
    }
}

impl<'a, T, R> Batch<'a, T, R> {
    pub(crate) fn new(buf: &'a mut BatchBuf<T>, table: &'a TableOwner<R>) -> Self {
        Self {
            buf,
            table,
            direct: None,
        }
    }

    /// A batch that may hold an [`Origin::DIRECT`] item, whose result goes
    /// to `direct`.
    pub(crate) fn with_direct(
        buf: &'a mut BatchBuf<T>,
        table: &'a TableOwner<R>,
        direct: &'a mut Option<Result<R, Error>>,
    ) -> Self {
        Self {
            buf,
            table,
            direct: Some(direct),
        }
    }

    /// Number of items.
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the batch has no items (never true for a dispatched batch).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The items.
    #[inline]
    pub fn items(&self) -> &[T] {
        &self.buf.items
    }

    /// The items, mutably (for sinks that move data out of them).
    #[inline]
    pub fn items_mut(&mut self) -> &mut [T] {
        &mut self.buf.items
    }

    /// Iterates over the items.
    #[inline]
    pub fn iter(&self) -> core::slice::Iter<'_, T> {
        self.buf.items.iter()
    }

    /// Whether a ticket waits for item `index`'s result (false for
    /// fire-and-forget items, completed items and out-of-range indexes). A
    /// handler may skip computing outputs nobody will read.
    #[inline]
    pub fn wants_result(&self, index: usize) -> bool {
        self.buf
            .origins
            .get(index)
            .is_some_and(|origin| origin.wants_result())
    }

    /// Items not completed yet.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.len() - self.buf.completed
    }

    /// Completes item `index` with `result`, waking its ticket at once.
    ///
    /// # Errors
    ///
    /// [`CompleteError::OutOfRange`] or [`CompleteError::AlreadyCompleted`];
    /// the result is then dropped.
    pub fn complete(
        &mut self,
        index: usize,
        result: Result<R, Error>,
    ) -> Result<(), CompleteError> {
        let len = self.len();
        let Some(origin) = self.buf.origins.get_mut(index) else {
            return Err(CompleteError::OutOfRange { index, len });
        };
        if *origin == Origin::DONE {
            return Err(CompleteError::AlreadyCompleted { index });
        }
        let target = *origin;
        *origin = Origin::DONE;
        self.buf.completed += 1;
        if let Err(error) = &result {
            self.buf.failed += 1;
            if self.buf.marking() {
                // Failed for good: to the dead-letter handler afterwards.
                self.buf.marks[index] = crate::batch::mark::DEAD;
                self.buf.errors[index] = Some(error.clone());
            }
        }
        send(self.table, &mut self.direct, target, result);
        Ok(())
    }

    /// Completes item `index` with `Ok(value)`.
    ///
    /// # Errors
    ///
    /// As for [`complete`](Self::complete).
    #[inline]
    pub fn ok(&mut self, index: usize, value: R) -> Result<(), CompleteError> {
        self.complete(index, Ok(value))
    }

    /// Fails item `index` with `error` (its ticket gets [`Error::Failed`]).
    ///
    /// # Errors
    ///
    /// As for [`complete`](Self::complete).
    pub fn fail(
        &mut self,
        index: usize,
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Result<(), CompleteError> {
        self.complete(index, Err(Error::Failed(SharedError::new(error))))
    }

    /// Completes every item not completed yet with `f(item)`, in order.
    pub fn complete_with<E>(&mut self, mut f: impl FnMut(&T) -> Result<R, E>)
    where
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        self.complete_remaining(|item| f(item).map_err(|e| Error::Failed(SharedError::new(e))));
    }

    /// Completes every item not completed yet with `Ok(f(item))`, in order:
    /// [`complete_with`](Self::complete_with) for sinks that cannot fail an
    /// item.
    ///
    /// ```
    /// use ringbatch::{Batch, Batcher};
    ///
    /// let batcher = Batcher::builder()
    ///     .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
    ///         batch.ok_with(|x| x * 2);
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(batcher.producer().submit(4).unwrap().wait().unwrap(), 8);
    /// ```
    pub fn ok_with(&mut self, mut f: impl FnMut(&T) -> R) {
        self.complete_remaining(|item| Ok(f(item)));
    }

    fn complete_remaining(&mut self, mut f: impl FnMut(&T) -> Result<R, Error>) {
        let table = self.table;
        let direct = &mut self.direct;
        let mut completed = 0;
        let mut failed = 0;
        let marking = self.buf.marking();
        for (i, (item, origin)) in self
            .buf
            .items
            .iter()
            .zip(self.buf.origins.iter_mut())
            .enumerate()
        {
            if *origin == Origin::DONE || (marking && self.buf.marks[i] != crate::batch::mark::NONE)
            {
                continue;
            }
            let result = f(item);
            if let Err(error) = &result {
                failed += 1;
                if marking {
                    self.buf.marks[i] = crate::batch::mark::DEAD;
                    self.buf.errors[i] = Some(error.clone());
                }
            }
            send(table, direct, *origin, result);
            *origin = Origin::DONE;
            completed += 1;
        }
        self.buf.completed += completed;
        self.buf.failed += failed;
    }

    /// Asks for item `index` to be retried (it is not completed now): after
    /// the batch, under the batcher's [`RetryPolicy`](crate::RetryPolicy),
    /// it goes into a later batch of retries after a backoff; once its
    /// retries are spent its ticket fails with `error` and it goes to the
    /// dead-letter handler. Without a retry policy this is
    /// [`fail`](Self::fail).
    ///
    /// # Errors
    ///
    /// As for [`complete`](Self::complete).
    pub fn retry(
        &mut self,
        index: usize,
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Result<(), CompleteError> {
        self.mark_retry(index, error.into(), crate::batch::mark::RETRY)
    }

    /// [`retry`](Self::retry), after the policy's maximum delay: the sink
    /// is rate-limiting.
    ///
    /// # Errors
    ///
    /// As for [`complete`](Self::complete).
    pub fn rate_limited(
        &mut self,
        index: usize,
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Result<(), CompleteError> {
        self.mark_retry(index, error.into(), crate::batch::mark::RATE_LIMITED)
    }

    fn mark_retry(
        &mut self,
        index: usize,
        error: Box<dyn std::error::Error + Send + Sync + 'static>,
        mark: u8,
    ) -> Result<(), CompleteError> {
        if !self.buf.marking() {
            return self.complete(index, Err(Error::Failed(SharedError::new(error))));
        }
        let len = self.len();
        match self.buf.origins.get(index) {
            None => return Err(CompleteError::OutOfRange { index, len }),
            Some(&Origin::DONE) => return Err(CompleteError::AlreadyCompleted { index }),
            Some(_) if self.buf.marks[index] != crate::batch::mark::NONE => {
                return Err(CompleteError::AlreadyCompleted { index });
            }
            Some(_) => {}
        }
        self.buf.marks[index] = mark;
        self.buf.errors[index] = Some(Error::Failed(SharedError::new(error)));
        self.buf.completed += 1;
        Ok(())
    }

    /// Reports the sink's load while handling this batch, for adaptive
    /// sizing in load mode ([`Adaptive::load`](crate::Adaptive::load)); the
    /// latest report counts. Ignored without a load controller.
    pub fn report_load(&mut self, feedback: crate::LoadFeedback) {
        self.buf.feedback = Some(feedback);
    }

    /// Fails every item not completed yet with `error` (drainer side).
    #[inline(always)]
    pub(crate) fn fail_remaining(&mut self, error: Error) {
        if self.buf.completed == self.len() && matches!(error, Error::NotCompleted) {
            // The handler completed everything (the common case). The error
            // owns nothing: forgetting it saves the call to its drop glue.
            core::mem::forget(error);
            return;
        }
        self.fail_left(error);
    }

    #[inline(never)]
    fn fail_left(&mut self, error: Error) {
        if !matches!(error, Error::NotCompleted) {
            // A failed or panicking handler fails what it left; items it
            // merely left alone (fire-and-forget sinks) are not counted.
            self.buf.failed += self.len() - self.buf.completed;
        }
        if self.buf.completed == self.len() || self.buf.tickets == 0 {
            // Nothing left to complete, or nobody waits for any result.
            return;
        }
        let table = self.table;
        for origin in self.buf.origins.iter_mut() {
            if origin.wants_result() {
                send(table, &mut self.direct, *origin, Err(error.clone()));
            }
            *origin = Origin::DONE;
        }
        self.buf.completed = self.len();
    }
}

impl<T: fmt::Debug, R> fmt::Debug for Batch<'_, T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("items", &self.buf.items)
            .field("remaining", &self.remaining())
            .finish()
    }
}

/// Delivers `result` to where `origin` says: a ticket's completion slot,
/// or the direct cell; nowhere for a fire-and-forget item.
#[inline(always)]
fn send<R>(
    table: &TableOwner<R>,
    direct: &mut Option<&mut Option<Result<R, Error>>>,
    origin: Origin,
    result: Result<R, Error>,
) {
    if let Some((lane, index)) = origin.pending() {
        deliver(table, lane, index, result);
    } else if let (true, Some(cell)) = (origin == Origin::DIRECT, direct) {
        **cell = Some(result);
    } else {
        // The user's `Drop`, contained like every other drop of ours.
        table.discard(result);
    }
}

#[inline]
pub(crate) fn deliver<R>(
    table: &TableOwner<R>,
    lane: usize,
    index: usize,
    result: Result<R, Error>,
) {
    // SAFETY: the origin was pending, so the slot is armed for this item and
    // this is its one completion (the origin is marked done by the caller).
    unsafe { table.complete(lane, index, result) };
}

/// Turns a whole-batch error into the ticket error.
pub(crate) fn batch_failed(error: BatchError) -> Error {
    Error::BatchFailed(SharedError::from(error))
}
