//! Shutdown: draining to the targets, giving back what was not handled,
//! abandoning items when the runtime drops the task, and failing everything
//! when the drainer itself fails.

use super::Sink;
use crate::batch::{BatchBuf, Origin};
use crate::contain::lock;
use crate::engine::drainer::Drainer;
use crate::error::Error;
use crate::handler::{Batch, deliver};
use crate::ring::{SEQ_MASK, distance};
use crate::shape::NEVER;
use crate::sync::{Arc, Ordering};

impl<T: Send + 'static, R: Send + 'static> Drainer<T, R> {
    /// Whether `shutdown_timeout`'s deadline has passed.
    pub(super) fn past_give_back(&self) -> bool {
        // Acquire pairs with the Release store in `shutdown_timeout`.
        let at = self.shared.control.give_back_at.load(Ordering::Acquire);
        at != NEVER && self.shared.clock() >= at
    }

    /// `shutdown_timeout`'s deadline passed: moves every item not handled
    /// (the batch being filled, the staging area, the retry queue, the
    /// lanes, which are closed) to the batcher's leftovers and fails their
    /// tickets with `Closed`.
    pub(super) fn give_back_leftovers(&mut self) {
        self.give_back(&Error::Closed);
    }
}

impl<T, R> Drainer<T, R> {
    /// A flush or shutdown drains every lane up to its tail as it is now.
    pub(super) fn set_drain_targets(&mut self) {
        for (target, lane) in self.targets.iter_mut().zip(self.shared.lanes.iter()) {
            *target = lane.ring.tail().0;
        }
    }

    /// Whether every lane's head has reached its drain target.
    pub(super) fn drain_targets_reached(&self) -> bool {
        self.heads
            .iter()
            .zip(self.targets.iter())
            .all(|(&head, &target)| distance(target, head) <= SEQ_MASK / 2)
    }

    /// Moves every item not handled to the batcher's leftovers (for
    /// `shutdown_timeout` to return), failing their tickets with `error`.
    pub(super) fn give_back(&mut self, error: &Error) {
        #[cfg(feature = "durable")]
        if self.shared.durable.is_some() {
            self.give_back_durable(error);
            return;
        }
        let shared = Arc::clone(&self.shared);
        let mut out = lock(&shared.leftovers);
        self.take_unhandled(&mut |item, origin| {
            if let Some((lane, index)) = origin.pending() {
                deliver(&shared.table, lane, index, Err(error.clone()));
            }
            out.push(item);
        });
    }

    /// Hands every item not handled to `each` with its origin: the batch
    /// being filled, the staging area, the retry queue, then the lanes up
    /// to their tails (which must be closed). `each` runs outside the lane
    /// runs, so what it does (a drop, a ticket's wake-up) cannot leave a
    /// ring half taken.
    pub(super) fn take_unhandled(&mut self, each: &mut dyn FnMut(T, Origin)) {
        let buf = &mut self.buf;
        for (item, origin) in buf.items.drain(..).zip(buf.origins.drain(..)) {
            each(item, origin);
        }
        let _ = buf.clear();
        if let Some(asm) = self.asm.as_deref_mut() {
            asm.take_all(&mut *each);
        }
        for mut retry in self.retries.drain(..) {
            let buf = &mut retry.buf;
            for (item, origin) in buf.items.drain(..).zip(buf.origins.drain(..)) {
                each(item, origin);
            }
            self.shared.pool.put(retry.buf);
        }
        self.take_lanes(&mut |buf| {
            for (item, origin) in buf.items.drain(..).zip(buf.origins.drain(..)) {
                each(item, origin);
            }
            let _ = buf.clear();
        });
    }

