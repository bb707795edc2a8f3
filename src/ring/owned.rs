//! Owned rings: an exclusive producer claims with plain stores; the owner
//! flags word and its asymmetric-fence handshake with the drainer and the
//! closer.

use crate::sync::{AtomicUsize, Ordering};

use super::stamp::*;
use super::*;

/// What an exclusive producer (the ring's owner) writes and reads besides
/// the slots, on a cache line of its own: the flags it reads after each
/// claim and the cursor it publishes with.
pub(super) struct OwnerWords {
    /// [`FLAG_PARKED`], [`FLAG_CLOSED`], [`FLAG_OWNED`]: what an exclusive
    /// producer reads after its claim (see
    /// [`Ring::try_claim_exclusive`]). Written on the park, close and
    /// ownership paths only.
    pub(super) flags: AtomicUsize,
    /// The owner's publication cursor: every sequence below it is published.
    /// Moved by the owner after each item it publishes (see
    /// [`Ring::publish`]) and set by [`Ring::own`]; it keeps its value after
    /// the ring is disowned, a fact about sequences that stays true.
    pub(super) published: AtomicUsize,
    /// The sequences from here up to `published` hold plain items (no
    /// ticket, not skipped): the drainer reads them without their stamps.
    /// Moved past each ticketed or skipped item the owner publishes, and set
    /// by [`Ring::own`] to the first sequence the owner claims.
    pub(super) plain_from: AtomicUsize,
    /// Sequences an owner claimed and gave up because the lane had closed
    /// although the close counted them (published empty; see
    /// [`Ring::given_up`]).
    pub(super) given_up: AtomicUsize,
    /// The final tail found by the first [`close`](Ring::close), or
    /// [`NO_FINAL`] until then. On an owned ring a claim the close did not
    /// count ends above it, and the claim cursor (the tail word) counts it
    /// too until the owner sees the close; [`Ring::claimed`] stops here.
    pub(super) final_tail: AtomicUsize,
}

/// [`OwnerWords::final_tail`] of a ring not yet closed (no sequence is this
/// large).
pub(super) const NO_FINAL: usize = usize::MAX;

/// [`Ring::close`] on an owned ring when no barrier can run (`membarrier`
/// refused after it was accepted, and no fallback): the owner's claims are
/// plain stores, so the final tail cannot be known, and any guess would
/// lose items or read slots never written. Retrying could spin for ever.
#[cold]
#[inline(never)]
pub(super) fn fence_failed() -> ! {
    std::eprintln!(
        "ringbatch: closing a lane owned by an exclusive producer needs the \
         asymmetric fence (membarrier), which the kernel now refuses, and no \
         fallback barrier ran; aborting rather than lose items"
    );
    std::process::abort()
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
                unsafe { ring.publish(claim.seq, value, None, Claims::Plain) };
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

/// How a producer claims a ring's sequences, which decides how it
/// publishes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claims {
    /// By CAS on the tail word: any shared producer, and an owner where the
    /// asymmetric fences do not work.
    Cas,
    /// By plain stores, as the ring's owner
    /// ([`try_claim_exclusive`](Ring::try_claim_exclusive)); it also moves
    /// the owner's cursor when it publishes.
    Plain,
}

/// Whether the tail word an owner's claim replaced carried a `PARKED`
/// announced before the ring was owned (the claim's store takes it off, so
/// the owner must wake the drainer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TailPark {
    Clear,
    Stale,
}

impl<T> Ring<T> {
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
        unsafe { self.claim_exclusive_at(word >> SEQ_SHIFT, n, cached_head, TailPark::Clear) }
    }

    /// [`try_claim_exclusive`](Self::try_claim_exclusive) from sequence
    /// `seq`, the current tail; `tail_park` says whether the tail word also
    /// carries a `PARKED` announced before the ring was owned.
    ///
    /// # Safety
    ///
    /// As for `try_claim_exclusive`, and `seq` is the tail's sequence.
    #[inline(always)]
    pub(super) unsafe fn claim_exclusive_at(
        &self,
        seq: usize,
        n: usize,
        cached_head: &mut usize,
        tail_park: TailPark,
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
        if flags & (FLAG_PARKED | FLAG_CLOSED) == 0 && tail_park == TailPark::Clear {
            return Ok(Claim {
                seq,
                wake_drainer: false,
            });
        }
        // SAFETY: we claimed `seq..seq + n` just above.
        unsafe { self.exclusive_flags(seq, n, flags, tail_park) }
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
    pub(super) unsafe fn claim_exclusive_flagged(
        &self,
        word: usize,
        n: usize,
        cached_head: &mut usize,
    ) -> Result<Claim, ClaimError> {
        if word & (CLOSED | EVICTS) != 0 {
            return self.try_claim(n, cached_head);
        }
        // SAFETY: the caller's contract.
        unsafe { self.claim_exclusive_at(word >> SEQ_SHIFT, n, cached_head, TailPark::Stale) }
    }

    /// What an owner's claim saw: a close, or a park to take over (in the
    /// flags word, or a stale `PARKED` in the tail word, which the claim's
    /// store took off).
    ///
    /// # Safety
    ///
    /// The caller owns the ring, claimed `seq..seq + n` and has published
    /// none of them.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn exclusive_flags(
        &self,
        seq: usize,
        n: usize,
        flags: usize,
        tail_park: TailPark,
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
                unsafe { self.publish_skip(seq_add(seq, i), Claims::Plain) };
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
            wake_drainer: parked || tail_park == TailPark::Stale,
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
    pub(super) fn final_tail(&self) -> usize {
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

    /// The owner's cursor as the drainer at `head` may use it: `Some((plain,
    /// published))` when sequences `head..published` are published (none
    /// of them drained) and `plain..published` of them hold plain items
    /// (`head <= plain <= published`); `None` when the cursor is not ahead
    /// of `head` (the ring is not owned, or the owner has published nothing
    /// new).
    #[inline(always)]
    pub(super) fn owner_cursor(&self, head: usize) -> Option<(usize, usize)> {
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
}
