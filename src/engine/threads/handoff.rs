//! The hand-off between the drainer and the handler threads: the queues,
//! the count of batches in flight the drainer waits on, and how a batch is
//! finished.

use std::collections::VecDeque;

use crate::batch::BatchBuf;
use crate::config::ThreadRouting;
use crate::contain::lock;
use crate::engine::Shared;
use crate::error::Error;
use crate::handler::Batch;
use crate::sync::{AtomicU64, Condvar, Mutex, MutexGuard, Ordering, thread};

/// The handler threads' side of the shared state.
pub(crate) struct Threads<T> {
    /// How batches are spread over the threads.
    pub(super) routing: ThreadRouting,
    /// One queue shared by every thread (`AnyFree`), or one per thread
    /// (`ByGroup`).
    pub(super) queues: Box<[Queue<T>]>,
    /// Batches handed over and not finished yet, and whether the drainer
    /// waits for a change.
    flight: Mutex<Flight>,
    /// The drainer waits here for a buffer to come back (or for no batch in
    /// flight).
    returned: Condvar,
    /// The threads, joined at shutdown.
    pub(super) handles: Mutex<Vec<thread::JoinHandle<()>>>,
    /// Counted by the threads (the drainer counts the rest).
    pub(crate) batch_errors: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) items_failed: AtomicU64,
}

/// Full buffers waiting for a handler thread.
pub(super) struct Queue<T> {
    pub(super) state: Mutex<QueueState<T>>,
    /// Idle threads of this queue wait here for a batch (or the end).
    pub(super) work: Condvar,
}

pub(super) struct QueueState<T> {
    /// Room for every buffer of the pool, allocated at build: pushing never
    /// allocates.
    pub(super) bufs: VecDeque<BatchBuf<T>>,
    /// No more batches: a thread that finds the queue empty exits.
    pub(super) closing: bool,
    /// Threads still serving the queue; at zero, batches for it fail.
    pub(super) alive: usize,
}

#[derive(Default)]
struct Flight {
    in_flight: usize,
    drainer_waits: bool,
}

impl<T> Threads<T> {
    /// The hand-off for `threads` threads (`alive` counted from the start,
    /// before any thread runs), each queue with room for `pool_size`
    /// buffers.
    pub(crate) fn new(threads: usize, routing: ThreadRouting, pool_size: usize) -> Self {
        let (queues, per_queue) = match routing {
            ThreadRouting::AnyFree => (1, threads),
            ThreadRouting::ByGroup => (threads, 1),
        };
        Self {
            routing,
            queues: (0..queues)
                .map(|_| Queue {
                    state: Mutex::new(QueueState {
                        bufs: VecDeque::with_capacity(pool_size),
                        closing: false,
                        alive: per_queue,
                    }),
                    work: Condvar::new(),
                })
                .collect(),
            flight: Mutex::new(Flight::default()),
            returned: Condvar::new(),
            handles: Mutex::new(Vec::with_capacity(threads)),
            batch_errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            items_failed: AtomicU64::new(0),
        }
    }

    /// The queue of thread `thread` (of its routing).
    pub(super) fn queue_of_thread(&self, thread: usize) -> usize {
        match self.routing {
            ThreadRouting::AnyFree => 0,
            ThreadRouting::ByGroup => thread,
        }
    }

    /// The queue a batch goes to: the shared one, or its key group's thread
    /// (a batch without a group goes to the first thread).
    fn queue_of(&self, buf: &BatchBuf<T>) -> usize {
        match (self.routing, buf.meta.group) {
            (ThreadRouting::ByGroup, Some(group)) => (group % self.queues.len() as u64) as usize,
            _ => 0,
        }
    }

    /// Bytes of the queues' storage (for the memory report).
    pub(crate) fn footprint(&self) -> usize {
        self.queues
            .iter()
            .map(|queue| lock(&queue.state).bufs.capacity() * core::mem::size_of::<BatchBuf<T>>())
            .sum()
    }

    fn flight(&self) -> MutexGuard<'_, Flight> {
        lock(&self.flight)
    }

    /// Batches handed over and not finished yet (a snapshot).
    pub(crate) fn in_flight(&self) -> usize {
        self.flight().in_flight
    }

    /// Drainer side: waits until `ready(in_flight)` holds. It is checked
    /// with the lock held, and a thread finishing a batch changes what it
    /// tests (the pool, the count) before it takes the lock to notify, so
    /// either the check sees the change or the notification finds the
    /// drainer waiting.
    pub(crate) fn wait_until(&self, mut ready: impl FnMut(usize) -> bool) {
        let mut flight = self.flight();
        while !ready(flight.in_flight) {
            flight.drainer_waits = true;
            flight = self
                .returned
                .wait(flight)
                .unwrap_or_else(|e| e.into_inner());
            flight.drainer_waits = false;
        }
    }

    /// Thread side: a batch finished (its buffer is back in the pool).
    fn finished(&self) {
        let mut flight = self.flight();
        flight.in_flight -= 1;
        let wake = flight.drainer_waits;
        drop(flight);
        if wake {
            self.returned.notify_one();
        }
    }
}

/// Drainer side: queues a full buffer for a handler thread (or fails it at
/// once if its threads are gone).
pub(crate) fn dispatch<T, R>(shared: &Shared<T, R>, buf: BatchBuf<T>) {
    let threads = shared.threads();
    // Counted before the hand-off, so that a flush waiting for zero cannot
    // miss a batch that is queued but not yet taken.
    threads.flight().in_flight += 1;
    let queue = &threads.queues[threads.queue_of(&buf)];
    let mut state = lock(&queue.state);
    if state.alive == 0 || state.closing {
        drop(state);
        finish(shared, buf, Error::Closed);
        return;
    }
    // At most every buffer of the pool is queued: no reallocation.
    debug_assert!(state.bufs.len() < state.bufs.capacity());
    state.bufs.push_back(buf);
    drop(state);
    queue.work.notify_one();
}

/// At shutdown (after every batch finished), or when the build fails after
/// the threads started: the threads exit, and are joined.
pub(crate) fn close<T, R>(shared: &Shared<T, R>) {
    let threads = shared.threads();
    for queue in threads.queues.iter() {
        lock(&queue.state).closing = true;
        queue.work.notify_all();
    }
    let handles = core::mem::take(&mut *lock(&threads.handles));
    for handle in handles {
        // A thread's own panics are contained in it (see `worker`).
        drop(handle.join());
    }
}

/// Completes what the handler left with `error`, returns the buffer to the
/// pool and wakes the drainer if it waits for one.
pub(super) fn finish<T, R>(shared: &Shared<T, R>, mut buf: BatchBuf<T>, error: Error) {
    Batch::new(&mut buf, &shared.table).fail_remaining(error);
    let threads = shared.threads();
    if buf.failed > 0 {
        // Relaxed: a statistic.
        threads
            .items_failed
            .fetch_add(buf.failed as u64, Ordering::Relaxed);
        shared.group_failed(buf.meta.group, buf.failed);
    }
    #[cfg(feature = "durable")]
    if let Some(durable) = &shared.durable {
        durable.done(&mut buf);
    }
    shared.pool.put(buf);
    threads.finished();
}
