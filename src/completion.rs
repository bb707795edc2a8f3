//! Completion slots and tickets: how each item's result gets back to the
//! thread or task that submitted it.
//!
//! Every lane has a table of completion slots. A producer that wants the
//! result takes a free slot of its lane (a CAS from `FREE` to `ARMED`,
//! scanning from its private cursor), claims the item's sequence in the ring,
//! and publishes the slot's index in the item's stamp; it gets a [`Ticket`]
//! naming the slot. The drainer writes the result into the slot and wakes
//! the ticket's waker if one is registered; the ticket takes the result and
//! frees the slot. A ticket may be dropped at any moment: whoever of the two
//! comes second frees the slot.
//!
//! Slots are not tied to sequence numbers, so a ticket held for a long time
//! blocks nobody but the count of free slots: a lane has `result_slots`
//! tickets outstanding at most.
//!
//! One waker per slot serves both a thread blocked in [`Ticket::wait`] (a
//! waker that unparks it) and a task awaiting the ticket.
//!
//! Tickets hold raw pointers into the table instead of a reference count, so a
//! submission pays no shared-counter RMW. The table outlives the batcher: when
//! the batcher's state is dropped, every slot still owned by a ticket is marked
//! `ORPHANED` and counted, and the ticket that frees the last such slot frees
//! the table.

use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::task::Waker;
use std::time::Instant;

use crate::error::Error;
use crate::sync::{AtomicU64, AtomicUsize, Ordering, UnsafeCell, thread};
use crate::wait::{Backoff, Notifier, WaitStrategy};

/// A ticket owns the slot (set by the producer that claimed the sequence).
const ARMED: usize = 1 << 0;
/// The result is written. Set once, by the completer.
const READY: usize = 1 << 1;
/// A waker is stored. Set and cleared only by the ticket, and only while
/// `READY` is clear, so its value when `READY` is set never changes again: the
/// completer uses the waker if and only if `WAKER` was set at that moment.
const WAKER: usize = 1 << 2;
/// The ticket is gone and left the freeing of the slot to the completer.
const RELEASED: usize = 1 << 3;
/// The completer has finished with the waker (set only if it used one).
const DONE: usize = 1 << 4;
/// The batcher is gone: freeing this slot releases one reference to the table.
const ORPHANED: usize = 1 << 5;
/// A producer sleeps waiting for this slot to be freed (set under the lane
/// notifier's lock, only while the slot is held); `free` notifies.
const SLOT_WAITER: usize = 1 << 6;
/// No ticket: the slot may be armed by the next claim of its index.
const FREE: usize = 0;

/// One completion slot.
pub(crate) struct CompletionSlot<R> {
    state: AtomicUsize,
    result: UnsafeCell<MaybeUninit<Result<R, Error>>>,
    /// Empty whenever `WAKER` is clear and the slot is owned by the ticket.
    waker: UnsafeCell<Option<Waker>>,
    /// What the ticket keeps here rather than in itself, so that a ticket is
    /// one pointer (see [`Ticket`]). Written by the producer that armed the
    /// slot (before it makes the ticket), then only by the ticket.
    ticket: UnsafeCell<TicketCell>,
    /// The lane this slot belongs to; set once, when the table is built.
    lane: NonNull<LaneCompletions<R>>,
}

/// The ticket's own state, kept in its slot.
struct TicketCell {
    /// The item's sequence number in its lane.
    seq: u64,
    /// Polls that found no result and yielded instead of registering a
    /// waker (see the `Future` impl of [`Ticket`]).
    yields: u8,
}

