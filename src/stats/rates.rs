//! Dispatch rates over a recent window of snapshots.

/// Dispatch rates over a recent window, measured between the snapshots a
/// batcher has taken ([`Batcher::stats`](crate::Batcher::stats) and the
/// rest): from the oldest snapshot of the last [`WINDOW`](Self::WINDOW)
/// (or of the batcher's start, for the first) to this one. Taking
/// snapshots regularly (a metrics scrape, a progress line) keeps the
/// window recent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Throughput {
    /// Items dispatched per second.
    pub items_per_sec: f64,
    /// Batches dispatched per second.
    pub batches_per_sec: f64,
    /// The time the rates were measured over.
    pub window: core::time::Duration,
}

impl Throughput {
    /// The window the rates look back over, when snapshots come often
    /// enough.
    pub const WINDOW: core::time::Duration = core::time::Duration::from_secs(10);
}

/// Recent snapshots' counts, for [`Throughput`]: at most one every
/// sixteenth of the window, so that frequent snapshots cost no more.
#[derive(Debug)]
pub(crate) struct RateWindow {
    samples: std::collections::VecDeque<(std::time::Instant, u64, u64)>,
}

impl RateWindow {
    const SAMPLES: usize = 17;

    /// Starts at `start` with nothing dispatched.
    pub(crate) fn new(start: std::time::Instant) -> Self {
        let mut samples = std::collections::VecDeque::with_capacity(Self::SAMPLES);
        samples.push_back((start, 0, 0));
        Self { samples }
    }

    /// The rates from the oldest sample in the window to `(now, items,
    /// batches)`, which is kept as a sample if the last is old enough.
    pub(crate) fn observe(
        &mut self,
        now: std::time::Instant,
        items: u64,
        batches: u64,
    ) -> Throughput {
        let window = Throughput::WINDOW;
        // Keep one sample older than the window, so that it stays covered.
        while self.samples.len() > 1 && now.saturating_duration_since(self.samples[1].0) >= window {
            self.samples.pop_front();
        }
        let &(since, items_then, batches_then) = self.samples.front().expect("never empty");
        let span = now.saturating_duration_since(since);
        let newest = self.samples.back().map_or(since, |s| s.0);
        if now.saturating_duration_since(newest) >= window / 16 {
            if self.samples.len() == Self::SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back((now, items, batches));
        }
        let secs = span.as_secs_f64();
        if secs <= 0.0 {
            return Throughput::default();
        }
        Throughput {
            items_per_sec: items.saturating_sub(items_then) as f64 / secs,
            batches_per_sec: batches.saturating_sub(batches_then) as f64 / secs,
            window: span,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod rate_tests {
    use std::time::{Duration, Instant};

    use super::{RateWindow, Throughput};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_full_group_table_sums_its_least_recent_group_into_other() {
        let mut table = crate::stats::GroupTable::new(2);
        table.dispatched(1, 10, 100);
        table.dispatched(2, 20, 200);
        table.dispatched(1, 1, 1);
        table.failed(2, 3);
        // Key 1 was active before key 2's failure: it leaves.
        table.dispatched(3, 30, 300);
        let mut stats = crate::stats::Stats::default();
        table.fill(&mut stats);
        let keys: Vec<u64> = stats.groups.iter().map(|g| g.key_hash).collect();
        assert_eq!(keys, [2, 3]);
        assert_eq!(
            (
                stats.groups_other.items,
                stats.groups_other.batches,
                stats.groups_other.bytes
            ),
            (11, 2, 101)
        );
        assert_eq!(stats.groups[0].failures, 3);
    }

    #[test]
    fn the_first_rates_run_from_the_start() {
        let t0 = Instant::now();
        let mut rates = RateWindow::new(t0);
        let r = rates.observe(t0 + Duration::from_secs(2), 1000, 10);
        assert!(
            close(r.items_per_sec, 500.0) && close(r.batches_per_sec, 5.0),
            "{r:?}"
        );
        assert_eq!(r.window, Duration::from_secs(2));
    }

    #[test]
    fn the_window_slides_to_the_last_ten_seconds() {
        let t0 = Instant::now();
        let mut rates = RateWindow::new(t0);
        // 100 items a second for 20 s, then 1,000 a second for 20 s,
        // observed every second.
        let mut items = 0;
        let mut last = Throughput::default();
        for s in 1..=40u64 {
            items += if s <= 20 { 100 } else { 1000 };
            last = rates.observe(t0 + Duration::from_secs(s), items, s);
            if s == 20 {
                assert!(close(last.items_per_sec, 100.0), "{last:?}");
            }
        }
        assert!(
            close(last.items_per_sec, 1000.0),
            "only the fast part: {last:?}"
        );
        assert!(
            last.window >= Throughput::WINDOW && last.window <= Throughput::WINDOW * 2,
            "{:?}",
            last.window
        );
    }

    #[test]
    fn frequent_snapshots_keep_few_samples() {
        let t0 = Instant::now();
        let mut rates = RateWindow::new(t0);
        for ms in 1..=100_000u64 {
            rates.observe(t0 + Duration::from_millis(ms), ms, ms);
        }
        assert!(rates.samples.len() <= RateWindow::SAMPLES);
        let r = rates.observe(t0 + Duration::from_millis(100_001), 100_001, 100_001);
        assert!(close(r.items_per_sec, 1000.0), "{r:?}");
    }
}
