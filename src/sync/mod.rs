//! The one place that names concurrency primitives.
//!
//! Every atomic, cell, lock, `Arc` and thread operation in the crate comes from
//! here: the standard library normally, and loom's model-checked versions under
//! `cfg(loom)`, so the loom models in `loom-tests/` exercise the real ring,
//! completion and wake-up code rather than copies of it.

#[cfg(not(loom))]
#[allow(unused_imports)] // `fence` and `MutexGuard` serve the tokio feature
mod imp {
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
    pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

    /// Threads: spawning, parking and yielding.
    pub(crate) mod thread {
        pub(crate) use std::thread::{Builder, JoinHandle, Thread, current, park, yield_now};

        /// Parks the current thread for at most `dur` (spurious wake-ups allowed).
        #[inline]
        pub(crate) fn park_timeout(dur: std::time::Duration) {
            std::thread::park_timeout(dur)
        }
    }

    /// One step of a busy-wait loop.
    #[inline(always)]
    pub(crate) fn spin_loop() {
        std::hint::spin_loop()
    }

    /// `std::cell::UnsafeCell` with loom's closure-based access API, so that the
    /// same slot code compiles against both.
    #[derive(Debug)]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        #[inline(always)]
        pub(crate) const fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        /// Runs `f` with a shared raw pointer to the contents.
        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Runs `f` with a unique raw pointer to the contents.
        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(loom)]
#[allow(unused_imports)] // as above
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
    pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};

    /// Threads: spawning, parking and yielding, as loom models them.
    pub(crate) mod thread {
        pub(crate) use loom::thread::{Builder, JoinHandle, Thread, current, park, yield_now};

        /// loom has no timed park: a timed wait is modelled as an untimed one,
        /// so a model only passes if a wake-up really arrives.
        #[inline]
        pub(crate) fn park_timeout(_dur: std::time::Duration) {
            loom::thread::park()
        }
    }

    /// One step of a busy-wait loop: a yield, so that loom schedules the thread
    /// that the loop is waiting for.
    #[inline]
    pub(crate) fn spin_loop() {
        loom::thread::yield_now()
    }
}

pub(crate) use imp::*;

/// Asymmetric fences (see the module).
pub(crate) mod asymmetric;

/// Under loom: memory that the code under test frees is kept until the end
/// of the model's execution, so that a model can check that nothing uses it
/// after the free (see `Table::dealloc`) without that use being one.
#[cfg(loom)]
pub(crate) mod graveyard {
    /// Freed allocations, each with the function that really frees it.
    struct Graves(Vec<(usize, unsafe fn(usize))>);

    impl Drop for Graves {
        fn drop(&mut self) {
            for (address, bury) in self.0.drain(..) {
                // SAFETY: each entry was given by `bury` below with the
                // function that frees exactly that allocation, once.
                unsafe { bury(address) };
            }
        }
    }

    loom::lazy_static! {
        // Dropped by loom at the end of each execution, before its leak check.
        static ref GRAVES: std::sync::Mutex<Graves> = std::sync::Mutex::new(Graves(Vec::new()));
    }

    /// Keeps the allocation at `address` until the execution ends, then
    /// frees it with `free`.
    pub(crate) fn bury(address: usize, free: unsafe fn(usize)) {
        GRAVES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .push((address, free));
    }
}

/// Once-initialised cell for values written before they are shared (the
/// drainer's thread handle). It holds no atomic protocol of ours, so it is the
/// standard library's under loom too.
pub(crate) use std::sync::OnceLock;
