//! `Stats::prometheus` against a strict reading of the Prometheus text
//! exposition format 0.0.4, after concurrent load with histograms on, and
//! its numbers against the test's own tally.
//!
//! The checker below enforces, line by line: `# HELP` and `# TYPE` at most
//! once per metric and before its samples; metric names matching
//! `[a-zA-Z_:][a-zA-Z0-9_:]*`; label names `[a-zA-Z_][a-zA-Z0-9_]*` (not
//! `__`-prefixed); label values quoted with only `\\`, `\"` and `\n`
//! escapes; values that parse as floats, `+Inf`, `-Inf` or `NaN`; every
//! sample belonging to a metric with a TYPE; a metric's samples in one
//! group; counters ending in `_total`; summaries made of `quantile`-labelled
//! samples plus `_sum` and `_count`; histograms made of `_bucket` samples
//! with increasing `le` bounds, cumulative counts and a last `+Inf` bucket
//! equal to their `_count`, plus a `_sum`, for each label set; no series
//! twice. Its own tests at the end show that it rejects each kind of
//! mistake.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any single wait may take.
const BOUND: Duration = Duration::from_secs(60);

use ringbatch::metrics::{LabelProblem, PrometheusOptions};
use ringbatch::{Backpressure, Batch, Batcher, SubmitError};

/// Label names and values, in order.
type Labels = Vec<(String, String)>;

/// One sample: metric name, labels in order, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A checked exposition: samples by series, and each family's type.
#[derive(Debug, Default)]
struct Exposition {
    samples: Vec<Sample>,
    types: HashMap<String, String>,
}

impl Exposition {
    /// The value of the one series `name{labels}`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && s.labels
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect::<BTreeMap<_, _>>()
                        == want
            })
            .collect();
        assert_eq!(found.len(), 1, "expected one series {name}{labels:?}");
        found[0].value
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// A sample value: a Go-style float, `+Inf`, `-Inf` or `NaN`.
fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        "NaN" => return Ok(f64::NAN),
        _ => {}
    }
    // Digits, one optional point, an optional exponent; Rust's parser alone
    // would also take "inf" or "infinity".
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let digits = mantissa.chars().filter(char::is_ascii_digit).count();
    let points = mantissa.chars().filter(|&c| c == '.').count();
    let mantissa_ok = digits > 0 && points <= 1 && digits + points == mantissa.len();
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    if !(mantissa_ok && exponent_ok) {
        return Err(format!("`{text}` is not a float"));
    }
    text.parse().map_err(|e| format!("`{text}`: {e}"))
}

/// Parses `{name="value",...}` at the start of `text`; the labels and the
/// rest of the line.
fn parse_labels(text: &str) -> Result<(Labels, &str), String> {
    let mut rest = text
        .strip_prefix('{')
        .ok_or_else(|| "labels must start with {".to_owned())?;
    let mut labels = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("label without `=` in `{text}`"))?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name `{name}`"));
        }
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("label `{name}` twice"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or_else(|| format!("label `{name}`'s value must be quoted"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label `{name}`'s value is not closed")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in label `{name}`")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!("expected `,` or `}}` after label `{name}`"));
        }
    }
}

/// The family a sample named `name` belongs to, given the types so far.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    if types.contains_key(name) {
        return name;
    }
    for suffix in ["_sum", "_count", "_bucket"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("summary" | "histogram")
            ) {
                return base;
            }
        }
    }
    name
}

/// What one label set of a histogram showed.
#[derive(Debug, Default)]
struct HistogramParts {
    /// `(le, cumulative count)`, in order.
    buckets: Vec<(f64, f64)>,
    sum: bool,
    count: Option<f64>,
}

