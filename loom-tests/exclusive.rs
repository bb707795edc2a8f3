//! Exclusive producers: plain-store claims meeting the drainer's park and the
//! closer through the asymmetric fences (`Ring::try_claim_exclusive`). Under
//! loom both fences are `SeqCst` fences, the ordering the pair provides.
//! On rings laid out for them (`Ring::new_split`), the owner's cursor
//! (`Ring::publish` with `owner`, `Ring::own`) and the drainer's reads by
//! it.
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
use crate::ring::{Claim, ClaimError, Claims, Ring};
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
    lane.publish_claimed(claim, value, true, drainer);
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
                    lane.publish_claimed(claim, 7, true, &drainer);
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
    // What the batcher's statistics count as accepted once the drainer has
    // finished, before the producer returns: the claim cursor less the
    // sequences given up.
    let counted = lane.ring.claimed() - lane.ring.given_up();
    let (accepted, mut head) = producer.join().unwrap();
    assert_eq!(
        counted,
        usize::from(accepted),
        "the sequences counted as accepted after the final drain"
    );
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
///
/// Three preemptions (the suite runs with two): the owner's store, the
/// closer's fence and load, the owner's refusal, and the closer's final
/// drain between the refusal's empty slot and the count of it.
#[test]
fn close_races_an_exclusive_claim() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| claim_racing_close(owned_lane(2), false));
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

/// The drainer's loop without parks (the models below have no park
/// hand-off to check): drains runs of up to two with the real code,
/// notifies producers waiting for room, and yields while nothing is
/// published, until its head reaches `end`. Returns each item with its
/// ticket.
fn drain_spinning(lane: &Lane<u8>, end: usize) -> Vec<(u8, Option<usize>)> {
    let mut head = 0;
    let mut got = Vec::new();
    while head != end {
        // SAFETY: this thread is the only consumer and `head` is current.
        let new_head = unsafe {
            lane.ring
                .drain_run(head, 2, |value, _, ticket| got.push((value, ticket)))
        };
        if new_head == head {
            thread::yield_now();
        } else {
            if lane.ring.finish_run(new_head) {
                lane.notifier.notify_all();
            }
            head = new_head;
        }
    }
    got
}

/// On a ring laid out for its owner (`Ring::new_split`), the owner
/// publishes a plain item, a ticketed one, an empty one and a plain one
/// through a two-slot ring, moving its cursor after each, while the drainer
/// reads the plain ones by the cursor and the others by stamp: each item
/// arrives once, in order, with its ticket, and the empty slot is stepped
/// over. Reading a ticketed or empty slot as plain, or a plain item before
/// its cursor store, fails the model.
#[test]
fn an_owners_cursor_hands_over_plain_ticketed_and_empty_slots() {
    loom::model(|| {
        let ring = Ring::new_split(2);
        assert!(ring.own(), "a fresh split ring can be owned");
        let lane = Lane::with_ring(ring);
        let owner = {
            let lane = Arc::clone(&lane);
            thread::spawn(move || {
                let mut head = 0;
                for k in 0..4u8 {
                    let claim = lane.claim_by(1, &mut head, |head| try_claim(&lane, head));
                    // SAFETY: our claim, published once, in order, as the owner.
                    unsafe {
                        match k {
                            1 => lane.ring.publish(claim.seq, 2, Some(5), Claims::Plain),
                            2 => lane.ring.publish_skip(claim.seq, Claims::Plain),
                            _ => lane.ring.publish(claim.seq, k + 1, None, Claims::Plain),
                        }
                    }
                }
            })
        };
        let got = drain_spinning(&lane, 4);
        owner.join().unwrap();
        assert_eq!(got, vec![(1, None), (2, Some(5)), (4, None)]);
    });
}

