//! The [`Ticket`]: a submitter's handle on one armed slot, waited for by a
//! thread or awaited by a task.

use core::ptr::NonNull;
use core::task::Waker;
use std::time::Instant;

use crate::error::Error;
use crate::sync::thread;
use crate::wait::{Backoff, WaitStrategy};

use super::*;

/// The address of one armed completion slot (its lane and table are found
/// through the slot's back pointers).
pub(super) struct SlotRef<R>(pub(super) NonNull<CompletionSlot<R>>);

impl<R> SlotRef<R> {
    /// The slot, its lane and the table, borrowed for one operation.
    #[inline(always)]
    pub(super) fn parts(&self) -> (&CompletionSlot<R>, &LaneCompletions<R>, &Table<R>) {
        // The ticket owns the slot, so the table is alive: it is freed only
        // after every orphaned slot is freed, and this one is freed by the
        // ticket's own `try_take`/`release`, after which the `SlotRef` is gone.
        // SAFETY: as just said; the back pointers were set when the table was
        // built and point into that same live allocation.
        let parts = unsafe {
            let slot = self.0.as_ref();
            let lane = slot.lane.as_ref();
            (slot, lane, lane.table.as_ref())
        };
        Table::assert_alive(NonNull::from(parts.2));
        parts
    }

    /// The ticket's own state in the slot, for one access.
    #[inline(always)]
    pub(super) fn with_cell<T>(&self, f: impl FnOnce(&mut TicketCell) -> T) -> T {
        let cell = &self.parts().0.ticket;
        // The ticket owns the slot, and with it the ticket cell: no other
        // party touches it while the ticket lives.
        cell.with_mut(|cell| {
            // SAFETY: as just said; a ticket is not `Sync` and its `SlotRef`
            // is not `Clone`, so no two of these borrows overlap.
            f(unsafe { &mut *cell })
        })
    }

    /// The item's sequence number, from the ticket cell.
    pub(super) fn seq(&self) -> u64 {
        // SAFETY: as in `with_cell`; a shared read.
        self.parts().0.ticket.with(|cell| unsafe { (*cell).seq })
    }
}

pub(super) enum Inner<R> {
    Pending(SlotRef<R>),
    Ready(Result<R, Error>),
    Taken,
}

/// The result of one submitted item, to be waited for or polled.
///
/// A ticket names the completion slot of its item's lane and sequence. Waiting
/// spins, then yields, then parks, as the batcher's [`WaitStrategy`] says.
/// Dropping a ticket at any moment is safe: its result is dropped and its slot
/// freed.
///
/// Until a ticket gives up its completion slot (by taking the result or being
/// dropped), that slot serves no other submission, so a lane has at most
/// [`result_slots`](crate::BatcherBuilder::result_slots) tickets outstanding.
///
/// # Examples
///
/// ```
/// use ringbatch::Batcher;
///
/// let batcher = Batcher::builder()
///     .handler_fn(|batch: &mut ringbatch::Batch<'_, u32, u32>| {
///         batch.complete_with(|x| Ok::<_, ringbatch::Error>(x + 1));
///         Ok(())
///     })
///     .build()
///     .unwrap();
/// let producer = batcher.producer();
/// let ticket = producer.submit(41).unwrap();
/// assert_eq!(ticket.wait().unwrap(), 42);
/// ```
///
/// A pending ticket is one pointer, to its completion slot (which keeps the
/// sequence number and the lane), so that a `Ticket<u64>` is two words and
/// moves in registers.
#[must_use = "dropping a ticket discards the item's result"]
pub struct Ticket<R> {
    pub(super) inner: Inner<R>,
}

// A ticket for a `u64` result is two words (see above).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(core::mem::size_of::<Ticket<u64>>() == 16);

// SAFETY: a ticket exclusively owns the ticket side of its slot; the result
// (an `R`) is moved to whichever thread holds the ticket, hence `R: Send`. The
// table it points into outlives it (orphan protocol, module docs).
unsafe impl<R: Send> Send for Ticket<R> {}

impl<R> Ticket<R> {
    /// A ticket whose outcome is already known (the item never reached a slot).
    pub(crate) fn ready(result: Result<R, Error>) -> Self {
        Self {
            inner: Inner::Ready(result),
        }
    }

    /// The item's sequence number in its lane, if it reached a lane (`None`
    /// for an item that was dropped, or that its submitter handled itself
    /// under [`inline_when_idle`](crate::BatcherBuilder::inline_when_idle)
    /// without passing through the lane).
    pub fn sequence(&self) -> Option<u64> {
        match &self.inner {
            Inner::Pending(slot) => Some(slot.seq()),
            _ => None,
        }
    }

