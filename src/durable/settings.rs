//! The durable store's settings, its item ids and its errors.

use core::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// When the store asks the operating system to put what it wrote on disk
/// (`fsync`).
///
/// A write reaches the operating system before the handler sees the batch,
/// whatever the policy: a crash of the process loses nothing written. The
/// policy decides what a crash of the machine (power, kernel) may lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// After every batch written, before the handler sees it: nothing
    /// written is lost to a machine crash; one `fsync` per batch.
    EveryBatch,
    /// At most this long after a write, and at once when the drainer finds
    /// the lanes empty: a machine crash loses at most this span of writes.
    Interval(Duration),
    /// Never: the operating system writes back when it chooses.
    Never,
}

impl Default for FsyncPolicy {
    /// `Interval(10 ms)`: a process crash loses nothing written in any case;
    /// a machine crash loses at most 10 ms of batches, for at most 100
    /// `fsync`s a second however fast batches come.
    fn default() -> Self {
        FsyncPolicy::Interval(Duration::from_millis(10))
    }
}

/// What opening the store does with a record that fails its checksum or
/// ends early (a write cut short by a crash, or a damaged disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CorruptTail {
    /// Cut the segment at the last valid record, count what was cut
    /// (`DurableStats::corrupt_records_cut`, `corrupt_bytes_cut`) and go on.
    #[default]
    Truncate,
    /// Refuse to open: `build` fails with [`StoreError::Corrupt`], and the
    /// files stay as they are for inspection.
    Refuse,
}

/// Where and how a batcher keeps its items durable
/// ([`BatcherBuilder::durable`](crate::BatcherBuilder::durable)).
///
/// ```
/// use std::time::Duration;
/// use ringbatch::durable::{Durability, FsyncPolicy};
///
/// let durability = Durability::new("/var/lib/myapp/queue")
///     .with_fsync(FsyncPolicy::EveryBatch)
///     .with_max_bytes(256 << 20)
///     .with_segment_bytes(8 << 20);
/// assert_eq!(durability.max_bytes(), 256 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Durability {
    pub(crate) dir: PathBuf,
    pub(crate) fsync: FsyncPolicy,
    pub(crate) max_bytes: u64,
    pub(crate) segment_bytes: u64,
    pub(crate) corrupt_tail: CorruptTail,
}

/// The default limit of the store's size on disk: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// The default size at which a segment file is closed and a new one begun.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

impl Durability {
    /// A store in `dir` (created if missing), with the defaults: fsync
    /// [`FsyncPolicy::default`], at most 1 GiB on disk, segments of 16 MiB,
    /// corrupt tails truncated.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Durability {
            dir: dir.into(),
            fsync: FsyncPolicy::default(),
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            corrupt_tail: CorruptTail::default(),
        }
    }

    /// When to `fsync`.
    pub fn with_fsync(mut self, fsync: FsyncPolicy) -> Self {
        self.fsync = fsync;
        self
    }

    /// The most the store may hold on disk. A batch that does not fit waits
    /// for batches in flight to finish (backpressure); one that still does
    /// not fit is handled without being durable, its batch told why
    /// ([`Batch::store_error`](crate::Batch::store_error)).
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The size at which a segment is closed and a new one begun; whole
    /// segments are what compaction deletes.
    pub fn with_segment_bytes(mut self, segment_bytes: u64) -> Self {
        self.segment_bytes = segment_bytes;
        self
    }

    /// What to do with a corrupt record found when opening.
    pub fn with_corrupt_tail(mut self, corrupt_tail: CorruptTail) -> Self {
        self.corrupt_tail = corrupt_tail;
        self
    }

    /// The store's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The fsync policy.
    pub fn fsync(&self) -> FsyncPolicy {
        self.fsync
    }

    /// The size limit on disk.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The segment size.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// The corrupt-record policy.
    pub fn corrupt_tail(&self) -> CorruptTail {
        self.corrupt_tail
    }
}

/// A durable item's stable id: the incarnation of the batcher that first
/// wrote it (counted per directory, from 1) and its sequence in that
/// incarnation (from 0). A replayed item keeps its id, so a sink can use it
/// as an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId {
    /// The batcher's incarnation on its directory, from 1.
    pub incarnation: u32,
    /// The item's number within the incarnation, from 0.
    pub sequence: u64,
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.incarnation, self.sequence)
    }
}

/// What went wrong with the durable store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O operation failed.
    Io {
        /// What the store was doing ("create directory", "write", "fsync", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        error: Arc<std::io::Error>,
    },
    /// The store is at its size limit (`Durability::with_max_bytes`) and
    /// the record does not fit.
    Full {
        /// The bytes the record needs.
        needed: u64,
        /// The bytes the store holds now.
        used: u64,
        /// The limit.
        limit: u64,
    },
    /// Another batcher (in this process or another) has the directory open.
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// A record failed its checksum or ended early, and the policy is
    /// [`CorruptTail::Refuse`].
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where the first bad record begins.
        offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The codec could not encode an item.
    Encode {
        /// The codec's message.
        message: String,
    },
}

impl StoreError {
    #[allow(dead_code)]
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.into(),
            error: Arc::new(error),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { op, path, error } => {
                write!(f, "durable store: {op} {}: {error}", path.display())
            }
            StoreError::Full {
                needed,
                used,
                limit,
            } => write!(
                f,
                "durable store full: a record of {needed} bytes does not fit ({used} of {limit} bytes used)"
            ),
            StoreError::Locked { dir } => write!(
                f,
                "durable store {} is open in another batcher",
                dir.display()
            ),
            StoreError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "durable store: corrupt record in {} at byte {offset}: {reason}",
                path.display()
            ),
            StoreError::Encode { message } => {
                write!(f, "durable store: encoding an item: {message}")
            }
        }
    }
}

/// Equal when they say the same thing (I/O errors by their kind).
impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                StoreError::Io { op, path, error },
                StoreError::Io {
                    op: op2,
                    path: path2,
                    error: error2,
                },
            ) => op == op2 && path == path2 && error.kind() == error2.kind(),
            (
                StoreError::Full {
                    needed,
                    used,
                    limit,
                },
                StoreError::Full {
                    needed: n2,
                    used: u2,
                    limit: l2,
                },
            ) => needed == n2 && used == u2 && limit == l2,
            (StoreError::Locked { dir }, StoreError::Locked { dir: d2 }) => dir == d2,
            (
                StoreError::Corrupt {
                    path,
                    offset,
                    reason,
                },
                StoreError::Corrupt {
                    path: p2,
                    offset: o2,
                    reason: r2,
                },
            ) => path == p2 && offset == o2 && reason == r2,
            (StoreError::Encode { message }, StoreError::Encode { message: m2 }) => message == m2,
            _ => false,
        }
    }
}

impl Eq for StoreError {}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { error, .. } => Some(&**error),
            _ => None,
        }
    }
}
