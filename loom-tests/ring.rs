//! The lane ring: claims, publication, runs, wrap-around.

use loom::thread;

use crate::producer::retry_until_room;
use crate::ring::{Claim, ClaimError, Claims, Ring, park_drainer};
use crate::sync::{Arc, AtomicUsize, Ordering};
use crate::wait::{Notifier, WaitStrategy};

/// A lane as the models use it: the ring, and the notifier its producers
/// sleep on while it is full.
pub(super) struct Lane<T> {
    pub(super) ring: Ring<T>,
    pub(super) notifier: Notifier,
}

impl<T> Lane<T> {
    fn new(capacity: usize) -> Arc<Self> {
        Self::with_ring(Ring::new(capacity))
    }

    pub(super) fn with_ring(ring: Ring<T>) -> Arc<Self> {
        Arc::new(Self {
            ring,
            notifier: Notifier::new(),
        })
    }

    /// Claims `n` slots by the real producer path: try, and while full sleep
    /// on the notifier after flagging the head word (`WaitStrategy::Park`, so
    /// the model has no spin loop).
    fn claim(&self, n: usize, cached_head: &mut usize) -> Claim {
        self.claim_by(n, cached_head, |head| self.ring.try_claim(n, head))
    }

    /// [`claim`](Self::claim) with `attempt` as the claim attempt.
    pub(super) fn claim_by(
        &self,
        n: usize,
        cached_head: &mut usize,
        mut attempt: impl FnMut(&mut usize) -> Result<Claim, ClaimError>,
    ) -> Claim {
        retry_until_room(
            WaitStrategy::Park,
            &self.notifier,
            None,
            || attempt(cached_head),
            || self.ring.arm_room_waiter(n),
        )
        .expect("the lane is never closed in this model")
    }

    /// Pushes `value`, waking `drainer` if the claim says it parked.
    fn push(&self, cached_head: &mut usize, value: T, drainer: &thread::Thread) {
        let claim = self.claim(1, cached_head);
        self.publish_claimed(claim, value, false, drainer);
    }

    /// Publishes `value` at the sequence `claim` (of one slot) took, and
    /// wakes `drainer` if the claim says it parked. `owner`: the caller owns
    /// the ring and publishes through its cursor too.
    pub(super) fn publish_claimed(
        &self,
        claim: Claim,
        value: T,
        owner: bool,
        drainer: &thread::Thread,
    ) {
        // SAFETY: the caller's claim, published once.
        unsafe {
            self.ring.publish(
                claim.seq,
                value,
                None,
                if owner { Claims::Plain } else { Claims::Cas },
            )
        };
        if claim.wake_drainer {
            drainer.unpark();
        }
    }

    /// The drainer's loop: drains runs of up to `max_run` with the real code,
    /// notifies waiting producers, and parks by the real announce/park step
    /// when the lane is empty, until `count` items arrived.
    fn drain(&self, max_run: usize, count: usize) -> Vec<T> {
        self.drain_while(max_run, |_, got| got < count)
    }

    /// The drainer's loop, while `more(head, items so far)` holds.
    pub(super) fn drain_while(
        &self,
        max_run: usize,
        more: impl Fn(usize, usize) -> bool,
    ) -> Vec<T> {
        let mut head = 0;
        let mut got = Vec::new();
        while more(head, got.len()) {
            // SAFETY: this thread is the only consumer and `head` is current.
            let new_head = unsafe { self.ring.drain_run(head, max_run, |v, _, _| got.push(v)) };
            if new_head == head {
                park_drainer(std::iter::once((&self.ring, head)), || false);
                // A claimed but unpublished slot does not let the drainer
                // park: wait for its producer, as the drainer's backoff does.
                thread::yield_now();
            } else {
                if self.ring.finish_run(new_head) {
                    self.notifier.notify_all();
                }
                head = new_head;
            }
        }
        got
    }
}

