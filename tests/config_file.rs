//! Settings from a TOML file (feature `serde`): the shipped example file is
//! exactly the defaults, every key reaches the builder, a bad key or value
//! is named with its line, and `build` refuses a file's values as it
//! refuses the builder methods'.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringbatch::settings::AdaptiveKind;
use ringbatch::{
    Adaptive, Backpressure, Batch, Batcher, BatcherBuilder, CircuitBreaker, Config, ConfigError,
    DeadLetter, Error, LaneAssignment, Linger, Oversize, RetryPolicy, Settings, SettingsError,
    WaitStrategy,
};

/// The file the crate ships: every setting at its default.
const EXAMPLE: &str = include_str!("../examples/ringbatch.toml");

fn builder() -> BatcherBuilder<u64, ()> {
    Batcher::builder().handler_fn(|batch: &mut Batch<'_, u64, ()>| {
        batch.complete_with(|_| Ok::<_, Error>(()));
        Ok(())
    })
}

fn parse(text: &str) -> Settings {
    Settings::from_toml_str(text).unwrap_or_else(|e| panic!("expected {text:?} to parse: {e}"))
}

fn parse_error(text: &str) -> SettingsError {
    match Settings::from_toml_str(text) {
        Ok(settings) => panic!("expected {text:?} to be refused, read {settings:?}"),
        Err(e) => e,
    }
}

/// The default `T` changed by `change` (works for `#[non_exhaustive]` types).
fn changed<T: Default>(change: impl FnOnce(&mut T)) -> T {
    let mut value = T::default();
    change(&mut value);
    value
}

fn build_error(builder: BatcherBuilder<u64, ()>) -> ConfigError {
    match builder.build() {
        Ok(batcher) => panic!(
            "expected a configuration error, built {:?}",
            batcher.config()
        ),
        Err(e) => e,
    }
}

#[test]
fn the_example_file_is_every_default() {
    let file = parse(EXAMPLE);
    let defaults = builder().settings();
    // Without a store there are no `[durable]` keys to read back (the
    // example file leaves the section out: it has no default directory).
    #[cfg(feature = "durable")]
    assert_eq!(defaults.durable, Default::default());
    let sections = (
        &defaults.core,
        &defaults.shape,
        &defaults.failure,
        &defaults.metrics,
    );
    assert!(
        !format!("{sections:?}").contains(": None"),
        "expected a new builder to read back every key, got {defaults:#?}"
    );
    // Equal to a read-back that sets every key: the file names every key,
    // each at its default.
    assert_eq!(
        file, defaults,
        "examples/ringbatch.toml has drifted from the defaults"
    );
    assert_eq!(builder().with_config(&file).settings(), defaults);

    let from_file = builder()
        .with_config(&file)
        .build()
        .expect("the defaults build");
    let plain = builder().build().expect("the defaults build");
    assert_eq!(from_file.config(), plain.config());
    assert_eq!(from_file.stats().memory_bytes, plain.stats().memory_bytes);
    from_file.shutdown();
    plain.shutdown();
}

#[test]
fn a_file_sets_only_the_keys_it_names() {
    let file = parse(
        "[core]\nbackpressure = \"reject\"\n\n[shape]\nlinger = \"2ms\"\n\n[metrics]\nhistograms = true\n",
    );
    let got = builder()
        .capacity(64)
        .lanes(2)
        .with_config(&file)
        .settings();
    let mut expected = builder().capacity(64).lanes(2).settings();
    expected.core.backpressure = Some(Backpressure::Reject);
    expected.shape.linger = Some(Linger::Fixed(Duration::from_millis(2)));
    expected.metrics.histograms = Some(true);
    assert_eq!(got, expected);
}

/// Every key at a value other than its default (a set that need not build).
const EVERY_KEY: &str = r#"
[core]
lanes = 3
capacity = 256
max_batch = 64
pool_size = 6
result_slots = 512
wait_strategy = "park"
backpressure = "drop_oldest"
pin_drainer = 0
lane_assignment = "round_robin"
thread_name = "from-a-file"
max_in_flight = 2
exclusive_lanes = 1
spin_between_short_runs = true
inline_when_idle = true
drain_on_runtime = false

[shape]
max_bytes = 4096
max_staged_bytes = 16384
oversize = "alone"
linger = { adaptive = "3ms" }
min_interval = "1ms"
priorities = true
starvation_age = "20ms"
max_open_groups = 8
deadlines = true
max_age = "1s"
staging = 1024

