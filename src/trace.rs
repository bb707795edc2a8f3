//! Logs and traces through the `tracing` crate (feature `tracing`): a span
//! per batch handed to the handler, and an event for each failure worth a
//! line in the logs. The crate docs list them with their levels and fields.
//!
//! Every span and event goes through this module. With the feature off, its
//! types are zero-sized and its functions empty: they compile to nothing,
//! and nothing is added to the drainer or the producers. With it on, nothing
//! is recorded per item: a span per batch, events only on failures, the
//! breaker's changes and the drainer's exit.

#[cfg(feature = "tracing")]
pub(crate) use on::{BatchSpan, BatchTag, Count, Tracer, drainer_exited, drainer_failed};
#[cfg(all(feature = "tracing", feature = "durable"))]
pub(crate) use on::{corrupt_tail_cut, replay_undecodable, replayed, store_failed};

#[cfg(not(feature = "tracing"))]
pub(crate) use off::{BatchSpan, BatchTag, Count, Tracer, drainer_exited, drainer_failed};
#[cfg(all(not(feature = "tracing"), feature = "durable"))]
pub(crate) use off::{corrupt_tail_cut, replay_undecodable, replayed, store_failed};

#[cfg(feature = "tracing")]
mod on {
    use core::fmt::{self, Display};
    use std::time::Duration;

    use crate::error::Error;

    /// Every span and event has this target: `ringbatch=debug` selects
    /// them all in an `EnvFilter`-style directive.
    const TARGET: &str = "ringbatch";

    /// What a batch buffer carries for its span from the dispatch to the
    /// handler (which may run later, on a worker task, or again as a retry).
    #[derive(Debug, Default, Clone, Copy)]
    pub(crate) struct BatchTag {
        reason: &'static str,
        group: Option<u64>,
    }

    impl BatchTag {
        /// Neither a reason nor a group yet.
        #[inline(always)]
        pub(crate) fn new() -> Self {
            Self::default()
        }

        /// Why the batch was dispatched (`DispatchReason::name`).
        #[inline(always)]
        pub(crate) fn set_reason(&mut self, reason: &'static str) {
            self.reason = reason;
        }

        /// The key group the batch was taken from (its key's hash), if any.
        #[inline(always)]
        pub(crate) fn set_group(&mut self, group: Option<u64>) {
            self.group = group;
        }
    }

