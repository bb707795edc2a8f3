//! Containment of panics in user code that the library calls on its own
//! threads (the drainer, a worker task, a producer's slow path): a panicking
//! `Drop` of an item or a result, a key function, a weigher, a dead-letter or
//! spill callback. Each call is made through here, so that a panic ends that
//! call only: the caller reports it (to the item's ticket where there is
//! one, else in [`Stats`](crate::Stats)) and carries on.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::PanicMessage;

/// Drops `value`; false if its `Drop` panicked (the panic is contained, and
/// whatever the value owned that the panic did not free is leaked).
#[inline]
pub(crate) fn drop_value<T>(value: T) -> bool {
    if !core::mem::needs_drop::<T>() {
        return true;
    }
    drop_slow(value)
}

#[inline(never)]
fn drop_slow<T>(value: T) -> bool {
    catch_unwind(AssertUnwindSafe(move || drop(value))).is_ok()
}

/// Drops every element of `items` one by one, each contained (as
/// [`drop_value`]), leaving the vector empty with its capacity. Returns
/// how many drops panicked.
#[inline]
pub(crate) fn clear_vec<T>(items: &mut Vec<T>) -> usize {
    if !core::mem::needs_drop::<T>() {
        items.clear();
        return 0;
    }
    clear_slow(items)
}

#[inline(never)]
fn clear_slow<T>(items: &mut Vec<T>) -> usize {
    let mut panics = 0;
    // From the back: each `pop` leaves the vector consistent, whatever the
    // drop does.
    while let Some(item) = items.pop() {
        panics += usize::from(!drop_slow(item));
    }
    panics
}

/// Runs `f` (user code); `Err` with the panic's message if it panicked.
#[inline]
pub(crate) fn call<R>(f: impl FnOnce() -> R) -> Result<R, PanicMessage> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| crate::contain::panic_message(&*payload))
}

/// Runs a future, turning a panic in its `poll` into an error carrying the
/// panic message (an async handler's, or the drainer task's loop).
#[cfg(feature = "tokio")]
pub(crate) struct CatchUnwind<F>(pub(crate) F);

#[cfg(feature = "tokio")]
impl<F: core::future::Future + Unpin> core::future::Future for CatchUnwind<F> {
    type Output = Result<F::Output, PanicMessage>;

    fn poll(
        mut self: core::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<Self::Output> {
        let inner = &mut self.0;
        match call(|| core::pin::Pin::new(inner).poll(cx)) {
            Ok(core::task::Poll::Ready(output)) => core::task::Poll::Ready(Ok(output)),
            Ok(core::task::Poll::Pending) => core::task::Poll::Pending,
            Err(message) => core::task::Poll::Ready(Err(message)),
        }
    }
}

/// A future run in place (no allocation) with its panics contained: a
/// panicking poll ends it with the panic's message, and
/// [`drop_future`](Self::drop_future) drops it with a panicking `Drop`
/// contained (an async handler's future may own user values).
#[cfg(feature = "tokio")]
pub(crate) struct Contained<F> {
    future: core::mem::ManuallyDrop<F>,
    /// The future was dropped (by `drop_future`).
    dropped: bool,
}

#[cfg(feature = "tokio")]
impl<F> Contained<F> {
    pub(crate) fn new(future: F) -> Self {
        Self {
            future: core::mem::ManuallyDrop::new(future),
            dropped: false,
        }
    }

    /// Drops the future in place, containing a panic of its `Drop`; false
    /// if it panicked (what it had not dropped yet is leaked). Polling
    /// afterwards is a bug (it panics).
    pub(crate) fn drop_future(self: core::pin::Pin<&mut Self>) -> bool {
        // SAFETY: the future is dropped in place, never moved; `dropped`
        // keeps it from being dropped or polled again.
        let this = unsafe { self.get_unchecked_mut() };
        if this.dropped {
            return true;
        }
        this.dropped = true;
        let future = &mut this.future;
        // SAFETY: not dropped before (above), and never used after.
        call(|| unsafe { core::mem::ManuallyDrop::drop(future) }).is_ok()
    }
}

#[cfg(feature = "tokio")]
impl<F: core::future::Future> core::future::Future for Contained<F> {
    type Output = Result<F::Output, PanicMessage>;

    fn poll(
        self: core::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<Self::Output> {
        // SAFETY: the future is structurally pinned: it is never moved out
        // of `Contained`, which is pinned.
        let this = unsafe { self.get_unchecked_mut() };
        assert!(
            !this.dropped,
            "a contained future polled after it was dropped"
        );
        // SAFETY: as above.
        let future = unsafe { core::pin::Pin::new_unchecked(&mut *this.future) };
        match call(|| future.poll(cx)) {
            Ok(core::task::Poll::Ready(output)) => core::task::Poll::Ready(Ok(output)),
            Ok(core::task::Poll::Pending) => core::task::Poll::Pending,
            Err(message) => core::task::Poll::Ready(Err(message)),
        }
    }
}

#[cfg(feature = "tokio")]
impl<F> Drop for Contained<F> {
    fn drop(&mut self) {
        if !self.dropped {
            // SAFETY: not dropped yet, and never used again.
            unsafe { core::mem::ManuallyDrop::drop(&mut self.future) };
        }
    }
}

/// Locks `mutex`, going on after a panic of another holder (the data it
/// guards stays consistent: every update is a single assignment).
pub(crate) fn lock<T>(mutex: &crate::sync::Mutex<T>) -> crate::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The message of a panic payload, when it is a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> crate::error::PanicMessage {
    let text: &str = if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a non-string panic payload"
    };
    std::sync::Arc::new(text.to_owned())
}
