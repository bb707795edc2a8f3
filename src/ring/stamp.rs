//! The words of a ring and their arithmetic: the tail, flags, head and
//! slot-stamp bits, and sequence numbers that wrap in 61 bits.

/// Tail word bit 0: the drainer is parked (or about to park) and the producer
/// whose CAS clears this bit must unpark it after publishing.
pub(crate) const PARKED: usize = 0b01;
/// Tail word bit 1: the lane accepts no more claims (set once, at shutdown).
pub(crate) const CLOSED: usize = 0b10;
/// Tail word bit 2: the ring is an evicting one (set when it is made, never
/// changed). Producers test it with `CLOSED` in one branch, so that plain
/// rings pay nothing for it.
pub(super) const EVICTS: usize = 0b100;
/// Tail word bits 3..: the next sequence number to claim.
pub(super) const SEQ_SHIFT: u32 = 3;

/// Flags word bit 0: the drainer announced a park (on an owned ring, only
/// here; on a shared one, also as `PARKED` in the tail word).
pub(super) const FLAG_PARKED: usize = 0b001;
/// Flags word bit 1: the lane is closed (on a shared ring, also as `CLOSED`
/// in the tail word).
pub(super) const FLAG_CLOSED: usize = 0b010;
/// Flags word bit 2: an exclusive producer owns the ring and claims with
/// plain stores; the drainer and the closer leave the tail word alone.
pub(super) const FLAG_OWNED: usize = 0b100;

/// Head word bit 0: a producer waits for room and must be notified when the
/// drainer next moves the head.
pub(super) const HEAD_WAITERS: usize = 0b1;
pub(super) const HEAD_SHIFT: u32 = 1;

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
pub(super) const STAMP_TAKEN: usize = STAMP_TICKET | STAMP_SKIP;
/// Stamp bits 2..34: the low 32 bits of `seq + 1` for the sequence the slot
/// publishes. A slot's previous stamp is always from exactly one lap earlier
/// (`seq - capacity`, capacity at most 2^30), so 32 bits tell the two apart.
pub(super) const STAMP_SHIFT: u32 = 2;
pub(super) const STAMP_SEQ_BITS: u32 = 32;
pub(super) const STAMP_SEQ_MASK: usize = ((1 << STAMP_SEQ_BITS) - 1) << STAMP_SHIFT;
/// Stamp bits 34..64: the completion slot index of a ticketed item (below
/// [`MAX_CAPACITY`](crate::MAX_CAPACITY) = 2^30, so it fits in 30 bits).
pub(super) const STAMP_SLOT_SHIFT: u32 = STAMP_SHIFT + STAMP_SEQ_BITS;

#[cfg(not(target_pointer_width = "64"))]
compile_error!("ringbatch packs its slot stamps into 64-bit words");

/// `b - a` in sequence space.
#[inline(always)]
pub(crate) fn distance(a: usize, b: usize) -> usize {
    b.wrapping_sub(a) & SEQ_MASK
}

/// `seq - capacity` in sequence space: the slot's previous lap.
#[inline(always)]
pub(super) fn previous_lap(seq: usize, capacity: usize) -> usize {
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
pub(super) fn stamp_for(seq: usize) -> usize {
    (seq.wrapping_add(1) << STAMP_SHIFT) & STAMP_SEQ_MASK
}

/// Whether `stamp` publishes sequence `seq`.
#[inline(always)]
pub(super) fn publishes(stamp: usize, seq: usize) -> bool {
    stamp & STAMP_SEQ_MASK == stamp_for(seq)
}

/// Whether `stamp` publishes sequence `seq` and its slot has not been taken
/// yet (on an evicting ring a taken stamp keeps the sequence's number).
#[inline(always)]
pub(super) fn holds(stamp: usize, seq: usize) -> bool {
    publishes(stamp, seq) && stamp & STAMP_TAKEN != STAMP_TAKEN
}

/// The stamp a consumer of an evicting ring leaves in the slot of `seq` once
/// it has moved the item out.
#[inline(always)]
pub(super) fn taken_stamp(seq: usize) -> usize {
    stamp_for(seq) | STAMP_TAKEN
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn sequences_wrap_in_61_bits() {
        assert_eq!(
            seq_add(SEQ_MASK, 1),
            0,
            "the last sequence is followed by 0"
        );
        assert_eq!(distance(SEQ_MASK, 2), 3, "distance counts across the wrap");
        assert_eq!(distance(5, 5), 0);
        assert_eq!(previous_lap(1, 4), SEQ_MASK - 2, "a lap back from 1 wraps");
        assert_eq!(previous_lap(9, 4), 5);
    }

    #[test]
    fn a_stamp_publishes_its_sequence_only() {
        let capacity = 1 << 30;
        for seq in [0, 1, capacity - 1, capacity, SEQ_MASK - 1, SEQ_MASK] {
            let stamp = stamp_for(seq);
            assert!(publishes(stamp, seq), "stamp of {seq} publishes it");
            assert!(holds(stamp, seq), "an untaken stamp of {seq} holds it");
            assert!(
                !publishes(stamp, previous_lap(seq, capacity)),
                "stamp of {seq} must not publish the slot's previous lap"
            );
            assert!(
                !publishes(stamp, seq_add(seq, capacity)),
                "nor its next lap"
            );
        }
        assert!(
            !publishes(0, 0),
            "the all-zero initial stamp publishes nothing"
        );
    }

    #[test]
    fn kind_and_slot_bits_leave_the_sequence_alone() {
        let seq = 12_345;
        let slot = (1 << 30) - 1;
        let stamp = stamp_for(seq) | STAMP_TICKET | (slot << STAMP_SLOT_SHIFT);
        assert!(holds(stamp, seq), "a ticketed stamp still holds its item");
        assert_eq!(stamp >> STAMP_SLOT_SHIFT, slot, "the slot index survives");
        assert!(publishes(stamp_for(seq) | STAMP_SKIP, seq));
        let taken = taken_stamp(seq);
        assert!(publishes(taken, seq), "a taken stamp keeps its sequence");
        assert!(!holds(taken, seq), "but holds no item");
    }
}
