//! Lock-free batching for latency-sensitive Rust.
//!
//! Producers push items into per-core bounded MPSC lanes; one drainer thread
//! sweeps the lanes, assembles batches in buffers allocated at build time, and
//! runs your [`Handler`] (the sink: a database, a gateway, an exporter). Each
//! item's result comes back to its submitter through a [`Ticket`], to be waited
//! for; fire-and-forget submissions pay nothing for that.
//!
//! - No item is lost or duplicated: every accepted item reaches the handler
//!   once, or its ticket says why not; a refused item comes back in the error.
//! - One producer's items reach the handler in the order it submitted them
//!   (with [`handler_threads`](BatcherBuilder::handler_threads) `n > 1`,
//!   within each batch, and across batches only per key group with
//!   [`ThreadRouting::ByGroup`]).
//! - Memory is fixed at build time ([`Stats::memory_bytes`]); the steady-state
//!   path from submit to handler and back does not allocate.
//! - Natural batching: at low load a batch is one item, dispatched at once;
//!   under load batches grow up to `max_batch`, with no timer.
//!
//! # Example
//!
//! ```
//! use ringbatch::{Batch, Batcher};
//!
//! let batcher = Batcher::builder()
//!     .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
//!         // Send `batch.items()` to the sink here; answer each item.
//!         batch.complete_with(|x| Ok::<_, ringbatch::Error>(x * 2));
//!         Ok(())
//!     })
//!     .build()
//!     .expect("valid settings");
//!
//! let producer = batcher.producer();
//! producer.push(1).unwrap(); // fire and forget
//! let ticket = producer.submit(21).unwrap(); // with a result
//! assert_eq!(ticket.wait().unwrap(), 42);
//!
//! let stats = batcher.shutdown(); // drains, completes, joins
//! assert_eq!(stats.items_handled, 2);
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `tokio` | on | async producers, awaitable tickets, async handlers, the drainer as a task |
//! | `metrics` | off | `BatcherBuilder::metrics`: `metrics` crate handles recorded per batch, real histograms; `Stats::export_metrics` |
//! | `prometheus-client` | off | `PrometheusCollector`: a batcher's stats in a `prometheus-client` registry |
//! | `postgres` | off | `sinks::postgres`: batched inserts with per-row results |
//! | `nats` | off | `sinks::nats`: JetStream publishes with per-message acks |
//! | `serde` | off | `settings`: every data setting from a TOML file, `BatcherBuilder::with_config` |
//! | `tracing` | off | a span per batch and events for failures through the `tracing` crate (below) |
//! | `durable` | off | `durable`: queued items survive a restart and a crash, in an append-only log replayed on the next build (`BatcherBuilder::durable`) |
//!
//! # Logs and traces (feature `tracing`)
//!
//! With the feature `tracing` the batcher reports through the
//! [`tracing`](https://docs.rs/tracing) crate, under the target `ringbatch`
//! (`ringbatch=debug` selects it all). Every span and event carries
//! `batcher`, the batcher's thread name
//! ([`BatcherBuilder::thread_name`]). Nothing is recorded per item: a span
//! per batch, events only for what the table lists. Without the feature
//! none of it is compiled in; with it and no subscriber interested, a batch
//! costs one check of the span's interest.
//!
//! | span or event | level | fields |
//! | --- | --- | --- |
//! | span `batch`: one call of the handler on a batch (blocking or async; each retry is a call) | DEBUG | `size`, `reason` ([`DispatchReason::name`]), `attempt` (1 for the first call), `group` (with `group_by`: a hash of the batch's key) |
//! | `batch failed`: the handler returned an error | WARN | `size`, `attempt`, `error` |
//! | `handler panicked` | ERROR | `size`, `attempt`, `panic` (its message) |
//! | `circuit breaker opened` | WARN | `consecutive_failures`, `trial` (a failed trial batch reopened it), `recovery_timeout` |
//! | `circuit breaker half open: one trial batch` | INFO | |
//! | `circuit breaker closed` (a trial batch succeeded) | INFO | |
//! | `retries exhausted`: items failed their last attempt (one event per batch) | WARN | `items`, `attempts`, `error` (the first item's) |
//! | `dead-lettered items dropped: no dead-letter callback`: items failed for good and, with no dead-letter callback set, are dropped (one event per batch) | WARN | `items`, `attempts`, `error` (the first item's) |
//! | `drainer exited` | INFO | `batches`, `items` (dispatched in its life) |
//! | `durable store failed` (feature `durable`): a write or sync failed, or a batch did not fit | ERROR | `error` |
//! | `replayed item does not decode: it stays in the store` (feature `durable`) | ERROR | `id`, `error` |
//! | `durable store cut a corrupt tail` (feature `durable`): opening the store cut records that did not check (`CorruptTail::Truncate`) | WARN | `records`, `bytes` |
//! | `durable store replayed` (feature `durable`): what the previous incarnations left went to the handler | INFO | `items`, `incarnation` |
//! | `drainer failed: the batcher is closed` (a bug of the batcher's) | ERROR | `panic` |
//!
//! A batch's events are emitted inside its span, and carry the fields they
//! need to read alone where a filter leaves the DEBUG span out.
//!
//! # The API
//!
//! - [`Batcher::builder`] and [`BatcherBuilder`]: lanes, capacity,
//!   `max_batch`, pool, [`WaitStrategy`], [`Backpressure`], drainer pinning,
//!   the handler. [`ConfigError`] names any invalid setting.
//! - [`Producer`]: `push` / `try_push` / `push_timeout` / `push_slice`
//!   (fire-and-forget) and `submit` / `try_submit` / `submit_timeout` /
//!   `submit_many` (with [`Ticket`]s). Refusals are [`SubmitError`]s holding
//!   the item. [`Batcher::exclusive_producer`] makes one that owns its
//!   lane and claims slots without a CAS, for a thread pushing in a hot
//!   loop. A lane or class that cannot be had is a [`LaneError`].
//! - [`Ticket`]: `wait`, `wait_timeout`, `wait_until`, `try_take`; a
//!   `Future` in async code. [`AsyncProducer`]: `push`, `submit` (a
//!   ticket, as on a thread) and `call` (the result).
//! - [`Handler`] and [`Batch`]: the sink's side; complete items with `ok`,
//!   `fail` or `complete_with`. Item failures are [`Error`]s.
//! - [`Batcher::flush`], [`Batcher::shutdown`], [`Batcher::stats`] ([`Stats`]).
//! - Batch shaping, all opt-in on the builder: byte limits with a weigher,
//!   [`Linger`], [`Priority`] classes, key groups ([`GroupLimits`]),
//!   conflation, deadlines and a maximum age, [`Adaptive`] sizing. See the
//!   README's "Batch shaping" table.
//! - Failure policies ([`failure`]): [`RetryPolicy`], [`CircuitBreaker`],
//!   dead letters, `pause`/`resume`, live settings, `shutdown_timeout`.
//! - Metrics ([`metrics`]): histograms in [`Stats`] (percentiles and
//!   bucket counts), [`Stats::prometheus`] and
//!   [`Stats::prometheus_with`] (constant labels, real Prometheus
//!   histograms with configurable buckets).
//! - Settings from a file (feature `serde`, module `settings`): `Settings`
//!   reads every data setting from TOML, `BatcherBuilder::with_config`
//!   applies it, the closures stay in code.
//!
//! # When user code panics
//!
//! Every piece of your code that the batcher calls may panic. No panic
//! stops the drainer, loses an item, answers an item twice or leaves a
//! ticket or a `shutdown` waiting for ever. What happens to the item:
//!
//! | Your code that panics | What happens |
//! |---|---|
//! | The handler (blocking or async) | Every item of the batch it had not completed fails with [`Error::HandlerPanicked`] (its message); counted in [`Stats::handler_panics`]. A panic is a permanent failure: not retried; with a dead-letter callback, those items go to it. The next batch goes on. |
//! | The weigher, a `group_by` / `conflate_by` key function, the group limits | That item fails with [`Error::CallbackPanicked`] (naming the [`Callback`]) and never reaches the handler; the other items go on; counted in [`Stats::callback_panics`]. |
//! | The dead-letter callback | The letter's item is gone (it was failing for good anyway); counted in `callback_panics`. |
//! | The spill callback (on the producer's thread) | The spilled item is gone; the submission that evicted it still returns as its policy says; counted in `callback_panics`. |
//! | `Drop` of an item or a result that the batcher drops | Contained; counted in [`Stats::drop_panics`]; what that `Drop` had not freed yet is leaked. Never dropped twice. |
//! | `Drop` of a result in a [`Ticket`] you drop | Panics on your thread, from the ticket's drop, after the ticket's slot was freed: the batcher is not affected. |
//! | The batcher itself (a bug of ours) | The drainer closes every lane, fails every item it holds and every pending ticket with [`Error::DrainerPanicked`], producers get [`SubmitError::Closed`] with their item, and `shutdown` / `shutdown_timeout` return at once with what was not handled. |
//!
//! A callback that panics on an item fails that item alone.
//!
//! # What a handler may call on its own batcher
//!
//! A handler runs on the drainer (or a runtime task the drainer waits
//! for), so a call that waits for the drainer would wait for itself. The
//! batcher knows when it is called from its own handler (or dead-letter
//! callback) and never waits there:
//!
//! - Submissions that do not wait (`try_push`, `try_submit`, and `push` /
//!   `submit` when the lane has room) work as anywhere else; the items go
//!   into a later batch.
//! - A submission that would wait for room (`push` / `submit` on a full
//!   lane under [`Backpressure::Block`], `push_timeout`, the async
//!   `push`, `submit` and `call`) returns [`SubmitError::Full`] with the
//!   item at once ([`Error::Refused`] from `call`).
//! - [`Batcher::flush`] returns at once, [`Batcher::flush_timeout`]
//!   returns `false` at once and `Batcher::flush_async` (feature `tokio`)
//!   resolves at once.
//! - [`Batcher::shutdown`], [`Batcher::shutdown_timeout`],
//!   `Batcher::shutdown_async` and dropping the last [`Batcher`] close
//!   the lanes and return at once; the drainer drains what is queued and
//!   exits once the handler returns.
//! - Do not wait on a ticket of an item submitted from the handler to its
//!   own batcher: its result comes from the next batch, which waits for
//!   this one. Take it later with [`Ticket::try_take`], or from another
//!   thread.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs, missing_debug_implementations)]

