//! Which batcher's handler the current thread is running, so that a call
//! from a handler back into its own batcher (a flush, a shutdown, a
//! submission that would wait for room) returns at once instead of waiting
//! for that very handler to finish. See the crate docs, "What a handler may
//! call on its own batcher".

use core::cell::Cell;

std::thread_local! {
    /// The batcher (its shared state's address) whose handler this thread
    /// runs now, or 0.
    static RUNNING: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as running the handler of `batcher` until
/// dropped (panics included), restoring what was marked before (a handler
/// of one batcher may run another batcher's inline turn).
#[must_use = "the mark lasts as long as the guard"]
pub(crate) struct Running(usize);

impl Running {
    #[inline(always)]
    pub(crate) fn enter(batcher: usize) -> Self {
        Self(RUNNING.with(|running| running.replace(batcher)))
    }
}

impl Drop for Running {
    #[inline(always)]
    fn drop(&mut self) {
        RUNNING.with(|running| running.set(self.0));
    }
}

/// Whether the current thread is running the handler of `batcher`.
#[inline]
pub(crate) fn running(batcher: usize) -> bool {
    RUNNING.with(|running| running.get()) == batcher
}
