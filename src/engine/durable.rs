//! (feature `durable`) What the engine writes to the durable store and
//! when: each batch as it is dispatched, before the handler sees it; the
//! items done once settled; the attempts of items kept for a retry; the
//! items given back at shutdown. Replay happens on the drainer (see
//! `drainer/durable.rs`).

use std::time::Instant;

use crate::batch::{BatchBuf, Origin};
use crate::completion::TableOwner;
use crate::contain::lock;
use crate::durable::store::{RecoveredBatch, Store, StoreCounters};
use crate::durable::{Codec, ItemId, StoreError};
use crate::error::Error;
use crate::handler::deliver;
use crate::stats::DurableStats;
use crate::sync::{AtomicU64, Mutex, Ordering};

/// The durable store of a batcher, with the codec of its items.
pub(crate) struct Durable<T> {
    inner: Mutex<Inner>,
    codec: Box<dyn Codec<T>>,
    incarnation: u32,
    /// The batcher's thread name, for its trace events.
    batcher: String,
    /// The store's own counters (written under the lock, read by `stats`).
    counters: std::sync::Arc<StoreCounters>,
    /// What the previous incarnations left, until the drainer replays it.
    pub(crate) recovered: Mutex<Vec<RecoveredBatch>>,
    pub(crate) replayed: AtomicU64,
    pub(crate) written_at_shutdown: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
}

struct Inner {
    store: Store,
    /// The batch being written: each item as `[u32 LE length][bytes]`.
    frames: Vec<u8>,
}

impl<T> Durable<T> {
    pub(crate) fn new(
        store: Store,
        recovered: Vec<RecoveredBatch>,
        codec: Box<dyn Codec<T>>,
        batcher: String,
    ) -> Self {
        Durable {
            batcher,
            incarnation: store.incarnation(),
            counters: std::sync::Arc::clone(store.counters()),
            inner: Mutex::new(Inner {
                store,
                frames: Vec::new(),
            }),
            codec,
            recovered: Mutex::new(recovered),
            replayed: AtomicU64::new(0),
            written_at_shutdown: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
        }
    }

    /// Writes the items as one batch record and returns the first sequence
    /// of their ids (the rest follow one by one), and the error of the sync
    /// the fsync policy asked for, if it failed (the record is written).
    pub(crate) fn write<'a>(
        &self,
        items: impl ExactSizeIterator<Item = &'a T>,
    ) -> Result<(u64, Option<StoreError>), StoreError>
    where
        T: 'a,
    {
        let mut inner = lock(&self.inner);
        let Inner { store, frames } = &mut *inner;
        frames.clear();
        let count = items.len();
        for item in items {
            let at = frames.len();
            frames.extend_from_slice(&[0; 4]);
            // The codec is user code: contained.
            match crate::contain::call(|| self.codec.encode(item, frames)) {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    return Err(StoreError::Encode {
                        message: error.to_string(),
                    });
                }
                Err(panic) => {
                    return Err(StoreError::Encode {
                        message: format!("the codec panicked: {panic}"),
                    });
                }
            }
            let len = u32::try_from(frames.len() - at - 4).map_err(|_| StoreError::Encode {
                message: "an item encodes to more than 4 GiB".into(),
            })?;
            frames[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
        let count = u32::try_from(count).expect("a batch holds fewer than 2^32 items");
        let first = store.append_batch(count, frames)?;
        let synced = store.after_batch(Instant::now()).err();
        Ok((first, synced))
    }

    /// Writes the batch `buf` as it is dispatched, unless it was written
    /// before (a replayed batch): its ids are set on success; the error
    /// says why it was not written (its ids stay empty), or that it was
    /// written but not synced (ids set).
    pub(crate) fn record(&self, buf: &mut BatchBuf<T>) -> Result<(), StoreError> {
        if !buf.durable.ids.is_empty() {
            return Ok(());
        }
        let (first, synced) = self.write(buf.items.iter())?;
        let incarnation = self.incarnation;
        buf.durable
            .ids
            .extend((0..buf.items.len() as u64).map(|i| ItemId {
                incarnation,
                sequence: first + i,
            }));
        synced.map_or(Ok(()), Err)
    }

    /// Decodes replayed bytes into an item; a failure is counted, and the
    /// item stays in the store (it is never marked done).
    pub(crate) fn decode(&self, id: ItemId, bytes: &[u8]) -> Option<T> {
        match crate::contain::call(|| self.codec.decode(bytes)) {
            Ok(Ok(item)) => Some(item),
            Ok(Err(error)) => {
                self.undecodable(id, &error.to_string());
                None
            }
            Err(panic) => {
                self.undecodable(id, &format!("the codec panicked: {panic}"));
                None
            }
        }
    }

    fn undecodable(&self, id: ItemId, message: &str) {
        // Relaxed: a statistic.
        self.decode_errors.fetch_add(1, Ordering::Relaxed);
        crate::trace::replay_undecodable(&self.batcher, &id, message);
    }
}

