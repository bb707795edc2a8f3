//! The bounded multi-producer, single-consumer lane ring.
//!
//! Producers claim sequence numbers by moving the `tail` cursor with one CAS
//! (one CAS for a run of `n` items), write their items into the claimed slots,
//! then publish each slot by storing its stamp. The drainer is the only
//! consumer: it reads a run of published slots and moves the `head` cursor once
//! for the whole run.
//!
//! A producer decides that a slot is free from `head` alone (the drainer moves
//! `head` past a slot only after it has read it), so the drainer never writes a
//! slot. Producers keep a cached copy of `head` and reload it only when the
//! lane looks full.
//!
//! The tail word also carries flags, so that the producer's one CAS tells it
//! everything it needs: whether the lane is closed (shutdown), whether the
//! drainer is parked and must be woken after the item is published, and
//! whether the ring is an evicting one (below).
//!
//! # Owned rings (exclusive producers)
//!
//! A ring with one producer, which owns it ([`Ring::own`]), is claimed with a
//! plain store of the tail word instead of the CAS
//! ([`Ring::try_claim_exclusive`]): with no other producer, nobody else moves
//! the sequence. While the ring is owned the drainer announces its park and
//! the closer closes in a separate flags word, never in the tail word, and
//! the owner reads that word after each claim through a store/load
//! handshake over asymmetric fences (a compiler fence on the owner's side,
//! `membarrier` on the drainer's and closer's rare side).
//!
//! # Evicting rings (`Backpressure::DropOldest`)
//!
//! A ring made by [`Ring::with_eviction`] has a second kind of consumer: a
//! producer that finds the lane full evicts the oldest item to make room.
//! With two consumers, `head` is a claim cursor moved by CAS, and moving it
//! no longer means that the slots below it were read. The protocol:
//!
//! - A consumer (the drainer's [`take_run`](Ring::take_run), or an evicting
//!   producer's [`evict_oldest`](Ring::evict_oldest)) first checks the slot
//!   stamps of the run it wants (published, not taken), then CASes `head` over
//!   the run, and only then moves the items out. The CAS gives each sequence
//!   to one consumer, and no producer can reuse a slot whose item it has not
//!   read (below), so every item is moved out exactly once.
//! - After moving an item out (and reading anything else kept per sequence,
//!   such as its expiry stamp), the consumer stores the slot's *taken* stamp
//!   for that sequence.
//! - A producer's claim is gated on `head` as before, which now only says that
//!   a consumer has claimed the slot's previous sequence; before writing, the
//!   producer waits until the slot shows the previous sequence's taken stamp
//!   (slots start out taken for the lap before the first).

use core::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicUsize, Ordering, UnsafeCell};

mod claim;
mod drain;
mod evict;
mod owned;
mod park;
mod stamp;
mod storage;

pub(crate) use claim::{Claim, ClaimError};
pub(crate) use drain::Run;
pub(crate) use evict::Evicted;
pub(crate) use owned::Claims;
#[cfg(all(loom, test))]
pub(crate) use park::park_drainer;
pub(crate) use park::{ParkPlan, announce_park_all, prepare_park, withdraw_park};
pub(crate) use stamp::{CLOSED, PARKED, SEQ_MASK, STAMP_SKIP, distance, seq_add};

use owned::{NO_FINAL, OwnerWords, fence_failed};
use stamp::*;
use storage::{Slot, SlotCell, Storage};

/// A bounded MPSC ring of `capacity` slots (a power of two).
pub(crate) struct Ring<T> {
    /// Claim cursor and flags, written by producers (CAS) and, to set `PARKED`
    /// or `CLOSED`, by the drainer and the closer (`fetch_or`).
    tail: CachePadded<AtomicUsize>,
    /// Bits 1..: the next sequence the drainer reads, moved only by the
    /// drainer, after it has read every slot below it (on an evicting ring:
    /// the next sequence to consume, moved by CAS by every consumer before
    /// it reads). Bit 0 ([`HEAD_WAITERS`]): a producer sleeps waiting for
    /// room.
    head: CachePadded<AtomicUsize>,
    /// The slots (`Vec`s, not boxes, so that moving the ring keeps the
    /// pointers below valid).
    storage: Storage<T>,
    /// Slot 0's stamp and item in `storage`, and the bytes from one slot's
    /// to the next's: [`slot`](Self::slot) finds a slot of either layout
    /// without matching on it (a match per publish slowed the shared
    /// producer: BENCHMARKS.md, "Instructions per item").
    stamp_base: *const AtomicUsize,
    value_base: *const UnsafeCell<MaybeUninit<T>>,
    stamp_stride: usize,
    value_stride: usize,
    mask: usize,
    /// Producers may evict (see the module notes): consumers claim by CAS and
    /// mark slots taken; producers wait for the mark.
    evicts: bool,
    /// The owner's flags and cursor.
    owner: CachePadded<OwnerWords>,
}