/// (a) Two producers and the drainer on one lane of two slots, four items:
/// every slot is reused across wrap-around. Every item arrives exactly once
/// and each producer's items arrive in order.
#[test]
fn two_producers_and_drainer_across_wrap_around() {
    loom::model(|| {
        let lane = Lane::<(u8, u8)>::new(2);
        let drainer = thread::current();
        let producers: Vec<_> = (0..2u8)
            .map(|p| {
                let lane = Arc::clone(&lane);
                let drainer = drainer.clone();
                thread::spawn(move || {
                    let mut head = 0;
                    for i in 0..2u8 {
                        lane.push(&mut head, (p, i), &drainer);
                    }
                })
            })
            .collect();
        let got = lane.drain(2, 4);
        for producer in producers {
            producer.join().unwrap();
        }
        for p in 0..2u8 {
            let mine: Vec<u8> = got
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, i)| *i)
                .collect();
            assert_eq!(
                mine,
                vec![0, 1],
                "producer {p}'s items, in order, once each: {got:?}"
            );
        }
    });
}

/// (b) A slice claim: one producer claims two slots with one cursor move and
/// fills them while another producer pushes into the same two-slot lane. The
/// drainer sees the slice's items adjacent and in order, and everything once.
#[test]
fn slice_claim_with_a_competing_producer() {
    loom::model(|| {
        let lane = Lane::<u8>::new(2);
        let drainer = thread::current();
        let slicer = {
            let lane = Arc::clone(&lane);
            let drainer = drainer.clone();
            thread::spawn(move || {
                let claim = lane.claim(2, &mut 0);
                // SAFETY: both sequences are ours, each published once.
                unsafe {
                    lane.ring.publish(claim.seq, 10, None, Claims::Cas);
                    lane.ring
                        .publish(crate::ring::seq_add(claim.seq, 1), 11, None, Claims::Cas);
                }
                if claim.wake_drainer {
                    drainer.unpark();
                }
            })
        };
        let single = {
            let lane = Arc::clone(&lane);
            thread::spawn(move || lane.push(&mut 0, 20, &drainer))
        };
        let got = lane.drain(2, 3);
        slicer.join().unwrap();
        single.join().unwrap();
        let at = got
            .iter()
            .position(|&v| v == 10)
            .expect("the slice arrived");
        assert_eq!(
            got.get(at + 1),
            Some(&11),
            "the slice stays contiguous: {got:?}"
        );
        assert!(got.contains(&20), "the single item arrived: {got:?}");
    });
}

/// A slot published as skipped (a panicking clone in a slice) is stepped over,
/// and the items after it still arrive.
#[test]
fn skipped_slot_is_stepped_over() {
    loom::model(|| {
        let lane = Lane::<u8>::new(2);
        let drainer = thread::current();
        let producer = {
            let lane = Arc::clone(&lane);
            thread::spawn(move || {
                let mut head = 0;
                let claim = lane.ring.try_claim(2, &mut head).expect("empty lane");
                // SAFETY: both sequences are ours, each published once.
                unsafe {
                    lane.ring.publish(claim.seq, 1, None, Claims::Cas);
                    lane.ring
                        .publish_skip(crate::ring::seq_add(claim.seq, 1), Claims::Cas);
                }
                if claim.wake_drainer {
                    drainer.unpark();
                }
                lane.push(&mut head, 2, &drainer);
            })
        };
        let got = lane.drain(2, 2);
        producer.join().unwrap();
        assert_eq!(got, vec![1, 2]);
    });
}

