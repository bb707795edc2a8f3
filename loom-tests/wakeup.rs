//! Wake-up handshakes: the parked drainer, producers waiting for room, flush
//! waiters. loom reports a lost wake-up as a deadlock.

use loom::thread;

use crate::completion::TableOwner;
use crate::producer::retry_until_room;
use crate::ring::{ClaimError, Claims, Ring, park_drainer};
use crate::sync::Arc;
use crate::wait::{Notifier, Progress, WaitStrategy};

/// The drainer's loop over `rings`: drain what is published, park (by the
/// real announce/park/withdraw step) when every lane is empty, until `count`
/// items arrived.
fn drain_or_park(rings: &[&Ring<u8>], notifier: Option<&Notifier>, count: usize) -> Vec<u8> {
    let mut heads = vec![0; rings.len()];
    let mut got = Vec::new();
    while got.len() < count {
        let mut progressed = false;
        for (ring, head) in rings.iter().zip(heads.iter_mut()) {
            // SAFETY: this thread is the only consumer and `head` is current.
            let new_head = unsafe { ring.drain_run(*head, 4, |v, _, _| got.push(v)) };
            if new_head != *head {
                let waiters = ring.finish_run(new_head);
                *head = new_head;
                progressed = true;
                if let (true, Some(notifier)) = (waiters, notifier) {
                    notifier.notify_all();
                }
            }
        }
        if !progressed && got.len() < count {
            park_drainer(rings.iter().copied().zip(heads.iter().copied()), || false);
            // A lane with a claimed, unpublished slot does not park: wait for
            // its producer as the drainer's backoff does.
            thread::yield_now();
        }
    }
    got
}

/// Claims one slot of `ring` and publishes `value`, waking the drainer if
/// the claim says so (the producer's path).
fn publish_one(
    ring: &Ring<u8>,
    cached_head: &mut usize,
    value: u8,
    drainer: &thread::Thread,
) -> Result<(), ClaimError> {
    let claim = ring.try_claim(1, cached_head)?;
    // SAFETY: claimed, published once.
    unsafe { ring.publish(claim.seq, value, None, Claims::Cas) };
    if claim.wake_drainer {
        drainer.unpark();
    }
    Ok(())
}

/// (d) The drainer parks while a producer publishes into the second of two
/// lanes: the producer's claim either happens before the announcement (the
/// drainer sees a non-empty lane and does not park) or sees the `PARKED` flag
/// and unparks it.
#[test]
fn drainer_parks_while_a_producer_publishes() {
    loom::model(|| {
        let lanes = Arc::new([Ring::<u8>::new(2), Ring::<u8>::new(2)]);
        let drainer = thread::current();
        let producer = {
            let lanes = Arc::clone(&lanes);
            thread::spawn(move || {
                let mut head = 0;
                publish_one(&lanes[1], &mut head, 1, &drainer).unwrap();
                publish_one(&lanes[1], &mut head, 2, &drainer).unwrap();
            })
        };
        let got = drain_or_park(&[&lanes[0], &lanes[1]], None, 2);
        producer.join().unwrap();
        assert_eq!(got, vec![1, 2]);
    });
}

/// (e) A producer waits for room in a one-slot lane (parking on the lane's
/// notifier) while the drainer frees the slot: it is always woken.
#[test]
fn producer_waits_for_room_while_the_drainer_frees_it() {
    loom::model(|| {
        let ring = Arc::new(Ring::<u8>::new(1));
        let notifier = Arc::new(Notifier::new());
        let drainer = thread::current();
        let producer = {
            let ring = Arc::clone(&ring);
            let notifier = Arc::clone(&notifier);
            thread::spawn(move || {
                let mut head = 0;
                for value in 1..=2 {
                    let claim = retry_until_room(
                        WaitStrategy::Park,
                        &notifier,
                        None,
                        || ring.try_claim(1, &mut head),
                        || ring.arm_room_waiter(1),
                    )
                    .expect("never closed");
                    // SAFETY: claimed, published once.
                    unsafe { ring.publish(claim.seq, value, None, Claims::Cas) };
                    if claim.wake_drainer {
                        drainer.unpark();
                    }
                }
            })
        };
        let got = drain_or_park(&[&ring], Some(&notifier), 2);
        producer.join().unwrap();
        assert_eq!(got, vec![1, 2]);
    });
}

