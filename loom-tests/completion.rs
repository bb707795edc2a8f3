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
    // SAFETY: slot 0 is armed and this is its one completion.
    unsafe { owner.complete(0, 0, result) };
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

/// Marks slot 0 as waited for, as a producer that found every slot held
/// does before it sleeps (it may have given up since: a timed-out submit or
/// a dropped async one leaves the mark behind).
fn flag_waiter<R>(owner: &TableOwner<R>) {
    assert!(
        owner.lane(0).slot(0).arm_waiter(),
        "slot 0 is held, so the mark is set"
    );
}

/// The last handle on the batcher drops its completion table while a ticket
/// takes its result from a slot marked as waited for: the ticket frees the
/// slot, then notifies the lane's producers through the table. The table
/// must outlive that notify (the model fails on a use after free, or on a
/// free not ordered before such a use), and be freed once (loom fails a
/// leak).
#[test]
fn owner_dropped_while_a_ticket_frees_a_waited_for_slot() {
    loom::model(|| {
        let (owner, ticket) = armed::<u32>(WaitStrategy::Park);
        flag_waiter(&owner);
        // The waiter registers its waker (a CAS loop over the mark) and
        // parks, or takes the result at once.
        let waiter = thread::spawn(move || ticket.wait());
        complete(&owner, Ok(3));
        drop(owner);
        assert_eq!(waiter.join().unwrap().unwrap(), 3);
    });
}

/// As above, with the ticket dropped instead of waited on and no drainer
/// left to complete it: the owner's drop completes it with `Closed` and
/// frees the slot itself, or leaves that to the ticket's drop.
#[test]
fn owner_dropped_while_a_ticket_is_dropped_from_a_waited_for_slot() {
    loom::model(|| {
        let (owner, ticket) = armed::<u32>(WaitStrategy::Park);
        flag_waiter(&owner);
        let dropper = thread::spawn(move || drop(ticket));
        drop(owner);
        dropper.join().unwrap();
    });
}
