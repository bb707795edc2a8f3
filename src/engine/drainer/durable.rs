//! (feature `durable`) The drainer's part of the durable store: writing
//! each batch as it is dispatched, making room when the store is full,
//! replaying what the previous incarnations left, and writing what
//! `shutdown_timeout` does not handle.

use std::time::Instant;

use super::Sink;
use crate::batch::Origin;
use crate::contain::lock;
use crate::durable::{ItemId, StoreError};
use crate::engine::drainer::Drainer;
use crate::error::Error;
use crate::handler::deliver;
use crate::stats::DispatchReason;
use crate::sync::{Arc, Ordering};

impl<T: Send + 'static, R: Send + 'static> Drainer<T, R> {
    /// Writes the batch being dispatched to the store (a replayed batch is
    /// there already). A full store first waits for the batches in flight
    /// and waiting to retry; a batch that still cannot be written goes to
    /// the handler anyway, with the reason on it (`Batch::store_error`).
    #[cold]
    pub(super) fn write_durable(&mut self) {
        let shared = Arc::clone(&self.shared);
        let durable = shared.durable.as_ref().expect("a durable batcher");
        let mut waited = false;
        loop {
            match durable.record(&mut self.buf) {
                Ok(()) => return,
                Err(StoreError::Full { .. }) if !waited => {
                    waited = true;
                    self.make_room_on_disk();
                }
                Err(error) => {
                    durable.failed_to_write(&error);
                    self.buf.durable.error = Some(error);
                    return;
                }
            }
        }
    }

    /// Waits until every batch in flight (async workers, handler threads)
    /// and waiting to retry has settled, so that what they finish frees
    /// room in the store. A `shutdown_timeout` deadline ends the wait.
    fn make_room_on_disk(&mut self) {
        while let Some(due) = self.next_retry() {
            if self.past_give_back() {
                break;
            }
            let now = Instant::now();
            if due > now {
                crate::sync::thread::park_timeout(due - now);
            }
            self.run_due_retries();
        }
        #[cfg(feature = "tokio")]
        if matches!(self.sink, Sink::Async) {
            let pipeline = self.shared.pipeline();
            self.wait_async(|| pipeline.in_flight() == 0);
        }
        if matches!(self.sink, Sink::Threads) {
            self.shared.threads().wait_until(|in_flight| in_flight == 0);
        }
    }

    /// Hands the items the previous incarnations left to the handler, in
    /// the order they were written, before any new item: batches of at
    /// most `max_batch`, each resuming the attempt its items had reached.
    pub(super) fn replay(&mut self) {
        let shared = Arc::clone(&self.shared);
        let Some(durable) = shared.durable.as_ref() else {
            return;
        };
        let batches = core::mem::take(&mut *lock(&durable.recovered));
        if batches.is_empty() {
            return;
        }
        let mut replayed = 0u64;
        for batch in batches {
            let attempt = batch.attempt;
            for (id, bytes) in batch.items {
                let Some(item) = durable.decode(id, &bytes) else {
                    continue;
                };
                self.push_replayed(item, id);
                replayed += 1;
                if self.buf.len() >= self.max_batch {
                    self.dispatch_replayed(attempt);
                }
            }
            if !self.buf.is_empty() {
                self.dispatch_replayed(attempt);
            }
        }
        // Relaxed: a statistic.
        durable.replayed.fetch_add(replayed, Ordering::Relaxed);
        crate::trace::replayed(&shared.config.thread_name, replayed, durable.incarnation());
    }

    /// Adds a replayed item (no ticket: its submitter is gone) to the batch.
    fn push_replayed(&mut self, item: T, id: ItemId) {
        self.buf.push(item, Origin::NONE);
        self.buf.durable.ids.push(id);
    }

    /// Dispatches a replayed batch as the attempt after `attempt` calls.
    fn dispatch_replayed(&mut self, attempt: u32) {
        self.replay_attempt = attempt;
        self.dispatch(DispatchReason::Replay);
        self.replay_attempt = 0;
    }
}

impl<T, R> Drainer<T, R> {
    /// `shutdown_timeout`'s deadline passed on a durable batcher: batches
    /// waiting to retry are in the store already (dropped here, to be
    /// replayed); every other item not handled is written to it, its ticket
    /// failed with `Persisted`. What cannot be written is given back, its
    /// ticket failed with `error`, as without the store.
    pub(super) fn give_back_durable(&mut self, error: &Error) {
        let shared = Arc::clone(&self.shared);
        let durable = shared.durable.as_ref().expect("a durable batcher");
        let mut dropped_badly = 0;
        for mut retry in self.retries.drain(..) {
            let buf = &mut retry.buf;
            for (item, origin) in buf.items.drain(..).zip(buf.origins.drain(..)) {
                if let Some((lane, index)) = origin.pending() {
                    deliver(&shared.table, lane, index, Err(Error::Persisted));
                }
                dropped_badly += usize::from(!crate::contain::drop_value(item));
            }
            shared.pool.put(retry.buf);
        }
        let mut unhandled: Vec<(T, Origin)> = Vec::new();
        self.take_unhandled(&mut |item, origin| unhandled.push((item, origin)));
        let chunk = self.max_batch.max(1);
        let mut rest = unhandled.into_iter().peekable();
        while rest.peek().is_some() {
            let part: Vec<(T, Origin)> = rest.by_ref().take(chunk).collect();
            let written = durable.write(part.iter().map(|(item, _)| item));
            let (outcome, n) = match written {
                Ok((_, synced)) => {
                    if let Some(sync_error) = synced {
                        durable.failed_to_write(&sync_error);
                    }
                    (Error::Persisted, part.len() as u64)
                }
                Err(write_error) => {
                    durable.failed_to_write(&write_error);
                    (error.clone(), 0)
                }
            };
            // Relaxed: a statistic.
            durable.written_at_shutdown.fetch_add(n, Ordering::Relaxed);
            let mut leftovers = lock(&shared.leftovers);
            for (item, origin) in part {
                if let Some((lane, index)) = origin.pending() {
                    deliver(&shared.table, lane, index, Err(outcome.clone()));
                }
                if n > 0 {
                    dropped_badly += usize::from(!crate::contain::drop_value(item));
                } else {
                    leftovers.push(item);
                }
            }
        }
        durable.sync();
        shared.panics.drops(dropped_badly);
    }
}
