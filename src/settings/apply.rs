//! `BatcherBuilder::with_config` and its converse, `BatcherBuilder::settings`:
//! each key becomes the builder call it names, so `build` checks a file's
//! values exactly as it checks the methods'.

use std::time::Duration;

use crate::BatcherBuilder;
use crate::config::{Config, ConfigError};
use crate::settings::{
    AdaptiveKind, AdaptiveSettings, BreakerSettings, CoreSettings, FailureSettings,
    MetricsSettings, RetrySettings, Settings, ShapeSettings, WeightSettings,
};
use crate::shape::{Adaptive, AdaptiveMode, DEFAULT_LOAD_INTERVAL, LoadWeights};

impl<T: Send + 'static, R: Send + 'static> BatcherBuilder<T, R> {
    /// Applies every key `settings` sets (see [`settings`](crate::settings)),
    /// as the builder method of the same name would; the keys it leaves out
    /// keep what the builder has. Closures and runtime handles set before or
    /// after stay as they are, so a batcher reads its data settings from a
    /// file and keeps its handler, weigher and callbacks in code.
    ///
    /// [`build`](Self::build) checks the values as it checks the methods',
    /// with the same [`ConfigError`]. It also refuses what this method could
    /// not apply: a `"latency"` adaptive mode without a `target`
    /// ([`ConfigError::Invalid`], field `"adaptive"`), and
    /// `drain_on_runtime = true` without the `tokio` feature
    /// (field `"drain_on_runtime"`).
    ///
    /// As with [`config`](Self::config), a `max_batch` or `pool_size` equal
    /// to its default follows the other settings as when it is never set.
    ///
    /// ```
    /// use ringbatch::{Backpressure, Batch, Batcher, Settings};
    ///
    /// let settings = Settings::from_toml_str("[core]\nbackpressure = \"reject\"\n")?;
    /// let batcher = Batcher::builder()
    ///     .capacity(64) // kept: the file does not set it
    ///     .with_config(&settings)
    ///     .handler_fn(|batch: &mut Batch<'_, u32, ()>| {
    ///         batch.ok_with(|_| ());
    ///         Ok(())
    ///     })
    ///     .build()?;
    /// assert_eq!(batcher.config().capacity, 64);
    /// assert_eq!(batcher.config().backpressure, Backpressure::Reject);
    /// batcher.shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    #[must_use = "a builder does nothing until it is built"]
    pub fn with_config(mut self, settings: &Settings) -> Self {
        #[cfg(feature = "durable")]
        if let Some((durability, _)) = &mut self.durable {
            *durability = settings.durable.apply_to(durability.clone());
        }
        self.apply_core(&settings.core);
        self.apply_shape(&settings.shape);
        self.apply_adaptive(&settings.shape.adaptive);
        self.apply_retry(&settings.failure.retry);
        self.apply_breaker(&settings.failure.circuit_breaker);
        let m = &settings.metrics;
        if let Some(on) = m.histograms {
            self.histograms = on;
        }
        if let Some(bounds) = &m.batch_size_buckets {
            self.buckets.batch_size = bounds.clone();
        }
        for (i, bounds) in [
            &m.queue_wait_buckets,
            &m.handler_buckets,
            &m.end_to_end_buckets,
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(bounds) = bounds {
                self.buckets.times[i] = bounds.clone();
            }
        }
        self
    }

    /// The builder's data settings, every key set: what
    /// [`with_config`](Self::with_config) of the result sets again. Of a new
    /// builder, the defaults, as `examples/ringbatch.toml` lists them.
    ///
    /// The fields of a policy that is off read as its defaults.
    ///
    /// ```
    /// use ringbatch::{Batcher, Backpressure};
    ///
    /// let builder = Batcher::<u64, ()>::builder().backpressure(Backpressure::DropOldest);
    /// let settings = builder.settings();
    /// assert_eq!(settings.core.backpressure, Some(Backpressure::DropOldest));
    /// assert_eq!(settings.core.lanes, Some(None), "one lane per core");
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    pub fn settings(&self) -> Settings {
        Settings {
            core: self.core_settings(),
            shape: self.shape_settings(),
            failure: self.failure_settings(),
            metrics: MetricsSettings {
                histograms: Some(self.histograms),
                batch_size_buckets: Some(self.buckets.batch_size.clone()),
                queue_wait_buckets: Some(self.buckets.times[0].clone()),
                handler_buckets: Some(self.buckets.times[1].clone()),
                end_to_end_buckets: Some(self.buckets.times[2].clone()),
            },
            #[cfg(feature = "durable")]
            durable: self
                .durable
                .as_ref()
                .map(|(durability, _)| super::DurableSettings::of(durability))
                .unwrap_or_default(),
        }
    }