impl<T> Durable<T> {
    /// After the failure policies settled `buf`: the items gone from it
    /// (handled, failed, dead-lettered) are done; the ones kept for a retry
    /// have had `buf.meta.attempt` calls.
    pub(crate) fn settled(&self, buf: &mut BatchBuf<T>) {
        let ids = &mut buf.durable.ids;
        if ids.is_empty() {
            return;
        }
        let kept = buf.items.len().min(ids.len());
        let mut inner = lock(&self.inner);
        let mut result = inner.store.append_done(&ids[kept..]);
        if kept > 0 && result.is_ok() {
            result = inner.store.append_attempt(&ids[..kept], buf.meta.attempt);
        }
        drop(inner);
        ids.truncate(kept);
        if let Err(error) = result {
            self.failed_to_write(&error);
        }
    }

    /// Every item of `buf` is done (completed, or failed for good).
    pub(crate) fn done(&self, buf: &mut BatchBuf<T>) {
        if buf.durable.ids.is_empty() {
            return;
        }
        let result = lock(&self.inner).store.append_done(&buf.durable.ids);
        buf.durable.ids.clear();
        if let Err(error) = result {
            self.failed_to_write(&error);
        }
    }

    /// A batch its handler never finished, abandoned when the runtime
    /// shut down: the items the handler completed are done; the others
    /// stay in the store for the next incarnation, their tickets failed
    /// with `Persisted` (they are not failed items: they will be handled).
    pub(crate) fn keep_unhandled<R>(&self, buf: &mut BatchBuf<T>, table: &TableOwner<R>) {
        if buf.durable.ids.is_empty() {
            return;
        }
        let completed: Vec<ItemId> = buf
            .origins
            .iter()
            .zip(&buf.durable.ids)
            .filter(|(origin, _)| **origin == Origin::DONE)
            .map(|(_, id)| *id)
            .collect();
        for origin in buf.origins.iter_mut() {
            if let Some((lane, index)) = origin.pending() {
                deliver(table, lane, index, Err(Error::Persisted));
            }
            *origin = Origin::DONE;
        }
        buf.completed = buf.origins.len();
        buf.durable.ids.clear();
        let result = lock(&self.inner).store.append_done(&completed);
        if let Err(error) = result {
            self.failed_to_write(&error);
        }
    }

    /// The drainer found the lanes empty: a sync under `Interval`.
    pub(crate) fn idle(&self) {
        let result = lock(&self.inner).store.idle(Instant::now());
        if let Err(error) = result {
            self.failed_to_write(&error);
        }
    }

    /// Before the batcher's end: whatever was written goes to disk.
    pub(crate) fn sync(&self) {
        let result = lock(&self.inner).store.sync();
        if let Err(error) = result {
            self.failed_to_write(&error);
        }
    }

    /// Counts a failed write (reported to the batch or the caller too).
    pub(crate) fn failed_to_write(&self, error: &StoreError) {
        // Relaxed: a statistic.
        self.write_errors.fetch_add(1, Ordering::Relaxed);
        crate::trace::store_failed(&self.batcher, error);
    }

    /// The incarnation of this batcher on its directory.
    pub(crate) fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The counts for `Stats::durable`.
    pub(crate) fn stats(&self) -> DurableStats {
        let c = &*self.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        // Relaxed: statistics.
        DurableStats {
            incarnation: self.incarnation,
            items_written: load(&c.items_written),
            written_at_shutdown: self.written_at_shutdown.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            bytes_on_disk: load(&c.bytes_on_disk),
            segments: load(&c.segments),
            fsyncs: load(&c.fsyncs),
            corrupt_records_cut: load(&c.records_cut),
            corrupt_bytes_cut: load(&c.bytes_cut),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
        }
    }
}