    /// Whether the result is there, so that [`try_take`](Self::try_take) would
    /// return it. A `false` may be stale a moment later.
    pub fn is_ready(&self) -> bool {
        match &self.inner {
            Inner::Pending(slot) => slot.parts().0.is_ready(),
            Inner::Ready(_) | Inner::Taken => true,
        }
    }

    /// Takes the result if it is there; `None` if it is not yet.
    ///
    /// Once the result has been taken, later calls return
    /// `Some(Err(Error::AlreadyTaken))`.
    pub fn try_take(&mut self) -> Option<Result<R, Error>> {
        match &self.inner {
            Inner::Pending(slot) => {
                // SAFETY: this ticket owns the slot; on `Some` we stop using it.
                let result = unsafe { CompletionSlot::try_take(slot.0) }?;
                self.inner = Inner::Taken;
                Some(result)
            }
            Inner::Ready(_) => match core::mem::replace(&mut self.inner, Inner::Taken) {
                Inner::Ready(result) => Some(result),
                _ => unreachable!("matched Ready above"),
            },
            Inner::Taken => Some(Err(Error::AlreadyTaken)),
        }
    }

    /// Blocks until the result is there and returns it.
    ///
    /// # Errors
    ///
    /// The item's [`Error`]: the handler failed it, failed its batch, panicked
    /// or left it uncompleted, or the item was dropped.
    #[inline]
    pub fn wait(mut self) -> Result<R, Error> {
        match self.take_ready() {
            Some(result) => result,
            None => self.wait_pending(),
        }
    }

    /// The result known at submission (`inline_when_idle`'s direct path, a
    /// dropped item), if that is what this ticket holds: no slot to look at.
    #[inline(always)]
    pub(super) fn take_ready(&mut self) -> Option<Result<R, Error>> {
        if let Inner::Ready(_) = self.inner {
            if let Inner::Ready(result) = core::mem::replace(&mut self.inner, Inner::Taken) {
                return Some(result);
            }
        }
        None
    }

    /// [`wait`](Self::wait) for a result still to come.
    #[inline(never)]
    pub(super) fn wait_pending(mut self) -> Result<R, Error> {
        match self.block_until(None) {
            Some(result) => result,
            None => unreachable!("an untimed wait returns only with a result"),
        }
    }

    /// Blocks for at most `timeout`; `None` if the result is not there by then
    /// (the ticket stays valid: wait again or drop it). A `timeout` beyond
    /// what the clock can represent waits for the result.
    pub fn wait_timeout(&mut self, timeout: std::time::Duration) -> Option<Result<R, Error>> {
        self.block_until(Instant::now().checked_add(timeout))
    }

    /// Blocks until the instant `until` at the latest; see
    /// [`wait_timeout`](Self::wait_timeout). (An item's own deadline, after
    /// which it is not dispatched, is set with
    /// [`Producer::submit_with_deadline`](crate::Producer::submit_with_deadline).)
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ringbatch::{Batch, Batcher};
    ///
    /// let batcher = Batcher::builder()
    ///     .handler_fn(|batch: &mut Batch<'_, u32, u32>| {
    ///         batch.ok_with(|x| x + 1);
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let mut ticket = batcher.producer().submit(1).unwrap();
    /// let until = Instant::now() + Duration::from_secs(60);
    /// assert_eq!(ticket.wait_until(until).expect("handled in time").unwrap(), 2);
    /// ```
    pub fn wait_until(&mut self, until: Instant) -> Option<Result<R, Error>> {
        self.block_until(Some(until))
    }

    /// Renamed to [`wait_until`](Self::wait_until): "deadline" is an item's
    /// expiry; "until" bounds a wait.
    #[deprecated(since = "0.1.0", note = "renamed to `wait_until`")]
    pub fn wait_deadline(&mut self, deadline: Instant) -> Option<Result<R, Error>> {
        self.wait_until(deadline)
    }

    /// Waits for the result until `deadline` (for ever with `None`).
    pub(super) fn block_until(&mut self, deadline: Option<Instant>) -> Option<Result<R, Error>> {
        let wait = match &self.inner {
            Inner::Pending(slot) => slot.parts().2.wait,
            _ => return self.try_take(),
        };
        let mut backoff = Backoff::new(wait);
        loop {
            if let Some(result) = self.try_take() {
                return Some(result);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            if backoff.snooze() {
                break;
            }
        }
        // Park phase: register this thread's waker, then sleep until woken.
        if let Inner::Pending(slot) = &self.inner {
            let (slot, _, _) = slot.parts();
            // SAFETY: this ticket owns the slot and has not taken the result.
            with_thread_waker(|waker| unsafe { slot.register(waker) });
        }
        loop {
            if let Some(result) = self.try_take() {
                return Some(result);
            }
            match deadline {
                None => thread::park(),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    thread::park_timeout(deadline - now);
                }
            }
        }
    }
}