    /// Keeps the first setting `with_config` could not apply, for `build`.
    fn refuse(&mut self, error: ConfigError) {
        self.refused.get_or_insert(error);
    }

    fn apply_core(&mut self, core: &CoreSettings) {
        let defaults = Config::default();
        let c = &mut self.config;
        if let Some(lanes) = core.lanes {
            c.lanes = lanes;
        }
        if let Some(capacity) = core.capacity {
            c.capacity = capacity;
        }
        if let Some(max_batch) = core.max_batch {
            c.max_batch = max_batch;
            self.max_batch_set = max_batch != defaults.max_batch;
        }
        if let Some(pool_size) = core.pool_size {
            c.pool_size = pool_size;
            self.pool_size_set = pool_size != defaults.pool_size;
        }
        if let Some(slots) = core.result_slots {
            c.result_slots = slots;
        }
        if let Some(wait) = core.wait_strategy {
            c.wait = wait;
        }
        if let Some(backpressure) = core.backpressure {
            c.backpressure = backpressure;
        }
        if let Some(core_id) = core.pin_drainer {
            c.pin_drainer = core_id;
        }
        if let Some(assignment) = core.lane_assignment {
            c.lane_assignment = assignment;
        }
        if let Some(name) = &core.thread_name {
            c.thread_name.clone_from(name);
        }
        if let Some(batches) = core.max_in_flight {
            c.max_in_flight = batches;
        }
        if let Some(n) = core.exclusive_lanes {
            c.exclusive_lanes = n;
        }
        if let Some(spin) = core.spin_between_short_runs {
            c.spin_between_short_runs = spin;
        }
        if let Some(inline) = core.inline_when_idle {
            self.inline_when_idle = inline;
        }
        #[cfg(feature = "tokio")]
        if let Some(on_runtime) = core.drain_on_runtime {
            self.drain_on_runtime = on_runtime;
        }
        #[cfg(not(feature = "tokio"))]
        if core.drain_on_runtime == Some(true) {
            self.refuse(ConfigError::Invalid {
                field: "drain_on_runtime",
                reason: "a drainer on the runtime needs the `tokio` feature",
            });
        }
    }

    fn apply_shape(&mut self, shape: &ShapeSettings) {
        let s = &mut self.shaping;
        if let Some(limit) = shape.max_bytes {
            s.max_bytes = limit;
        }
        if let Some(limit) = shape.max_staged_bytes {
            s.max_staged_bytes = limit;
        }
        if let Some(oversize) = shape.oversize {
            s.oversize = oversize;
        }
        if let Some(linger) = shape.linger {
            s.linger = linger;
        }
        if let Some(interval) = shape.min_interval {
            s.min_interval = interval;
        }
        if let Some(on) = shape.priorities {
            s.priorities = on;
        }
        if let Some(age) = shape.starvation_age {
            s.starvation_age = age;
        }
        if let Some(groups) = shape.max_open_groups {
            s.max_open_groups = groups;
        }
        if let Some(on) = shape.deadlines {
            s.deadlines = on;
        }
        if let Some(age) = shape.max_age {
            s.max_age = age;
        }
        if let Some(items) = shape.staging {
            s.staging = items;
        }
    }

