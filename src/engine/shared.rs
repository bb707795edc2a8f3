//! `Shared`: the state that producers, the drainer and the batcher share,
//! and the control words through which the batcher talks to the drainer.

use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::batch::Pool;
use crate::completion::TableOwner;
use crate::config::Config;
use crate::engine::Lane;
use crate::engine::drainer::Drainer;
use crate::error::Error;
use crate::ring::Ring;
use crate::shape::{Controller, ExpiryStamps, Linger};
use crate::stats::{ContainedPanics, DrainerCounters, LaneCounters, LaneStats, Moment, Stats};
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, OnceLock, Ordering, thread};
use crate::wait::Progress;

/// The `spill` callback.
pub(crate) type Spill<T> = Box<dyn Fn(T) + Send + Sync>;

/// Requests to the drainer, read by it on every loop turn.
pub(crate) struct Control {
    /// Shutdown has begun: every lane is closed; drain and stop.
    pub(crate) closing: AtomicBool,
    /// Flush requests made (a counter, so concurrent flushes coalesce).
    pub(crate) flush_requested: AtomicU64,
    /// `flush_now` requests made: dispatch what is staged, without waiting.
    pub(crate) flush_now: AtomicU64,
    /// `pause` is in force: the drainer takes and dispatches nothing.
    pub(crate) paused: AtomicBool,
    /// `shutdown_timeout`'s deadline (ns since the epoch; `NEVER` if none):
    /// past it the drainer stops handling and gives the items back.
    pub(crate) give_back_at: AtomicU64,
    /// The live `max_batch` (`set_max_batch`).
    pub(crate) max_batch: AtomicUsize,
    /// Live settings changed (a counter the drainer compares).
    pub(crate) settings_version: AtomicU64,
    /// The effective maximum batch size (the adaptive controller's).
    pub(crate) effective_max: AtomicUsize,
    /// `Backpressure::IncreaseBatchSize`: a producer found its lane full
    /// since the drainer last looked.
    pub(crate) pressure: AtomicBool,
}

