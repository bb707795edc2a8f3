//! The lane ring: claims, publication, runs, wrap-around.

use loom::thread;

use crate::ring::{Claim, ClaimError, Ring, park_drainer};
use crate::sync::{Arc, AtomicUsize, Ordering};
use crate::wait::{Notifier, WaitStrategy, retry_until_room};

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
        unsafe { self.ring.publish(claim.seq, value, None, owner) };
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
                    lane.ring.publish(claim.seq, 10, None, false);
                    lane.ring
                        .publish(crate::ring::seq_add(claim.seq, 1), 11, None, false);
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
                    lane.ring.publish(claim.seq, 1, None, false);
                    lane.ring
                        .publish_skip(crate::ring::seq_add(claim.seq, 1), false);
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
                    unsafe { lane.ring.publish(claim.seq, 7, None, false) };
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
                    unsafe { lane.ring.publish(claim.seq, value, None, false) };
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

/// The producer side of `DropOldest` on an evicting ring, by the real calls:
/// claim; while the lane is full, evict its oldest item (kept in `evicted`,
/// and counted in `count`) and claim again; publish.
fn push_evicting(
    ring: &Ring<u8>,
    cached_head: &mut usize,
    value: u8,
    evicted: &mut Vec<u8>,
    count: &AtomicUsize,
    drainer: &thread::Thread,
) {
    use crate::ring::Evicted;
    let claim = loop {
        match ring.try_claim(1, cached_head) {
            Ok(claim) => break claim,
            Err(ClaimError::Full) => match ring.evict_oldest(1) {
                Evicted::Item(item, _) => {
                    evicted.push(item);
                    count.fetch_add(1, Ordering::SeqCst);
                }
                Evicted::Busy => thread::yield_now(),
                Evicted::Skip | Evicted::Room => {}
            },
            Err(ClaimError::Closed) => panic!("the lane is never closed in this model"),
        }
    };
    // SAFETY: just claimed, published once.
    unsafe { ring.publish(claim.seq, value, None, false) };
    if claim.wake_drainer {
        drainer.unpark();
    }
}

/// The drainer of an evicting ring: runs of up to `max_run` by the real
/// `take_run`, parking by the real announce/park step when the lane is
/// empty, until the items drained and the `evicted` count reach `total`.
fn drain_evicting(ring: &Ring<u8>, max_run: usize, total: usize, evicted: &AtomicUsize) -> Vec<u8> {
    let mut head = 0;
    let mut got = Vec::new();
    while got.len() + evicted.load(Ordering::SeqCst) < total {
        // SAFETY: this thread is the drainer; `head` is its last copy.
        let run = unsafe { ring.take_run(head, max_run, |v, _, _| got.push(v)) };
        assert!(!run.notify, "no producer waits for room in this model");
        head = run.end;
        if run.start == run.end {
            park_drainer(std::iter::once((ring, head)), || false);
            thread::yield_now();
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
        let drainer = thread::current();
        let producer = {
            let (ring, count) = (Arc::clone(&ring), Arc::clone(&count));
            thread::spawn(move || {
                let mut head = 0;
                let mut evicted = Vec::new();
                for value in 0..3u8 {
                    push_evicting(&ring, &mut head, value, &mut evicted, &count, &drainer);
                }
                evicted
            })
        };
        let got = drain_evicting(&ring, 2, 3, &count);
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
    let drainer = thread::current();
    let producers: Vec<_> = [0..2u8, 2..total]
        .into_iter()
        .map(|values| {
            let (ring, count) = (Arc::clone(&ring), Arc::clone(&count));
            let drainer = drainer.clone();
            thread::spawn(move || {
                let mut head = 0;
                let mut evicted = Vec::new();
                for value in values {
                    push_evicting(&ring, &mut head, value, &mut evicted, &count, &drainer);
                }
                evicted
            })
        })
        .collect();
    let got = drain_evicting(&ring, 1, usize::from(total), &count);
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
/// preemption (it passes; at two it does not finish in 13 minutes).
#[test]
fn two_evicting_producers_two_items_each() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(1);
    builder.check(|| two_evicting_producers(4));
}
