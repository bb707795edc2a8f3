//! Segment files and their bookkeeping: which items of each segment are
//! still outstanding, and which segments compaction may delete.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::record::{self, Run};
use crate::durable::StoreError;

/// The file of segment `number` in `dir`.
pub(super) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.seg"))
}

/// The segment number a file name spells, if it is a segment's.
pub(super) fn segment_number(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Deletes the segment file `path` (one already gone counts as deleted).
pub(super) fn remove(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(StoreError::io("delete segment", path, e))
        }
        _ => Ok(()),
    }
}

/// Puts `dir`'s entries (files created, renamed, deleted) on disk.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

/// Creates segment `number` and writes its header record (from `buf`),
/// returning the file opened to append. The file is removed again if the
/// header cannot be written, so that no headerless segment is left.
pub(super) fn create(path: &Path, incarnation: u32, buf: &mut Vec<u8>) -> Result<File, StoreError> {
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)
        .map_err(|e| StoreError::io("create segment", path, e))?;
    record::encode_header(buf, incarnation);
    if let Err(e) = file.write_all(buf) {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(StoreError::io("write", path, e));
    }
    Ok(file)
}

/// One live segment file and its items.
#[derive(Debug)]
pub(super) struct Segment {
    /// Its number (the file name).
    pub(super) number: u64,
    /// Its file.
    pub(super) path: PathBuf,
    /// Its size in bytes (valid records only).
    pub(super) bytes: u64,
    /// The incarnation that wrote it.
    pub(super) incarnation: u32,
    /// The first sequence its batches hold (with none: where they would begin).
    low: u64,
    /// One past the last sequence its batches hold.
    high: u64,
    /// How many of its items are not done.
    pub(super) outstanding: u64,
    /// The sequence of bit 0 of `pending`: every sequence below it is done.
    base: u64,
    /// Bit `i` set: sequence `base + i` is outstanding. Grows at the back
    /// with the segment's range and drops done words at the front, so it
    /// spans what is outstanding, not all the segment has held, and its
    /// memory is reused once the handler keeps up (no allocation per item).
    pending: VecDeque<u64>,
}

impl Segment {
    /// An empty segment whose batches begin at sequence `start` or later.
    pub(super) fn new(
        number: u64,
        path: PathBuf,
        bytes: u64,
        incarnation: u32,
        start: u64,
    ) -> Self {
        Segment {
            number,
            path,
            bytes,
            incarnation,
            low: start,
            high: start,
            outstanding: 0,
            base: start,
            pending: VecDeque::new(),
        }
    }

    /// One past the last sequence its batches hold (its start if none).
    pub(super) fn high(&self) -> u64 {
        self.high
    }