[shape.adaptive]
mode = "load"
target = "none"
interval = "250ms"
min = 4
max = 32
grow_below = 0.2
shrink_above = 0.9
grow_by = 0.25
shrink_by = 0.5
initial = 16
smoothing = 10

[shape.adaptive.weights]
cpu = 1
error_rate = 0.5
queue_depth = 0.25
contention = 0

[failure.retry]
enabled = true
max_retries = 7
initial_delay = "5ms"
max_delay = "1m 30s"
multiplier = 3
jitter = 0.5
in_order = true

[failure.circuit_breaker]
enabled = true
failure_threshold = 2
recovery_timeout = "250ms"
hold_while_open = true

[metrics]
histograms = true
batch_size_buckets = [1, 4, 16, 64]
queue_wait_buckets = ["10us", "1ms"]
handler_buckets = ["100us", "1ms", "10ms"]
end_to_end_buckets = ["1ms", "1s"]
"#;

#[test]
fn every_key_reaches_the_builder() {
    let file = parse(EVERY_KEY);
    let defaults = builder().settings();
    let got = builder().with_config(&file).settings();
    assert_eq!(
        got, file,
        "expected the builder to read back what the file set"
    );

    // Each section differs from the defaults, so none was skipped.
    assert_ne!(file.core, defaults.core);
    assert_ne!(file.shape, defaults.shape);
    assert_ne!(file.shape.adaptive, defaults.shape.adaptive);
    assert_ne!(file.shape.adaptive.weights, defaults.shape.adaptive.weights);
    assert_ne!(file.failure.retry, defaults.failure.retry);
    assert_ne!(
        file.failure.circuit_breaker,
        defaults.failure.circuit_breaker
    );
    assert_ne!(file.metrics, defaults.metrics);

    assert_eq!(file.core.wait_strategy, Some(WaitStrategy::Park));
    assert_eq!(file.core.lane_assignment, Some(LaneAssignment::RoundRobin));
    assert_eq!(file.core.pin_drainer, Some(Some(0)));
    assert_eq!(file.shape.oversize, Some(Oversize::Alone));
    assert_eq!(
        file.shape.linger,
        Some(Linger::Adaptive {
            target: Duration::from_millis(3)
        })
    );
    assert_eq!(file.shape.adaptive.mode, Some(AdaptiveKind::Load));
    assert_eq!(file.shape.adaptive.weights.cpu, Some(1.0));
    assert_eq!(file.failure.retry.max_delay, Some(Duration::from_secs(90)));
}

#[test]
fn a_batcher_runs_with_the_files_core_settings() {
    let file = parse(
        r#"
        [core]
        lanes = 2
        capacity = 128
        max_batch = 32
        pool_size = 3
        result_slots = 256
        wait_strategy = "yield"
        backpressure = "drop_newest"
        lane_assignment = "round_robin"
        thread_name = "configured"
        exclusive_lanes = 1
        "#,
    );
    let batcher = builder()
        .with_config(&file)
        .build()
        .expect("valid settings");
    let expected = changed(|c: &mut Config| {
        c.lanes = Some(2);
        c.capacity = 128;
        c.max_batch = 32;
        c.pool_size = 3;
        c.result_slots = Some(256);
        c.wait = WaitStrategy::Yield;
        c.backpressure = Backpressure::DropNewest;
        c.lane_assignment = LaneAssignment::RoundRobin;
        c.thread_name = "configured".to_owned();
        c.exclusive_lanes = 1;
    });
    assert_eq!(batcher.config(), &expected);
    let producer = batcher.producer();
    for item in 0..100 {
        producer.push(item).expect("the batcher is open");
    }
    drop(producer);
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled + stats.dropped, 100);
}

