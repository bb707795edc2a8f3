//! Counters and snapshots.
//!
//! Producers write nothing per item: a lane's accepted count is its claim
//! cursor, and the producer-side counters (refusals and drops, per lane,
//! cache-padded) are written only on those slow paths. The drainer keeps its
//! counters in plain integers and publishes them once per batch.

use crate::sync::{AtomicU64, Ordering};

mod groups;
mod rates;

pub use groups::GroupStats;
pub(crate) use groups::{GroupSeries, GroupTable};
pub(crate) use rates::RateWindow;
pub use rates::Throughput;

/// Why a batch was dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DispatchReason {
    /// The batch reached its item limit (`max_batch`, the adaptive size or
    /// its group's limit), or the staging area was full.
    Full,
    /// The batch reached the byte limit.
    Bytes,
    /// The batch's oldest item waited out the linger.
    Linger,
    /// Every lane was caught up (natural batching): a sweep over them found
    /// nothing new, or the drainer had been idle and its first sweep took
    /// everything there was (it then dispatches at once, rather than sweep
    /// again first).
    LanesIdle,
    /// A Critical item was staged.
    Priority,
    /// An item would have expired before the linger ended.
    Deadline,
    /// Its key group dispatches at once.
    Immediate,
    /// [`Batcher::flush`](crate::Batcher::flush) or
    /// [`Batcher::flush_now`](crate::Batcher::flush_now) asked for it.
    Flush,
    /// The batcher is shutting down.
    Shutdown,
    /// (feature `durable`) Items a previous batcher on the same store left,
    /// replayed before new items.
    Replay,
}

impl DispatchReason {
    pub(crate) const COUNT: usize = 10;

    /// Every reason, in the order of [`DispatchCounts`]' fields.
    pub const ALL: [DispatchReason; DispatchReason::COUNT] = [
        DispatchReason::Full,
        DispatchReason::Bytes,
        DispatchReason::Linger,
        DispatchReason::LanesIdle,
        DispatchReason::Priority,
        DispatchReason::Deadline,
        DispatchReason::Immediate,
        DispatchReason::Flush,
        DispatchReason::Shutdown,
        DispatchReason::Replay,
    ];

    pub(crate) fn index(self) -> usize {
        match self {
            DispatchReason::Full => 0,
            DispatchReason::Bytes => 1,
            DispatchReason::Linger => 2,
            DispatchReason::LanesIdle => 3,
            DispatchReason::Priority => 4,
            DispatchReason::Deadline => 5,
            DispatchReason::Immediate => 6,
            DispatchReason::Flush => 7,
            DispatchReason::Shutdown => 8,
            DispatchReason::Replay => 9,
        }
    }

    /// A short name (`"lanes_idle"`), for metric labels.
    pub fn name(self) -> &'static str {
        match self {
            DispatchReason::Full => "full",
            DispatchReason::Bytes => "bytes",
            DispatchReason::Linger => "linger",
            DispatchReason::LanesIdle => "lanes_idle",
            DispatchReason::Priority => "priority",
            DispatchReason::Deadline => "deadline",
            DispatchReason::Immediate => "immediate",
            DispatchReason::Flush => "flush",
            DispatchReason::Shutdown => "shutdown",
            DispatchReason::Replay => "replay",
        }
    }
}

impl core::fmt::Display for DispatchReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DispatchReason::Full => "full",
            DispatchReason::Bytes => "bytes",
            DispatchReason::Linger => "linger",
            DispatchReason::LanesIdle => "lanes idle",
            DispatchReason::Priority => "priority",
            DispatchReason::Deadline => "deadline",
            DispatchReason::Immediate => "immediate",
            DispatchReason::Flush => "flush",
            DispatchReason::Shutdown => "shutdown",
            DispatchReason::Replay => "replay",
        })
    }
}

