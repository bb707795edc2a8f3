//! Sweeps: taking runs from the lanes into the batch being assembled, plain
//! and shaped.

use std::time::Instant;

use crate::batch::Origin;
use crate::engine::drainer::Drainer;
use crate::handler::deliver;
use crate::ring::distance;
use crate::shape::{Force, NEVER};
use crate::stats::DispatchReason;
use crate::sync::Ordering;
use crate::wait::Backoff;

impl<T: Send + 'static, R: Send + 'static> Drainer<T, R> {
    /// One pass over every lane. Returns the number of slots consumed.
    pub(super) fn sweep(&mut self) -> usize {
        if self.asm.is_some() {
            return self.sweep_shaped();
        }
        if self.recording {
            self.sweep_now = self.shared.clock();
        }
        let lanes = self.heads.len();
        let mut found = 0;
        let mut lane = self.start;
        for _ in 0..lanes {
            #[cfg(feature = "tokio")]
            if self.need_buffer {
                // Task mode, every buffer in flight: the caller awaits one.
                break;
            }
            found += self.drain_lane(lane);
            if self.buf.len() == self.max_batch {
                self.dispatch(DispatchReason::Full);
            }
            lane += 1;
            if lane == lanes {
                lane = 0;
            }
        }
        self.start = if self.start + 1 == lanes {
            0
        } else {
            self.start + 1
        };
        found
    }

    /// Moves one run of published items from `lane` into the batch. Returns
    /// the number of slots consumed.
    #[inline]
    pub(super) fn drain_lane(&mut self, lane: usize) -> usize {
        let room = self.max_batch - self.buf.len();
        debug_assert!(room > 0, "a full batch is dispatched before the next run");
        let head = self.heads[lane];
        let shared = &*self.shared;
        let ring = &shared.lanes[lane].ring;
        if ring.evicts() {
            return self.drain_lane_evicting(lane, room);
        }
        let mut out = self.buf.appender(room);
        let room = out.room();
        // SAFETY: this thread is the ring's only consumer and `head` is the
        // head it last published.
        let new_head = unsafe {
            ring.drain_run(head, room, |item, _seq, ticket| {
                let origin = match ticket {
                    Some(index) => Origin::ticket(lane, index),
                    None => Origin::NONE,
                };
                // At most `room` calls: `drain_run` takes at most `room` items.
                out.push(item, origin);
            })
        };
        drop(out);
        if new_head == head {
            return 0;
        }
        if ring.finish_run(new_head) {
            shared.table.lane(lane).notifier.notify_all();
        }
        self.heads[lane] = new_head;
        let count = distance(head, new_head);
        self.note_run(lane, count, room);
        count
    }

    /// [`drain_lane`](Self::drain_lane) for a lane whose producers evict
    /// (`DropOldest`): the run starts at the ring's head, wherever evictions
    /// have moved it. Out of line, to keep `drain_lane` as it was.
    #[inline(never)]
    pub(super) fn drain_lane_evicting(&mut self, lane: usize, room: usize) -> usize {
        let shared = &*self.shared;
        let ring = &shared.lanes[lane].ring;
        let buf = &mut self.buf;
        // SAFETY: this thread is the drainer.
        let run = unsafe {
            ring.take_run_evicting(room, |item, _seq, ticket| {
                let origin = match ticket {
                    Some(index) => Origin::ticket(lane, index),
                    None => Origin::NONE,
                };
                buf.push(item, origin);
            })
        };
        if run.notify {
            shared.table.lane(lane).notifier.notify_all();
        }
        self.heads[lane] = run.end;
        let count = distance(run.start, run.end);
        if count > 0 {
            self.note_run(lane, count, room);
        }
        count
    }

    /// Books a run of `count` items taken from ring `lane` when `room` were
    /// allowed: the lane's high-water mark, and (recording) the run's
    /// publication bound.
    #[inline]
    pub(super) fn note_run(&mut self, lane: usize, count: usize, room: usize) {
        if count as u64 > self.high_water[lane] {
            self.high_water[lane] = count as u64;
            // Relaxed: a statistic.
            self.shared.high_water[lane].store(count as u64, Ordering::Relaxed);
        }
        if self.recording {
            self.buf.note_run(self.since[lane], count as u64);
            if count < room {
                // Caught up: what comes next was published after now.
                self.since[lane] = self.sweep_now;
            }
        }
    }

    /// After a sleep: items published during it woke us, so date them from
    /// the wake-up (histograms, and the starvation age of priority classes).
    pub(super) fn woke(&mut self) {
        if self.recording || self.asm.is_some() {
            let now = self.shared.clock();
            self.since.iter_mut().for_each(|s| *s = now);
        }
    }

    /// Drains every lane up to the tails as they are now (waiting for claimed
    /// items to be published), then dispatches what is left with `reason`.
    pub(super) fn drain_all(&mut self, reason: DispatchReason) {
        self.set_drain_targets();
        // Producers that claimed a slot publish it promptly; never park here,
        // since they do not wake a drainer that has not announced a park.
        let mut backoff = Backoff::new(crate::wait::WaitStrategy::Yield);
        loop {
            if self.past_give_back() {
                self.give_back_leftovers();
                return;
            }
            let found = self.sweep();
            if self.asm.is_some() {
                self.dispatch_shaped(false, Force::All(reason));
            }
            if self.drain_targets_reached() {
                break;
            }
            if found == 0 {
                backoff.snooze();
            } else {
                backoff.reset();
            }
        }
        if self.asm.is_some() {
            self.dispatch_shaped(false, Force::All(reason));
        } else if !self.buf.is_empty() {
            self.dispatch(reason);
        }
    }

