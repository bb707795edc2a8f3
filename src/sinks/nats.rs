//! A NATS JetStream sink: each item of a batch is published to a stream,
//! and its ticket resolves to the message's stream sequence.
//!
//! # How a batch is published
//!
//! [`JetStreamSink`] maps each item to a [`JetStreamMessage`] (subject,
//! payload, optional de-duplication id), publishes every message of the
//! batch without waiting, then awaits all the acknowledgements at once: one
//! batch costs about one round trip to the stream leader, not one per
//! message. Each acknowledged message completes its ticket with its stream
//! sequence; a message the stream refused fails its ticket with
//! [`JetStreamSinkError::Publish`].
//!
//! # Retries and de-duplication
//!
//! A publish that times out, finds no responders (the stream's leader is
//! being elected after a node was lost), loses its connection or meets a
//! cluster that is temporarily unavailable is sent again, after a pause,
//! under the sink's [`RetryPolicy`]; only the messages that failed are
//! sent again. When the retries run out their tickets fail with
//! [`JetStreamSinkError::Unavailable`].
//!
//! A timed-out publish may still have been stored. Give every message an
//! id ([`JetStreamMessage::with_id`]): it travels in the `Nats-Msg-Id`
//! header, and the stream stores a message whose id it has seen within its
//! `duplicate_window` (2 minutes by default) only once, acknowledging the
//! copy with the original's sequence. A retried message then resolves to
//! the sequence it was first stored at, and the stream holds it once.
//! Without an id a retry may store a message twice.
//!
//! # The connection
//!
//! The sink publishes through the [`async_nats::jetstream::Context`] it is
//! given: connect the client to every node of the cluster
//! (`async_nats::connect(vec![url1, url2, url3])`) so that it reconnects to
//! another when one goes away. The context's timeout (5 s by default, set
//! with [`async_nats::jetstream::ContextBuilder::timeout`]) bounds each wait
//! for an acknowledgement.

use core::fmt;
use std::sync::Arc;

pub use async_nats;
use async_nats::Subject;
use async_nats::jetstream::context::{Context, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{ErrorCode, publish::PublishAck};
pub use bytes::Bytes;
use futures_util::future::join_all;

use crate::RetryPolicy;
use crate::error::{Error, SharedError};
use crate::handler::BatchError;
use crate::sync::{AtomicU64, Ordering};
use crate::{AsyncBatch, AsyncHandler};

/// What a [`JetStreamSink`] publishes for one item.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JetStreamMessage {
    /// The subject (one of the stream's subjects).
    pub subject: String,
    /// The message body.
    pub payload: Bytes,
    /// The de-duplication id (`Nats-Msg-Id`): unique per logical message,
    /// the same for every retry of it.
    pub id: Option<String>,
}

impl JetStreamMessage {
    /// A message with no de-duplication id.
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            subject: subject.into(),
            payload: payload.into(),
            id: None,
        }
    }

    /// The same message with de-duplication id `id`.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
}

/// A message ready to send (again): a cheap-to-clone subject and the
/// publish request.
struct Outgoing {
    subject: Subject,
    publish: PublishMessage,
}

/// An [`AsyncHandler`] that publishes each item of a batch to a JetStream
/// stream, collecting the acknowledgements concurrently; each item resolves
/// to its message's stream sequence. See the [module docs](self).
///
/// # Examples
///
/// ```no_run
/// use ringbatch::Batcher;
/// use ringbatch::sinks::nats::{JetStreamMessage, JetStreamSink, async_nats};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let jetstream = async_nats::jetstream::new(client);
/// // A stream "EVENTS" with subjects "events.>" exists.
/// let sink = JetStreamSink::new(jetstream, |&(id, temp): &(u64, f32)| {
///     JetStreamMessage::new(format!("events.{}", id % 16), temp.to_string())
///         .with_id(id.to_string())
/// });
/// let batcher = Batcher::builder().max_batch(512).async_handler(sink).build()?;
/// let mut producer = batcher.async_producer();
/// let sequence: u64 = producer.call((1, 21.5)).await?;
/// println!("stored at stream sequence {sequence}");
/// batcher.shutdown_async().await;
/// # Ok(())
/// # }
/// ```
pub struct JetStreamSink<T> {
    context: Context,
    message: Box<dyn Fn(&T) -> JetStreamMessage + Send + Sync>,
    retry: RetryPolicy,
    metrics: JetStreamMetrics,
    /// (feature `durable`) The prefix of the ids made from the store's
    /// item ids, for messages without an id of their own.
    #[cfg(feature = "durable")]
    store_ids: Option<String>,
}