/// How many batches were dispatched for each reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DispatchCounts {
    /// Batches that reached their item limit.
    pub full: u64,
    /// Batches that reached the byte limit.
    pub bytes: u64,
    /// Batches whose oldest item waited out the linger.
    pub linger: u64,
    /// Batches dispatched because a sweep found nothing new.
    pub lanes_idle: u64,
    /// Batches dispatched at once for a Critical item.
    pub priority: u64,
    /// Batches dispatched early so that an item would not expire.
    pub deadline: u64,
    /// Batches of key groups that dispatch at once.
    pub immediate: u64,
    /// Batches dispatched by a flush.
    pub flush: u64,
    /// Batches dispatched at shutdown.
    pub shutdown: u64,
    /// Batches of items replayed from the durable store.
    pub replay: u64,
}

impl DispatchCounts {
    /// Batches dispatched for any reason.
    pub fn total(&self) -> u64 {
        DispatchReason::ALL.iter().map(|&r| self.get(r)).sum()
    }

    /// Batches dispatched for `reason`.
    pub fn get(&self, reason: DispatchReason) -> u64 {
        match reason {
            DispatchReason::Full => self.full,
            DispatchReason::Bytes => self.bytes,
            DispatchReason::Linger => self.linger,
            DispatchReason::LanesIdle => self.lanes_idle,
            DispatchReason::Priority => self.priority,
            DispatchReason::Deadline => self.deadline,
            DispatchReason::Immediate => self.immediate,
            DispatchReason::Flush => self.flush,
            DispatchReason::Shutdown => self.shutdown,
            DispatchReason::Replay => self.replay,
        }
    }

    fn set(&mut self, reason: DispatchReason, value: u64) {
        *match reason {
            DispatchReason::Full => &mut self.full,
            DispatchReason::Bytes => &mut self.bytes,
            DispatchReason::Linger => &mut self.linger,
            DispatchReason::LanesIdle => &mut self.lanes_idle,
            DispatchReason::Priority => &mut self.priority,
            DispatchReason::Deadline => &mut self.deadline,
            DispatchReason::Immediate => &mut self.immediate,
            DispatchReason::Flush => &mut self.flush,
            DispatchReason::Shutdown => &mut self.shutdown,
            DispatchReason::Replay => &mut self.replay,
        } = value;
    }
}

/// One lane's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LaneStats {
    /// Items accepted into the lane (less those evicted later by
    /// [`Backpressure::DropOldest`](crate::Backpressure::DropOldest), which
    /// count as dropped), including those their submitter handled itself
    /// without passing through the lane
    /// ([`inline_when_idle`](crate::BatcherBuilder::inline_when_idle)).
    pub accepted: u64,
    /// Submissions refused because the lane was full (or stayed full until a
    /// timeout).
    pub rejected: u64,
    /// Items dropped by [`Backpressure::DropNewest`](crate::Backpressure::DropNewest)
    /// or evicted by [`Backpressure::DropOldest`](crate::Backpressure::DropOldest).
    pub dropped: u64,
    /// Submissions refused because the batcher was closed.
    pub refused_closed: u64,
    /// Items in the lane not yet taken by the drainer (a snapshot).
    pub depth: u64,
    /// The deepest the drainer has seen the lane: the longest run of
    /// published items it found at once (a lower bound of the true peak).
    pub high_water: u64,
}

