//! Property tests of batch assembly: random interleavings of items (keys,
//! classes, weights, deadlines, producers) and drainer steps (time passing,
//! idle sweeps, flushes) under random policies, checked against the rules
//! every emitted batch must keep and an exact account of every item.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::batch::{BatchBuf, Origin};
use crate::error::Error;
use crate::shape::{Assembler, Force, GroupLimits, KeyPolicy, Linger, NEVER, Oversize, Shaping};
use crate::stats::DispatchReason;

/// A test item: who sent it, its number in its producer's sequence, and
/// what the policies look at.
#[derive(Debug, Clone, Copy)]
struct Item {
    id: usize,
    producer: usize,
    seq: usize,
    key: u8,
    class: usize,
    weight: usize,
    expires: u64,
}

#[derive(Debug, Clone)]
enum Op {
    /// A producer submits (if the staging area has room).
    Submit {
        producer: usize,
        key: u8,
        class: usize,
        weight: usize,
        /// Nanoseconds from now, or never.
        ttl: Option<u64>,
    },
    /// The drainer looks: time passes, the sweep found nothing (or did),
    /// and maybe a flush.
    Step {
        advance: u64,
        idle: bool,
        flush: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..5u8, 0..4usize, 1..40usize, prop::option::of(0..2_000u64)).prop_map(
            |(producer, key, class, weight, ttl)| Op::Submit {
                producer,
                key,
                class,
                weight,
                ttl,
            }
        ),
        1 => (0..1_500u64, any::<bool>(), prop::bool::weighted(0.1))
            .prop_map(|(advance, idle, flush)| Op::Step { advance, idle, flush }),
    ]
}

#[derive(Debug, Clone)]
struct Policy {
    max_batch: usize,
    effective: usize,
    max_bytes: Option<usize>,
    oversize_alone: bool,
    linger: Option<u64>,
    min_interval: Option<u64>,
    priorities: bool,
    grouped: bool,
    group_share: Option<f64>,
    max_open_groups: usize,
    conflate: bool,
    staging: usize,
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        (1..12usize, 0..12usize),
        prop::option::of(20..100usize),
        any::<bool>(),
        prop::option::of(1..3_000u64),
        prop::option::of(1..2_000u64),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0.1..1.0f64),
        1..4usize,
        any::<bool>(),
        0..20usize,
    )
        .prop_map(
            |(
                (max_batch, shrink),
                max_bytes,
                oversize_alone,
                linger,
                min_interval,
                priorities,
                grouped,
                group_share,
                max_open_groups,
                conflate,
                extra_staging,
            )| Policy {
                max_batch,
                effective: max_batch.saturating_sub(shrink).max(1),
                max_bytes,
                oversize_alone,
                linger,
                min_interval,
                priorities,
                grouped,
                group_share,
                max_open_groups,
                conflate,
                staging: max_batch + extra_staging,
            },
        )
}

/// Where each item ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Handled,
    Superseded,
    Expired,
    TooLarge,
}

struct Harness {
    policy: Policy,
    asm: Assembler<Item>,
    buf: BatchBuf<Item>,
    now: u64,
    ends: HashMap<usize, End>,
    /// Highest sequence dispatched per (producer, class, key).
    order: HashMap<(usize, usize, u8), usize>,
    last_dispatch: Option<u64>,
}

impl Harness {
    fn new(policy: Policy) -> Self {
        let mut shaping = Shaping::<Item> {
            max_bytes: policy.max_bytes,
            weigher: policy
                .max_bytes
                .map(|_| Box::new(|item: &Item| item.weight) as Box<dyn Fn(&Item) -> usize + Send>),
            oversize: if policy.oversize_alone {
                Oversize::Alone
            } else {
                Oversize::Fail
            },
            linger: policy
                .linger
                .map_or(Linger::None, |ns| Linger::Fixed(Duration::from_nanos(ns))),
            min_interval: policy.min_interval.map(Duration::from_nanos),
            priorities: policy.priorities,
            staging: Some(policy.staging),
            deadlines: true,
            max_open_groups: policy.max_open_groups,
            ..Shaping::default()
        };
        if policy.grouped {
            shaping.group = Some(KeyPolicy::new(|item: &Item| item.key));
            if let Some(share) = policy.group_share {
                shaping.group_limits = Some(Box::new(move |_: &Item| GroupLimits::share(share)));
            }
        }
        if policy.conflate {
            shaping.conflate = Some(KeyPolicy::new(|item: &Item| item.key));
        }
        shaping.validate(policy.max_batch).expect("valid policy");
        let epoch = Instant::now();
        Self {
            asm: Assembler::new(shaping, policy.max_batch, epoch, Default::default()),
            buf: BatchBuf::with_capacity(policy.max_batch),
            policy,
            now: 0,
            ends: HashMap::new(),
            order: HashMap::new(),
            last_dispatch: None,
        }
    }

    fn end(&mut self, origin: Origin, end: End) -> Result<(), TestCaseError> {
        let (_, id) = origin.pending().expect("every test item has an origin");
        prop_assert!(
            self.ends.insert(id, end).is_none(),
            "item {id} ended twice ({end:?} after {:?})",
            self.ends[&id]
        );
        Ok(())
    }

