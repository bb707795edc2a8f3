//! The async paths: a task waiting for room in a full lane while the drainer
//! frees it, and a ticket awaited by a task while its result is written
//! (and while a thread waits on another ticket of the same table). Tasks run
//! under `loom::future::block_on`, whose waker unparks the loom thread, so a
//! lost wake-up shows as a deadlock.

use core::future::poll_fn;
use core::task::Poll;

use loom::thread;

use crate::completion::TableOwner;
use crate::error::Error;
use crate::ring::{Claims, Ring};
use crate::sync::Arc;
use crate::wait::{Notifier, WaitStrategy};

/// A task waits (by the real `poll_if_armed` step) for room in a one-slot
/// lane while the drainer drains the slot and notifies: the task is always
/// woken and its claim succeeds.
#[test]
fn task_waits_for_room_while_the_drainer_frees_it() {
    loom::model(|| {
        let ring = Arc::new(Ring::<u8>::new(1));
        let notifier = Arc::new(Notifier::new());
        // The lane holds one published item: full.
        let mut head = 0;
        let claim = ring.try_claim(1, &mut head).unwrap();
        // SAFETY: claimed, published once.
        unsafe { ring.publish(claim.seq, 1, None, Claims::Cas) };

        let drainer = {
            let (ring, notifier) = (Arc::clone(&ring), Arc::clone(&notifier));
            thread::spawn(move || {
                let mut got = None;
                // SAFETY: the only consumer; head 0 is current.
                let new_head = unsafe { ring.drain_run(0, 1, |v, _, _| got = Some(v)) };
                assert_eq!((new_head, got), (1, Some(1)));
                if ring.finish_run(new_head) {
                    notifier.notify_all();
                }
            })
        };
        let claim = loom::future::block_on(poll_fn(|cx| {
            loop {
                match ring.try_claim(1, &mut head) {
                    Ok(claim) => return Poll::Ready(claim),
                    Err(crate::ring::ClaimError::Closed) => unreachable!("never closed"),
                    Err(crate::ring::ClaimError::Full) => {}
                }
                if notifier
                    .poll_if_armed(cx.waker(), || ring.arm_room_waiter(1))
                    .is_pending()
                {
                    return Poll::Pending;
                }
            }
        }));
        assert_eq!(claim.seq, 1);
        // SAFETY: claimed, published once (dropped with the ring).
        unsafe { ring.publish(claim.seq, 2, None, Claims::Cas) };
        drainer.join().unwrap();
    });
}

/// A ticket awaited by a task while the drainer writes its result, and a
/// second ticket of the same lane waited on by a thread at the same time:
/// both get their values, and both slots end free.
#[test]
fn awaited_and_waited_tickets_race_their_completions() {
    loom::model(|| {
        let owner = Arc::new(TableOwner::<u32>::new(1, 2, WaitStrategy::Park));
        let lane = owner.lane(0);
        let mut indexes = [0, 0];
        assert!(lane.try_acquire(&mut 0, &mut indexes));
        // SAFETY: both slots armed just above; one ticket each.
        let (awaited, waited) = unsafe {
            (
                owner.ticket(0, indexes[0], 0),
                owner.ticket(0, indexes[1], 1),
            )
        };
        let completer = {
            let owner = Arc::clone(&owner);
            thread::spawn(move || {
                for (index, value) in indexes.into_iter().zip([10, 11]) {
                    // SAFETY: armed, and this is each slot's one completion.
                    unsafe { owner.complete(0, index, Ok(value)) };
                }
            })
        };
        let waiter = thread::spawn(move || waited.wait());
        assert_eq!(loom::future::block_on(awaited).unwrap(), 10);
        assert_eq!(waiter.join().unwrap().unwrap(), 11);
        completer.join().unwrap();
        for index in indexes {
            assert!(lane.slot(index).is_free());
        }
    });
}

/// A task polls a ticket (registering its waker), then drops it before the
/// result is written: the result is dropped and the slot freed.
#[test]
fn awaited_ticket_dropped_before_its_result() {
    loom::model(|| {
        let owner = Arc::new(TableOwner::<u32>::new(1, 1, WaitStrategy::Park));
        let mut index = [0];
        assert!(owner.lane(0).try_acquire(&mut 0, &mut index));
        // SAFETY: armed just above; one ticket.
        let mut ticket = unsafe { owner.ticket(0, index[0], 0) };
        let completer = {
            let owner = Arc::clone(&owner);
            thread::spawn(move || {
                // SAFETY: armed; its one completion.
                unsafe { owner.complete(0, index[0], Err(Error::NotCompleted)) };
            })
        };
        // One poll (registers the waker unless the result is there), then
        // give up on the ticket.
        loom::future::block_on(poll_fn(|cx| {
            let _ = core::pin::Pin::new(&mut ticket).poll(cx);
            Poll::Ready(())
        }));
        drop(ticket);
        completer.join().unwrap();
        assert!(owner.lane(0).slot(index[0]).is_free());
    });
}

/// The drainer sleeps until a worker returns a buffer (the `WaitFlag`
/// handshake of the async pipeline): either the drainer sees the buffer
/// before it sleeps, or the worker sees its flag and wakes it.
#[cfg(feature = "tokio")]
#[test]
fn drainer_sleeps_until_a_worker_returns_a_buffer() {
    use crate::engine::runtime::WaitFlag;
    use crate::sync::{AtomicBool, Ordering};

    loom::model(|| {
        let flag = Arc::new(WaitFlag::default());
        let returned = Arc::new(AtomicBool::new(false));
        // The sleeper runs on a thread that joins nothing: loom aborts when a
        // stray unpark lands on a thread blocked in `join` (tokio-rs/loom
        // issue 249), which std allows.
        let drainer = {
            let (flag, returned) = (Arc::clone(&flag), Arc::clone(&returned));
            thread::spawn(move || {
                while flag.announce(|| returned.load(Ordering::Relaxed)) {
                    thread::park();
                    flag.withdraw();
                }
            })
        };
        let sleeper = drainer.thread().clone();
        let worker = thread::spawn(move || {
            // Relaxed, as the pool's own synchronisation is not what is
            // modelled here: the fences alone must suffice.
            returned.store(true, Ordering::Relaxed);
            flag.notify(|| sleeper.unpark());
        });
        worker.join().unwrap();
        drainer.join().unwrap();
    });
}
