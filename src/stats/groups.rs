//! Per key group counts: a table bounded at build, updated once per batch.

use super::Stats;

/// A per-group series of the exports: its name, help and field.
pub(crate) type GroupSeries = (&'static str, &'static str, fn(&GroupStats) -> u64);

/// One key group's counts ([`Stats::groups`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStats {
    /// The hash of the group's key: [`group_key_hash`](crate::group_key_hash)
    /// of the key `group_by` returned.
    pub key_hash: u64,
    /// Items dispatched.
    pub items: u64,
    /// Batches dispatched.
    pub batches: u64,
    /// Their weight, with a weigher.
    pub bytes: u64,
    /// Items whose result was an error.
    pub failures: u64,
}

impl GroupStats {
    /// How many groups [`Stats::groups`] keeps for `max_open_groups` (four
    /// times as many, at least 256): the table is allocated at build.
    pub fn limit(max_open_groups: usize) -> usize {
        max_open_groups.saturating_mul(4).max(256)
    }

    fn add(&mut self, other: &GroupStats) {
        self.items += other.items;
        self.batches += other.batches;
        self.bytes += other.bytes;
        self.failures += other.failures;
    }
}

/// The per-group counts, bounded: a new group past the limit pushes the
/// least recently active one into `other`. Updated once per batch (and
/// once per batch with failures), never per item.
#[derive(Debug)]
pub(crate) struct GroupTable {
    /// Each group's counts and when it was last active (a batch count).
    entries: std::collections::HashMap<u64, (GroupStats, u64)>,
    limit: usize,
    tick: u64,
    other: GroupStats,
}

impl GroupTable {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            // Room for `limit` groups up front: later inserts and removals
            // reuse it.
            entries: std::collections::HashMap::with_capacity(limit + 1),
            limit,
            tick: 0,
            other: GroupStats::default(),
        }
    }

    fn entry(&mut self, key_hash: u64) -> &mut GroupStats {
        self.tick += 1;
        if !self.entries.contains_key(&key_hash) && self.entries.len() >= self.limit {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, last))| *last)
                .map(|(&key, _)| key);
            if let Some((stats, _)) = oldest.and_then(|key| self.entries.remove(&key)) {
                self.other.add(&stats);
            }
        }
        let tick = self.tick;
        let (stats, last) = self.entries.entry(key_hash).or_insert((
            GroupStats {
                key_hash,
                ..GroupStats::default()
            },
            tick,
        ));
        *last = tick;
        stats
    }

    /// A batch of group `key_hash` was dispatched.
    pub(crate) fn dispatched(&mut self, key_hash: u64, items: u64, bytes: u64) {
        let stats = self.entry(key_hash);
        stats.batches += 1;
        stats.items += items;
        stats.bytes += bytes;
    }

    /// `n` items of group `key_hash` failed.
    pub(crate) fn failed(&mut self, key_hash: u64, n: u64) {
        self.entry(key_hash).failures += n;
    }

    pub(crate) fn fill(&self, stats: &mut Stats) {
        stats.groups = self.entries.values().map(|(s, _)| *s).collect();
        stats.groups.sort_unstable_by_key(|s| s.key_hash);
        stats.groups_other = self.other;
    }
}