#[test]
fn closures_set_before_and_after_stay() {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&sizes);
    let dead = Arc::new(Mutex::new(Vec::new()));
    let letters = Arc::clone(&dead);
    let file = parse("[shape]\nmax_bytes = 64\nlinger = \"50ms\"\n");
    let batcher = Batcher::builder()
        .handler_fn(move |batch: &mut Batch<'_, String, ()>| {
            seen.lock()
                .unwrap()
                .push(batch.iter().map(String::len).sum::<usize>());
            for index in 0..batch.len() {
                if batch.items()[index].starts_with('!') {
                    batch.fail(index, "refused").expect("not completed yet");
                }
            }
            batch.ok_with(|_| ());
            Ok(())
        })
        .weigher(|line: &String| line.len())
        .with_config(&file)
        .dead_letter(move |letter: DeadLetter<String>| {
            letters.lock().unwrap().push(letter.item);
        })
        .build()
        .expect("valid settings");
    let producer = batcher.producer();
    for n in 0..9 {
        producer.push(format!("{n}").repeat(30)).expect("open");
    }
    let refused = producer.submit("!".repeat(30)).expect("open");
    assert!(
        matches!(refused.wait(), Err(Error::Failed(_))),
        "expected the handler set before with_config to fail the marked item"
    );
    drop(producer);
    let stats = batcher.shutdown();
    assert_eq!(stats.items_handled, 10);
    let sizes = sizes.lock().unwrap();
    assert!(
        sizes.iter().all(|&bytes| bytes <= 64),
        "expected the weigher with the file's byte limit to keep batches within 64 bytes, got {sizes:?}"
    );
    assert!(
        sizes.len() >= 5,
        "two 30-byte items per batch at most, got {sizes:?}"
    );
    assert_eq!(
        *dead.lock().unwrap(),
        ["!".repeat(30)],
        "expected the dead-letter callback set after with_config to get the failed item"
    );
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let e = parse_error("[core]\ncapacity = 64\nlingr = 1\n");
    assert_eq!(e.key(), Some("core.lingr"));
    assert_eq!(e.line(), Some(3));
    assert_eq!(e.column(), Some(1));
    assert!(matches!(e, SettingsError::Key { .. }));
    let shown = e.to_string();
    assert!(
        shown.starts_with("core.lingr (line 3, column 1): unknown field `lingr`"),
        "expected the key, its place and serde's message, got {shown:?}"
    );

    let e = parse_error("\n[shap]\nlinger = \"2ms\"\n");
    assert_eq!((e.key(), e.line()), (Some("shap"), Some(2)));

    let e = parse_error("[shape.adaptive.weights]\ncpu = 0.5\ngpu = 0.5\n");
    assert_eq!(
        (e.key(), e.line()),
        (Some("shape.adaptive.weights.gpu"), Some(3))
    );

    // Inline tables are checked as strictly.
    let e = parse_error("failure = { retry = { enabled = true, retries = 2 } }\n");
    assert_eq!(
        (e.key(), e.line()),
        (Some("failure.retry.retries"), Some(1))
    );
}

#[test]
fn a_wrong_enum_value_is_named_with_its_line() {
    let e = parse_error("[core]\ncapacity = 64\n\nbackpressure = \"drop_newst\"\n");
    assert_eq!((e.key(), e.line()), (Some("core.backpressure"), Some(4)));
    assert_eq!(e.column(), Some(16), "the value's column");
    assert!(
        e.message().contains("`drop_newest`") && e.message().contains("`drop_oldest`"),
        "expected the names that are allowed, got {:?}",
        e.message()
    );

    let e = parse_error("[core]\nwait_strategy = \"BusySpin\"\n");
    assert_eq!((e.key(), e.line()), (Some("core.wait_strategy"), Some(2)));
    let e = parse_error("[shape.adaptive]\nmode = \"fast\"\n");
    assert_eq!((e.key(), e.line()), (Some("shape.adaptive.mode"), Some(2)));
}

#[test]
fn a_bad_duration_is_named_with_its_line() {
    for (text, key, line) in [
        (
            "[shape]\n\nstarvation_age = \"10 parsecs\"\n",
            "shape.starvation_age",
            3,
        ),
        ("[shape]\nlinger = \"soon\"\n", "shape.linger", 2),
        ("[shape]\nlinger = 5\n", "shape.linger", 2),
        ("[shape]\nmax_age = \"-1s\"\n", "shape.max_age", 2),
        ("[shape]\nmin_interval = 10\n", "shape.min_interval", 2),
        (
            "[failure.retry]\nenabled = true\nmax_delay = \"99999999999999999999999s\"\n",
            "failure.retry.max_delay",
            3,
        ),
        (
            "[failure.circuit_breaker]\nrecovery_timeout = \"\"\n",
            "failure.circuit_breaker.recovery_timeout",
            2,
        ),
    ] {
        let e = parse_error(text);
        assert_eq!(
            (e.key(), e.line()),
            (Some(key), Some(line)),
            "expected {text:?} to be refused at {key}, line {line}: {e}"
        );
    }
    let e = parse_error("[shape]\nstarvation_age = \"10 parsecs\"\n");
    assert!(
        e.message().contains("\"2ms\""),
        "expected the message to show a duration that parses, got {:?}",
        e.message()
    );
}

