//! The async handler API: [`AsyncHandler`] and the owned [`AsyncBatch`]
//! its future works on.

use core::fmt;
use core::future::Future;

use crate::batch::BatchBuf;
use crate::completion::TableOwner;
use crate::engine::Shared;
use crate::engine::runtime::pipeline::WorkerSlot;
use crate::error::Error;
use crate::handler::{Batch, BatchError, CompleteError};
use crate::sync::Arc;

/// An async sink: receives each batch as an owned [`AsyncBatch`] and returns
/// a future that sends it (to a database, an HTTP exporter) and completes its
/// items.
///
/// Up to `max_in_flight` batches run at once, so `handle` takes `&self`: keep
/// shared state behind a connection pool, a mutex or atomics. For the simple
/// case pass a closure to
/// [`BatcherBuilder::async_handler_fn`](crate::BatcherBuilder::async_handler_fn).
///
/// After the future finishes, items it left uncompleted fail as with
/// [`Handler`](crate::Handler): `Ok(())` gives [`Error::NotCompleted`], an
/// error [`Error::BatchFailed`], a panic [`Error::HandlerPanicked`].
///
/// # Examples
///
/// ```
/// use ringbatch::{AsyncBatch, AsyncHandler, BatchError, Batcher};
///
/// /// Pretends to write each batch to a remote store.
/// struct Store;
///
/// impl AsyncHandler<String, usize> for Store {
///     async fn handle(&self, mut batch: AsyncBatch<String, usize>) -> Result<(), BatchError> {
///         tokio::task::yield_now().await; // the network round trip
///         batch.complete_with(|line| Ok::<_, ringbatch::Error>(line.len()));
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let batcher = Batcher::builder().async_handler(Store).build().unwrap();
/// let mut producer = batcher.async_producer();
/// assert_eq!(producer.call("hello".to_string()).await.unwrap(), 5);
/// batcher.shutdown_async().await;
/// # }
/// ```
pub trait AsyncHandler<T, R>: Send + Sync + 'static {
    /// Handles one batch.
    ///
    /// # Errors
    ///
    /// An error fails every item of the batch not completed yet.
    fn handle(
        &self,
        batch: AsyncBatch<T, R>,
    ) -> impl Future<Output = Result<(), BatchError>> + Send;
}

/// A closure returning a future, as an [`AsyncHandler`].
pub(crate) struct FnAsyncHandler<F>(pub(crate) F);

