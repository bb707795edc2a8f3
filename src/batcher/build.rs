//! `BatcherBuilder::build`, in steps: the settings resolved and checked,
//! the shared state made, the drainer started.

use std::time::Instant;

use crossbeam_utils::CachePadded;

use crate::batch::Pool;
use crate::batcher::builder::HandlerKind;
use crate::batcher::{SPLIT_MAX_ITEM, normal_class};
use crate::completion::TableOwner;
use crate::config::{Backpressure, Config, ConfigError, MAX_HANDLER_THREADS, ThreadRouting};
use crate::engine::drainer::{Drainer, Sink};
use crate::engine::{Control, DirectFn, Inline, Lane, Shared};
use crate::failure::FailureSettings;
#[cfg(feature = "metrics")]
use crate::metrics::FacadeHistograms;
use crate::metrics::{BoundsFault, Recorder};
#[cfg(feature = "metrics")]
use crate::metrics_facade::Facade;
use crate::ring::Ring;
use crate::shape::{Assembler, Controller, ExpiryStamps, NEVER, Shaping};
use crate::stats::{ContainedPanics, DrainerCounters, LaneCounters};
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, OnceLock, thread};
use crate::wait::Progress;
use crate::{Batcher, BatcherBuilder};

/// Where the drainer runs, as the settings decide.
#[derive(Clone, Copy)]
struct Placement {
    /// The handler is async: batches go to worker tasks.
    is_async: bool,
    /// The drainer is a task on the runtime, not a thread.
    on_runtime: bool,
    /// Handler threads (`handler_threads`) and their routing.
    threads: Option<(usize, ThreadRouting)>,
}

impl<T: Send + 'static, R: Send + 'static> BatcherBuilder<T, R> {
    /// Checks the settings, allocates every lane, slot and batch buffer, and
    /// starts the drainer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid setting, or saying why the
    /// drainer could not start.
    pub fn build(mut self) -> Result<Batcher<T, R>, ConfigError> {
        let placement = self.settle()?;
        #[cfg(feature = "tokio")]
        let runtime = self.resolve_runtime(placement)?;
        let handler = self.handler.take().ok_or(ConfigError::MissingHandler)?;
        #[cfg(feature = "durable")]
        let durable = self.open_durable()?;
        let (shared, assembler) = self.make_shared(
            placement,
            #[cfg(feature = "durable")]
            durable,
        );
        let sink = match handler {
            HandlerKind::Sync(handler) => Sink::Sync(handler),
            HandlerKind::Threads(make) => {
                let (n, _) = placement.threads.expect("settled with handler threads");
                let handlers = make_handlers(make, n)?;
                crate::engine::threads::spawn_threads(&shared, handlers)?;
                Sink::Threads
            }
            #[cfg(feature = "tokio")]
            HandlerKind::Async(start) => {
                let runtime = runtime
                    .as_ref()
                    .expect("resolved above for an async handler");
                start(&shared, shared.config.max_in_flight, runtime);
                Sink::Async
            }
        };
        let drainer = Drainer::new(Arc::clone(&shared), sink, assembler);
        #[cfg(feature = "tokio")]
        if placement.on_runtime {
            let runtime = runtime.as_ref().expect("resolved above");
            runtime.spawn(drainer.on_runtime().run_async());
            return Ok(Batcher {
                shared,
                drainer: None,
                stopping: false,
            });
        }
        let handle = match start_drainer_thread(&shared, drainer) {
            Ok(handle) => handle,
            Err(e) => {
                if placement.threads.is_some() {
                    crate::engine::threads::close(&shared);
                }
                return Err(e);
            }
        };
        Ok(Batcher {
            shared,
            drainer: Some(handle),
            stopping: false,
        })
    }

    /// Under loom: the batcher with its drainer on a loom thread, started
    /// without `build`'s handshake (a std channel, which loom cannot run).
    /// Blocking handler, drainer on its own thread, default shaping.
    #[cfg(all(loom, test))]
    pub(crate) fn start_modelled(mut self) -> Batcher<T, R> {
        let placement = self.settle().expect("valid settings");
        let handler = match self.handler.take() {
            Some(HandlerKind::Sync(handler)) => handler,
            _ => panic!("a loom model runs a blocking handler"),
        };
        let (shared, assembler) = self.make_shared(
            placement,
            #[cfg(feature = "durable")]
            None,
        );
        let drainer = Drainer::new(Arc::clone(&shared), Sink::Sync(handler), assembler);
        let handle = thread::Builder::new()
            .spawn(move || drainer.run())
            .expect("a loom thread");
        let _ = shared.drainer.set(handle.thread().clone());
        Batcher {
            shared,
            drainer: Some(handle),
            stopping: false,
        }
    }

