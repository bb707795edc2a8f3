//! How a producer waits for room in its lane.

use std::time::Instant;

use crate::error::RefusedKind;
use crate::ring::ClaimError;
use crate::wait::{Backoff, Notifier, WaitStrategy};

/// Retries `attempt` until it succeeds, the lane closes, or `deadline`
/// passes, waiting between attempts by `strategy`; when the strategy says to
/// park, sleeps on `notifier` if `arm()` sets a waiter flag (see [`Notifier`]).
/// This is how a producer waits for room.
pub(crate) fn retry_until_room<C>(
    strategy: WaitStrategy,
    notifier: &Notifier,
    deadline: Option<Instant>,
    mut attempt: impl FnMut() -> Result<C, ClaimError>,
    mut arm: impl FnMut() -> bool,
) -> Result<C, RefusedKind> {
    let mut backoff = Backoff::new(strategy);
    loop {
        match attempt() {
            Ok(claim) => return Ok(claim),
            Err(ClaimError::Closed) => return Err(RefusedKind::Closed),
            Err(ClaimError::Full) => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(RefusedKind::Timeout);
        }
        if backoff.snooze() {
            notifier.sleep_if_armed(deadline, &mut arm);
        }
    }
}
