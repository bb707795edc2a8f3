//! Failure policies: retries with backoff, a circuit breaker and dead
//! letters.
//!
//! All are opt-in on the builder. With none set, a failed batch fails its
//! items' tickets at once, as the [`Handler`](crate::Handler) docs say. With
//! them:
//!
//! - The handler says how a failure should be treated: return a
//!   [`Failure`] (`Failure::retryable(e)`, `permanent(e)`,
//!   `rate_limited(e)`) from `handle`, or per item call
//!   [`Batch::retry`](crate::Batch::retry) /
//!   [`Batch::rate_limited`](crate::Batch::rate_limited) (retry the item) or
//!   [`Batch::fail`](crate::Batch::fail) (permanent). A whole-batch error
//!   that is not a `Failure` is retryable; a panic is permanent.
//! - [`RetryPolicy`]: failed items are retried (only those, not the whole
//!   batch) after an exponential backoff with jitter; rate-limited ones after
//!   the maximum delay. A batch waiting to retry sits in the drainer's timer
//!   queue (or, with an async handler, sleeps on its worker task) while other
//!   batches go on.
//! - [`CircuitBreaker`]: after `failure_threshold` consecutive failed batches
//!   it opens for `recovery_timeout`: new batches fail at once with
//!   [`Error::CircuitOpen`] (or, with `hold_while_open`, wait in the lanes);
//!   then one trial batch closes it on success or reopens it.
//! - Dead letters: every item that exhausts its retries or fails for good
//!   (or meets an open breaker) goes to the dead-letter handler with its
//!   last error, as well as failing its ticket. Nothing is dropped silently.

use core::fmt;
use std::time::{Duration, Instant};

use crate::batch::{BatchBuf, Origin, mark};
use crate::error::{Error, SharedError};
use crate::handler::BatchError;
pub use crate::stats::BreakerState;

/// How failed items are retried: by the batcher
/// ([`BatcherBuilder::retry_policy`](crate::BatcherBuilder::retry_policy)),
/// and by the sinks when a server is unavailable.
///
/// More settings may come, so it is built from [`Default`] (or
/// [`none`](Self::none)) and the `with_*` methods rather than a struct
/// expression:
///
/// ```
/// use std::time::Duration;
/// use ringbatch::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .with_max_retries(5)
///     .with_initial_delay(Duration::from_millis(20))
///     .with_max_delay(Duration::from_secs(1))
///     .with_jitter(0.0);
/// assert_eq!(policy.delay(0, false, 0.5), Duration::from_millis(20));
/// assert_eq!(policy.delay(1, false, 0.5), Duration::from_millis(40));
/// assert_eq!(policy.delay(9, false, 0.5), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt (default 3).
    pub max_retries: u32,
    /// The delay before the first retry (default 100 ms).
    pub initial_delay: Duration,
    /// The longest delay; also the delay after a rate-limited failure
    /// (default 30 s).
    pub max_delay: Duration,
    /// The delay grows by this factor per retry (default 2).
    pub multiplier: f64,
    /// Each delay is moved at random by up to this share of itself, up or
    /// down (default 0.1).
    pub jitter: f64,
    /// Whether a batch's items waiting to retry keep their place (default
    /// `false`): with it, nothing dispatched after them reaches the handler
    /// before they have settled (the drainer waits out the backoff and
    /// retries them first), for sinks that need each producer's order.
    /// The whole batcher waits, every key group included. Only with a
    /// handler on the drainer thread: an async handler or handler threads
    /// run several batches at once, and `build` refuses it there.
    pub in_order: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.1,
            in_order: false,
        }
    }
}

impl RetryPolicy {
    /// No retries: a failure fails its items at once. The other settings
    /// are the defaults.
    pub fn none() -> Self {
        Self::default().with_max_retries(0)
    }

    /// The same policy with `max_retries` retries after the first attempt.
    #[must_use]
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The same policy with `initial_delay` before the first retry.
    #[must_use]
    pub fn with_initial_delay(mut self, initial_delay: Duration) -> Self {
        self.initial_delay = initial_delay;
        self
    }

