//! The drainer's park: announcing it on every lane, looking again after
//! the fence, sleeping, and withdrawing the announcement.

use crate::sync::Ordering;

use super::stamp::*;
use super::*;

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
    pub(super) announced: usize,
    /// The announcement ran the heavy fence (a lane is owned).
    pub(super) fenced: bool,
    pub(super) sleep: Sleep,
}

/// Whether a [`ParkPlan`] sleeps, and for how long.
#[derive(Debug, Clone, Copy)]
pub(super) enum Sleep {
    /// Not at all: a lane is not empty or a request is pending.
    No,
    /// Until woken.
    UntilWoken,
    /// Until woken, for at most this long.
    AtMost(core::time::Duration),
}

/// The first step of `park_drainer`: announces the park on every lane and
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
        sleep: match (found.empty && !requested(), timeout) {
            (false, _) => Sleep::No,
            (true, None) => Sleep::UntilWoken,
            (true, Some(timeout)) => Sleep::AtMost(timeout),
        },
    }
}

impl ParkPlan {
    /// No announcement and no sleep (a retry is due now).
    pub(crate) const AWAKE: ParkPlan = ParkPlan {
        announced: 0,
        fenced: false,
        sleep: Sleep::No,
    };

    /// Whether the plan is to sleep.
    pub(crate) fn sleeps(&self) -> bool {
        !matches!(self.sleep, Sleep::No)
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
            Sleep::No => {}
            Sleep::UntilWoken => crate::sync::thread::park(),
            Sleep::AtMost(timeout) => crate::sync::thread::park_timeout(timeout),
        }
    }

    /// Withdraws the announcements (after waking).
    pub(crate) fn end<'a, T: 'a>(self, lanes: impl Iterator<Item = (&'a Ring<T>, usize)>) {
        withdraw_park(lanes, self.announced);
    }
}

/// The first half of `park_drainer`: announces the park on every lane,
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

impl<T> Ring<T> {
    /// (`inline_when_idle`) Whether the drainer announced a park on this
    /// lane and no claim came since: the hint a submitter reads before it
    /// tries to take the drainer's state. With [`Claims::Plain`] the
    /// submitter owns the ring (see [`own`](Self::own)), so the announcement
    /// may be in the flags word; otherwise it reads only the tail word.
    #[inline(always)]
    pub(crate) fn looks_parked(&self, claims: Claims) -> bool {
        // Relaxed: only a hint; `caught_up` decides, under the state's lock.
        self.tail.load(Ordering::Relaxed) & (PARKED | CLOSED | EVICTS) == PARKED
            || claims == Claims::Plain
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
    pub(super) fn still_empty(&self, head: usize) -> bool {
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
}
