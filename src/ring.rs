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

/// Tail word bit 0: the drainer is parked (or about to park) and the producer
/// whose CAS clears this bit must unpark it after publishing.
pub(crate) const PARKED: usize = 0b01;
/// Tail word bit 1: the lane accepts no more claims (set once, at shutdown).
pub(crate) const CLOSED: usize = 0b10;
/// Tail word bit 2: the ring is an evicting one (set when it is made, never
/// changed). Producers test it with `CLOSED` in one branch, so that plain
/// rings pay nothing for it.
const EVICTS: usize = 0b100;
/// Tail word bits 3..: the next sequence number to claim.
const SEQ_SHIFT: u32 = 3;

/// Flags word bit 0: the drainer announced a park (on an owned ring, only
/// here; on a shared one, also as `PARKED` in the tail word).
const FLAG_PARKED: usize = 0b001;
/// Flags word bit 1: the lane is closed (on a shared ring, also as `CLOSED`
/// in the tail word).
const FLAG_CLOSED: usize = 0b010;
/// Flags word bit 2: an exclusive producer owns the ring and claims with
/// plain stores; the drainer and the closer leave the tail word alone.
const FLAG_OWNED: usize = 0b100;

/// Head word bit 0: a producer waits for room and must be notified when the
/// drainer next moves the head.
const HEAD_WAITERS: usize = 0b1;
const HEAD_SHIFT: u32 = 1;

/// Sequence numbers live in 61 bits (the tail word's width minus its flags)
/// and wrap modulo 2^61; every comparison goes through [`distance`].
pub(crate) const SEQ_MASK: usize = usize::MAX >> SEQ_SHIFT;

/// Stamp bit 0: the item carries a ticket (its submitter wants the result);
/// bits 34.. then hold the index of the completion slot it armed.
pub(crate) const STAMP_TICKET: usize = 0b01;
/// Stamp bit 1: the slot was claimed but holds no item (a slice claim whose
/// producer panicked while filling it); the drainer steps over it.
pub(crate) const STAMP_SKIP: usize = 0b10;
/// Both kind bits (a combination no producer publishes): on an evicting ring,
/// a consumer has moved the sequence's item out and the slot is free for the
/// next lap. Having the skip bit set, it never reads as an item.
const STAMP_TAKEN: usize = STAMP_TICKET | STAMP_SKIP;
/// Stamp bits 2..34: the low 32 bits of `seq + 1` for the sequence the slot
/// publishes. A slot's previous stamp is always from exactly one lap earlier
/// (`seq - capacity`, capacity at most 2^30), so 32 bits tell the two apart.
const STAMP_SHIFT: u32 = 2;
const STAMP_SEQ_BITS: u32 = 32;
const STAMP_SEQ_MASK: usize = ((1 << STAMP_SEQ_BITS) - 1) << STAMP_SHIFT;
/// Stamp bits 34..64: the completion slot index of a ticketed item (below
/// [`MAX_CAPACITY`](crate::MAX_CAPACITY) = 2^30, so it fits in 30 bits).
const STAMP_SLOT_SHIFT: u32 = STAMP_SHIFT + STAMP_SEQ_BITS;

#[cfg(not(target_pointer_width = "64"))]
compile_error!("ringbatch packs its slot stamps into 64-bit words");

/// `b - a` in sequence space.
#[inline(always)]
pub(crate) fn distance(a: usize, b: usize) -> usize {
    b.wrapping_sub(a) & SEQ_MASK
}

/// `seq - capacity` in sequence space: the slot's previous lap.
#[inline(always)]
fn previous_lap(seq: usize, capacity: usize) -> usize {
    seq.wrapping_sub(capacity) & SEQ_MASK
}

/// `seq + n` in sequence space.
#[inline(always)]
pub(crate) fn seq_add(seq: usize, n: usize) -> usize {
    seq.wrapping_add(n) & SEQ_MASK
}

/// The sequence part of the stamp that publishes sequence `seq`: `seq + 1`,
/// so that the all-zero initial stamp never reads as published for sequence
/// 0, and a stamp left from the previous lap (`seq - capacity + 1`) never
/// matches either.
#[inline(always)]
fn stamp_for(seq: usize) -> usize {
    (seq.wrapping_add(1) << STAMP_SHIFT) & STAMP_SEQ_MASK
}

/// Whether `stamp` publishes sequence `seq`.
#[inline(always)]
fn publishes(stamp: usize, seq: usize) -> bool {
    stamp & STAMP_SEQ_MASK == stamp_for(seq)
}

/// Whether `stamp` publishes sequence `seq` and its slot has not been taken
/// yet (on an evicting ring a taken stamp keeps the sequence's number).
#[inline(always)]
fn holds(stamp: usize, seq: usize) -> bool {
    publishes(stamp, seq) && stamp & STAMP_TAKEN != STAMP_TAKEN
}

/// The stamp a consumer of an evicting ring leaves in the slot of `seq` once
/// it has moved the item out.
#[inline(always)]
fn taken_stamp(seq: usize) -> usize {
    stamp_for(seq) | STAMP_TAKEN
}

/// A successful claim of `n` consecutive sequence numbers starting at `seq`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim {
    pub(crate) seq: usize,
    /// The drainer had announced that it parks: the claimer must unpark it
    /// once its items are published.
    pub(crate) wake_drainer: bool,
}

/// Why a claim failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// Not enough free slots.
    Full,
    /// The lane is closed.
    Closed,
}

/// A run of sequences `start..end` the drainer took from a ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    /// The first sequence taken (the head the run started at: on an evicting
    /// ring, producers may have moved the head past the drainer's copy).
    pub(crate) start: usize,
    /// The ring's head after the run: the drainer's new copy.
    pub(crate) end: usize,
    /// A producer waits for room: notify the lane's notifier.
    pub(crate) notify: bool,
}

/// What [`Ring::evict_oldest`] did.
#[derive(Debug)]
pub(crate) enum Evicted<T> {
    /// Moved the oldest item out: the item, and its completion slot index if
    /// it carries a ticket.
    Item(T, Option<usize>),
    /// Stepped over a slot published empty (room made, nothing dropped).
    Skip,
    /// Nothing evicted: the claim has room now, or the lane is closed.
    Room,
    /// Nothing evicted: the oldest slot is claimed but not yet published, or
    /// another consumer moved the head first. Retry after a pause.
    Busy,
}

/// One slot: the stamp says which sequence (if any) it currently publishes.
/// Where the two live depends on the ring's [`Storage`].
struct Slot<'a, T> {
    stamp: &'a AtomicUsize,
    value: &'a UnsafeCell<MaybeUninit<T>>,
}

