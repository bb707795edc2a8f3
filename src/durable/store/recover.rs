//! Opening a directory: the incarnation file, the scan of every segment
//! (cutting or refusing a corrupt tail), and the items still pending.
//!
//! Two passes keep memory bounded: the first checks every record and
//! builds the segments' bookkeeping (which items are done), holding no item
//! bytes; the second reads back only the pending items.

use std::collections::BinaryHeap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use super::RecoveredBatch;
use super::record::{self, Body, Items, Next, Reader};
use super::segment::segment_path;
use super::segment::{self, Segment, Segments};
use crate::durable::{CorruptTail, ItemId, StoreError};

const INCARNATION: &str = "INCARNATION";
const INCARNATION_TMP: &str = "INCARNATION.tmp";

/// The last incarnation written to `dir` (0 if none). Text that is not a
/// number is refused under [`CorruptTail::Refuse`], read as 0 otherwise
/// (the segments' headers still bound the next incarnation).
pub(super) fn read_incarnation(dir: &Path, policy: CorruptTail) -> Result<u32, StoreError> {
    let path = dir.join(INCARNATION);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io("read", &path, e)),
    };
    let parsed = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok());
    match parsed {
        Some(incarnation) => Ok(incarnation),
        None if policy == CorruptTail::Refuse => Err(StoreError::Corrupt {
            path,
            offset: 0,
            reason: "the incarnation file does not hold a decimal number",
        }),
        None => Ok(0),
    }
}

/// Persists `incarnation` as `dir`'s last: a whole new file put in place
/// by a rename, so a crash leaves the old number or the new one.
pub(super) fn write_incarnation(dir: &Path, incarnation: u32) -> Result<(), StoreError> {
    let tmp = dir.join(INCARNATION_TMP);
    let path = dir.join(INCARNATION);
    let mut file = File::create(&tmp).map_err(|e| StoreError::io("create", &tmp, e))?;
    file.write_all(format!("{incarnation}\n").as_bytes())
        .map_err(|e| StoreError::io("write", &tmp, e))?;
    file.sync_all()
        .map_err(|e| StoreError::io("fsync", &tmp, e))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(|e| StoreError::io("rename", &path, e))?;
    segment::sync_dir(dir)
}

/// What the segments of a directory hold.
#[derive(Debug)]
pub(super) struct Recovery {
    /// The live segments, with their outstanding items.
    pub(super) segments: Segments,
    /// The pending items, by batch record.
    pub(super) batches: Vec<RecoveredBatch>,
    /// Records cut from corrupt tails.
    pub(super) records_cut: u64,
    /// Bytes cut from corrupt tails.
    pub(super) bytes_cut: u64,
    /// The largest incarnation of any live segment's header (0 if none).
    pub(super) max_incarnation: u32,
    /// The number for the next segment file.
    pub(super) next_number: u64,
}