/// Closing races a claim: the claim either lands below the final tail (and is
/// drained) or fails with `Closed`; nothing is claimed after the close.
#[test]
fn close_races_a_claim() {
    loom::model(|| {
        let lane = Lane::<u8>::new(2);
        let drainer = thread::current();
        let producer = {
            let lane = Arc::clone(&lane);
            thread::spawn(move || match lane.ring.try_claim(1, &mut 0) {
                Ok(claim) => {
                    // SAFETY: claimed, published once.
                    unsafe { lane.ring.publish(claim.seq, 7, None, Claims::Cas) };
                    if claim.wake_drainer {
                        drainer.unpark();
                    }
                    true
                }
                Err(ClaimError::Closed) => false,
                Err(ClaimError::Full) => panic!("the lane has room"),
            })
        };
        let final_tail = lane.ring.close();
        let got = lane.drain(2, final_tail);
        let accepted = producer.join().unwrap();
        assert_eq!(
            accepted,
            final_tail == 1,
            "accepted iff below the final tail"
        );
        assert_eq!(got.len(), final_tail);
    });
}

/// (e) Expiry stamps ride the publication protocol: a producer stamps each
/// item's expiry with a Relaxed store before its Release publish, over a
/// lane of one slot reused by two items; the drainer, after its Acquire
/// load of the slot stamp, reads the stamp of the same item, never the
/// previous lap's or the initial one.
#[test]
fn expiry_stamps_are_seen_with_their_items() {
    use crate::shape::{ExpiryStamps, NEVER};
    loom::model(|| {
        let lane = Lane::<u64>::new(1);
        let stamps = Arc::new(ExpiryStamps::new(1, std::time::Instant::now(), None));
        let drainer = thread::current();
        let producer = {
            let (lane, stamps) = (Arc::clone(&lane), Arc::clone(&stamps));
            thread::spawn(move || {
                let mut cached_head = 0;
                for value in [10u64, 20] {
                    let claim = lane.claim(1, &mut cached_head);
                    // The value's expiry is the value itself: easy to check.
                    stamps.stamp(claim.seq, value);
                    // SAFETY: just claimed, published once.
                    unsafe { lane.ring.publish(claim.seq, value, None, Claims::Cas) };
                    if claim.wake_drainer {
                        drainer.unpark();
                    }
                }
            })
        };
        let mut head = 0;
        let mut seen = Vec::new();
        while seen.len() < 2 {
            // SAFETY: this thread is the only consumer and `head` is current.
            let new_head = unsafe {
                lane.ring
                    .drain_run(head, 1, |v, seq, _| seen.push((v, stamps.get(seq))))
            };
            if new_head == head {
                park_drainer(std::iter::once((&lane.ring, head)), || false);
                thread::yield_now();
            } else {
                if lane.ring.finish_run(new_head) {
                    lane.notifier.notify_all();
                }
                head = new_head;
            }
        }
        producer.join().unwrap();
        assert_eq!(
            seen,
            vec![(10, 10), (20, 20)],
            "expiry stamps match their items"
        );
        assert_ne!(seen[0].1, NEVER);
    });
}

/// The eviction models' wait loops: how far loom follows them.
///
/// A helper that waits (the drainer finding nothing to take, an evictor
/// finding the oldest slot claimed but not yet published, a producer in the
/// ring's `await_taken`) spins with yields. A switch at a yield costs no
/// preemption, so loom may let two waiting threads take turns for as long as
/// it likes while the thread they wait for, runnable, is never scheduled: an
/// unfair schedule, not a livelock (scheduling that thread ends the wait).
/// Each longer turn-taking is a new execution. In the 2 + 2 model at two
/// preemptions they keep growing: the first producer is preempted
/// between its claim and its publication, and the drainer ("nothing at 1")
/// and the second producer ("oldest busy") take turns, 193 rounds each in
/// an execution found after about 1.5 million iterations, one more round
/// every few thousand iterations, until an execution passes loom's branch
/// limit (`LOOM_MAX_BRANCHES`): the earlier failure.
///
/// A round in which the waiter sees nothing new changes nothing (an
/// evictor's and `await_taken`'s rounds only load; the drainer's sets and
/// clears its park flag, the same each round), so an execution that spins
/// longer reaches no state that one spinning less does not. Once one loop
/// has spun more than [`IDLE_ROUNDS`] rounds with no progress anywhere (a
/// helper's claim, publication, eviction or run), loom explores the
/// execution no further (`loom::skip_branch`: it still runs to its end, by
/// loom's default schedule, and is checked).
const IDLE_ROUNDS: usize = 8;

