//! The durable store: segment files of checksummed records in one
//! directory.
//!
//! The directory holds `LOCK` (held with `flock` while a store is open),
//! `INCARNATION` (the last incarnation, so that none repeats) and segment
//! files `{number:020}.seg`. Each store writes a new segment, of one
//! incarnation, and rolls to another at `segment_bytes`; compaction deletes
//! the oldest segments once none of their items is outstanding. The record
//! format is in `record.rs`, opening in `recover.rs`, the bookkeeping of
//! segments in `segment.rs`.

mod lock;
mod record;
mod recover;
mod segment;
#[cfg(test)]
mod tests;

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use crate::durable::{CorruptTail, FsyncPolicy, ItemId, StoreError};
use lock::DirLock;
use record::HEADER_RECORD_BYTES;
use segment::{Segment, Segments, segment_path};

/// What `Store::open` needs.
#[derive(Debug, Clone)]
pub(crate) struct StoreOptions {
    /// The store's directory (created if missing).
    pub(crate) dir: PathBuf,
    /// When to `fsync`.
    pub(crate) fsync: FsyncPolicy,
    /// The most the segment files may hold (done and attempt records may
    /// pass it: they free space).
    pub(crate) max_bytes: u64,
    /// The size at which a segment is closed and a new one begun.
    pub(crate) segment_bytes: u64,
    /// What opening does with a corrupt record.
    pub(crate) corrupt_tail: CorruptTail,
}

/// What the previous incarnations left: the items not done, to replay.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// The items not done, by the batch record that holds them, in the
    /// order the records were written.
    pub(crate) batches: Vec<RecoveredBatch>,
    /// Records cut from corrupt segment tails while opening.
    pub(crate) records_cut: u64,
    /// Bytes cut from corrupt segment tails while opening.
    pub(crate) bytes_cut: u64,
}

/// The pending items of one batch record.
#[derive(Debug, Default)]
pub(crate) struct RecoveredBatch {
    /// The calls of the handler the items have had (the largest attempt
    /// record of any of them; 0 if none).
    pub(crate) attempt: u32,
    /// Each pending item's id and encoded bytes, in the record's order.
    pub(crate) items: Vec<(ItemId, Vec<u8>)>,
}

/// The store's counters, read by `Stats` from any thread.
#[derive(Debug, Default)]
pub(crate) struct StoreCounters {
    /// Items written in batch records by this store.
    pub(crate) items_written: AtomicU64,
    /// Records of every kind written by this store.
    pub(crate) records_written: AtomicU64,
    /// The size of the live segment files.
    pub(crate) bytes_on_disk: AtomicU64,
    /// `fsync`s of segment data (those of the directory are not counted).
    pub(crate) fsyncs: AtomicU64,
    /// Records cut from corrupt tails at open.
    pub(crate) records_cut: AtomicU64,
    /// Bytes cut from corrupt tails at open.
    pub(crate) bytes_cut: AtomicU64,
    /// The live segment files.
    pub(crate) segments: AtomicU64,
    /// Segment files deleted by compaction.
    pub(crate) segments_deleted: AtomicU64,
}

/// An open store: the directory locked, a segment of this incarnation
/// being written. Every record reaches the operating system (one
/// `write` call) before the method that writes it returns.
pub(crate) struct Store {
    counters: std::sync::Arc<StoreCounters>,
    dir: PathBuf,
    fsync: FsyncPolicy,
    max_bytes: u64,
    segment_bytes: u64,
    incarnation: u32,
    /// The sequence of the next item written.
    next_sequence: u64,
    /// The number of the next segment file.
    next_number: u64,
    /// The segments before the active one, oldest first.
    old: Segments,
    /// The segment written to.
    active: Segment,
    /// Its file, opened to append.
    file: fs::File,
    /// The size of every live segment file.
    used: u64,
    /// A failed write could not be cut back: the next record goes to a new
    /// segment, after the active one's unreadable end.
    roll_first: bool,
    /// Records written to the active file since its last `fsync`.
    dirty: bool,
    /// When the drainer first saw the unsynced writes (`after_batch`).
    dirty_since: Option<Instant>,
    /// When `after_batch` or `idle` last synced.
    last_sync: Option<Instant>,
    /// The record being written, reused.
    buf: Vec<u8>,
    _lock: DirLock,
}