    fn apply_adaptive(&mut self, a: &AdaptiveSettings) {
        let current = self.shaping.adaptive;
        let kind = a.mode.unwrap_or_else(|| kind_of(current.as_ref()));
        let defaults = match kind {
            AdaptiveKind::Off => {
                self.shaping.adaptive = None;
                return;
            }
            AdaptiveKind::Latency => Adaptive::latency(Duration::ZERO),
            AdaptiveKind::Load => Adaptive::load(),
        };
        // The same mode goes on from the builder's controller; another
        // starts from that mode's defaults.
        let same = current.filter(|c| kind_of(Some(c)) == kind);
        let mut adaptive = same.unwrap_or(defaults);
        match &mut adaptive.mode {
            AdaptiveMode::Latency { target } => match a.target {
                Some(Some(given)) => *target = given,
                None if same.is_some() => {}
                _ => {
                    return self.refuse(ConfigError::Invalid {
                        field: "adaptive",
                        reason: "latency mode needs a target (`target = \"5ms\"`)",
                    });
                }
            },
            AdaptiveMode::Load { weights, interval } => {
                if let Some(given) = a.interval {
                    *interval = given;
                }
                let w = &a.weights;
                let fields = [
                    (w.cpu, &mut weights.cpu),
                    (w.error_rate, &mut weights.error_rate),
                    (w.queue_depth, &mut weights.queue_depth),
                    (w.contention, &mut weights.contention),
                ];
                for (given, field) in fields {
                    if let Some(given) = given {
                        *field = given;
                    }
                }
            }
        }
        if let Some(min) = a.min {
            adaptive.min = min;
        }
        if let Some(max) = a.max {
            adaptive.max = max;
        }
        if let Some(grow_below) = a.grow_below {
            adaptive.grow_below = grow_below.unwrap_or(defaults.grow_below);
        }
        if let Some(shrink_above) = a.shrink_above {
            adaptive.shrink_above = shrink_above.unwrap_or(defaults.shrink_above);
        }
        if let Some(grow_by) = a.grow_by {
            adaptive.grow_by = grow_by;
        }
        if let Some(shrink_by) = a.shrink_by {
            adaptive.shrink_by = shrink_by;
        }
        if let Some(initial) = a.initial {
            adaptive.initial = initial;
        }
        if let Some(signals) = a.smoothing {
            adaptive.smoothing = signals;
        }
        self.shaping.adaptive = Some(adaptive);
    }

    fn apply_retry(&mut self, r: &RetrySettings) {
        if !r.enabled.unwrap_or(self.failure.retry.is_some()) {
            self.failure.retry = None;
            return;
        }
        let mut policy = self.failure.retry.unwrap_or_default();
        if let Some(retries) = r.max_retries {
            policy.max_retries = retries;
        }
        if let Some(delay) = r.initial_delay {
            policy.initial_delay = delay;
        }
        if let Some(delay) = r.max_delay {
            policy.max_delay = delay;
        }
        if let Some(multiplier) = r.multiplier {
            policy.multiplier = multiplier;
        }
        if let Some(jitter) = r.jitter {
            policy.jitter = jitter;
        }
        if let Some(in_order) = r.in_order {
            policy.in_order = in_order;
        }
        self.failure.retry = Some(policy);
    }

    fn apply_breaker(&mut self, b: &BreakerSettings) {
        if !b.enabled.unwrap_or(self.failure.breaker.is_some()) {
            self.failure.breaker = None;
            return;
        }
        let mut breaker = self.failure.breaker.unwrap_or_default();
        if let Some(threshold) = b.failure_threshold {
            breaker.failure_threshold = threshold;
        }
        if let Some(timeout) = b.recovery_timeout {
            breaker.recovery_timeout = timeout;
        }
        if let Some(hold) = b.hold_while_open {
            breaker.hold_while_open = hold;
        }
        self.failure.breaker = Some(breaker);
    }