/// Progress in one execution of an eviction model (see [`IDLE_ROUNDS`]).
#[derive(Default)]
struct Pace {
    /// Progress events so far: the model's bookkeeping, a `std` atomic that
    /// loom does not see.
    progress: std::sync::atomic::AtomicUsize,
}

/// One wait loop's idle rounds since the last progress anywhere.
#[derive(Default)]
struct Idle {
    seen: usize,
    rounds: usize,
}

impl Pace {
    fn progress(&self, event: impl FnOnce() -> String) {
        self.progress
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        probe::note(event);
    }

    /// An idle round of a wait loop: past [`IDLE_ROUNDS`] of them with no
    /// progress anywhere, loom explores this execution no further.
    fn idle(&self, idle: &mut Idle, event: impl FnOnce() -> String) {
        probe::note(event);
        let now = self.progress.load(std::sync::atomic::Ordering::Relaxed);
        if now != idle.seen {
            *idle = Idle {
                seen: now,
                rounds: 0,
            };
        }
        idle.rounds += 1;
        if idle.rounds == probe::idle_rounds(IDLE_ROUNDS) + 1 {
            probe::pruned();
            loom::skip_branch();
        }
    }
}

/// The producer side of `DropOldest` on an evicting ring, by the real calls:
/// claim; while the lane is full, evict its oldest item (kept in `evicted`,
/// and counted in `count`) and claim again; publish.
fn push_evicting(
    ring: &Ring<u8>,
    cached_head: &mut usize,
    value: u8,
    evicted: &mut Vec<u8>,
    count: &AtomicUsize,
    pace: &Pace,
    drainer: &thread::Thread,
) {
    use crate::ring::Evicted;
    let mut idle = Idle::default();
    let claim = loop {
        match ring.try_claim(1, cached_head) {
            Ok(claim) => break claim,
            Err(ClaimError::Full) => match ring.evict_oldest(1) {
                Evicted::Item(item, _) => {
                    pace.progress(|| format!("{value}: evicted {item}"));
                    evicted.push(item);
                    count.fetch_add(1, Ordering::SeqCst);
                }
                Evicted::Busy => {
                    pace.idle(&mut idle, || format!("{value}: full, oldest busy"));
                    thread::yield_now();
                }
                Evicted::Skip => pace.progress(|| format!("{value}: evicted a skip")),
                // The head moved since the claim looked: claim again.
                Evicted::Room => {}
            },
            Err(ClaimError::Closed) => panic!("the lane is never closed in this model"),
        }
    };
    pace.progress(|| format!("{value}: claimed {}", claim.seq));
    // SAFETY: just claimed, published once.
    unsafe { ring.publish(claim.seq, value, None, Claims::Cas) };
    pace.progress(|| format!("{value}: published {}", claim.seq));
    if claim.wake_drainer {
        drainer.unpark();
    }
}

/// The drainer of an evicting ring: runs of up to `max_run` by the real
/// `take_run`, parking by the real announce/park step when the lane is
/// empty, until the items drained and the `evicted` count reach `total`.
fn drain_evicting(
    ring: &Ring<u8>,
    max_run: usize,
    total: usize,
    evicted: &AtomicUsize,
    pace: &Pace,
) -> Vec<u8> {
    let mut head = 0;
    let mut got = Vec::new();
    let mut idle = Idle::default();
    while got.len() + evicted.load(Ordering::SeqCst) < total {
        // SAFETY: this thread is the drainer; `head` is its last copy.
        let run = unsafe { ring.take_run(head, max_run, |v, _, _| got.push(v)) };
        assert!(!run.notify, "no producer waits for room in this model");
        head = run.end;
        if run.start == run.end {
            pace.idle(&mut idle, || format!("D: nothing at {head}"));
            park_drainer(std::iter::once((ring, head)), || false);
            thread::yield_now();
        } else {
            pace.progress(|| format!("D: took {}..{}", run.start, run.end));
        }
    }
    got
}

