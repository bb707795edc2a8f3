//! The end of a batcher's life: the lanes closed (`Ring::close`, as
//! `Batcher::begin_stop` and `Drainer::close_lanes` do) while producers
//! still claim, and the drainer taking what is left to give it back
//! (`Drainer::give_back`, `take_unhandled`, `take_lanes`; `abandon` takes
//! the same way after `close_lanes`). These models run the protocol pieces
//! as the drainer does, with more producers and items than the whole
//! batcher allows loom to explore: the real ring runs, the real completion
//! table and `handler::deliver`. `batcher.rs` runs the real drainer and
//! `shutdown` / `shutdown_timeout` end to end on a smaller scale.

use loom::thread;

use super::Counted;
use crate::completion::TableOwner;
use crate::error::Error;
use crate::handler::deliver;
use crate::ring::{ClaimError, Claims, Ring};
use crate::sync::{Arc, AtomicUsize, Ordering};
use crate::wait::WaitStrategy;

/// Where a producer's item went, as the producer sees it.
#[derive(Debug)]
enum Fate {
    /// Accepted; fire-and-forget, so nothing comes back.
    Accepted,
    /// Accepted with a ticket, whose result is this.
    Ticket(Result<u8, Error>),
    /// Refused as closed: the item came back and was dropped here.
    Refused,
}

/// The lane, its completion table and the drop count of its items.
struct Lane {
    ring: Ring<Counted>,
    table: TableOwner<u8>,
    drops: Arc<AtomicUsize>,
}

impl Lane {
    /// A producer's submission, as `Producer::submit` (`ticketed`) or
    /// `Producer::push` does it: a completion slot first, then the claim;
    /// a claim refused as closed frees the slot and gives the item back.
    fn submit(&self, ticketed: bool) -> Fate {
        let item = Counted::new(&self.drops);
        let mut index = [0];
        if ticketed {
            assert!(
                self.table.lane(0).try_acquire(&mut 0, &mut index),
                "a free slot"
            );
        }
        match self.ring.try_claim(1, &mut 0) {
            Ok(claim) => {
                if !ticketed {
                    // SAFETY: claimed, published once.
                    unsafe { self.ring.publish(claim.seq, item, None, Claims::Cas) };
                    return Fate::Accepted;
                }
                // SAFETY: claimed and armed above; each used once, here.
                let ticket = unsafe {
                    self.ring
                        .publish(claim.seq, item, Some(index[0]), Claims::Cas);
                    self.table.ticket(0, index[0], claim.seq)
                };
                // The drainer never parks here (`wake_drainer` never set).
                Fate::Ticket(ticket.wait())
            }
            Err(ClaimError::Closed) => {
                if ticketed {
                    // SAFETY: armed above, nothing published with it.
                    unsafe { self.table.lane(0).release_unused(&index) };
                }
                drop(item);
                Fate::Refused
            }
            Err(ClaimError::Full) => panic!("the lane has room"),
        }
    }

    /// Takes every item up to `target` from `head` as `Drainer::take_lanes`
    /// does (runs, yielding while a claimed slot is unpublished), calling
    /// `each` with each item and its ticket. Returns the new head.
    fn take_to(
        &self,
        mut head: usize,
        target: usize,
        mut each: impl FnMut(Counted, Option<usize>),
    ) -> usize {
        while head != target {
            // SAFETY: this thread is the drainer, `head` its last copy.
            let run = unsafe {
                self.ring
                    .take_run(head, 2, |item, _, ticket| each(item, ticket))
            };
            head = run.end;
            if run.start == run.end {
                thread::yield_now();
            }
        }
        head
    }
}