/// Checks `text` strictly (see the module docs).
fn check(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut out = Exposition::default();
    let mut helps = HashSet::new();
    let mut seen_series = HashSet::new();
    let mut finished_families = HashSet::new();
    let mut current_family: Option<String> = None;
    let mut summary_parts: HashMap<String, (bool, bool, usize)> = HashMap::new();
    let mut histogram_parts: HashMap<(String, Labels), HistogramParts> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: `{line}`", n + 1);
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match words.next() {
                Some("HELP") => {
                    let name = words.next().unwrap_or("");
                    if !is_metric_name(name) {
                        return Err(at(format!("bad metric name `{name}`")));
                    }
                    let help = words.next().unwrap_or("");
                    let mut chars = help.chars();
                    while let Some(c) = chars.next() {
                        if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
                            return Err(at("bad escape in HELP".into()));
                        }
                    }
                    if !helps.insert(name.to_owned()) {
                        return Err(at(format!("second HELP for {name}")));
                    }
                    if out
                        .samples
                        .iter()
                        .any(|s| family_of(&s.name, &out.types) == name)
                    {
                        return Err(at(format!("HELP for {name} after its samples")));
                    }
                }
                Some("TYPE") => {
                    let name = words.next().unwrap_or("");
                    let kind = words.next().unwrap_or("");
                    if !is_metric_name(name) {
                        return Err(at(format!("bad metric name `{name}`")));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type `{kind}`")));
                    }
                    if out.types.contains_key(name) {
                        return Err(at(format!("second TYPE for {name}")));
                    }
                    if out
                        .samples
                        .iter()
                        .any(|s| family_of(&s.name, &out.types) == name)
                    {
                        return Err(at(format!("TYPE for {name} after its samples")));
                    }
                    if kind == "counter" && !name.ends_with("_total") {
                        return Err(at(format!("counter {name} does not end in _total")));
                    }
                    out.types.insert(name.to_owned(), kind.to_owned());
                }
                _ => {} // Other comments are allowed.
            }
            continue;
        }

        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name `{name}`")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("expected a space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(at)?;
        if let Some(timestamp) = fields.next() {
            timestamp
                .parse::<i64>()
                .map_err(|_| at(format!("bad timestamp `{timestamp}`")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }

        let family = family_of(name, &out.types).to_owned();
        let Some(kind) = out.types.get(&family).cloned() else {
            return Err(at(format!("sample of {family} without a TYPE line")));
        };
        if current_family.as_deref() != Some(family.as_str()) {
            if finished_families.contains(&family) {
                return Err(at(format!("{family}'s samples are not in one group")));
            }
            if let Some(previous) = current_family.replace(family.clone()) {
                finished_families.insert(previous);
            }
        }
        let quantile = labels.iter().find(|(k, _)| k == "quantile");
        match kind.as_str() {
            "summary" => {
                let parts = summary_parts.entry(family.clone()).or_default();
                if name == family {
                    let q =
                        quantile.ok_or_else(|| at(format!("{name} sample without a quantile")))?;
                    let q = parse_value(&q.1).map_err(at)?;
                    if !(0.0..=1.0).contains(&q) {
                        return Err(at(format!("quantile {q} outside 0..1")));
                    }
                    parts.2 += 1;
                } else {
                    if quantile.is_some() {
                        return Err(at(format!("{name} must not carry a quantile")));
                    }
                    if name.ends_with("_sum") {
                        parts.0 = true;
                    } else if name.ends_with("_count") {
                        if value < 0.0 || value.fract() != 0.0 {
                            return Err(at("a count must be a whole number".into()));
                        }
                        parts.1 = true;
                    } else {
                        return Err(at(format!("{name} is not part of summary {family}")));
                    }
                }
            }
            "counter" => {
                if quantile.is_some() {
                    return Err(at("a counter with a quantile label".into()));
                }
                if value < 0.0 {
                    return Err(at("a negative counter".into()));
                }
            }
            "gauge" if quantile.is_some() => {
                return Err(at("a gauge with a quantile label".into()));
            }
            "histogram" => {
                let le = labels.iter().find(|(k, _)| k == "le");
                let rest: Labels = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
                let parts = histogram_parts.entry((family.clone(), rest)).or_default();
                if name == format!("{family}_bucket") {
                    let le = le.ok_or_else(|| at(format!("{name} without an le label")))?;
                    let bound = parse_value(&le.1).map_err(at)?;
                    if let Some(&(last_bound, last_count)) = parts.buckets.last() {
                        if bound <= last_bound {
                            return Err(at(format!("le {bound} not above {last_bound}")));
                        }
                        if value < last_count {
                            return Err(at("bucket counts must be cumulative".into()));
                        }
                    }
                    parts.buckets.push((bound, value));
                } else if le.is_some() {
                    return Err(at(format!("{name} must not carry an le label")));
                } else if name == format!("{family}_sum") {
                    parts.sum = true;
                } else if name == format!("{family}_count") {
                    parts.count = Some(value);
                } else {
                    return Err(at(format!("{name} is not part of histogram {family}")));
                }
            }
            _ => {}
        }
        let mut key: Vec<(String, String)> = labels.clone();
        key.sort();
        if !seen_series.insert((name.to_owned(), key)) {
            return Err(at(format!("series {name}{labels:?} twice")));
        }
        out.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    for (family, (sum, count, quantiles)) in &summary_parts {
        if !(*sum && *count && *quantiles > 0) {
            return Err(format!(
                "summary {family} lacks quantiles, _sum or _count ({quantiles}, {sum}, {count})"
            ));
        }
    }
    for (family, kind) in &out.types {
        if kind == "summary" && !summary_parts.contains_key(family) {
            return Err(format!("summary {family} has no samples"));
        }
        if kind == "histogram" && !histogram_parts.keys().any(|(f, _)| f == family) {
            return Err(format!("histogram {family} has no samples"));
        }
    }
    for ((family, labels), parts) in &histogram_parts {
        let last = parts.buckets.last();
        if last.is_none_or(|&(bound, _)| bound != f64::INFINITY) {
            return Err(format!(
                "histogram {family}{labels:?} lacks its +Inf bucket"
            ));
        }
        if !parts.sum || parts.count != last.map(|&(_, count)| count) {
            return Err(format!(
                "histogram {family}{labels:?} needs a _sum and a _count equal to its +Inf bucket"
            ));
        }
    }
    Ok(out)
}

const PRODUCERS: u64 = 3;
const PER_PRODUCER: u64 = 20_000;

/// What the test itself counted.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    accepted: u64,
    rejected: u64,
    failed: u64,
}