/// Reads every segment of `dir`: cuts corrupt tails (or refuses them,
/// changing nothing), deletes segments left empty, and returns the
/// bookkeeping and the pending items.
pub(super) fn recover(dir: &Path, policy: CorruptTail) -> Result<Recovery, StoreError> {
    let numbers = list_segments(dir)?;
    let next_number = match numbers.last() {
        None => 0,
        Some(&last) => last.checked_add(1).ok_or_else(|| StoreError::Corrupt {
            path: segment_path(dir, last),
            offset: 0,
            reason: "segment numbers are exhausted",
        })?,
    };
    let mut scan = Scan::default();
    let mut repairs = Vec::new();
    for number in numbers {
        let path = segment_path(dir, number);
        let file = File::open(&path).map_err(|e| StoreError::io("open", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StoreError::io("stat", &path, e))?
            .len();
        // An empty file is a segment created just before a crash: nothing
        // was written to it, so nothing is lost.
        if len == 0 {
            repairs.push(Repair {
                path,
                len,
                keep: 0,
                corrupt: false,
            });
            continue;
        }
        if let Some((offset, reason)) = scan.segment(number, &path, file, len)? {
            if policy == CorruptTail::Refuse {
                return Err(StoreError::Corrupt {
                    path,
                    offset,
                    reason,
                });
            }
            repairs.push(Repair {
                path,
                len,
                keep: offset,
                corrupt: true,
            });
        }
    }
    // Nothing was changed before this point: a refusal leaves every file.
    let (mut records_cut, mut bytes_cut, mut removed) = (0, 0, false);
    for repair in &repairs {
        if repair.keep == 0 {
            segment::remove(&repair.path)?;
            removed = true;
        } else {
            truncate(&repair.path, repair.keep)?;
        }
        if repair.corrupt {
            records_cut += 1;
            bytes_cut += repair.len - repair.keep;
        }
    }
    if removed {
        segment::sync_dir(dir)?;
    }
    let batches = pending(&scan.segments, scan.attempts)?;
    Ok(Recovery {
        segments: scan.segments,
        batches,
        records_cut,
        bytes_cut,
        max_incarnation: scan.max_incarnation,
        next_number,
    })
}

/// The segment numbers in `dir`, in order.
fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut numbers = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| StoreError::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("read directory", dir, e))?;
        let Some(number) = entry.file_name().to_str().and_then(segment::segment_number) else {
            continue;
        };
        let file_type = entry
            .file_type()
            .map_err(|e| StoreError::io("stat", entry.path(), e))?;
        if file_type.is_file() {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Cuts `path` to its first `keep` bytes, on disk.
fn truncate(path: &Path, keep: u64) -> Result<(), StoreError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StoreError::io("open", path, e))?;
    file.set_len(keep)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io("truncate", path, e))
}

/// A segment file to cut to `keep` bytes (0: to delete).
#[derive(Debug)]
struct Repair {
    path: std::path::PathBuf,
    len: u64,
    keep: u64,
    corrupt: bool,
}

/// Items `[start, end)` recorded at `attempt`.
#[derive(Debug, Clone, Copy)]
struct AttemptRun {
    start: ItemId,
    end: ItemId,
    attempt: u32,
}

/// The first pass's state.
#[derive(Debug, Default)]
struct Scan {
    segments: Segments,
    attempts: Vec<AttemptRun>,
    max_incarnation: u32,
}

impl Scan {
    /// Reads segment `number` (`len` bytes of `file`); returns where its
    /// first invalid record begins and why, if it has one.
    fn segment(
        &mut self,
        number: u64,
        path: &Path,
        file: File,
        len: u64,
    ) -> Result<Option<(u64, &'static str)>, StoreError> {
        let mut reader = Reader::new(file, len);
        let bad = loop {
            let at = reader.offset();
            match reader.next().map_err(|e| StoreError::io("read", path, e))? {
                Next::End => break None,
                Next::Invalid(reason) => break Some((at, reason)),
                Next::Record => {
                    if let Err(reason) = self.record(number, path, at, reader.body()) {
                        break Some((at, reason));
                    }
                }
            }
        };
        // The segment is listed once its header is read; it keeps the
        // bytes before the first invalid record.
        if let Some(last) = self.segments.last_mut().filter(|s| s.number == number) {
            last.bytes = bad.map_or(len, |(at, _)| at);
        }
        Ok(bad)
    }