/// A snapshot of a batcher's counters.
///
/// Counters are read one by one while producers and the drainer run, so a
/// snapshot taken under load is not one instant; one taken after
/// [`Batcher::flush`](crate::Batcher::flush) with producers stopped, or the
/// one [`Batcher::shutdown`](crate::Batcher::shutdown) returns, is exact.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Items offered: `accepted + rejected + dropped + refused_closed`.
    pub submitted: u64,
    /// Items accepted into a lane (less those evicted later).
    pub accepted: u64,
    /// Items handed back because their lane was full or stayed full.
    pub rejected: u64,
    /// Items dropped by the `DropNewest` policy or evicted by `DropOldest`.
    pub dropped: u64,
    /// Items handed back because the batcher was closed.
    pub refused_closed: u64,
    /// Batches dispatched to the handler.
    pub batches: u64,
    /// Items dispatched to the handler.
    pub items_handled: u64,
    /// The largest batch dispatched.
    pub max_batch_items: u64,
    /// Batches of a single item (the rest were batched: `batches -
    /// single_item_batches`).
    pub single_item_batches: u64,
    /// With a [`weigher`](crate::BatcherBuilder::weigher): the weight of the
    /// items dispatched, in the weigher's unit (bytes); 0 without one.
    pub bytes_dispatched: u64,
    /// Items and batches dispatched per second over a recent window (see
    /// [`Throughput`]).
    pub throughput: Throughput,
    /// With [`group_by`](crate::BatcherBuilder::group_by): each key group's
    /// counts, the most recently active groups (up to
    /// [`GroupStats::limit`] of them), in increasing key hash order.
    pub groups: Vec<GroupStats>,
    /// The counts of the groups that left [`groups`](Self::groups) to make
    /// room for newer ones, summed (`key_hash` 0).
    pub groups_other: GroupStats,
    /// Why batches were dispatched.
    pub dispatched: DispatchCounts,
    /// Batches whose handler returned an error.
    pub batch_errors: u64,
    /// Batches whose handler panicked.
    pub handler_panics: u64,
    /// Batches handed to async handler tasks or handler threads and not
    /// finished yet: running (at most `max_in_flight`, or one per handler
    /// thread) or queued for a free worker (so at most `pool_size - 1` in
    /// all). 0 with a blocking handler run by the drainer.
    pub batches_in_flight: u64,
    /// Items whose deadline or maximum age passed before dispatch (their
    /// tickets failed with [`Error::Expired`](crate::Error::Expired)).
    pub expired: u64,
    /// Items replaced by a later item of the same conflation key
    /// ([`Error::Superseded`](crate::Error::Superseded)).
    pub superseded: u64,
    /// Items heavier than the byte limit on their own
    /// ([`Error::TooLarge`](crate::Error::TooLarge)).
    pub too_large: u64,
    /// Items the drainer has taken from the lanes and holds in its staging
    /// area, waiting for their batch (0 with no shaping policy).
    pub staged: u64,
    /// The effective maximum batch size now: the adaptive controller's
    /// size, or `max_batch`.
    pub effective_max_batch: u64,
    /// Items whose result was an error: failed by the handler one by one,
    /// or left by a handler that failed or panicked (items a handler
    /// returned `Ok` without completing are not counted).
    pub items_failed: u64,
    /// Items handed to the handler again by the retry policy (each retry of
    /// an item counts).
    pub retried: u64,
    /// Items that failed for good and went to the dead-letter handler (or
    /// would have, with none set).
    pub dead_lettered: u64,
    /// Items failed with `CircuitOpen` because the breaker was open.
    pub circuit_rejected: u64,
    /// The circuit breaker's state.
    pub breaker: BreakerState,
    /// Percentiles of batch size, queue wait, handler time and end-to-end
    /// time, when the batcher records them
    /// ([`BatcherBuilder::histograms`](crate::BatcherBuilder::histograms)).
    pub histograms: Option<Histograms>,
    /// The same four distributions as cumulative bucket counts with an
    /// exact sum, when the batcher records histograms: what the Prometheus
    /// exposition writes as `_bucket`, `_sum` and `_count`, so that it can
    /// be rated and summed across instances (percentiles cannot).
    pub buckets: Option<HistogramBuckets>,
    /// Per-lane counters: one entry per lane, or with priority classes one
    /// per lane and class, class by class (every lane's Critical ring
    /// first).
    pub lanes: Vec<LaneStats>,
    /// Batch buffers the pool was built with.
    pub pool_size: usize,
    /// Batch buffers in the pool now (not being filled or handled).
    pub pool_free: usize,
    /// Bytes fixed at build time: rings, completion slots and batch buffers.
    pub memory_bytes: usize,
    /// Times the drainer went to sleep with every lane empty. The first
    /// item after each sleep pays for waking it (its producer unparks the
    /// drainer); a drainer thread whose
    /// [`wait_strategy`](crate::BatcherBuilder::wait_strategy) never parks
    /// (`BusySpin`, `Yield`, without
    /// [`inline_when_idle`](crate::BatcherBuilder::inline_when_idle))
    /// counts none.
    pub parks: u64,
    /// Park announcements that ran the asymmetric fence, because a lane was
    /// owned by an [`exclusive_producer`](crate::Batcher::exclusive_producer)
    /// (the drainer's parks, and the announcements a submitter's turn makes
    /// under [`inline_when_idle`](crate::BatcherBuilder::inline_when_idle)).
    /// On Linux the fence is a `membarrier`, which interrupts every other
    /// CPU running a thread of this process and briefly stalls it (measured
    /// by `cargo bench --bench fence`; figures in BENCHMARKS.md, "The
    /// fence's cost"). Batchers without exclusive producers count none.
    pub park_fences: u64,
    /// Panics in user code other than the handler, each contained: a key
    /// function, weigher or group-limits function (the item it ran on
    /// failed with [`Error::CallbackPanicked`](crate::Error::CallbackPanicked)),
    /// a dead-letter or spill callback (the item went to it, and is gone).
    /// See the crate docs, "When user code panics".
    pub callback_panics: u64,
    /// Items and results whose `Drop` panicked while the batcher dropped
    /// them (after their batch, or when they were expired, superseded,
    /// evicted or cleared away); each panic was contained, and whatever
    /// the drop had not freed yet is leaked.
    pub drop_panics: u64,
    /// (feature `durable`) The durable store's counts, when the batcher
    /// has one ([`BatcherBuilder::durable`](crate::BatcherBuilder::durable)).
    #[cfg(feature = "durable")]
    pub durable: Option<DurableStats>,
}

