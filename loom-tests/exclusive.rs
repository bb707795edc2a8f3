//! Exclusive producers: plain-store claims meeting the drainer's park and the
//! closer through the asymmetric fences (`Ring::try_claim_exclusive`). Under
//! loom both fences are `SeqCst` fences, the ordering the pair provides.
//!
//! The models start with the ring owned. Taking a ring while the drainer
//! parks on it in shared mode (`Ring::own`, then the owner's wake-up) is
//! not modelled: there the drainer's RMWs on the tail word race the owner's
//! plain stores, and loom 0.7 does not keep a store and another thread's
//! RMW in one modification order (tokio-rs/loom#282), so it lets the owner
//! read back a value older than its own store and reports claims no real
//! execution makes. `tests/exclusive.rs` stresses that hand-over instead.

use loom::thread;

use super::ring::Lane;
use crate::ring::{Claim, ClaimError, Ring};
use crate::sync::Arc;

/// A lane whose ring is owned (the models' one producer claims on it
/// exclusively).
fn owned_lane(capacity: usize) -> Arc<Lane<u8>> {
    let ring = Ring::new(capacity);
    assert!(ring.own(), "a fresh plain ring can be owned");
    Lane::with_ring(ring)
}

/// One exclusive claim attempt; checks that only a claim refused as closed
/// gives its sequence up.
fn try_claim(lane: &Lane<u8>, cached_head: &mut usize) -> Result<Claim, ClaimError> {
    let before = lane.ring.given_up();
    // SAFETY: each model has one producer thread on the ring, which is owned.
    let result = unsafe { lane.ring.try_claim_exclusive(1, cached_head) };
    let given_up = lane.ring.given_up() - before;
    assert!(
        given_up == 0 || (given_up == 1 && matches!(result, Err(ClaimError::Closed))),
        "only a claim refused as closed gives up its slot: {given_up}, {result:?}"
    );
    result
}

/// Pushes `value` by the real producer path (waiting for room on the
/// notifier), waking `drainer` if the claim took its park announcement.
fn push(lane: &Lane<u8>, cached_head: &mut usize, value: u8, drainer: &thread::Thread) {
    let claim = lane.claim_by(1, cached_head, |head| try_claim(lane, head));
    lane.publish_claimed(claim, value, drainer);
}

/// The drainer's loop until its head reaches `end`, parking by the real
/// announce (heavy fence, re-check) and park step when the lane is empty.
fn drain_to(lane: &Lane<u8>, end: usize) -> Vec<u8> {
    lane.drain_while(2, |head, _| head != end)
}

/// An exclusive producer pushes three items through a two-slot lane (the
/// first slot is reused) while the drainer drains and parks whenever the
/// lane looks empty. No wake-up is lost (loom reports a deadlock otherwise)
/// and the items arrive once each, in order. Without either fence, the
/// producer's claim and the drainer's announcement can miss each other and
/// the drainer sleeps on a published item.
#[test]
fn exclusive_claims_never_miss_a_parking_drainer() {
    loom::model(|| {
        let lane = owned_lane(2);
        let drainer = thread::current();
        let producer = {
            let lane = Arc::clone(&lane);
            thread::spawn(move || {
                let mut head = 0;
                for value in 0..3 {
                    push(&lane, &mut head, value, &drainer);
                }
            })
        };
        let got = drain_to(&lane, 3);
        producer.join().unwrap();
        assert_eq!(got, vec![0, 1, 2], "every item once, in order");
    });
}

/// One exclusive claim (of the item 7) racing the lane's close: either the
/// claim is below the final tail and its item is drained, or the producer
/// sees the close, gets `Closed` back and leaves its slot published as
/// empty (so a closer that counted it does not wait for it). A claim after
/// the close is refused. `must_wake`: the claim must report a park to end.
fn claim_racing_close(lane: Arc<Lane<u8>>, must_wake: bool) {
    let drainer = thread::current();
    let producer = {
        let lane = Arc::clone(&lane);
        thread::spawn(move || {
            let mut head = 0;
            let accepted = match try_claim(&lane, &mut head) {
                Ok(claim) => {
                    assert!(
                        claim.wake_drainer || !must_wake,
                        "the stale announcement is a park to end"
                    );
                    lane.publish_claimed(claim, 7, &drainer);
                    true
                }
                Err(ClaimError::Closed) => false,
                Err(ClaimError::Full) => panic!("the lane has room"),
            };
            (accepted, head)
        })
    };
    let final_tail = lane.ring.close();
    let got = drain_to(&lane, final_tail);
    let (accepted, mut head) = producer.join().unwrap();
    if accepted {
        assert_eq!(final_tail, 1, "an accepted claim is below the final tail");
        assert_eq!(got, vec![7], "and its item is drained");
    } else {
        assert!(got.is_empty(), "a refused claim delivers nothing: {got:?}");
    }
    assert!(
        matches!(try_claim(&lane, &mut head), Err(ClaimError::Closed)),
        "a claim after the close is refused"
    );
}

/// Closing races an exclusive claim: the closer writes only the flags word
/// of the owned ring, and the two meet through the asymmetric fences (see
/// [`claim_racing_close`]).
#[test]
fn close_races_an_exclusive_claim() {
    loom::model(|| claim_racing_close(owned_lane(2), false));
}

/// The ring is taken while a park announced in shared mode is still in the
/// tail word (announced before `own`, with no thread running yet, so that
/// no RMW of the drainer races the owner's stores: see the module notes).
/// The owner's claim takes the stale announcement off and must treat it as
/// a park to end; a close racing the claim still either counts it or
/// refuses it.
#[test]
fn a_stale_park_announcement_and_a_close_race_an_exclusive_claim() {
    loom::model(|| {
        let ring = Ring::new(2);
        assert!(ring.announce_park(0).empty, "announced on the empty ring");
        assert!(ring.own());
        claim_racing_close(Lane::with_ring(ring), true);
    });
}
