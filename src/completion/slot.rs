//! One completion slot: its state word, the result it carries and the
//! waker of the ticket waiting for it.

use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::task::Waker;

use crate::error::Error;
use crate::sync::{AtomicUsize, Ordering, UnsafeCell};

use super::*;

/// A ticket owns the slot (set by the producer that claimed the sequence).
pub(super) const ARMED: usize = 1 << 0;
/// The result is written. Set once, by the completer.
pub(super) const READY: usize = 1 << 1;
/// A waker is stored. Set and cleared only by the ticket, and only while
/// `READY` is clear, so its value when `READY` is set never changes again: the
/// completer uses the waker if and only if `WAKER` was set at that moment.
pub(super) const WAKER: usize = 1 << 2;
/// The ticket is gone and left the freeing of the slot to the completer.
pub(super) const RELEASED: usize = 1 << 3;
/// The completer has finished with the waker (set only if it used one).
pub(super) const DONE: usize = 1 << 4;
/// The batcher is gone: freeing this slot releases one reference to the table.
pub(super) const ORPHANED: usize = 1 << 5;
/// A producer sleeps waiting for this slot to be freed (set under the lane
/// notifier's lock, only while the slot is held); `free` notifies.
pub(super) const SLOT_WAITER: usize = 1 << 6;
/// No ticket: the slot may be armed by the next claim of its index.
pub(super) const FREE: usize = 0;

/// One completion slot.
pub(crate) struct CompletionSlot<R> {
    pub(super) state: AtomicUsize,
    pub(super) result: UnsafeCell<MaybeUninit<Result<R, Error>>>,
    /// Empty whenever `WAKER` is clear and the slot is owned by the ticket.
    pub(super) waker: UnsafeCell<Option<Waker>>,
    /// What the ticket keeps here rather than in itself, so that a ticket is
    /// one pointer (see [`Ticket`]). Written by the producer that armed the
    /// slot (before it makes the ticket), then only by the ticket.
    pub(super) ticket: UnsafeCell<TicketCell>,
    /// The lane this slot belongs to; set once, when the table is built.
    pub(super) lane: NonNull<LaneCompletions<R>>,
}

/// The ticket's own state, kept in its slot.
pub(super) struct TicketCell {
    /// The item's sequence number in its lane.
    pub(super) seq: u64,
    /// Polls that found no result and yielded instead of registering a
    /// waker (see the `Future` impl of [`Ticket`]).
    pub(super) yields: u8,
}

impl<R> CompletionSlot<R> {
    /// A free slot; [`TableOwner::new`] sets its lane.
    pub(super) fn new() -> Self {
        Self {
            state: AtomicUsize::new(FREE),
            result: UnsafeCell::new(MaybeUninit::uninit()),
            waker: UnsafeCell::new(None),
            ticket: UnsafeCell::new(TicketCell { seq: 0, yields: 0 }),
            lane: NonNull::dangling(),
        }
    }

    /// Whether no ticket holds the slot (a hint before [`try_arm`](Self::try_arm)).
    #[inline(always)]
    pub(super) fn looks_free(&self) -> bool {
        self.state.load(Ordering::Relaxed) == FREE
    }

    /// Whether no ticket holds the slot. Acquire pairs with the swap in
    /// [`free`](Self::free). (The loom models check it.)
    #[cfg(all(loom, test))]
    pub(crate) fn is_free(&self) -> bool {
        self.state.load(Ordering::Acquire) == FREE
    }

