//! The assembler: the staging area (an intake queue and per-group lists
//! threaded through one slab) and the batch it forms after each sweep.

mod fill;
mod intake;
mod pick;

use core::fmt;
use std::collections::VecDeque;
use std::sync::Arc as StdArc;
use std::time::Instant;

use crate::batch::{BatchBuf, Origin};
use crate::error::Error;
use crate::shape::keys::HashIndex;
use crate::shape::{Shaping, duration_ns};
use crate::stats::{ContainedPanics, DispatchReason};
use crate::{GroupLimits, Linger};

/// An item in the staging area.
pub(crate) struct Staged<T> {
    pub(crate) item: T,
    pub(crate) origin: Origin,
    pub(crate) class: u8,
    /// Drainer time (ns since the epoch) when the drainer took it.
    pub(crate) arrived: u64,
    /// A time it is known to have been published after: the last time the
    /// drainer found its lane caught up, or woke (histograms).
    pub(crate) since: u64,
    /// The order the drainer took items in (breaks ties between items
    /// taken in one sweep).
    pub(crate) order: u64,
    /// Expiry (ns since the epoch), or [`NEVER`](crate::shape::NEVER).
    pub(crate) expires: u64,
    pub(crate) weight: usize,
}

/// A slab entry: a staged item and the next entry of its group's list.
pub(crate) struct Entry<T> {
    pub(crate) staged: Option<Staged<T>>,
    pub(crate) next: u32,
}

pub(crate) const NIL: u32 = u32::MAX;

/// One FIFO list of staged items: a priority class, or a key group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Group {
    /// The key's hash mixed with the class (key groups only).
    pub(crate) key: u64,
    pub(crate) class: u8,
    pub(crate) head: u32,
    pub(crate) tail: u32,
    pub(crate) len: usize,
    pub(crate) bytes: usize,
    /// The limits of a key group (from its first item).
    pub(crate) limits: GroupLimits,
    /// Whether a key group is open (holds items).
    pub(crate) open: bool,
}

impl Group {
    pub(crate) fn empty(class: u8) -> Self {
        Self {
            key: 0,
            class,
            head: NIL,
            tail: NIL,
            len: 0,
            bytes: 0,
            limits: GroupLimits::default(),
            open: false,
        }
    }
}

/// Counts kept by the assembler (published with the drainer's tally).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ShapeTally {
    pub(crate) expired: u64,
    pub(crate) superseded: u64,
    pub(crate) too_large: u64,
}

/// Why the assembler is asked for a batch regardless of its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Force {
    /// Follow the rules.
    No,
    /// Dispatch everything staged (flush, `flush_now`, shutdown).
    All(DispatchReason),
}

/// The staging area and the rules that turn it into batches.
pub(crate) struct Assembler<T> {
    pub(crate) policy: Shaping<T>,
    pub(crate) epoch: Instant,
    pub(crate) classes: usize,
    /// Items taken from the lanes, not yet routed to a group.
    pub(crate) intake: VecDeque<Staged<T>>,
    pub(crate) slab: Vec<Entry<T>>,
    pub(crate) free: Vec<u32>,
    /// Ungrouped: one list per class. Grouped: the key group slots.
    pub(crate) groups: Vec<Group>,
    /// Grouped: open groups by key, and the free group slots.
    pub(crate) index: HashIndex,
    pub(crate) free_groups: Vec<usize>,
    /// Conflation: key hash to position in the batch being filled.
    pub(crate) positions: HashIndex,
    /// Items in the slab, and their weight.
    pub(crate) staged: usize,
    pub(crate) staged_bytes: usize,
    pub(crate) capacity: usize,
    pub(crate) last_dispatch: Option<u64>,
    /// Items taken so far (their `order`).
    pub(crate) taken: u64,
    pub(crate) tally: ShapeTally,
    /// Where contained panics of the callbacks and drops are counted.
    pub(crate) panics: StdArc<ContainedPanics>,
}

impl<T> fmt::Debug for Assembler<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Assembler")
            .field("policy", &self.policy)
            .field("staged", &self.staged)
            .field("intake", &self.intake.len())
            .finish()
    }
}

/// What the assembler decided.
pub(crate) struct Pick {
    pub(crate) reason: DispatchReason,
    /// A key group, or every class list (`None`).
    pub(crate) group: Option<usize>,
}

