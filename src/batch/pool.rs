//! The pool of batch buffers, allocated at build time and recycled.
//!
//! The drainer takes a buffer from the pool, fills it, hands it to the
//! handler and puts it back. The return path is a lock-free `ArrayQueue`, so a
//! buffer can come back from another thread (a task running an async sink).

use crate::batch::{BatchBuf, Origin};
use crossbeam_queue::ArrayQueue;

/// The pool of batch buffers.
#[derive(Debug)]
pub(crate) struct Pool<T> {
    free: ArrayQueue<BatchBuf<T>>,
    size: usize,
    buffer_capacity: usize,
    /// Where the drops of items cleared from returned buffers that panicked
    /// are counted (plain data, so the standard `Arc`).
    panics: std::sync::Arc<crate::stats::ContainedPanics>,
}

impl<T> Pool<T> {
    /// `size` buffers of `buffer_capacity` items each, allocated now, with
    /// room for histogram runs when `runs` is set.
    pub(crate) fn new(
        size: usize,
        buffer_capacity: usize,
        runs: bool,
        marks: bool,
        panics: std::sync::Arc<crate::stats::ContainedPanics>,
    ) -> Self {
        let free = ArrayQueue::new(size);
        for _ in 0..size {
            let mut buf = BatchBuf::with_capacity(buffer_capacity);
            if runs {
                buf = buf.with_runs();
            }
            if marks {
                buf = buf.with_marks();
            }
            let pushed = free.push(buf);
            debug_assert!(pushed.is_ok(), "the queue holds exactly `size` buffers");
        }
        Self {
            free,
            size,
            buffer_capacity,
            panics,
        }
    }

    /// Takes a free buffer, if any.
    #[inline]
    pub(crate) fn take(&self) -> Option<BatchBuf<T>> {
        self.free.pop()
    }

    /// Returns an emptied buffer.
    #[inline]
    pub(crate) fn put(&self, mut buf: BatchBuf<T>) {
        self.recycle(&mut buf);
        // The pool only ever holds buffers it handed out, so it cannot be full.
        let returned = self.free.push(buf);
        debug_assert!(returned.is_ok(), "a buffer came back twice");
    }

    /// Empties `buf` for reuse, counting the drops that panicked.
    #[inline]
    pub(crate) fn recycle(&self, buf: &mut BatchBuf<T>) {
        self.panics.drops(buf.clear());
    }

    /// Buffers currently in the pool (not in use).
    pub(crate) fn available(&self) -> usize {
        self.free.len()
    }

    /// Buffers the pool was built with.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Bytes the pool's buffers hold, for the memory report.
    pub(crate) fn footprint(&self) -> usize {
        self.size
            * self.buffer_capacity
            * (core::mem::size_of::<T>() + core::mem::size_of::<Origin>())
    }
}
