//! The lane ring: claims, publication, runs, wrap-around.

use loom::thread;

use crate::ring::{ClaimError, Ring};
use crate::sync::Arc;

/// Pushes `value` with the real claim/publish code, yielding while full.
fn push<T>(ring: &Ring<T>, cached_head: &mut usize, value: T) {
    loop {
        match ring.try_claim(1, cached_head, |_| true) {
            Ok(claim) => {
                // SAFETY: just claimed, published once.
                unsafe { ring.publish(claim.seq, value, false) };
                return;
            }
            Err(ClaimError::Full) => thread::yield_now(),
            Err(ClaimError::Closed) => panic!("the lane is never closed in this model"),
        }
    }
}

/// Drains runs with the real drainer code until `count` items arrived.
fn drain<T>(ring: &Ring<T>, max_run: usize, count: usize) -> Vec<T> {
    let mut head = 0;
    let mut got = Vec::new();
    while got.len() < count {
        // SAFETY: this thread is the only consumer and `head` is current.
        let new_head = unsafe { ring.drain_run(head, max_run, |v, _, _| got.push(v)) };
        if new_head == head {
            thread::yield_now();
        } else {
            ring.finish_run(new_head);
            head = new_head;
        }
    }
    got
}

/// (a) Two producers and the drainer on one lane of two slots, four items:
/// every slot is reused across wrap-around. Every item arrives exactly once
/// and each producer's items arrive in order.
#[test]
fn two_producers_and_drainer_across_wrap_around() {
    loom::model(|| {
        let ring = Arc::new(Ring::<(u8, u8)>::new(2));
        let producers: Vec<_> = (0..2u8)
            .map(|p| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || {
                    let mut head = 0;
                    for i in 0..2u8 {
                        push(&ring, &mut head, (p, i));
                    }
                })
            })
            .collect();
        let got = drain(&ring, 2, 4);
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
        let ring = Arc::new(Ring::<u8>::new(2));
        let slicer = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                let mut head = 0;
                let claim = loop {
                    match ring.try_claim(2, &mut head, |_| true) {
                        Ok(claim) => break claim,
                        Err(ClaimError::Full) => thread::yield_now(),
                        Err(ClaimError::Closed) => panic!("never closed"),
                    }
                };
                // SAFETY: both sequences are ours, each published once.
                unsafe {
                    ring.publish(claim.seq, 10, false);
                    ring.publish(crate::ring::seq_add(claim.seq, 1), 11, false);
                }
            })
        };
        let single = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || push(&ring, &mut 0, 20))
        };
        let got = drain(&ring, 2, 3);
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
        let ring = Arc::new(Ring::<u8>::new(2));
        let producer = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                let mut head = 0;
                let claim = ring.try_claim(2, &mut head, |_| true).expect("empty lane");
                // SAFETY: both sequences are ours, each published once.
                unsafe {
                    ring.publish(claim.seq, 1, false);
                    ring.publish_skip(crate::ring::seq_add(claim.seq, 1));
                }
                push(&ring, &mut head, 2);
            })
        };
        let got = drain(&ring, 2, 2);
        producer.join().unwrap();
        assert_eq!(got, vec![1, 2]);
    });
}

/// Closing races a claim: the claim either lands below the final tail (and is
/// drained) or fails with `Closed`; nothing is claimed after the close.
#[test]
fn close_races_a_claim() {
    loom::model(|| {
        let ring = Arc::new(Ring::<u8>::new(2));
        let producer = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                let mut head = 0;
                match ring.try_claim(1, &mut head, |_| true) {
                    Ok(claim) => {
                        // SAFETY: claimed, published once.
                        unsafe { ring.publish(claim.seq, 7, false) };
                        true
                    }
                    Err(ClaimError::Closed) => false,
                    Err(ClaimError::Full) => panic!("the lane has room"),
                }
            })
        };
        let final_tail = ring.close();
        let got = drain(&ring, 2, final_tail);
        let accepted = producer.join().unwrap();
        assert_eq!(
            accepted,
            final_tail == 1,
            "accepted iff below the final tail"
        );
        assert_eq!(got.len(), final_tail);
    });
}