/// A slot of an interleaved ring: its stamp beside its item.
struct Cell<T> {
    stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// How a ring lays out its slots.
enum Storage<T> {
    /// Each stamp beside its item: a producer's two stores go to one cache
    /// line, and a drainer that reads an item as soon as it is published
    /// (and so pulls the line the producer is writing) moves one line per
    /// item, not two. Shared rings.
    Interleaved(Vec<Cell<T>>),
    /// Stamps and items in two arrays. The plain items an owner publishes
    /// through its cursor are read without their stamps, so the drainer
    /// pulls only the lines of the items: eight `u64` items a line, where
    /// interleaved stamps make it four. Rings laid out for exclusive
    /// producers ([`Ring::new_split`]).
    Split {
        stamps: Vec<AtomicUsize>,
        values: Vec<UnsafeCell<MaybeUninit<T>>>,
    },
}

/// Unchecked access to the slots of one [`Storage`], for the drain loops
/// (one loop per layout, chosen once per run).
trait Cells<'a, T: 'a>: Copy {
    /// The stamp and item of slot `index`.
    ///
    /// # Safety
    ///
    /// `index` is below the ring's capacity.
    unsafe fn slot(self, index: usize) -> Slot<'a, T>;
}

impl<'a, T: 'a> Cells<'a, T> for &'a [Cell<T>] {
    #[inline(always)]
    unsafe fn slot(self, index: usize) -> Slot<'a, T> {
        debug_assert!(index < self.len());
        // SAFETY: the caller's contract; the array holds `capacity` cells.
        let cell = unsafe { self.get_unchecked(index) };
        Slot {
            stamp: &cell.stamp,
            value: &cell.value,
        }
    }
}

/// The two arrays of a [`Storage::Split`] ring.
struct SplitCells<'a, T> {
    stamps: &'a [AtomicUsize],
    values: &'a [UnsafeCell<MaybeUninit<T>>],
}

impl<T> Clone for SplitCells<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SplitCells<'_, T> {}

impl<'a, T: 'a> Cells<'a, T> for SplitCells<'a, T> {
    #[inline(always)]
    unsafe fn slot(self, index: usize) -> Slot<'a, T> {
        debug_assert!(index < self.stamps.len() && index < self.values.len());
        // SAFETY: the caller's contract; both arrays hold `capacity` slots.
        unsafe {
            Slot {
                stamp: self.stamps.get_unchecked(index),
                value: self.values.get_unchecked(index),
            }
        }
    }
}

/// What an exclusive producer (the ring's owner) writes and reads besides
/// the slots, on a cache line of its own: the flags it reads after each
/// claim and the cursor it publishes with.
struct OwnerWords {
    /// [`FLAG_PARKED`], [`FLAG_CLOSED`], [`FLAG_OWNED`]: what an exclusive
    /// producer reads after its claim (see
    /// [`Ring::try_claim_exclusive`]). Written on the park, close and
    /// ownership paths only.
    flags: AtomicUsize,
    /// The owner's publication cursor: every sequence below it is published.
    /// Moved by the owner after each item it publishes (see
    /// [`Ring::publish`]) and set by [`Ring::own`]; it keeps its value after
    /// the ring is disowned, a fact about sequences that stays true.
    published: AtomicUsize,
    /// The sequences from here up to `published` hold plain items (no
    /// ticket, not skipped): the drainer reads them without their stamps.
    /// Moved past each ticketed or skipped item the owner publishes, and set
    /// by [`Ring::own`] to the first sequence the owner claims.
    plain_from: AtomicUsize,
    /// Sequences an owner claimed and gave up because the lane had closed
    /// although the close counted them (published empty; see
    /// [`Ring::given_up`]).
    given_up: AtomicUsize,
    /// The final tail found by the first [`close`](Ring::close), or
    /// [`NO_FINAL`] until then. On an owned ring a claim the close did not
    /// count ends above it, and the claim cursor (the tail word) counts it
    /// too until the owner sees the close; [`Ring::claimed`] stops here.
    final_tail: AtomicUsize,
}

/// [`OwnerWords::final_tail`] of a ring not yet closed (no sequence is this
/// large).
const NO_FINAL: usize = usize::MAX;

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
    /// without matching on it (a match per publish cost the shared
    /// producer about 7 % of its rate).
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