#[test]
fn keywords_and_types_are_checked() {
    for (text, key, hint) in [
        ("[core]\nlanes = \"all\"\n", "core.lanes", "\"auto\""),
        (
            "[core]\npin_drainer = \"auto\"\n",
            "core.pin_drainer",
            "\"none\"",
        ),
        ("[core]\ncapacity = \"big\"\n", "core.capacity", "usize"),
        ("[core]\ncapacity = -1\n", "core.capacity", "usize"),
        ("[core]\nlanes = -1\n", "core.lanes", "count"),
        (
            "[shape]\nlinger = { fixed = \"2ms\" }\n",
            "shape.linger",
            "adaptive",
        ),
        ("[shape]\nlinger = {}\n", "shape.linger", "adaptive"),
        (
            "[shape.adaptive]\ngrow_below = \"low\"\n",
            "shape.adaptive.grow_below",
            "\"auto\"",
        ),
        (
            "[metrics]\nhistograms = \"yes\"\n",
            "metrics.histograms",
            "bool",
        ),
        ("core = 5\n", "core", "struct"),
    ] {
        let e = parse_error(text);
        assert_eq!(
            e.key(),
            Some(key),
            "expected {text:?} to be refused at {key}: {e}"
        );
        assert!(
            e.message().contains(hint),
            "expected the message for {text:?} to mention {hint}, got {:?}",
            e.message()
        );
    }
    let e = parse_error("[core]\ncapacity 64\n");
    assert!(matches!(e, SettingsError::Syntax { .. }), "got {e:?}");
    assert_eq!((e.key(), e.line()), (None, Some(2)));
    let e = parse_error("[core]\ncapacity = 1\ncapacity = 2\n");
    assert_eq!(e.line(), Some(3), "a key given twice: {e}");
}

#[test]
fn build_refuses_a_files_values_as_it_refuses_the_methods() {
    let days = |n: u64| Duration::from_secs(n * 24 * 60 * 60);
    let jittery = changed(|p: &mut RetryPolicy| p.jitter = 2.0);
    let slow = changed(|p: &mut RetryPolicy| p.max_delay = days(1000));
    let hair_trigger = changed(|b: &mut CircuitBreaker| b.failure_threshold = 0);
    let cases: Vec<(&str, &str, BatcherBuilder<u64, ()>)> = vec![
        ("[core]\ncapacity = 0\n", "capacity", builder().capacity(0)),
        (
            "[core]\ncapacity = 1000\n",
            "capacity",
            builder().capacity(1000),
        ),
        ("[core]\nlanes = 0\n", "lanes", builder().lanes(0)),
        (
            "[core]\nresult_slots = 3\n",
            "result_slots",
            builder().result_slots(3),
        ),
        (
            "[core]\ncapacity = 64\nmax_batch = 128\n",
            "max_batch",
            builder().capacity(64).max_batch(128),
        ),
        (
            "[core]\nmax_in_flight = 0\n",
            "max_in_flight",
            builder().max_in_flight(0),
        ),
        (
            "[core]\nlanes = 2\nexclusive_lanes = 2\n",
            "exclusive_lanes",
            builder().lanes(2).exclusive_lanes(2),
        ),
        (
            "[core]\nthread_name = \"a\\u0000b\"\n",
            "thread_name",
            builder().thread_name("a\0b"),
        ),
        (
            "[shape]\nlinger = \"400days\"\n",
            "linger",
            builder().linger(Linger::Fixed(days(400))),
        ),
        (
            "[shape]\nlinger = { adaptive = \"400days\" }\n",
            "linger",
            builder().linger(Linger::Adaptive { target: days(400) }),
        ),
        (
            "[shape]\nmax_age = \"0s\"\n",
            "max_age",
            builder().max_age(Duration::ZERO),
        ),
        (
            "[shape]\nstarvation_age = \"366days\"\n",
            "starvation_age",
            builder().starvation_age(days(366)),
        ),
        (
            "[shape]\nmax_bytes = 64\n",
            "max_bytes",
            builder().max_bytes(64),
        ),
        (
            "[shape]\nmax_open_groups = 0\n",
            "max_open_groups",
            builder().max_open_groups(0),
        ),
        ("[shape]\nstaging = 16\n", "staging", builder().staging(16)),
        (
            "[metrics]\nhistograms = true\nbatch_size_buckets = [4, 4]\n",
            "histogram_buckets.batch_size",
            builder()
                .histograms(true)
                .histogram_buckets(ringbatch::metrics::BucketBounds::new().batch_size([4, 4])),
        ),
        (
            "[shape]\nmax_staged_bytes = 1024\n",
            "max_staged_bytes",
            builder().max_staged_bytes(1024),
        ),
        (
            "[core]\nbackpressure = \"increase_batch_size\"\n",
            "backpressure",
            builder().backpressure(ringbatch::Backpressure::IncreaseBatchSize),
        ),
        (
            "[shape.adaptive]\nmode = \"load\"\nmin = 8\ninitial = 4\n",
            "adaptive",
            builder().adaptive(Adaptive::load().bounds(8, 64).initial(4)),
        ),
        (
            "[shape.adaptive]\nmode = \"load\"\nsmoothing = 0\n",
            "adaptive",
            builder().adaptive(Adaptive::load().smoothing(0)),
        ),
        (
            "[shape.adaptive]\nmode = \"load\"\ngrow_by = 1.5\n",
            "adaptive",
            builder().adaptive(Adaptive::load().steps(1.5, 0.1)),
        ),
        (
            "[shape.adaptive]\nmode = \"latency\"\ntarget = \"0s\"\n",
            "adaptive",
            builder().adaptive(Adaptive::latency(Duration::ZERO)),
        ),
        (
            "[failure.retry]\nenabled = true\njitter = 2.0\n",
            "retry_policy",
            builder().retry_policy(jittery),
        ),
        (
            "[failure.retry]\nenabled = true\nmax_delay = \"1000days\"\n",
            "max_delay",
            builder().retry_policy(slow),
        ),
        (
            "[failure.circuit_breaker]\nenabled = true\nfailure_threshold = 0\n",
            "failure_threshold",
            builder().circuit_breaker(hair_trigger),
        ),
    ];
    for (text, field, by_method) in cases {
        let from_file = build_error(builder().with_config(&parse(text)));
        assert_eq!(
            from_file.field(),
            field,
            "expected {text:?} to be refused at {field}"
        );
        assert_eq!(
            from_file,
            build_error(by_method),
            "expected {text:?} to be refused as the builder method refuses it"
        );
    }
}

