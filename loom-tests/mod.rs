//! loom models of every atomic protocol in the crate, run against the real
//! code (they are compiled into the crate's unit tests under `--cfg loom`).
//!
//! Run with `bin/loom` (`LOOM_MAX_PREEMPTIONS` defaults to 2).

mod asynch;
mod batcher;
mod completion;
mod exclusive;
mod inline;
mod requests;
mod ring;
mod shutdown;
mod wakeup;

use crate::sync::{Arc, AtomicUsize, Ordering};

/// A value that counts its drops, to check that every result and item is
/// dropped exactly once.
#[derive(Debug)]
struct Counted {
    drops: Arc<AtomicUsize>,
}

impl Counted {
    fn new(drops: &Arc<AtomicUsize>) -> Self {
        Self {
            drops: Arc::clone(drops),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}
