//! Error types: why a submission was refused (the item comes back), and why
//! an accepted item produced no output.

use core::fmt;
// Error payloads are shared by every ticket of a failed batch. This `Arc` is
// plain data, not part of an atomic protocol, so it is the standard one.
use std::sync::Arc;

/// The boxed error type handlers return.
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A handler's error, shared by every item it applies to: one allocation
/// when the error is made, a reference count per item after that.
///
/// It is one pointer wide (an `Arc` of a `Box`, not an `Arc<dyn Error>`),
/// so that [`Error`] is two words (see there why that matters).
///
/// It derefs to the error itself (it does not implement `Error` itself:
/// that would overlap its conversion from any error):
///
/// ```
/// use ringbatch::SharedError;
///
/// #[derive(Debug)]
/// struct Refused;
/// impl std::fmt::Display for Refused {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("refused by the sink")
///     }
/// }
/// impl std::error::Error for Refused {}
///
/// let shared = SharedError::new(Refused);
/// assert_eq!(shared.to_string(), "refused by the sink");
/// assert!(shared.downcast_ref::<Refused>().is_some());
/// let from_text = SharedError::from("bad row");
/// assert_eq!(from_text.to_string(), "bad row");
/// ```
#[derive(Clone)]
pub struct SharedError(Arc<BoxError>);

impl SharedError {
    /// Shares `error` (anything that converts to a boxed error: an error
    /// type, a `String`, a `&str`).
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self(Arc::new(error.into()))
    }
}

impl core::ops::Deref for SharedError {
    type Target = dyn std::error::Error + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        &**self.0
    }
}

impl<E: Into<BoxError>> From<E> for SharedError {
    fn from(error: E) -> Self {
        Self::new(error)
    }
}

impl fmt::Debug for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

/// A panic's message, shared by every item of the batch that panicked (one
/// pointer wide, as [`SharedError`] is).
pub(crate) type PanicMessage = Arc<String>;

/// Why an item was not accepted. Every variant gives the item back.
#[derive(PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum SubmitError<T> {
    /// The lane is full (or, for a submission with a ticket, every result slot
    /// it needs is still held by an earlier ticket) and the call does not wait.
    Full(T),
    /// The batcher is shutting down or shut down.
    Closed(T),
    /// The lane stayed full until the call's timeout.
    Timeout(T),
    /// The submission carries a deadline, but the batcher was built without
    /// deadlines ([`BatcherBuilder::deadlines`](crate::BatcherBuilder::deadlines)).
    NoDeadlines(T),
    /// The submission names a priority class, but the batcher was built
    /// without priority classes ([`BatcherBuilder::priorities`](crate::BatcherBuilder::priorities)),
    /// or that class's ring of the lane is owned by an exclusive producer.
    NoPriorities(T),
}

impl<T> SubmitError<T> {
    /// Gives the item back.
    pub fn into_inner(self) -> T {
        match self {
            SubmitError::Full(item)
            | SubmitError::Closed(item)
            | SubmitError::Timeout(item)
            | SubmitError::NoDeadlines(item)
            | SubmitError::NoPriorities(item) => item,
        }
    }

    /// Why the item was refused, without the item.
    pub fn kind(&self) -> RefusedKind {
        match self {
            SubmitError::Full(_) => RefusedKind::Full,
            SubmitError::Closed(_) => RefusedKind::Closed,
            SubmitError::Timeout(_) => RefusedKind::Timeout,
            SubmitError::NoDeadlines(_) => RefusedKind::NoDeadlines,
            SubmitError::NoPriorities(_) => RefusedKind::NoPriorities,
        }
    }

    /// Whether the lane was full.
    pub fn is_full(&self) -> bool {
        matches!(self, SubmitError::Full(_))
    }

    /// Whether the batcher was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, SubmitError::Closed(_))
    }
}

impl<T> fmt::Debug for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The item need not be `Debug`; name the variant.
        match self {
            SubmitError::Full(_) => f.write_str("Full(..)"),
            SubmitError::Closed(_) => f.write_str("Closed(..)"),
            SubmitError::Timeout(_) => f.write_str("Timeout(..)"),
            SubmitError::NoDeadlines(_) => f.write_str("NoDeadlines(..)"),
            SubmitError::NoPriorities(_) => f.write_str("NoPriorities(..)"),
        }
    }
}

