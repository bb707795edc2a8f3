//! The [`Producer`] handle: which lane and ring it feeds, whether it owns
//! the ring, and how it joins and leaves.

use core::cell::{Cell, OnceCell};
use core::fmt;
use core::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::engine::Ownership;
use crate::engine::{Lane, Shared};
use crate::error::{LaneError, RefusedKind, SubmitError};
use crate::ring::Claims;
use crate::shape::Priority;
use crate::sync::{Arc, Ordering};

/// How long a claim may wait.
#[derive(Clone, Copy)]
pub(crate) enum Wait {
    /// Not at all.
    Never,
    /// As the backpressure policy says.
    Policy,
    /// Until there is room, or the deadline if any.
    Block(Option<Instant>),
}

/// A producer's siblings on its lane, one per priority class.
pub(crate) type ClassProducers<T, R> = [OnceCell<Producer<T, R>>; 4];

/// A handle for submitting items, bound to one lane for its whole life so its
/// items stay in order.
///
/// `Send` but not `Sync`: move it to the thread that uses it, or better,
/// create it there ([`Batcher::producer`](crate::Batcher::producer) picks that thread's core's lane).
/// Several producers may share a lane.
///
/// Every method that does not accept an item gives it back in the error.
pub struct Producer<T, R = ()> {
    pub(crate) shared: Arc<Shared<T, R>>,
    /// The ring this producer publishes into: its lane, or with priority
    /// classes `class * lane_count + lane` (the completion table is indexed
    /// the same way). [`lane`](Self::lane) is the lane.
    pub(crate) ring: usize,
    /// `&shared.lanes[ring]`, kept so that a push does not index the lanes
    /// again (valid as long as `shared`, which this producer holds).
    pub(crate) lane_ptr: core::ptr::NonNull<Lane<T>>,
    /// Where this producer next looks for a free completion slot (private,
    /// so that producers of one lane seldom contend for the same slot).
    pub(crate) next_slot: Cell<usize>,
    /// Private copy of the lane's drainer cursor, reloaded only when the lane
    /// looks full.
    pub(crate) cached_head: Cell<usize>,
    /// Whether it owns its ring ([`Batcher::exclusive_producer`](crate::Batcher::exclusive_producer)),
    /// and with owned rings whether it claims with plain stores
    /// ([`Ring::try_claim_exclusive`](crate::ring::Ring::try_claim_exclusive)):
    /// the asymmetric fences work here.
    pub(crate) ownership: Ownership,
    /// This lane's producers in the other priority classes, each made on
    /// the first per-item submission in its class (`submit_with_priority`):
    /// allocated once, never per item.
    pub(crate) classes: OnceCell<Box<ClassProducers<T, R>>>,
    /// Not `Sync` (the cached cursor is a `Cell`).
    pub(crate) _not_sync: PhantomData<Cell<()>>,
}

// SAFETY: a producer moves `T` into the batcher and `R` out through tickets;
// it is `Send` when both are. The shared state is `Sync` for `T, R: Send`.
unsafe impl<T: Send, R: Send> Send for Producer<T, R> {}