/// Checks that every item of `0..total` ended exactly once, drained or
/// evicted, never both, each side in order.
fn assert_each_once(got: &[u8], evicted: &[u8], total: u8) {
    let mut all: Vec<u8> = got.iter().chain(evicted).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..total).collect::<Vec<_>>(),
        "drained {got:?}, evicted {evicted:?}"
    );
    assert!(got.is_sorted(), "drained in order: {got:?}");
    assert!(evicted.is_sorted(), "evicted oldest first: {evicted:?}");
}

/// (f) `DropOldest`: a producer pushes three items into an evicting lane of
/// two slots, evicting the oldest whenever the lane is full, while the
/// drainer takes runs of two by CAS on the head. Every item is either drained
/// once or evicted once, never both and never lost; slot reuse waits for the
/// consumer that claimed the slot to move its item out (loom's cell checks
/// would catch a producer writing a slot under a reading consumer).
#[test]
fn eviction_races_the_drainers_run() {
    loom::model(|| {
        let ring = Arc::new(Ring::<u8>::with_eviction(2));
        let count = Arc::new(AtomicUsize::new(0));
        let pace = std::sync::Arc::new(Pace::default());
        let drainer = thread::current();
        let producer = {
            let (ring, count, pace) = (Arc::clone(&ring), Arc::clone(&count), pace.clone());
            thread::spawn(move || {
                let mut head = 0;
                let mut evicted = Vec::new();
                for value in 0..3u8 {
                    push_evicting(
                        &ring,
                        &mut head,
                        value,
                        &mut evicted,
                        &count,
                        &pace,
                        &drainer,
                    );
                }
                evicted
            })
        };
        let got = drain_evicting(&ring, 2, 3, &count, &pace);
        let evicted = producer.join().unwrap();
        assert_each_once(&got, &evicted, 3);
    });
}

/// Two evicting producers (the first sends `0..2`, the second `2..total`)
/// and the drainer on an evicting lane of two slots: the producers also race
/// each other for the oldest item. Every item ends exactly once, drained or
/// evicted, and the first producer's drained items keep their order.
fn two_evicting_producers(total: u8) {
    let ring = Arc::new(Ring::<u8>::with_eviction(2));
    let count = Arc::new(AtomicUsize::new(0));
    let pace = std::sync::Arc::new(Pace::default());
    let drainer = thread::current();
    let producers: Vec<_> = [0..2u8, 2..total]
        .into_iter()
        .map(|values| {
            let (ring, count, pace) = (Arc::clone(&ring), Arc::clone(&count), pace.clone());
            let drainer = drainer.clone();
            thread::spawn(move || {
                let mut head = 0;
                let mut evicted = Vec::new();
                for value in values {
                    push_evicting(
                        &ring,
                        &mut head,
                        value,
                        &mut evicted,
                        &count,
                        &pace,
                        &drainer,
                    );
                }
                evicted
            })
        })
        .collect();
    let got = drain_evicting(&ring, 1, usize::from(total), &count, &pace);
    let mut evicted = Vec::new();
    for producer in producers {
        evicted.extend(producer.join().unwrap());
    }
    let mut all: Vec<u8> = got.iter().chain(&evicted).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..total).collect::<Vec<_>>(),
        "drained {got:?}, evicted {evicted:?}"
    );
    let first: Vec<u8> = got.iter().copied().filter(|&v| v < 2).collect();
    assert!(first.is_sorted(), "producer order kept: {got:?}");
}

/// (g) Two evicting producers (2 + 1 items) and the drainer.
#[test]
fn two_evicting_producers_and_the_drainer() {
    loom::model(|| two_evicting_producers(3));
}