    /// One turn of the shaping drainer: takes what the lanes hold, then
    /// dispatches every batch that is due. Returns whether it did anything.
    pub(super) fn shaped_turn(&mut self) -> bool {
        // Acquire pairs with the Release increment in `flush_now`.
        let requested = self.shared.control.flush_now.load(Ordering::Acquire);
        let force = if requested != self.flush_now_done {
            self.flush_now_done = requested;
            Force::All(DispatchReason::Flush)
        } else {
            Force::No
        };
        let found = self.sweep();
        let dispatched = self.dispatch_shaped(found == 0, force);
        found > 0 || dispatched
    }

    /// One pass over every ring into the staging area, classes in priority
    /// order, as far as the staging area has room. Returns the number of
    /// slots consumed.
    pub(super) fn sweep_shaped(&mut self) -> usize {
        let shared = &*self.shared;
        let asm = self.asm.as_deref_mut().expect("shaping drainer");
        let lanes = shared.lane_count;
        let now = asm.now_ns(Instant::now());
        self.sweep_now = now;
        let mut found = 0;
        'classes: for class in 0..shared.classes {
            let mut lane = self.start;
            for _ in 0..lanes {
                let room = asm.room_for(class);
                if room == 0 {
                    // The rest is kept for lower classes.
                    continue 'classes;
                }
                let ring_index = class * lanes + lane;
                let head = self.heads[ring_index];
                let lane_state = &shared.lanes[ring_index];
                let expiry = lane_state.expiry.as_ref();
                let since = self.since[ring_index];
                // SAFETY: this thread is the drainer and `head` is the head
                // it last published.
                let run = unsafe {
                    lane_state.ring.take_run(head, room, |item, seq, ticket| {
                        let origin = match ticket {
                            Some(index) => Origin::ticket(ring_index, index),
                            None => Origin::NONE,
                        };
                        let expires = expiry.map_or(NEVER, |e| e.get(seq));
                        asm.take(item, origin, class, expires, now, since);
                    })
                };
                // Evicting producers may have moved the head: the run starts
                // where it was.
                let (head, new_head) = (run.start, run.end);
                self.heads[ring_index] = new_head;
                if new_head != head {
                    if run.notify {
                        shared.table.lane(ring_index).notifier.notify_all();
                    }
                    let count = distance(head, new_head);
                    found += count;
                    if count as u64 > self.high_water[ring_index] {
                        self.high_water[ring_index] = count as u64;
                        // Relaxed: a statistic.
                        shared.high_water[ring_index].store(count as u64, Ordering::Relaxed);
                    }
                }
                if distance(head, new_head) < room {
                    // Caught up: what comes next was published after now.
                    self.since[ring_index] = now;
                }
                lane += 1;
                if lane == lanes {
                    lane = 0;
                }
            }
        }
        self.start = if self.start + 1 >= lanes {
            0
        } else {
            self.start + 1
        };
        found
    }

    /// Dispatches every batch the assembler says is due (all that is staged
    /// with `Force::All`). Returns whether it dispatched any.
    pub(super) fn dispatch_shaped(&mut self, idle: bool, force: Force) -> bool {
        let mut dispatched = false;
        if self.shared.config.backpressure == crate::Backpressure::IncreaseBatchSize {
            self.shared.adjust_for_pressure(idle);
        }
        loop {
            #[cfg(feature = "tokio")]
            if self.need_buffer {
                // Task mode, every buffer in flight: the caller awaits one.
                break;
            }
            let shared = &*self.shared;
            let asm = self.asm.as_deref_mut().expect("shaping drainer");
            // Relaxed: a tuning value, ordered with nothing.
            let effective = shared.control.effective_max.load(Ordering::Relaxed);
            let now = asm.now_ns(Instant::now());
            let reason = asm.next_batch(
                &mut self.buf,
                now,
                effective,
                self.adaptive_max,
                idle,
                force,
                &mut |origin, error| {
                    if let Some((lane, index)) = origin.pending() {
                        deliver(&shared.table, lane, index, Err(error));
                    }
                },
            );
            let (tally, asm_tally, staged) = (&mut self.tally, asm.tally, asm.len() as u64);
            let changed = tally.expired != asm_tally.expired
                || tally.superseded != asm_tally.superseded
                || tally.too_large != asm_tally.too_large
                || tally.staged != staged;
            tally.expired = asm_tally.expired;
            tally.superseded = asm_tally.superseded;
            tally.too_large = asm_tally.too_large;
            tally.staged = staged;
            match reason {
                Some(reason) => {
                    self.dispatch(reason);
                    dispatched = true;
                }
                None => {
                    if changed {
                        self.shared.counters.publish(&self.tally);
                    }
                    break;
                }
            }
        }
        dispatched
    }
}
