//! The request-reply round trip, one harness per system, shared by
//! `benches/peers.rs` (criterion, mean time per round trip) and
//! `benches/latency.rs` (every round trip timed into a histogram).
//!
//! One requester sends `x` and waits for the reply `x + 1` before sending the
//! next request. [`with_roundtrip`] starts the system's server (a thread, or
//! ringbatch's drainer) once, runs the caller's body with a `call(x) -> x + 1`
//! closure, then stops and joins the server.
//!
//! - `ringbatch`: `producer.submit(x)?.wait()` on a one-lane batcher
//!   (capacity [`CAPACITY`], `max_batch` [`MAX_BATCH`]) whose handler
//!   completes each item with `x + 1`; default wait strategy (`Backoff`)
//!   unless [`Rt::Ringbatch`] asks for another.
//! - `ringbatch_inline`: the same with `inline_when_idle(true)`: a request
//!   that finds the drainer asleep is handled on the requesting thread,
//!   inside `submit`, with no thread hand-off.
//! - `array_queue`: the request goes into an `ArrayQueue<u64>` of
//!   [`CAPACITY`]; the server thread pops it (idle: spin, yield, then park for
//!   at most [`IDLE_PARK`]) and pushes the reply into a second `ArrayQueue`
//!   of capacity 1, which the requester spin-waits on with a crossbeam
//!   `Backoff` (unparking the server once the backoff is spent).
//! - `crossbeam_channel`, `flume`, `std_sync_channel`: the request carries a
//!   reply sender of a capacity-1 channel made for that request (`bounded(1)`,
//!   `flume::bounded(1)`, `sync_channel(1)`) over a bounded request channel of
//!   [`CAPACITY`]; the server thread blocks in `recv` and the requester in the
//!   reply's `recv` (the idiomatic pattern).
//! - `tokio_mpsc`: the request carries a `tokio::sync::oneshot::Sender` over a
//!   bounded `tokio::sync::mpsc` channel of [`CAPACITY`]; the server is the
//!   task of a current-thread runtime on its own thread, looping on
//!   `recv().await`; the requester (a plain thread) uses `blocking_send` and
//!   `blocking_recv`.
//! - `disruptor`: the request is published into a multi-producer `disruptor`
//!   ring of [`CAPACITY`] with a `BusySpin` consumer, whose handler stores
//!   `x + 1` into an atomic reply slot; the requester spin-waits on the slot
//!   (crossbeam `Backoff`). The disruptor has no reply path of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::{Backoff, CachePadded};
use ringbatch::{Batch, Batcher, WaitStrategy};

/// Request queue capacity (ringbatch: lane capacity).
pub const CAPACITY: usize = 4096;
/// ringbatch's `max_batch`.
pub const MAX_BATCH: usize = 256;
/// Longest the idle `array_queue` server parks before looking again.
pub const IDLE_PARK: Duration = Duration::from_millis(1);

/// A system for the round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rt {
    /// ringbatch with this drainer and ticket wait strategy.
    Ringbatch(WaitStrategy),
    /// ringbatch with `inline_when_idle`.
    RingbatchInline,
    ArrayQueue,
    CrossbeamChannel,
    Disruptor,
    Flume,
    StdSyncChannel,
    TokioMpsc,
}

impl Rt {
    /// Every system, ringbatch (default settings) first.
    pub const ALL: [Rt; 8] = [
        Rt::Ringbatch(WaitStrategy::Backoff),
        Rt::RingbatchInline,
        Rt::ArrayQueue,
        Rt::CrossbeamChannel,
        Rt::Disruptor,
        Rt::Flume,
        Rt::StdSyncChannel,
        Rt::TokioMpsc,
    ];

    /// The bench-function name.
    pub fn name(self) -> &'static str {
        match self {
            Rt::Ringbatch(WaitStrategy::Backoff) => "ringbatch",
            Rt::Ringbatch(WaitStrategy::BusySpin) => "ringbatch_busyspin",
            Rt::Ringbatch(_) => "ringbatch_other",
            Rt::RingbatchInline => "ringbatch_inline",
            Rt::ArrayQueue => "array_queue",
            Rt::CrossbeamChannel => "crossbeam_channel",
            Rt::Disruptor => "disruptor",
            Rt::Flume => "flume",
            Rt::StdSyncChannel => "std_sync_channel",
            Rt::TokioMpsc => "tokio_mpsc",
        }
    }
}

/// Starts `system`'s server, runs `body` with a `call(x) -> x + 1` closure,
/// then stops and joins the server.
pub fn with_roundtrip<R>(system: Rt, body: impl FnOnce(&mut dyn FnMut(u64) -> u64) -> R) -> R {
    match system {
        Rt::Ringbatch(wait) => ringbatch(wait, false, body),
        Rt::RingbatchInline => ringbatch(WaitStrategy::Backoff, true, body),
        Rt::ArrayQueue => array_queue(body),
        Rt::CrossbeamChannel => crossbeam_channel(body),
        Rt::Disruptor => disruptor(body),
        Rt::Flume => flume(body),
        Rt::StdSyncChannel => std_sync_channel(body),
        Rt::TokioMpsc => tokio_mpsc(body),
    }
}