    /// One call of the handler on a batch: its span, and what its events
    /// repeat so that they read alone when the span is filtered out.
    #[derive(Debug)]
    pub(crate) struct BatchSpan<'a> {
        span: tracing::Span,
        batcher: &'a str,
        size: usize,
        attempt: u32,
    }

    impl<'a> BatchSpan<'a> {
        /// The span of the handler's call number `attempt` (1 for the first)
        /// on a batch of `size` items, tagged `tag`, of the batcher named
        /// `batcher` (its thread name).
        #[inline(always)]
        pub(crate) fn new(batcher: &'a str, tag: &BatchTag, size: usize, attempt: u32) -> Self {
            let span = tracing::debug_span!(
                target: TARGET,
                "batch",
                batcher,
                size,
                reason = tag.reason,
                attempt,
                group = tag.group,
            );
            Self {
                span,
                batcher,
                size,
                attempt,
            }
        }

        /// Makes the span current on this thread until the guard drops (not
        /// across an `.await`: the guard is not `Send`).
        #[inline(always)]
        pub(crate) fn enter(&self) -> tracing::span::Entered<'_> {
            self.span.enter()
        }

        /// Runs `f` with the span current on this thread.
        #[inline(always)]
        #[cfg(feature = "tokio")]
        pub(crate) fn in_scope<O>(&self, f: impl FnOnce() -> O) -> O {
            self.span.in_scope(f)
        }

        /// `future` in the span for each poll and while it is dropped.
        #[inline(always)]
        #[cfg(feature = "tokio")]
        pub(crate) fn instrument<F>(&self, future: F) -> tracing::instrument::Instrumented<F> {
            tracing::Instrument::instrument(future, self.span.clone())
        }

        /// The handler returned an error for the whole batch.
        #[cold]
        pub(crate) fn failed(&self, error: &dyn Display) {
            tracing::warn!(
                target: TARGET,
                batcher = self.batcher,
                size = self.size,
                attempt = self.attempt,
                error = %error,
                "batch failed",
            );
        }

        /// The handler panicked.
        #[cold]
        pub(crate) fn panicked(&self, message: &str) {
            tracing::error!(
                target: TARGET,
                batcher = self.batcher,
                size = self.size,
                attempt = self.attempt,
                panic = message,
                "handler panicked",
            );
        }
    }

    /// Items of one batch that met the same end, counted for one event
    /// (never an event per item), with the first one's error.
    #[derive(Debug, Default)]
    pub(crate) struct Count {
        items: usize,
        error: Option<Error>,
    }

    impl Count {
        /// No item yet.
        #[inline(always)]
        pub(crate) fn new() -> Self {
            Self::default()
        }

        /// One more item, failing with `error`.
        #[inline]
        pub(crate) fn note(&mut self, error: &Error) {
            if self.error.is_none() {
                // A clone shares the error's text (an `Arc`): no allocation.
                self.error = Some(error.clone());
            }
            self.items += 1;
        }
    }

    /// The failure policies' events, named by the batcher they belong to.
    pub(crate) struct Tracer {
        batcher: Box<str>,
    }

    impl Tracer {
        /// For the batcher named `batcher` (its thread name).
        pub(crate) fn new(batcher: &str) -> Self {
            Self {
                batcher: batcher.into(),
            }
        }

        /// The breaker opened after `failures` consecutive failed batches
        /// (or a failed trial batch), for `recovery`.
        #[cold]
        pub(crate) fn breaker_opened(&self, failures: u32, trial: bool, recovery: Duration) {
            tracing::warn!(
                target: TARGET,
                batcher = &*self.batcher,
                consecutive_failures = failures,
                trial,
                recovery_timeout = ?recovery,
                "circuit breaker opened",
            );
        }

        /// The open breaker's timeout ended: one trial batch goes through.
        #[cold]
        pub(crate) fn breaker_half_open(&self) {
            tracing::info!(
                target: TARGET,
                batcher = &*self.batcher,
                "circuit breaker half open: one trial batch",
            );
        }

        /// A trial batch succeeded: the breaker closed.
        #[cold]
        pub(crate) fn breaker_closed(&self) {
            tracing::info!(
                target: TARGET,
                batcher = &*self.batcher,
                "circuit breaker closed",
            );
        }

        /// Items that ran out of retries after `attempts` calls.
        #[inline]
        pub(crate) fn retries_exhausted(&self, count: &Count, attempts: u32) {
            if count.items > 0 {
                self.items_event(count, attempts, "retries exhausted");
            }
        }

        /// Items that failed for good with no dead-letter callback set:
        /// their tickets (if any) have the error; the items are dropped.
        #[inline]
        pub(crate) fn letters_dropped(&self, count: &Count, attempts: u32) {
            if count.items > 0 {
                self.items_event(
                    count,
                    attempts,
                    "dead-lettered items dropped: no dead-letter callback",
                );
            }
        }

        #[cold]
        fn items_event(&self, count: &Count, attempts: u32, what: &str) {
            let error = count.error.as_ref().map(|e| e as &dyn Display);
            tracing::warn!(
                target: TARGET,
                batcher = &*self.batcher,
                items = count.items,
                attempts,
                error = error.map(tracing::field::display),
                "{what}",
            );
        }
    }

    impl fmt::Debug for Tracer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Tracer")
                .field("batcher", &self.batcher)
                .finish()
        }
    }

    /// The drainer is gone (shutdown, or its runtime dropped it), after
    /// dispatching `batches` batches of `items` items in all.
    #[cold]
    pub(crate) fn drainer_exited(batcher: &str, batches: u64, items: u64) {
        tracing::info!(target: TARGET, batcher, batches, items, "drainer exited");
    }

    /// The drainer's own loop panicked (a bug of the batcher's): it closed
    /// the batcher and failed every pending item.
    #[cold]
    pub(crate) fn drainer_failed(batcher: &str, message: &str) {
        tracing::error!(
            target: TARGET,
            batcher,
            panic = message,
            "drainer failed: the batcher is closed",
        );
    }

    /// (feature `durable`) A write, sync or open of the durable store
    /// failed.
    #[cfg(feature = "durable")]
    #[cold]
    pub(crate) fn store_failed(batcher: &str, error: &dyn std::error::Error) {
        tracing::error!(target: TARGET, batcher, error = %error, "durable store failed");
    }

    /// (feature `durable`) A replayed item's bytes did not decode: it stays
    /// in the store.
    #[cfg(feature = "durable")]
    #[cold]
    pub(crate) fn replay_undecodable(batcher: &str, id: &dyn Display, error: &str) {
        tracing::error!(
            target: TARGET,
            batcher,
            id = %id,
            error,
            "replayed item does not decode: it stays in the store",
        );
    }

    /// (feature `durable`) The drainer replayed what the store held.
    #[cfg(feature = "durable")]
    #[cold]
    pub(crate) fn replayed(batcher: &str, items: u64, incarnation: u32) {
        tracing::info!(target: TARGET, batcher, items, incarnation, "durable store replayed");
    }

    /// (feature `durable`) Opening the store cut a corrupt segment tail.
    #[cfg(feature = "durable")]
    #[cold]
    pub(crate) fn corrupt_tail_cut(batcher: &str, records: u64, bytes: u64) {
        tracing::warn!(
            target: TARGET,
            batcher,
            records,
            bytes,
            "durable store cut a corrupt tail"
        );
    }
}