// The ring moves `T` values between threads (producer to drainer), so it is
// `Send` and `Sync` exactly when `T: Send`. Access to each slot's value is
// serialised by the claim/publish/drain protocol: a producer writes a slot
// only after claiming its sequence and seeing `head` past the slot's previous
// lap; the drainer reads it only after an Acquire load of its published stamp.
// The raw base pointers point into the ring's own storage.
// SAFETY: `T: Send`, and slot access is serialised as described above.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: see the `Send` impl; `&Ring` only exposes the protocol operations.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // With `&mut self` no producer or drainer is running; drop the items
        // that were published and never drained.
        let head = self.head_seq();
        let (tail, _) = self.tail();
        let mut seq = head;
        while seq != tail {
            let slot = self.slot(seq);
            let stamp = slot.stamp.load(Ordering::Acquire);
            if publishes(stamp, seq) && stamp & STAMP_SKIP == 0 {
                // SAFETY: published for `seq` and never drained (it is at or
                // above `head`), so the value is initialised and owned here;
                // moved out once.
                let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
                // A panicking `Drop` ends that drop only (and is not counted:
                // the batcher's statistics are gone with it).
                let _ = crate::contain::drop_value(value);
            }
            seq = seq_add(seq, 1);
        }
    }
}

impl<T> Ring<T> {
    /// Creates a ring of `capacity` slots; `capacity` must be a power of two
    /// (validated by the configuration before it gets here).
    pub(crate) fn new(capacity: usize) -> Self {
        debug_assert!(capacity.is_power_of_two());
        let cells = (0..capacity)
            .map(|_| SlotCell {
                stamp: AtomicUsize::new(0),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Self::with_storage(Storage::Interleaved(cells), capacity)
    }

    /// Creates a ring of `capacity` slots laid out for an exclusive
    /// producer ([`Storage::Split`]): its owner publishes through its cursor
    /// as well, and the drainer reads plain items by the cursor.
    pub(crate) fn new_split(capacity: usize) -> Self {
        debug_assert!(capacity.is_power_of_two());
        let stamps = (0..capacity).map(|_| AtomicUsize::new(0)).collect();
        let values = (0..capacity)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect();
        Self::with_storage(Storage::Split { stamps, values }, capacity)
    }

    fn with_storage(storage: Storage<T>, capacity: usize) -> Self {
        let (stamp_base, value_base, stamp_stride, value_stride) = match &storage {
            Storage::Interleaved(cells) => {
                let first = cells.as_ptr();
                // Pointers to the fields of slot 0, without a reference:
                // `addr_of!` on a place inside the vector's allocation.
                // SAFETY: `cells` holds `capacity >= 1` cells, so `first`
                // points to an allocated cell.
                let (stamp, value) = unsafe {
                    (
                        core::ptr::addr_of!((*first).stamp),
                        core::ptr::addr_of!((*first).value),
                    )
                };
                let stride = core::mem::size_of::<SlotCell<T>>();
                (stamp, value, stride, stride)
            }
            Storage::Split { stamps, values } => (
                stamps.as_ptr(),
                values.as_ptr(),
                core::mem::size_of::<AtomicUsize>(),
                core::mem::size_of::<UnsafeCell<MaybeUninit<T>>>(),
            ),
        };
        Self {
            tail: CachePadded::new(AtomicUsize::new(0)),
            head: CachePadded::new(AtomicUsize::new(0)),
            storage,
            stamp_base,
            value_base,
            stamp_stride,
            value_stride,
            mask: capacity - 1,
            evicts: false,
            owner: CachePadded::new(OwnerWords {
                flags: AtomicUsize::new(0),
                published: AtomicUsize::new(0),
                plain_from: AtomicUsize::new(0),
                given_up: AtomicUsize::new(0),
                final_tail: AtomicUsize::new(NO_FINAL),
            }),
        }
    }

    /// Creates an evicting ring (see the module notes): producers may consume
    /// its oldest items with [`evict_oldest`](Self::evict_oldest), and the
    /// drainer must take runs with [`take_run`](Self::take_run).
    pub(crate) fn with_eviction(capacity: usize) -> Self {
        let mut ring = Self::new(capacity);
        ring.evicts = true;
        ring.tail = CachePadded::new(AtomicUsize::new(EVICTS));
        for index in 0..capacity {
            // Every slot starts out free: taken for the lap before the first.
            // Relaxed: the ring is not shared yet.
            ring.slot(index).stamp.store(
                taken_stamp(previous_lap(index, capacity)),
                Ordering::Relaxed,
            );
        }
        ring
    }

    /// Whether the ring is laid out for an exclusive producer
    /// ([`new_split`](Self::new_split)).
    #[inline(always)]
    pub(crate) fn is_split(&self) -> bool {
        matches!(self.storage, Storage::Split { .. })
    }

    /// Whether producers may evict from this ring.
    #[inline(always)]
    pub(crate) fn evicts(&self) -> bool {
        self.evicts
    }

    #[inline(always)]
    pub(crate) fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Bytes of one slot (stamp and item), for the memory report.
    pub(crate) const fn slot_bytes() -> usize {
        // The interleaved layout's (a split ring's slots are no larger).
        core::mem::size_of::<SlotCell<T>>()
    }

    #[inline(always)]
    fn slot(&self, seq: usize) -> Slot<'_, T> {
        let index = seq & self.mask;
        // The bases and strides describe `storage`, which owns its memory
        // for as long as the ring lives and never reallocates.
        // SAFETY: `index < capacity`, so both offsets land on slot `index`.
        unsafe {
            Slot {
                stamp: &*self.stamp_base.byte_add(index * self.stamp_stride),
                value: &*self.value_base.byte_add(index * self.value_stride),
            }
        }
    }

    /// The ring's head: the next sequence to consume (the drainer's copy is
    /// re-read from here after a failure).
    pub(crate) fn head(&self) -> usize {
        self.head_seq()
    }

    /// The drainer's cursor. Acquire pairs with the swap in `finish_run`: the
    /// slots below it have been read.
    #[inline]
    fn head_seq(&self) -> usize {
        self.head.load(Ordering::Acquire) >> HEAD_SHIFT
    }

    /// Current tail word's sequence and flags (on an owned ring the tail
    /// word does not carry `CLOSED`: see [`is_closed`](Self::is_closed)).
    #[inline]
    pub(crate) fn tail(&self) -> (usize, usize) {
        // Acquire: a flush or shutdown reads the tail to learn which sequences
        // were claimed before it; their publication is then awaited by stamp.
        let word = self.tail.load(Ordering::Acquire);
        (word >> SEQ_SHIFT, word & (PARKED | CLOSED))
    }

    /// Items claimed but not yet drained (a snapshot).
    pub(crate) fn depth(&self) -> usize {
        let (tail, _) = self.tail();
        distance(self.head_seq(), tail)
    }

    /// Closes the lane to new claims and returns the final tail sequence.
    ///
    /// AcqRel: the closer (and, through the control flag, the drainer) must
    /// know every claim made before the lane closed. On an owned ring, the
    /// owner's claims are plain stores: after the heavy fence, each is
    /// either seen by the load here or sees `FLAG_CLOSED` and gives its
    /// slots up (see [`try_claim_exclusive`](Self::try_claim_exclusive)).
    ///
    /// The first close publishes the final tail (see
    /// [`claimed`](Self::claimed)); a later one returns it.
    pub(crate) fn close(&self) -> usize {
        let flags = self.owner.flags.fetch_or(FLAG_CLOSED, Ordering::AcqRel);
        if flags & FLAG_CLOSED != 0 {
            return self.final_tail();
        }
        let last = if flags & FLAG_OWNED == 0 {
            self.tail.fetch_or(CLOSED, Ordering::AcqRel) >> SEQ_SHIFT
        } else {
            if !crate::sync::asymmetric::heavy() {
                fence_failed();
            }
            self.tail.load(Ordering::Acquire) >> SEQ_SHIFT
        };
        // Release pairs with the Acquire loads in `final_tail` and `claimed`.
        self.owner.final_tail.store(last, Ordering::Release);
        last
    }

    /// Whether [`close`](Self::close) has run.
    pub(crate) fn is_closed(&self) -> bool {
        // Acquire pairs with the AcqRel `fetch_or` in `close` (the flags word
        // is marked first, and never loses `FLAG_CLOSED`).
        self.owner.flags.load(Ordering::Acquire) & FLAG_CLOSED != 0
    }
}