    /// The same policy with `max_delay` as the longest delay (and the delay
    /// after a rate-limited failure).
    #[must_use]
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// The same policy with delays growing by `multiplier` per retry.
    #[must_use]
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The same policy with each delay moved at random by up to `jitter`
    /// of itself (0 for none).
    #[must_use]
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The same policy with items waiting to retry kept ahead of every
    /// later item (see [`in_order`](Self::in_order)).
    #[must_use]
    pub fn with_in_order(mut self, in_order: bool) -> Self {
        self.in_order = in_order;
        self
    }

    /// The delay before retry number `retry` (0 for the first), with
    /// `unit` a number in `[0, 1)` choosing the jitter. Never more than
    /// `max_delay`, whatever the settings (a delay that is not a number
    /// counts as `max_delay`).
    pub fn delay(&self, retry: u32, rate_limited: bool, unit: f64) -> Duration {
        let max = self.max_delay.as_secs_f64();
        // Capped so the exponent stays positive as an `i32`; with a
        // multiplier of at least 1 the delay reached `max` long before.
        let exponent = retry.min(1 << 16) as i32;
        let base = if rate_limited {
            max
        } else {
            (self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent)).min(max)
        };
        let jitter = base * self.jitter * (2.0 * unit - 1.0);
        Duration::try_from_secs_f64((base + jitter).clamp(0.0, max))
            .map_or(self.max_delay, |delay| delay.min(self.max_delay))
    }

    pub(crate) fn validate(&self) -> Result<(), crate::ConfigError> {
        let invalid = |reason| {
            Err(crate::ConfigError::Invalid {
                field: "retry_policy",
                reason,
            })
        };
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return invalid("multiplier must be at least 1");
        }
        if !(self.jitter.is_finite() && (0.0..=1.0).contains(&self.jitter)) {
            return invalid("jitter must be between 0 and 1");
        }
        crate::config::duration_at_most_max("initial_delay", self.initial_delay)?;
        crate::config::duration_at_most_max("max_delay", self.max_delay)?;
        if self.initial_delay > self.max_delay {
            return invalid("initial_delay must not exceed max_delay");
        }
        Ok(())
    }
}

/// How a failure should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Worth trying again after a backoff.
    Retryable,
    /// Trying again will not help: fail (and dead-letter) at once.
    Permanent,
    /// The sink asks us to slow down: retry after the maximum delay.
    RateLimited,
}

/// A handler's error with its [`FailureKind`]: return it (boxed, as a
/// [`BatchError`]) from `handle` to say how the batch's failure is treated.
///
/// ```
/// use ringbatch::{Batch, BatchError, Failure};
///
/// fn handle(batch: &mut Batch<'_, String, ()>) -> Result<(), BatchError> {
///     Err(Failure::rate_limited("HTTP 429").into())
/// }
/// # let _ = handle;
/// ```
pub struct Failure {
    kind: FailureKind,
    error: BatchError,
}

impl Failure {
    /// A failure worth retrying.
    pub fn retryable(error: impl Into<BatchError>) -> Self {
        Self {
            kind: FailureKind::Retryable,
            error: error.into(),
        }
    }

    /// A failure that retrying will not fix.
    pub fn permanent(error: impl Into<BatchError>) -> Self {
        Self {
            kind: FailureKind::Permanent,
            error: error.into(),
        }
    }

    /// The sink is rate-limiting us.
    pub fn rate_limited(error: impl Into<BatchError>) -> Self {
        Self {
            kind: FailureKind::RateLimited,
            error: error.into(),
        }
    }