    /// Producer side: takes the slot for a new ticket if it is free.
    ///
    /// Acquire on success pairs with the Release swap in [`free`](Self::free):
    /// the previous ticket's and completer's accesses to the cells happen
    /// before ours. The producer then publishes its item with a Release
    /// stamp store, which carries this state to the drainer.
    #[inline(always)]
    pub(super) fn try_arm(&self) -> bool {
        self.state
            .compare_exchange(FREE, ARMED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Producer side, under the lane notifier's lock: if the slot is still
    /// held, sets [`SLOT_WAITER`] so that `free` notifies, and returns true.
    pub(crate) fn arm_waiter(&self) -> bool {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if state == FREE {
                return false;
            }
            if state & SLOT_WAITER != 0 {
                return true;
            }
            // Acquire: if the slot was freed in between, the CAS fails and we
            // see `FREE` (with the previous ticket's accesses before it).
            match self.state.compare_exchange_weak(
                state,
                state | SLOT_WAITER,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// Producer side: gives back a slot it armed but will not use (its item
    /// was refused), waking producers that wait for a slot.
    ///
    /// # Safety
    ///
    /// The caller armed the slot with [`try_arm`](Self::try_arm), published
    /// nothing with it and made no ticket for it.
    pub(super) unsafe fn disarm(&self, lane: &LaneCompletions<R>) {
        // AcqRel swap, as in `free`; only `SLOT_WAITER` can have been added.
        if self.state.swap(FREE, Ordering::AcqRel) & SLOT_WAITER != 0 {
            lane.notifier.notify_all();
        }
    }

    /// The slot's state word, reached through a raw pointer: no reference to
    /// the slot (or to the lane and table around it) outlives the call that
    /// may free the table.
    ///
    /// # Safety
    ///
    /// `this` points to a live slot; the reference is used only while the
    /// table is alive.
    #[inline(always)]
    pub(super) unsafe fn state_of<'a>(this: NonNull<Self>) -> &'a AtomicUsize {
        // SAFETY: the caller's contract; a reference to the atomic alone
        // (an `UnsafeCell`), not to the slot.
        unsafe { &(*this.as_ptr()).state }
    }

    /// The slot's lane and table (back pointers set when the table was built).
    ///
    /// # Safety
    ///
    /// `this` points to a slot of a live table.
    #[inline(always)]
    pub(super) unsafe fn owners(
        this: NonNull<Self>,
    ) -> (NonNull<LaneCompletions<R>>, NonNull<Table<R>>) {
        // SAFETY: the caller's contract; the back pointers are set once,
        // before the table is shared, and the references made here end with
        // this expression.
        unsafe {
            let lane = (*this.as_ptr()).lane;
            (lane, (*lane.as_ptr()).table)
        }
    }

    /// Completer side: stores the result and wakes the ticket. A result whose
    /// ticket is gone is dropped here, after the slot is freed; if its `Drop`
    /// panics, the panic is contained and counted
    /// ([`Table::result_drop_panics`]).
    ///
    /// # Safety
    ///
    /// `this` is an armed slot of a live table (its owner, or the ticket,
    /// keeps it alive for the whole call), and this is the one completion
    /// of its sequence.
    pub(crate) unsafe fn complete(this: NonNull<Self>, result: Result<R, Error>) {
        // SAFETY: the caller's contract.
        let (_, table) = unsafe { Self::owners(this) };
        Table::assert_alive(table);
        // SAFETY: until `READY` is set the result cell belongs to the completer.
        unsafe { this.as_ref() }
            .result
            .with_mut(|p| unsafe { (*p).write(result) });
        // Release publishes the result to the ticket's Acquire load of `READY`;
        // Acquire makes the ticket's waker write (before its `WAKER` CAS, or its
        // `RELEASED` CAS) visible here. `READY` is clear (one completion per
        // arm), so adding it sets it: one RMW instead of a CAS loop.
        // SAFETY: the slot is alive (the caller's contract).
        let state = unsafe { Self::state_of(this) };
        let prev = state.fetch_add(READY, Ordering::AcqRel);
        debug_assert!(prev & READY == 0, "a slot completed twice");
        if prev & RELEASED != 0 {
            // The ticket left before the result came: take the result back,
            // free the slot, then drop the result (user code, last).
            // SAFETY: just written, and the ticket will never read it.
            let result = unsafe { this.as_ref() }
                .result
                .with(|p| unsafe { (*p).assume_init_read() });
            // SAFETY: the ticket is gone; the completer owns the slot, and
            // its result cell is empty again.
            unsafe { Self::free(this, prev | READY) };
            if !crate::contain::drop_value(result) {
                // The caller keeps the table alive for the whole call.
                Table::note_result_drop_panic(table);
            }
        } else if prev & WAKER != 0 {
            // SAFETY: as above.
            unsafe { this.as_ref() }.waker.with(|w| {
                // SAFETY: `WAKER` was set before `READY`, so the ticket does not
                // touch the waker cell again until it sees `DONE` (shared reads
                // only).
                if let Some(waker) = unsafe { &*w } {
                    waker.wake_by_ref();
                }
            });
            // AcqRel: Release hands the waker cell back; Acquire sees the
            // ticket's `RELEASED` (and its read of the result) if it came first.
            // `DONE` is set only here, once: adding sets it (as `READY` above).
            let prev = state.fetch_add(DONE, Ordering::AcqRel);
            if prev & RELEASED != 0 {
                // SAFETY: the ticket took the result and left the freeing to us.
                unsafe { Self::free(this, prev | DONE) };
            }
        }
    }

    /// Ticket side: takes the result if it is there.
    ///
    /// # Safety
    ///
    /// Called by the ticket that owns the slot `this`, which must stop using
    /// the slot once this returns `Some` (the table may be gone then).
    #[inline]
    pub(crate) unsafe fn try_take(this: NonNull<Self>) -> Option<Result<R, Error>> {
        // SAFETY: the ticket owns the slot, so the table is alive.
        let state = unsafe { Self::state_of(this) };
        // Acquire pairs with the completer's `fetch_add(READY)`.
        let state = state.load(Ordering::Acquire);
        if state & READY == 0 {
            return None;
        }
        // SAFETY: `READY` is set, so the result is initialised, and only the
        // ticket reads it, once.
        let result = unsafe { this.as_ref() }.result.with(|p| {
            // SAFETY: as above: initialised, read once, by the ticket.
            unsafe { (*p).assume_init_read() }
        });
        // SAFETY: the ticket owns the slot and has taken the result.
        unsafe { Self::finish(this, state) };
        Some(result)
    }

    /// Whether the result is there (a snapshot).
    pub(crate) fn is_ready(&self) -> bool {
        self.state.load(Ordering::Acquire) & READY != 0
    }

    /// Ticket side, after taking the result: free the slot, or leave that to
    /// the completer if it may still be using the waker.
    ///
    /// # Safety
    ///
    /// `state` is the state in which the ticket saw `READY`; the ticket has
    /// taken the result and does not touch the slot afterwards.
    pub(super) unsafe fn finish(this: NonNull<Self>, state: usize) {
        if state & WAKER == 0 {
            // The completer saw no waker and is done with the slot.
            // SAFETY: the ticket owns the slot.
            unsafe { Self::free(this, state) };
        } else {
            // AcqRel: Acquire sees `DONE` (the completer is finished with the
            // waker); Release orders our read of the result before a free by
            // the completer. `RELEASED` is clear: the ticket sets it once,
            // here or in `release`. Adding sets it (see `complete`).
            // SAFETY: the ticket still owns the slot.
            let prev = unsafe { Self::state_of(this) }.fetch_add(RELEASED, Ordering::AcqRel);
            if prev & DONE != 0 {
                // SAFETY: both sides are finished; we are the last.
                unsafe { Self::free(this, prev | RELEASED) };
            }
        }
    }

    /// Ticket side: stores `waker` to be woken when the result is written.
    /// Returns false (storing nothing new) if the result is already there.
    ///
    /// # Safety
    ///
    /// Called by the ticket that owns this slot, before it has taken the result.
    pub(crate) unsafe fn register(&self, waker: &Waker) -> bool {
        let mut state = self.state.load(Ordering::Acquire);
        if state & READY != 0 {
            return false;
        }
        if state & WAKER != 0 {
            let same = self.waker.with(|w| {
                // SAFETY: with `WAKER` set the completer may read the cell,
                // but nobody writes it; a shared read is fine.
                let stored = unsafe { &*w };
                stored.as_ref().is_some_and(|w| w.will_wake(waker))
            });
            if same {
                return true;
            }
            // Take the cell back, but only while `READY` is clear.
            loop {
                if state & READY != 0 {
                    return false;
                }
                // Acquire on failure re-reads the state the completer set.
                match self.state.compare_exchange_weak(
                    state,
                    state & !WAKER,
                    Ordering::Acquire,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(actual) => state = actual,
                }
            }
            state &= !WAKER;
        }
        // `WAKER` and `READY` are clear: the completer will not read the cell.
        // SAFETY: the ticket owns the waker cell while `WAKER` is clear.
        self.waker.with_mut(|w| unsafe { *w = Some(waker.clone()) });
        loop {
            if state & READY != 0 {
                // Too late; the waker stays in the cell and is dropped by `free`.
                return false;
            }
            // Release publishes the waker cell to the completer's AcqRel
            // `fetch_add(READY)`.
            match self.state.compare_exchange_weak(
                state,
                state | WAKER,
                Ordering::Release,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// Ticket side: the ticket is dropped without having taken the result.
    /// A result already there is dropped after the slot is freed, so that a
    /// panicking `Drop` of `R` unwinds into the ticket's owner with the slot
    /// already given back.
    ///
    /// # Safety
    ///
    /// Called once, by the ticket that owns the slot `this`, which then stops
    /// using it.
    pub(crate) unsafe fn release(this: NonNull<Self>) {
        // SAFETY: the ticket owns the slot, so the table is alive.
        let word = unsafe { Self::state_of(this) };
        let mut state = word.load(Ordering::Acquire);
        loop {
            if state & READY != 0 {
                // SAFETY: `READY` is set, the result is ours to take (and drop).
                let result = unsafe { this.as_ref() }
                    .result
                    .with(|p| unsafe { (*p).assume_init_read() });
                // SAFETY: as in `try_take`.
                unsafe { Self::finish(this, state) };
                drop(result);
                return;
            }
            // AcqRel: Release hands the waker cell to the completer, which will
            // free the slot; Acquire on failure sees the result if it came.
            match word.compare_exchange_weak(
                state,
                state | RELEASED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => state = actual,
            }
        }
    }

    /// Frees the slot for the next claim of its index. `seen` is the state
    /// the caller's last RMW left (only [`SLOT_WAITER`] and [`ORPHANED`] can
    /// have been added since).
    ///
    /// # Safety
    ///
    /// The caller is the last of ticket and completer to use the slot; the
    /// result cell is empty. The slot must not be touched afterwards (it may be
    /// reused at once, or the whole table may be freed).
    pub(super) unsafe fn free(this: NonNull<Self>, seen: usize) {
        // SAFETY: the caller owns the slot exclusively, so the table is alive.
        unsafe { this.as_ref() }
            .waker
            .with_mut(|w| drop(unsafe { (*w).take() }));
        if seen & (SLOT_WAITER | ORPHANED) == 0 {
            // AcqRel: Release makes the slot reusable (pairs with the
            // claimer's Acquire `try_arm`); Acquire on failure sees a mark
            // added since.
            // SAFETY: as above.
            match unsafe { Self::state_of(this) }.compare_exchange(
                seen,
                FREE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => {
                    // SAFETY: still ours; passed on.
                    return unsafe { Self::free_marked(this, actual) };
                }
            }
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { Self::free_marked(this, seen) }
    }

    /// [`free`](Self::free) of a slot marked by a waiting producer or by
    /// the table owner's drop.
    ///
    /// With [`SLOT_WAITER`], the notifier lives in the table, and the owner
    /// may drop the table between our swap to `FREE` (after which its scan
    /// skips the slot) and our notify: a reference taken first keeps the
    /// table alive until the notify is done. With [`ORPHANED`] no producer is
    /// left to notify, and the swap gives up the reference the owner counted
    /// for this slot.
    ///
    /// # Safety
    ///
    /// As for `free`, with the waker cell already emptied.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn free_marked(this: NonNull<Self>, seen: usize) {
        // SAFETY: the slot is ours (not `FREE`), so the table is alive: its
        // owner has not scanned the slot yet, or counted a reference for it.
        let (lane, table) = unsafe { Self::owners(this) };
        // SAFETY: as above.
        let state = unsafe { Self::state_of(this) };
        if seen & ORPHANED != 0 {
            // AcqRel, as in `free`. `ORPHANED` is never taken off but here.
            state.swap(FREE, Ordering::AcqRel);
            // SAFETY: the reference counted for this slot, given up once.
            unsafe { Table::release(table) };
            return;
        }
        // SAFETY: the table is alive (above); this reference is given up
        // below, after the last use of the table.
        unsafe { Table::acquire(table) };
        // AcqRel, as in `free`; the swap sees an `ORPHANED` mark set since.
        let prev = state.swap(FREE, Ordering::AcqRel);
        if prev & ORPHANED != 0 {
            // SAFETY: the owner counted this slot; our own reference keeps
            // the table alive, so this is not the last.
            unsafe { Table::release(table) };
        } else if prev & SLOT_WAITER != 0 {
            Table::assert_alive(table);
            // SAFETY: our reference keeps the table, and the lane in it, alive.
            unsafe { lane.as_ref() }.notifier.notify_all();
        }
        // SAFETY: ours, taken above; the table is not used after this.
        unsafe { Table::release(table) };
    }
}