impl Store {
    /// Opens (or creates) the store in `options.dir`: locks it, reads what
    /// earlier incarnations left, persists this incarnation and begins a
    /// new segment.
    pub(crate) fn open(options: StoreOptions) -> Result<(Store, Recovered), StoreError> {
        let StoreOptions {
            dir,
            fsync,
            max_bytes,
            segment_bytes,
            corrupt_tail,
        } = options;
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("create directory", &dir, e))?;
        let lock = DirLock::acquire(&dir)?;
        let stored = recover::read_incarnation(&dir, corrupt_tail)?;
        let recovery = recover::recover(&dir, corrupt_tail)?;
        // Above both the file and every segment's header: an incarnation
        // (and so an item id) never repeats in a directory.
        let incarnation = stored
            .max(recovery.max_incarnation)
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt {
                path: dir.join("INCARNATION"),
                offset: 0,
                reason: "incarnation numbers are exhausted",
            })?;
        recover::write_incarnation(&dir, incarnation)?;

        let mut buf = Vec::new();
        let number = recovery.next_number;
        let path = segment_path(&dir, number);
        let file = segment::create(&path, incarnation, &mut buf)?;
        if fsync != FsyncPolicy::Never {
            segment::sync_dir(&dir)?;
        }
        let active = Segment::new(number, path, HEADER_RECORD_BYTES, incarnation, 0);
        let used = recovery.segments.iter().map(|s| s.bytes).sum::<u64>() + active.bytes;

        let counters = StoreCounters::default();
        counters.records_written.store(1, Relaxed);
        counters.records_cut.store(recovery.records_cut, Relaxed);
        counters.bytes_cut.store(recovery.bytes_cut, Relaxed);
        let mut store = Store {
            counters: std::sync::Arc::new(counters),
            dir,
            fsync,
            max_bytes,
            segment_bytes,
            incarnation,
            next_sequence: 0,
            next_number: number + 1,
            old: recovery.segments,
            active,
            file,
            used,
            roll_first: false,
            // The header alone needs no fsync: a segment that lost it to a
            // machine crash held nothing else, and is dropped at open.
            dirty: false,
            dirty_since: None,
            last_sync: None,
            buf,
            _lock: lock,
        };
        store.publish();
        store.compact()?;
        let recovered = Recovered {
            batches: recovery.batches,
            records_cut: recovery.records_cut,
            bytes_cut: recovery.bytes_cut,
        };
        Ok((store, recovered))
    }

    /// This store's incarnation (above every earlier one of the directory).
    pub(crate) fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The counters, shared with `Stats`.
    pub(crate) fn counters(&self) -> &std::sync::Arc<StoreCounters> {
        &self.counters
    }

    /// Writes a batch record of `count` items, framed in `items` as
    /// `[u32 LE length][bytes]` each; returns the first item's sequence
    /// (the items are `first..first + count` of this incarnation).
    ///
    /// [`StoreError::Full`] if the record does not fit even after
    /// compaction; [`StoreError::Encode`] if `items` does not frame
    /// `count` items. Either way nothing is written and no sequence used.
    pub(crate) fn append_batch(&mut self, count: u32, items: &[u8]) -> Result<u64, StoreError> {
        record::check_items(items, count).map_err(|message| StoreError::Encode { message })?;
        let first = self.next_sequence;
        let next = first
            .checked_add(u64::from(count))
            .ok_or_else(|| StoreError::Encode {
                message: "the incarnation's item sequences are exhausted".to_owned(),
            })?;
        let len = record::batch_record_bytes(items.len());
        if !self.would_fit(len) {
            self.compact()?;
            if !self.would_fit(len) {
                return Err(StoreError::Full {
                    needed: self.needed(len),
                    used: self.used,
                    limit: self.max_bytes,
                });
            }
        }
        self.roll_if_due()?;
        let mut buf = std::mem::take(&mut self.buf);
        let written =
            record::encode_batch(&mut buf, first, count, items).and_then(|()| self.write(&buf));
        self.buf = buf;
        written?;
        // The active segment's batches go on from `next_sequence`.
        let added = self.active.add_batch(first, count);
        debug_assert!(added.is_ok(), "a batch out of sequence: {added:?}");
        self.next_sequence = next;
        self.counters
            .items_written
            .fetch_add(u64::from(count), Relaxed);
        Ok(first)
    }

    /// Writes a DONE record of `ids`, counts them done (each once, however
    /// often given) and deletes the segments that leaves with nothing
    /// outstanding.
    pub(crate) fn append_done(&mut self, ids: &[ItemId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.append_ids(ids, None)?;
        for run in record::runs_of(ids) {
            self.old.mark_done(run);
            self.active.mark_done(run);
        }
        self.compact()
    }

    /// Writes an ATTEMPT record: `ids` went to the handler for call
    /// `attempt`. They stay outstanding.
    pub(crate) fn append_attempt(
        &mut self,
        ids: &[ItemId],
        attempt: u32,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.append_ids(ids, Some(attempt))
    }

    /// Applies the fsync policy after a batch record written at `now`.
    pub(crate) fn after_batch(&mut self, now: Instant) -> Result<(), StoreError> {
        match self.fsync {
            FsyncPolicy::EveryBatch => self.sync(),
            FsyncPolicy::Interval(interval) => {
                if !self.dirty {
                    return Ok(());
                }
                let since = *self.dirty_since.get_or_insert(now);
                let from = self.last_sync.unwrap_or(since);
                if now.saturating_duration_since(from) >= interval {
                    self.sync()?;
                    self.last_sync = Some(now);
                }
                Ok(())
            }
            FsyncPolicy::Never => Ok(()),
        }
    }

    /// The lanes are empty: under `Interval`, syncs what is unsynced.
    pub(crate) fn idle(&mut self, now: Instant) -> Result<(), StoreError> {
        if matches!(self.fsync, FsyncPolicy::Interval(_)) && self.dirty {
            self.sync()?;
            self.last_sync = Some(now);
        }
        Ok(())
    }

    /// `fsync`s the active segment's data if anything was written to it
    /// since the last.
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        if !self.dirty {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|e| StoreError::io("fsync", &self.active.path, e))?;
        self.dirty = false;
        self.dirty_since = None;
        self.counters.fsyncs.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Whether a batch record of `bytes` (its whole length) fits now,
    /// without compaction (with the header of a new segment if the record
    /// would begin one).
    pub(crate) fn would_fit(&self, bytes: u64) -> bool {
        self.used.saturating_add(self.needed(bytes)) <= self.max_bytes
    }

    /// What a record of `len` bytes adds to the files: itself, and the
    /// header of the segment it would begin.
    fn needed(&self, len: u64) -> u64 {
        let header = if self.roll_due() {
            HEADER_RECORD_BYTES
        } else {
            0
        };
        len.saturating_add(header)
    }

    /// Writes a DONE (`attempt` None) or ATTEMPT record of `ids`.
    fn append_ids(&mut self, ids: &[ItemId], attempt: Option<u32>) -> Result<(), StoreError> {
        self.roll_if_due()?;
        let mut buf = std::mem::take(&mut self.buf);
        let written = record::encode_ids(&mut buf, ids, attempt).and_then(|()| self.write(&buf));
        self.buf = buf;
        written
    }

    /// Appends `record` to the active segment with one `write` call.
    fn write(&mut self, record: &[u8]) -> Result<(), StoreError> {
        if let Err(error) = self.file.write_all(record) {
            // Cut off what part of the record got in, so that it cannot be
            // read as one; failing that, the next record goes elsewhere.
            if self.file.set_len(self.active.bytes).is_err() {
                self.roll_first = true;
                if let Ok(meta) = self.file.metadata() {
                    self.used = self.used - self.active.bytes + meta.len();
                    self.active.bytes = meta.len();
                    self.publish();
                }
            }
            return Err(StoreError::io("write", &self.active.path, error));
        }
        let len = record.len() as u64;
        self.active.bytes += len;
        self.used += len;
        self.dirty = true;
        self.counters.records_written.fetch_add(1, Relaxed);
        self.publish();
        Ok(())
    }

    /// Whether the next record begins a new segment: the active one is
    /// full (holding more than its header), or its end is unreadable.
    fn roll_due(&self) -> bool {
        self.roll_first
            || (self.active.bytes >= self.segment_bytes && self.active.bytes > HEADER_RECORD_BYTES)
    }

    fn roll_if_due(&mut self) -> Result<(), StoreError> {
        if self.roll_due() {
            self.roll()?;
        }
        Ok(())
    }

    /// Closes the active segment (synced, unless the policy is `Never`)
    /// and begins the next.
    fn roll(&mut self) -> Result<(), StoreError> {
        if self.fsync != FsyncPolicy::Never {
            self.sync()?;
        }
        let number = self.next_number;
        // A number is never tried twice, even if creating its file failed.
        self.next_number += 1;
        let path = segment_path(&self.dir, number);
        let file = segment::create(&path, self.incarnation, &mut self.buf)?;
        let next = Segment::new(
            number,
            path,
            HEADER_RECORD_BYTES,
            self.incarnation,
            self.next_sequence,
        );
        let closed = std::mem::replace(&mut self.active, next);
        self.old.push(closed);
        self.file = file;
        self.roll_first = false;
        self.dirty = false;
        self.dirty_since = None;
        self.used += HEADER_RECORD_BYTES;
        self.counters.records_written.fetch_add(1, Relaxed);
        self.publish();
        // Without this the new file may be missing after a machine crash,
        // with the records synced into it.
        if self.fsync != FsyncPolicy::Never {
            segment::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Deletes the oldest segments while none of their items is
    /// outstanding (a prefix only: a later segment's DONE records may be
    /// about an earlier one's items). A full active segment with nothing
    /// outstanding is closed first, so that it can go too.
    fn compact(&mut self) -> Result<(), StoreError> {
        if self.active.outstanding == 0
            && self.active.bytes >= self.segment_bytes
            && self.active.bytes > HEADER_RECORD_BYTES
            && self.old.iter().all(|s| s.outstanding == 0)
        {
            self.roll()?;
        }
        let mut deleted = false;
        while let Some(oldest) = self.old.first().filter(|s| s.outstanding == 0) {
            if let Err(error) = segment::remove(&oldest.path) {
                self.publish();
                return Err(error);
            }
            self.used -= oldest.bytes;
            self.old.pop_first();
            self.counters.segments_deleted.fetch_add(1, Relaxed);
            deleted = true;
        }
        if deleted {
            self.publish();
            // A deletion lost to a machine crash would bring back done
            // items whose DONE records went with later deletions.
            if self.fsync != FsyncPolicy::Never {
                segment::sync_dir(&self.dir)?;
            }
        }
        Ok(())
    }

    /// Publishes the size on disk and the number of segments.
    fn publish(&self) {
        self.counters.bytes_on_disk.store(self.used, Relaxed);
        self.counters
            .segments
            .store(self.old.len() as u64 + 1, Relaxed);
    }
}
