//! The record format. A record is `[u32 body length][u32 crc32 of the
//! body][body]`, the body a kind byte and that kind's fields; every integer
//! is little-endian.
//!
//! - HEADER: magic `RBSEG1`, incarnation `u32` (first record of a segment).
//! - BATCH: first sequence `u64`, count `u32`, then `count` items, each
//!   `[u32 length][bytes]`.
//! - DONE: runs `(incarnation u32, first sequence u64, length u32)`.
//! - ATTEMPT: attempt `u32`, then runs as in DONE.

use std::fs::File;
use std::io::{self, BufReader, Read};

use crate::durable::{ItemId, StoreError};

/// What begins every segment's header record.
pub(super) const MAGIC: &[u8; 6] = b"RBSEG1";

const KIND_HEADER: u8 = 1;
const KIND_BATCH: u8 = 2;
const KIND_DONE: u8 = 3;
const KIND_ATTEMPT: u8 = 4;

/// The bytes before a record's body: its length and its checksum.
pub(super) const FRAME_BYTES: u64 = 8;
/// A header record's whole length.
pub(super) const HEADER_RECORD_BYTES: u64 = FRAME_BYTES + 1 + MAGIC.len() as u64 + 4;
/// A batch record's whole length less its items.
const BATCH_FIXED_BYTES: u64 = FRAME_BYTES + 1 + 8 + 4;
/// One run of ids: incarnation, first sequence, length.
const RUN_BYTES: usize = 4 + 8 + 4;

/// The whole length of a batch record whose framed items take `items_len`
/// bytes.
pub(super) fn batch_record_bytes(items_len: usize) -> u64 {
    BATCH_FIXED_BYTES + items_len as u64
}

/// Starts a record of `kind` in `buf`, its frame left to [`finish`].
fn begin(buf: &mut Vec<u8>, kind: u8) {
    buf.clear();
    buf.extend_from_slice(&[0; FRAME_BYTES as usize]);
    buf.push(kind);
}

/// Fills in the frame of the record in `buf`: the body's length and checksum.
fn finish(buf: &mut [u8]) -> Result<(), StoreError> {
    let body = &buf[FRAME_BYTES as usize..];
    let len = u32::try_from(body.len()).map_err(|_| StoreError::Encode {
        message: format!(
            "a record body of {} bytes is over the 4 GiB a record may hold",
            body.len()
        ),
    })?;
    let crc = crc32fast::hash(body);
    buf[..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A segment's header record for `incarnation`, in `buf`.
pub(super) fn encode_header(buf: &mut Vec<u8>, incarnation: u32) {
    begin(buf, KIND_HEADER);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&incarnation.to_le_bytes());
    // Eleven bytes of body always fit the length field.
    let _ = finish(buf);
}

/// A batch record in `buf`: `count` framed `items` from sequence `first`.
pub(super) fn encode_batch(
    buf: &mut Vec<u8>,
    first: u64,
    count: u32,
    items: &[u8],
) -> Result<(), StoreError> {
    begin(buf, KIND_BATCH);
    buf.extend_from_slice(&first.to_le_bytes());
    buf.extend_from_slice(&count.to_le_bytes());
    buf.extend_from_slice(items);
    finish(buf)
}

/// A DONE record of `ids` (`attempt` None) or an ATTEMPT record, in `buf`.
pub(super) fn encode_ids(
    buf: &mut Vec<u8>,
    ids: &[ItemId],
    attempt: Option<u32>,
) -> Result<(), StoreError> {
    match attempt {
        None => begin(buf, KIND_DONE),
        Some(attempt) => {
            begin(buf, KIND_ATTEMPT);
            buf.extend_from_slice(&attempt.to_le_bytes());
        }
    }
    for run in runs_of(ids) {
        buf.extend_from_slice(&run.incarnation.to_le_bytes());
        buf.extend_from_slice(&run.first.to_le_bytes());
        buf.extend_from_slice(&run.len.to_le_bytes());
    }
    finish(buf)
}

/// Consecutive sequences of one incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    /// The incarnation.
    pub(super) incarnation: u32,
    /// The first sequence.
    pub(super) first: u64,
    /// How many sequences from `first`.
    pub(super) len: u32,
}

/// `ids` as runs, in the order given: an id that continues the previous
/// one's run (same incarnation, next sequence) joins it.
pub(super) fn runs_of(ids: &[ItemId]) -> impl Iterator<Item = Run> + '_ {
    let mut rest = ids;
    core::iter::from_fn(move || {
        let (head, tail) = rest.split_first()?;
        let mut run = Run {
            incarnation: head.incarnation,
            first: head.sequence,
            len: 1,
        };
        let mut taken = 0;
        for id in tail {
            let continues = id.incarnation == run.incarnation
                && run.first.checked_add(u64::from(run.len)) == Some(id.sequence)
                && run.len < u32::MAX;
            if !continues {
                break;
            }
            run.len += 1;
            taken += 1;
        }
        rest = &tail[taken..];
        Some(run)
    })
}

/// The runs of a DONE or ATTEMPT body, whose length [`parse`] checked.
#[derive(Debug, Clone)]
pub(super) struct Runs<'a>(core::slice::ChunksExact<'a, u8>);

