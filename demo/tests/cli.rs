//! The README's first command, the demo, run with small flags: it
//! finishes, prints its summary, and writes a well-formed SVG chart holding
//! its three series (throughput, batch size, p99 latency). Bad flags get
//! clap's usual message.
//!
//! Cargo builds the binary for the test (`CARGO_BIN_EXE_demo`). Every run is
//! bounded in time and killed past its limit.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Running it for two seconds, then drawing the chart.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringbatch-demo-{}-{name}", std::process::id()));
    fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// What a bounded child left: its exit status, stdout and stderr.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `command` to the end with its output in files under `dir`, killing
/// it after `limit`.
fn run_bounded(mut command: Command, dir: &Path, what: &str, limit: Duration) -> Finished {
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let stdout = File::create(&out_path).expect("create the stdout file");
    let stderr = File::create(&err_path).expect("create the stderr file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: could not start {command:?}: {e}"));
    let started = Instant::now();
    let status = loop {
        match child.try_wait().expect("poll the child") {
            Some(status) => break status,
            None if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = fs::read_to_string(&err_path).unwrap_or_default();
                panic!(
                    "{what}: still running after {limit:?}, killed; expected it to finish.\n\
                     stderr:\n{stderr}"
                );
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    Finished {
        status,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// The demo binary, built by cargo for this test with the same profile.
fn demo_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_demo"))
}

#[test]
fn demo_runs_and_writes_an_svg_with_three_series() {
    let binary = demo_binary();
    let dir = scratch("run");
    let svg_path = dir.join("chart").join("demo.svg");
    let mut command = Command::new(&binary);
    command.args(["--seconds", "2", "--items", "20000", "--producers", "2"]);
    command.args([
        "--pattern",
        "spikes",
        "--max-batch",
        "128",
        "--linger",
        "500us",
    ]);
    command.arg("--out").arg(&svg_path);
    let run = run_bounded(command, &dir, "the demo", RUN_LIMIT);
    assert!(
        run.status.success(),
        "the demo exited with {}; expected success.\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    for expected in [
        "items handled",
        "batches",
        "adaptive limit",
        "batch shapes",
        "recent throughput",
        "handler time",
        "end to end",
        "chart: ",
    ] {
        assert!(
            run.stdout.contains(expected),
            "the summary lacks {expected:?}:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains(&svg_path.display().to_string()),
        "the demo should print the chart's path {}:\n{}",
        svg_path.display(),
        run.stdout
    );

    let svg = fs::read_to_string(&svg_path)
        .unwrap_or_else(|e| panic!("the demo wrote no chart at {}: {e}", svg_path.display()));
    let doc = roxmltree::Document::parse(&svg)
        .unwrap_or_else(|e| panic!("the chart is not well-formed XML: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg", "root element");

    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_owned())
        .collect();
    for caption in ["throughput", "batch size", "p99 latency"] {
        assert!(
            texts.iter().any(|t| t == caption),
            "no panel captioned {caption:?}; texts: {texts:?}"
        );
    }
    for legend in [
        "throughput (items/s)",
        "batch size (mean dispatched)",
        "p99 latency (ms, submit to handled)",
    ] {
        assert!(
            texts.iter().any(|t| t == legend),
            "no legend entry {legend:?}; texts: {texts:?}"
        );
    }

    // Each series is a polyline in its own colour with a point per sample
    // (every 100 ms of the 2 s run); the legend's swatches have two points.
    let points_by_colour = |colour: &str| -> usize {
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .filter(|n| {
                n.attribute("stroke")
                    .is_some_and(|s| s.eq_ignore_ascii_case(colour))
            })
            .map(|n| {
                n.attribute("points")
                    .unwrap_or("")
                    .split_whitespace()
                    .count()
            })
            .max()
            .unwrap_or(0)
    };
    for (series, colour) in [
        ("throughput", "#1F77B4"),
        ("batch size", "#2CA02C"),
        ("p99 latency", "#D62728"),
    ] {
        let points = points_by_colour(colour);
        assert!(
            points >= 10,
            "the {series} series ({colour}) should be a polyline of at least 10 points, \
             found {points}"
        );
    }
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn demo_count_and_adaptive_flags_bound_the_run_and_its_sizes() {
    let dir = scratch("count");
    let mut command = Command::new(demo_binary());
    command.args(["--seconds", "30", "--count", "3000", "--producers", "3"]);
    command.args(["--pattern", "sinewave", "--max-batch", "64"]);
    command.args(["--initial-batch", "16", "--min-batch", "4"]);
    command.args(["--adjust-interval", "20ms", "--adjust-factor", "0.3"]);
    command.arg("--out").arg(dir.join("chart.svg"));
    let started = Instant::now();
    let run = run_bounded(command, &dir, "the demo with --count", RUN_LIMIT);
    assert!(
        run.status.success(),
        "the demo exited with {}; expected success.\nstdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    // 3,000 items shared by three producers: the run ends on the count, long
    // before its 30 s.
    for expected in ["pattern sine,", "batch 4 to 64 from 16", "or 3000 items"] {
        assert!(
            run.stdout.contains(expected),
            "the banner lacks {expected:?}:\n{}",
            run.stdout
        );
    }
    let field = |name: &str| {
        run.stdout
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line[name.len()..].split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name:?} line in:\n{}", run.stdout))
    };
    assert_eq!(field("items offered"), 3000, "exactly --count items");
    assert_eq!(field("items handled"), 3000, "every one handled");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the count, not --seconds, ended the run ({:?})",
        started.elapsed()
    );
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn demo_rejects_an_initial_batch_outside_its_bounds() {
    let dir = scratch("initial");
    let mut command = Command::new(demo_binary());
    command.args([
        "--max-batch",
        "64",
        "--min-batch",
        "8",
        "--initial-batch",
        "4",
    ]);
    let run = run_bounded(command, &dir, "the demo with a bad initial size", RUN_LIMIT);
    assert!(!run.status.success(), "expected a refusal");
    assert!(
        run.stderr
            .contains("--initial-batch 4 is outside --min-batch 8 to --max-batch 64"),
        "stderr names the flags:\n{}",
        run.stderr
    );
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn demo_rejects_bad_flags_with_clap_message() {
    let binary = demo_binary();
    let dir = scratch("flags");
    let mut command = Command::new(&binary);
    command.args(["--pattern", "zigzag"]);
    let run = run_bounded(command, &dir, "the demo with a bad flag", RUN_LIMIT);
    assert_eq!(
        run.status.code(),
        Some(2),
        "clap exits with 2 on a usage error; stderr:\n{}",
        run.stderr
    );
    for expected in [
        "invalid value 'zigzag' for '--pattern <PATTERN>'",
        "possible values: constant, sine, spikes, gradual",
        "--help",
    ] {
        assert!(
            run.stderr.contains(expected),
            "stderr lacks {expected:?}:\n{}",
            run.stderr
        );
    }
    let _ = fs::remove_dir_all(dir);
}