/// Shutdown with a deadline that has passed (`shutdown_timeout`): two
/// producers (one with a ticket, one fire-and-forget) submit while the
/// drainer takes one run and handles it, the lanes close, and the drainer
/// gives back everything up to the final tail, failing tickets with
/// `Closed`. Every item is handled once, given back once or refused once
/// (never two of these, never none), each is dropped exactly once, and a
/// ticket's result says which: `Ok` if handled, `Closed` if given back.
#[test]
fn shutdown_gives_back_every_item_once() {
    loom::model(|| {
        let lane = Arc::new(Lane {
            ring: Ring::new(2),
            table: TableOwner::new(1, 2, WaitStrategy::Park),
            drops: Arc::new(AtomicUsize::new(0)),
        });
        let producers: Vec<_> = [true, false]
            .into_iter()
            .map(|ticketed| {
                let lane = Arc::clone(&lane);
                thread::spawn(move || lane.submit(ticketed))
            })
            .collect();
        // A drainer turn before the shutdown: what it takes is handled
        // (completed `Ok`, dropped by the handler).
        let mut handled = 0;
        // SAFETY: this thread is the drainer; 0 is the head.
        let run = unsafe {
            lane.ring.take_run(0, 2, |item, _, ticket| {
                if let Some(index) = ticket {
                    deliver(&lane.table, 0, index, Ok(1));
                }
                drop(item);
                handled += 1;
            })
        };
        // `begin_stop`: close, then the drainer's final take up to the
        // final tail, giving back (`give_back`).
        let target = lane.ring.close();
        let mut leftovers = Vec::new();
        let head = lane.take_to(run.end, target, |item, ticket| {
            if let Some(index) = ticket {
                deliver(&lane.table, 0, index, Err(Error::Closed));
            }
            leftovers.push(item);
        });
        assert_eq!(head, target, "taken up to the final tail");
        let fates: Vec<Fate> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        let refused = fates.iter().filter(|f| matches!(f, Fate::Refused)).count();
        assert_eq!(
            handled + leftovers.len() + refused,
            2,
            "every item handled, given back or refused once: {fates:?}"
        );
        assert_eq!(
            target,
            2 - refused,
            "the final tail counts the accepted items"
        );
        match &fates[0] {
            Fate::Ticket(Ok(1)) | Fate::Refused => {}
            Fate::Ticket(Err(Error::Closed)) => {}
            other => panic!("unexpected ticket fate {other:?}"),
        }
        let given_back = leftovers.len();
        drop(leftovers);
        assert_eq!(
            lane.drops.load(Ordering::Relaxed),
            2,
            "each item dropped once ({handled} handled, {given_back} given back)"
        );
    });
}

/// As [`shutdown_gives_back_every_item_once`] on an evicting lane
/// (`DropOldest`) of one slot, which starts full: an evicting producer
/// races the close and the drainer's final take (whose runs start at the
/// ring's head, wherever evictions moved it). Every item is evicted,
/// given back or refused exactly once, and dropped once.
#[test]
fn shutdown_gives_back_an_evicting_lane_once() {
    use crate::ring::Evicted;
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let ring = Arc::new(Ring::with_eviction(1));
        let claim = ring.try_claim(1, &mut 0).expect("empty lane");
        // SAFETY: just claimed, published once.
        unsafe { ring.publish(claim.seq, Counted::new(&drops), None, Claims::Cas) };
        let producer = {
            let (ring, drops) = (Arc::clone(&ring), Arc::clone(&drops));
            thread::spawn(move || {
                // `Producer::claim_evicting`: evict while full, until the
                // claim succeeds or the lane closes.
                let mut evicted = 0;
                let mut item = Some(Counted::new(&drops));
                loop {
                    match ring.try_claim(1, &mut 0) {
                        Ok(claim) => {
                            // SAFETY: just claimed, published once.
                            unsafe {
                                ring.publish(claim.seq, item.take().unwrap(), None, Claims::Cas)
                            };
                            return (evicted, false);
                        }
                        Err(ClaimError::Closed) => {
                            // Given back to the caller, who drops it.
                            drop(item.take());
                            return (evicted, true);
                        }
                        Err(ClaimError::Full) => match ring.evict_oldest(1) {
                            Evicted::Item(item, _) => {
                                drop(item);
                                evicted += 1;
                            }
                            Evicted::Busy => thread::yield_now(),
                            Evicted::Skip | Evicted::Room => {}
                        },
                    }
                }
            })
        };
        let target = ring.close();
        let mut leftovers = Vec::new();
        let mut head = 0;
        while crate::ring::distance(target, head) > crate::ring::SEQ_MASK / 2 {
            // SAFETY: this thread is the drainer.
            let run = unsafe { ring.take_run(head, 1, |item, _, _| leftovers.push(item)) };
            head = run.end;
            if run.start == run.end {
                thread::yield_now();
            }
        }
        let (evicted, refused) = producer.join().unwrap();
        assert_eq!(
            evicted + leftovers.len() + usize::from(refused),
            2,
            "each item evicted, given back or refused once"
        );
        drop(leftovers);
        drop(ring);
        assert_eq!(drops.load(Ordering::Relaxed), 2, "each item dropped once");
    });
}