impl Iterator for Runs<'_> {
    type Item = Run;

    fn next(&mut self) -> Option<Run> {
        let chunk = self.0.next()?;
        Some(Run {
            incarnation: u32::from_le_bytes(chunk[..4].try_into().ok()?),
            first: u64::from_le_bytes(chunk[4..12].try_into().ok()?),
            len: u32::from_le_bytes(chunk[12..16].try_into().ok()?),
        })
    }
}

/// The framed items of a batch: each `[u32 length][bytes]`. Yields the
/// offset of an item whose length runs past the end, then stops.
#[derive(Debug, Clone)]
pub(super) struct Items<'a> {
    rest: &'a [u8],
    offset: usize,
}

impl<'a> Items<'a> {
    /// The items framed in `buf`.
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Items {
            rest: buf,
            offset: 0,
        }
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = Result<&'a [u8], usize>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let at = self.offset;
        let item = self.rest.get(..4).and_then(|len| {
            let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
            self.rest.get(4..4usize.checked_add(len)?)
        });
        let Some(item) = item else {
            // A length past the end: nothing after it can be framed.
            self.rest = &[];
            return Some(Err(at));
        };
        self.rest = &self.rest[4 + item.len()..];
        self.offset += 4 + item.len();
        Some(Ok(item))
    }
}

/// Whether `items` frames exactly `count` items; why not otherwise.
pub(super) fn check_items(items: &[u8], count: u32) -> Result<(), String> {
    let mut found: u64 = 0;
    for item in Items::new(items) {
        if let Err(at) = item {
            return Err(format!(
                "the item framed at byte {at} of the batch runs past its {} bytes",
                items.len()
            ));
        }
        found += 1;
    }
    if found != u64::from(count) {
        return Err(format!(
            "the batch frames {found} items, not the {count} it declares"
        ));
    }
    Ok(())
}

/// A record's body, parsed.
#[derive(Debug, Clone)]
pub(super) enum Body<'a> {
    /// The first record of a segment.
    Header {
        /// The incarnation that wrote the segment.
        incarnation: u32,
    },
    /// A batch of items.
    Batch {
        /// The first item's sequence.
        first: u64,
        /// How many items.
        count: u32,
        /// The framed items.
        items: &'a [u8],
    },
    /// Items done.
    Done(Runs<'a>),
    /// Items handed to the handler once more.
    Attempt {
        /// The handler's call count for them.
        attempt: u32,
        /// The items.
        runs: Runs<'a>,
    },
}

/// `body` parsed, or why it is not a record.
pub(super) fn parse(body: &[u8]) -> Result<Body<'_>, &'static str> {
    let (&kind, fields) = body.split_first().ok_or("empty record body")?;
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(fields.get(at..at + 4)?.try_into().ok()?))
    };
    match kind {
        KIND_HEADER => {
            if fields.len() != MAGIC.len() + 4 || &fields[..MAGIC.len()] != MAGIC {
                return Err("bad segment header");
            }
            let incarnation = u32_at(MAGIC.len()).ok_or("bad segment header")?;
            Ok(Body::Header { incarnation })
        }
        KIND_BATCH => {
            let first = fields
                .get(..8)
                .and_then(|b| Some(u64::from_le_bytes(b.try_into().ok()?)))
                .ok_or("batch record too short")?;
            let count = u32_at(8).ok_or("batch record too short")?;
            let items = &fields[12..];
            if first.checked_add(u64::from(count)).is_none() {
                return Err("batch sequences overflow");
            }
            if check_items(items, count).is_err() {
                return Err("batch items do not match their count");
            }
            Ok(Body::Batch {
                first,
                count,
                items,
            })
        }
        KIND_DONE => {
            if fields.len() % RUN_BYTES != 0 {
                return Err("done record not a whole number of runs");
            }
            Ok(Body::Done(Runs(fields.chunks_exact(RUN_BYTES))))
        }
        KIND_ATTEMPT => {
            let attempt = u32_at(0).ok_or("attempt record too short")?;
            let runs = &fields[4..];
            if runs.len() % RUN_BYTES != 0 {
                return Err("attempt record not a whole number of runs");
            }
            Ok(Body::Attempt {
                attempt,
                runs: Runs(runs.chunks_exact(RUN_BYTES)),
            })
        }
        _ => Err("unknown record kind"),
    }
}

/// What [`Reader::next`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// The end of the file, after a whole record.
    End,
    /// A record whose checksum holds; its body is [`Reader::body`].
    Record,
    /// A record that ends past the end of the file or fails its checksum.
    Invalid(&'static str),
}

/// Reads a segment's records in order, one body in memory at a time.
#[derive(Debug)]
pub(super) struct Reader {
    file: BufReader<File>,
    len: u64,
    offset: u64,
    body: Vec<u8>,
}

impl Reader {
    /// Reads the first `len` bytes of `file`, from its start.
    pub(super) fn new(file: File, len: u64) -> Self {
        Reader {
            file: BufReader::new(file),
            len,
            offset: 0,
            body: Vec::new(),
        }
    }