#[test]
fn latency_mode_needs_a_target() {
    let e = build_error(builder().with_config(&parse("[shape.adaptive]\nmode = \"latency\"\n")));
    assert_eq!(e.field(), "adaptive");
    assert!(
        matches!(e, ConfigError::Invalid { reason, .. } if reason.contains("target")),
        "expected the missing target to be named, got {e:?}"
    );
    // The example file's `target = "none"` with latency mode: the same.
    let mut settings = parse(EXAMPLE);
    settings.shape.adaptive.mode = Some(AdaptiveKind::Latency);
    assert_eq!(build_error(builder().with_config(&settings)), e);

    // A target from the file, or the builder's own for the same mode.
    let file = parse("[shape.adaptive]\nmode = \"latency\"\ntarget = \"4ms\"\nmin = 2\n");
    let got = builder().with_config(&file).settings().shape.adaptive;
    assert_eq!(got.target, Some(Some(Duration::from_millis(4))));
    assert_eq!(got.grow_below, Some(Some(0.8)), "latency mode's default");
    let kept = builder()
        .adaptive(Adaptive::latency(Duration::from_millis(9)))
        .with_config(&parse("[shape.adaptive]\nmin = 3\n"))
        .settings()
        .shape
        .adaptive;
    assert_eq!(kept.target, Some(Some(Duration::from_millis(9))));
    assert_eq!(kept.min, Some(3));
    let batcher = builder()
        .with_config(&file)
        .build()
        .expect("a latency target builds");
    batcher.shutdown();
}

#[test]
fn policies_turn_on_and_off_by_enabled() {
    let patient = changed(|p: &mut RetryPolicy| p.max_retries = 9);
    let kept = builder()
        .retry_policy(patient)
        .with_config(&parse("[failure.retry]\nmax_delay = \"1s\"\n"))
        .settings()
        .failure
        .retry;
    assert_eq!(kept.enabled, Some(true));
    assert_eq!(kept.max_retries, Some(9), "the builder's policy goes on");
    assert_eq!(kept.max_delay, Some(Duration::from_secs(1)));

    let off = builder()
        .retry_policy(patient)
        .circuit_breaker(CircuitBreaker::default())
        .with_config(&parse(
            "[failure.retry]\nenabled = false\n[failure.circuit_breaker]\nenabled = false\n",
        ))
        .settings()
        .failure;
    assert_eq!(off, builder().settings().failure, "both off, as by default");

    // Left out, `enabled` keeps a policy off: its keys wait for it.
    let still_off = builder()
        .with_config(&parse("[failure.circuit_breaker]\nfailure_threshold = 2\n"))
        .settings()
        .failure
        .circuit_breaker;
    assert_eq!(still_off.enabled, Some(false));
}

