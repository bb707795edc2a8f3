//! Shared by the bench harnesses: round signalling for persistent producer
//! threads, and waiting for a consumer's count.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use crossbeam_utils::Backoff;

/// Spins, then yields, until `counter` reaches `target`.
pub fn wait_for_count(counter: &AtomicU64, target: u64) {
    let backoff = Backoff::new();
    while counter.load(Ordering::Acquire) < target {
        backoff.snooze();
    }
}

/// Round signalling for persistent producer threads: the bench thread starts
/// a round, producers push their share and report back. Everyone blocks on a
/// condition variable in between.
#[derive(Default)]
pub struct Rounds {
    state: Mutex<RoundState>,
    started: Condvar,
    finished: Condvar,
}

#[derive(Default)]
struct RoundState {
    round: u64,
    /// The round's parameter (an item count: per producer or in all, as
    /// the harness using it decides).
    items: u64,
    done: usize,
    stop: bool,
}

impl Rounds {
    fn lock(&self) -> MutexGuard<'_, RoundState> {
        self.state.lock().expect("round lock poisoned")
    }

    /// Bench thread: starts a round with parameter `items`.
    pub fn start(&self, items: u64) {
        let mut state = self.lock();
        state.round += 1;
        state.items = items;
        state.done = 0;
        drop(state);
        self.started.notify_all();
    }

    /// Bench thread: blocks until `producers` producers finished the round.
    pub fn wait_done(&self, producers: usize) {
        let state = self.lock();
        let _state = self
            .finished
            .wait_while(state, |s| s.done < producers)
            .expect("round lock poisoned");
    }

    /// Bench thread: tells the producers to exit.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.started.notify_all();
    }

    /// Producer: waits for a round newer than `seen` and returns its
    /// parameter; `None` means stop.
    pub fn next(&self, seen: &mut u64) -> Option<u64> {
        let state = self.lock();
        let state = self
            .started
            .wait_while(state, |s| !s.stop && s.round == *seen)
            .expect("round lock poisoned");
        if state.stop {
            return None;
        }
        *seen = state.round;
        Some(state.items)
    }

    /// Producer: reports its share of the round pushed.
    pub fn done(&self) {
        self.lock().done += 1;
        self.finished.notify_all();
    }
}
