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
//! timeout, a cluster electing a new leader) under a [`RetrySettings`], and
//! both give each item a key the server de-duplicates on, so that a retry
//! never writes an item twice.

use core::time::Duration;

#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;

/// How a sink retries a write that failed for want of a server (a lost
/// connection, a timeout, no responders): a bounded exponential backoff.
///
/// Attempt `k` (counting from 0) that fails is followed, if `k <
/// max_retries`, by a pause of `initial_delay * multiplier^k`, capped at
/// `max_delay`, and another attempt. With the defaults (8 retries, 50 ms
/// doubling up to 2 s) a sink keeps trying for about 7 s of pauses, plus the
/// attempts themselves, before it fails the items.
///
/// Errors that a retry cannot fix (a constraint violation, a malformed
/// statement, a stream that does not exist) are not retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySettings {
    /// Retries after the first attempt (0: never retry).
    pub max_retries: u32,
    /// The pause before the first retry.
    pub initial_delay: Duration,
    /// The longest pause between two attempts.
    pub max_delay: Duration,
    /// How much each pause grows over the one before (at least 1).
    pub multiplier: f64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_retries: 8,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            multiplier: 2.0,
        }
    }
}

impl RetrySettings {
    /// No retries: every failure fails the items at once.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The pause after failed attempt `attempt` (0 for the first attempt).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.max(1.0).powi(attempt.min(64) as i32);
        let delay = self.initial_delay.as_secs_f64() * factor;
        if delay.is_finite() && delay < self.max_delay.as_secs_f64() {
            Duration::from_secs_f64(delay)
        } else {
            self.max_delay
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_the_multiplier_up_to_the_cap() {
        let retry = RetrySettings {
            max_retries: 10,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            multiplier: 3.0,
        };
        let delays: Vec<u128> = (0..5).map(|k| retry.delay(k).as_millis()).collect();
        assert_eq!(delays, [10, 30, 90, 100, 100]);
        assert_eq!(retry.delay(u32::MAX), Duration::from_millis(100));
    }

    #[test]
    fn a_multiplier_below_one_keeps_the_initial_delay() {
        let retry = RetrySettings {
            multiplier: 0.5,
            ..RetrySettings::default()
        };
        assert_eq!(retry.delay(3), retry.initial_delay);
    }
}