#[test]
fn exposition_after_load_is_strictly_valid_and_matches_the_tally() {
    let batches_seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let batches = std::sync::Arc::clone(&batches_seen);
    let batcher = Batcher::builder()
        .lanes(2)
        .capacity(64)
        .max_batch(32)
        .backpressure(Backpressure::Reject)
        .histograms(true)
        .handler_fn(move |batch: &mut Batch<'_, u64, ()>| {
            batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Slow enough that the small lanes overflow now and then.
            thread::sleep(Duration::from_micros(20));
            for i in 0..batch.len() {
                if batch.items()[i] % 5 == 0 {
                    batch.fail(i, "a multiple of five").unwrap();
                } else {
                    batch.ok(i, ()).unwrap();
                }
            }
            Ok(())
        })
        .build()
        .expect("valid settings");

    let tally = thread::scope(|s| {
        let handles: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let batcher = &batcher;
                s.spawn(move || {
                    let producer = batcher.producer();
                    let mut tally = Tally::default();
                    for i in 0..PER_PRODUCER {
                        let value = p * PER_PRODUCER + i;
                        // Offer the item until a lane takes it, counting
                        // each refusal (bounded: the drainer keeps going).
                        let deadline = Instant::now() + BOUND;
                        loop {
                            match producer.try_push(value) {
                                Ok(()) => break,
                                Err(SubmitError::Full(_)) => tally.rejected += 1,
                                Err(e) => panic!("unexpected refusal: {e:?}"),
                            }
                            assert!(Instant::now() < deadline, "item {value} never accepted");
                            thread::yield_now();
                        }
                        tally.accepted += 1;
                        tally.failed += u64::from(value % 5 == 0);
                    }
                    tally
                })
            })
            .collect();
        handles.into_iter().fold(Tally::default(), |sum, h| {
            let t = h.join().expect("a producer panicked");
            Tally {
                accepted: sum.accepted + t.accepted,
                rejected: sum.rejected + t.rejected,
                failed: sum.failed + t.failed,
            }
        })
    });
    assert!(batcher.flush_timeout(BOUND), "flush did not finish");
    let stats = batcher.stats();
    let text = stats.prometheus("rb");
    let batches = batches_seen.load(std::sync::atomic::Ordering::Relaxed);
    drop(batcher);

    let exposition = check(&text).unwrap_or_else(|e| panic!("{e}\n\n{text}"));
    let counter = |name: &str| exposition.value(name, &[]);
    let total = PRODUCERS * PER_PRODUCER;
    assert_eq!(tally.accepted, total, "every item was taken in the end");
    assert_eq!(
        counter("rb_submitted_total"),
        (tally.accepted + tally.rejected) as f64,
        "submitted counts every offer, refused or not"
    );
    assert_eq!(counter("rb_accepted_total"), tally.accepted as f64);
    assert_eq!(counter("rb_rejected_total"), tally.rejected as f64);
    assert_eq!(counter("rb_items_handled_total"), tally.accepted as f64);
    assert_eq!(counter("rb_items_failed_total"), tally.failed as f64);
    assert_eq!(counter("rb_batches_total"), batches as f64);
    assert_eq!(counter("rb_dropped_total"), 0.0);
    let reasons: f64 = exposition
        .samples
        .iter()
        .filter(|s| s.name == "rb_dispatched_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(
        reasons, batches as f64,
        "dispatch reasons add up to batches"
    );
    for lane in ["0", "1"] {
        exposition.value("rb_lane_depth", &[("lane", lane)]);
        exposition.value("rb_lane_depth_high_water", &[("lane", lane)]);
    }
    let per_lane = |name: &str| -> f64 {
        ["0", "1"]
            .iter()
            .map(|lane| exposition.value(name, &[("lane", lane)]))
            .sum()
    };
    assert_eq!(
        per_lane("rb_lane_accepted_total"),
        tally.accepted as f64,
        "the lanes' accepted counts add up to the total"
    );
    assert_eq!(
        per_lane("rb_lane_rejected_total"),
        tally.rejected as f64,
        "the lanes' rejected counts add up to the total"
    );
    assert_eq!(per_lane("rb_lane_dropped_total"), 0.0);
    assert_eq!(per_lane("rb_lane_refused_closed_total"), 0.0);
    assert_eq!(counter("rb_parks_total"), stats.parks as f64);
    assert_eq!(counter("rb_park_fences_total"), stats.park_fences as f64);
    assert_eq!(counter("rb_callback_panics_total"), 0.0);
    assert_eq!(counter("rb_drop_panics_total"), 0.0);
    assert_eq!(counter("rb_effective_max_batch"), 32.0);

    // The histograms count what the test counted, and match the snapshot.
    assert_eq!(counter("rb_batch_size_count"), batches as f64);
    assert_eq!(counter("rb_handler_seconds_count"), batches as f64);
    assert_eq!(
        counter("rb_queue_wait_seconds_count"),
        tally.accepted as f64
    );
    assert_eq!(
        counter("rb_end_to_end_seconds_count"),
        tally.accepted as f64
    );
    assert_eq!(
        counter("rb_batch_size_sum"),
        tally.accepted as f64,
        "the batch sizes' exact sum is the items handled"
    );
    let buckets = stats.buckets.as_ref().expect("histograms were on");
    for (family, counts) in [
        ("rb_batch_size", &buckets.batch_size),
        ("rb_queue_wait_seconds", &buckets.queue_wait_ns),
        ("rb_handler_seconds", &buckets.handler_ns),
        ("rb_end_to_end_seconds", &buckets.end_to_end_ns),
    ] {
        assert_eq!(exposition.types[family], "histogram");
        let bucket = format!("{family}_bucket");
        let exported: Vec<(f64, f64)> = exposition
            .samples
            .iter()
            .filter(|s| s.name == bucket)
            .map(|s| (parse_value(&s.labels[0].1).expect("an le"), s.value))
            .collect();
        assert_eq!(
            exported.len(),
            counts.bounds.len() + 1,
            "{family}: one bucket per bound and +Inf"
        );
        let per_unit = if family == "rb_batch_size" { 1.0 } else { 1e9 };
        for ((le, count), (&bound, &cumulative)) in exported
            .iter()
            .zip(counts.bounds.iter().zip(&counts.cumulative))
        {
            assert_eq!(*le, bound as f64 / per_unit, "{family}: the bound");
            assert_eq!(*count, cumulative as f64, "{family} le={le}: the count");
        }
        assert_eq!(exported.last().map(|b| b.1), Some(counts.count as f64));
    }
    let fast = exposition.value("rb_handler_seconds_bucket", &[("le", "0.00001")]);
    assert_eq!(
        fast, 0.0,
        "the handler sleeps 20 µs, so no batch took at most 10 µs"
    );
    let sum = counter("rb_handler_seconds_sum");
    assert!(
        sum >= 20e-6 * batches as f64,
        "each of {batches} batches slept 20 µs: the handler's time sums to at least that, {sum} s"
    );
}