    /// Where the next record begins (after [`Next::Invalid`]: where the
    /// invalid one begins).
    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    /// The last record's body.
    pub(super) fn body(&self) -> &[u8] {
        &self.body
    }

    /// The next record. After [`Next::Invalid`] the reader is spent.
    pub(super) fn next(&mut self) -> io::Result<Next> {
        let remaining = self.len - self.offset;
        if remaining == 0 {
            return Ok(Next::End);
        }
        if remaining < FRAME_BYTES {
            return Ok(Next::Invalid("record frame runs past the end of the file"));
        }
        let mut frame = [0u8; FRAME_BYTES as usize];
        self.file.read_exact(&mut frame)?;
        let [l0, l1, l2, l3, c0, c1, c2, c3] = frame;
        let body_len = u64::from(u32::from_le_bytes([l0, l1, l2, l3]));
        let crc = u32::from_le_bytes([c0, c1, c2, c3]);
        if body_len > remaining - FRAME_BYTES {
            return Ok(Next::Invalid("record runs past the end of the file"));
        }
        // The length is checked against the file's size: the buffer is at
        // most as large as the file.
        self.body.clear();
        self.body.resize(body_len as usize, 0);
        self.file.read_exact(&mut self.body)?;
        if crc32fast::hash(&self.body) != crc {
            return Ok(Next::Invalid("record checksum mismatch"));
        }
        self.offset += FRAME_BYTES + body_len;
        Ok(Next::Record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(incarnation: u32, sequence: u64) -> ItemId {
        ItemId {
            incarnation,
            sequence,
        }
    }

    fn framed(items: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::new();
        for item in items {
            buf.extend_from_slice(&(item.len() as u32).to_le_bytes());
            buf.extend_from_slice(item);
        }
        buf
    }

    #[test]
    fn consecutive_ids_of_one_incarnation_form_one_run_in_given_order() {
        let ids = [id(1, 5), id(1, 6), id(1, 7), id(2, 8), id(1, 3), id(1, 4)];
        let runs: Vec<Run> = runs_of(&ids).collect();
        let expected = [
            Run {
                incarnation: 1,
                first: 5,
                len: 3,
            },
            Run {
                incarnation: 2,
                first: 8,
                len: 1,
            },
            Run {
                incarnation: 1,
                first: 3,
                len: 2,
            },
        ];
        assert_eq!(runs, expected, "expected three runs in the order given");
    }

    #[test]
    fn each_record_kind_parses_back_to_what_was_encoded() {
        let mut buf = Vec::new();
        encode_header(&mut buf, 7);
        assert_eq!(buf.len() as u64, HEADER_RECORD_BYTES, "header length");
        match parse(&buf[8..]) {
            Ok(Body::Header { incarnation: 7 }) => {}
            other => panic!("expected a header of incarnation 7, got {other:?}"),
        }

        let items = framed(&[b"ab", b"", b"xyz"]);
        encode_batch(&mut buf, 40, 3, &items).unwrap();
        assert_eq!(buf.len() as u64, batch_record_bytes(items.len()));
        match parse(&buf[8..]) {
            Ok(Body::Batch {
                first: 40,
                count: 3,
                items: parsed,
            }) => {
                let got: Vec<&[u8]> = Items::new(parsed).map(Result::unwrap).collect();
                assert_eq!(got, [&b"ab"[..], b"", b"xyz"], "expected the items back");
            }
            other => panic!("expected a batch of 3 from 40, got {other:?}"),
        }

        encode_ids(&mut buf, &[id(3, 1), id(3, 2)], Some(4)).unwrap();
        match parse(&buf[8..]) {
            Ok(Body::Attempt { attempt: 4, runs }) => {
                let runs: Vec<Run> = runs.collect();
                assert_eq!(
                    runs,
                    [Run {
                        incarnation: 3,
                        first: 1,
                        len: 2
                    }],
                    "expected one run of two"
                );
            }
            other => panic!("expected an attempt record, got {other:?}"),
        }

        encode_ids(&mut buf, &[id(3, 9)], None).unwrap();
        assert!(
            matches!(parse(&buf[8..]), Ok(Body::Done(_))),
            "expected a done record"
        );
    }

    #[test]
    fn misframed_items_are_refused() {
        let items = framed(&[b"ab", b"cd"]);
        assert!(
            check_items(&items, 2).is_ok(),
            "expected two items to fit 2"
        );
        assert!(
            check_items(&items, 3).is_err(),
            "expected a count mismatch to be refused"
        );
        assert!(
            check_items(&items[..items.len() - 1], 2).is_err(),
            "expected a cut item to be refused"
        );
        assert!(check_items(&[1, 0], 1).is_err(), "expected a cut length");
    }

    #[test]
    fn bad_bodies_are_refused_not_panicked_on() {
        for body in [
            &[][..],
            &[9],
            &[KIND_HEADER, b'R'],
            &[KIND_BATCH, 1, 2],
            &[KIND_DONE, 1],
            &[KIND_ATTEMPT, 1, 0, 0],
        ] {
            assert!(parse(body).is_err(), "expected {body:?} to be refused");
        }
    }
}