    /// Fills in the defaults that follow other settings, then checks every
    /// setting and every combination: the first problem is the error.
    fn settle(&mut self) -> Result<Placement, ConfigError> {
        #[cfg(feature = "serde")]
        if let Some(refused) = self.refused.take() {
            return Err(refused);
        }
        if !self.max_batch_set && self.config.capacity > 0 {
            self.config.max_batch = self.config.max_batch.min(self.config.capacity);
        }
        #[cfg(feature = "tokio")]
        let is_async = matches!(self.handler, Some(HandlerKind::Async(_)));
        #[cfg(not(feature = "tokio"))]
        let is_async = false;
        let threads = self.check_threads(is_async)?;
        if is_async && !self.pool_size_set {
            let needed = self.config.max_in_flight.saturating_add(1);
            self.config.pool_size = self.config.pool_size.max(needed);
        }
        if let (Some((n, _)), false) = (threads, self.pool_size_set) {
            self.config.pool_size = self.config.pool_size.max(n + 1);
        }
        self.config.validate()?;
        self.shaping.validate(self.config.max_batch)?;
        if self.config.backpressure == Backpressure::IncreaseBatchSize
            && self.shaping.adaptive.is_none()
        {
            return Err(ConfigError::Invalid {
                field: "backpressure",
                reason: "IncreaseBatchSize raises the adaptive size: set `adaptive` too",
            });
        }
        self.check_buckets()?;
        if let Some(policy) = &self.failure.retry {
            policy.validate()?;
            if policy.in_order && (is_async || threads.is_some()) {
                return Err(ConfigError::Invalid {
                    field: "retry_policy.in_order",
                    reason: "keeps retries in order on the drainer thread: an async \
                             handler or handler threads run several batches at once",
                });
            }
            // Batches waiting to retry hold buffers: keep some for new ones.
            if !self.pool_size_set {
                self.config.pool_size = self.config.pool_size.max(8);
            }
        }
        if let Some(breaker) = &self.failure.breaker {
            breaker.validate()?;
        }
        if self.handler.is_none() {
            return Err(ConfigError::MissingHandler);
        }
        if is_async && self.config.pool_size <= self.config.max_in_flight {
            return Err(ConfigError::PoolTooSmall {
                pool_size: self.config.pool_size,
                needed: self.config.max_in_flight + 1,
            });
        }
        if let Some((n, _)) = threads {
            if self.config.pool_size <= n {
                return Err(ConfigError::PoolTooSmall {
                    pool_size: self.config.pool_size,
                    needed: n + 1,
                });
            }
        }
        #[cfg(feature = "tokio")]
        let on_runtime = self.drain_on_runtime;
        #[cfg(not(feature = "tokio"))]
        let on_runtime = false;
        let placement = Placement {
            is_async,
            on_runtime,
            threads,
        };
        self.check_placement(placement)?;
        #[cfg(feature = "durable")]
        self.check_durable(on_runtime)?;
        self.check_inline(placement)?;
        Ok(placement)
    }

    /// `handler_threads` and `thread_routing`: the thread count and routing,
    /// if handler threads run the batches.
    fn check_threads(&self, is_async: bool) -> Result<Option<(usize, ThreadRouting)>, ConfigError> {
        let threaded = matches!(self.handler, Some(HandlerKind::Threads(_)));
        let Some(n) = self.handler_threads else {
            if self.thread_routing.is_some() {
                return Err(ConfigError::Invalid {
                    field: "thread_routing",
                    reason: "routes batches between handler threads: set handler_threads",
                });
            }
            return Ok(None);
        };
        if !threaded {
            return Err(ConfigError::Invalid {
                field: "handler_threads",
                reason: if is_async {
                    "runs blocking handlers, but an async handler was given after it \
                     (an async handler runs max_in_flight batches at once)"
                } else {
                    "a single handler was given after it: give the handlers with \
                     handler_threads alone"
                },
            });
        }
        if n == 0 {
            return Err(ConfigError::Zero {
                field: "handler_threads",
            });
        }
        if n > MAX_HANDLER_THREADS {
            return Err(ConfigError::TooLarge {
                field: "handler_threads",
                value: n,
                max: MAX_HANDLER_THREADS,
            });
        }
        let routing = self.thread_routing.unwrap_or_default();
        if routing == ThreadRouting::ByGroup && self.shaping.group.is_none() {
            return Err(ConfigError::Invalid {
                field: "thread_routing",
                reason: "ByGroup routes each key group to one thread: set group_by",
            });
        }
        Ok(Some((n, routing)))
    }