    fn core_settings(&self) -> CoreSettings {
        let c = &self.config;
        #[cfg(feature = "tokio")]
        let drain_on_runtime = self.drain_on_runtime;
        #[cfg(not(feature = "tokio"))]
        let drain_on_runtime = false;
        CoreSettings {
            lanes: Some(c.lanes),
            capacity: Some(c.capacity),
            max_batch: Some(c.max_batch),
            pool_size: Some(c.pool_size),
            result_slots: Some(c.result_slots),
            wait_strategy: Some(c.wait),
            backpressure: Some(c.backpressure),
            pin_drainer: Some(c.pin_drainer),
            lane_assignment: Some(c.lane_assignment),
            thread_name: Some(c.thread_name.clone()),
            max_in_flight: Some(c.max_in_flight),
            exclusive_lanes: Some(c.exclusive_lanes),
            spin_between_short_runs: Some(c.spin_between_short_runs),
            inline_when_idle: Some(self.inline_when_idle),
            drain_on_runtime: Some(drain_on_runtime),
        }
    }

    fn shape_settings(&self) -> ShapeSettings {
        let s = &self.shaping;
        ShapeSettings {
            max_bytes: Some(s.max_bytes),
            max_staged_bytes: Some(s.max_staged_bytes),
            oversize: Some(s.oversize),
            linger: Some(s.linger),
            min_interval: Some(s.min_interval),
            priorities: Some(s.priorities),
            starvation_age: Some(s.starvation_age),
            max_open_groups: Some(s.max_open_groups),
            deadlines: Some(s.deadlines),
            max_age: Some(s.max_age),
            staging: Some(s.staging),
            adaptive: adaptive_settings(s.adaptive.as_ref()),
        }
    }

    fn failure_settings(&self) -> FailureSettings {
        let retry = self.failure.retry;
        let policy = retry.unwrap_or_default();
        let breaker = self.failure.breaker;
        let breaker_on = breaker.is_some();
        let breaker = breaker.unwrap_or_default();
        FailureSettings {
            retry: RetrySettings {
                enabled: Some(retry.is_some()),
                max_retries: Some(policy.max_retries),
                initial_delay: Some(policy.initial_delay),
                max_delay: Some(policy.max_delay),
                multiplier: Some(policy.multiplier),
                jitter: Some(policy.jitter),
                in_order: Some(policy.in_order),
            },
            circuit_breaker: BreakerSettings {
                enabled: Some(breaker_on),
                failure_threshold: Some(breaker.failure_threshold),
                recovery_timeout: Some(breaker.recovery_timeout),
                hold_while_open: Some(breaker.hold_while_open),
            },
        }
    }
}

/// The mode of a controller, or `Off` without one.
fn kind_of(adaptive: Option<&Adaptive>) -> AdaptiveKind {
    match adaptive.map(|a| a.mode) {
        None => AdaptiveKind::Off,
        Some(AdaptiveMode::Latency { .. }) => AdaptiveKind::Latency,
        Some(AdaptiveMode::Load { .. }) => AdaptiveKind::Load,
    }
}

/// `[shape.adaptive]` of a controller; the keys of another mode, or of no
/// controller, read as their defaults.
fn adaptive_settings(adaptive: Option<&Adaptive>) -> AdaptiveSettings {
    let a = adaptive.copied().unwrap_or_else(Adaptive::load);
    let (target, weights, interval) = match a.mode {
        AdaptiveMode::Latency { target } => {
            (Some(target), LoadWeights::default(), DEFAULT_LOAD_INTERVAL)
        }
        AdaptiveMode::Load { weights, interval } => (None, weights, interval),
    };
    // Without a controller the thresholds' defaults depend on the mode a
    // file picks: "auto".
    let threshold = |value| adaptive.map(|_| value);
    AdaptiveSettings {
        mode: Some(kind_of(adaptive)),
        target: Some(target),
        interval: Some(interval),
        min: Some(a.min),
        max: Some(a.max),
        grow_below: Some(threshold(a.grow_below)),
        shrink_above: Some(threshold(a.shrink_above)),
        grow_by: Some(a.grow_by),
        shrink_by: Some(a.shrink_by),
        initial: Some(a.initial),
        smoothing: Some(a.smoothing),
        weights: WeightSettings {
            cpu: Some(weights.cpu),
            error_rate: Some(weights.error_rate),
            queue_depth: Some(weights.queue_depth),
            contention: Some(weights.contention),
        },
    }
}