    /// Adds a batch of `count` outstanding items from `first`: the first
    /// batch anywhere from the segment's start, each later one right after
    /// the previous (a segment's sequences have no gaps).
    pub(super) fn add_batch(&mut self, first: u64, count: u32) -> Result<(), &'static str> {
        if self.high == self.low {
            if first < self.low {
                return Err("batch sequence goes back");
            }
            self.low = first;
            self.high = first;
            self.base = first;
            self.pending.clear();
        } else if first != self.high {
            return Err("batch sequence does not follow the previous batch");
        }
        let end = first
            .checked_add(u64::from(count))
            .ok_or("batch sequences overflow")?;
        let bits = end - self.base;
        let words = usize::try_from(bits.div_ceil(64)).map_err(|_| "batch range too large")?;
        if words > self.pending.len() {
            self.pending.resize(words, 0);
        }
        self.high = end;
        self.outstanding += u64::from(count);
        self.update(first, end, true);
        Ok(())
    }

    /// Whether sequence `sequence` of this segment is outstanding.
    pub(super) fn is_pending(&self, sequence: u64) -> bool {
        if sequence < self.base || sequence >= self.high {
            return false;
        }
        let bit = sequence - self.base;
        self.pending[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    /// Marks the ids of `run` that this segment holds done; returns how
    /// many of them were outstanding.
    pub(super) fn mark_done(&mut self, run: Run) -> u64 {
        if run.incarnation != self.incarnation {
            return 0;
        }
        let end = run.first.saturating_add(u64::from(run.len));
        // Below `base` every sequence is done already.
        let first = run.first.max(self.base);
        let end = end.min(self.high);
        if first >= end {
            return 0;
        }
        let cleared = self.update(first, end, false);
        self.outstanding -= cleared;
        // Drop the done words at the front, only whole ones below `high`
        // (the bits above `high` are still to be set).
        while self.pending.front() == Some(&0) && self.base + 64 <= self.high {
            self.pending.pop_front();
            self.base += 64;
        }
        cleared
    }

    /// Sets (`set`) or clears the bits of `[first, end)`, within the range;
    /// returns how many bits changed.
    fn update(&mut self, first: u64, end: u64, set: bool) -> u64 {
        let mut changed = 0;
        let mut bit = first - self.base;
        let stop = end - self.base;
        while bit < stop {
            let word = (bit / 64) as usize;
            let from = bit % 64;
            let to = (stop - (bit - from)).min(64);
            // Bits `from..to` of this word.
            let mask = if to - from == 64 {
                u64::MAX
            } else {
                ((1u64 << (to - from)) - 1) << from
            };
            let old = self.pending[word];
            let new = if set { old | mask } else { old & !mask };
            changed += u64::from((old ^ new).count_ones());
            self.pending[word] = new;
            bit += to - from;
        }
        changed
    }
}

/// The live segments, oldest first; the last is the one written to.
#[derive(Debug, Default)]
pub(super) struct Segments {
    list: VecDeque<Segment>,
}

impl Segments {
    /// The segments, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Segment> {
        self.list.iter()
    }

    /// How many.
    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    /// The newest segment.
    pub(super) fn last(&self) -> Option<&Segment> {
        self.list.back()
    }

    /// The newest segment, to change.
    pub(super) fn last_mut(&mut self) -> Option<&mut Segment> {
        self.list.back_mut()
    }

    /// The oldest segment.
    pub(super) fn first(&self) -> Option<&Segment> {
        self.list.front()
    }

    /// Removes the oldest segment.
    pub(super) fn pop_first(&mut self) -> Option<Segment> {
        self.list.pop_front()
    }

    /// Adds a newer segment.
    pub(super) fn push(&mut self, segment: Segment) {
        self.list.push_back(segment);
    }

    /// Marks the ids of `run` done in the segments that hold them; returns
    /// how many were outstanding. Ids of no live segment are ignored.
    pub(super) fn mark_done(&mut self, run: Run) -> u64 {
        let end = run.first.saturating_add(u64::from(run.len));
        // Segments are in (incarnation, sequence) order: the first that
        // may hold the run is the first not wholly before its start.
        let start = self
            .list
            .partition_point(|s| (s.incarnation, s.high) <= (run.incarnation, run.first));
        let mut cleared = 0;
        for segment in self.list.range_mut(start..) {
            if segment.incarnation != run.incarnation || segment.low >= end {
                break;
            }
            cleared += segment.mark_done(run);
        }
        cleared
    }

    /// Whether `sequence` of `incarnation` is outstanding in a live segment.
    #[cfg(test)]
    pub(super) fn is_pending(&self, incarnation: u32, sequence: u64) -> bool {
        self.list
            .iter()
            .any(|s| s.incarnation == incarnation && s.is_pending(sequence))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(incarnation: u32, start: u64) -> Segment {
        Segment::new(0, PathBuf::from("x"), 0, incarnation, start)
    }

    fn run(incarnation: u32, first: u64, len: u32) -> Run {
        Run {
            incarnation,
            first,
            len,
        }
    }

    #[test]
    fn segment_names_round_trip_and_others_are_not_segments() {
        let path = segment_path(Path::new("/d"), 42);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000000000000000042.seg", "expected 20 digits");
        assert_eq!(segment_number(name), Some(42), "expected the number back");
        for other in ["LOCK", "INCARNATION", "42.seg", "0000000000000000004x.seg"] {
            assert_eq!(segment_number(other), None, "expected {other} ignored");
        }
    }

    #[test]
    fn the_outstanding_map_spans_what_is_outstanding_not_all_the_segment_held() {
        let mut s = segment(1, 0);
        // A handler that keeps up: each batch is done before the next but one.
        for i in 0..10_000u64 {
            s.add_batch(i * 10, 10).unwrap();
            if i > 0 {
                assert_eq!(s.mark_done(run(1, (i - 1) * 10, 10)), 10);
            }
        }
        assert_eq!(s.outstanding, 10, "expected the last batch outstanding");
        assert!(
            s.pending.len() <= 2,
            "expected the map to hold the last batch's words, got {} words",
            s.pending.len()
        );
        assert!(!s.is_pending(0), "expected 1.0 done");
        assert!(!s.is_pending(99_989), "expected 1.99989 done");
        assert!(s.is_pending(99_990), "expected 1.99990 outstanding");
        assert!(s.is_pending(99_999), "expected 1.99999 outstanding");
        assert_eq!(s.mark_done(run(1, 0, 100_000)), 10, "expected the last 10");
        assert_eq!((s.low, s.high), (0, 100_000), "the range is kept");
    }

    #[test]
    fn an_id_done_twice_is_counted_once() {
        let mut segments = Segments::default();
        let mut s = segment(1, 0);
        s.add_batch(0, 100).unwrap();
        s.add_batch(100, 50).unwrap();
        segments.push(s);
        assert_eq!(
            segments.mark_done(run(1, 10, 80)),
            80,
            "expected 80 cleared"
        );
        assert_eq!(
            segments.mark_done(run(1, 0, 150)),
            70,
            "expected the other 70"
        );
        assert_eq!(segments.mark_done(run(1, 5, 1)), 0, "expected none again");
        assert_eq!(
            segments.first().unwrap().outstanding,
            0,
            "expected all done"
        );
    }

    #[test]
    fn a_run_spanning_segments_is_marked_in_each_and_others_ignored() {
        let mut segments = Segments::default();
        let mut a = segment(1, 0);
        a.add_batch(0, 10).unwrap();
        let mut b = segment(1, 10);
        b.add_batch(10, 10).unwrap();
        let mut c = segment(2, 0);
        c.add_batch(0, 10).unwrap();
        segments.push(a);
        segments.push(b);
        segments.push(c);
        assert_eq!(segments.mark_done(run(1, 5, 10)), 10, "expected 5 + 5");
        assert!(segments.is_pending(1, 4), "expected 1.4 outstanding");
        assert!(!segments.is_pending(1, 14), "expected 1.14 done");
        assert!(segments.is_pending(1, 15), "expected 1.15 outstanding");
        assert!(segments.is_pending(2, 5), "expected 2.5 untouched");
        assert_eq!(
            segments.mark_done(run(3, 0, 10)),
            0,
            "expected unknown ids ignored"
        );
    }

    #[test]
    fn a_batch_must_follow_the_previous_one() {
        let mut s = segment(1, 5);
        assert!(
            s.add_batch(4, 1).is_err(),
            "expected a sequence before the start refused"
        );
        s.add_batch(7, 2).unwrap();
        assert!(s.add_batch(10, 1).is_err(), "expected a gap refused");
        assert!(
            s.add_batch(9, 1).is_ok(),
            "expected the next sequence taken"
        );
        assert_eq!((s.low, s.high, s.outstanding), (7, 10, 3), "expected 7..10");
    }
}
