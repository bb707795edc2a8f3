//! (feature `durable`) The builder's durable store setting, and opening
//! the store at build.

use crate::BatcherBuilder;
use crate::config::ConfigError;
use crate::durable::store::{Store, StoreOptions};
use crate::durable::{Codec, Durability};
use crate::engine::durable::Durable;

impl<T: Send + 'static, R: Send + 'static> BatcherBuilder<T, R> {
    /// Keeps queued items across a restart and a crash: every batch is
    /// written to an append-only log in `durability`'s directory before the
    /// handler sees it, and the next batcher built on the directory hands
    /// what was not done to its handler first.
    ///
    /// # The durability point
    ///
    /// An item is durable once the drainer has written the batch it belongs
    /// to, which it does as it dispatches the batch, before the handler is
    /// called. A write reaches the operating system at once (a crash of the
    /// process loses nothing written); when it reaches the disk is the
    /// [`FsyncPolicy`](crate::durable::FsyncPolicy)'s choice. A crash loses
    /// the items not yet written: those in the lanes (at most `lanes ×
    /// capacity`, with the defaults 1,024 per core the process may run on:
    /// 2,048 on two cores, 16,384 on sixteen), in the staging area of a
    /// shaping policy, and in the batch being filled (at most `max_batch`).
    ///
    /// # What a restart does
    ///
    /// - A graceful [`shutdown`](crate::Batcher::shutdown) or a drop handles
    ///   everything, as without the store. [`shutdown_timeout`](crate::Batcher::shutdown_timeout)
    ///   writes every item it did not handle (in the lanes, staged, being
    ///   filled) to the store instead of giving it back, and fails its ticket
    ///   with [`Error::Persisted`](crate::Error::Persisted); it gives back
    ///   only what it could not write. Batches waiting to retry, and batches
    ///   in flight in an async handler or on a handler thread, are in the
    ///   store already. [`DurableStats::written_at_shutdown`](crate::DurableStats::written_at_shutdown)
    ///   says how many it wrote.
    /// - An async handler's batch that its runtime drops before the handler
    ///   returns (the runtime shut down) stays in the store too: the items
    ///   the handler completed are done; the others' tickets fail with
    ///   `Error::Persisted`, and the next incarnation handles them.
    /// - The directory stays locked until the batcher and every handle on
    ///   it (producers, the tasks of an async handler) are dropped: a
    ///   batcher built on it before then fails with
    ///   [`StoreError::Locked`](crate::durable::StoreError::Locked).
    /// - The next build on the directory replays what is not done before any
    ///   new item, in the order it was written (each producer's order), as
    ///   batches of at most `max_batch` fire-and-forget items
    ///   ([`DispatchReason::Replay`](crate::DispatchReason::Replay)), and
    ///   counts them ([`DurableStats::replayed`](crate::DurableStats::replayed)).
    ///   A batch waiting to retry resumes its retry policy at the attempt it
    ///   had reached ([`Batch::attempt`](crate::Batch::attempt)).
    /// - Delivery is at least once: a batch the handler finished but whose
    ///   completion was not yet written is handed over again. Every durable
    ///   item has a stable [`ItemId`](crate::durable::ItemId)
    ///   ([`Batch::item_id`](crate::Batch::item_id)), kept by its replays,
    ///   for a sink to deduplicate on.
    ///
    /// # Errors and a full store
    ///
    /// `build` fails with [`ConfigError::Store`] when the directory cannot
    /// be created or written, another batcher has it open, or a corrupt
    /// record is found under [`CorruptTail::Refuse`](crate::durable::CorruptTail::Refuse).
    /// A batch that does not fit under the size limit waits for the batches
    /// in flight and waiting to retry to finish (backpressure: the lanes
    /// fill, and producers meet their [`Backpressure`](crate::Backpressure)
    /// policy); if it still does not fit, or a write fails, the handler
    /// gets the batch anyway, not durable, and
    /// [`Batch::store_error`](crate::Batch::store_error) says why. Nothing is
    /// dropped for want of disk; every failure is counted in
    /// [`DurableStats::write_errors`](crate::DurableStats::write_errors) and
    /// reported through `tracing`. Room is made by deleting whole segments
    /// from the oldest once all their items are done: a batch that keeps
    /// failing and retrying holds its segment, and every later one, on
    /// disk until it settles.
    ///
    /// Not with [`inline_when_idle`](Self::inline_when_idle) (a submitter
    /// would write the store on its submit path) nor `drain_on_runtime`.
    ///
    /// ```
    /// use ringbatch::durable::{Durability, Postcard};
    /// use ringbatch::{Batch, Batcher};
    ///
    /// let dir = std::env::temp_dir().join(format!("ringbatch-doc-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let batcher = Batcher::builder()
    ///     .durable(Durability::new(&dir), Postcard)
    ///     .handler_fn(|batch: &mut Batch<'_, String, ()>| {
    ///         // Each item's id is its idempotency key in the sink.
    ///         let _key = batch.item_id(0).expect("durable");
    ///         batch.ok_with(|_| ());
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// batcher.producer().submit("an event".to_string()).unwrap().wait().unwrap();
    /// let stats = batcher.shutdown();
    /// assert_eq!(stats.durable.unwrap().items_written, 1);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn durable(mut self, durability: Durability, codec: impl Codec<T> + 'static) -> Self {
        self.durable = Some((durability, Box::new(codec)));
        self
    }

    /// The durable store's settings, checked against the others.
    pub(super) fn check_durable(&self, on_runtime: bool) -> Result<(), ConfigError> {
        let Some((durability, _)) = &self.durable else {
            return Ok(());
        };
        if durability.max_bytes == 0 {
            return Err(ConfigError::Zero {
                field: "durable.max_bytes",
            });
        }
        if durability.segment_bytes == 0 {
            return Err(ConfigError::Zero {
                field: "durable.segment_bytes",
            });
        }
        if self.inline_when_idle {
            return Err(ConfigError::Invalid {
                field: "inline_when_idle",
                reason: "runs batches on the submitting thread: a durable batcher writes \
                         them on the drainer, never on a submit path",
            });
        }
        if on_runtime {
            return Err(ConfigError::Invalid {
                field: "drain_on_runtime",
                reason: "a durable batcher writes to disk on the drainer: it needs a \
                         thread of its own",
            });
        }
        Ok(())
    }

    /// Opens the store, if one is set: what the previous incarnations left
    /// is kept for the drainer to replay.
    pub(super) fn open_durable(&mut self) -> Result<Option<Durable<T>>, ConfigError> {
        let Some((durability, codec)) = self.durable.take() else {
            return Ok(None);
        };
        let options = StoreOptions {
            dir: durability.dir,
            fsync: durability.fsync,
            max_bytes: durability.max_bytes,
            segment_bytes: durability.segment_bytes,
            corrupt_tail: durability.corrupt_tail,
        };
        let (store, recovered) = Store::open(options).map_err(ConfigError::Store)?;
        if recovered.records_cut > 0 {
            crate::trace::corrupt_tail_cut(
                &self.config.thread_name,
                recovered.records_cut,
                recovered.bytes_cut,
            );
        }
        Ok(Some(Durable::new(
            store,
            recovered.batches,
            codec,
            self.config.thread_name.clone(),
        )))
    }
}