/// Takes one completion slot of lane 0 as a submitter does, waiting (by
/// the real slow path: arm the held slots under the notifier's lock, sleep)
/// while every slot is held. Returns the slot's index.
fn acquire_one<R>(owner: &TableOwner<R>, cursor: &mut usize) -> usize {
    let lane = owner.lane(0);
    let mut index = [0];
    retry_until_room(
        WaitStrategy::Park,
        &lane.notifier,
        None,
        || {
            if lane.try_acquire(cursor, &mut index) {
                Ok(())
            } else {
                Err(ClaimError::Full)
            }
        },
        || lane.arm_waiter(),
    )
    .expect("never closed");
    index[0]
}

/// A submission waits for a completion slot, all held by tickets, while a
/// ticket takes its result on another thread and frees its slot: the
/// submitter is always woken and gets that slot.
#[test]
fn submitter_waits_for_a_completion_slot_held_by_a_ticket() {
    loom::model(|| {
        // One lane with one completion slot, held by a completed ticket.
        let owner = Arc::new(TableOwner::<u8>::new(1, 1, WaitStrategy::Park));
        let first = acquire_one(&owner, &mut 0);
        // SAFETY: armed above; one ticket, one completion.
        let mut ticket = unsafe {
            owner.complete(0, first, Ok(40));
            owner.ticket(0, first, 0)
        };
        let taker = thread::spawn(move || ticket.try_take().expect("completed").unwrap());
        let second = acquire_one(&owner, &mut 0);
        assert_eq!(second, first, "the only slot, once freed");
        assert_eq!(taker.join().unwrap(), 40);
        // SAFETY: armed by `acquire_one`; one ticket, one completion.
        let mut ticket = unsafe {
            owner.complete(0, second, Ok(41));
            owner.ticket(0, second, 1)
        };
        assert_eq!(ticket.try_take().unwrap().unwrap(), 41);
    });
}

/// Two submitters race for the two completion slots of a lane, one of which
/// is held by a completed ticket that a third thread is dropping (which
/// frees the slot): each submitter gets a slot of its own (never the same
/// one), and neither is left asleep.
#[test]
fn two_submitters_race_for_completion_slots() {
    loom::model(|| {
        let owner = Arc::new(TableOwner::<u8>::new(1, 2, WaitStrategy::Park));
        let held = acquire_one(&owner, &mut 0);
        // SAFETY: armed above; one ticket, one completion.
        let ticket = unsafe {
            owner.complete(0, held, Ok(0));
            owner.ticket(0, held, 0)
        };
        let dropper = thread::spawn(move || drop(ticket));
        let other = {
            let owner = Arc::clone(&owner);
            thread::spawn(move || acquire_one(&owner, &mut 1))
        };
        let mine = acquire_one(&owner, &mut 0);
        let theirs = other.join().unwrap();
        dropper.join().unwrap();
        assert_ne!(mine, theirs, "one slot went to two submitters");
        for index in [mine, theirs] {
            // SAFETY: each armed by `acquire_one`; one ticket, one completion.
            let mut ticket = unsafe {
                owner.complete(0, index, Ok(1));
                owner.ticket(0, index, 0)
            };
            assert_eq!(ticket.try_take().unwrap().unwrap(), 1);
        }
    });
}

/// A flush waiter sleeps while the drainer reports the flush done: it is
/// always woken.
#[test]
fn flush_waiter_is_woken() {
    loom::model(|| {
        let progress = Arc::new(Progress::default());
        let drainer = {
            let progress = Arc::clone(&progress);
            thread::spawn(move || progress.flushed(1))
        };
        assert!(progress.wait_flushed(1, None));
        drainer.join().unwrap();
    });
}

/// A flush waiter is released when the drainer exits instead.
#[test]
fn flush_waiter_is_released_when_the_drainer_exits() {
    loom::model(|| {
        let progress = Arc::new(Progress::default());
        let drainer = {
            let progress = Arc::clone(&progress);
            thread::spawn(move || progress.exited())
        };
        assert!(!progress.wait_flushed(1, None));
        drainer.join().unwrap();
    });
}
