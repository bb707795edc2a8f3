//! `inline_when_idle`: submitters that find the drainer asleep take its
//! state (if free at once) and run a turn themselves, or wake it. The models
//! run the real pieces: claims and park announcements on real rings, the
//! drainer's announce/sleep/withdraw steps with its state unlocked while it
//! sleeps (`sleep_unlocked`), the submitter's try-lock-or-wake
//! (`run_or_wake`) and the passes of a turn, which announce the park again
//! (`inline_passes`). Each submitter sleeps until its item was taken: a lost
//! wake-up leaves every thread asleep, which loom reports as a deadlock.

use loom::thread;

use crate::contain::lock;
use crate::engine::drainer::{inline_passes, run_direct, run_or_wake, sleep_unlocked};
use crate::ring::{Claims, Ring, announce_park_all, prepare_park};
use crate::sync::{Arc, AtomicBool, AtomicUsize, Condvar, Mutex, Ordering};

/// Two items in all (values 0 and 1).
const ITEMS: usize = 2;

/// The drainer's state in the models: heads and what it took.
struct State {
    heads: Vec<usize>,
    got: Vec<u8>,
}

struct Model {
    rings: Vec<Ring<u8>>,
    /// Per lane: owned by its one submitter, which claims with plain stores
    /// (`Ring::try_claim_exclusive`).
    owned: Vec<bool>,
    cell: Mutex<Option<State>>,
    /// Per value: taken by a drainer turn (on either side); submitters
    /// sleep on `taken_cv` until theirs is.
    taken: Mutex<[bool; ITEMS]>,
    taken_cv: Condvar,
    /// Submitters finished; the last one asks the drainer to stop.
    finished: AtomicUsize,
    stop: AtomicBool,
}

impl Model {
    fn new(lanes: usize) -> Arc<Self> {
        Self::with_owned(lanes, None)
    }

    /// A model whose lane `owned` (if any) is owned by its submitter.
    fn with_owned(lanes: usize, owned: Option<usize>) -> Arc<Self> {
        let rings: Vec<Ring<u8>> = (0..lanes).map(|_| Ring::new(2)).collect();
        if let Some(lane) = owned {
            assert!(rings[lane].own(), "a fresh ring can be owned");
        }
        Arc::new(Self {
            rings,
            owned: (0..lanes).map(|lane| owned == Some(lane)).collect(),
            cell: Mutex::new(Some(State {
                heads: vec![0; lanes],
                got: Vec::new(),
            })),
            taken: Mutex::new([false; ITEMS]),
            taken_cv: Condvar::new(),
            finished: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        })
    }

    fn lanes<'a>(
        &'a self,
        state: &'a State,
    ) -> impl Iterator<Item = (&'a Ring<u8>, usize)> + Clone + 'a {
        self.rings.iter().zip(state.heads.iter().copied())
    }

    /// Takes what every lane holds (the drainer's sweep and dispatch).
    fn pass(&self, state: &mut State) {
        for (ring, head) in self.rings.iter().zip(state.heads.iter_mut()) {
            let got = &mut state.got;
            // SAFETY: whoever holds the state is the rings' only consumer,
            // and `head` is the head last published.
            let new_head = unsafe {
                ring.drain_run(*head, 2, |v, _, _| {
                    got.push(v);
                    lock(&self.taken)[v as usize] = true;
                    self.taken_cv.notify_all();
                })
            };
            if new_head != *head {
                ring.finish_run(new_head);
                *head = new_head;
            }
        }
    }

    /// A submitter: claims and publishes `value` on `lane`; if its claim
    /// took an announcement, runs a turn or wakes the drainer; then waits
    /// until its value was taken. The last one to finish stops the drainer.
    fn submit(&self, lane: usize, value: u8, drainer: &thread::Thread) {
        self.send(lane, value, drainer);
        self.wait_taken(value);
        self.finish(1, drainer);
    }

    /// Claims and publishes `value` on `lane`; if the claim took an
    /// announcement, runs a turn or wakes the drainer.
    fn send(&self, lane: usize, value: u8, drainer: &thread::Thread) {
        let ring = &self.rings[lane];
        let mut head = 0;
        let owner = self.owned[lane];
        let claim = if owner {
            // SAFETY: an owned lane has one submitter, its owner.
            unsafe { ring.try_claim_exclusive(1, &mut head) }
        } else {
            ring.try_claim(1, &mut head)
        }
        .expect("room");
        // SAFETY: claimed, published once (by the owner, in order).
        unsafe {
            ring.publish(
                claim.seq,
                value,
                None,
                if owner { Claims::Plain } else { Claims::Cas },
            )
        };
        if claim.wake_drainer {
            run_or_wake(
                &self.cell,
                |state| {
                    inline_passes(
                        state,
                        |state| self.pass(state),
                        |state| announce_park_all(self.lanes(state)).empty,
                    )
                },
                || drainer.unpark(),
            );
        }
    }

    /// The direct path (`Producer::try_direct` and `Drainer::run_direct`):
    /// with the lane announced, the state free and the lane caught up,
    /// handles `value` at once without the lane; otherwise sends it.
    fn send_direct(&self, lane: usize, value: u8, drainer: &thread::Thread) {
        let ring = &self.rings[lane];
        let refused = if ring.looks_parked(if self.owned[lane] {
            Claims::Plain
        } else {
            Claims::Cas
        }) {
            run_direct(&self.cell, value, |state, value| {
                if !ring.caught_up(state.heads[lane]) {
                    return Err(value);
                }
                state.got.push(value);
                lock(&self.taken)[value as usize] = true;
                Ok(())
            })
            .err()
        } else {
            Some(value)
        };
        if let Some(value) = refused {
            self.send(lane, value, drainer);
        }
    }

    fn wait_taken(&self, value: u8) {
        let mut taken = lock(&self.taken);
        while !taken[value as usize] {
            taken = self.taken_cv.wait(taken).unwrap();
        }
    }

    /// `n` more items finished; the last one stops the drainer.
    fn finish(&self, n: usize, drainer: &thread::Thread) {
        if self.finished.fetch_add(n, Ordering::AcqRel) + n == ITEMS {
            // Release pairs with the drainer's Acquire load.
            self.stop.store(true, Ordering::Release);
            drainer.unpark();
        }
    }

    /// The drainer thread: works with its state locked, sleeps with it
    /// unlocked, until asked to stop. Returns what every turn took.
    fn drain(&self) -> Vec<u8> {
        let mut guard = lock(&self.cell);
        loop {
            let state = guard.as_mut().expect("the state stays in the cell");
            self.pass(state);
            // Acquire pairs with the last submitter's Release store.
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let plan = prepare_park(
                self.lanes(state),
                || self.stop.load(Ordering::Acquire),
                None,
            );
            guard = sleep_unlocked(&self.cell, guard, &plan);
            let state = guard.as_mut().expect("the state stays in the cell");
            plan.end(self.lanes(state));
            // A lane with a claimed, unpublished slot does not sleep: wait
            // for its producer as the drainer's backoff does.
            thread::yield_now();
        }
        guard.take().expect("the state stays in the cell").got
    }
}

