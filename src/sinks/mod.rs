//! Ready-made async sinks for real servers, each behind a feature:
//!
//! - [`postgres`] (feature `postgres`): [`PostgresSink`](postgres::PostgresSink)
//!   inserts each batch with one statement and answers each item with its
//!   row's result (a generated id, say); rows the database rejects fail only
//!   their own tickets.
//! - [`nats`] (feature `nats`): [`JetStreamSink`](nats::JetStreamSink)
//!   publishes each item to a NATS JetStream stream and answers it with its
//!   stream sequence.
//!
//! Both are [`AsyncHandler`](crate::AsyncHandler)s: pass one to
//! [`BatcherBuilder::async_handler`](crate::BatcherBuilder::async_handler).
//! Both retry what failed for want of a server (a lost connection, a
//! timeout, a cluster electing a new leader) under a [`RetryPolicy`] (by
//! default [`default_retry_policy`]), and both give each item a key the
//! server de-duplicates on, so that a retry never writes an item twice.

use core::time::Duration;

use crate::RetryPolicy;

#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;

/// The [`RetryPolicy`] a sink starts with: 8 retries, 50 ms doubling up to
/// 2 s, each pause moved at random by up to 10 %. A sink keeps trying for
/// about 7 s of pauses, plus the attempts themselves, before it fails the
/// items.
///
/// Attempt `k` (counting from 0) that fails for want of a server (a lost
/// connection, a timeout, no responders) is followed, if `k < max_retries`,
/// by a pause of [`RetryPolicy::delay`]`(k, ..)` and another attempt.
/// Errors that a retry cannot fix (a constraint violation, a malformed
/// statement, a stream that does not exist) are not retried. A sink takes
/// any policy: its pauses never exceed `max_delay`.
///
/// ```
/// use std::time::Duration;
/// use ringbatch::sinks::default_retry_policy;
///
/// // The sinks' defaults, with more patience.
/// let patient = default_retry_policy().with_max_retries(30);
/// assert_eq!(patient.max_delay, Duration::from_secs(2));
/// ```
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "nats"))))]
pub fn default_retry_policy() -> RetryPolicy {
    RetryPolicy::default()
        .with_max_retries(8)
        .with_initial_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_multiplier(2.0)
        .with_jitter(0.1)
}

/// The retry settings the sinks used to have; they take a [`RetryPolicy`]
/// now, which adds jitter. Its [`Default`] is the batcher's (3 retries,
/// 100 ms doubling to 30 s): start from [`default_retry_policy`] for the
/// sinks' own.
#[deprecated(
    since = "0.1.0",
    note = "renamed to `ringbatch::RetryPolicy`; start from `sinks::default_retry_policy()` for the sinks' defaults"
)]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "nats"))))]
pub type RetrySettings = RetryPolicy;

/// The pause after failed attempt `attempt` (0 for the first), with fresh
/// jitter: sinks that failed together after an outage do not retry in
/// lockstep.
pub(crate) fn pause(retry: &RetryPolicy, attempt: u32) -> Duration {
    retry.delay(attempt, false, crate::failure::random_unit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sinks_default_policy_keeps_trying_for_about_seven_seconds() {
        let retry = default_retry_policy().with_jitter(0.0);
        let pauses: Duration = (0..retry.max_retries).map(|k| pause(&retry, k)).sum();
        // 50 + 100 + 200 + 400 + 800 + 1600 + 2000 + 2000 ms.
        assert_eq!(pauses, Duration::from_millis(7150));
    }

    #[test]
    fn pauses_are_jittered_within_their_share() {
        let retry = default_retry_policy();
        let pauses: Vec<Duration> = (0..64).map(|_| pause(&retry, 0)).collect();
        for p in &pauses {
            assert!(
                (Duration::from_millis(45)..=Duration::from_millis(55)).contains(p),
                "expected 50 ms +- 10 %, got {p:?}"
            );
        }
        assert!(
            pauses.iter().any(|p| *p != pauses[0]),
            "expected jitter to move the pauses, got {:?} 64 times",
            pauses[0]
        );
    }

    #[test]
    #[allow(deprecated)]
    fn the_old_name_is_the_policy() {
        let old: RetrySettings = RetrySettings::none();
        assert_eq!(old, RetryPolicy::none());
    }
}