/// (h) As (g) with two items from each producer, so that both evict and
/// both are evicted from. Its state space is large: it runs with at most one
/// preemption here (about 25 s). At two preemptions, see
/// [`two_evicting_producers_two_items_each_deep`]: without the idle-round
/// cut of [`IDLE_ROUNDS`] its executions grow until one passes loom's branch
/// limit (an unfair schedule, not a bug). With the cut at 2 rounds the
/// search ran to its end: about 27 million executions (23 min, resumed
/// once from a checkpoint), 249,300 of them cut, none failed. With the cut
/// at 8 rounds no execution failed in 61 million (59 min, stopped there).
#[test]
fn two_evicting_producers_two_items_each() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(1);
    builder.check(|| two_evicting_producers(4));
}

/// Off-CI probe for the long paths of the eviction models: the helpers note
/// what they did, per execution, and an execution with more than `limit`
/// notes panics with them (the interleaving at the helpers' level). A panic
/// from loom itself (such as its branch limit) prints them too.
mod probe {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;

    static ON: AtomicBool = AtomicBool::new(false);
    static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
    static ITERATIONS: AtomicUsize = AtomicUsize::new(0);
    static MOST: AtomicUsize = AtomicUsize::new(0);
    static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static START: Mutex<Option<Instant>> = Mutex::new(None);

    /// Notes `event` if the probe is on.
    pub(super) fn note(event: impl FnOnce() -> String) {
        if !ON.load(Ordering::Relaxed) {
            return;
        }
        let mut events = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
        events.push(event());
        if events.len() > LIMIT.load(Ordering::Relaxed) {
            let dump = events.join("\n");
            drop(events);
            panic!(
                "more than {} helper steps in one execution:\n{dump}",
                LIMIT.load(Ordering::Relaxed)
            );
        }
    }