impl<T> Ring<T> {
    /// Creates a ring of `capacity` slots; `capacity` must be a power of two
    /// (validated by the configuration before it gets here).
    pub(crate) fn new(capacity: usize) -> Self {
        debug_assert!(capacity.is_power_of_two());
        let cells = (0..capacity)
            .map(|_| Cell {
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
                let stride = core::mem::size_of::<Cell<T>>();
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
        core::mem::size_of::<Cell<T>>()
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

    /// Claims `n` consecutive sequence numbers (`1 <= n <= capacity`).
    ///
    /// `cached_head` is the caller's private copy of `head`; it is reloaded
    /// only when the lane looks full.
    #[inline]
    pub(crate) fn try_claim(&self, n: usize, cached_head: &mut usize) -> Result<Claim, ClaimError> {
        debug_assert!(n >= 1 && n <= self.capacity());
        let room = self.capacity() - n;
        let mut word = self.tail.load(Ordering::Relaxed);
        loop {
            if word & (CLOSED | EVICTS) != 0 {
                if word & CLOSED != 0 {
                    return Err(ClaimError::Closed);
                }
                return self.try_claim_evicting(n, cached_head);
            }
            let seq = word >> SEQ_SHIFT;
            if distance(*cached_head, seq) > room {
                *cached_head = self.head_seq();
                if distance(*cached_head, seq) > room {
                    return Err(ClaimError::Full);
                }
            }
            // Relaxed is enough: the RMW's atomicity gives each sequence to one
            // producer, slot reuse is ordered by the Acquire load of `head`
            // above, and the `PARKED` hand-off only depends on the tail word's
            // modification order (the drainer's `fetch_or` either sees our
            // claim or we see its flag).
            match self.tail.compare_exchange_weak(
                word,
                seq_add(seq, n) << SEQ_SHIFT,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(Claim {
                        seq,
                        wake_drainer: word & PARKED != 0,
                    });
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// [`try_claim`](Self::try_claim) for the owner of this ring (an
    /// exclusive producer): the claim is a plain store of the tail word, not
    /// a CAS.
    ///
    /// While the ring is owned ([`own`](Self::own)), nobody else writes the
    /// tail word: the drainer announces its park and the closer closes in
    /// the flags word only. The two sides meet in a store/load handshake
    /// over asymmetric fences: the owner stores the tail, runs the light
    /// fence and loads the flags; the drainer (or closer) sets its flag,
    /// runs the heavy fence and loads the tail. At least one sees the other:
    ///
    /// - a drainer about to park sees the claim and stays awake, or the
    ///   owner sees `FLAG_PARKED` and wakes it (`wake_drainer`);
    /// - a closer counts the claim in the final tail, or the owner sees
    ///   `FLAG_CLOSED`: it marks the tail word closed, publishes its slots as
    ///   empty (the drainer and the ring's drop step over them) and returns
    ///   [`ClaimError::Closed`].
    ///
    /// A closed or evicting tail word takes the CAS path, which refuses or
    /// evicts. A `PARKED` left in the tail word from before the ring was
    /// owned is taken off by the store, and the owner wakes the drainer.
    ///
    /// A claim refused this way has used up its `n` sequence numbers: they
    /// are counted in [`given_up`](Self::given_up).
    ///
    /// # Safety
    ///
    /// The caller owns the ring: [`own`](Self::own) accepted it, and no other
    /// thread claims on it until [`disown`](Self::disown).
    #[inline(always)]
    pub(crate) unsafe fn try_claim_exclusive(
        &self,
        n: usize,
        cached_head: &mut usize,
    ) -> Result<Claim, ClaimError> {
        debug_assert!(n >= 1 && n <= self.capacity());
        // Relaxed: while the ring is owned, the owner is the only writer of
        // the word, but for a `PARKED` announced before (see `own`).
        let word = self.tail.load(Ordering::Relaxed);
        if word & (CLOSED | EVICTS | PARKED) != 0 {
            // SAFETY: the caller's contract.
            return unsafe { self.claim_exclusive_flagged(word, n, cached_head) };
        }
        // SAFETY: the caller's contract; `word` is the current tail word.
        unsafe { self.claim_exclusive_at(word >> SEQ_SHIFT, n, cached_head, false) }
    }

    /// [`try_claim_exclusive`](Self::try_claim_exclusive) from sequence
    /// `seq`, the current tail; `stale_park`: the tail word also carries a
    /// `PARKED` announced before the ring was owned, which the store takes
    /// off (so the owner wakes the drainer).
    ///
    /// # Safety
    ///
    /// As for `try_claim_exclusive`, and `seq` is the tail's sequence.
    #[inline(always)]
    unsafe fn claim_exclusive_at(
        &self,
        seq: usize,
        n: usize,
        cached_head: &mut usize,
        stale_park: bool,
    ) -> Result<Claim, ClaimError> {
        if distance(*cached_head, seq) > self.capacity() - n {
            *cached_head = self.head_seq();
            if distance(*cached_head, seq) > self.capacity() - n {
                return Err(self.full_or_closed());
            }
        }
        // Relaxed store, light fence, Relaxed load: the owner's half of the
        // handshake with `announce_park_all` and `close` (heavy fence).
        self.tail
            .store(seq_add(seq, n) << SEQ_SHIFT, Ordering::Relaxed);
        crate::sync::asymmetric::light();
        let flags = self.owner.flags.load(Ordering::Relaxed);
        if flags & (FLAG_PARKED | FLAG_CLOSED) == 0 && !stale_park {
            return Ok(Claim {
                seq,
                wake_drainer: false,
            });
        }
        // SAFETY: we claimed `seq..seq + n` just above.
        unsafe { self.exclusive_flags(seq, n, flags, stale_park) }
    }

    /// An owner's claim on a tail word with a flag set: closed or evicting
    /// (the CAS path, which refuses or evicts), or a stale `PARKED`.
    ///
    /// # Safety
    ///
    /// As for [`try_claim_exclusive`](Self::try_claim_exclusive); `word`
    /// is the current tail word.
    #[cold]
    #[inline(never)]
    unsafe fn claim_exclusive_flagged(
        &self,
        word: usize,
        n: usize,
        cached_head: &mut usize,
    ) -> Result<Claim, ClaimError> {
        if word & (CLOSED | EVICTS) != 0 {
            return self.try_claim(n, cached_head);
        }
        // SAFETY: the caller's contract.
        unsafe { self.claim_exclusive_at(word >> SEQ_SHIFT, n, cached_head, true) }
    }

    /// An owner's claim found no room: [`ClaimError::Closed`] if the lane is
    /// closed (the tail word of an owned ring does not say so), else `Full`.
    #[cold]
    fn full_or_closed(&self) -> ClaimError {
        // Acquire pairs with the AcqRel `fetch_or` in `close`.
        if self.owner.flags.load(Ordering::Acquire) & FLAG_CLOSED != 0 {
            ClaimError::Closed
        } else {
            ClaimError::Full
        }
    }

    /// What an owner's claim saw: a close, or a park to take over (in the
    /// flags word, or `stale_park`: a `PARKED` announced in the tail word
    /// before the ring was owned, which the claim's store took off).
    ///
    /// # Safety
    ///
    /// The caller owns the ring, claimed `seq..seq + n` and has published
    /// none of them.
    #[cold]
    #[inline(never)]
    unsafe fn exclusive_flags(
        &self,
        seq: usize,
        n: usize,
        flags: usize,
        stale_park: bool,
    ) -> Result<Claim, ClaimError> {
        if flags & FLAG_CLOSED != 0 {
            // Later claims see `CLOSED` and take the CAS path, which refuses.
            self.tail.fetch_or(CLOSED, Ordering::AcqRel);
            if distance(seq, self.final_tail()) >= n {
                // The close counted the claim (the final tail is above it),
                // and the drainer's final drain waits for these slots.
                // Counted before they are published as empty: the drain
                // reads their stamps (Acquire, pairing with the Release
                // stamp stores of `publish_skip`), so once it has stepped
                // over them the count includes them, and statistics taken
                // after the shutdown do not count them as accepted items.
                // Relaxed: ordered by those stamp stores. (A claim the close
                // did not count lies above the final tail, where
                // [`claimed`](Self::claimed) stops, and is not counted.)
                self.owner.given_up.fetch_add(n, Ordering::Relaxed);
            }
            for i in 0..n {
                // SAFETY: claimed by the caller, published once, as empty.
                unsafe { self.publish_skip(seq_add(seq, i), true) };
            }
            return Err(ClaimError::Closed);
        }
        // Whoever clears the flag wakes the drainer (it may also be cleared
        // by the drainer withdrawing its announcement). Relaxed: the wake-up
        // itself orders what the drainer sees.
        let parked = flags & FLAG_PARKED != 0
            && self.owner.flags.fetch_and(!FLAG_PARKED, Ordering::Relaxed) & FLAG_PARKED != 0;
        Ok(Claim {
            seq,
            wake_drainer: parked || stale_park,
        })
    }

    /// Sequences below the final tail that an owner claimed and gave up
    /// because the lane had closed: [`claimed`](Self::claimed) counts them,
    /// but they carry no item. Exact once the drainer has stepped over the
    /// slots up to the final tail.
    pub(crate) fn given_up(&self) -> usize {
        // Relaxed: a statistic; the count is made before the empty slots are
        // published (see `exclusive_flags`).
        self.owner.given_up.load(Ordering::Relaxed)
    }

    /// The final tail, once [`close`](Self::close) has found it; waits for
    /// it (the closer publishes it right after its heavy fence) when the
    /// flags already say closed.
    fn final_tail(&self) -> usize {
        loop {
            // Acquire pairs with the Release store in `close`.
            let tail = self.owner.final_tail.load(Ordering::Acquire);
            if tail != NO_FINAL {
                return tail;
            }
            crate::sync::thread::yield_now();
        }
    }

    /// The claim cursor for the statistics: every sequence below it was
    /// claimed and either accepted or given up (see
    /// [`given_up`](Self::given_up)). Once the ring is closed, the final
    /// tail: a claim above it was refused, even while the tail word still
    /// counts it.
    pub(crate) fn claimed(&self) -> usize {
        let (tail, _) = self.tail();
        // Acquire pairs with the Release store in `close`.
        let last = self.owner.final_tail.load(Ordering::Acquire);
        if last != NO_FINAL && distance(last, tail) <= self.capacity() {
            // Closed, and the tail word is at or above the final tail (an
            // owner's refused claim may still be counted there).
            last
        } else {
            tail
        }
    }

    /// Marks the ring owned by an exclusive producer, which may then claim
    /// with [`try_claim_exclusive`](Self::try_claim_exclusive). Returns
    /// false (marking nothing) on an evicting ring, whose producers also
    /// consume, or on a closed one.
    ///
    /// The caller then wakes the drainer (before its first claim): a park
    /// announced without seeing the mark is in the tail word, which the
    /// owner's stores overwrite. The wake-up ends that park, and the
    /// drainer's next announcement, made after the wake-up, sees the mark.
    /// (Announcements made by submitters' inline turns are made under the
    /// drainer's lock, so they too come before the drainer's next one, or
    /// after it and see the mark.)
    pub(crate) fn own(&self) -> bool {
        if self.evicts {
            return false;
        }
        // The owner's cursor starts at the tail: every sequence below it was
        // claimed by a shared producer that has left the ring, so it is
        // published (by stamp), and none from here on is plain yet. Set
        // before the mark, so that a drainer that sees the mark finds the
        // cursor at or past the tail. Acquire: as for `tail`; Relaxed and
        // Release as in `advance_cursor`.
        let start = self.tail.load(Ordering::Acquire) >> SEQ_SHIFT;
        self.owner.plain_from.store(start, Ordering::Relaxed);
        self.owner.published.store(start, Ordering::Release);
        // AcqRel: the flags word's RMWs order ownership, parks and the close.
        let prev = self.owner.flags.fetch_or(FLAG_OWNED, Ordering::AcqRel);
        if prev & FLAG_CLOSED != 0 {
            self.disown();
            return false;
        }
        true
    }

    /// Ends the ownership taken by [`own`](Self::own): the tail word is the
    /// shared producers' again. Returns whether a park was announced (in
    /// the flags word only, which shared producers do not read): the caller
    /// then wakes the drainer, whose next announcement goes to the tail word.
    /// If the lane was closed while owned, marks the tail word closed.
    pub(crate) fn disown(&self) -> bool {
        // AcqRel, as in `own`.
        let prev = self.owner.flags.fetch_and(!FLAG_OWNED, Ordering::AcqRel);
        if prev & FLAG_CLOSED != 0 {
            self.tail.fetch_or(CLOSED, Ordering::AcqRel);
        }
        prev & FLAG_PARKED != 0
    }

    /// [`try_claim`](Self::try_claim) on an evicting ring: the claim keeps
    /// the `EVICTS` flag, and returns only once the claimed slots are free
    /// (see [`await_taken`](Self::await_taken)).
    #[inline(never)]
    fn try_claim_evicting(&self, n: usize, cached_head: &mut usize) -> Result<Claim, ClaimError> {
        debug_assert!(self.evicts);
        let room = self.capacity() - n;
        let mut word = self.tail.load(Ordering::Relaxed);
        loop {
            if word & CLOSED != 0 {
                return Err(ClaimError::Closed);
            }
            let seq = word >> SEQ_SHIFT;
            if distance(*cached_head, seq) > room {
                *cached_head = self.head_seq();
                if distance(*cached_head, seq) > room {
                    return Err(ClaimError::Full);
                }
            }
            // Relaxed, as in `try_claim`.
            match self.tail.compare_exchange_weak(
                word,
                (seq_add(seq, n) << SEQ_SHIFT) | EVICTS,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.await_taken(seq, n);
                    return Ok(Claim {
                        seq,
                        wake_drainer: word & PARKED != 0,
                    });
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Evicting ring, after a claim of `seq..seq + n`: waits until the
    /// consumers that claimed the previous lap of those slots have moved
    /// their items out (they are between their head CAS and their taken
    /// stamp, so the wait is short).
    #[inline]
    fn await_taken(&self, seq: usize, n: usize) {
        let capacity = self.capacity();
        let mut backoff = crate::wait::Backoff::new(crate::wait::WaitStrategy::Yield);
        for k in 0..n {
            let seq = seq_add(seq, k);
            let free = taken_stamp(previous_lap(seq, capacity));
            // Acquire pairs with the Release store of the taken stamp in
            // `take_run_shared` / `evict_oldest`: the consumer's reads of
            // the slot (and of the sequence's expiry stamp) happen before
            // our writes. The stamp is the previous lap's, published or
            // taken: our claim saw `head` past it, and consumers move `head`
            // only over published slots.
            while self.slot(seq).stamp.load(Ordering::Acquire) != free {
                backoff.snooze();
            }
        }
    }

    /// Writes `value` into the claimed slot `seq` and publishes it; `ticket`
    /// is the index of the completion slot its submitter armed, if any.
    /// `owner`: the caller owns the ring (an exclusive producer), and also
    /// moves its cursor (see [`OwnerWords::published`]).
    ///
    /// # Safety
    ///
    /// The caller claimed `seq` with [`try_claim`](Self::try_claim) (or, as
    /// the owner, [`try_claim_exclusive`](Self::try_claim_exclusive)) and
    /// has not published it yet. An owner publishes its sequences in order,
    /// each with `owner` set.
    #[inline(always)]
    pub(crate) unsafe fn publish(&self, seq: usize, value: T, ticket: Option<usize>, owner: bool) {
        let slot = self.slot(seq);
        // SAFETY: the caller owns the claimed slot; the drainer does not read it
        // until the stamp below is stored, and its previous value was moved out
        // before `head` passed it (checked in `try_claim`).
        slot.value.with_mut(|p| unsafe { (*p).write(value) });
        let extra = match ticket {
            Some(index) => {
                debug_assert!(index < crate::MAX_CAPACITY);
                (index << STAMP_SLOT_SHIFT) | STAMP_TICKET
            }
            None => 0,
        };
        // Release pairs with the Acquire load of the stamp in `drain_run`:
        // the value written above (and the completion slot armed before this
        // call) is visible to the drainer.
        slot.stamp.store(stamp_for(seq) | extra, Ordering::Release);
        if owner && self.is_split() {
            self.advance_cursor(seq, ticket.is_some());
        }
    }

    /// Publishes the claimed slot `seq` as empty: the drainer steps over it.
    /// `owner` as for [`publish`](Self::publish).
    ///
    /// # Safety
    ///
    /// As for [`publish`](Self::publish).
    pub(crate) unsafe fn publish_skip(&self, seq: usize, owner: bool) {
        // Release pairs with the Acquire load in `drain_run`, as in `publish`.
        self.slot(seq)
            .stamp
            .store(stamp_for(seq) | STAMP_SKIP, Ordering::Release);
        if owner && self.is_split() {
            self.advance_cursor(seq, true);
        }
    }

    /// The owner published `seq` (a `special` one: with a ticket, or empty):
    /// moves the cursor past it, and the start of the plain run past a
    /// special one, whose stamp the drainer must read.
    ///
    /// Relaxed for `plain_from`: the Release store of `published` after it
    /// carries it (a drainer that sees the cursor past `seq` sees this
    /// `plain_from` or a later one, which only shortens the plain run).
    #[inline(always)]
    fn advance_cursor(&self, seq: usize, special: bool) {
        let next = seq_add(seq, 1);
        if special {
            self.owner.plain_from.store(next, Ordering::Relaxed);
        }
        // Release pairs with the Acquire load in `owner_cursor`: the item
        // (and the stamp) written before are visible to a drainer that sees
        // the cursor past them.
        self.owner.published.store(next, Ordering::Release);
    }

    /// The owner's cursor as the drainer at `head` may use it: `Some((plain,
    /// published))` when sequences `head..published` are published (none
    /// of them drained) and `plain..published` of them hold plain items
    /// (`head <= plain <= published`); `None` when the cursor is not ahead
    /// of `head` (the ring is not owned, or the owner has published nothing
    /// new).
    #[inline(always)]
    fn owner_cursor(&self, head: usize) -> Option<(usize, usize)> {
        // Acquire pairs with the Release stores in `advance_cursor` and `own`.
        let published = self.owner.published.load(Ordering::Acquire);
        let ahead = distance(head, published);
        if ahead == 0 || ahead > self.capacity() {
            // Not ahead: a cursor left behind by an earlier owner, which the
            // drainer has passed (wrapped, the distance is huge).
            return None;
        }
        // Relaxed: ordered by the Acquire load above (see `advance_cursor`);
        // a later value is at or past this cursor's own.
        let plain_from = self.owner.plain_from.load(Ordering::Relaxed);
        let plain = if distance(plain_from, head) <= SEQ_MASK / 2 {
            // At or before `head`: the whole run is plain.
            head
        } else if distance(head, plain_from) <= ahead {
            plain_from
        } else {
            // Past the cursor we read (a special item published since):
            // nothing of this run is known plain.
            published
        };
        Some((plain, published))
    }

    /// Reads up to `max` published items starting at `head`, in order,
    /// calling `sink(item, seq, ticket)` for each (`ticket`: the completion
    /// slot index; at most `max` calls), and returns the new head (the
    /// caller then calls [`finish_run`](Self::finish_run)). Stops at the
    /// first slot that is not yet published.
    ///
    /// Where the owner's cursor is ahead of `head` (see
    /// [`owner_cursor`](Self::owner_cursor)), the plain items below it are
    /// read without their stamps. While the ring is owned the run ends at the
    /// cursor: the owner's items past it are picked up by a later run, and
    /// the stamps the owner keeps writing are not pulled into this thread's
    /// cache.
    ///
    /// # Safety
    ///
    /// Only the single consumer calls this, with `head` equal to the ring's
    /// current head (the value it last passed to `finish_run`), and never on
    /// an evicting ring.
    #[inline]
    pub(crate) unsafe fn drain_run(
        &self,
        head: usize,
        max: usize,
        mut sink: impl FnMut(T, usize, Option<usize>),
    ) -> usize {
        debug_assert!(!self.evicts, "an evicting ring is drained by take_run");
        let mut taken = CommitOnUnwind {
            ring: self,
            next: head,
        };
        let end = match &self.storage {
            // SAFETY: the caller's contract.
            Storage::Interleaved(cells) => unsafe {
                self.drain_stamped(&**cells, head, max, &mut sink, &mut taken.next)
            },
            // SAFETY: the caller's contract.
            Storage::Split { stamps, values } => unsafe {
                self.drain_split(
                    SplitCells {
                        stamps: stamps.as_slice(),
                        values: values.as_slice(),
                    },
                    head,
                    max,
                    &mut sink,
                    &mut taken.next,
                )
            },
        };
        // No unwinding: the caller moves the head.
        core::mem::forget(taken);
        end
    }

    /// [`drain_run`](Self::drain_run) on a split ring: through the owner's
    /// cursor first, where it is ahead of `head`, then by stamp unless the
    /// ring is owned.
    ///
    /// # Safety
    ///
    /// As for `drain_run`; `cells` are this ring's.
    #[inline(always)]
    unsafe fn drain_split(
        &self,
        cells: SplitCells<'_, T>,
        head: usize,
        max: usize,
        sink: &mut impl FnMut(T, usize, Option<usize>),
        taken: &mut usize,
    ) -> usize {
        let mut seq = head;
        let mut left = max;
        if let Some((plain, published)) = self.owner_cursor(head) {
            // Published by the owner (or, below the start of its cursor, by
            // shared producers that have left): the stamps of `head..plain`
            // say which hold tickets or nothing.
            let stamped = distance(head, plain).min(left);
            // SAFETY: the caller's contract.
            let end = unsafe { self.drain_stamped(cells, seq, stamped, sink, taken) };
            if end != seq_add(seq, stamped) {
                // Not published after all (a stamp not yet visible): stop.
                return end;
            }
            seq = end;
            left -= stamped;
            let plain_run = distance(seq, published).min(left);
            // SAFETY: the caller's contract; `seq..seq + plain_run` lies in
            // the cursor's plain run.
            seq = unsafe { self.drain_plain(cells, seq, plain_run, sink, taken) };
            left -= plain_run;
            if left == 0 {
                return seq;
            }
        }
        // Relaxed: a hint. A ring owned since is read by stamp, which the
        // owner writes too; one disowned since is read by the next run.
        if self.owner.flags.load(Ordering::Relaxed) & FLAG_OWNED != 0 {
            return seq;
        }
        // SAFETY: the caller's contract.
        unsafe { self.drain_stamped(cells, seq, left, sink, taken) }
    }

    /// [`drain_run`](Self::drain_run) by stamp: up to `max` published items
    /// from `seq`, stopping at the first slot not published. Returns the
    /// next sequence; `taken` follows the sequence after the last item
    /// moved out, for the run's guard (see [`CommitOnUnwind`]).
    ///
    /// # Safety
    ///
    /// As for `drain_run`, with `seq` at or past its `head` and every
    /// sequence below `seq` drained; `cells` are this ring's.
    #[inline(always)]
    unsafe fn drain_stamped<'a>(
        &self,
        cells: impl Cells<'a, T>,
        mut seq: usize,
        max: usize,
        sink: &mut impl FnMut(T, usize, Option<usize>),
        taken: &mut usize,
    ) -> usize
    where
        T: 'a,
    {
        // In a local: the Acquire loads below keep the compiler from reusing
        // fields it read before them, so it would reload this per item.
        let mask = self.mask;
        for _ in 0..max {
            // SAFETY: masked by `capacity - 1`.
            let slot = unsafe { cells.slot(seq & mask) };
            // Acquire pairs with the Release store in `publish`/`publish_skip`.
            let stamp = slot.stamp.load(Ordering::Acquire);
            if !publishes(stamp, seq) {
                break;
            }
            if stamp & STAMP_SKIP == 0 {
                // SAFETY: the stamp shows the slot published for `seq`, so it
                // holds an initialised value that no producer touches until
                // `head` moves past it; we move it out exactly once.
                let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
                *taken = seq_add(seq, 1);
                // Two calls, so that the plain item's (the common case)
                // is inlined with its origin known.
                if stamp & STAMP_TICKET == 0 {
                    sink(value, seq, None);
                } else {
                    sink(value, seq, Some(stamp >> STAMP_SLOT_SHIFT));
                }
            }
            seq = seq_add(seq, 1);
        }
        seq
    }

    /// [`drain_run`](Self::drain_run) through the owner's cursor: the `n`
    /// plain items from `seq`, read without their stamps. Returns the next
    /// sequence.
    ///
    /// # Safety
    ///
    /// As for [`drain_stamped`](Self::drain_stamped), and
    /// [`owner_cursor`](Self::owner_cursor) said that `seq..seq + n` are
    /// published plain items.
    #[inline(always)]
    unsafe fn drain_plain(
        &self,
        cells: SplitCells<'_, T>,
        mut seq: usize,
        n: usize,
        sink: &mut impl FnMut(T, usize, Option<usize>),
        taken: &mut usize,
    ) -> usize {
        let mask = self.mask;
        for _ in 0..n {
            // SAFETY: masked by `capacity - 1`.
            let slot = unsafe { cells.slot(seq & mask) };
            // The owner wrote this item before its Release store moved the
            // cursor past it, which `owner_cursor` loaded with Acquire; no
            // producer touches the slot until `head` moves past it.
            // SAFETY: initialised (above); we move it out exactly once.
            let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
            *taken = seq_add(seq, 1);
            sink(value, seq, None);
            seq = seq_add(seq, 1);
        }
        seq
    }

    /// Moves `head` to `new_head` after a run: the slots below it are free.
    /// Returns true if a producer flagged that it waits for room (the caller
    /// then notifies the lane's [`Notifier`](crate::wait::Notifier)).
    ///
    /// AcqRel swap: Release pairs with the Acquire loads of `head` in
    /// `try_claim` (the slots below it were read); being an RMW, it sees a
    /// waiter flag set by any earlier RMW on the word.
    #[inline]
    pub(crate) fn finish_run(&self, new_head: usize) -> bool {
        debug_assert!(!self.evicts, "an evicting ring is drained by take_run");
        self.head.swap(new_head << HEAD_SHIFT, Ordering::AcqRel) & HEAD_WAITERS != 0
    }

    /// The drainer's run on any ring: up to `max` published items, in order,
    /// each passed to `sink(item, seq, ticket)` as in
    /// [`drain_run`](Self::drain_run), then the head moved on. On a plain
    /// ring this is `drain_run` and `finish_run` from `head`; on an evicting
    /// ring, [`take_run_shared`](Self::take_run_shared) from the ring's
    /// current head (`head` is ignored).
    ///
    /// # Safety
    ///
    /// Only the drainer calls this, with `head` as for `drain_run`.
    #[inline(always)]
    pub(crate) unsafe fn take_run(
        &self,
        head: usize,
        max: usize,
        sink: impl FnMut(T, usize, Option<usize>),
    ) -> Run {
        if self.evicts {
            // SAFETY: the caller is the drainer.
            return unsafe { self.take_run_shared(max, sink) };
        }
        // SAFETY: the caller's contract.
        let end = unsafe { self.drain_run(head, max, sink) };
        Run {
            start: head,
            end,
            notify: end != head && self.finish_run(end),
        }
    }

    /// The drainer's run on an evicting ring: finds up to `max` published
    /// slots from the current head, claims them with one CAS on the head
    /// (clearing [`HEAD_WAITERS`] and reporting it), then moves the items out
    /// in order, passing each to `sink` as [`drain_run`](Self::drain_run)
    /// does, and marks each slot taken after its `sink` call returns (so
    /// `sink` may read data kept per sequence).
    ///
    /// # Safety
    ///
    /// Only the drainer calls this (producers consume by `evict_oldest`).
    pub(crate) unsafe fn take_run_shared(
        &self,
        max: usize,
        mut sink: impl FnMut(T, usize, Option<usize>),
    ) -> Run {
        debug_assert!(self.evicts);
        // Acquire: as for `head_seq` (and a failed CAS below re-reads it so).
        let mut word = self.head.load(Ordering::Acquire);
        let (start, end, notify) = loop {
            let start = word >> HEAD_SHIFT;
            let stop = seq_add(start, max);
            let mut end = start;
            // Acquire pairs with the Release store in `publish` /
            // `publish_skip`: the items of the run are visible to us.
            while end != stop && holds(self.slot(end).stamp.load(Ordering::Acquire), end) {
                end = seq_add(end, 1);
            }
            if end == start {
                return Run {
                    start,
                    end,
                    notify: false,
                };
            }
            // AcqRel: Release pairs with the Acquire loads of `head` by
            // producers (`try_claim`, `await_taken` relies on it) and by
            // evictors; Acquire on failure sees the head another consumer
            // moved. Being an RMW it sees a waiter flag set before it.
            match self.head.compare_exchange(
                word,
                end << HEAD_SHIFT,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break (start, end, word & HEAD_WAITERS != 0),
                Err(actual) => word = actual,
            }
        };
        let mut marks = MarkTakenOnUnwind {
            ring: self,
            next: start,
            end,
        };
        while marks.next != end {
            let seq = marks.next;
            let slot = self.slot(seq);
            // Relaxed: the stamp is the one loaded with Acquire above (only the
            // consumer that claimed `seq`, we, changes it now).
            let stamp = slot.stamp.load(Ordering::Relaxed);
            debug_assert!(holds(stamp, seq));
            if stamp & STAMP_SKIP == 0 {
                // SAFETY: our CAS claimed `seq` for us alone, its stamp shows
                // an initialised item, and no producer writes the slot before
                // our taken stamp below; we move the item out exactly once.
                let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
                let ticket = (stamp & STAMP_TICKET != 0).then_some(stamp >> STAMP_SLOT_SHIFT);
                sink(value, seq, ticket);
            }
            // Release pairs with the Acquire load in `await_taken`: our read of
            // the slot happens before the next lap's producer writes it.
            slot.stamp.store(taken_stamp(seq), Ordering::Release);
            marks.next = seq_add(seq, 1);
        }
        core::mem::forget(marks);
        Run { start, end, notify }
    }

    /// Producer side on an evicting ring whose claim of `n` slots failed: if
    /// the lane is still full (and open), claims the oldest slot with a CAS
    /// on the head (keeping the [`HEAD_WAITERS`] flag for the drainer to
    /// clear) and moves its item out.
    pub(crate) fn evict_oldest(&self, n: usize) -> Evicted<T> {
        debug_assert!(self.evicts);
        // Acquire: as for `head_seq`. Loaded before the tail, so the tail
        // read below is at or past it.
        let word = self.head.load(Ordering::Acquire);
        let head = word >> HEAD_SHIFT;
        let (tail, flags) = self.tail();
        if flags & CLOSED != 0 || distance(head, tail) <= self.capacity() - n {
            return Evicted::Room;
        }
        let slot = self.slot(head);
        // Acquire pairs with the Release store in `publish` / `publish_skip`.
        let stamp = slot.stamp.load(Ordering::Acquire);
        if !holds(stamp, head) {
            // Claimed and not yet published (or taken since we read `head`).
            return Evicted::Busy;
        }
        // AcqRel, as in `take_run_shared`. Failure: another consumer moved the
        // head; Relaxed, since we start over from a fresh load.
        if self
            .head
            .compare_exchange(
                word,
                (seq_add(head, 1) << HEAD_SHIFT) | (word & HEAD_WAITERS),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return Evicted::Busy;
        }
        let evicted = if stamp & STAMP_SKIP == 0 {
            // SAFETY: as in `take_run_shared`: our CAS claimed `head`, its
            // stamp shows an initialised item, moved out once, here.
            let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
            let ticket = (stamp & STAMP_TICKET != 0).then_some(stamp >> STAMP_SLOT_SHIFT);
            Evicted::Item(value, ticket)
        } else {
            Evicted::Skip
        };
        // Release: as in `take_run_shared`.
        slot.stamp.store(taken_stamp(head), Ordering::Release);
        evicted
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

    /// Producer side, under the lane notifier's lock: if a claim of `n` slots
    /// is still impossible (lane full, not closed), sets [`HEAD_WAITERS`] so
    /// that the drainer's next `finish_run` notifies, and returns true.
    pub(crate) fn arm_room_waiter(&self, n: usize) -> bool {
        let mut word = self.head.load(Ordering::Acquire);
        loop {
            let (tail, flags) = self.tail();
            if flags & CLOSED != 0 || distance(word >> HEAD_SHIFT, tail) <= self.capacity() - n {
                return false;
            }
            // The tail word of an owned ring does not say it closed.
            if !self.evicts && self.is_closed() {
                return false;
            }
            if word & HEAD_WAITERS != 0 {
                return true;
            }
            // Acquire: as for `head_seq`. If the drainer moved the head in
            // between, the CAS fails and we look again.
            match self.head.compare_exchange_weak(
                word,
                word | HEAD_WAITERS,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
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

    /// (`inline_when_idle`) Whether the drainer announced a park on this
    /// lane and no claim came since: the hint a submitter reads before it
    /// tries to take the drainer's state. `owner`: the submitter owns the
    /// ring (see [`own`](Self::own)), so the announcement may be in the
    /// flags word; a shared producer's ring is never owned, so it reads
    /// only the tail word.
    #[inline(always)]
    pub(crate) fn looks_parked(&self, owner: bool) -> bool {
        // Relaxed: only a hint; `caught_up` decides, under the state's lock.
        self.tail.load(Ordering::Relaxed) & (PARKED | CLOSED | EVICTS) == PARKED
            || owner
                && self.owner.flags.load(Ordering::Relaxed) & (FLAG_PARKED | FLAG_CLOSED)
                    == FLAG_PARKED
    }

    /// (`inline_when_idle`) Whether the lane is open, plain, and every
    /// sequence claimed on it is below `head`, the drainer's head: called
    /// with the drainer's state locked and its batch empty, it says that
    /// every item this thread claimed on the lane before has been handled,
    /// so a new item of this thread may be handled at once without passing
    /// through the lane.
    ///
    /// Relaxed: the caller's own earlier claims come before this load in
    /// its program order, so coherence makes them visible; the drainer's
    /// `head` is ordered by the lock. Claims of other threads that this
    /// load misses are concurrent with the caller's item, so either order
    /// is one the lane could have taken.
    #[inline]
    pub(crate) fn caught_up(&self, head: usize) -> bool {
        let word = self.tail.load(Ordering::Relaxed);
        word & (CLOSED | EVICTS) == 0
            && word >> SEQ_SHIFT == head
            && self.owner.flags.load(Ordering::Relaxed) & FLAG_CLOSED == 0
    }

    /// Announces that the drainer is about to park, in the flags word and,
    /// on a shared ring, in the tail word. `empty` says whether the lane was
    /// empty (`tail == head`): on a shared ring, any later claim sees
    /// `PARKED` and wakes the drainer; on an owned ring (`owned`), the
    /// emptiness holds only once the caller has run the heavy fence and
    /// [`still_empty`](Self::still_empty) agrees (see
    /// [`try_claim_exclusive`](Self::try_claim_exclusive)).
    ///
    /// The shared ring's decision needs only the tail word's modification
    /// order (our RMW and a producer's CAS are ordered one way or the other),
    /// so Relaxed; on an owned ring, the heavy fence orders the flag before
    /// the re-check.
    pub(crate) fn announce_park(&self, head: usize) -> Announced {
        // An evicting ring is never owned (see `own`). On an owned one the
        // RMW decides (ordered with `disown`'s); a ring owned after the load
        // here is announced in the tail word, and `own`'s caller wakes the
        // drainer, whose next announcement sees the owner.
        if !self.evicts
            && self.owner.flags.load(Ordering::Relaxed) & FLAG_OWNED != 0
            && self.owner.flags.fetch_or(FLAG_PARKED, Ordering::Relaxed) & FLAG_OWNED != 0
        {
            return Announced {
                empty: self.still_empty(head),
                owned: true,
            };
        }
        let word = self.tail.fetch_or(PARKED, Ordering::Relaxed);
        Announced {
            empty: word >> SEQ_SHIFT == head,
            owned: false,
        }
    }

    /// Whether nothing is claimed beyond `head` (after the heavy fence, an
    /// owner's claim stored before it is seen here).
    fn still_empty(&self, head: usize) -> bool {
        self.tail.load(Ordering::Relaxed) >> SEQ_SHIFT == head
    }

    /// Withdraws a park announcement (a no-op where a producer already
    /// cleared it).
    pub(crate) fn clear_park(&self) {
        if !self.evicts && self.owner.flags.load(Ordering::Relaxed) & FLAG_PARKED != 0 {
            self.owner.flags.fetch_and(!FLAG_PARKED, Ordering::Relaxed);
        }
        if self.tail.load(Ordering::Relaxed) & PARKED != 0 {
            self.tail.fetch_and(!PARKED, Ordering::Relaxed);
        }
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

/// [`Ring::close`] on an owned ring when no barrier can run (`membarrier`
/// refused after it was accepted, and no fallback): the owner's claims are
/// plain stores, so the final tail cannot be known, and any guess would
/// lose items or read slots never written. Retrying could spin for ever.
#[cold]
#[inline(never)]
fn fence_failed() -> ! {
    std::eprintln!(
        "ringbatch: closing a lane owned by an exclusive producer needs the \
         asymmetric fence (membarrier), which the kernel now refuses, and no \
         fallback barrier ran; aborting rather than lose items"
    );
    std::process::abort()
}

/// The drainer's run on a plain ring, should the code it calls per item
/// unwind (it runs none of the user's; this is for a bug of ours): moves the
/// head past every item already moved out, so that none is read, or dropped
/// by [`Ring`]'s drop, a second time. Forgotten when the run ends normally
/// (the drainer then moves the head itself).
struct CommitOnUnwind<'a, T> {
    ring: &'a Ring<T>,
    /// The sequence after the last item moved out.
    next: usize,
}

impl<T> Drop for CommitOnUnwind<'_, T> {
    #[inline]
    fn drop(&mut self) {
        let _ = self.ring.finish_run(self.next);
    }
}

/// The drainer's run on an evicting ring, should the code it calls per item
/// unwind: marks every slot it claimed and has not marked yet as taken (the
/// item being handed over was moved out; later ones are leaked, not read),
/// so that producers waiting for those slots do not wait for ever.
/// Forgotten when the run ends normally.
struct MarkTakenOnUnwind<'a, T> {
    ring: &'a Ring<T>,
    next: usize,
    end: usize,
}

impl<T> Drop for MarkTakenOnUnwind<'_, T> {
    #[cold]
    fn drop(&mut self) {
        while self.next != self.end {
            // Release, as in `take_run_shared`.
            self.ring
                .slot(self.next)
                .stamp
                .store(taken_stamp(self.next), Ordering::Release);
            self.next = seq_add(self.next, 1);
        }
    }
}

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

/// The drainer's park step: announces the park on every lane (stopping at the
/// first that is not empty), parks unless a lane was not empty or `requested()`
/// says a request is pending, then withdraws the announcements.
///
/// A producer whose claim clears a `PARKED` flag unparks the drainer after
/// publishing; a requester posts its request, then unparks. Either way the
/// park token makes `park` return, so no wake-up is lost.
///
/// The drainer runs the same three steps ([`prepare_park`],
/// [`ParkPlan::sleep`], [`ParkPlan::end`]) itself, since with
/// `inline_when_idle` it unlocks its state between the first two; the loom
/// models call this composition.
#[cfg(all(loom, test))]
pub(crate) fn park_drainer<'a, T: 'a>(
    lanes: impl Iterator<Item = (&'a Ring<T>, usize)> + Clone,
    requested: impl FnOnce() -> bool,
) {
    let plan = prepare_park(lanes.clone(), requested, None);
    plan.sleep();
    plan.end(lanes);
}

/// A park announced on the lanes: whether to sleep, and for how long.
#[derive(Debug)]
#[must_use = "a park announcement must be withdrawn"]
pub(crate) struct ParkPlan {
    /// Lanes announced (each is withdrawn by [`end`](Self::end)).
    announced: usize,
    /// The announcement ran the heavy fence (a lane is owned).
    fenced: bool,
    /// `None`: do not sleep (a lane is not empty or a request is pending);
    /// `Some(None)`: park until woken; `Some(Some(d))`: at most `d`.
    sleep: Option<Option<core::time::Duration>>,
}

/// The first step of [`park_drainer`]: announces the park on every lane and
/// decides whether to sleep (all lanes empty and no request pending), for
/// at most `timeout` if given.
pub(crate) fn prepare_park<'a, T: 'a>(
    lanes: impl Iterator<Item = (&'a Ring<T>, usize)> + Clone,
    requested: impl FnOnce() -> bool,
    timeout: Option<core::time::Duration>,
) -> ParkPlan {
    let found = announce_park_all(lanes);
    ParkPlan {
        announced: found.announced,
        fenced: found.fenced,
        sleep: (found.empty && !requested()).then_some(timeout),
    }
}

impl ParkPlan {
    /// No announcement and no sleep (a retry is due now).
    pub(crate) const AWAKE: ParkPlan = ParkPlan {
        announced: 0,
        fenced: false,
        sleep: None,
    };

    /// Whether the plan is to sleep.
    pub(crate) fn sleeps(&self) -> bool {
        self.sleep.is_some()
    }

    /// Whether the announcement ran the heavy fence.
    pub(crate) fn fenced(&self) -> bool {
        self.fenced
    }

    /// Sleeps as planned: returns at once if the plan says not to sleep,
    /// when a producer or requester unparks the drainer, or at the timeout
    /// (or spuriously).
    pub(crate) fn sleep(&self) {
        match self.sleep {
            None => {}
            Some(None) => crate::sync::thread::park(),
            Some(Some(timeout)) => crate::sync::thread::park_timeout(timeout),
        }
    }

    /// Withdraws the announcements (after waking).
    pub(crate) fn end<'a, T: 'a>(self, lanes: impl Iterator<Item = (&'a Ring<T>, usize)>) {
        withdraw_park(lanes, self.announced);
    }
}

/// The first half of [`park_drainer`]: announces the park on every lane,
/// stopping at the first that is not empty. Returns how many lanes were
/// announced, whether all were empty and whether the heavy fence ran.
///
/// When a ring is owned by an exclusive producer, the announcements are followed
/// by the heavy fence and a re-check of every lane (the drainer's half of
/// the handshake in [`Ring::try_claim_exclusive`]); if the fence cannot be
/// run, the lanes count as not empty (the drainer stays awake).
pub(crate) fn announce_park_all<'a, T: 'a>(
    lanes: impl Iterator<Item = (&'a Ring<T>, usize)> + Clone,
) -> ParkAnnouncement {
    let mut found = ParkAnnouncement {
        announced: 0,
        empty: false,
        fenced: false,
    };
    let mut fence = false;
    for (ring, head) in lanes.clone() {
        found.announced += 1;
        let lane = ring.announce_park(head);
        fence |= lane.owned;
        if !lane.empty {
            return found;
        }
    }
    if fence {
        if !crate::sync::asymmetric::heavy() {
            return found;
        }
        found.fenced = true;
        if !lanes.into_iter().all(|(ring, head)| ring.still_empty(head)) {
            return found;
        }
    }
    found.empty = true;
    found
}

/// What [`announce_park_all`] did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParkAnnouncement {
    /// Lanes announced (to withdraw with [`withdraw_park`]).
    pub(crate) announced: usize,
    /// Every lane was empty: the caller may sleep.
    pub(crate) empty: bool,
    /// The heavy fence ran (a lane is owned by an exclusive producer): on
    /// Linux, a `membarrier` that interrupts every other CPU running a
    /// thread of this process.
    pub(crate) fenced: bool,
}

/// What [`Ring::announce_park`] found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Announced {
    /// Nothing claimed beyond the drainer's head (when the announcement was
    /// made).
    pub(crate) empty: bool,
    /// The ring is owned by an exclusive producer: the emptiness must be
    /// checked again after the heavy fence.
    pub(crate) owned: bool,
}

/// The second half: withdraws the announcements on the first `announced`
/// lanes.
pub(crate) fn withdraw_park<'a, T: 'a>(
    lanes: impl Iterator<Item = (&'a Ring<T>, usize)>,
    announced: usize,
) {
    for (ring, _) in lanes.take(announced) {
        ring.clear_park();
    }
}

#[cfg(all(test, not(loom), target_os = "linux"))]
mod tests {
    use super::*;

    /// A close of an owned ring whose `membarrier` fails (a lost
    /// registration) still counts every claim the owner made, through the
    /// retry or the fallback barrier, instead of spinning.
    #[test]
    fn closing_an_owned_ring_survives_a_failing_membarrier() {
        for failures in [1, u32::MAX] {
            let ring = Ring::<u32>::new(4);
            if !crate::sync::asymmetric::available() || !ring.own() {
                return;
            }
            let mut head = 0;
            for value in 0..3 {
                // SAFETY: this thread owns the ring and is its only producer.
                let claim = unsafe { ring.try_claim_exclusive(1, &mut head) }.unwrap();
                // SAFETY: just claimed, published once, by the owner.
                unsafe { ring.publish(claim.seq, value, None, true) };
            }
            crate::sync::asymmetric::fail_next(failures, false);
            let last = ring.close();
            crate::sync::asymmetric::fail_next(0, false);
            assert_eq!(
                last, 3,
                "the final tail counts the owner's claims ({failures} failures)"
            );
        }
    }
}