    /// How it is treated.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("kind", &self.kind)
            .field("error", &format_args!("{}", self.error))
            .finish()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

/// The circuit breaker's settings.
///
/// More settings may come, so it is built from [`Default`] and the
/// `with_*` methods rather than a struct expression:
///
/// ```
/// use std::time::Duration;
/// use ringbatch::CircuitBreaker;
///
/// let breaker = CircuitBreaker::default()
///     .with_failure_threshold(3)
///     .with_recovery_timeout(Duration::from_secs(2))
///     .with_hold_while_open(true);
/// assert_eq!(breaker.failure_threshold, 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitBreaker {
    /// Consecutive failed batches that open it (default 5).
    pub failure_threshold: u32,
    /// How long it stays open before a trial batch (default 10 s).
    pub recovery_timeout: Duration,
    /// While open, hold new batches in the lanes (backpressure) instead of
    /// failing them with [`Error::CircuitOpen`] (default false).
    pub hold_while_open: bool,
}

impl CircuitBreaker {
    /// The same settings, opening after `failure_threshold` consecutive
    /// failed batches.
    #[must_use]
    pub fn with_failure_threshold(mut self, failure_threshold: u32) -> Self {
        self.failure_threshold = failure_threshold;
        self
    }

    /// The same settings, staying open for `recovery_timeout` before a
    /// trial batch.
    #[must_use]
    pub fn with_recovery_timeout(mut self, recovery_timeout: Duration) -> Self {
        self.recovery_timeout = recovery_timeout;
        self
    }

    /// The same settings, holding new batches in the lanes while open
    /// (`true`) instead of failing them.
    #[must_use]
    pub fn with_hold_while_open(mut self, hold_while_open: bool) -> Self {
        self.hold_while_open = hold_while_open;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), crate::ConfigError> {
        if self.failure_threshold == 0 {
            return Err(crate::ConfigError::Zero {
                field: "failure_threshold",
            });
        }
        crate::config::duration_at_most_max("recovery_timeout", self.recovery_timeout)
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            recovery_timeout: Duration::from_secs(10),
            hold_while_open: false,
        }
    }
}

/// An item that failed for good, handed to the dead-letter handler.
#[derive(Debug)]
#[non_exhaustive]
pub struct DeadLetter<T> {
    /// The item.
    pub item: T,
    /// Its last error (its ticket failed with the same).
    pub error: Error,
    /// Times it was handed to the handler (0 if it met an open breaker).
    pub attempts: u32,
}

type DeadLetterFn<T> = Box<dyn FnMut(DeadLetter<T>) + Send>;

/// The failure settings the builder collects.
pub(crate) struct FailureSettings<T> {
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) dead_letter: Option<DeadLetterFn<T>>,
}

impl<T> Default for FailureSettings<T> {
    fn default() -> Self {
        Self {
            retry: None,
            breaker: None,
            dead_letter: None,
        }
    }
}

impl<T> FailureSettings<T> {
    pub(crate) fn is_active(&self) -> bool {
        self.retry.is_some() || self.breaker.is_some() || self.dead_letter.is_some()
    }
}

/// A seed for a batcher's retry jitter, different for every batcher and
/// every process: from the standard library's randomly keyed hasher (seeded
/// from the operating system's randomness once per thread, and moved on for
/// every hasher made), so that batchers that failed together after a shared
/// outage do not retry in lockstep. Never zero (a xorshift state must not be).
fn jitter_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x2545_F491_4F6C_DD1D);
    hasher.finish() | 1
}

/// A jitter unit in `[0, 1)` for code that keeps no generator of its own
/// (the sinks, once per retry): from a fresh seed.
#[cfg(any(feature = "postgres", feature = "nats"))]
pub(crate) fn random_unit() -> f64 {
    (jitter_seed() >> 11) as f64 / (1u64 << 53) as f64
}

/// `now + delay`, or as late as the clock allows (the settings keep delays
/// within [`MAX_DURATION`](crate::MAX_DURATION), so this does not happen
/// with validated ones).
pub(crate) fn later(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay)
        .or_else(|| now.checked_add(crate::MAX_DURATION))
        .unwrap_or(now)
}

/// Counts the failure policies keep.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FailureTally {
    pub(crate) retried: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) circuit_rejected: u64,
    /// Dead-letter callbacks that panicked (contained).
    pub(crate) callback_panics: u64,
    /// Items whose `Drop` panicked when the policies dropped them.
    pub(crate) drop_panics: u64,
}