impl<T> fmt::Display for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind(), f)
    }
}

impl<T> std::error::Error for SubmitError<T> {}

/// Why a submission was refused (a [`SubmitError`] without its item).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusedKind {
    /// The lane was full.
    Full,
    /// The batcher was closed.
    Closed,
    /// The lane stayed full until the timeout.
    Timeout,
    /// A deadline was given to a batcher built without deadlines.
    NoDeadlines,
    /// A priority class was given to a batcher built without priority
    /// classes (or the class's ring is owned by an exclusive producer).
    NoPriorities,
}

impl fmt::Display for RefusedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefusedKind::Full => "the lane is full",
            RefusedKind::Closed => "the batcher is closed",
            RefusedKind::Timeout => "the lane stayed full until the timeout",
            RefusedKind::NoDeadlines => {
                "the batcher was built without deadlines (`BatcherBuilder::deadlines`)"
            }
            RefusedKind::NoPriorities => {
                "the batcher was built without priority classes (`BatcherBuilder::priorities`), \
                 or the class's ring is owned by an exclusive producer"
            }
        })
    }
}

/// A slice submission stopped part way: `items[accepted..]` were not accepted
/// (the caller still holds them), for the reason in `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceError {
    /// How many leading items were accepted (in order).
    pub accepted: usize,
    /// Why the rest were not.
    pub kind: RefusedKind,
}

impl fmt::Display for SliceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accepted the first {} items, then {}",
            self.accepted, self.kind
        )
    }
}

impl std::error::Error for SliceError {}

/// Why a producer could not be made on the lane or class asked for. These
/// depend on which producers exist at the time of the call, not on the
/// batcher's settings (those are [`ConfigError`](crate::ConfigError)s,
/// checked by `build`).
///
/// ```
/// use ringbatch::{Batch, Batcher, LaneError};
///
/// let batcher = Batcher::builder()
///     .lanes(2)
///     .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
///         batch.ok_with(|_| ());
///         Ok(())
///     })
///     .build()
///     .unwrap();
/// assert_eq!(
///     batcher.producer_on_lane(5).unwrap_err(),
///     LaneError::NoSuchLane { lane: 5, lanes: 2 }
/// );
/// let owner = batcher.exclusive_producer().unwrap();
/// assert_eq!(
///     batcher.producer_on_lane(owner.lane()).unwrap_err(),
///     LaneError::LaneTaken { lane: owner.lane() }
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LaneError {
    /// The lane asked for does not exist.
    NoSuchLane {
        /// The lane asked for.
        lane: usize,
        /// The number of lanes.
        lanes: usize,
    },
    /// The lane asked for is owned by an exclusive producer.
    LaneTaken {
        /// The lane asked for.
        lane: usize,
    },
    /// An exclusive producer needs a lane with no producer, and one lane
    /// must stay open to shared producers: there is no such lane now.
    NoFreeLane {
        /// The number of lanes.
        lanes: usize,
    },
    /// A priority class other than `Normal` was asked of a batcher built
    /// without [`priorities`](crate::BatcherBuilder::priorities).
    NoPriorities,
}

impl fmt::Display for LaneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LaneError::NoSuchLane { lane, lanes } => write!(
                f,
                "lane {lane} does not exist (the batcher has {lanes} lanes)"
            ),
            LaneError::LaneTaken { lane } => {
                write!(f, "lane {lane} is owned by an exclusive producer")
            }
            LaneError::NoFreeLane { lanes } => write!(
                f,
                "no lane is free for an exclusive producer (the batcher has {lanes} lanes, \
                 and one must stay open to shared producers)"
            ),
            LaneError::NoPriorities => f.write_str(
                "the batcher was built without priority classes: only `Normal` producers exist",
            ),
        }
    }
}

impl std::error::Error for LaneError {}