    /// Runs the assembler until nothing is due, checking every batch.
    fn step(&mut self, idle: bool, force: Force) -> Result<(), TestCaseError> {
        loop {
            let mut ended = Vec::new();
            let reason = self.asm.next_batch(
                &mut self.buf,
                self.now,
                self.policy.effective,
                self.policy.max_batch,
                idle,
                force,
                &mut |origin, error| ended.push((origin, error)),
            );
            for (origin, error) in ended {
                let end = match error {
                    Error::Superseded => End::Superseded,
                    Error::Expired => End::Expired,
                    Error::TooLarge { .. } => End::TooLarge,
                    other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
                };
                self.end(origin, end)?;
            }
            let Some(reason) = reason else {
                return Ok(());
            };
            self.check_batch(reason)?;
            let origins: Vec<Origin> = self.buf.origins.clone();
            for origin in origins {
                self.end(origin, End::Handled)?;
            }
            let _ = self.buf.clear();
            self.last_dispatch = Some(self.now);
        }
    }

    fn check_batch(&mut self, reason: DispatchReason) -> Result<(), TestCaseError> {
        let p = &self.policy;
        let items = &self.buf.items;
        prop_assert!(!items.is_empty());
        // Item limit: the effective size, and the group's share of it.
        let mut limit = p.effective;
        if p.grouped {
            if let Some(share) = p.group_share {
                limit = ((p.effective as f64 * share).ceil() as usize).clamp(1, p.effective);
            }
        }
        prop_assert!(
            items.len() <= limit,
            "{} items, limit {limit} ({reason})",
            items.len()
        );
        // Byte limit: never exceeded, except by an oversize item alone.
        if let Some(max) = p.max_bytes {
            let bytes: usize = items.iter().map(|i| i.weight).sum();
            if items.iter().any(|i| i.weight > max) {
                prop_assert!(
                    p.oversize_alone,
                    "an oversize item was dispatched under Fail"
                );
                prop_assert_eq!(items.len(), 1, "an oversize item travels alone");
            } else {
                prop_assert!(bytes <= max, "{bytes} bytes over the limit {max}");
            }
        }
        // One key (and class) per batch when grouped.
        if p.grouped {
            let first = items[0];
            prop_assert!(
                items
                    .iter()
                    .all(|i| i.key == first.key && i.class == first.class),
                "a grouped batch mixes keys or classes: {items:?}"
            );
        }
        // Conflation: one item per key, the latest taken.
        if p.conflate {
            let mut keys = HashSet::new();
            prop_assert!(
                items.iter().all(|i| keys.insert((i.key, i.class))),
                "a conflated batch repeats a key: {items:?}"
            );
        }
        // No expired item reaches the handler.
        prop_assert!(
            items.iter().all(|i| i.expires > self.now),
            "an expired item was dispatched at {}: {items:?}",
            self.now
        );
        // The minimum interval holds unless forced or Critical.
        if let (Some(interval), Some(last)) = (p.min_interval, self.last_dispatch) {
            if !matches!(
                reason,
                DispatchReason::Flush | DispatchReason::Shutdown | DispatchReason::Priority
            ) && self.now < last + interval
            {
                // A group forced out to free a slot (Full) may also go.
                prop_assert!(
                    reason == DispatchReason::Full,
                    "dispatched {reason} {} ns after the last batch (interval {interval})",
                    self.now - last
                );
            }
        }
        // Per-producer order within a class (and key, when grouped). With
        // conflation a later item takes its key's first position, so order
        // is only kept per key.
        for item in items.iter() {
            let key = if p.grouped || p.conflate { item.key } else { 0 };
            let slot = self
                .order
                .entry((item.producer, item.class, key))
                .or_insert(0);
            prop_assert!(
                item.seq + 1 > *slot,
                "producer {} class {} sent seq {} after {}",
                item.producer,
                item.class,
                item.seq,
                *slot - 1
            );
            *slot = item.seq + 1;
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn assembly_keeps_every_rule_and_accounts_for_every_item(
        policy in policy(),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let mut h = Harness::new(policy);
        let mut seqs = [0usize; 3];
        let mut taken = Vec::new();
        for op in ops {
            match op {
                Op::Submit { producer, key, class, weight, ttl } => {
                    let class = if h.policy.priorities { class } else { 0 };
                    if h.asm.room_for(class) == 0 {
                        // The lane would hold it: the drainer must make room.
                        h.step(false, Force::No)?;
                        if h.asm.room_for(class) == 0 {
                            continue;
                        }
                    }
                    let id = taken.len();
                    let item = Item {
                        id,
                        producer,
                        seq: seqs[producer],
                        key,
                        class,
                        weight,
                        expires: ttl.map_or(NEVER, |t| h.now + t),
                    };
                    seqs[producer] += 1;
                    taken.push(item);
                    h.asm.take(item, Origin::ticket(0, id), class, item.expires, h.now, h.now);
                }
                Op::Step { advance, idle, flush } => {
                    h.now += advance;
                    let force = if flush { Force::All(DispatchReason::Flush) } else { Force::No };
                    h.step(idle, force)?;
                }
            }
        }
        h.step(false, Force::All(DispatchReason::Shutdown))?;
        prop_assert_eq!(h.asm.len(), 0, "everything left at shutdown");
        for item in &taken {
            prop_assert!(h.ends.contains_key(&item.id), "item {} never ended: {:?}", item.id, item);
        }
        prop_assert_eq!(h.ends.len(), taken.len());
        let count = |end| h.ends.values().filter(|e| **e == end).count() as u64;
        prop_assert_eq!(count(End::Superseded), h.asm.tally.superseded);
        prop_assert_eq!(count(End::Expired), h.asm.tally.expired);
        prop_assert_eq!(count(End::TooLarge), h.asm.tally.too_large);
        if !h.policy.conflate {
            prop_assert_eq!(h.asm.tally.superseded, 0);
        }
    }
}