/// How a batch's handler call ended.
pub(crate) enum Outcome {
    /// `Ok(())`.
    Ok,
    /// `Err(e)`.
    Failed(BatchError),
    /// A panic, with its message.
    Panicked(crate::error::PanicMessage),
}

/// What to do with a batch after it was settled.
pub(crate) enum Settled {
    /// Every item is done; the buffer can go back to the pool.
    Done,
    /// The buffer now holds only items to retry, after `delay`.
    Retry { delay: Duration },
}

/// The failure policies' live state (locked once per batch).
pub(crate) struct FailureState<T> {
    pub(crate) settings: FailureSettings<T>,
    breaker: BreakerState,
    consecutive: u32,
    open_until: Option<Instant>,
    /// A trial batch is under way (half open).
    trial: bool,
    pub(crate) tally: FailureTally,
    /// xorshift state for the jitter.
    seed: u64,
    /// Reports the breaker's changes and the items given up on.
    tracer: crate::trace::Tracer,
}

impl<T> FailureState<T> {
    /// The policies of the batcher named `batcher` (its thread name, which
    /// its events carry).
    pub(crate) fn new(settings: FailureSettings<T>, batcher: &str) -> Self {
        Self {
            tracer: crate::trace::Tracer::new(batcher),
            settings,
            breaker: BreakerState::Closed,
            consecutive: 0,
            open_until: None,
            trial: false,
            tally: FailureTally::default(),
            seed: jitter_seed(),
        }
    }

