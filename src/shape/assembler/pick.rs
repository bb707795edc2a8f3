//! Picking the next batch: which class and group is ready, and when the
//! next one is due.

use crate::shape::assembler::{Group, Pick};
use crate::shape::{Assembler, Force, NEVER, duration_ns};
use crate::stats::DispatchReason;

impl<T> Assembler<T> {
    /// Decides whether a batch is due, and from where.
    pub(crate) fn pick(
        &self,
        now: u64,
        effective: usize,
        adaptive_max: usize,
        idle: bool,
        force: Force,
    ) -> Option<Pick> {
        if self.staged == 0 {
            return None;
        }
        if self.policy.group.is_none() {
            return self.pick_classes(now, effective, adaptive_max, idle, force);
        }
        let mut best: Option<(Pick, (u8, u64))> = None;
        for (g, group) in self.groups.iter().enumerate() {
            if group.len == 0 {
                continue;
            }
            let Some(reason) = self.group_ready(group, now, effective, adaptive_max, idle, force)
            else {
                continue;
            };
            let (arrived, order) = self
                .head_of(group)
                .map_or((NEVER, NEVER), |s| (s.arrived, s.order));
            let starving = self.starving(group.class as usize, arrived, now);
            // Critical first, then starving classes, then by class, then age.
            let rank = if group.class == 0 || starving {
                0
            } else {
                group.class
            };
            let order = (rank, order);
            if best.as_ref().is_none_or(|(_, o)| order < *o) {
                best = Some((
                    Pick {
                        reason,
                        group: Some(g),
                    },
                    order,
                ));
            }
        }
        if best.is_none() && self.over_staged_bytes() && !self.held_back(now) {
            // Over the memory threshold with no group ready: the heaviest
            // group goes, which frees the most.
            let heaviest = (0..self.groups.len())
                .filter(|&g| self.groups[g].len > 0)
                .max_by_key(|&g| self.groups[g].bytes);
            return heaviest.map(|g| Pick {
                reason: DispatchReason::Bytes,
                group: Some(g),
            });
        }
        best.map(|(pick, _)| pick)
    }

    /// The bytes staged across every group reach the threshold.
    pub(crate) fn over_staged_bytes(&self) -> bool {
        self.policy
            .max_staged_bytes
            .is_some_and(|limit| self.staged_bytes >= limit)
    }

    /// Whether a class-`class` item the drainer took at `arrived` has waited
    /// past the starvation age in the staging area (only classes below
    /// Critical starve). The age counts from the drainer taking the item,
    /// which the share of the staging area kept for lower classes makes
    /// prompt even under a stream of higher-class items.
    pub(crate) fn starving(&self, class: usize, arrived: u64, now: u64) -> bool {
        class > 0
            && self.classes > 1
            && arrived != NEVER
            && now.saturating_sub(arrived) >= duration_ns(self.policy.starvation_age)
    }

    /// The minimum interval holds dispatches back (not a Critical one).
    pub(crate) fn held_back(&self, now: u64) -> bool {
        match (self.policy.min_interval, self.last_dispatch) {
            (Some(interval), Some(last)) => now < last.saturating_add(duration_ns(interval)),
            _ => false,
        }
    }

    pub(crate) fn group_ready(
        &self,
        group: &Group,
        now: u64,
        effective: usize,
        adaptive_max: usize,
        idle: bool,
        force: Force,
    ) -> Option<DispatchReason> {
        if let Force::All(reason) = force {
            return Some(reason);
        }
        if group.class == 0 && self.classes > 1 {
            return Some(DispatchReason::Priority);
        }
        if group.limits.immediate {
            return Some(DispatchReason::Immediate);
        }
        if self.held_back(now) {
            return None;
        }
        let limit = group.limits.max_items(effective);
        self.ready(
            group.len >= limit,
            group.bytes,
            self.head_of(group).map_or(now, |s| s.arrived),
            || self.earliest_expiry(group),
            self.linger_ns(Some(&group.limits), effective, adaptive_max),
            now,
            idle,
        )
    }

    /// The common rules: full, bytes, deadline, linger, natural batching, a
    /// full staging area.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ready(
        &self,
        full: bool,
        bytes: usize,
        oldest: u64,
        earliest_expiry: impl FnOnce() -> u64,
        linger: Option<u64>,
        now: u64,
        idle: bool,
    ) -> Option<DispatchReason> {
        if full {
            return Some(DispatchReason::Full);
        }
        if self.policy.max_bytes.is_some_and(|limit| bytes >= limit)
            || (self.policy.group.is_none() && self.over_staged_bytes())
        {
            return Some(DispatchReason::Bytes);
        }
        match linger {
            None if idle => return Some(DispatchReason::LanesIdle),
            None => {}
            Some(linger) => {
                let due = oldest.saturating_add(linger);
                if now >= due {
                    return Some(DispatchReason::Linger);
                }
                // An item would expire before the linger ends: go now.
                if earliest_expiry() <= due {
                    return Some(DispatchReason::Deadline);
                }
            }
        }
        if self.room_for(0) == 0 {
            // The staging area is full (but for the share kept for lower
            // classes): make room.
            return Some(DispatchReason::Full);
        }
        None
    }

    pub(crate) fn pick_classes(
        &self,
        now: u64,
        effective: usize,
        adaptive_max: usize,
        idle: bool,
        force: Force,
    ) -> Option<Pick> {
        let pick = |reason| {
            Some(Pick {
                reason,
                group: None,
            })
        };
        if let Force::All(reason) = force {
            return pick(reason);
        }
        if self.classes > 1 && self.groups[0].len > 0 {
            return pick(DispatchReason::Priority);
        }
        if self.held_back(now) {
            return None;
        }
        let oldest = self
            .groups
            .iter()
            .filter_map(|g| self.head_of(g).map(|s| s.arrived))
            .min()
            .unwrap_or(now);
        let reason = self.ready(
            self.staged >= effective,
            self.staged_bytes,
            oldest,
            || {
                self.groups
                    .iter()
                    .map(|g| self.earliest_expiry(g))
                    .min()
                    .unwrap_or(NEVER)
            },
            self.linger_ns(None, effective, adaptive_max),
            now,
            idle,
        )?;
        pick(reason)
    }

    /// When the drainer must look again even if no item arrives: the
    /// earliest linger end, or the end of the minimum interval.
    pub(crate) fn next_due(&self, now: u64, effective: usize, adaptive_max: usize) -> Option<u64> {
        if self.staged == 0 {
            return None;
        }
        let mut due = NEVER;
        for group in &self.groups {
            if let Some(head) = self.head_of(group) {
                let limits = self.policy.group.as_ref().map(|_| &group.limits);
                if let Some(linger) = self.linger_ns(limits, effective, adaptive_max) {
                    due = due.min(head.arrived.saturating_add(linger));
                }
            }
        }
        if let (Some(interval), Some(last)) = (self.policy.min_interval, self.last_dispatch) {
            due = due.min(last.saturating_add(duration_ns(interval)).max(now));
        }
        (due != NEVER).then_some(due)
    }
}