/// State shared by the batcher, its producers and the drainer.
///
/// Layout: producers read `lanes` (once, when made), `table` (for tickets)
/// and `config` (on slow paths); the drainer writes `counters` once per
/// batch and the async workers write the pipeline's counters. Those written
/// fields sit in cache-padded cells of their own, so that no write of the
/// drainer or a worker invalidates a line producers read (a unit test checks
/// the offsets).
pub(crate) struct Shared<T, R> {
    /// The rings: one per lane, or with priority classes one per lane and
    /// class, class-major (ring `class * lane_count + lane`).
    pub(crate) lanes: Box<[Lane<T>]>,
    /// Lanes (cores), without the classes.
    pub(crate) lane_count: usize,
    /// Priority classes: 1, or 4 with priorities on.
    pub(crate) classes: usize,
    /// The adaptive controller, if any (locked once per batch).
    pub(crate) controller: Option<Mutex<Controller>>,
    /// Bytes of the drainer's staging area (for the memory report).
    pub(crate) staging_bytes: usize,
    /// Time zero of the drainer's clock (expiry stamps, histograms).
    pub(crate) epoch: Instant,
    /// The histograms, when recorded (locked once per batch).
    pub(crate) recorder: Option<Mutex<crate::metrics::Recorder>>,
    /// With `group_by`: each key group's counts (locked once per batch).
    pub(crate) groups: Option<Mutex<crate::stats::GroupTable>>,
    /// Recent snapshots' counts, for `Stats::throughput`.
    pub(crate) rates: Mutex<crate::stats::RateWindow>,
    /// The `metrics` crate handles, when registered (`BatcherBuilder::metrics`).
    #[cfg(feature = "metrics")]
    pub(crate) facade: Option<crate::metrics_facade::Facade>,
    /// The failure policies' state, when any is set (locked once per batch).
    pub(crate) failure: Option<Mutex<crate::failure::FailureState<T>>>,
    /// Items `shutdown_timeout` gives back (filled by the drainer).
    pub(crate) leftovers: Mutex<Vec<T>>,
    /// A new linger for the drainer's assembler (`set_linger`).
    pub(crate) new_linger: Mutex<Option<Linger>>,
    /// Whether the batcher was built with a shaping policy (staging drainer).
    pub(crate) shaping: bool,
    /// The deepest each ring was seen (drainer writes, `stats` reads).
    pub(crate) high_water: Box<[AtomicU64]>,
    pub(crate) table: TableOwner<R>,
    pub(crate) control: CachePadded<Control>,
    /// Flush waiters sleep here; the drainer reports each completed flush.
    pub(crate) progress: Progress,
    pub(crate) counters: CachePadded<DrainerCounters>,
    pub(crate) pool: Pool<T>,
    /// Contained panics of user code other than the handler (rare; plain
    /// data, so the standard `Arc`, shared with the pool and the assembler).
    pub(crate) panics: std::sync::Arc<ContainedPanics>,
    /// The drainer's thread, set before any producer exists.
    pub(crate) drainer: OnceLock<thread::Thread>,
    pub(crate) config: Config,
    /// Receives every item a drop policy discards (called by producers).
    pub(crate) spill: Option<Spill<T>>,
    pub(crate) next_lane: AtomicUsize,
    /// Lanes owned by exclusive producers (at most `lane_count - 1`, so that
    /// shared producers always find a lane).
    pub(crate) exclusive_lanes: AtomicUsize,
    /// Producers made so far (spreads their completion slot cursors).
    pub(crate) producers_made: AtomicUsize,
    /// The hand-off to async worker tasks, with an async handler.
    #[cfg(feature = "tokio")]
    pub(crate) pipeline: CachePadded<Option<crate::engine::runtime::Pipeline<T>>>,
    /// The hand-off to handler threads, with `handler_threads`.
    pub(crate) threads: CachePadded<Option<crate::engine::threads::Threads<T>>>,
    /// How to wake the drainer when it runs as a task.
    #[cfg(feature = "tokio")]
    pub(crate) drainer_task: Option<crate::engine::runtime::TaskWake>,
    /// With `inline_when_idle`: the drainer's state, which a submitter that
    /// finds the drainer asleep may lock to run a turn itself.
    pub(crate) inline: Option<Inline<T, R>>,
    /// (feature `durable`) The durable store, when configured.
    #[cfg(feature = "durable")]
    pub(crate) durable: Option<crate::engine::durable::Durable<T>>,
}

/// The drainer's state shared with submitters, and the turn they run.
pub(crate) struct Inline<T, R> {
    pub(crate) cell: Box<crate::engine::drainer::InlineCell<T, R>>,
    /// [`Drainer::inline_turn`], named here where its bounds are known.
    pub(crate) turn: fn(&mut Drainer<T, R>) -> bool,
    /// [`Drainer::direct`], when the configuration allows the direct path
    /// (no failure policies, no histograms).
    pub(crate) direct: Option<DirectFn<T, R>>,
}

/// [`Drainer::direct`]'s type.
pub(crate) type DirectFn<T, R> =
    fn(&crate::engine::drainer::InlineCell<T, R>, usize, T) -> Result<Result<R, Error>, T>;

impl<T, R> Shared<T, R> {
    /// Tells the drainer to give back, from `timeout` after now, every
    /// item it has not handled (`shutdown_timeout`).
    pub(crate) fn give_back_after(&self, timeout: Duration) {
        let at = self
            .clock()
            .saturating_add(crate::shape::duration_ns(timeout));
        // Release: the drainer's Acquire load (after it sees `closing`).
        self.control.give_back_at.store(at, Ordering::Release);
    }

    /// The async hand-off (only called in async mode).
    #[cfg(feature = "tokio")]
    pub(crate) fn pipeline(&self) -> &crate::engine::runtime::Pipeline<T> {
        self.pipeline
            .as_ref()
            .expect("the async pipeline exists with an async handler")
    }

    /// The handler threads' hand-off (only called with handler threads).
    pub(crate) fn threads(&self) -> &crate::engine::threads::Threads<T> {
        self.threads
            .as_ref()
            .expect("the hand-off exists with handler threads")
    }