    /// Whether retries keep their items' place (`RetryPolicy::in_order`).
    pub(crate) fn in_order(&self) -> bool {
        self.settings.retry.is_some_and(|r| r.in_order)
    }

    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.breaker
    }

    /// When an open breaker half-opens (for a drainer that holds batches).
    pub(crate) fn open_until(&self) -> Option<Instant> {
        match self.breaker {
            BreakerState::Open => self.open_until,
            _ => None,
        }
    }

    /// The next jitter unit in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Before a batch goes to the handler: whether the breaker lets it
    /// (moving an open breaker whose timeout ended to half open, and
    /// letting one trial batch through).
    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        match self.breaker {
            BreakerState::Closed => true,
            BreakerState::Open => {
                if self.open_until.is_some_and(|until| now >= until) {
                    self.breaker = BreakerState::HalfOpen;
                    self.trial = true;
                    self.tracer.breaker_half_open();
                    true
                } else {
                    false
                }
            }
            BreakerState::HalfOpen => {
                if self.trial {
                    // One trial at a time.
                    false
                } else {
                    self.trial = true;
                    true
                }
            }
        }
    }

    /// Whether batches wait in the lanes while the breaker is open.
    pub(crate) fn holds(&self, now: Instant) -> bool {
        self.settings.breaker.is_some_and(|b| b.hold_while_open)
            && self.breaker == BreakerState::Open
            && self.open_until.is_some_and(|until| now < until)
    }

    fn record(&mut self, success: bool, now: Instant) {
        let Some(breaker) = self.settings.breaker else {
            return;
        };
        if success {
            self.consecutive = 0;
            if self.breaker == BreakerState::HalfOpen {
                self.breaker = BreakerState::Closed;
                self.tracer.breaker_closed();
            }
        } else {
            self.consecutive = self.consecutive.saturating_add(1);
            let trial = self.breaker == BreakerState::HalfOpen;
            if trial || self.consecutive >= breaker.failure_threshold {
                if self.breaker != BreakerState::Open {
                    self.tracer
                        .breaker_opened(self.consecutive, trial, breaker.recovery_timeout);
                }
                self.breaker = BreakerState::Open;
                self.open_until = Some(later(now, breaker.recovery_timeout));
            }
        }
        self.trial = false;
    }

    /// A batch the open breaker refused: every item fails with
    /// `CircuitOpen` and goes to the dead-letter handler.
    pub(crate) fn reject(&mut self, buf: &mut BatchBuf<T>, deliver: &mut dyn FnMut(Origin, Error)) {
        self.tally.circuit_rejected += buf.len() as u64;
        buf.prepare_marks();
        for i in 0..buf.len() {
            self.kill(buf, i, Error::CircuitOpen, deliver);
        }
        self.bury(buf, 0);
    }

    /// Fails item `i` for good: delivers `error` and marks it for the
    /// dead-letter handler.
    fn kill(
        &mut self,
        buf: &mut BatchBuf<T>,
        i: usize,
        error: Error,
        deliver: &mut dyn FnMut(Origin, Error),
    ) {
        let origin = core::mem::replace(&mut buf.origins[i], Origin::DONE);
        if origin != Origin::DONE {
            deliver(origin, error.clone());
            buf.completed += 1;
            buf.failed += 1;
        }
        buf.marks[i] = mark::DEAD;
        buf.errors[i] = Some(error);
    }

    /// After the handler: classifies the outcome, updates the breaker,
    /// keeps the items to retry (if attempts are left) and hands the dead
    /// ones to the dead-letter handler. `attempt` is 0 for the first call.
    pub(crate) fn settle(
        &mut self,
        buf: &mut BatchBuf<T>,
        outcome: Outcome,
        attempt: u32,
        now: Instant,
        deliver: &mut dyn FnMut(Origin, Error),
    ) -> Settled {
        let retry = self.settings.retry;
        let batch_failure = match outcome {
            Outcome::Ok => None,
            Outcome::Failed(error) => {
                let (kind, shared) = match error.downcast::<Failure>() {
                    Ok(failure) => (failure.kind, SharedError::from(failure.error)),
                    Err(error) => (FailureKind::Retryable, SharedError::from(error)),
                };
                Some((kind, Error::BatchFailed(shared)))
            }
            Outcome::Panicked(message) => {
                Some((FailureKind::Permanent, Error::HandlerPanicked { message }))
            }
        };
        self.record(batch_failure.is_none(), now);
        // Items the handler left: retried, failed, or (after `Ok`) failed
        // with `NotCompleted` like without policies.
        for i in 0..buf.len() {
            if buf.origins[i] == Origin::DONE || buf.marks[i] != mark::NONE {
                continue;
            }
            match &batch_failure {
                None => {
                    let origin = core::mem::replace(&mut buf.origins[i], Origin::DONE);
                    deliver(origin, Error::NotCompleted);
                    buf.completed += 1;
                }
                Some((FailureKind::Permanent, error)) => {
                    self.kill(buf, i, error.clone(), deliver);
                }
                Some((kind, error)) => {
                    buf.marks[i] = if *kind == FailureKind::RateLimited {
                        mark::RATE_LIMITED
                    } else {
                        mark::RETRY
                    };
                    buf.errors[i] = Some(error.clone());
                }
            }
        }
        // Items to retry: kept if attempts are left, else dead.
        let mut rate_limited = false;
        let mut given_up = crate::trace::Count::new();
        for i in 0..buf.len() {
            let m = buf.marks[i];
            if m != mark::RETRY && m != mark::RATE_LIMITED {
                continue;
            }
            match retry {
                Some(policy) if attempt < policy.max_retries => {
                    rate_limited |= m == mark::RATE_LIMITED;
                }
                _ => {
                    let error = buf.errors[i].take().unwrap_or(Error::NotCompleted);
                    if retry.is_some() {
                        given_up.note(&error);
                    }
                    self.kill(buf, i, error, deliver);
                }
            }
        }
        self.tracer.retries_exhausted(&given_up, attempt + 1);
        let kept = self.bury(buf, attempt + 1);
        debug_assert!(kept == 0 || retry.is_some());
        match retry {
            Some(policy) if kept > 0 => {
                self.tally.retried += kept as u64;
                let unit = self.unit();
                Settled::Retry {
                    delay: policy.delay(attempt, rate_limited, unit),
                }
            }
            _ => Settled::Done,
        }
    }

    /// Moves the items marked for retry to the front, hands the dead ones
    /// to the dead-letter handler and drops the rest (completed). Returns
    /// how many were kept for retry (marks reset, so the next attempt
    /// starts clean).
    fn bury(&mut self, buf: &mut BatchBuf<T>, attempts: u32) -> usize {
        let len = buf.len();
        let mut kept = 0;
        let mut dropped = crate::trace::Count::new();
        for i in 0..len {
            let m = buf.marks[i];
            if m == mark::RETRY || m == mark::RATE_LIMITED {
                buf.items.swap(kept, i);
                buf.origins.swap(kept, i);
                buf.marks.swap(kept, i);
                buf.errors.swap(kept, i);
                // The ids follow their items; those past `kept` are done.
                #[cfg(feature = "durable")]
                if !buf.durable.ids.is_empty() {
                    buf.durable.ids.swap(kept, i);
                }
                kept += 1;
            }
        }
        let BatchBuf {
            items,
            origins,
            marks,
            errors,
            ..
        } = buf;
        for (((item, _), m), error) in items
            .drain(kept..)
            .zip(origins.drain(kept..))
            .zip(marks.drain(kept..))
            .zip(errors.drain(kept..))
        {
            // User code (the callback, the item's `Drop`), each contained:
            // a panic ends that call only.
            if m == mark::DEAD {
                self.tally.dead_lettered += 1;
                if let Some(dead_letter) = &mut self.settings.dead_letter {
                    let letter = DeadLetter {
                        item,
                        error: error.unwrap_or(Error::NotCompleted),
                        attempts,
                    };
                    if crate::contain::call(|| dead_letter(letter)).is_err() {
                        self.tally.callback_panics += 1;
                    }
                    continue;
                }
                dropped.note(error.as_ref().unwrap_or(&Error::NotCompleted));
            }
            if !crate::contain::drop_value(item) {
                self.tally.drop_panics += 1;
            }
        }
        self.tracer.letters_dropped(&dropped, attempts);
        for m in marks.iter_mut() {
            *m = mark::NONE;
        }
        for e in errors.iter_mut() {
            *e = None;
        }
        buf.completed = 0;
        buf.tickets = buf.origins.iter().filter(|o| **o != Origin::NONE).count();
        kept
    }
}