impl<T> Assembler<T> {
    pub(crate) fn new(
        policy: Shaping<T>,
        max_batch: usize,
        epoch: Instant,
        panics: StdArc<ContainedPanics>,
    ) -> Self {
        let classes = policy.classes();
        let capacity = policy.staging.unwrap_or(max_batch.saturating_mul(4));
        let grouped = policy.group.is_some();
        let group_slots = if grouped {
            policy.max_open_groups
        } else {
            classes
        };
        let groups = (0..group_slots)
            .map(|i| Group::empty(if grouped { 0 } else { i as u8 }))
            .collect();
        let conflating = policy.conflate.is_some();
        Self {
            epoch,
            classes,
            intake: VecDeque::with_capacity(capacity),
            slab: (0..capacity)
                .map(|_| Entry {
                    staged: None,
                    next: NIL,
                })
                .collect(),
            free: (0..capacity as u32).rev().collect(),
            groups,
            index: HashIndex::with_capacity_and_hasher(
                if grouped { group_slots } else { 0 },
                Default::default(),
            ),
            free_groups: if grouped {
                (0..group_slots).rev().collect()
            } else {
                Vec::new()
            },
            positions: HashIndex::with_capacity_and_hasher(
                if conflating { max_batch } else { 0 },
                Default::default(),
            ),
            staged: 0,
            staged_bytes: 0,
            capacity,
            last_dispatch: None,
            taken: 0,
            tally: ShapeTally::default(),
            panics,
            policy,
        }
    }

    /// Nanoseconds since the epoch.
    pub(crate) fn now_ns(&self, now: Instant) -> u64 {
        duration_ns(now.saturating_duration_since(self.epoch))
    }

    /// Items the drainer may still take from the lanes now.
    #[inline]
    pub(crate) fn room(&self) -> usize {
        self.capacity - self.staged - self.intake.len()
    }

    /// Items the drainer may take now from a ring of class `class`: the
    /// room, less a share kept for each lower class, so that a stream of
    /// higher-class items cannot keep lower classes out of the staging area
    /// (where their age counts).
    #[inline]
    pub(crate) fn room_for(&self, class: usize) -> usize {
        let lower = self.classes - 1 - class;
        let reserve = ((self.capacity / (4 * self.classes)).max(1) * lower).min(self.capacity / 2);
        self.room().saturating_sub(reserve)
    }

    /// Items staged or in the intake.
    pub(crate) fn len(&self) -> usize {
        self.staged + self.intake.len()
    }

    /// Bytes of the staging area, for the memory report.
    pub(crate) fn footprint(&self) -> usize {
        self.capacity * (core::mem::size_of::<Entry<T>>() + core::mem::size_of::<Staged<T>>())
            + self.groups.len() * core::mem::size_of::<Group>()
    }

    /// Drainer side, inside a lane run: takes one item (the caller keeps
    /// `room() > 0`).
    #[inline]
    pub(crate) fn take(
        &mut self,
        item: T,
        origin: Origin,
        class: usize,
        expires: u64,
        now: u64,
        since: u64,
    ) {
        debug_assert!(self.room() > 0);
        self.intake.push_back(Staged {
            item,
            origin,
            class: class as u8,
            arrived: now,
            since,
            order: {
                self.taken += 1;
                self.taken
            },
            expires,
            weight: 0,
        });
    }

    /// The linger for a group with `limits`, given the effective size.
    pub(crate) fn linger_ns(
        &self,
        limits: Option<&GroupLimits>,
        effective: usize,
        max: usize,
    ) -> Option<u64> {
        if let Some(linger) = limits.and_then(|l| l.linger) {
            return Some(duration_ns(linger));
        }
        match self.policy.linger {
            Linger::None => None,
            Linger::Fixed(d) => Some(duration_ns(d)),
            Linger::Adaptive { target } => {
                let scaled = target.as_nanos() as f64 * effective as f64 / max.max(1) as f64;
                Some(scaled as u64)
            }
        }
    }

    /// One decision: routes the intake, then fills `buf` with the next batch
    /// if one is due and returns why; `None` when nothing is due.
    ///
    /// `effective` is the current maximum batch size (the adaptive size),
    /// `adaptive_max` the largest it can be; `idle` says the last sweep found
    /// nothing new. Items that expire, are superseded or are too large are
    /// completed through `complete` and counted.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn next_batch(
        &mut self,
        buf: &mut BatchBuf<T>,
        now: u64,
        effective: usize,
        adaptive_max: usize,
        idle: bool,
        force: Force,
        complete: &mut dyn FnMut(Origin, Error),
    ) -> Option<DispatchReason> {
        debug_assert!(buf.is_empty());
        loop {
            let pick = match self.route(now, complete) {
                Some(group) => Some(Pick {
                    // No group slot is free for the next key (or its key's
                    // slot holds another key): make room.
                    reason: DispatchReason::Full,
                    group: Some(group),
                }),
                None => self.pick(now, effective, adaptive_max, idle, force),
            };
            let pick = pick?;
            self.fill(buf, pick.group, now, effective, complete);
            if !buf.is_empty() {
                // A group's slot keeps its key after the batch closed it.
                let group = pick.group.map(|g| self.groups[g].key);
                buf.tag.set_group(group);
                if self.policy.group.is_some() {
                    buf.meta.group = group;
                }
                self.last_dispatch = Some(now);
                return Some(pick.reason);
            }
            // Everything picked had expired or was superseded: look again.
        }
    }
}

impl<T> Assembler<T> {
    /// Replaces the linger (a live setting).
    pub(crate) fn set_linger(&mut self, linger: Linger) {
        self.policy.linger = linger;
    }
}