impl<T, R, F, Fut> AsyncHandler<T, R> for FnAsyncHandler<F>
where
    F: Fn(AsyncBatch<T, R>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BatchError>> + Send,
{
    fn handle(
        &self,
        batch: AsyncBatch<T, R>,
    ) -> impl Future<Output = Result<(), BatchError>> + Send {
        (self.0)(batch)
    }
}

/// One batch, owned by an [`AsyncHandler`]'s future: the items and a way to
/// complete each. The same operations as [`Batch`]; [`view`](Self::view)
/// gives the full [`Batch`] API.
///
/// Dropping it hands the buffer back to the worker, which completes what the
/// handler left and returns the buffer to the pool.
pub struct AsyncBatch<T, R> {
    /// `Some` until dropped.
    pub(super) buf: Option<BatchBuf<T>>,
    pub(super) shared: Arc<Shared<T, R>>,
    pub(super) slot: Arc<WorkerSlot<T>>,
}

impl<T, R> AsyncBatch<T, R> {
    pub(super) fn buf(&self) -> &BatchBuf<T> {
        self.buf.as_ref().expect("present until dropped")
    }

    /// A [`Batch`] view of this batch, for its whole API.
    pub fn view(&mut self) -> Batch<'_, T, R> {
        let table: &TableOwner<R> = &self.shared.table;
        Batch::new(self.buf.as_mut().expect("present until dropped"), table)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.buf().len()
    }

    /// The batch's number: see [`Batch::id`].
    pub fn id(&self) -> u64 {
        self.buf().meta.id
    }

    /// Which call of the handler on this batch this is: see
    /// [`Batch::attempt`].
    pub fn attempt(&self) -> u32 {
        self.buf().meta.attempt
    }

    /// When the oldest item was accepted: see [`Batch::oldest_accepted`].
    pub fn oldest_accepted(&self) -> Option<std::time::Instant> {
        self.buf().meta.oldest
    }

    /// (feature `durable`) Item `index`'s stable id: see [`Batch::item_id`].
    #[cfg(feature = "durable")]
    pub fn item_id(&self, index: usize) -> Option<crate::durable::ItemId> {
        self.buf().durable.ids.get(index).copied()
    }

    /// (feature `durable`) Every item's id: see [`Batch::item_ids`].
    #[cfg(feature = "durable")]
    pub fn item_ids(&self) -> &[crate::durable::ItemId] {
        &self.buf().durable.ids
    }

    /// (feature `durable`) Why the batch is not durable: see
    /// [`Batch::store_error`].
    #[cfg(feature = "durable")]
    pub fn store_error(&self) -> Option<&crate::durable::StoreError> {
        self.buf().durable.error.as_ref()
    }

    /// Whether the batch has no items (never true for a dispatched batch).
    pub fn is_empty(&self) -> bool {
        self.buf().is_empty()
    }

    /// The items, in dispatch order.
    pub fn items(&self) -> &[T] {
        &self.buf().items
    }

    /// The items, mutably.
    pub fn items_mut(&mut self) -> &mut [T] {
        &mut self.buf.as_mut().expect("present until dropped").items
    }

    /// Items not completed yet.
    pub fn remaining(&self) -> usize {
        self.buf().len() - self.buf().completed
    }

    /// Completes item `index` with `result`; see [`Batch::complete`].
    ///
    /// # Errors
    ///
    /// As for [`Batch::complete`].
    pub fn complete(
        &mut self,
        index: usize,
        result: Result<R, Error>,
    ) -> Result<(), CompleteError> {
        self.view().complete(index, result)
    }

    /// Completes item `index` with `Ok(value)`.
    ///
    /// # Errors
    ///
    /// As for [`Batch::complete`].
    pub fn ok(&mut self, index: usize, value: R) -> Result<(), CompleteError> {
        self.view().ok(index, value)
    }

    /// Fails item `index` with `error`.
    ///
    /// # Errors
    ///
    /// As for [`Batch::complete`].
    pub fn fail(
        &mut self,
        index: usize,
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Result<(), CompleteError> {
        self.view().fail(index, error)
    }

    /// Completes every item not completed yet with `f(item)`, in order.
    pub fn complete_with<E>(&mut self, f: impl FnMut(&T) -> Result<R, E>)
    where
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        self.view().complete_with(f);
    }

    /// Completes every item not completed yet with `Ok(f(item))`, in order.
    pub fn ok_with(&mut self, f: impl FnMut(&T) -> R) {
        self.view().ok_with(f);
    }

    /// Asks for item `index` to be retried; see [`Batch::retry`].
    ///
    /// # Errors
    ///
    /// As for [`Batch::complete`].
    pub fn retry(
        &mut self,
        index: usize,
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Result<(), CompleteError> {
        self.view().retry(index, error)
    }

    /// Asks for item `index` to be retried after the maximum delay; see
    /// [`Batch::rate_limited`].
    ///
    /// # Errors
    ///
    /// As for [`Batch::complete`].
    pub fn rate_limited(
        &mut self,
        index: usize,
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Result<(), CompleteError> {
        self.view().rate_limited(index, error)
    }

    /// Reports the sink's load for adaptive sizing; see
    /// [`Batch::report_load`].
    pub fn report_load(&mut self, feedback: crate::LoadFeedback) {
        self.view().report_load(feedback);
    }
}

impl<T, R> Drop for AsyncBatch<T, R> {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.slot.give_back(buf, &self.shared);
        }
    }
}

impl<T: fmt::Debug, R> fmt::Debug for AsyncBatch<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncBatch")
            .field("items", &self.items())
            .field("remaining", &self.remaining())
            .finish()
    }
}