#[cfg(feature = "tokio")]
#[test]
fn drain_on_runtime_is_read() {
    let settings = builder()
        .with_config(&parse("[core]\ndrain_on_runtime = true\n"))
        .settings();
    assert_eq!(settings.core.drain_on_runtime, Some(true));
}

#[cfg(not(feature = "tokio"))]
#[test]
fn drain_on_runtime_needs_the_tokio_feature() {
    let e = build_error(builder().with_config(&parse("[core]\ndrain_on_runtime = true\n")));
    assert_eq!(e.field(), "drain_on_runtime");
    assert!(
        builder()
            .with_config(&parse("[core]\ndrain_on_runtime = false\n"))
            .build()
            .is_ok(),
        "expected `false` to build without the feature"
    );
}

/// (feature `durable`) `[durable]`: every key reaches the store's
/// settings, a builder's store reads back, bad values are named.
#[cfg(feature = "durable")]
mod durable {
    use super::*;
    use ringbatch::durable::{CorruptTail, Durability, FsyncPolicy, Postcard};

    #[test]
    fn every_durable_key_reaches_the_store_settings() {
        let settings = parse(
            r#"
            [durable]
            dir = "/var/lib/app/queue"
            fsync = "25ms"
            max_bytes = 1048576
            segment_bytes = 65536
            corrupt_tail = "refuse"
            "#,
        );
        let durability = settings.durable.durability().expect("a directory");
        assert_eq!(
            durability,
            Durability::new("/var/lib/app/queue")
                .with_fsync(FsyncPolicy::Interval(Duration::from_millis(25)))
                .with_max_bytes(1 << 20)
                .with_segment_bytes(1 << 16)
                .with_corrupt_tail(CorruptTail::Refuse)
        );
        for (text, fsync) in [
            ("every_batch", FsyncPolicy::EveryBatch),
            ("never", FsyncPolicy::Never),
            ("1s", FsyncPolicy::Interval(Duration::from_secs(1))),
        ] {
            let settings = parse(&format!("[durable]\ndir = \"q\"\nfsync = \"{text}\"\n"));
            assert_eq!(
                settings.durable.durability().map(|d| d.fsync()),
                Some(fsync),
                "fsync = {text:?}"
            );
        }
        let no_dir = parse("[durable]\nfsync = \"never\"\n");
        assert_eq!(no_dir.durable.durability(), None, "no directory, no store");
    }

    #[test]
    fn with_config_applies_durable_keys_to_the_store_set_before() {
        let settings = parse("[durable]\nsegment_bytes = 65536\nfsync = \"never\"\n");
        let configured = builder()
            .durable(Durability::new("/tmp/a"), Postcard)
            .with_config(&settings);
        let read_back = configured.settings().durable;
        let expected = Durability::new("/tmp/a")
            .with_segment_bytes(1 << 16)
            .with_fsync(FsyncPolicy::Never);
        assert_eq!(read_back.dir.as_deref(), Some(expected.dir()));
        assert_eq!(read_back.fsync, Some(expected.fsync()));
        assert_eq!(read_back.segment_bytes, Some(1 << 16));
        assert_eq!(read_back.max_bytes, Some(expected.max_bytes()));
        assert_eq!(read_back.corrupt_tail, Some(CorruptTail::Truncate));
        // The read-back sets the same again.
        let again = builder()
            .durable(Durability::new("/elsewhere"), Postcard)
            .with_config(&configured.settings());
        assert_eq!(again.settings().durable, read_back);
    }

    #[test]
    fn bad_durable_values_are_named_with_their_key() {
        for (text, key) in [
            ("[durable]\nfsync = \"sometimes\"\n", "durable.fsync"),
            (
                "[durable]\ncorrupt_tail = \"ignore\"\n",
                "durable.corrupt_tail",
            ),
            ("[durable]\nmax_bytes = -1\n", "durable.max_bytes"),
            ("[durable]\npath = \"q\"\n", "durable.path"),
        ] {
            let error = parse_error(text);
            assert_eq!(error.key(), Some(key), "{text:?}: {error}");
            assert_eq!(error.line(), Some(2), "{text:?}: {error}");
        }
    }
}