mod batch;
mod batcher;
#[cfg(feature = "prometheus-client")]
mod collector;
mod completion;
mod config;
mod contain;
#[cfg(feature = "durable")]
#[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
pub mod durable;
mod engine;
mod error;
pub mod failure;
mod handler;
pub mod metrics;
#[cfg(feature = "metrics")]
mod metrics_facade;
mod producer;
mod ring;
mod scope;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod settings;
mod shape;
#[cfg(any(feature = "postgres", feature = "nats"))]
pub mod sinks;
mod stats;
mod sync;
mod trace;
mod wait;

pub use batch::LoadFeedback;
pub use batcher::{Batcher, BatcherBuilder, Producers};
#[cfg(feature = "prometheus-client")]
pub use collector::PrometheusCollector;
pub use completion::Ticket;
pub use config::{
    Backpressure, Config, ConfigError, DEFAULT_RESULT_SLOTS, LaneAssignment, MAX_CAPACITY,
    MAX_DURATION, MAX_HANDLER_THREADS, MAX_LANES, ThreadRouting,
};
#[cfg(feature = "tokio")]
pub use engine::runtime::{AsyncBatch, AsyncHandler};
pub use error::{
    Callback, CallbackPanic, Error, LaneError, RefusedKind, SharedError, SliceError, SubmitError,
};
pub use failure::{BreakerState, CircuitBreaker, DeadLetter, Failure, FailureKind, RetryPolicy};
pub use handler::{Batch, BatchError, CompleteError, Handler};
pub use producer::{AsyncProducer, Producer};
#[cfg(feature = "serde")]
pub use settings::{Settings, SettingsError};
pub use shape::{
    Adaptive, AdaptiveMode, DEFAULT_MAX_BYTES, DEFAULT_MAX_OPEN_GROUPS, DEFAULT_STARVATION_AGE,
    GroupLimits, GroupSize, Linger, LoadWeights, Oversize, Priority, PriorityLevelError,
    group_key_hash,
};
#[cfg(feature = "durable")]
pub use stats::DurableStats;
pub use stats::{DispatchCounts, DispatchReason, GroupStats, LaneStats, Stats, Throughput};
pub use wait::WaitStrategy;

// The README's examples run as doc tests.
#[cfg(all(doctest, feature = "tokio"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

// The loom models (`loom-tests/`) run as unit tests of the crate, built only
// with `--cfg loom`, so they drive the real ring, completion and wake-up code
// through its crate-private API. Run them with `bin/loom`.
#[cfg(all(test, loom))]
#[path = "../loom-tests/mod.rs"]
mod loom_tests;