/// (feature `durable`) What the durable store wrote, replayed and holds.
#[cfg(feature = "durable")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DurableStats {
    /// This batcher's incarnation on its directory (from 1).
    pub incarnation: u32,
    /// Items written to the store: the batches dispatched, and the items
    /// given back at shutdown.
    pub items_written: u64,
    /// Of those, the items given back at shutdown (by `shutdown_timeout`,
    /// or after a failure of the drainer) rather than dispatched.
    pub written_at_shutdown: u64,
    /// Items the previous incarnations left, handed to the handler again.
    pub replayed: u64,
    /// Bytes of the store's segment files.
    pub bytes_on_disk: u64,
    /// Segment files.
    pub segments: u64,
    /// `fsync`s of the store's files.
    pub fsyncs: u64,
    /// Records cut from corrupt segment tails when the store was opened.
    pub corrupt_records_cut: u64,
    /// Bytes cut from corrupt segment tails when the store was opened.
    pub corrupt_bytes_cut: u64,
    /// Writes and syncs that failed (each reported to its batch, see
    /// [`Batch::store_error`](crate::Batch::store_error), or at shutdown
    /// by giving the items back).
    pub write_errors: u64,
    /// Replayed items whose bytes did not decode (they stay in the store).
    pub decode_errors: u64,
}

