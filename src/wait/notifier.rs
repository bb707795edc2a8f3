//! The notifier that wakes producers waiting for room.

use core::task::{Poll, Waker};
use std::time::Instant;

use crate::sync::{Condvar, Mutex};

/// Wakes producers that wait for room in a lane (ring slots or completion
/// slots). Waiting is the slow path: producers that find room never touch it.
///
/// Protocol: a waiter takes the lock, then *arms*: with an RMW on the very
/// word that blocks it (the ring's head word, or the completion slot's state)
/// it sets a waiter flag, but only while that word still says "no room"; then
/// it sleeps on the condvar (which releases the lock). The freer changes that
/// word with a swap; if the swap returns the flag, it takes the lock and
/// notifies. Both sides are RMWs of one location, so one comes first in its
/// modification order: either the waiter's RMW sees the room (and it does not
/// sleep), or the freer's swap sees the flag, and its lock waits until the
/// waiter sleeps. No wake-up is lost, and the freer's fast path pays nothing
/// beyond the swap it does anyway.
///
/// Tasks wait the same way ([`poll_if_armed`](Self::poll_if_armed)): under
/// the lock they arm and store their waker, which `notify_all` wakes under
/// the same lock. The waker list keeps its capacity, so waiting tasks
/// allocate only when more of them wait at once than ever before.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    lock: Mutex<Vec<Waker>>,
    cond: Condvar,
}

impl Notifier {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Wakes every waiter, threads and tasks (after a swap returned a waiter
    /// flag, or at shutdown).
    pub(crate) fn notify_all(&self) {
        // Taking the lock orders this after an armed waiter's sleep or waker
        // registration: a waiter holds the lock from arming until then.
        let mut tasks = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        for waker in tasks.drain(..) {
            waker.wake();
        }
        drop(tasks);
        self.cond.notify_all();
    }

    /// Under the lock, runs `arm`; if it returns true (a waiter flag is set
    /// and the caller is still blocked), sleeps until notified or `deadline`.
    pub(crate) fn sleep_if_armed(&self, deadline: Option<Instant>, arm: impl FnOnce() -> bool) {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if !arm() {
            return;
        }
        match deadline {
            None => drop(self.cond.wait(guard).unwrap_or_else(|e| e.into_inner())),
            Some(deadline) => {
                let now = Instant::now();
                if now < deadline {
                    drop(
                        self.cond
                            .wait_timeout(guard, deadline - now)
                            .unwrap_or_else(|e| e.into_inner()),
                    );
                }
            }
        }
    }

    /// The task version of [`sleep_if_armed`](Self::sleep_if_armed): under
    /// the lock, runs `arm`; if it returns true, stores `waker` to be woken by
    /// the next [`notify_all`](Self::notify_all) and returns `Pending`;
    /// otherwise `Ready` (retry at once).
    pub(crate) fn poll_if_armed(&self, waker: &Waker, arm: impl FnOnce() -> bool) -> Poll<()> {
        let mut tasks = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if !arm() {
            return Poll::Ready(());
        }
        if !tasks.iter().any(|w| w.will_wake(waker)) {
            tasks.push(waker.clone());
        }
        Poll::Pending
    }
}