impl<T: Send + 'static> JetStreamSink<T> {
    /// A sink publishing through `context`, each item as `message(item)`,
    /// retrying under [`default_retry_policy`](super::default_retry_policy).
    pub fn new(
        context: Context,
        message: impl Fn(&T) -> JetStreamMessage + Send + Sync + 'static,
    ) -> Self {
        Self {
            context,
            message: Box::new(message),
            retry: super::default_retry_policy(),
            metrics: JetStreamMetrics::default(),
            #[cfg(feature = "durable")]
            store_ids: None,
        }
    }

    /// (feature `durable`) Gives every message without an id of its own
    /// the id `{prefix}-{item id}`, from the batcher's durable store
    /// ([`Batch::item_id`](crate::Batch::item_id)): a message replayed
    /// after a restart then carries the id it was first published with,
    /// and the stream stores it once (within its `duplicate_window`). The
    /// prefix must be unique to the store's directory among everything
    /// that publishes to the stream (item ids are unique per directory).
    #[cfg(feature = "durable")]
    pub fn with_store_ids(mut self, prefix: impl Into<String>) -> Self {
        self.store_ids = Some(prefix.into());
        self
    }

    /// How failed publishes are retried (default
    /// [`default_retry_policy`](super::default_retry_policy)).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

impl<T> JetStreamSink<T> {
    /// A handle on the sink's counters, to keep before the sink moves into
    /// the batcher.
    pub fn metrics(&self) -> JetStreamMetrics {
        self.metrics.clone()
    }

    /// Publishes `indexes` of `messages` and awaits their acknowledgements;
    /// returns each index with its outcome.
    async fn publish(
        &self,
        messages: &[Outgoing],
        indexes: &[usize],
    ) -> Vec<(usize, Result<PublishAck, PublishError>)> {
        // Publish everything first (each call only queues the message on
        // the connection), then wait for all the acknowledgements together.
        let mut acks = Vec::with_capacity(indexes.len());
        for &i in indexes {
            let message = &messages[i];
            let sent = self
                .context
                .send_publish(message.subject.clone(), message.publish.clone())
                .await;
            acks.push(async move {
                match sent {
                    Ok(ack) => (i, ack.await),
                    Err(e) => (i, Err(e)),
                }
            });
        }
        join_all(acks).await
    }

    /// Publishes `batch`, completing every item.
    async fn write(&self, batch: &mut AsyncBatch<T, u64>) {
        let counters = &*self.metrics.inner;
        counters.batches.fetch_add(1, Ordering::Relaxed);
        let messages: Vec<Outgoing> = batch
            .items()
            .iter()
            .zip(0usize..)
            .map(|(item, _index)| {
                let JetStreamMessage {
                    subject,
                    payload,
                    id,
                } = (self.message)(item);
                #[cfg(feature = "durable")]
                let id = id.or_else(|| {
                    let prefix = self.store_ids.as_ref()?;
                    Some(format!("{prefix}-{}", batch.item_id(_index)?))
                });
                let mut publish = PublishMessage::build().payload(payload);
                if let Some(id) = id {
                    publish = publish.message_id(id);
                }
                Outgoing {
                    subject: Subject::from(subject),
                    publish,
                }
            })
            .collect();
        let mut pending: Vec<usize> = (0..messages.len()).collect();
        let mut attempt = 0;
        while !pending.is_empty() {
            let outcomes = self.publish(&messages, &pending).await;
            let mut again = Vec::new();
            let mut last = None;
            for (i, outcome) in outcomes {
                match outcome {
                    // A copy of a message whose original is not stored yet
                    // comes back without a sequence: ask again.
                    Ok(ack) if ack.duplicate && ack.sequence == 0 => again.push(i),
                    Ok(ack) => {
                        let counter = if ack.duplicate {
                            &counters.duplicates
                        } else {
                            &counters.stored
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        let _ = batch.ok(i, ack.sequence);
                    }
                    Err(e) if is_retryable(&e) => {
                        again.push(i);
                        last = Some(e);
                    }
                    Err(e) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        let error = SharedError::new(JetStreamSinkError::Publish(Arc::new(e)));
                        let _ = batch.complete(i, Err(Error::Failed(error)));
                    }
                }
            }
            if again.is_empty() {
                break;
            }
            if attempt >= self.retry.max_retries {
                counters
                    .failed
                    .fetch_add(again.len() as u64, Ordering::Relaxed);
                let error = SharedError::new(JetStreamSinkError::Unavailable {
                    attempts: attempt + 1,
                    last: last.map(Arc::new),
                });
                for &i in &again {
                    let _ = batch.complete(i, Err(Error::Failed(error.clone())));
                }
                break;
            }
            tokio::time::sleep(super::pause(&self.retry, attempt)).await;
            attempt += 1;
            counters
                .retried
                .fetch_add(again.len() as u64, Ordering::Relaxed);
            pending = again;
        }
    }
}

impl<T: Send + 'static> AsyncHandler<T, u64> for JetStreamSink<T> {
    async fn handle(&self, mut batch: AsyncBatch<T, u64>) -> Result<(), BatchError> {
        self.write(&mut batch).await;
        Ok(())
    }
}