/// The same API, zero-sized and empty: every call compiles to nothing.
#[cfg(not(feature = "tracing"))]
mod off {
    use core::fmt::Display;
    use core::marker::PhantomData;
    use std::time::Duration;

    use crate::error::Error;

    #[derive(Debug, Clone, Copy)]
    pub(crate) struct BatchTag;

    impl BatchTag {
        #[inline(always)]
        pub(crate) fn new() -> Self {
            Self
        }

        #[inline(always)]
        pub(crate) fn set_reason(&mut self, _reason: &'static str) {}

        #[inline(always)]
        pub(crate) fn set_group(&mut self, _group: Option<u64>) {}
    }

    #[derive(Debug)]
    pub(crate) struct BatchSpan<'a>(PhantomData<&'a str>);

    /// What `BatchSpan::enter` returns: nothing to exit.
    pub(crate) struct Entered;

    impl<'a> BatchSpan<'a> {
        #[inline(always)]
        pub(crate) fn new(_batcher: &'a str, _tag: &BatchTag, _size: usize, _attempt: u32) -> Self {
            Self(PhantomData)
        }

        #[inline(always)]
        pub(crate) fn enter(&self) -> Entered {
            Entered
        }

        #[inline(always)]
        #[cfg(feature = "tokio")]
        pub(crate) fn in_scope<O>(&self, f: impl FnOnce() -> O) -> O {
            f()
        }

        #[inline(always)]
        #[cfg(feature = "tokio")]
        pub(crate) fn instrument<F>(&self, future: F) -> F {
            future
        }

        #[inline(always)]
        pub(crate) fn failed(&self, _error: &dyn Display) {}

        #[inline(always)]
        pub(crate) fn panicked(&self, _message: &str) {}
    }

    #[derive(Debug)]
    pub(crate) struct Count;

    impl Count {
        #[inline(always)]
        pub(crate) fn new() -> Self {
            Self
        }

        #[inline(always)]
        pub(crate) fn note(&mut self, _error: &Error) {}
    }

    #[derive(Debug)]
    pub(crate) struct Tracer;

    impl Tracer {
        #[inline(always)]
        pub(crate) fn new(_batcher: &str) -> Self {
            Self
        }

        #[inline(always)]
        pub(crate) fn breaker_opened(&self, _failures: u32, _trial: bool, _recovery: Duration) {}

        #[inline(always)]
        pub(crate) fn breaker_half_open(&self) {}

        #[inline(always)]
        pub(crate) fn breaker_closed(&self) {}

        #[inline(always)]
        pub(crate) fn retries_exhausted(&self, _count: &Count, _attempts: u32) {}

        #[inline(always)]
        pub(crate) fn letters_dropped(&self, _count: &Count, _attempts: u32) {}
    }

    #[inline(always)]
    pub(crate) fn drainer_exited(_batcher: &str, _batches: u64, _items: u64) {}

    #[inline(always)]
    pub(crate) fn drainer_failed(_batcher: &str, _message: &str) {}

    #[cfg(feature = "durable")]
    #[inline(always)]
    pub(crate) fn store_failed(_batcher: &str, _error: &dyn std::error::Error) {}

    #[cfg(feature = "durable")]
    #[inline(always)]
    pub(crate) fn replay_undecodable(_batcher: &str, _id: &dyn Display, _error: &str) {}

    #[cfg(feature = "durable")]
    #[inline(always)]
    pub(crate) fn replayed(_batcher: &str, _items: u64, _incarnation: u32) {}

    #[cfg(feature = "durable")]
    #[inline(always)]
    pub(crate) fn corrupt_tail_cut(_batcher: &str, _records: u64, _bytes: u64) {}
}