    /// The histograms' bucket bounds, when histograms are on.
    fn check_buckets(&self) -> Result<(), ConfigError> {
        if !self.histograms {
            return Ok(());
        }
        match self.buckets.resolve(self.config.max_batch) {
            Ok(_) => Ok(()),
            Err(BoundsFault::NotIncreasing {
                field,
                index,
                bound,
                previous,
            }) => Err(ConfigError::BucketsNotIncreasing {
                field,
                index,
                bound,
                previous,
            }),
            Err(BoundsFault::TooLong { field, value, max }) => {
                Err(ConfigError::TooLong { field, value, max })
            }
        }
    }

    /// The settings a drainer on the runtime cannot keep.
    fn check_placement(&self, placement: Placement) -> Result<(), ConfigError> {
        if !placement.on_runtime {
            return Ok(());
        }
        if let Some(core) = self.config.pin_drainer {
            return Err(ConfigError::PinOnRuntime { core });
        }
        if placement.threads.is_some() {
            return Err(ConfigError::Invalid {
                field: "handler_threads",
                reason: "a drainer on the runtime must not block waiting for a handler \
                         thread to return a buffer: use an async handler",
            });
        }
        if !placement.is_async && self.failure.retry.is_some() {
            return Err(ConfigError::Invalid {
                field: "retry_policy",
                reason: "a drainer on the runtime retries only with an async handler \
                         (a blocking handler's retries would sleep on a worker thread)",
            });
        }
        Ok(())
    }

    /// `inline_when_idle` runs a blocking handler on the submitting thread,
    /// with nothing between the item and the handler: what it cannot keep.
    fn check_inline(&self, placement: Placement) -> Result<(), ConfigError> {
        if !self.inline_when_idle {
            return Ok(());
        }
        let reason = if placement.is_async {
            Some("runs a blocking handler on the submitting thread, not an async one")
        } else if placement.threads.is_some() {
            Some("runs the handler on the submitting thread, not on handler threads")
        } else if self.shaping.is_active() {
            Some(
                "runs no shaping policy (linger, priorities, groups, bytes, deadlines, adaptive sizing)",
            )
        } else if self.failure.retry.is_some() {
            Some("runs no retry policy (retries wait in the drainer thread's timer queue)")
        } else if placement.on_runtime {
            Some("needs the drainer on a thread of its own, not drain_on_runtime")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(ConfigError::Invalid {
                field: "inline_when_idle",
                reason,
            }),
            None => Ok(()),
        }
    }

    /// The runtime the workers or the drainer task run on: the one given,
    /// or the caller's.
    #[cfg(feature = "tokio")]
    fn resolve_runtime(
        &mut self,
        placement: Placement,
    ) -> Result<Option<tokio::runtime::Handle>, ConfigError> {
        match (
            placement.is_async || placement.on_runtime,
            self.runtime.take(),
        ) {
            (true, Some(handle)) => Ok(Some(handle)),
            (true, None) => tokio::runtime::Handle::try_current()
                .map(Some)
                .map_err(|_| ConfigError::NoRuntime),
            (false, _) => Ok(None),
        }
    }