impl<T> fmt::Debug for JetStreamSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamSink")
            .field("retry", &self.retry)
            .field("metrics", &self.metrics.get())
            .finish_non_exhaustive()
    }
}

/// JetStream errors that say the cluster cannot take the message right now
/// (a leader being elected, peers missing), not that it never will.
const RETRYABLE: &[ErrorCode] = &[
    ErrorCode::CLUSTER_NOT_AVAILABLE,
    ErrorCode::CLUSTER_NOT_ACTIVE,
    ErrorCode::CLUSTER_NOT_LEADER,
    ErrorCode::CLUSTER_INCOMPLETE,
    ErrorCode::CLUSTER_NO_PEERS,
    ErrorCode::RAFT_GENERAL,
];

/// Whether a publish error is worth a retry.
fn is_retryable(error: &PublishError) -> bool {
    match error.kind() {
        // No responders: no stream leader for the subject right now (after
        // a node loss, until a new one is elected), or no stream at all.
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::StreamNotFound
        | PublishErrorKind::MaxAckPending => true,
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => false,
        _ => match std::error::Error::source(error)
            .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
        {
            // An error from the server: only the cluster's own troubles.
            Some(js) => js.code() == 503 || RETRYABLE.contains(&js.error_code()),
            // From the client: the connection or its queue.
            None => true,
        },
    }
}

/// Why an item published by a [`JetStreamSink`] failed: its ticket's
/// [`Error::Failed`] holds one (downcast
/// [`Error::handler_error`](crate::Error::handler_error) to it).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum JetStreamSinkError {
    /// The stream refused the message for good (a limit, an expected-last
    /// check); it was not stored.
    Publish(Arc<PublishError>),
    /// Every attempt the [`RetryPolicy`] allowed failed for want of a
    /// server (timeouts, no responders, a lost connection). The message may
    /// still have been stored by an attempt whose acknowledgement was lost:
    /// publishing it again with the same id within the stream's duplicate
    /// window stores it at most once.
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error (none if the server kept acknowledging
        /// a copy of a message whose original was not stored yet).
        last: Option<Arc<PublishError>>,
    },
}

impl JetStreamSinkError {
    /// The publish error behind this one.
    pub fn publish_error(&self) -> Option<&PublishError> {
        match self {
            JetStreamSinkError::Publish(e) => Some(e),
            JetStreamSinkError::Unavailable { last, .. } => last.as_deref(),
        }
    }
}

impl fmt::Display for JetStreamSinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JetStreamSinkError::Publish(e) => write!(f, "the stream refused the message: {e}"),
            JetStreamSinkError::Unavailable {
                attempts,
                last: Some(last),
            } => write!(
                f,
                "JetStream was unavailable for {attempts} attempts; the last failed with: {last}"
            ),
            JetStreamSinkError::Unavailable {
                attempts,
                last: None,
            } => write!(
                f,
                "JetStream acknowledged only a duplicate without a sequence for {attempts} attempts"
            ),
        }
    }
}

impl std::error::Error for JetStreamSinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.publish_error()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A handle on a [`JetStreamSink`]'s counters (cheap to clone); see
/// [`JetStreamSink::metrics`].
#[derive(Clone, Default)]
pub struct JetStreamMetrics {
    inner: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    stored: AtomicU64,
    duplicates: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
}

/// A snapshot of a [`JetStreamSink`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JetStreamStats {
    /// Batches handled.
    pub batches: u64,
    /// Messages acknowledged as newly stored.
    pub stored: u64,
    /// Messages acknowledged as duplicates of one stored before (a retry
    /// whose first attempt was stored, or a repeated id).
    pub duplicates: u64,
    /// Messages published again after a retryable failure (counted per
    /// retry).
    pub retried: u64,
    /// Messages whose tickets failed.
    pub failed: u64,
}

impl JetStreamMetrics {
    /// The counters now.
    pub fn get(&self) -> JetStreamStats {
        let c = &*self.inner;
        // Relaxed: statistics, ordered with nothing.
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        JetStreamStats {
            batches: load(&c.batches),
            stored: load(&c.stored),
            duplicates: load(&c.duplicates),
            retried: load(&c.retried),
            failed: load(&c.failed),
        }
    }
}

impl fmt::Debug for JetStreamMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_missing_responders_are_retried_but_expectations_are_not() {
        for kind in [
            PublishErrorKind::TimedOut,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::StreamNotFound,
        ] {
            assert!(is_retryable(&PublishError::new(kind)), "{kind:?}");
        }
        for kind in [
            PublishErrorKind::WrongLastMessageId,
            PublishErrorKind::WrongLastSequence,
        ] {
            assert!(!is_retryable(&PublishError::new(kind)), "{kind:?}");
        }
    }

    #[test]
    fn a_message_carries_its_id() {
        let message = JetStreamMessage::new("a.b", "x").with_id("7");
        assert_eq!(message.id.as_deref(), Some("7"));
        assert_eq!(message.payload, Bytes::from_static(b"x"));
    }
}