impl<T, R> Drop for Producer<T, R> {
    fn drop(&mut self) {
        if self.claims() == Claims::Plain && self.lane_ref().ring.disown() {
            // A park announced in the flags word only: the drainer's next
            // one goes to the tail word, where shared producers look.
            self.shared.unpark_drainer();
        }
        self.lane_ref().leave(self.ownership);
        if self.is_exclusive() {
            // Relaxed: a counter (see `new_exclusive_producer`).
            self.shared.exclusive_lanes.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<T, R> Producer<T, R> {
    /// A shared producer on ring `ring` (see the `lane` field), or `None` if
    /// an exclusive producer owns it.
    pub(crate) fn join(shared: &Arc<Shared<T, R>>, ring: usize) -> Option<Self> {
        shared.lanes[ring]
            .join()
            .then(|| Self::on_ring(Arc::clone(shared), ring, Ownership::Shared))
    }

    /// The exclusive producer of ring `ring`, which the caller has taken.
    /// It claims with plain stores where the asymmetric fences work and the
    /// ring allows it (see [`Ring::own`](crate::ring::Ring::own)), else with the CAS.
    pub(crate) fn owner(shared: Arc<Shared<T, R>>, ring: usize) -> Self {
        let owned = crate::sync::asymmetric::available() && shared.lanes[ring].ring.own();
        if owned {
            // A park announced before the mark was seen ends now; the next
            // one goes where this producer looks (see `Ring::own`).
            shared.unpark_drainer();
        }
        let claims = if owned { Claims::Plain } else { Claims::Cas };
        Self::on_ring(shared, ring, Ownership::Owned(claims))
    }

    /// A producer publishing into ring `lane` (see the field), already
    /// counted on it.
    pub(crate) fn on_ring(shared: Arc<Shared<T, R>>, ring: usize, ownership: Ownership) -> Self {
        Self {
            cached_head: Cell::new(0),
            // Spread producers over the completion slots (Fibonacci hashing
            // of a producer count), so that producers of one lane rarely
            // scan the same slots. Relaxed: any value works, it is a hint.
            next_slot: Cell::new(
                shared
                    .producers_made
                    .fetch_add(1, Ordering::Relaxed)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    >> 40,
            ),
            lane_ptr: core::ptr::NonNull::from(&shared.lanes[ring]),
            shared,
            ring,
            ownership,
            classes: OnceCell::new(),
            _not_sync: PhantomData,
        }
    }

    /// Whether this producer owns its lane (made by
    /// [`Batcher::exclusive_producer`](crate::Batcher::exclusive_producer)).
    pub fn is_exclusive(&self) -> bool {
        matches!(self.ownership, Ownership::Owned(_))
    }

    /// How this producer claims.
    #[inline(always)]
    pub(crate) fn claims(&self) -> Claims {
        self.ownership.claims()
    }

    /// The lane this producer is bound to.
    pub fn lane(&self) -> usize {
        self.ring % self.shared.lane_count
    }

    /// The priority class this producer submits in (`Normal` without
    /// priority classes).
    pub fn priority(&self) -> Priority {
        if self.shared.classes == 1 {
            Priority::Normal
        } else {
            Priority::ALL[self.ring / self.shared.lane_count]
        }
    }

    /// The producer of this lane in class `priority`: this one, or one made
    /// on first use and kept. `None` if the batcher has no classes (and
    /// `priority` is not `Normal`), or that class's ring of this lane is
    /// owned by an exclusive producer.
    pub(crate) fn in_class(&self, priority: Priority) -> Option<&Producer<T, R>> {
        let ring = self.ring_of(priority)?;
        if ring == self.ring {
            return Some(self);
        }
        let cell = &self.classes.get_or_init(Box::default)[priority.index()];
        if let Some(producer) = cell.get() {
            return Some(producer);
        }
        let producer = Self::join(&self.shared, ring)?;
        Some(cell.get_or_init(|| producer))
    }

    /// [`in_class`](Self::in_class), mutably (the async producer polls
    /// through `&mut`).
    pub(crate) fn in_class_mut(&mut self, priority: Priority) -> Option<&mut Producer<T, R>> {
        if self.ring_of(priority)? == self.ring {
            return Some(self);
        }
        self.in_class(priority)?;
        self.classes.get_mut()?[priority.index()].get_mut()
    }

    /// The ring of this lane in class `priority`.
    fn ring_of(&self, priority: Priority) -> Option<usize> {
        if self.shared.classes == 1 {
            (priority == Priority::Normal).then_some(self.ring)
        } else {
            Some(priority.index() * self.shared.lane_count + self.lane())
        }
    }

    /// A producer on the same lane in class `priority` (a shared one).
    ///
    /// # Errors
    ///
    /// [`LaneError::NoPriorities`] if the batcher has no priority classes
    /// and `priority` is not `Normal`; [`LaneError::LaneTaken`] if that
    /// lane's ring in that class is owned by an exclusive producer.
    pub fn with_class(&self, priority: Priority) -> Result<Producer<T, R>, LaneError> {
        let shared = &self.shared;
        let ring = if shared.classes == 1 {
            if priority != Priority::Normal {
                return Err(LaneError::NoPriorities);
            }
            self.ring
        } else {
            priority.index() * shared.lane_count + self.lane()
        };
        Self::join(shared, ring).ok_or(LaneError::LaneTaken { lane: self.lane() })
    }
}

impl<T, R> Producer<T, R> {
    /// Whether the batcher has been shut down (after which every submission
    /// returns [`SubmitError::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.lane_ref().ring.is_closed()
    }

    #[inline(always)]
    pub(crate) fn lane_ref(&self) -> &Lane<T> {
        // SAFETY: `lane_ptr` points into `shared.lanes`, a boxed slice that
        // is never reallocated and lives as long as `shared`, which we hold.
        unsafe { self.lane_ptr.as_ref() }
    }
}

impl<T, R> fmt::Debug for Producer<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("lane", &self.ring)
            .finish_non_exhaustive()
    }
}

/// Waits for room until `timeout` from now (for ever if that is beyond
/// representable time).
pub(crate) fn deadline(timeout: Duration) -> Wait {
    Wait::Block(Instant::now().checked_add(timeout))
}

pub(crate) fn refused<T>(kind: RefusedKind, item: T) -> SubmitError<T> {
    match kind {
        RefusedKind::Full => SubmitError::Full(item),
        RefusedKind::Closed => SubmitError::Closed(item),
        RefusedKind::Timeout => SubmitError::Timeout(item),
        RefusedKind::NoDeadlines => SubmitError::NoDeadlines(item),
        RefusedKind::NoPriorities => SubmitError::NoPriorities(item),
    }
}
