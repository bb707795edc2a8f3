//! Requests to the drainer (`Control`: flush, pause and resume, live
//! settings) against its park. A requester posts its request, then wakes
//! the drainer; the drainer looks at every request before it announces a
//! park and again (`requested`) before it sleeps. This model runs the
//! steps of `Drainer::step`, `Drainer::prepare_park`, `Batcher::flush`,
//! `pause`, `resume` and `set_linger` one by one, on the real `Control`,
//! ring, park steps and `Progress`, so that loom can interleave every
//! request; `batcher.rs` runs a flush against the real drainer loop.

use loom::thread;

use crate::engine::Control;
use crate::ring::{Claims, Ring, prepare_park};
use crate::shape::NEVER;
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::wait::Progress;

struct Model {
    ring: Ring<u8>,
    control: Control,
    progress: Progress,
    /// Set by the drainer once it has handled the item.
    handled: AtomicBool,
}

/// `Batcher::flush`: post the request (AcqRel: this thread's claims come
/// before it), wake the drainer, wait until it reports the flush.
fn flush(model: &Model, drainer: &thread::Thread) {
    let request = model.control.flush_requested.fetch_add(1, Ordering::AcqRel) + 1;
    drainer.unpark();
    assert!(
        model.progress.wait_flushed(request, None),
        "the flush completes"
    );
}

/// A producer submits an item, pauses the batcher, resumes it, changes a
/// live setting and flushes, while the drainer drains, holds off while
/// paused (its timed park is untimed under loom, so only `resume`'s
/// wake-up ends it), applies settings and serves flushes, parking by the
/// real announce/sleep/withdraw steps in between. Every request made while
/// the drainer parks is served: the flush returns, by then the item was
/// handled, and the drainer applies the setting without another wake-up. A lost wake-up leaves the requester or
/// the drainer asleep for ever, which loom reports as a deadlock.
#[test]
fn requests_made_while_the_drainer_parks_are_served() {
    loom::model(|| {
        let model = Arc::new(Model {
            ring: Ring::new(2),
            control: Control {
                closing: AtomicBool::new(false),
                flush_requested: AtomicU64::new(0),
                flush_now: AtomicU64::new(0),
                paused: AtomicBool::new(false),
                give_back_at: AtomicU64::new(NEVER),
                max_batch: AtomicUsize::new(2),
                settings_version: AtomicU64::new(0),
                effective_max: AtomicUsize::new(2),
                pressure: AtomicBool::new(false),
            },
            progress: Progress::default(),
            handled: AtomicBool::new(false),
        });
        let drainer = thread::current();
        let requester = {
            let model = Arc::clone(&model);
            thread::spawn(move || {
                let claim = model.ring.try_claim(1, &mut 0).expect("room");
                // SAFETY: claimed, published once.
                unsafe { model.ring.publish(claim.seq, 1, None, Claims::Cas) };
                if claim.wake_drainer {
                    drainer.unpark();
                }
                // `pause`, then `resume` (Release, then the wake-up).
                model.control.paused.store(true, Ordering::Release);
                model.control.paused.store(false, Ordering::Release);
                drainer.unpark();
                // `set_linger`: a new version, then the wake-up.
                model
                    .control
                    .settings_version
                    .fetch_add(1, Ordering::Release);
                drainer.unpark();
                flush(&model, &drainer);
                // Acquire: ordered after the drainer's report anyway.
                assert!(
                    model.handled.load(Ordering::Acquire),
                    "flushed before handled"
                );
            })
        };
        let control = &model.control;
        let (mut head, mut flush_done, mut settings_seen) = (0, 0, 0);
        loop {
            // `refresh_settings`.
            let version = control.settings_version.load(Ordering::Acquire);
            if version != settings_seen {
                settings_seen = version;
            }
            // Until the flush was served and the setting applied (in the
            // turn after the flush's at the latest: its version was posted
            // before the flush).
            if flush_done != 0 && settings_seen != 0 {
                break;
            }
            // `held`: paused, so sleep until resumed.
            if control.paused.load(Ordering::Acquire) {
                thread::park();
                continue;
            }
            let take = |head: &mut usize| {
                // SAFETY: this thread is the only consumer, `head` current.
                let end = unsafe {
                    model.ring.drain_run(*head, 2, |v, _, _| {
                        assert_eq!(v, 1);
                        model.handled.store(true, Ordering::Release);
                    })
                };
                if end != *head {
                    model.ring.finish_run(end);
                    *head = end;
                    true
                } else {
                    false
                }
            };
            let flush = control.flush_requested.load(Ordering::Acquire);
            if flush != flush_done {
                // `drain_all`: up to the tail as it is now, yielding while a
                // claimed slot is unpublished.
                let (target, _) = model.ring.tail();
                while head != target {
                    if !take(&mut head) {
                        thread::yield_now();
                    }
                }
                flush_done = flush;
                model.progress.flushed(flush);
                continue;
            }
            if take(&mut head) {
                continue;
            }
            let plan = prepare_park(
                std::iter::once((&model.ring, head)),
                || control.flush_requested.load(Ordering::Acquire) != flush_done,
                None,
            );
            plan.sleep();
            plan.end(std::iter::once((&model.ring, head)));
            // A claimed, unpublished slot does not let the drainer sleep.
            thread::yield_now();
        }
        requester.join().unwrap();
    });
}