#[test]
fn exposition_without_histograms_and_odd_namespaces_is_valid() {
    let batcher = Batcher::builder()
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .expect("valid settings");
    batcher.producer().push(7).expect("open");
    assert!(batcher.flush_timeout(BOUND), "flush did not finish");
    let stats = batcher.shutdown();
    for (namespace, prefix) in [
        ("orders", "orders_"),
        ("my-app.v2", "my_app_v2_"),
        ("9lives", "_lives_"),
        ("a:b", "a:b_"),
        ("", "_"),
    ] {
        let text = stats.prometheus(namespace);
        let exposition = check(&text).unwrap_or_else(|e| panic!("{namespace:?}: {e}\n\n{text}"));
        assert!(
            exposition
                .samples
                .iter()
                .all(|s| s.name.starts_with(prefix)),
            "{namespace:?}: every name starts with {prefix:?}"
        );
        assert_eq!(
            exposition.value(&format!("{prefix}items_handled_total"), &[]),
            1.0
        );
        assert!(
            !exposition.types.values().any(|t| t == "summary"),
            "no summaries without histograms"
        );
    }
}

/// A batcher with histograms that answers every item.
fn answering_batcher() -> Batcher<u64, ()> {
    Batcher::builder()
        .lanes(1)
        .histograms(true)
        .handler_fn(|batch: &mut Batch<'_, u64, ()>| {
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .expect("valid settings")
}

#[test]
fn two_batchers_share_one_exposition_through_their_labels() {
    let (orders, audit) = (answering_batcher(), answering_batcher());
    for (batcher, items) in [(&orders, 3u64), (&audit, 5)] {
        let producer = batcher.producer();
        for i in 0..items {
            // One at a time, so that every batch holds one item.
            producer
                .submit(i)
                .expect("open")
                .wait_timeout(BOUND)
                .expect("answered within the bound")
                .expect("ok");
        }
        assert!(batcher.flush_timeout(BOUND), "flush did not finish");
    }
    // One exposition: each family's HELP and TYPE once, its samples in one
    // group, as Prometheus wants them; each batcher's series told apart by
    // its label.
    let stats = [
        ("orders", orders.shutdown()),
        ("audit \"b\"\\\n", audit.shutdown()),
    ];
    let texts: Vec<String> = stats
        .iter()
        .map(|(name, stats)| {
            let options = PrometheusOptions::new("rb")
                .label("batcher", *name)
                .expect("a valid label")
                .label("region", "eu")
                .expect("a valid label");
            stats.prometheus_with(&options)
        })
        .collect();
    let merged = merge_families(&texts);
    let exposition = check(&merged).unwrap_or_else(|e| panic!("{e}\n\n{merged}"));
    for ((name, stats), items) in stats.iter().zip([3.0, 5.0]) {
        let labels = [("batcher", *name), ("region", "eu")];
        assert_eq!(
            exposition.value("rb_items_handled_total", &labels),
            items,
            "{name}'s items"
        );
        assert_eq!(
            exposition.value("rb_batches_total", &labels),
            stats.batches as f64
        );
        let le_one = [("batcher", *name), ("region", "eu"), ("le", "1")];
        assert_eq!(
            exposition.value("rb_batch_size_bucket", &le_one),
            items,
            "{name}: every batch held one item"
        );
        assert_eq!(exposition.value("rb_batch_size_sum", &labels), items);
        let lane = [("batcher", *name), ("region", "eu"), ("lane", "0")];
        assert_eq!(exposition.value("rb_lane_accepted_total", &lane), items);
    }
    // Every sample carries both labels, the constant ones first.
    for sample in &exposition.samples {
        let names: Vec<&str> = sample.labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names[..2],
            ["batcher", "region"],
            "{} carries the constant labels first",
            sample.name
        );
    }
    // Added up across the two, the buckets stay a histogram.
    let total: f64 = exposition
        .samples
        .iter()
        .filter(|s| {
            s.name == "rb_batch_size_bucket"
                && s.labels.iter().any(|(k, v)| k == "le" && v == "+Inf")
        })
        .map(|s| s.value)
        .sum();
    assert_eq!(total, 8.0, "3 + 5 batches in all");
}

