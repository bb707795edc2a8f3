//! The park: announcing it on the lanes, sleeping until an item, a request
//! or a due time, and withdrawing it.

use std::time::{Duration, Instant};

use crate::engine::drainer::Drainer;
use crate::ring::{ParkPlan, announce_park_all, prepare_park, withdraw_park};
use crate::sync::Ordering;

impl<T: Send + 'static, R: Send + 'static> Drainer<T, R> {
    /// Parks until a producer publishes, a request arrives, or the next
    /// staged batch is due (its linger ends).
    pub(super) fn park_until_due(&mut self) {
        let asm = self.asm.as_deref().expect("shaping drainer");
        if asm.len() == 0 {
            self.park();
            return;
        }
        let now = Instant::now();
        // Relaxed: a tuning value.
        let effective = self.shared.control.effective_max.load(Ordering::Relaxed);
        let now_ns = asm.now_ns(now);
        let mut timeout = match asm.next_due(now_ns, effective, self.adaptive_max) {
            Some(due) if due <= now_ns => return,
            Some(due) => Duration::from_nanos(due - now_ns),
            // Staged items wait for no timer (a full staging area waits for
            // the handler): look again soon.
            None => Duration::from_millis(1),
        };
        if let Some(due) = self.next_retry() {
            timeout = timeout.min(due.saturating_duration_since(now));
        }
        let shared = &*self.shared;
        let control = &shared.control;
        let (flush_done, flush_now_done) = (self.flush_done, self.flush_now_done);
        let lanes = || {
            shared
                .lanes
                .iter()
                .map(|lane| &lane.ring)
                .zip(self.heads.iter().copied())
        };
        let found = announce_park_all(lanes());
        // Acquire, as in `park`.
        let requested = control.closing.load(Ordering::Acquire)
            || control.flush_requested.load(Ordering::Acquire) != flush_done
            || control.flush_now.load(Ordering::Acquire) != flush_now_done;
        let sleep = found.empty && !requested;
        shared.note_park(sleep, found.fenced);
        if sleep {
            crate::sync::thread::park_timeout(timeout);
        }
        withdraw_park(lanes(), found.announced);
    }
}

impl<T: Send + 'static, R: Send + 'static> Drainer<T, R> {
    /// Parks until a producer publishes into a lane (or a request arrives).
    pub(super) fn park(&mut self) {
        let plan = self.prepare_park();
        plan.sleep();
        self.end_park(plan);
    }

    /// Announces the park on every lane ([`prepare_park`]); with a retry
    /// waiting, the sleep ends when it is due.
    ///
    /// A producer whose claim clears a lane's announcement wakes us after
    /// publishing; a requester posts its request, then wakes us: the park
    /// token makes the sleep return either way.
    pub(super) fn prepare_park(&mut self) -> ParkPlan {
        let shared = &*self.shared;
        if self.asm.is_none() {
            // Nothing lingers without shaping: a `flush_now` has nothing to
            // do beyond waking us. Acquire pairs with its AcqRel increment.
            self.flush_now_done = shared.control.flush_now.load(Ordering::Acquire);
        }
        let timeout = match self.next_retry() {
            // A retry is waiting: sleep no longer than until it is due.
            Some(due) => match due.saturating_duration_since(Instant::now()) {
                timeout if timeout.is_zero() => return ParkPlan::AWAKE,
                timeout => Some(timeout),
            },
            None => None,
        };
        let lanes = shared
            .lanes
            .iter()
            .map(|lane| &lane.ring)
            .zip(self.heads.iter().copied());
        // A request posted after this check unparks us (park token).
        let plan = prepare_park(lanes, || self.requested(), timeout);
        shared.note_park(plan.sleeps(), plan.fenced());
        plan
    }

    /// Withdraws the announcements of `plan` (after the sleep).
    pub(super) fn end_park(&self, plan: ParkPlan) {
        plan.end(
            self.shared
                .lanes
                .iter()
                .map(|lane| &lane.ring)
                .zip(self.heads.iter().copied()),
        );
    }
}