/// Why an accepted item produced no output. Cloneable: a whole-batch failure
/// gives the same error to every item of the batch.
///
/// Two words: a word-sized discriminant and a payload of at most one word.
/// Results travel by value from the handler to each submitter, so their
/// size and shape are on every item's path: with a byte-sized discriminant
/// the compiler copied the tag byte and the rest of its word separately, and
/// the reads that followed stalled on store forwarding (BENCHMARKS.md, "The
/// shape of a result"). A `Result<u64, Error>` and a pending
/// [`Ticket<u64>`](crate::Ticket) are two words each, with the tag in a
/// whole word.
#[derive(Clone)]
#[non_exhaustive]
#[repr(usize)]
pub enum Error {
    /// The handler failed this item ([`Batch::fail`](crate::Batch::fail)).
    Failed(SharedError),
    /// The handler returned an error for the whole batch.
    BatchFailed(SharedError),
    /// The handler panicked while handling the item's batch.
    HandlerPanicked {
        /// The panic message, when it was a string (an `Arc<String>`, one
        /// pointer wide, so that [`Error`] stays two words).
        message: Arc<String>,
    },
    /// The handler returned without completing the item.
    NotCompleted,
    /// The item was dropped because its lane was full: refused by the
    /// [`DropNewest`](crate::Backpressure::DropNewest) policy, or evicted by
    /// [`DropOldest`](crate::Backpressure::DropOldest) to make room.
    Dropped,
    /// The batcher stopped without handling the item (its drainer thread
    /// ended abnormally).
    Closed,
    /// The result was already taken from this ticket.
    AlreadyTaken,
    /// The item was refused before it reached a lane (from
    /// [`AsyncProducer::call`](crate::AsyncProducer::call), which does not
    /// hand the item back; use `submit` to keep it).
    Refused(RefusedKind),
    /// The async runtime running the batch shut down before the batch
    /// finished.
    RuntimeShutdown,
    /// The item's deadline (or the batcher's maximum age) passed before it
    /// was dispatched; it never reached the handler.
    Expired,
    /// A later item with the same conflation key replaced this one in its
    /// batch; it never reached the handler.
    Superseded,
    /// The circuit breaker was open: the item's batch was not tried.
    CircuitOpen,
    /// A callback other than the handler (a key function, the weigher, the
    /// group limits) panicked on this item: the panic was contained, and the
    /// item never reached the handler. See the crate docs, "When user code
    /// panics".
    CallbackPanicked(CallbackPanic),
    /// The drainer failed (a panic in the batcher itself, not in user
    /// code): it closed every lane and failed every item it held; this one
    /// was not handled. A bug of the batcher's; the message says where.
    DrainerPanicked {
        /// The panic message (one pointer wide, as for
        /// [`HandlerPanicked`](Error::HandlerPanicked)).
        message: Arc<String>,
    },
    /// The item weighs more than the batcher's byte limit on its own.
    TooLarge {
        /// The item's weight, by the batcher's weigher (`u32::MAX` for a
        /// weight of 4 GiB or more).
        weight: u32,
        /// The byte limit ([`max_bytes`](crate::BatcherBuilder::max_bytes),
        /// which is at most `u32::MAX`).
        limit: u32,
    },
    /// (feature `durable`) The batcher shut down
    /// ([`shutdown_timeout`](crate::Batcher::shutdown_timeout)) before
    /// handling the item, and wrote it to its durable store: the next
    /// batcher built on the same directory hands it to its handler. Do not
    /// submit it again.
    #[cfg(feature = "durable")]
    Persisted,
}