/// A split ring changes hands while the drainer reads it: a shared
/// producer's ticketed item (by stamp), then the owner's two items (the
/// ring owned after the shared producer left, its cursor starting at the
/// tail, so the ticketed item below it is still read by stamp), then,
/// disowned, a shared producer's item again (by stamp, past the cursor the
/// owner left). All four arrive once, in order, the first with its ticket.
#[test]
fn a_split_ring_changes_hands_under_the_drainer() {
    loom::model(|| {
        let lane = Lane::with_ring(Ring::new_split(2));
        let producer = {
            let lane = Arc::clone(&lane);
            thread::spawn(move || {
                let mut head = 0;
                let shared = |lane: &Lane<u8>, head: &mut usize, value: u8, ticket| {
                    let claim = lane.claim_by(1, head, |head| lane.ring.try_claim(1, head));
                    // SAFETY: our claim, published once, as a shared producer.
                    unsafe { lane.ring.publish(claim.seq, value, ticket, Claims::Cas) };
                };
                shared(&lane, &mut head, 1, Some(7));
                assert!(lane.ring.own(), "no producer is on the ring");
                for value in [2, 3] {
                    let claim = lane.claim_by(1, &mut head, |head| try_claim(&lane, head));
                    // SAFETY: our claim, published once, in order, as the owner.
                    unsafe { lane.ring.publish(claim.seq, value, None, Claims::Plain) };
                }
                lane.ring.disown();
                shared(&lane, &mut head, 4, None);
            })
        };
        let got = drain_spinning(&lane, 4);
        producer.join().unwrap();
        assert_eq!(got, vec![(1, Some(7)), (2, None), (3, None), (4, None)]);
    });
}

/// A shared producer's last step on a ring that changed hands: releases
/// ownership as `Producer`'s drop does (waking the drainer when it
/// announced a park in the flags word only, which shared claims do not
/// read), then pushes `value` as a shared producer (CAS claim).
fn disown_then_push_shared(
    lane: &Lane<u8>,
    cached_head: &mut usize,
    value: u8,
    drainer: &thread::Thread,
) {
    if lane.ring.disown() {
        drainer.unpark();
    }
    let claim = lane.claim_by(1, cached_head, |head| lane.ring.try_claim(1, head));
    lane.publish_claimed(claim, value, false, drainer);
}

/// A ring is owned and given back while the drainer drains and parks on
/// it: `Ring::own` and the wake-up `Producer::owner` sends race a park
/// announced in shared mode (tail word), the drainer's next announcement
/// goes to the flags word (owned mode), and `Ring::disown` with the
/// wake-up it asks for races that one; then a shared producer pushes. No
/// wake-up is lost (a park announced in the flags word only would never
/// be seen by the shared claim) and the item arrives once.
///
/// The owner makes no plain-store claim here: an owner's store racing the
/// drainer's shared-mode RMWs on the tail word is what loom 0.7 cannot
/// model (tokio-rs/loom#282, see the module notes; a later load of the
/// word may read the RMW's older value back). This model and the next one
/// are the smallest equivalent that loom checks: ownership against a
/// shared-mode park here, the plain-store claim against owned-mode parks
/// and the hand-back there.
#[test]
fn a_ring_is_owned_and_given_back_while_the_drainer_parks() {
    loom::model(|| {
        let lane = Lane::with_ring(Ring::new(2));
        let drainer = thread::current();
        let producer = {
            let lane = Arc::clone(&lane);
            thread::spawn(move || {
                assert!(lane.ring.own(), "no producer is on the ring");
                // A park announced before the mark ends now.
                drainer.unpark();
                // Holds the ring a while: the drainer may announce in the
                // flags word and sleep before the ring is given back.
                thread::yield_now();
                disown_then_push_shared(&lane, &mut 0, 1, &drainer);
            })
        };
        let got = drain_to(&lane, 1);
        producer.join().unwrap();
        assert_eq!(got, vec![1], "the item arrives once");
    });
}

/// An exclusive producer pushes an item by a plain-store claim on a ring it
/// owns (owned before the drainer runs, see the previous model), gives the
/// ring back and pushes another as a shared producer, while the drainer
/// drains and parks in owned mode, then in shared mode. No wake-up is lost
/// and both items arrive once, in order.
#[test]
fn an_owner_gives_its_ring_back_under_a_parking_drainer() {
    loom::model(|| {
        let lane = owned_lane(2);
        let drainer = thread::current();
        let producer = {
            let lane = Arc::clone(&lane);
            thread::spawn(move || {
                let mut head = 0;
                push(&lane, &mut head, 1, &drainer);
                disown_then_push_shared(&lane, &mut head, 2, &drainer);
            })
        };
        let got = drain_to(&lane, 2);
        producer.join().unwrap();
        assert_eq!(got, vec![1, 2], "each item once, in order");
    });
}