impl<R> CompletionSlot<R> {
    /// A free slot; [`TableOwner::new`] sets its lane.
    fn new() -> Self {
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
    fn looks_free(&self) -> bool {
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
    fn try_arm(&self) -> bool {
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
    unsafe fn disarm(&self, lane: &LaneCompletions<R>) {
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
    unsafe fn state_of<'a>(this: NonNull<Self>) -> &'a AtomicUsize {
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
    unsafe fn owners(this: NonNull<Self>) -> (NonNull<LaneCompletions<R>>, NonNull<Table<R>>) {
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
        // arm), so adding it sets it: one `lock xadd` instead of a CAS loop.
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
        let result = unsafe { this.as_ref() }
            .result
            .with(|p| unsafe { (*p).assume_init_read() });
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
    unsafe fn finish(this: NonNull<Self>, state: usize) {
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
    unsafe fn free(this: NonNull<Self>, seen: usize) {
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
    unsafe fn free_marked(this: NonNull<Self>, seen: usize) {
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

/// The completion slots of one lane and the notifier for producers waiting
/// for room in that lane (ring slots or completion slots).
pub(crate) struct LaneCompletions<R> {
    slots: Box<[CompletionSlot<R>]>,
    mask: usize,
    pub(crate) notifier: Notifier,
    /// The table this lane belongs to; set once, when the table is built.
    table: NonNull<Table<R>>,
}

impl<R> LaneCompletions<R> {
    /// Slot `index` (taken modulo the slot count).
    #[inline(always)]
    pub(crate) fn slot(&self, index: usize) -> &CompletionSlot<R> {
        let index = index & self.mask;
        debug_assert!(index < self.slots.len());
        // SAFETY: masked by `len - 1`, and `len` is a power of two.
        unsafe { self.slots.get_unchecked(index) }
    }

    /// Producer side: arms `out.len()` free slots, scanning from `*cursor`
    /// (the producer's private position, moved past the last slot taken), and
    /// writes their indexes to `out`. All or nothing: if fewer are free, the
    /// ones taken are given back and it returns false.
    #[inline]
    pub(crate) fn try_acquire(&self, cursor: &mut usize, out: &mut [usize]) -> bool {
        let len = self.slots.len();
        let mut taken = 0;
        let mut index = *cursor & self.mask;
        let mut scanned = 0;
        while taken < out.len() && scanned < len {
            let slot = self.slot(index);
            if slot.looks_free() && slot.try_arm() {
                out[taken] = index;
                taken += 1;
            }
            index = (index + 1) & self.mask;
            scanned += 1;
        }
        *cursor = index;
        if taken == out.len() {
            return true;
        }
        for &index in &out[..taken] {
            // SAFETY: armed just above by us; nothing was published with it.
            unsafe { self.slot(index).disarm(self) };
        }
        false
    }

    /// Producer side: gives back slots taken with
    /// [`try_acquire`](Self::try_acquire) whose items were refused.
    ///
    /// # Safety
    ///
    /// As for [`CompletionSlot::disarm`], for every index in `indexes`.
    pub(crate) unsafe fn release_unused(&self, indexes: &[usize]) {
        for &index in indexes {
            // SAFETY: the caller's contract.
            unsafe { self.slot(index).disarm(self) };
        }
    }

    /// Under the lane notifier's lock: if every slot is held, flags each (see
    /// [`CompletionSlot::arm_waiter`]) so that the next one freed notifies,
    /// and returns true; false if some slot is free.
    pub(crate) fn arm_waiter(&self) -> bool {
        self.slots.iter().all(CompletionSlot::arm_waiter)
    }

    /// Number of slots.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

/// Every lane's completion slots. Allocated once; see the module docs for how
/// it outlives the batcher.
pub(crate) struct Table<R> {
    lanes: Box<[LaneCompletions<R>]>,
    /// References to the table: one held by its owner (the batcher's state)
    /// until it is dropped, one per slot still held by a ticket when that
    /// happened ([`ORPHANED`]), and one per freer that notifies a waiting
    /// producer after freeing its slot (see [`CompletionSlot::free_marked`]).
    /// Whoever gives up the last frees the table.
    refs: AtomicUsize,
    /// Results whose `Drop` panicked (contained) on the drainer.
    result_drop_panics: AtomicU64,
    wait: WaitStrategy,
    /// Under loom, a tracked allocation: loom fails a model in which the table
    /// is never freed ("Arc leaked").
    #[cfg(loom)]
    _leak_probe: crate::sync::Arc<()>,
    /// Under loom, set when the table is freed (see `Table::dealloc`).
    #[cfg(loom)]
    freed: UnsafeCell<bool>,
}

// SAFETY: the table moves `R` values from the drainer to ticket holders, so it
// is shareable exactly when `R: Send`. Each slot's cells are accessed under the
// state protocol above: one writer at a time, handed over by AcqRel RMWs.
unsafe impl<R: Send> Sync for Table<R> {}
// SAFETY: as for `Sync`.
unsafe impl<R: Send> Send for Table<R> {}
// SAFETY: `LaneCompletions` is reached only through a `Table`; same reasoning.
unsafe impl<R: Send> Sync for LaneCompletions<R> {}
// SAFETY: as for `Sync`.
unsafe impl<R: Send> Send for LaneCompletions<R> {}

impl<R> Table<R> {
    /// Takes one more reference to the table.
    ///
    /// # Safety
    ///
    /// The table is alive: the caller holds a reference, or a slot that the
    /// owner's drop has not yet scanned or has counted a reference for.
    unsafe fn acquire(table: NonNull<Table<R>>) {
        // Relaxed: a new reference is made from one held (as `Arc::clone`);
        // the decrements order the accesses.
        // SAFETY: the caller's contract; a reference to the atomic alone.
        unsafe { &(*table.as_ptr()).refs }.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives up one reference, and frees the table if it was the last.
    ///
    /// # Safety
    ///
    /// The caller holds one reference and gives it up; `table` is not used by
    /// the caller afterwards.
    unsafe fn release(table: NonNull<Table<R>>) {
        // Release: our accesses to the table come before the free; the
        // Acquire fence of the last one makes every holder's come before it.
        // SAFETY: the table is alive while the caller's reference is counted;
        // the reference made here is to the atomic alone.
        if unsafe { &(*table.as_ptr()).refs }.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        crate::sync::fence(Ordering::Acquire);
        // SAFETY: no references remain (above).
        unsafe { Self::dealloc(table) };
    }

    /// Frees the table (allocated by `Box::new` in [`TableOwner::new`]).
    ///
    /// # Safety
    ///
    /// The last reference was just given up.
    #[cfg(not(loom))]
    unsafe fn dealloc(table: NonNull<Table<R>>) {
        // SAFETY: the caller's contract.
        drop(unsafe { Box::from_raw(table.as_ptr()) });
    }

    /// Under loom, freeing marks the table freed (a write loom's cell
    /// tracking orders against every later [`assert_alive`](Self::assert_alive))
    /// and defers the real free to the end of the model's execution, so that
    /// a use after free is reported by the model instead of being one.
    ///
    /// # Safety
    ///
    /// As above.
    #[cfg(loom)]
    unsafe fn dealloc(table: NonNull<Table<R>>) {
        // SAFETY: the caller's contract: nobody else uses the table now.
        unsafe { table.as_ref() }
            .freed
            .with_mut(|freed| unsafe { *freed = true });
        /// Drops a table given to the graveyard.
        unsafe fn bury<R>(address: usize) {
            // SAFETY: `address` is a table that was freed in the model.
            drop(unsafe { Box::from_raw(address as *mut Table<R>) });
        }
        crate::sync::graveyard::bury(table.as_ptr() as usize, bury::<R>);
    }

    /// Under loom, fails the model if `table` was freed (or if its free is
    /// not ordered before this access); nothing otherwise.
    #[inline(always)]
    fn assert_alive(table: NonNull<Table<R>>) {
        #[cfg(loom)]
        // SAFETY: under loom a freed table's memory stays valid until the
        // execution ends (see `dealloc`).
        unsafe { table.as_ref() }.freed.with(|freed| {
            // SAFETY: a read of the cell, ordered by loom's tracking.
            let freed = unsafe { *freed };
            assert!(!freed, "the completion table was used after it was freed");
        });
        #[cfg(not(loom))]
        let _ = table;
    }

    /// Counts a result whose `Drop` panicked (contained) after its ticket
    /// was gone.
    fn note_result_drop_panic(table: NonNull<Table<R>>) {
        // Relaxed: a statistic.
        // SAFETY: called while the table is alive (see `complete`); a
        // reference to the atomic alone.
        unsafe { &(*table.as_ptr()).result_drop_panics }.fetch_add(1, Ordering::Relaxed);
    }

    /// Results whose `Drop` panicked on the drainer (a ticket dropped before
    /// its result came); each was contained.
    pub(crate) fn result_drop_panics(&self) -> u64 {
        // Relaxed: a statistic.
        self.result_drop_panics.load(Ordering::Relaxed)
    }

    /// Bytes of one completion slot, for the memory report.
    pub(crate) const fn slot_bytes() -> usize {
        core::mem::size_of::<CompletionSlot<R>>()
    }
}

/// The batcher's ownership of the [`Table`]. Dropping it completes whatever
/// the drainer could not (with [`Error::Closed`]) and hands the table over to
/// the tickets still holding slots.
pub(crate) struct TableOwner<R> {
    table: NonNull<Table<R>>,
}

// SAFETY: a `TableOwner` only gives `&Table`, which is `Send + Sync` for `R: Send`.
unsafe impl<R: Send> Send for TableOwner<R> {}
// SAFETY: as for `Send`.
unsafe impl<R: Send> Sync for TableOwner<R> {}

impl<R> TableOwner<R> {
    /// A table of `lanes` lanes of `slots` slots each (a power of two).
    pub(crate) fn new(lanes: usize, slots: usize, wait: WaitStrategy) -> Self {
        debug_assert!(slots.is_power_of_two());
        let lanes = (0..lanes)
            .map(|_| LaneCompletions {
                slots: (0..slots).map(|_| CompletionSlot::new()).collect(),
                mask: slots - 1,
                notifier: Notifier::new(),
                table: NonNull::dangling(),
            })
            .collect();
        let table = NonNull::from(Box::leak(Box::new(Table {
            lanes,
            // The owner's reference.
            refs: AtomicUsize::new(1),
            result_drop_panics: AtomicU64::new(0),
            wait,
            #[cfg(loom)]
            _leak_probe: crate::sync::Arc::new(()),
            #[cfg(loom)]
            freed: UnsafeCell::new(false),
        })));
        // The back pointers from slots to lanes and from lanes to the table,
        // which let a ticket be one pointer. The lanes and slots live in
        // boxed slices that never move, and are only read through them.
        // SAFETY: just allocated; this is the only pointer to the table.
        for lane in unsafe { &mut *table.as_ptr() }.lanes.iter_mut() {
            lane.table = table;
            let lane_ptr = NonNull::from(&*lane);
            for slot in lane.slots.iter_mut() {
                slot.lane = lane_ptr;
            }
        }
        Self { table }
    }

    #[inline(always)]
    pub(crate) fn get(&self) -> &Table<R> {
        // SAFETY: the table lives at least as long as its owner (it is freed
        // only through orphan references, which exist after `drop`).
        unsafe { self.table.as_ref() }
    }

    /// Lane `index`'s completions.
    #[inline(always)]
    pub(crate) fn lane(&self, index: usize) -> &LaneCompletions<R> {
        let lanes = &self.get().lanes;
        debug_assert!(index < lanes.len());
        // SAFETY: lane indexes are validated when a producer is bound.
        unsafe { lanes.get_unchecked(index) }
    }

    /// Completes the armed slot `index` of lane `lane` with `result` (the
    /// drainer's side; see [`CompletionSlot::complete`]).
    ///
    /// # Safety
    ///
    /// The slot is armed, and this is the one completion of its sequence.
    #[inline(always)]
    pub(crate) unsafe fn complete(&self, lane: usize, index: usize, result: Result<R, Error>) {
        let slot = NonNull::from(self.lane(lane).slot(index));
        // SAFETY: the caller's contract; this owner keeps the table alive
        // for the whole call.
        unsafe { CompletionSlot::complete(slot, result) };
    }

    /// Drops the result of an item nobody waits for (pushed without a
    /// ticket), contained: a panicking `Drop` is counted as for a result
    /// whose ticket left.
    #[inline(always)]
    pub(crate) fn discard(&self, result: Result<R, Error>) {
        // Split, so that an `Ok` of a type without `Drop` costs nothing.
        let dropped = match result {
            Ok(value) => crate::contain::drop_value(value),
            Err(error) => crate::contain::drop_value(error),
        };
        if !dropped {
            Table::note_result_drop_panic(self.table);
        }
    }

    /// Makes a ticket for the armed slot `index` of lane `lane`, whose item
    /// has sequence `seq`.
    ///
    /// # Safety
    ///
    /// The caller armed that slot ([`LaneCompletions::try_acquire`]) and makes
    /// one ticket for it.
    #[inline(always)]
    pub(crate) unsafe fn ticket(&self, lane: usize, index: usize, seq: usize) -> Ticket<R> {
        let slot = self.lane(lane).slot(index);
        slot.ticket.with_mut(|cell| {
            // SAFETY: the caller armed the slot, so its ticket cell is ours
            // until the ticket made here takes it over.
            unsafe {
                *cell = TicketCell {
                    seq: seq as u64,
                    yields: 0,
                }
            }
        });
        Ticket {
            inner: Inner::Pending(SlotRef(NonNull::from(slot))),
        }
    }
}

impl<R> Drop for TableOwner<R> {
    fn drop(&mut self) {
        // The owner's reference, held until the scan is done, keeps the
        // table alive under the tickets that free their slots meanwhile.
        let table = self.get();
        for lane in table.lanes.iter() {
            for slot in lane.slots.iter() {
                let state = slot.state.load(Ordering::Acquire);
                if state & ARMED != 0 && state & READY == 0 {
                    // No drainer is left to complete this item.
                    // SAFETY: armed and never completed; we are the only
                    // completer, and our reference keeps the table alive.
                    unsafe { CompletionSlot::complete(NonNull::from(slot), Err(Error::Closed)) };
                }
                loop {
                    let state = slot.state.load(Ordering::Acquire);
                    if state == FREE {
                        break;
                    }
                    // Count first, so that the ticket's free can never give up
                    // a reference that was not counted.
                    // SAFETY: we hold the owner's reference.
                    unsafe { Table::acquire(self.table) };
                    // AcqRel: the ticket's `free` swap reads this mark.
                    match slot.state.compare_exchange(
                        state,
                        state | ORPHANED,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => break,
                        Err(_) => {
                            // Undoes our own increment above (not the last:
                            // the owner's reference is still held).
                            // SAFETY: the reference taken just above.
                            unsafe { Table::release(self.table) };
                        }
                    }
                }
            }
        }
        // SAFETY: gives up the owner's reference; the table is not used by
        // us afterwards.
        unsafe { Table::release(self.table) };
    }
}

/// The address of one armed completion slot (its lane and table are found
/// through the slot's back pointers).
struct SlotRef<R>(NonNull<CompletionSlot<R>>);

impl<R> SlotRef<R> {
    /// The slot, its lane and the table, borrowed for one operation.
    #[inline(always)]
    fn parts(&self) -> (&CompletionSlot<R>, &LaneCompletions<R>, &Table<R>) {
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
    fn with_cell<T>(&self, f: impl FnOnce(&mut TicketCell) -> T) -> T {
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
    fn seq(&self) -> u64 {
        // SAFETY: as in `with_cell`; a shared read.
        self.parts().0.ticket.with(|cell| unsafe { (*cell).seq })
    }
}

enum Inner<R> {
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
    inner: Inner<R>,
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
    fn take_ready(&mut self) -> Option<Result<R, Error>> {
        if let Inner::Ready(_) = self.inner {
            if let Inner::Ready(result) = core::mem::replace(&mut self.inner, Inner::Taken) {
                return Some(result);
            }
        }
        None
    }

    /// [`wait`](Self::wait) for a result still to come.
    #[inline(never)]
    fn wait_pending(mut self) -> Result<R, Error> {
        match self.wait_until(None) {
            Some(result) => result,
            None => unreachable!("an untimed wait returns only with a result"),
        }
    }

    /// Blocks for at most `timeout`; `None` if the result is not there by then
    /// (the ticket stays valid: wait again or drop it).
    pub fn wait_timeout(&mut self, timeout: std::time::Duration) -> Option<Result<R, Error>> {
        let deadline = Instant::now().checked_add(timeout);
        match deadline {
            Some(deadline) => self.wait_until(Some(deadline)),
            None => self.wait_until(None),
        }
    }

    /// Blocks until `deadline` at the latest; see [`wait_timeout`](Self::wait_timeout).
    pub fn wait_deadline(&mut self, deadline: Instant) -> Option<Result<R, Error>> {
        self.wait_until(Some(deadline))
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> Option<Result<R, Error>> {
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
    fn poll_slot(
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
const TASK_YIELDS: u8 = 64;

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
fn with_thread_waker<T>(f: impl FnOnce(&Waker) -> T) -> T {
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
fn with_thread_waker<T>(f: impl FnOnce(&Waker) -> T) -> T {
    f(&thread_waker())
}

pub(crate) fn thread_waker() -> Waker {
    struct Unparker(thread::Thread);
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
