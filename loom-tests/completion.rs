//! Completion slots: result hand-off, waiting, ticket drop, orphaned tables.

use loom::thread;

use super::Counted;
use crate::completion::TableOwner;
use crate::error::Error;
use crate::sync::{Arc, AtomicUsize, Ordering};
use crate::wait::WaitStrategy;

/// A table of one lane of two slots, with slot 0 armed and its ticket.
fn armed<R>(wait: WaitStrategy) -> (Arc<TableOwner<R>>, crate::completion::Ticket<R>) {
    let owner = Arc::new(TableOwner::new(1, 2, wait));
    let mut index = [usize::MAX];
    assert!(owner.lane(0).try_acquire(&mut 0, &mut index));
    assert_eq!(index, [0], "a fresh table hands out slot 0 first");
    // SAFETY: slot 0 armed just above; one ticket for it.
    let ticket = unsafe { owner.ticket(0, 0, 0) };
    (owner, ticket)
}

/// Completes slot 0 with `result` (the drainer's side).
fn complete<R>(owner: &TableOwner<R>, result: Result<R, Error>) {
    let lane = owner.lane(0);
    // SAFETY: slot 0 is armed and this is its one completion.
    unsafe { lane.slot(0).complete(result, lane, owner.get()) };
}

/// (c) A ticket waiting (registered waker, parked) while the drainer writes
/// its result: the waiter is woken, gets the value, and the slot ends free.
#[test]
fn result_hand_off_to_a_parked_waiter() {
    loom::model(|| {
        let (owner, ticket) = armed::<u32>(WaitStrategy::Park);
        let completer = {
            let owner = Arc::clone(&owner);
            thread::spawn(move || complete(&owner, Ok(7)))
        };
        assert_eq!(ticket.wait().unwrap(), 7);
        completer.join().unwrap();
        assert!(
            owner.lane(0).slot(0).is_free(),
            "both sides done: the slot is free"
        );
    });
}

/// The ticket waits on a different thread from the one that submitted it.
#[test]
fn result_hand_off_to_a_waiter_on_another_thread() {
    loom::model(|| {
        let (owner, ticket) = armed::<u32>(WaitStrategy::Park);
        let waiter = thread::spawn(move || ticket.wait());
        complete(&owner, Ok(9));
        assert_eq!(waiter.join().unwrap().unwrap(), 9);
        assert!(owner.lane(0).slot(0).is_free());
    });
}

/// (c) A ticket dropped while its result is being written: the result is
/// dropped exactly once (by whichever side comes second) and the slot ends
/// free.
#[test]
fn ticket_dropped_while_the_result_is_written() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (owner, ticket) = armed::<Counted>(WaitStrategy::Park);
        let completer = {
            let owner = Arc::clone(&owner);
            let value = Counted::new(&drops);
            thread::spawn(move || complete(&owner, Ok(value)))
        };
        drop(ticket);
        completer.join().unwrap();
        assert_eq!(
            drops.load(Ordering::Relaxed),
            1,
            "the result is dropped once"
        );
        assert!(owner.lane(0).slot(0).is_free());
    });
}

/// A waiter that registered its waker and is then dropped (gave up) while
/// the result arrives: nothing is leaked or dropped twice.
#[test]
fn registered_ticket_dropped_while_the_result_is_written() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (owner, mut ticket) = armed::<Counted>(WaitStrategy::Park);
        let completer = {
            let owner = Arc::clone(&owner);
            let value = Counted::new(&drops);
            thread::spawn(move || complete(&owner, Ok(value)))
        };
        // Register a waker the way a waiter does, then give up.
        let waker = crate::completion::thread_waker();
        let _ = ticket.register_for_test(&waker);
        drop(ticket);
        completer.join().unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        assert!(owner.lane(0).slot(0).is_free());
    });
}

/// The batcher's state is dropped while a ticket is still out: the ticket
/// still gets its result, and the table is freed by whichever comes last
/// (loom fails the model if it leaks).
#[test]
fn ticket_outlives_the_batcher() {
    loom::model(|| {
        let (owner, ticket) = armed::<u32>(WaitStrategy::Park);
        complete(&owner, Ok(5));
        let waiter = thread::spawn(move || ticket.wait());
        drop(owner);
        assert_eq!(waiter.join().unwrap().unwrap(), 5);
    });
}

/// The batcher's state is dropped with an item accepted but never completed
/// (the drainer ended abnormally): the ticket gets `Closed`, not a hang.
#[test]
fn uncompleted_ticket_gets_closed_when_the_batcher_is_dropped() {
    loom::model(|| {
        let (owner, ticket) = armed::<u32>(WaitStrategy::Park);
        let waiter = thread::spawn(move || ticket.wait());
        drop(owner);
        assert!(matches!(waiter.join().unwrap(), Err(Error::Closed)));
    });
}