#[cfg(all(test, loom))]
impl<R> Ticket<R> {
    /// Registers `waker` as a waiter would (for the loom models).
    pub(crate) fn register_for_test(&mut self, waker: &Waker) -> bool {
        match &self.inner {
            // SAFETY: this ticket owns the slot and has not taken the result.
            Inner::Pending(slot) => unsafe { slot.parts().0.register(waker) },
            _ => false,
        }
    }
}

// A ticket is never pinned in place: polling moves nothing out of a pinned
// `R`, so it is `Unpin` whatever `R` is.
impl<R> Unpin for Ticket<R> {}

/// Awaiting a ticket waits for its result without blocking the thread: the
/// task's waker is stored in the completion slot (the same slot and waker
/// cell that [`wait`](Ticket::wait) uses), so a ticket made by a thread can
/// be awaited by a task and the other way round.
///
/// The batcher's [`WaitStrategy`] applies to tasks as it does to threads,
/// with "yield" meaning: return `Pending` after waking the task at once, so
/// that the executor runs other tasks and polls this one again soon, with
/// its worker thread kept awake. Under `Backoff` (the default) a ticket
/// yields a bounded number of times before it stores its waker and sleeps;
/// results that arrive within that window (a few microseconds) are picked up
/// without the cost of waking a sleeping worker thread. `Park` stores the
/// waker at once; `Yield` and `BusySpin` never sleep.
///
/// Dropping the future (the ticket) before the result arrives is safe: the
/// result is dropped when it comes. Polling again after the result was
/// returned gives [`Error::AlreadyTaken`].
impl<R> core::future::Future for Ticket<R> {
    type Output = Result<R, Error>;

    #[inline]
    fn poll(
        self: core::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<Self::Output> {
        let this = self.get_mut();
        match this.take_ready() {
            Some(result) => core::task::Poll::Ready(result),
            None => this.poll_slot(cx),
        }
    }
}

impl<R> Ticket<R> {
    /// [`poll`](core::future::Future::poll) for a result still to come.
    pub(super) fn poll_slot(
        &mut self,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<Result<R, Error>> {
        if let Some(result) = self.try_take() {
            return core::task::Poll::Ready(result);
        }
        if let Inner::Pending(pending) = &self.inner {
            let (slot, _, table) = pending.parts();
            let yield_now = match table.wait {
                WaitStrategy::BusySpin | WaitStrategy::Yield => true,
                WaitStrategy::Backoff => pending.with_cell(|cell| {
                    let more = cell.yields < TASK_YIELDS;
                    cell.yields += u8::from(more);
                    more
                }),
                WaitStrategy::Park => false,
            };
            if yield_now {
                cx.waker().wake_by_ref();
                return core::task::Poll::Pending;
            }
            // SAFETY: this ticket owns the slot and has not taken the result.
            if unsafe { slot.register(cx.waker()) } {
                // The completer wakes the waker once the result is written.
                return core::task::Poll::Pending;
            }
        }
        // The result came while registering.
        match self.try_take() {
            Some(result) => core::task::Poll::Ready(result),
            None => unreachable!("`register` fails only once the result is there"),
        }
    }
}

/// Polls of a pending ticket that yield (under `Backoff`) before it stores
/// its waker: about as long as a thread's spin and yield phases.
pub(super) const TASK_YIELDS: u8 = 64;

impl<R> Drop for Ticket<R> {
    fn drop(&mut self) {
        if let Inner::Pending(slot) = &self.inner {
            // SAFETY: this ticket owns the slot and never uses it again.
            unsafe { CompletionSlot::release(slot.0) };
        }
    }
}

impl<R> core::fmt::Debug for Ticket<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ticket")
            .field("sequence", &self.sequence())
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// Runs `f` with a waker that unparks the current thread.
#[cfg(not(loom))]
pub(super) fn with_thread_waker<T>(f: impl FnOnce(&Waker) -> T) -> T {
    thread_local! {
        // Built once per thread, so parking on a ticket does not allocate.
        static WAKER: Waker = thread_waker();
    }
    let mut f = Some(f);
    match WAKER.try_with(|waker| (f.take().expect("called once"))(waker)) {
        Ok(value) => value,
        // The thread-local is being destroyed: build a one-off waker.
        Err(_) => (f.take().expect("not called yet"))(&thread_waker()),
    }
}

#[cfg(loom)]
pub(super) fn with_thread_waker<T>(f: impl FnOnce(&Waker) -> T) -> T {
    f(&thread_waker())
}

pub(crate) fn thread_waker() -> Waker {
    pub(super) struct Unparker(thread::Thread);
    impl std::task::Wake for Unparker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    // `Waker` is built from the standard `Arc`; this is not shared state of
    // ours, only the waker's vtable owner.
    Waker::from(std::sync::Arc::new(Unparker(thread::current())))
}