/// Joins expositions as one endpoint serves them: each family's HELP,
/// TYPE and samples once, the samples of every text in turn.
fn merge_families(texts: &[String]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut heads: HashMap<String, Vec<String>> = HashMap::new();
    let mut samples: HashMap<String, Vec<String>> = HashMap::new();
    for text in texts {
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let name = rest.split(' ').nth(1).unwrap_or("").to_owned();
                if name != family {
                    family = name;
                    if !order.contains(&family) {
                        order.push(family.clone());
                    }
                }
                let head = heads.entry(family.clone()).or_default();
                if !head.iter().any(|h| h == line) {
                    head.push(line.to_owned());
                }
            } else {
                samples
                    .entry(family.clone())
                    .or_default()
                    .push(line.to_owned());
            }
        }
    }
    let mut out = String::new();
    for family in order {
        for line in heads[&family]
            .iter()
            .chain(samples.get(&family).into_iter().flatten())
        {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn every_line_is_a_comment_or_a_sample_with_the_labels_escaped() {
    let batcher = answering_batcher();
    batcher.producer().push(1).expect("open");
    assert!(batcher.flush_timeout(BOUND), "flush did not finish");
    let value = "a \"quoted\" back\\slash\nand a new line";
    let options = PrometheusOptions::new("rb")
        .label("name", value)
        .expect("any value is valid");
    let text = batcher.shutdown().prometheus_with(&options);
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, number) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("`{line}`: expected `name{{labels}} value`"));
        parse_value(number).unwrap_or_else(|e| panic!("`{line}`: {e}"));
        let escaped = r#"{name="a \"quoted\" back\\slash\nand a new line""#;
        assert!(
            series.contains(escaped),
            "`{line}`: expected the label escaped as {escaped}"
        );
    }
    let exposition = check(&text).unwrap_or_else(|e| panic!("{e}\n\n{text}"));
    assert!(
        exposition
            .samples
            .iter()
            .all(|s| s.labels[0] == ("name".to_owned(), value.to_owned())),
        "the label reads back as given"
    );
}