    /// Takes in the record at `at` of segment `number`, or says why it is
    /// not valid there.
    fn record(
        &mut self,
        number: u64,
        path: &Path,
        at: u64,
        body: &[u8],
    ) -> Result<(), &'static str> {
        let body = record::parse(body)?;
        if at == 0 {
            let Body::Header { incarnation } = body else {
                return Err("the segment does not begin with a header");
            };
            // Segments are written in incarnation order, and one
            // incarnation's sequences go on from segment to segment.
            let start = match self.segments.last() {
                Some(prev) if prev.incarnation > incarnation => {
                    return Err("the segment's incarnation is below the previous segment's");
                }
                Some(prev) if prev.incarnation == incarnation => prev.high(),
                _ => 0,
            };
            self.max_incarnation = self.max_incarnation.max(incarnation);
            self.segments.push(Segment::new(
                number,
                path.to_path_buf(),
                0,
                incarnation,
                start,
            ));
            return Ok(());
        }
        match body {
            Body::Header { .. } => Err("a header record inside a segment"),
            Body::Batch { first, count, .. } => match self.segments.last_mut() {
                Some(segment) => segment.add_batch(first, count),
                None => Err("a batch record before any header"),
            },
            Body::Done(runs) => {
                for run in runs {
                    self.segments.mark_done(run);
                }
                Ok(())
            }
            Body::Attempt { attempt, runs } => {
                for run in runs.filter(|r| r.len > 0 && attempt > 0) {
                    self.attempts.push(AttemptRun {
                        start: ItemId {
                            incarnation: run.incarnation,
                            sequence: run.first,
                        },
                        end: ItemId {
                            incarnation: run.incarnation,
                            sequence: run.first.saturating_add(u64::from(run.len)),
                        },
                        attempt,
                    });
                }
                Ok(())
            }
        }
    }
}

/// The largest attempt of each id, asked in increasing id order.
#[derive(Debug)]
struct Attempts {
    runs: Vec<AttemptRun>,
    next: usize,
    /// The runs begun, by attempt, with their ends; a run found ended is
    /// dropped when it comes to the top (later ids are past it too).
    live: BinaryHeap<(u32, ItemId)>,
}

impl Attempts {
    fn new(mut runs: Vec<AttemptRun>) -> Self {
        runs.sort_unstable_by_key(|run| run.start);
        Attempts {
            runs,
            next: 0,
            live: BinaryHeap::new(),
        }
    }

    /// The largest attempt recorded for `id` (0 if none); `id` is above
    /// every id asked before.
    fn of(&mut self, id: ItemId) -> u32 {
        while let Some(run) = self.runs.get(self.next).filter(|run| run.start <= id) {
            self.live.push((run.attempt, run.end));
            self.next += 1;
        }
        while let Some(&(attempt, end)) = self.live.peek() {
            if end > id {
                return attempt;
            }
            self.live.pop();
        }
        0
    }
}

/// The second pass: the pending items of every segment, by batch record
/// in log order (which is id order), each batch with its largest attempt.
fn pending(
    segments: &Segments,
    attempts: Vec<AttemptRun>,
) -> Result<Vec<RecoveredBatch>, StoreError> {
    let mut attempts = Attempts::new(attempts);
    let mut batches = Vec::new();
    for segment in segments.iter().filter(|s| s.outstanding > 0) {
        let path = &segment.path;
        let file = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
        let mut reader = Reader::new(file, segment.bytes);
        loop {
            let at = reader.offset();
            match reader.next().map_err(|e| StoreError::io("read", path, e))? {
                Next::End => break,
                // The first pass read it whole: the file changed since.
                Next::Invalid(reason) => {
                    return Err(StoreError::Corrupt {
                        path: path.clone(),
                        offset: at,
                        reason,
                    });
                }
                Next::Record => {}
            }
            let Ok(Body::Batch { first, items, .. }) = record::parse(reader.body()) else {
                continue;
            };
            let mut batch = RecoveredBatch::default();
            for (sequence, item) in (first..).zip(Items::new(items)) {
                let Ok(item) = item else {
                    break;
                };
                if segment.is_pending(sequence) {
                    let id = ItemId {
                        incarnation: segment.incarnation,
                        sequence,
                    };
                    batch.attempt = batch.attempt.max(attempts.of(id));
                    batch.items.push((id, item.to_vec()));
                }
            }
            if !batch.items.is_empty() {
                batches.push(batch);
            }
        }
    }
    Ok(batches)
}
