//! How a ring lays out its slots (each stamp beside its item, or stamps and
//! items in two arrays) and the unchecked slot access of the drain loops.

use core::mem::MaybeUninit;

use crate::sync::{AtomicUsize, UnsafeCell};

/// One slot: the stamp says which sequence (if any) it currently publishes.
/// Where the two live depends on the ring's [`Storage`].
pub(super) struct Slot<'a, T> {
    pub(super) stamp: &'a AtomicUsize,
    pub(super) value: &'a UnsafeCell<MaybeUninit<T>>,
}

/// A slot of an interleaved ring: its stamp beside its item.
pub(super) struct SlotCell<T> {
    pub(super) stamp: AtomicUsize,
    pub(super) value: UnsafeCell<MaybeUninit<T>>,
}

/// How a ring lays out its slots.
pub(super) enum Storage<T> {
    /// Each stamp beside its item: a producer's two stores go to one cache
    /// line, and a drainer that reads an item as soon as it is published
    /// (and so pulls the line the producer is writing) moves one line per
    /// item, not two. Shared rings.
    Interleaved(Vec<SlotCell<T>>),
    /// Stamps and items in two arrays. The plain items an owner publishes
    /// through its cursor are read without their stamps, so the drainer
    /// pulls only the lines of the items: eight `u64` items a line, where
    /// interleaved stamps make it four. Rings laid out for exclusive
    /// producers ([`Ring::new_split`](crate::ring::Ring::new_split)).
    Split {
        stamps: Vec<AtomicUsize>,
        values: Vec<UnsafeCell<MaybeUninit<T>>>,
    },
}

/// Unchecked access to the slots of one [`Storage`], for the drain loops
/// (one loop per layout, chosen once per run).
pub(super) trait Cells<'a, T: 'a>: Copy {
    /// The stamp and item of slot `index`.
    ///
    /// # Safety
    ///
    /// `index` is below the ring's capacity.
    unsafe fn slot(self, index: usize) -> Slot<'a, T>;
}

impl<'a, T: 'a> Cells<'a, T> for &'a [SlotCell<T>] {
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
pub(super) struct SplitCells<'a, T> {
    pub(super) stamps: &'a [AtomicUsize],
    pub(super) values: &'a [UnsafeCell<MaybeUninit<T>>],
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