fn ringbatch<R>(
    wait: WaitStrategy,
    inline: bool,
    body: impl FnOnce(&mut dyn FnMut(u64) -> u64) -> R,
) -> R {
    let batcher = Batcher::builder()
        .lanes(1)
        .capacity(CAPACITY)
        .max_batch(MAX_BATCH)
        .wait_strategy(wait)
        .inline_when_idle(inline)
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            batch.complete_with(|x| Ok::<_, ringbatch::Error>(x + 1));
            Ok(())
        })
        .build()
        .expect("valid settings");
    let producer = batcher.producer();
    let result = body(&mut |x| {
        producer
            .submit(x)
            .expect("batcher open")
            .wait()
            .expect("handled")
    });
    drop(producer);
    batcher.shutdown();
    result
}

fn array_queue<R>(body: impl FnOnce(&mut dyn FnMut(u64) -> u64) -> R) -> R {
    let requests = ArrayQueue::<u64>::new(CAPACITY);
    let reply = ArrayQueue::<u64>::new(1);
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let server = s.spawn(|| {
            let mut idle = 0u32;
            loop {
                if let Some(x) = requests.pop() {
                    let backoff = Backoff::new();
                    let mut answer = x + 1;
                    while let Err(back) = reply.push(answer) {
                        answer = back;
                        backoff.snooze();
                    }
                    idle = 0;
                } else if stop.load(Ordering::Acquire) {
                    return;
                } else if idle < 7 {
                    for _ in 0..1u32 << idle {
                        std::hint::spin_loop();
                    }
                    idle += 1;
                } else if idle < 7 + 64 {
                    thread::yield_now();
                    idle += 1;
                } else {
                    thread::park_timeout(IDLE_PARK);
                }
            }
        });
        let waker = server.thread().clone();
        let result = body(&mut |x| {
            let backoff = Backoff::new();
            let mut request = x;
            while let Err(back) = requests.push(request) {
                request = back;
                backoff.snooze();
            }
            let backoff = Backoff::new();
            loop {
                if let Some(answer) = reply.pop() {
                    return answer;
                }
                if backoff.is_completed() {
                    waker.unpark();
                }
                backoff.snooze();
            }
        });
        stop.store(true, Ordering::Release);
        waker.unpark();
        server.join().expect("server panicked");
        result
    })
}

fn crossbeam_channel<R>(body: impl FnOnce(&mut dyn FnMut(u64) -> u64) -> R) -> R {
    let (requests, inbox) =
        crossbeam_channel::bounded::<(u64, crossbeam_channel::Sender<u64>)>(CAPACITY);
    let server = thread::spawn(move || {
        // Ends when the request sender is dropped.
        for (x, reply) in inbox {
            let _ = reply.send(x + 1);
        }
    });
    let result = body(&mut |x| {
        let (reply_to, reply) = crossbeam_channel::bounded(1);
        requests.send((x, reply_to)).expect("server running");
        reply.recv().expect("server replied")
    });
    drop(requests);
    server.join().expect("server panicked");
    result
}

fn flume<R>(body: impl FnOnce(&mut dyn FnMut(u64) -> u64) -> R) -> R {
    let (requests, inbox) = flume::bounded::<(u64, flume::Sender<u64>)>(CAPACITY);
    let server = thread::spawn(move || {
        for (x, reply) in inbox {
            let _ = reply.send(x + 1);
        }
    });
    let result = body(&mut |x| {
        let (reply_to, reply) = flume::bounded(1);
        requests.send((x, reply_to)).expect("server running");
        reply.recv().expect("server replied")
    });
    drop(requests);
    server.join().expect("server panicked");
    result
}

fn std_sync_channel<R>(body: impl FnOnce(&mut dyn FnMut(u64) -> u64) -> R) -> R {
    use std::sync::mpsc::{SyncSender, sync_channel};
    let (requests, inbox) = sync_channel::<(u64, SyncSender<u64>)>(CAPACITY);
    let server = thread::spawn(move || {
        for (x, reply) in inbox {
            let _ = reply.send(x + 1);
        }
    });
    let result = body(&mut |x| {
        let (reply_to, reply) = sync_channel(1);
        requests.send((x, reply_to)).expect("server running");
        reply.recv().expect("server replied")
    });
    drop(requests);
    server.join().expect("server panicked");
    result
}

fn tokio_mpsc<R>(body: impl FnOnce(&mut dyn FnMut(u64) -> u64) -> R) -> R {
    use tokio::sync::{mpsc, oneshot};
    let (requests, mut inbox) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(CAPACITY);
    let server = thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async move {
            while let Some((x, reply)) = inbox.recv().await {
                let _ = reply.send(x + 1);
            }
        });
    });
    let result = body(&mut |x| {
        let (reply_to, reply) = oneshot::channel();
        requests
            .blocking_send((x, reply_to))
            .expect("server running");
        reply.blocking_recv().expect("server replied")
    });
    drop(requests);
    server.join().expect("server panicked");
    result
}

fn disruptor<R>(body: impl FnOnce(&mut dyn FnMut(u64) -> u64) -> R) -> R {
    use disruptor::Producer as _;
    let reply = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let slot = Arc::clone(&reply);
    let mut producer = disruptor::build_multi_producer(CAPACITY, || 0u64, disruptor::BusySpin)
        .handle_events_with(move |x: &u64, _seq, _end_of_batch| {
            slot.store(x + 1, Ordering::Release);
        })
        .build();
    let result = body(&mut |x| {
        producer.publish(|request| *request = x);
        let backoff = Backoff::new();
        loop {
            let answer = reply.load(Ordering::Acquire);
            if answer == x + 1 {
                return answer;
            }
            backoff.snooze();
        }
    });
    // The last producer handle: dropping it stops and joins the consumer.
    drop(producer);
    result
}
