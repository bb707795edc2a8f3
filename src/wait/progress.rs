//! Flush completion and drainer exit, as the drainer reports them.

#[cfg(feature = "tokio")]
use core::task::Poll;
use core::task::Waker;
use std::time::Instant;

use crate::sync::{Condvar, Mutex};

/// Flush completion and drainer exit, as the drainer reports them. A plain
/// mutex and condvar, plus the wakers of tasks awaiting a flush or the exit:
/// flushes are rare, and the drainer touches this once per flush.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    state: Mutex<ProgressState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct ProgressState {
    /// The last flush request completed.
    flushed: u64,
    /// The drainer has exited.
    exited: bool,
    /// Tasks waiting for either.
    tasks: Vec<Waker>,
}

impl Progress {
    fn update(&self, f: impl FnOnce(&mut ProgressState)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state);
        for waker in state.tasks.drain(..) {
            waker.wake();
        }
        drop(state);
        self.cond.notify_all();
    }

    /// Drainer side: every flush request up to `request` is complete.
    pub(crate) fn flushed(&self, request: u64) {
        self.update(|state| state.flushed = state.flushed.max(request));
    }

    /// Drainer side: the drainer has exited; no flush will complete any more.
    pub(crate) fn exited(&self) {
        self.update(|state| state.exited = true);
    }

    /// Waits until flush `request` is complete (true), or the drainer exited
    /// or `deadline` passed first (false).
    pub(crate) fn wait_flushed(&self, request: u64, deadline: Option<Instant>) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.flushed >= request {
                return true;
            }
            if state.exited {
                return false;
            }
            match deadline {
                None => state = self.cond.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    state = self
                        .cond
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// Task side of [`wait_flushed`](Self::wait_flushed) (no deadline: wrap
    /// the future in a timeout instead). `request: None` waits for the exit.
    #[cfg(feature = "tokio")]
    pub(crate) fn poll_progress(&self, request: Option<u64>, waker: &Waker) -> Poll<bool> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(request) = request {
            if state.flushed >= request {
                return Poll::Ready(true);
            }
        }
        if state.exited {
            return Poll::Ready(request.is_none());
        }
        if !state.tasks.iter().any(|w| w.will_wake(waker)) {
            state.tasks.push(waker.clone());
        }
        Poll::Pending
    }
}