impl Stats {
    /// Mean items per batch (0 before the first batch).
    pub fn mean_batch_items(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.items_handled as f64 / self.batches as f64
        }
    }

    /// The per-group series of the exports: name, help and field.
    pub(crate) const GROUP_COUNTERS: [GroupSeries; 4] = [
        (
            "group_items_total",
            "Items dispatched, per key group.",
            |g| g.items,
        ),
        (
            "group_batches_total",
            "Batches dispatched, per key group.",
            |g| g.batches,
        ),
        (
            "group_bytes_total",
            "The weight of the items dispatched, per key group.",
            |g| g.bytes,
        ),
        (
            "group_failures_total",
            "Items whose result was an error, per key group.",
            |g| g.failures,
        ),
    ];

    /// Batch efficiency: the mean batch over the effective maximum batch
    /// size now, from 0 to 1 (0 before the first batch).
    pub fn batch_efficiency(&self) -> f64 {
        if self.effective_max_batch == 0 {
            0.0
        } else {
            (self.mean_batch_items() / self.effective_max_batch as f64).min(1.0)
        }
    }

    /// Batches of more than one item.
    pub fn multi_item_batches(&self) -> u64 {
        self.batches.saturating_sub(self.single_item_batches)
    }

    /// The handler's total time over every batch, with
    /// [`histograms`](crate::BatcherBuilder::histograms) on (the exact sum
    /// of the handler histogram); `None` otherwise.
    pub fn handler_time(&self) -> Option<core::time::Duration> {
        let ns = self.buckets.as_ref()?.handler_ns.sum;
        Some(core::time::Duration::from_nanos(
            u64::try_from(ns).unwrap_or(u64::MAX),
        ))
    }

    /// The total queue depth: items accepted and not yet dispatched, in
    /// every lane and staged (the `queue_depth` gauge of the exports).
    pub fn queue_depth(&self) -> u64 {
        self.in_lanes()
    }

    /// Items accepted but not yet dispatched (a snapshot): in the lanes or
    /// staged.
    pub fn in_lanes(&self) -> u64 {
        self.lanes.iter().map(|l| l.depth).sum::<u64>() + self.staged
    }
}

/// When the drainer offers the `metrics` crate handles a sync (feature
/// `metrics`; a no-op otherwise).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum Moment {
    /// A batch was dispatched, for this reason.
    Batch(DispatchReason),
    /// The drainer found every lane empty (it parks, or spins on).
    Idle,
    /// A flush finished, or the drainer exits: the values must be current.
    Final,
}

/// The drainer's counters as published to other threads.
#[derive(Debug, Default)]
pub(crate) struct DrainerCounters {
    batches: AtomicU64,
    items: AtomicU64,
    max_batch: AtomicU64,
    reasons: [AtomicU64; DispatchReason::COUNT],
    batch_errors: AtomicU64,
    panics: AtomicU64,
    expired: AtomicU64,
    superseded: AtomicU64,
    too_large: AtomicU64,
    staged: AtomicU64,
    items_failed: AtomicU64,
    single_item_batches: AtomicU64,
    bytes: AtomicU64,
    parks: AtomicU64,
    park_fences: AtomicU64,
}

/// The drainer's own running counts (plain integers, single writer).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DrainerTally {
    pub(crate) batches: u64,
    pub(crate) items: u64,
    pub(crate) max_batch: u64,
    pub(crate) reasons: [u64; DispatchReason::COUNT],
    pub(crate) batch_errors: u64,
    pub(crate) panics: u64,
    pub(crate) expired: u64,
    pub(crate) superseded: u64,
    pub(crate) too_large: u64,
    pub(crate) staged: u64,
    pub(crate) items_failed: u64,
    pub(crate) single_item_batches: u64,
    pub(crate) bytes: u64,
}

impl DrainerCounters {
    /// Publishes the drainer's tally (drainer only; Relaxed stores, since the
    /// drainer is the single writer and readers want a recent value, not an
    /// ordering with other memory; a final snapshot is ordered by the join).
    pub(crate) fn publish(&self, tally: &DrainerTally) {
        self.batches.store(tally.batches, Ordering::Relaxed);
        self.items.store(tally.items, Ordering::Relaxed);
        self.max_batch.store(tally.max_batch, Ordering::Relaxed);
        for (slot, value) in self.reasons.iter().zip(tally.reasons) {
            slot.store(value, Ordering::Relaxed);
        }
        self.batch_errors
            .store(tally.batch_errors, Ordering::Relaxed);
        self.panics.store(tally.panics, Ordering::Relaxed);
        self.expired.store(tally.expired, Ordering::Relaxed);
        self.superseded.store(tally.superseded, Ordering::Relaxed);
        self.too_large.store(tally.too_large, Ordering::Relaxed);
        self.staged.store(tally.staged, Ordering::Relaxed);
        self.items_failed
            .store(tally.items_failed, Ordering::Relaxed);
        self.single_item_batches
            .store(tally.single_item_batches, Ordering::Relaxed);
        self.bytes.store(tally.bytes, Ordering::Relaxed);
    }