    /// Allocates the shared state (every lane, completion slot and batch
    /// buffer) and, with shaping on, the drainer's assembler.
    fn make_shared(
        self,
        placement: Placement,
        #[cfg(feature = "durable")] durable: Option<crate::engine::durable::Durable<T>>,
    ) -> (Arc<Shared<T, R>>, Option<Assembler<T>>) {
        let Self {
            config,
            mut shaping,
            histograms,
            buckets,
            failure,
            spill,
            inline_when_idle,
            #[cfg(feature = "metrics")]
            facade,
            ..
        } = self;
        let classes = shaping.classes();
        let rings = config.lane_count() * classes;
        let epoch = Instant::now();
        let controller = shaping
            .adaptive
            .map(|adaptive| Controller::new(adaptive, config.max_batch));
        let effective_max = controller
            .as_ref()
            .map_or(config.max_batch, Controller::size);
        let panics = std::sync::Arc::new(ContainedPanics::default());
        let lanes = make_lanes(&config, &shaping, epoch);
        let recorder = histograms.then(|| {
            let bounds = buckets
                .resolve(config.max_batch)
                .expect("checked in settle");
            Recorder::new(config.max_batch, bounds)
        });
        #[cfg(feature = "metrics")]
        let (facade, recorder) = match facade {
            Some(settings) => {
                let (facade, handles) =
                    Facade::register(&settings, rings, histograms, std::sync::Arc::clone(&panics));
                let handles = handles.map(|handles| FacadeHistograms {
                    handles,
                    panics: std::sync::Arc::clone(&panics),
                });
                (Some(facade), recorder.map(|r| r.with_facade(handles)))
            }
            None => (None, recorder),
        };
        let group_stats = shaping
            .group
            .as_ref()
            .map(|_| crate::stats::GroupStats::limit(shaping.max_open_groups));
        let assembler = shaping.is_active().then(|| {
            Assembler::new(
                shaping_for_drainer(&mut shaping),
                config.max_batch,
                epoch,
                std::sync::Arc::clone(&panics),
            )
        });
        // The direct path skips the lane, so it runs only where a batch of
        // one needs nothing more than the handler: no failure policies (a
        // breaker, dead letters) and no histograms.
        let direct_ok = !histograms && !failure.is_active();
        let shared = Arc::new(Shared {
            lanes,
            lane_count: config.lane_count(),
            classes,
            controller: controller.map(Mutex::new),
            staging_bytes: assembler.as_ref().map_or(0, Assembler::footprint),
            table: TableOwner::new(rings, config.result_slot_count(), config.wait),
            control: CachePadded::new(make_control(&config, effective_max)),
            progress: Progress::default(),
            counters: CachePadded::new(DrainerCounters::default()),
            pool: Pool::new(
                config.pool_size,
                config.max_batch,
                histograms,
                failure.is_active(),
                std::sync::Arc::clone(&panics),
            ),
            panics,
            epoch,
            recorder: recorder.map(Mutex::new),
            groups: group_stats.map(|limit| Mutex::new(crate::stats::GroupTable::new(limit))),
            rates: Mutex::new(crate::stats::RateWindow::new(epoch)),
            #[cfg(feature = "metrics")]
            facade,
            high_water: (0..rings).map(|_| AtomicU64::new(0)).collect(),
            failure: make_failure_state(failure, &config.thread_name),
            leftovers: Mutex::new(Vec::new()),
            new_linger: Mutex::new(None),
            shaping: assembler.is_some(),
            drainer: OnceLock::new(),
            spill,
            next_lane: AtomicUsize::new(0),
            exclusive_lanes: AtomicUsize::new(0),
            producers_made: AtomicUsize::new(0),
            #[cfg(feature = "tokio")]
            pipeline: CachePadded::new(
                placement
                    .is_async
                    .then(|| crate::engine::runtime::Pipeline::new(config.pool_size)),
            ),
            threads: CachePadded::new(placement.threads.map(|(n, routing)| {
                crate::engine::threads::Threads::new(n, routing, config.pool_size)
            })),
            #[cfg(feature = "tokio")]
            drainer_task: placement
                .on_runtime
                .then(crate::engine::runtime::TaskWake::default),
            inline: inline_when_idle.then(|| Inline {
                cell: Box::new(Mutex::new(None)),
                turn: Drainer::inline_turn,
                direct: direct_ok.then_some(Drainer::direct as DirectFn<T, R>),
            }),
            #[cfg(feature = "durable")]
            durable,
            config,
        });
        #[cfg(not(feature = "tokio"))]
        let _ = placement;
        (shared, assembler)
    }
}

/// The handler of each handler thread, from `make` (whose panic is the
/// build's error, the handlers made before it dropped).
fn make_handlers<T: 'static, R: 'static>(
    mut make: crate::engine::threads::MakeHandler<T, R>,
    n: usize,
) -> Result<Vec<Box<dyn crate::handler::Handler<T, R>>>, ConfigError> {
    let mut handlers = Vec::with_capacity(n);
    for i in 0..n {
        match crate::contain::call(|| make(i)) {
            Ok(handler) => handlers.push(handler),
            Err(_) => {
                for handler in handlers {
                    crate::contain::drop_value(handler);
                }
                crate::contain::drop_value(make);
                return Err(ConfigError::Invalid {
                    field: "handler_threads",
                    reason: "the handler factory panicked",
                });
            }
        }
    }
    crate::contain::drop_value(make);
    Ok(handlers)
}