impl Error {
    /// The handler's error, for [`Failed`](Error::Failed) and
    /// [`BatchFailed`](Error::BatchFailed).
    pub fn handler_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Error::Failed(e) | Error::BatchFailed(e) => Some(&**e),
            _ => None,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Failed(e) => f.debug_tuple("Failed").field(&format_args!("{e}")).finish(),
            Error::BatchFailed(e) => f
                .debug_tuple("BatchFailed")
                .field(&format_args!("{e}"))
                .finish(),
            Error::HandlerPanicked { message } => f
                .debug_struct("HandlerPanicked")
                .field("message", message)
                .finish(),
            Error::NotCompleted => f.write_str("NotCompleted"),
            Error::Dropped => f.write_str("Dropped"),
            Error::Closed => f.write_str("Closed"),
            Error::AlreadyTaken => f.write_str("AlreadyTaken"),
            Error::Refused(kind) => f.debug_tuple("Refused").field(kind).finish(),
            Error::RuntimeShutdown => f.write_str("RuntimeShutdown"),
            Error::Expired => f.write_str("Expired"),
            #[cfg(feature = "durable")]
            Error::Persisted => f.write_str("Persisted"),
            Error::Superseded => f.write_str("Superseded"),
            Error::CircuitOpen => f.write_str("CircuitOpen"),
            Error::CallbackPanicked(panic) => {
                f.debug_tuple("CallbackPanicked").field(panic).finish()
            }
            Error::DrainerPanicked { message } => f
                .debug_struct("DrainerPanicked")
                .field("message", message)
                .finish(),
            Error::TooLarge { weight, limit } => f
                .debug_struct("TooLarge")
                .field("weight", weight)
                .field("limit", limit)
                .finish(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Failed(e) => write!(f, "the handler failed the item: {e}"),
            Error::BatchFailed(e) => write!(f, "the handler failed the whole batch: {e}"),
            Error::HandlerPanicked { message } => write!(f, "the handler panicked: {message}"),
            Error::NotCompleted => f.write_str("the handler returned without completing the item"),
            Error::Dropped => f.write_str("the item was dropped because its lane was full"),
            Error::Closed => f.write_str("the batcher stopped before handling the item"),
            Error::AlreadyTaken => f.write_str("the result was already taken from this ticket"),
            Error::Refused(kind) => write!(f, "the item was refused: {kind}"),
            Error::RuntimeShutdown => {
                f.write_str("the async runtime shut down before the item's batch finished")
            }
            Error::Expired => f.write_str("the item's deadline passed before it was dispatched"),
            #[cfg(feature = "durable")]
            Error::Persisted => f.write_str(
                "the batcher shut down before handling the item and wrote it to its durable store, for the next batcher on it",
            ),
            Error::Superseded => {
                f.write_str("a later item with the same key replaced the item in its batch")
            }
            Error::CircuitOpen => {
                f.write_str("the circuit breaker was open: the item's batch was not tried")
            }
            Error::CallbackPanicked(panic) => write!(
                f,
                "the {} panicked on the item: {}",
                panic.callback(),
                panic.message()
            ),
            Error::DrainerPanicked { message } => {
                write!(f, "the drainer failed and closed the batcher: {message}")
            }
            Error::TooLarge { weight, limit } => write!(
                f,
                "the item weighs {weight} bytes, more than the batch limit of {limit}"
            ),
        }
    }
}

// `Error` is two words, so a `Result<u64, Error>` is too (see `Error`).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(core::mem::size_of::<Result<u64, Error>>() == 16);

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Failed(e) | Error::BatchFailed(e) => Some(&**e),
            _ => None,
        }
    }
}

/// Which callback panicked (see [`Error::CallbackPanicked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Callback {
    /// The weigher ([`BatcherBuilder::weigher`](crate::BatcherBuilder::weigher)).
    Weigher,
    /// The key function of
    /// [`group_by`](crate::BatcherBuilder::group_by).
    GroupBy,
    /// The function of [`group_limits`](crate::BatcherBuilder::group_limits).
    GroupLimits,
    /// The key function of
    /// [`conflate_by`](crate::BatcherBuilder::conflate_by).
    ConflateBy,
}

impl fmt::Display for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Callback::Weigher => "weigher",
            Callback::GroupBy => "group_by key function",
            Callback::GroupLimits => "group_limits function",
            Callback::ConflateBy => "conflate_by key function",
        })
    }
}

/// A contained panic of a callback: which one, and its message (shared by
/// the clones of the error; one pointer wide, so that [`Error`] stays two
/// words).
#[derive(Clone)]
pub struct CallbackPanic(Arc<(Callback, String)>);

impl CallbackPanic {
    pub(crate) fn new(callback: Callback, message: &str) -> Self {
        Self(Arc::new((callback, message.to_owned())))
    }

    /// The callback that panicked.
    pub fn callback(&self) -> Callback {
        self.0.0
    }

    /// The panic message, when it was a string.
    pub fn message(&self) -> &str {
        &self.0.1
    }
}

impl fmt::Debug for CallbackPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackPanic")
            .field("callback", &self.callback())
            .field("message", &self.message())
            .finish()
    }
}
