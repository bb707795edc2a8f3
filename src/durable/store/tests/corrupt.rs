//! Opening over corrupt segments: what `Truncate` cuts and counts, and
//! that `Refuse` changes nothing.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;

use super::super::{CorruptTail, Store, StoreError, record};
use super::{Batches, TempDir, batches, framed, id, options, segment_files};

/// A store in `dir` with two batches in one segment; returns that
/// segment and where its second batch record begins.
fn two_batches(dir: &Path) -> (PathBuf, u64) {
    let (mut store, _) = Store::open(options(dir)).unwrap();
    store.append_batch(1, &framed(&[b"first"])).unwrap();
    store.append_batch(2, &framed(&[b"sec", b"ond"])).unwrap();
    drop(store);
    let second = record::HEADER_RECORD_BYTES + record::batch_record_bytes(9);
    (segment_files(dir)[0].clone(), second)
}

/// Damages the segment with `damage` (given where the second batch
/// record begins, it returns where the first bad record begins), then
/// checks that `Refuse` refuses there leaving the bytes, and that
/// `Truncate` keeps every record before it (the first batch only, with
/// `first_only`) and counts what it cut.
fn check(name: &str, damage: impl Fn(&Path, u64) -> u64, first_only: bool) {
    let dir = TempDir::new(name);
    let (segment, second) = two_batches(dir.path());
    let offset = damage(&segment, second);
    let damaged = fs::read(&segment).unwrap();

    let mut refuse = options(dir.path());
    refuse.corrupt_tail = CorruptTail::Refuse;
    match Store::open(refuse) {
        Err(StoreError::Corrupt {
            path, offset: at, ..
        }) => {
            assert_eq!(path, segment, "{name}: expected the segment named");
            assert_eq!(at, offset, "{name}: expected the bad record's offset");
        }
        other => panic!("{name}: expected Corrupt, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        fs::read(&segment).unwrap(),
        damaged,
        "{name}: expected Refuse to leave the file's bytes"
    );

    let (store, recovered) = Store::open(options(dir.path())).unwrap();
    assert_eq!(recovered.records_cut, 1, "{name}: expected one record cut");
    assert_eq!(
        recovered.bytes_cut,
        damaged.len() as u64 - offset,
        "{name}: expected the bytes from the bad record on cut"
    );
    assert_eq!(
        fs::metadata(&segment).unwrap().len(),
        offset,
        "{name}: expected the file cut at the bad record"
    );
    let counters = store.counters();
    assert_eq!(counters.records_cut.load(Relaxed), 1, "{name}: counter");
    assert_eq!(
        counters.bytes_cut.load(Relaxed),
        recovered.bytes_cut,
        "{name}: counter of bytes cut"
    );
    let mut expected: Batches<'_> = vec![(0, vec![(id(1, 0), b"first")])];
    if !first_only {
        expected.push((0, vec![(id(1, 1), b"sec"), (id(1, 2), b"ond")]));
    }
    assert_eq!(
        batches(&recovered),
        expected,
        "{name}: expected every record before the bad one"
    );
    drop(store);
    let (_store, again) = Store::open(options(dir.path())).unwrap();
    assert_eq!(again.records_cut, 0, "{name}: expected nothing left to cut");
    assert_eq!(batches(&again), expected, "{name}: expected the same items");
}

fn append(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
}

#[test]
fn garbage_after_the_last_record_is_cut_or_refused() {
    let garbage = |path: &Path, _| {
        let len = fs::metadata(path).unwrap().len();
        append(path, b"garbage, not a record");
        len
    };
    check("garbage", garbage, false);
    let short = |path: &Path, _| {
        let len = fs::metadata(path).unwrap().len();
        append(path, b"abc");
        len
    };
    check("short-garbage", short, false);
}

#[test]
fn a_flipped_byte_in_the_last_record_cuts_it_or_is_refused() {
    let flip = |path: &Path, second: u64| {
        let mut bytes = fs::read(path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x40;
        fs::write(path, bytes).unwrap();
        second
    };
    check("flip", flip, true);
}

#[test]
fn a_record_cut_short_is_cut_or_refused() {
    let cut = |path: &Path, second: u64| {
        let len = fs::metadata(path).unwrap().len();
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(len - 3).unwrap();
        second
    };
    check("cut", cut, true);
}

#[test]
fn an_empty_segment_is_deleted_uncounted_and_a_headerless_one_deleted_counted() {
    let dir = TempDir::new("empty");
    let (segment, _) = two_batches(dir.path());
    let empty = segment.with_file_name("00000000000000000007.seg");
    fs::write(&empty, b"").unwrap();
    let (store, recovered) = Store::open(options(dir.path())).unwrap();
    assert!(!empty.exists(), "expected the empty segment deleted");
    assert_eq!(
        recovered.records_cut, 0,
        "expected an empty one not counted"
    );
    assert_eq!(recovered.batches.len(), 2, "expected both batches");
    drop(store);

    let headerless = segment.with_file_name("00000000000000000009.seg");
    fs::write(&headerless, b"0123456789abcdef").unwrap();
    let (_store, recovered) = Store::open(options(dir.path())).unwrap();
    assert!(
        !headerless.exists(),
        "expected the headerless segment deleted"
    );
    assert_eq!(
        (recovered.records_cut, recovered.bytes_cut),
        (1, 16),
        "expected its one record and 16 bytes counted"
    );
    assert_eq!(recovered.batches.len(), 2, "expected both batches still");
}