    /// Turns the probe on, with a step limit per execution, and prints the
    /// notes of the execution that panics.
    pub(super) fn arm(limit: usize) {
        ON.store(true, Ordering::Relaxed);
        LIMIT.store(limit, Ordering::Relaxed);
        *START.lock().unwrap() = Some(Instant::now());
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(events) = EVENTS.try_lock() {
                let n = events.len();
                let tail = events[n.saturating_sub(400)..].join("\n");
                eprintln!(
                    "probe: iteration {}, {n} helper steps in this execution, the last:\n{tail}",
                    ITERATIONS.load(Ordering::Relaxed)
                );
            }
            previous(info);
        }));
    }

    /// Starts an execution: clears the notes, counts it, reports progress.
    pub(super) fn start_execution() {
        let i = ITERATIONS.fetch_add(1, Ordering::Relaxed) + 1;
        let mut events = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
        let n = events.len();
        if n > MOST.load(Ordering::Relaxed) {
            MOST.store(n, Ordering::Relaxed);
            if n > 30 {
                let start = START.lock().unwrap().expect("armed");
                eprintln!(
                    "probe: new longest at iteration {}, {:.0} s: {n} helper steps",
                    i - 1,
                    start.elapsed().as_secs_f64()
                );
            }
        }
        events.clear();
        drop(events);
        if i % 200_000 == 0 {
            let start = START.lock().unwrap().expect("armed");
            eprintln!(
                "probe: {i} iterations, {:.0} s, at most {} helper steps in one execution, \
                 {} explored no further",
                start.elapsed().as_secs_f64(),
                MOST.load(Ordering::Relaxed),
                PRUNED.load(Ordering::Relaxed)
            );
        }
    }

    static PRUNED: AtomicUsize = AtomicUsize::new(0);
    static IDLE_ROUNDS: AtomicUsize = AtomicUsize::new(0);

    /// Counts an execution explored no further (see `IDLE_ROUNDS`).
    pub(super) fn pruned() {
        if ON.load(Ordering::Relaxed) {
            PRUNED.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `IDLE_ROUNDS`, or the probe's own (`LOOM_EVICT_IDLE_ROUNDS`) while
    /// it is on.
    pub(super) fn idle_rounds(default: usize) -> usize {
        match IDLE_ROUNDS.load(Ordering::Relaxed) {
            0 => default,
            n => n,
        }
    }

    /// Sets the probe's idle-round limit.
    pub(super) fn set_idle_rounds(n: usize) {
        IDLE_ROUNDS.store(n, Ordering::Relaxed);
    }

    /// Iterations run, the most helper steps in one execution, and the
    /// executions explored no further.
    pub(super) fn summary() -> (usize, usize, usize) {
        (
            ITERATIONS.load(Ordering::Relaxed),
            MOST.load(Ordering::Relaxed),
            PRUNED.load(Ordering::Relaxed),
        )
    }
}

/// (h) at the preemption bound `LOOM_EVICT_PREEMPTIONS` (default 2), with
/// the probe on (`LOOM_EVICT_PROBE_STEPS`: helper steps allowed in one
/// execution; `LOOM_EVICT_IDLE_ROUNDS`: the idle-round cut, default
/// [`IDLE_ROUNDS`], a huge value turning it off). Off CI:
///
/// ```text
/// LOOM_MAX_BRANCHES=20000 LOOM_CHECKPOINT_FILE=/tmp/h2.json \
///     bin/loom two_evicting_producers_two_items_each_deep --ignored --nocapture
/// ```
///
/// (the checkpoint file lets a stopped run resume where it was).
#[test]
#[ignore = "long: run by hand"]
fn two_evicting_producers_two_items_each_deep() {
    let env = |name: &str, default: usize| {
        std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
    };
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(env("LOOM_EVICT_PREEMPTIONS", 2));
    probe::arm(env("LOOM_EVICT_PROBE_STEPS", usize::MAX));
    probe::set_idle_rounds(env("LOOM_EVICT_IDLE_ROUNDS", IDLE_ROUNDS));
    let start = std::time::Instant::now();
    builder.check(|| {
        probe::start_execution();
        two_evicting_producers(4);
    });
    let (iterations, most, pruned) = probe::summary();
    eprintln!(
        "probe: done, {iterations} iterations in {:.0} s, at most {most} helper steps in one \
         execution, {pruned} explored no further",
        start.elapsed().as_secs_f64()
    );
}

/// (i) `DropOldest` with tickets and expiry stamps: a producer pushes three
/// ticketed items (ticket index = value, expiry stamp = value + 100) into
/// an evicting lane of two slots, evicting the oldest whenever it is full,
/// while the drainer takes runs of two and reads each item's expiry stamp
/// in its run (as the shaping drainer does). Each item ends once, drained
/// or evicted, with its own ticket (`Evicted::Item(value, ticket)` and the
/// run's ticket) and, when drained, its own expiry: a consumer marks a slot
/// taken only after it read the sequence's stamp, so the next lap's
/// producer cannot overwrite it first.
#[test]
fn eviction_keeps_tickets_and_expiry_stamps_with_their_items() {
    use crate::ring::Evicted;
    use crate::shape::ExpiryStamps;
    loom::model(|| {
        let ring = Arc::new(Ring::<u8>::with_eviction(2));
        let stamps = Arc::new(ExpiryStamps::new(2, std::time::Instant::now(), None));
        let count = Arc::new(AtomicUsize::new(0));
        let drainer = thread::current();
        let producer = {
            let (ring, stamps, count) =
                (Arc::clone(&ring), Arc::clone(&stamps), Arc::clone(&count));
            thread::spawn(move || {
                let mut head = 0;
                let mut evicted = Vec::new();
                for value in 0..3u8 {
                    let claim = loop {
                        match ring.try_claim(1, &mut head) {
                            Ok(claim) => break claim,
                            Err(ClaimError::Full) => match ring.evict_oldest(1) {
                                Evicted::Item(item, ticket) => {
                                    assert_eq!(ticket, Some(usize::from(item)), "its own ticket");
                                    evicted.push(item);
                                    count.fetch_add(1, Ordering::SeqCst);
                                }
                                Evicted::Busy => thread::yield_now(),
                                Evicted::Skip | Evicted::Room => {}
                            },
                            Err(ClaimError::Closed) => panic!("never closed in this model"),
                        }
                    };
                    stamps.stamp(claim.seq, u64::from(value) + 100);
                    // SAFETY: just claimed, published once.
                    unsafe {
                        ring.publish(claim.seq, value, Some(usize::from(value)), Claims::Cas)
                    };
                    if claim.wake_drainer {
                        drainer.unpark();
                    }
                }
                evicted
            })
        };
        let mut head = 0;
        let mut got = Vec::new();
        while got.len() + count.load(Ordering::SeqCst) < 3 {
            // SAFETY: this thread is the drainer; `head` is its last copy.
            let run = unsafe {
                ring.take_run(head, 2, |value, seq, ticket| {
                    assert_eq!(ticket, Some(usize::from(value)), "its own ticket");
                    assert_eq!(stamps.get(seq), u64::from(value) + 100, "its own expiry");
                    got.push(value);
                })
            };
            head = run.end;
            if run.start == run.end {
                park_drainer(std::iter::once((&*ring, head)), || false);
                thread::yield_now();
            }
        }
        let evicted = producer.join().unwrap();
        assert_each_once(&got, &evicted, 3);
    });
}

/// (j) A producer waits for room (`retry_until_room` with the real
/// `arm_room_waiter`, sleeping on the lane's notifier: a blocking push on a
/// `DropOldest` lane) in a one-slot evicting lane that starts full, while
/// another producer evicts the oldest item to push its own and the drainer
/// takes runs. An eviction moves the head but keeps the waiter flag, so the
/// drainer's next run still notifies: the waiter is always woken, and every
/// item ends once, drained or evicted.
///
/// Four threads with spin-and-yield loops (the evictor's retries, the wait
/// for a taken stamp): at two preemptions it exceeds the branch limit after
/// 18 minutes, so it runs with one (16 s). At one it catches a run that
/// does not notify the waiter; an eviction that drops the waiter flag is
/// not caught at this bound.
#[test]
fn a_producer_waiting_for_room_is_woken_while_another_evicts() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(1);
    builder.check(|| {
        let lane = Lane::<u8>::with_ring(Ring::with_eviction(1));
        let count = Arc::new(AtomicUsize::new(0));
        let pace = Arc::new(Pace::default());
        {
            // The lane starts full with item 0.
            let claim = lane.ring.try_claim(1, &mut 0).expect("empty lane");
            // SAFETY: just claimed, published once.
            unsafe { lane.ring.publish(claim.seq, 0, None, Claims::Cas) };
        }
        let drainer = thread::current();
        let waiter = {
            let (lane, drainer) = (Arc::clone(&lane), drainer.clone());
            thread::spawn(move || lane.push(&mut 0, 1, &drainer))
        };
        let evictor = {
            let (lane, count, pace) = (Arc::clone(&lane), Arc::clone(&count), Arc::clone(&pace));
            thread::spawn(move || {
                let mut evicted = Vec::new();
                push_evicting(&lane.ring, &mut 0, 2, &mut evicted, &count, &pace, &drainer);
                evicted
            })
        };
        let mut head = 0;
        let mut got = Vec::new();
        while got.len() + count.load(Ordering::SeqCst) < 3 {
            // SAFETY: this thread is the drainer; `head` is its last copy.
            let run = unsafe { lane.ring.take_run(head, 1, |v, _, _| got.push(v)) };
            if run.notify {
                lane.notifier.notify_all();
            }
            head = run.end;
            if run.start == run.end {
                park_drainer(std::iter::once((&lane.ring, head)), || false);
                thread::yield_now();
            } else {
                // Lets the evictor's idle-round cut see the drainer move.
                pace.progress(|| format!("D: took {}..{}", run.start, run.end));
            }
        }
        waiter.join().unwrap();
        let evicted = evictor.join().unwrap();
        let mut all: Vec<u8> = got.iter().chain(&evicted).copied().collect();
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2], "drained {got:?}, evicted {evicted:?}");
    });
}