/// Every ring of every class, laid out for its producers: evicting under
/// `DropOldest`, split for the exclusive lanes of small items, interleaved
/// otherwise.
fn make_lanes<T>(config: &Config, shaping: &Shaping<T>, epoch: Instant) -> Box<[Lane<T>]> {
    let lane_count = config.lane_count();
    let classes = shaping.classes();
    (0..lane_count * classes)
        .map(|ring| Lane {
            ring: if config.backpressure == Backpressure::DropOldest {
                Ring::with_eviction(config.capacity)
            } else if ring / lane_count == normal_class(classes)
                && ring % lane_count >= lane_count - config.exclusive_lanes
                && core::mem::size_of::<T>() <= SPLIT_MAX_ITEM
            {
                Ring::new_split(config.capacity)
            } else {
                Ring::new(config.capacity)
            },
            expiry: shaping
                .stamps_expiry()
                .then(|| ExpiryStamps::new(config.capacity, epoch, shaping.max_age)),
            counters: CachePadded::new(LaneCounters::default()),
            producers: AtomicUsize::new(0),
        })
        .collect()
}

/// The control words in their starting state.
fn make_control(config: &Config, effective_max: usize) -> Control {
    Control {
        closing: AtomicBool::new(false),
        flush_requested: AtomicU64::new(0),
        flush_now: AtomicU64::new(0),
        paused: AtomicBool::new(false),
        give_back_at: AtomicU64::new(NEVER),
        max_batch: AtomicUsize::new(config.max_batch),
        settings_version: AtomicU64::new(0),
        effective_max: AtomicUsize::new(effective_max),
        pressure: AtomicBool::new(false),
    }
}

/// The failure policies' state, when any is on.
fn make_failure_state<T>(
    failure: FailureSettings<T>,
    batcher: &str,
) -> Option<Mutex<crate::failure::FailureState<T>>> {
    failure
        .is_active()
        .then(|| Mutex::new(crate::failure::FailureState::new(failure, batcher)))
}

/// Starts the drainer thread (pinned if asked) and waits until it runs, so
/// that a pinning failure is the builder's error.
fn start_drainer_thread<T: Send + 'static, R: Send + 'static>(
    shared: &Arc<Shared<T, R>>,
    drainer: Drainer<T, R>,
) -> Result<thread::JoinHandle<()>, ConfigError> {
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    // With `inline_when_idle` the state lives in the shared cell, and the
    // thread works on it there.
    let drainer = match &shared.inline {
        Some(inline) => {
            *crate::contain::lock(&inline.cell) = Some(drainer);
            Err(Arc::clone(shared))
        }
        None => Ok(drainer),
    };
    let pin = shared.config.pin_drainer;
    let handle = thread::Builder::new()
        .name(shared.config.thread_name.clone())
        .spawn(move || {
            if let Some(core) = pin {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                    let _ = started_tx.send(Err(ConfigError::PinFailed { core }));
                    return;
                }
            }
            let _ = started_tx.send(Ok(()));
            match drainer {
                Ok(drainer) => drainer.run(),
                Err(shared) => Drainer::run_shared(&shared),
            }
        })
        .map_err(|e| ConfigError::Spawn {
            message: e.to_string(),
        })?;
    let _ = shared.drainer.set(handle.thread().clone());
    match started_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            Err(ConfigError::Spawn {
                message: "the drainer thread ended before it started".to_owned(),
            })
        }
    }
}
/// The core the calling thread runs on, if the platform says.
pub(crate) fn current_cpu() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `sched_getcpu` takes no arguments and only reads the
        // calling thread's state; it returns -1 on failure.
        let cpu = unsafe { libc::sched_getcpu() };
        usize::try_from(cpu).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Moves the settings the drainer's assembler owns out of `shaping`, keeping
/// the few the builder still reads (classes, expiry stamps).
pub(crate) fn shaping_for_drainer<T>(shaping: &mut Shaping<T>) -> Shaping<T> {
    let taken = core::mem::take(shaping);
    shaping.priorities = taken.priorities;
    shaping.deadlines = taken.deadlines;
    shaping.max_age = taken.max_age;
    taken
}