#[test]
fn bad_constant_labels_are_refused_with_the_label_given_back() {
    for (name, problem) in [
        ("1st", LabelProblem::InvalidName),
        ("a-b", LabelProblem::InvalidName),
        ("", LabelProblem::InvalidName),
        ("__x", LabelProblem::InvalidName),
        ("lane", LabelProblem::Reserved),
        ("le", LabelProblem::Reserved),
        ("reason", LabelProblem::Reserved),
        ("quantile", LabelProblem::Reserved),
        ("batcher", LabelProblem::Duplicate),
    ] {
        let error = PrometheusOptions::new("rb")
            .label("batcher", "one")
            .expect("valid")
            .label(name, "value")
            .expect_err(name);
        assert_eq!(error.problem, problem, "{name:?}");
        assert_eq!((error.name.as_str(), error.value.as_str()), (name, "value"));
        assert!(
            error.to_string().contains(&format!("{name:?}")),
            "the message names the label: {error}"
        );
    }
}

#[test]
fn the_checker_rejects_each_kind_of_mistake() {
    let good = "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n";
    assert!(check(good).is_ok(), "{:?}", check(good).err());
    let histogram =
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
    assert!(check(histogram).is_ok(), "{:?}", check(histogram).err());
    let bad = [
        ("no TYPE", "a_total 1\n"),
        ("no newline at the end", "# TYPE a_total counter\na_total 1"),
        (
            "TYPE after samples",
            "# TYPE a gauge\na 1\n# TYPE a gauge\n",
        ),
        ("counter without _total", "# TYPE a counter\na 1\n"),
        ("bad name", "# TYPE 1a gauge\n1a 1\n"),
        ("bad label name", "# TYPE a gauge\na{__x=\"1\"} 1\n"),
        ("bad escape", "# TYPE a gauge\na{x=\"\\t\"} 1\n"),
        ("unclosed label", "# TYPE a gauge\na{x=\"1} 1\n"),
        ("bad value", "# TYPE a gauge\na inf\n"),
        (
            "duplicate series",
            "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n",
        ),
        (
            "split group",
            "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"2\"} 1\n",
        ),
        (
            "summary without _count",
            "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 1\n",
        ),
        ("summary sample without quantile", "# TYPE s summary\ns 1\n"),
        (
            "gauge with quantile",
            "# TYPE a gauge\na{quantile=\"0.5\"} 1\n",
        ),
        ("empty line", "# TYPE a gauge\n\na 1\n"),
        (
            "histogram without +Inf",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        ),
        (
            "histogram not cumulative",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        ),
        (
            "histogram bounds not increasing",
            "# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        ),
        (
            "histogram count unlike +Inf",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 2\n",
        ),
        (
            "histogram without _sum",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
        ),
        ("bucket without le", "# TYPE h histogram\nh_bucket 1\n"),
    ];
    for (what, text) in bad {
        assert!(
            check(text).is_err(),
            "the checker accepted {what}: {text:?}"
        );
    }
    assert!(parse_value("-1.5e-3").is_ok() && parse_value("+Inf").is_ok());
    assert!(parse_value("NaN").is_ok() && parse_value("12").is_ok());
    assert!(parse_value("1e").is_err() && parse_value("infinity").is_err());
}