/// Runs the drainer on the model's main thread and one submitter per entry
/// of `lanes` (submitter `i` sends value `i` on lane `lanes[i]`); every
/// value is taken exactly once.
fn run(lane_count: usize, lanes: [usize; ITEMS]) {
    run_owned(lane_count, lanes, None);
}

/// [`run`], with lane `owned` (if any) owned by its one submitter.
fn run_owned(lane_count: usize, lanes: [usize; ITEMS], owned: Option<usize>) {
    loom::model(move || {
        let model = Model::with_owned(lane_count, owned);
        let drainer = thread::current();
        let submitters: Vec<_> = lanes
            .iter()
            .enumerate()
            .map(|(value, &lane)| {
                let (model, drainer) = (Arc::clone(&model), drainer.clone());
                thread::spawn(move || model.submit(lane, value as u8, &drainer))
            })
            .collect();
        let mut got = model.drain();
        for submitter in submitters {
            submitter.join().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, vec![0, 1], "each item taken exactly once");
    });
}

/// Two submitters on one lane: the second's claim may find the announcement
/// already taken by the first, so it relies on the first's turn announcing
/// again (or on the drainer being awake).
#[test]
fn inline_turns_on_one_lane() {
    run(1, [0, 0]);
}

/// Two submitters on two lanes, racing for the drainer's state.
#[test]
fn inline_turns_on_two_lanes() {
    run(2, [0, 1]);
}

/// Lane 0's producer sends 0 through the lane, then 1 by the direct path;
/// the drainer takes both, once each, in that order.
fn send_then_direct(model: Arc<Model>) {
    let drainer = thread::current();
    let producer = {
        let (model, drainer) = (Arc::clone(&model), drainer.clone());
        thread::spawn(move || {
            model.send(0, 0, &drainer);
            model.send_direct(0, 1, &drainer);
            model.wait_taken(0);
            model.wait_taken(1);
            model.finish(2, &drainer);
        })
    };
    let got = model.drain();
    producer.join().unwrap();
    assert_eq!(got, vec![0, 1], "taken once each, in the producer's order");
}

/// One producer sends 0 through the lane, then 1 by the direct path while
/// the drainer works, announces, sleeps or withdraws: 1 may skip the lane
/// only once 0 was taken (the lane caught up), so the drainer's view of
/// the lane keeps the producer's order; and no wake-up is lost.
///
/// The bad interleaving (the drainer's announcement lands between the claim
/// and the publication of 0, and the direct attempt runs while the drainer
/// has let go of its state without sleeping) takes three preemptions, so
/// this model searches at least that deep (under a second).
#[test]
fn direct_path_keeps_the_producers_order() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(builder.preemption_bound.unwrap_or(3).max(3));
    builder.check(|| {
        send_then_direct(Model::new(1));
    });
}

/// Inline turns on an owned lane: submitter 0 owns lane 0 and claims with
/// plain stores, submitter 1 shares lane 1. The announcements of a turn
/// (run by either submitter on the drainer's state) and of the sleeping
/// drainer go to lane 0's flags word, and meet the owner's claim through
/// the asymmetric fences (the heavy one run by whoever announces, on the
/// submitter's thread for a turn) and the re-check after them; a claim
/// that takes an announcement runs a turn or wakes the drainer. No wake-up
/// is lost and each item is taken once.
#[test]
fn inline_turns_on_an_owned_lane() {
    run_owned(2, [0, 1], Some(0));
}

/// The direct path of an owner (`looks_parked` reads its flags word): one
/// producer owns lane 0, sends 0 through the lane, then 1 by the direct
/// path, while the drainer works, announces in the flags word, sleeps or
/// withdraws. 1 skips the lane only once 0 was taken, and no wake-up is
/// lost.
#[test]
fn direct_path_of_an_owner_keeps_its_order() {
    loom::model(|| {
        send_then_direct(Model::with_owned(1, Some(0)));
    });
}