impl<T> fmt::Debug for FailureState<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailureState")
            .field("breaker", &self.breaker)
            .field("consecutive", &self.consecutive)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_the_multiplier_up_to_the_maximum() {
        let policy = RetryPolicy::default().with_jitter(0.0);
        assert_eq!(policy.delay(0, false, 0.5), Duration::from_millis(100));
        assert_eq!(policy.delay(1, false, 0.5), Duration::from_millis(200));
        assert_eq!(policy.delay(2, false, 0.5), Duration::from_millis(400));
        assert_eq!(policy.delay(20, false, 0.5), Duration::from_secs(30));
        assert_eq!(policy.delay(0, true, 0.5), Duration::from_secs(30));
        assert_eq!(policy.delay(u32::MAX, false, 0.5), Duration::from_secs(30));
    }

    #[test]
    fn a_multiplier_below_one_never_exceeds_the_initial_delay() {
        // Validation refuses it for the batcher; the sinks take any policy.
        let policy = RetryPolicy::default().with_multiplier(0.5).with_jitter(0.0);
        assert_eq!(policy.delay(0, false, 0.5), policy.initial_delay);
        assert!(policy.delay(3, false, 0.5) < policy.initial_delay);
        assert!(policy.delay(u32::MAX, false, 0.5) <= policy.initial_delay);
    }

    #[test]
    fn jitter_stays_within_its_share() {
        let policy = RetryPolicy::default();
        let low = policy.delay(0, false, 0.0);
        let high = policy.delay(0, false, 0.999_999);
        assert!(low >= Duration::from_millis(90), "{low:?}");
        assert!(high <= Duration::from_millis(110), "{high:?}");
    }
}
