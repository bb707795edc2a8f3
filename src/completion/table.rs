//! The completion table of a batcher: the slots of every lane, and the
//! lifetime that tickets share with the batcher (the last one frees it).

use core::ptr::NonNull;

use crate::error::Error;
#[cfg(loom)]
use crate::sync::UnsafeCell;
use crate::sync::{AtomicU64, AtomicUsize, Ordering};
use crate::wait::{Notifier, WaitStrategy};

use super::*;

/// The completion slots of one lane and the notifier for producers waiting
/// for room in that lane (ring slots or completion slots).
pub(crate) struct LaneCompletions<R> {
    pub(super) slots: Box<[CompletionSlot<R>]>,
    pub(super) mask: usize,
    pub(crate) notifier: Notifier,
    /// The table this lane belongs to; set once, when the table is built.
    pub(super) table: NonNull<Table<R>>,
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
    pub(super) lanes: Box<[LaneCompletions<R>]>,
    /// References to the table: one held by its owner (the batcher's state)
    /// until it is dropped, one per slot still held by a ticket when that
    /// happened ([`ORPHANED`]), and one per freer that notifies a waiting
    /// producer after freeing its slot (see [`CompletionSlot::free_marked`]).
    /// Whoever gives up the last frees the table.
    pub(super) refs: AtomicUsize,
    /// Results whose `Drop` panicked (contained) on the drainer.
    pub(super) result_drop_panics: AtomicU64,
    pub(super) wait: WaitStrategy,
    /// Under loom, a tracked allocation: loom fails a model in which the table
    /// is never freed ("Arc leaked").
    #[cfg(loom)]
    pub(super) _leak_probe: crate::sync::Arc<()>,
    /// Under loom, set when the table is freed (see `Table::dealloc`).
    #[cfg(loom)]
    pub(super) freed: UnsafeCell<bool>,
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
    pub(super) unsafe fn acquire(table: NonNull<Table<R>>) {
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
    pub(super) unsafe fn release(table: NonNull<Table<R>>) {
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
    pub(super) unsafe fn dealloc(table: NonNull<Table<R>>) {
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
    pub(super) unsafe fn dealloc(table: NonNull<Table<R>>) {
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
    pub(super) fn assert_alive(table: NonNull<Table<R>>) {
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
    pub(super) fn note_result_drop_panic(table: NonNull<Table<R>>) {
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
    pub(super) table: NonNull<Table<R>>,
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