    /// Takes every item in the lanes up to their tails as they are now
    /// (waiting for claimed slots to be published), a run at a time into a
    /// batch buffer that `each` then empties: the end of the drainer's life
    /// (closed lanes). No code but the buffer's runs into it runs inside a
    /// lane run.
    pub(super) fn take_lanes(&mut self, each: &mut dyn FnMut(&mut BatchBuf<T>)) {
        let shared = Arc::clone(&self.shared);
        debug_assert!(self.buf.is_empty(), "the batch is emptied first");
        // The batch buffer, or a new one while every pooled one is out (a
        // drainer task awaiting one): the end of the batcher's life, where
        // one allocation does no harm.
        let own = self.buf.items.capacity() > 0;
        let mut buf = if own {
            core::mem::replace(&mut self.buf, BatchBuf::with_capacity(0))
        } else {
            BatchBuf::with_capacity(shared.config.max_batch)
        };
        for (index, lane) in shared.lanes.iter().enumerate() {
            let target = lane.ring.tail().0;
            let mut head = self.heads[index];
            while head != target {
                let run = {
                    let mut out = buf.appender(usize::MAX);
                    let room = out.room();
                    // SAFETY: the drainer, and `head` is the head it last
                    // published.
                    unsafe {
                        lane.ring.take_run(head, room, |item, _, ticket| {
                            let origin = match ticket {
                                Some(slot) => Origin::ticket(index, slot),
                                None => Origin::NONE,
                            };
                            // At most `room` calls, as in `drain_lane`.
                            out.push(item, origin);
                        })
                    }
                };
                if run.notify {
                    shared.table.lane(index).notifier.notify_all();
                }
                // (On an evicting ring the head may have moved on without us.)
                head = run.end;
                if !buf.is_empty() {
                    each(&mut buf);
                    debug_assert!(buf.is_empty(), "`each` empties the buffer");
                }
                if run.start == run.end {
                    // A producer is still publishing a claimed slot.
                    crate::sync::thread::yield_now();
                }
            }
            self.heads[index] = head;
        }
        if own {
            self.buf = buf;
        }
    }

    /// The drainer will never run again: closes every lane, fails the
    /// tickets of every item still in the batch, the staging area, the
    /// retry queue or the lanes with `error`, and drops the items (each
    /// drop contained).
    #[cfg(feature = "tokio")]
    pub(super) fn abandon(&mut self, error: Error) {
        let shared = Arc::clone(&self.shared);
        self.close_lanes();
        let mut dropped_badly = 0;
        self.take_unhandled(&mut |item, origin| {
            if let Some((lane, slot)) = origin.pending() {
                deliver(&shared.table, lane, slot, Err(error.clone()));
            }
            dropped_badly += usize::from(!crate::contain::drop_value(item));
        });
        shared.panics.drops(dropped_badly);
        if !self.need_buffer {
            shared.pool.put(core::mem::replace(
                &mut self.buf,
                BatchBuf::with_capacity(0),
            ));
            self.need_buffer = true;
        }
    }

    /// Closes every lane to producers and wakes those waiting for room, so
    /// that they see the close.
    pub(super) fn close_lanes(&self) {
        let shared = &*self.shared;
        for lane in shared.lanes.iter() {
            lane.ring.close();
        }
        for index in 0..shared.lanes.len() {
            shared.table.lane(index).notifier.notify_all();
        }
    }

    /// The drainer's loop panicked (a bug of the batcher's: user code is
    /// contained where it is called): closes every lane at once, fails the
    /// ticket of every item not handled with [`Error::DrainerPanicked`] and
    /// gives the items back (to `shutdown_timeout`, or to be dropped with
    /// the batcher), so that producers get `Closed` and shutdown returns.
    #[cold]
    pub(super) fn fail_fatally(&mut self, message: crate::error::PanicMessage) {
        self.failed = true;
        let shared = Arc::clone(&self.shared);
        crate::trace::drainer_failed(&shared.config.thread_name, &message);
        // Whatever the panic interrupted, the rings' heads are where the
        // runs taken so far left them (their guards commit on unwinding).
        for (head, lane) in self.heads.iter_mut().zip(shared.lanes.iter()) {
            *head = lane.ring.head();
        }
        self.close_lanes();
        // Release, as in `Batcher::begin_stop`: requests and waits end.
        shared.control.closing.store(true, Ordering::Release);
        let error = Error::DrainerPanicked { message };
        if self.buf.completed > 0 {
            // The handler had this batch: its items are not given back.
            Batch::new(&mut self.buf, &shared.table).fail_remaining(error.clone());
            shared.pool.recycle(&mut self.buf);
        }
        let outcome = crate::contain::call(|| self.give_back(&error));
        debug_assert!(outcome.is_ok(), "giving back after a failure panicked");
        #[cfg(feature = "tokio")]
        if matches!(self.sink, Sink::Async) {
            crate::engine::runtime::close(&shared);
        }
        if matches!(self.sink, Sink::Threads) {
            // The threads finish what is queued for them first.
            crate::engine::threads::close(&shared);
        }
        shared.flushed(u64::MAX);
    }
}
