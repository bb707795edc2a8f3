//! [`Producers`], a handle that makes producers, and how new producers are
//! placed on lanes.

use core::fmt;

use crate::Producer;
use crate::batcher::build::current_cpu;
use crate::config::LaneAssignment;
use crate::engine::Shared;
use crate::error::LaneError;
use crate::producer::AsyncProducer;
use crate::shape::Priority;
use crate::sync::{Arc, Ordering};

/// Makes producers for a batcher; see [`Batcher::producers`](crate::Batcher::producers).
pub struct Producers<T, R = ()> {
    pub(crate) shared: Arc<Shared<T, R>>,
}

impl<T, R> Clone for Producers<T, R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T, R> Producers<T, R> {
    /// As [`Batcher::producer`](crate::Batcher::producer).
    pub fn producer(&self) -> Producer<T, R> {
        new_producer(&self.shared)
    }

    /// As [`Batcher::async_producer`](crate::Batcher::async_producer).
    pub fn async_producer(&self) -> AsyncProducer<T, R> {
        new_async_producer(&self.shared)
    }

    /// As [`Batcher::producer_on_lane`](crate::Batcher::producer_on_lane).
    ///
    /// # Errors
    ///
    /// [`LaneError::NoSuchLane`] if there is no such lane,
    /// [`LaneError::LaneTaken`] if an exclusive producer owns it.
    pub fn producer_on_lane(&self, lane: usize) -> Result<Producer<T, R>, LaneError> {
        new_producer_on_lane(&self.shared, lane)
    }

    /// As [`Batcher::exclusive_producer`](crate::Batcher::exclusive_producer).
    ///
    /// # Errors
    ///
    /// As for [`Batcher::exclusive_producer`](crate::Batcher::exclusive_producer).
    pub fn exclusive_producer(&self) -> Result<Producer<T, R>, LaneError> {
        new_exclusive_producer(&self.shared)
    }

    /// As [`Batcher::exclusive_async_producer`](crate::Batcher::exclusive_async_producer).
    ///
    /// # Errors
    ///
    /// As for [`Batcher::exclusive_producer`](crate::Batcher::exclusive_producer).
    pub fn exclusive_async_producer(&self) -> Result<AsyncProducer<T, R>, LaneError> {
        new_exclusive_producer(&self.shared).map(AsyncProducer::new)
    }

    /// As [`Batcher::producer_with_priority`](crate::Batcher::producer_with_priority).
    ///
    /// # Errors
    ///
    /// As for [`Batcher::producer_with_priority`](crate::Batcher::producer_with_priority).
    pub fn producer_with_priority(&self, priority: Priority) -> Result<Producer<T, R>, LaneError> {
        new_producer(&self.shared).with_class(priority)
    }
}

impl<T, R> fmt::Debug for Producers<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producers")
            .field("lanes", &self.shared.lane_count)
            .finish_non_exhaustive()
    }
}

/// A producer on the lane the batcher's [`LaneAssignment`] picks (or the
/// next one not owned by an exclusive producer).
pub(crate) fn new_producer<T, R>(shared: &Arc<Shared<T, R>>) -> Producer<T, R> {
    let lanes = shared_lanes(shared);
    let lane = match shared.config.lane_assignment {
        LaneAssignment::CurrentCore => current_cpu().map(|cpu| cpu % lanes),
        LaneAssignment::RoundRobin => None,
    }
    // Relaxed: a counter for spreading producers, ordered with nothing.
    .unwrap_or_else(|| shared.next_lane.fetch_add(1, Ordering::Relaxed) % lanes);
    join_from(shared, lane)
}

/// A shared producer on `lane`, or on the next lane after it that no
/// exclusive producer owns (there is always one: see
/// [`Shared::exclusive_lanes`]).
pub(crate) fn join_from<T, R>(shared: &Arc<Shared<T, R>>, lane: usize) -> Producer<T, R> {
    let lanes = shared.lane_count;
    loop {
        for step in 0..lanes {
            if let Some(producer) =
                Producer::join(shared, normal_ring(shared, (lane + step) % lanes))
            {
                return producer;
            }
        }
        // Only while exclusive producers come and go: look again.
        crate::sync::thread::yield_now();
    }
}

/// The ring of `lane` in the Normal class.
pub(crate) fn normal_ring<T, R>(shared: &Shared<T, R>, lane: usize) -> usize {
    normal_class(shared.classes) * shared.lane_count + lane
}

/// Largest item a lane laid out for exclusive producers keeps apart from
/// its stamps; larger items sit beside their stamps on every lane.
pub(crate) const SPLIT_MAX_ITEM: usize = 16;

/// The index of the Normal class among `classes` priority classes.
pub(crate) fn normal_class(classes: usize) -> usize {
    if classes > 1 {
        Priority::Normal.index()
    } else {
        0
    }
}

/// The lanes shared producers are assigned to: all but the ones laid out
/// for exclusive producers.
pub(crate) fn shared_lanes<T, R>(shared: &Shared<T, R>) -> usize {
    shared.lane_count - shared.config.exclusive_lanes
}

/// An async producer on the next lane in turn.
pub(crate) fn new_async_producer<T, R>(shared: &Arc<Shared<T, R>>) -> AsyncProducer<T, R> {
    let lanes = shared_lanes(shared);
    // Relaxed: as in `new_producer`.
    let lane = shared.next_lane.fetch_add(1, Ordering::Relaxed) % lanes;
    AsyncProducer::new(join_from(shared, lane))
}

pub(crate) fn new_producer_on_lane<T, R>(
    shared: &Arc<Shared<T, R>>,
    lane: usize,
) -> Result<Producer<T, R>, LaneError> {
    let lanes = shared.lane_count;
    if lane >= lanes {
        return Err(LaneError::NoSuchLane { lane, lanes });
    }
    Producer::join(shared, normal_ring(shared, lane)).ok_or(LaneError::LaneTaken { lane })
}

/// An exclusive producer on the first lane that has no producer (the lanes
/// laid out for exclusive producers first), keeping one lane open to shared
/// producers.
pub(crate) fn new_exclusive_producer<T, R>(
    shared: &Arc<Shared<T, R>>,
) -> Result<Producer<T, R>, LaneError> {
    let lanes = shared.lane_count;
    // Reserve one of the `lanes - 1` exclusive places first. Relaxed: a
    // counter; the lanes' own words order the producers.
    let reserved = shared
        .exclusive_lanes
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n + 1 < lanes).then_some(n + 1)
        });
    if reserved.is_err() {
        return Err(LaneError::NoFreeLane { lanes });
    }
    // The lanes laid out for exclusive producers first, then the others.
    let first = shared_lanes(shared);
    for lane in (first..lanes).chain(0..first) {
        let ring = normal_ring(shared, lane);
        if shared.lanes[ring].take() {
            return Ok(Producer::owner(Arc::clone(shared), ring));
        }
    }
    shared.exclusive_lanes.fetch_sub(1, Ordering::Relaxed);
    Err(LaneError::NoFreeLane { lanes })
}