    /// Wakes the drainer (after publishing into a lane it announced it would
    /// park on, or after posting a request).
    #[cold]
    pub(crate) fn unpark_drainer(&self) {
        if let Some(thread) = self.drainer.get() {
            thread.unpark();
        }
        #[cfg(feature = "tokio")]
        if let Some(task) = &self.drainer_task {
            task.wake();
        }
    }

    /// Wakes the drainer after a ticketed claim that took a park
    /// announcement off its lane: with `inline_when_idle`, runs a drainer
    /// turn on this thread instead when the drainer's state is free.
    #[cold]
    pub(crate) fn wake_for_ticket(&self) {
        match &self.inline {
            Some(inline) => {
                crate::engine::drainer::run_or_wake(&inline.cell, inline.turn, || {
                    self.unpark_drainer()
                });
            }
            None => self.unpark_drainer(),
        }
    }

    /// Reports one batch's handler time and load feedback to the adaptive
    /// controller, if any, and publishes the new effective size.
    pub(crate) fn observe_batch(
        &self,
        handler_time: Duration,
        feedback: Option<crate::batch::LoadFeedback>,
    ) {
        if let Some(controller) = &self.controller {
            let size =
                crate::contain::lock(controller).observe(handler_time, feedback, Instant::now());
            // Relaxed: a tuning value, read by the drainer for its next batch.
            self.control.effective_max.store(size, Ordering::Relaxed);
        }
    }

    /// `Backpressure::IncreaseBatchSize`, once per sweep of the shaping
    /// drainer: a producer found its lane full since the last sweep raises
    /// the effective size a step; a sweep that found the lanes drained
    /// (`idle`) lowers it a step, while raised steps are left to undo.
    pub(crate) fn adjust_for_pressure(&self, idle: bool) {
        let Some(controller) = &self.controller else {
            return;
        };
        // Relaxed: a hint that publishes no data; a late flag only moves
        // the size one sweep later.
        let size = if self.control.pressure.swap(false, Ordering::Relaxed) {
            crate::contain::lock(controller).raise()
        } else if idle {
            crate::contain::lock(controller).relax()
        } else {
            return;
        };
        // Relaxed: as in `observe_batch`.
        self.control.effective_max.store(size, Ordering::Relaxed);
    }

    /// `n` failed items of a batch of key group `group`, for its counts.
    #[inline(always)]
    pub(crate) fn group_failed(&self, group: Option<u64>, n: usize) {
        if n > 0 {
            if let (Some(groups), Some(group)) = (&self.groups, group) {
                crate::contain::lock(groups).failed(group, n as u64);
            }
        }
    }

    /// A producer found its lane full (`Backpressure::IncreaseBatchSize`).
    #[cold]
    pub(crate) fn signal_pressure(&self) {
        // Relaxed: a hint (see `observe_batch`); loaded first so that blocked
        // producers do not keep taking the line from each other.
        if !self.control.pressure.load(Ordering::Relaxed) {
            self.control.pressure.store(true, Ordering::Relaxed);
        }
    }

    /// This batcher's identity, for [`scope`](crate::scope): the address
    /// of its shared state.
    #[inline(always)]
    pub(crate) fn id(&self) -> usize {
        core::ptr::from_ref(self).cast::<()>() as usize
    }

    /// Whether the current thread runs this batcher's handler, or is its
    /// drainer thread (which runs the dead-letter callback too): a wait
    /// for the drainer from here would never end.
    pub(crate) fn called_back(&self) -> bool {
        crate::scope::running(self.id())
            || self.drainer.get().map(|t| t.id()) == Some(thread::current().id())
    }

    /// Nanoseconds since the epoch.
    #[inline]
    pub(crate) fn clock(&self) -> u64 {
        crate::shape::duration_ns(self.epoch.elapsed())
    }