    /// Publishes what a dispatch of a batch with `reason` changes in the
    /// tally (after a sync or async hand-off that did nothing else since
    /// the last full [`publish`](Self::publish)): the batch and item
    /// counts, the largest batch, `reason`'s count and the handler's
    /// failures. Relaxed, as `publish`.
    #[inline(always)]
    pub(crate) fn publish_batch(&self, tally: &DrainerTally, reason: DispatchReason) {
        self.batches.store(tally.batches, Ordering::Relaxed);
        self.items.store(tally.items, Ordering::Relaxed);
        self.max_batch.store(tally.max_batch, Ordering::Relaxed);
        let index = reason.index();
        self.reasons[index].store(tally.reasons[index], Ordering::Relaxed);
        self.batch_errors
            .store(tally.batch_errors, Ordering::Relaxed);
        self.panics.store(tally.panics, Ordering::Relaxed);
        self.items_failed
            .store(tally.items_failed, Ordering::Relaxed);
        self.single_item_batches
            .store(tally.single_item_batches, Ordering::Relaxed);
        self.bytes.store(tally.bytes, Ordering::Relaxed);
    }

    /// Counts a park announcement: whether the drainer then slept, and
    /// whether the announcement ran the heavy fence. Relaxed: statistics,
    /// as in `publish`; on the park path, not per item.
    pub(crate) fn note_park(&self, slept: bool, fenced: bool) {
        if slept {
            self.parks.fetch_add(1, Ordering::Relaxed);
        }
        if fenced {
            self.park_fences.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads the published tally (Relaxed loads pairing with the Relaxed
    /// stores in `publish`: statistics, ordered with nothing else; a final
    /// snapshot after `shutdown` is ordered by the drainer's join).
    pub(crate) fn fill(&self, stats: &mut Stats) {
        stats.batches = self.batches.load(Ordering::Relaxed);
        stats.items_handled = self.items.load(Ordering::Relaxed);
        stats.max_batch_items = self.max_batch.load(Ordering::Relaxed);
        for reason in DispatchReason::ALL {
            stats
                .dispatched
                .set(reason, self.reasons[reason.index()].load(Ordering::Relaxed));
        }
        stats.batch_errors = self.batch_errors.load(Ordering::Relaxed);
        stats.handler_panics = self.panics.load(Ordering::Relaxed);
        stats.expired = self.expired.load(Ordering::Relaxed);
        stats.superseded = self.superseded.load(Ordering::Relaxed);
        stats.too_large = self.too_large.load(Ordering::Relaxed);
        stats.staged = self.staged.load(Ordering::Relaxed);
        stats.items_failed = self.items_failed.load(Ordering::Relaxed);
        stats.single_item_batches = self.single_item_batches.load(Ordering::Relaxed);
        stats.bytes_dispatched = self.bytes.load(Ordering::Relaxed);
        stats.parks = self.parks.load(Ordering::Relaxed);
        stats.park_fences = self.park_fences.load(Ordering::Relaxed);
    }
}

/// Producer-side counters of one lane, written only on slow paths.
#[derive(Debug, Default)]
pub(crate) struct LaneCounters {
    pub(crate) rejected: AtomicU64,
    /// Items dropped: refused new ones (`DropNewest`) and evicted ones.
    pub(crate) dropped: AtomicU64,
    /// Accepted items evicted since (`DropOldest`), included in `dropped`.
    pub(crate) evicted: AtomicU64,
    pub(crate) refused_closed: AtomicU64,
    /// Claimed slots published empty (a slice whose element clone panicked).
    pub(crate) skipped: AtomicU64,
    /// (`inline_when_idle`) Items the submitter handled itself without
    /// passing through the lane (accepted, though the claim cursor never
    /// counted them). Written under the drainer's state lock.
    pub(crate) direct: AtomicU64,
}

impl LaneCounters {
    /// Adds `n` to `counter` (Relaxed: a statistic, ordered with nothing).
    #[inline]
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads `counter` (Relaxed, as `add`).
    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Panics in user code that the batcher contained (other than the
/// handler's, which count per batch), added where they happen: on the
/// drainer, a worker task or a producer's slow path. Relaxed: statistics.
#[derive(Debug, Default)]
pub(crate) struct ContainedPanics {
    callbacks: AtomicU64,
    drops: AtomicU64,
}

impl ContainedPanics {
    /// A callback (key, weigher, limits, dead letter, spill) panicked.
    #[cold]
    pub(crate) fn callback(&self) {
        self.callbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` drops of items or results panicked.
    #[inline]
    pub(crate) fn drops(&self, n: usize) {
        if n > 0 {
            self.drops.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Adds the counts to `stats`.
    pub(crate) fn fill(&self, stats: &mut Stats) {
        stats.callback_panics += self.callbacks.load(Ordering::Relaxed);
        stats.drop_panics += self.drops.load(Ordering::Relaxed);
    }
}

/// Where the circuit breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BreakerState {
    /// Batches go to the handler (also: no breaker).
    #[default]
    Closed,
    /// Batches fail at once (or wait) until the recovery timeout ends.
    Open,
    /// One trial batch decides.
    HalfOpen,
}

/// Percentiles of one distribution: nanoseconds for times, items for sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// The smallest value.
    pub min: u64,
    /// The mean.
    pub mean: f64,
    /// The median.
    pub p50: u64,
    /// The 90th percentile.
    pub p90: u64,
    /// The 99th percentile.
    pub p99: u64,
    /// The 99.9th percentile.
    pub p999: u64,
    /// The 99.99th percentile.
    pub p9999: u64,
    /// The largest value.
    pub max: u64,
}

impl Percentiles {
    /// The quantiles and their values, for exporters.
    pub fn quantiles(&self) -> [(f64, u64); 5] {
        [
            (0.5, self.p50),
            (0.9, self.p90),
            (0.99, self.p99),
            (0.999, self.p999),
            (0.9999, self.p9999),
        ]
    }
}

/// The histograms of a [`Stats`] snapshot (see the [`metrics`](crate::metrics) docs).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Histograms {
    /// Items per batch.
    pub batch_size: Percentiles,
    /// Submission to dispatch, per item, in nanoseconds.
    pub queue_wait_ns: Percentiles,
    /// Handler time per batch, in nanoseconds.
    pub handler_ns: Percentiles,
    /// Submission to completion, per item, in nanoseconds.
    pub end_to_end_ns: Percentiles,
}

/// One distribution counted into fixed buckets: exact at every bound, and
/// mergeable across batchers and time windows (add the counts).
///
/// Values are in the distribution's unit: items for batch sizes,
/// nanoseconds for times (times above an hour count as an hour).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BucketCounts {
    /// The buckets' upper bounds (inclusive), increasing; the implicit last
    /// bucket (`+Inf`) is [`count`](Self::count).
    pub bounds: Vec<u64>,
    /// Cumulative counts: `cumulative[i]` values were at most `bounds[i]`.
    pub cumulative: Vec<u64>,
    /// Values recorded.
    pub count: u64,
    /// The exact sum of the values recorded.
    pub sum: u128,
}

/// The bucket counts of a [`Stats`] snapshot's histograms (bounds set with
/// [`BatcherBuilder::histogram_buckets`](crate::BatcherBuilder::histogram_buckets)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistogramBuckets {
    /// Items per batch.
    pub batch_size: BucketCounts,
    /// Submission to dispatch, per item, in nanoseconds.
    pub queue_wait_ns: BucketCounts,
    /// Handler time per batch, in nanoseconds.
    pub handler_ns: BucketCounts,
    /// Submission to completion, per item, in nanoseconds.
    pub end_to_end_ns: BucketCounts,
}