    /// With histograms: records a finished batch (its handler time and its
    /// items' end-to-end times).
    pub(crate) fn record_finished(&self, handler: Duration, buf: &crate::batch::BatchBuf<T>) {
        if let Some(recorder) = &self.recorder {
            let now = self.clock();
            crate::contain::lock(recorder).finished(
                handler,
                buf.runs
                    .iter()
                    .map(|&(since, count)| (now.saturating_sub(since), count)),
            );
        }
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        let lanes = self.lanes.len();
        let capacity = self.config.capacity;
        lanes * (capacity * Ring::<T>::slot_bytes() + core::mem::size_of::<Lane<T>>())
            + lanes * self.config.result_slot_count() * crate::completion::Table::<R>::slot_bytes()
            + self.pool.footprint()
            + self
                .lanes
                .iter()
                .filter_map(|lane| lane.expiry.as_ref().map(ExpiryStamps::bytes))
                .sum::<usize>()
            + self.staging_bytes
            + self
                .recorder
                .as_ref()
                .map_or(0, |r| crate::contain::lock(r).footprint())
            + self
                .threads
                .as_ref()
                .map_or(0, crate::engine::threads::Threads::footprint)
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        self.fill_counts(&mut stats);
        if let Some(recorder) = &self.recorder {
            let recorder = crate::contain::lock(recorder);
            stats.histograms = Some(recorder.snapshot());
            stats.buckets = Some(recorder.buckets());
        }
        if let Some(groups) = &self.groups {
            crate::contain::lock(groups).fill(&mut stats);
        }
        #[cfg(feature = "durable")]
        {
            stats.durable = self
                .durable
                .as_ref()
                .map(crate::engine::durable::Durable::stats);
        }
        stats.throughput = crate::contain::lock(&self.rates).observe(
            Instant::now(),
            stats.items_handled,
            stats.batches,
        );
        stats
    }

    /// Offers the `metrics` crate handles a sync (see `Facade::sync`).
    #[inline]
    pub(crate) fn metrics_sync(&self, moment: Moment) {
        #[cfg(feature = "metrics")]
        if let Some(facade) = &self.facade {
            facade.sync(moment, self.clock(), |stats| self.fill_counts(stats));
        }
        #[cfg(not(feature = "metrics"))]
        let _ = moment;
    }

    /// Counts a park announcement (see `DrainerCounters::note_park`): the
    /// lanes were found empty, a moment for the `metrics` handles too.
    pub(crate) fn note_park(&self, slept: bool, fenced: bool) {
        self.counters.note_park(slept, fenced);
        // A park that slept or fenced changed its own counters: those sync
        // now (once per park, never per item), not at the next batch.
        self.metrics_sync(if slept || fenced {
            Moment::Final
        } else {
            Moment::Idle
        });
    }

    /// Reports flushes up to `flush` done, the `metrics` handles brought
    /// up to date first (a flush's caller may read them next).
    pub(crate) fn flushed(&self, flush: u64) {
        self.metrics_sync(Moment::Final);
        self.progress.flushed(flush);
    }

    /// Every count of [`stats`](Self::stats) but the histograms' into
    /// `stats` (zeroed first); allocates only to grow `stats.lanes`.
    pub(crate) fn fill_counts(&self, stats: &mut Stats) {
        let mut lanes = core::mem::take(&mut stats.lanes);
        lanes.clear();
        *stats = Stats {
            memory_bytes: self.memory_bytes(),
            pool_size: self.pool.size(),
            pool_free: self.pool.available(),
            ..Stats::default()
        };
        self.counters.fill(stats);
        self.panics.fill(stats);
        stats.drop_panics += self.table.get().result_drop_panics();
        // Relaxed: a statistic.
        stats.effective_max_batch = self.control.effective_max.load(Ordering::Relaxed) as u64;
        if let Some(failure) = &self.failure {
            let failure = crate::contain::lock(failure);
            stats.retried = failure.tally.retried;
            stats.dead_lettered = failure.tally.dead_lettered;
            stats.circuit_rejected = failure.tally.circuit_rejected;
            stats.callback_panics += failure.tally.callback_panics;
            stats.drop_panics += failure.tally.drop_panics;
            stats.breaker = failure.breaker_state();
        }
        #[cfg(feature = "tokio")]
        if let Some(pipeline) = &*self.pipeline {
            stats.batches_in_flight = pipeline.in_flight() as u64;
            // Relaxed: statistics, as in `DrainerCounters::fill`.
            stats.batch_errors += pipeline.batch_errors.load(Ordering::Relaxed);
            stats.handler_panics += pipeline.panics.load(Ordering::Relaxed);
            stats.items_failed += pipeline.items_failed.load(Ordering::Relaxed);
        }
        if let Some(threads) = &*self.threads {
            stats.batches_in_flight = threads.in_flight() as u64;
            // Relaxed: statistics, as in `DrainerCounters::fill`.
            stats.batch_errors += threads.batch_errors.load(Ordering::Relaxed);
            stats.handler_panics += threads.panics.load(Ordering::Relaxed);
            stats.items_failed += threads.items_failed.load(Ordering::Relaxed);
        }
        lanes.extend(
            self.lanes
                .iter()
                .zip(self.high_water.iter())
                .map(|(lane, high_water)| {
                    let tail = lane.ring.claimed();
                    // Sequences published empty: by a producer that panicked
                    // filling a slice, or by an owner that found the lane closed.
                    let skipped =
                        LaneCounters::get(&lane.counters.skipped) + lane.ring.given_up() as u64;
                    let evicted = LaneCounters::get(&lane.counters.evicted);
                    LaneStats {
                        // The claim cursor counts every accepted item (sequence
                        // numbers start at 0), less the slots published empty
                        // and the items evicted since (counted as dropped).
                        // Items handled directly by their submitters are
                        // accepted without a claim.
                        accepted: (tail as u64).saturating_sub(skipped + evicted)
                            + LaneCounters::get(&lane.counters.direct),
                        rejected: LaneCounters::get(&lane.counters.rejected),
                        dropped: LaneCounters::get(&lane.counters.dropped),
                        refused_closed: LaneCounters::get(&lane.counters.refused_closed),
                        depth: lane.ring.depth() as u64,
                        // Relaxed: a statistic.
                        high_water: high_water.load(Ordering::Relaxed),
                    }
                }),
        );
        stats.lanes = lanes;
        for lane in &stats.lanes {
            stats.accepted += lane.accepted;
            stats.rejected += lane.rejected;
            stats.dropped += lane.dropped;
            stats.refused_closed += lane.refused_closed;
        }
        stats.submitted = stats.accepted + stats.rejected + stats.dropped + stats.refused_closed;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::Shared;

    /// The cache lines `[offset, offset + size)` touches.
    fn lines(offset: usize, size: usize) -> core::ops::Range<usize> {
        offset / 64..(offset + size).div_ceil(64)
    }

    fn disjoint(a: &core::ops::Range<usize>, b: &core::ops::Range<usize>) -> bool {
        a.end <= b.start || b.end <= a.start
    }

    /// No field the drainer or the async workers write shares a cache line
    /// with a field producers read (see `Shared`'s layout note). `Shared` is
    /// 128-byte aligned (it holds `CachePadded` fields), so offsets map to
    /// the same lines wherever the allocation lands.
    #[test]
    fn drainer_written_counters_do_not_share_lines_with_producer_reads() {
        type S = Shared<u64, u64>;
        assert_eq!(core::mem::align_of::<S>() % 64, 0);
        let read = [
            lines(offset_of!(S, lanes), size_of::<Box<[super::Lane<u64>]>>()),
            lines(
                offset_of!(S, table),
                size_of::<crate::completion::TableOwner<u64>>(),
            ),
            lines(offset_of!(S, config), size_of::<crate::config::Config>()),
        ];
        let mut written = vec![lines(
            offset_of!(S, counters),
            size_of::<crossbeam_utils::CachePadded<crate::stats::DrainerCounters>>(),
        )];
        written.push(lines(
            offset_of!(S, threads),
            size_of::<crossbeam_utils::CachePadded<Option<crate::engine::threads::Threads<u64>>>>(),
        ));
        #[cfg(feature = "tokio")]
        written.push(lines(
            offset_of!(S, pipeline),
            size_of::<crossbeam_utils::CachePadded<Option<crate::engine::runtime::Pipeline<u64>>>>(
            ),
        ));
        for w in &written {
            for r in &read {
                assert!(
                    disjoint(w, r),
                    "written lines {w:?} overlap producer-read lines {r:?}"
                );
            }
        }
    }
}
