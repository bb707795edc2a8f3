//! Panic injection: every user callback panics at random points, and so
//! does the `Drop` of items and results, while producers submit and drop
//! their tickets at random.
//!
//! The callbacks: the blocking and the async handler (and the async
//! handler's future, in its `Drop`), the weigher, the `group_by` and
//! `conflate_by` key functions, the group limits, the dead-letter and the
//! spill callbacks. The settings: a drainer thread with a blocking or an
//! async handler, a drainer task on the runtime (`drain_on_runtime`) with
//! either handler, shared producers (`Producers`, `Batcher::producer`),
//! exclusive producers, async producers, the four backpressure policies
//! (`DropOldest` evicting), shaping (bytes, key groups, conflation, linger),
//! retries with dead letters.
//!
//! After each case the suite proves, for every item it made:
//!
//! - an accepted item whose ticket was kept resolved, within its bound, to
//!   `Ok` exactly when the handler answered it (once, with its own result),
//!   or to an error that the injected faults and the settings allow (a
//!   weigher panic fails that item with `CallbackPanicked(Weigher)`, an
//!   eviction with `Dropped`, and so on), and the dead-letter and spill
//!   callbacks saw exactly the items they should;
//! - no item was answered, dead-lettered or spilled more than once, and no
//!   item reached the handler more often than its retries allow;
//! - a refused item came back in the error;
//! - every item and every result was dropped exactly once (counted per id),
//!   none while a panic was unwinding (which would abort the process);
//! - `shutdown` returned within its bound, every batch buffer went back to
//!   the pool, and the stats counted each contained panic: `callback_panics`
//!   is the number of injected callback panics, `drop_panics` the number of
//!   panicking drops the batcher ran.
//!
//! Every decision is a function of the case's seed (a splitmix64 mix of the
//! seed, the item id and the kind of decision), so a case is repeatable in
//! its decisions (thread interleavings still vary). A failing case prints
//! its seed and the test to rerun:
//!
//! ```sh
//! PANIC_INJECTION_SEED=0x1234abcd cargo test --test panic_injection thread_drainer
//! ```
//!
//! `PANIC_INJECTION_CASES=n` runs `n` cases per test (by default a bounded
//! count that keeps the file within a few seconds); with a seed set it runs
//! that seed's case (and `n - 1` after it).

// The async handler and the drainer task need the runtime.
#![cfg(feature = "tokio")]

mod common;

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, mpsc};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use ringbatch::{
    AsyncBatch, Backpressure, Batch, BatchError, Batcher, Callback, DeadLetter, Error, GroupLimits,
    LaneAssignment, Linger, Producer, RetryPolicy, Stats, SubmitError, Ticket, WaitStrategy,
};

/// The longest a ticket may take to resolve once its producer waits for it.
const WAIT_BOUND: Duration = Duration::from_secs(20);
/// The longest `shutdown` may take.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(20);
/// The longest a whole case may take (producers included).
const CASE_BOUND: Duration = Duration::from_secs(50);
/// Cases per test by default.
const DEFAULT_CASES: u64 = 32;
/// The seed the default cases derive from.
const BASE_SEED: u64 = 0x05EE_D0FB_A7C4_E5A1;

// ---------------------------------------------------------------------------
// Deterministic decisions.

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A small xorshift generator for the producers' choices and the case's
/// settings.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(mix(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, options: &[T]) -> T {
        options[self.below(options.len() as u64) as usize]
    }
}

/// What a decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ItemDrop,
    ResultDrop,
    HandlerPanic,
    Fail,
    RetryOnce,
    RetryAlways,
    Skip,
    BatchError,
    Slow,
    Weigher,
    TooHeavy,
    GroupBy,
    GroupLimits,
    ConflateBy,
    Spill,
    DeadLetter,
    FutureDrop,
}

const KINDS: usize = 17;

impl Kind {
    /// Every kind, in the order of the rates.
    const ALL: [Kind; KINDS] = {
        use Kind::*;
        [
            ItemDrop,
            ResultDrop,
            HandlerPanic,
            Fail,
            RetryOnce,
            RetryAlways,
            Skip,
            BatchError,
            Slow,
            Weigher,
            TooHeavy,
            GroupBy,
            GroupLimits,
            ConflateBy,
            Spill,
            DeadLetter,
            FutureDrop,
        ]
    };
}

/// Rates per mille, per kind.
#[derive(Clone, Copy)]
struct Rates([u16; KINDS]);

impl fmt::Debug for Rates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for kind in Kind::ALL {
            let rate = self.0[kind as usize];
            if rate > 0 {
                map.entry(&kind, &rate);
            }
        }
        map.finish()
    }
}

// ---------------------------------------------------------------------------
// The case's settings.

/// Where the drainer runs and what kind of handler it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A drainer thread, a blocking handler.
    ThreadSync,
    /// A drainer thread, an async handler on the runtime.
    ThreadAsync,
    /// `drain_on_runtime`, a blocking handler.
    RuntimeSync,
    /// `drain_on_runtime`, an async handler.
    RuntimeAsync,
}

impl Mode {
    fn async_handler(self) -> bool {
        matches!(self, Mode::ThreadAsync | Mode::RuntimeAsync)
    }

    fn on_runtime(self) -> bool {
        matches!(self, Mode::RuntimeSync | Mode::RuntimeAsync)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failures {
    None,
    DeadLetter,
    RetryAndDeadLetter,
}

#[derive(Debug, Clone)]
struct Setup {
    seed: u64,
    mode: Mode,
    lanes: usize,
    capacity: usize,
    max_batch: usize,
    wait: WaitStrategy,
    backpressure: Backpressure,
    spill: bool,
    /// Producers that own a lane, one thread each.
    exclusive: usize,
    /// Producers on shared lanes, one thread each (made through a
    /// `Producers` handle, or the batcher).
    shared: usize,
    /// Async producers, one task each (async modes).
    tasks: usize,
    items_per_producer: u32,
    weigher: bool,
    group_by: bool,
    group_limits: bool,
    conflate: bool,
    linger: Option<Duration>,
    failures: Failures,
    max_retries: u32,
    max_in_flight: usize,
    rates: Rates,
}

impl Setup {
    fn new(seed: u64, mode: Mode) -> Self {
        let mut rng = Rng::new(seed);
        let capacity = rng.pick(&[4usize, 8, 16, 64]);
        let max_batch = rng.pick(&[1usize, 2, 4, 16, 64]).min(capacity);
        let backpressure = rng.pick(&[
            Backpressure::Block,
            Backpressure::Block,
            Backpressure::Reject,
            Backpressure::DropNewest,
            Backpressure::DropOldest,
            Backpressure::DropOldest,
        ]);
        let drops = matches!(
            backpressure,
            Backpressure::DropNewest | Backpressure::DropOldest
        );
        let spill = drops && rng.below(3) != 0;
        let exclusive = rng.below(3) as usize;
        let shared = 1 + rng.below(2) as usize;
        let tasks = if mode.async_handler() || mode.on_runtime() {
            rng.below(3) as usize
        } else {
            0
        };
        let lanes = exclusive + 1 + rng.below(2) as usize;
        let weigher = rng.below(3) == 0;
        let group_by = rng.below(3) == 0;
        let group_limits = group_by && rng.below(2) == 0;
        let conflate = rng.below(3) == 0;
        let shaping = weigher || group_by || conflate;
        let linger = if shaping {
            rng.pick(&[
                None,
                Some(Duration::ZERO),
                Some(Duration::from_micros(200)),
                Some(Duration::from_millis(1)),
            ])
        } else {
            None
        };
        // A drainer task with a blocking handler takes no retry policy.
        let failures = match rng.below(3) {
            0 => Failures::None,
            1 => Failures::DeadLetter,
            _ if mode == Mode::RuntimeSync => Failures::DeadLetter,
            _ => Failures::RetryAndDeadLetter,
        };
        let wait = rng.pick(&[
            WaitStrategy::Backoff,
            WaitStrategy::Backoff,
            WaitStrategy::Park,
            WaitStrategy::Yield,
        ]);
        // Rates per mille: each kind off, rare or frequent.
        let mut rates = [0u16; KINDS];
        for rate in rates.iter_mut() {
            *rate = rng.pick(&[0, 5, 20, 60, 150]);
        }
        rates[Kind::ItemDrop as usize] = rng.pick(&[0, 50, 200, 500]);
        rates[Kind::ResultDrop as usize] = rng.pick(&[0, 50, 200, 500]);
        rates[Kind::Slow as usize] = rng.pick(&[0, 10, 50]);
        rates[Kind::TooHeavy as usize] = rng.pick(&[0, 10, 50]);
        Setup {
            seed,
            mode,
            lanes,
            capacity,
            max_batch,
            wait,
            backpressure,
            spill,
            exclusive,
            shared,
            tasks,
            items_per_producer: 60 + rng.below(140) as u32,
            weigher,
            group_by,
            group_limits,
            conflate,
            linger,
            failures,
            max_retries: 1 + rng.below(2) as u32,
            max_in_flight: 1 + rng.below(3) as usize,
            rates: Rates(rates),
        }
    }

    fn producers(&self) -> usize {
        self.exclusive + self.shared + self.tasks
    }

    fn items(&self) -> usize {
        self.producers() * self.items_per_producer as usize
    }

    fn retries(&self) -> bool {
        self.failures == Failures::RetryAndDeadLetter
    }

    fn dead_letters(&self) -> bool {
        self.failures != Failures::None
    }

    fn drops(&self) -> bool {
        matches!(
            self.backpressure,
            Backpressure::DropNewest | Backpressure::DropOldest
        )
    }

    fn decide(&self, kind: Kind, x: u64) -> bool {
        let rate = self.rates.0[kind as usize];
        rate > 0
            && mix(self.seed ^ mix((kind as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407) ^ x))
                % 1000
                < u64::from(rate)
    }

    /// The weight the weigher gives item `id` (when it does not panic).
    fn weight(&self, id: u32) -> usize {
        if self.decide(Kind::TooHeavy, u64::from(id)) {
            MAX_BYTES * 10
        } else {
            1 + (mix(u64::from(id) ^ 0x77) % 16) as usize
        }
    }
}

/// The byte limit with a weigher.
const MAX_BYTES: usize = 64;

// ---------------------------------------------------------------------------
// Items and results that count their drops.

thread_local! {
    /// Set while the test itself (not the batcher) drops values or runs a
    /// callback that drops them: their drop panics are not the batcher's.
    static TEST_CONTEXT: Cell<u32> = const { Cell::new(0) };
}

fn in_test_context<T>(f: impl FnOnce() -> T) -> T {
    TEST_CONTEXT.with(|c| c.set(c.get() + 1));
    let out = catch_unwind(AssertUnwindSafe(f));
    TEST_CONTEXT.with(|c| c.set(c.get() - 1));
    out.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Drops `value` in the test's context, containing a panic of its `Drop`.
fn drop_contained<T>(value: T) {
    in_test_context(|| {
        let _ = catch_unwind(AssertUnwindSafe(move || drop(value)));
    });
}

/// What one case counts, shared by its items, results and callbacks.
struct Ctx {
    setup: Setup,
    item_drops: Vec<AtomicU32>,
    result_drops: Vec<AtomicU32>,
    results_made: Vec<AtomicU32>,
    /// Times the handler saw each item.
    invocations: Vec<AtomicU32>,
    /// Times the handler answered each item with `Ok`.
    answered: Vec<AtomicU32>,
    spilled: Vec<AtomicU32>,
    dead: Vec<AtomicU32>,
    /// Each dead letter's error, as text.
    letters: Mutex<HashMap<u32, String>>,
    /// Panicking drops the batcher ran (outside the test's context).
    batcher_drop_panics: AtomicU64,
    /// Drops run while a panic was unwinding (each would have aborted).
    drops_while_unwinding: AtomicU64,
    /// Injected panics of the callbacks other than the handler.
    callback_panics: AtomicU64,
    /// Panicking drops of the async handler's futures.
    future_drop_panics: AtomicU64,
}

impl Ctx {
    fn new(setup: Setup) -> Arc<Self> {
        let n = setup.items();
        let counters = || (0..n).map(|_| AtomicU32::new(0)).collect::<Vec<_>>();
        Arc::new(Self {
            setup,
            item_drops: counters(),
            result_drops: counters(),
            results_made: counters(),
            invocations: counters(),
            answered: counters(),
            spilled: counters(),
            dead: counters(),
            letters: Mutex::new(HashMap::new()),
            batcher_drop_panics: AtomicU64::new(0),
            drops_while_unwinding: AtomicU64::new(0),
            callback_panics: AtomicU64::new(0),
            future_drop_panics: AtomicU64::new(0),
        })
    }

    fn decide(&self, kind: Kind, x: u32) -> bool {
        self.setup.decide(kind, u64::from(x))
    }

    fn item(self: &Arc<Self>, id: u32) -> Item {
        Item {
            id,
            bomb: self.decide(Kind::ItemDrop, id),
            ctx: Arc::clone(self),
        }
    }

    fn result(self: &Arc<Self>, id: u32) -> Res {
        self.results_made[id as usize].fetch_add(1, Ordering::SeqCst);
        Res {
            id,
            bomb: self.decide(Kind::ResultDrop, id),
            ctx: Arc::clone(self),
        }
    }

    /// A drop of a value whose `Drop` panics when `bomb`: counted, then
    /// the panic (unless one is unwinding already: that is counted as a
    /// drop that would have aborted the process).
    fn dropping(&self, what: &str, id: u32, bomb: bool) {
        if !bomb {
            return;
        }
        if thread::panicking() {
            // Panicking here would abort the process: count it instead.
            self.drops_while_unwinding.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if TEST_CONTEXT.with(Cell::get) == 0 {
            self.batcher_drop_panics.fetch_add(1, Ordering::SeqCst);
        }
        panic!("injected drop panic of {what} {id}");
    }

    /// An injected panic of a callback other than the handler.
    fn callback_panic(&self, callback: &str, id: u32) -> ! {
        self.callback_panics.fetch_add(1, Ordering::SeqCst);
        panic!("injected {callback} panic at item {id}");
    }
}

struct Item {
    id: u32,
    bomb: bool,
    ctx: Arc<Ctx>,
}

impl Drop for Item {
    fn drop(&mut self) {
        self.ctx.item_drops[self.id as usize].fetch_add(1, Ordering::SeqCst);
        self.ctx.dropping("item", self.id, self.bomb);
    }
}

struct Res {
    id: u32,
    bomb: bool,
    ctx: Arc<Ctx>,
}

impl Drop for Res {
    fn drop(&mut self) {
        self.ctx.result_drops[self.id as usize].fetch_add(1, Ordering::SeqCst);
        self.ctx.dropping("result", self.id, self.bomb);
    }
}

/// Silences the injected panics' messages (thousands of them); any other
/// panic is reported as usual.
fn quiet_injected_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("");
            if !message.starts_with("injected") {
                default(info);
            }
        }));
    });
}

// ---------------------------------------------------------------------------
// The handler, the callbacks.

/// The handler's work on one batch (blocking or async): panics, fails,
/// retries, skips or answers each item as the case decides.
fn handle(ctx: &Arc<Ctx>, batch: &mut Batch<'_, Item, Res>) -> Result<(), BatchError> {
    let first = batch.items()[0].id;
    let mut attempts = Vec::with_capacity(batch.len());
    for item in batch.items() {
        attempts.push(ctx.invocations[item.id as usize].fetch_add(1, Ordering::SeqCst));
    }
    if ctx.decide(Kind::Slow, first) && !ctx.setup.mode.async_handler() {
        thread::sleep(Duration::from_micros(300));
    }
    if ctx.decide(Kind::BatchError, first ^ (attempts[0] << 24)) {
        return Err("injected batch error".into());
    }
    for (i, &attempt) in attempts.iter().enumerate() {
        let id = batch.items()[i].id;
        if ctx.decide(Kind::HandlerPanic, id) {
            panic!("injected handler panic at item {id}");
        }
        if ctx.decide(Kind::Fail, id) {
            batch.fail(i, "injected failure").unwrap();
        } else if ctx.decide(Kind::RetryAlways, id)
            || (ctx.decide(Kind::RetryOnce, id) && attempt == 0)
        {
            batch.retry(i, "injected retry").unwrap();
        } else if ctx.decide(Kind::Skip, id) {
            // Left uncompleted.
        } else {
            batch.ok(i, ctx.result(id)).unwrap();
            ctx.answered[id as usize].fetch_add(1, Ordering::SeqCst);
        }
    }
    Ok(())
}

type BoxedHandling = Pin<Box<dyn Future<Output = Result<(), BatchError>> + Send>>;

/// An async handler's future whose `Drop` panics when armed.
struct FutureBomb {
    inner: BoxedHandling,
    armed: bool,
    ctx: Arc<Ctx>,
}

impl Future for FutureBomb {
    type Output = Result<(), BatchError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl Drop for FutureBomb {
    fn drop(&mut self) {
        if self.armed {
            if thread::panicking() {
                self.ctx
                    .drops_while_unwinding
                    .fetch_add(1, Ordering::SeqCst);
                return;
            }
            self.ctx.future_drop_panics.fetch_add(1, Ordering::SeqCst);
            panic!("injected drop panic of a handler future");
        }
    }
}

fn async_handling(ctx: &Arc<Ctx>, mut batch: AsyncBatch<Item, Res>) -> FutureBomb {
    let first = batch.items()[0].id;
    let attempt = ctx.invocations[first as usize].load(Ordering::SeqCst);
    let armed = ctx.decide(Kind::FutureDrop, first ^ (attempt << 24));
    let slow = ctx.decide(Kind::Slow, first);
    let inner_ctx = Arc::clone(ctx);
    FutureBomb {
        inner: Box::pin(async move {
            if slow {
                tokio::time::sleep(Duration::from_micros(300)).await;
            } else {
                tokio::task::yield_now().await;
            }
            handle(&inner_ctx, &mut batch.view())
        }),
        armed,
        ctx: Arc::clone(ctx),
    }
}

/// Where a callback that receives an item (spill, dead letter) disposes
/// of it: it records the item, then either drops it or panics, as decided.
/// A panic with an item whose `Drop` panics too would abort the process,
/// so such an item is dropped first (its own panic contained) and the
/// callback panics after.
fn consume(ctx: &Arc<Ctx>, kind: Kind, name: &str, item: Item) {
    let id = item.id;
    in_test_context(|| {
        if ctx.decide(kind, id) {
            if item.bomb {
                drop_contained(item);
            }
            ctx.callback_panic(name, id);
        }
        // A panicking drop makes the callback panic: injected too.
        if item.bomb {
            ctx.callback_panics.fetch_add(1, Ordering::SeqCst);
        }
        drop(item);
    });
}

// ---------------------------------------------------------------------------
// Producers.

/// What became of one submission, as its producer saw it.
enum Fate {
    /// Refused: the error gave the item back.
    Refused,
    /// Accepted without a ticket (a push).
    Pushed,
    /// Accepted; the ticket was dropped before its result was taken.
    TicketDropped,
    /// The ticket's result: the result's id, or the error.
    Resolved(Result<u32, Error>),
    /// The ticket did not resolve within its bound.
    Unresolved,
}

impl fmt::Debug for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fate::Refused => f.write_str("refused"),
            Fate::Pushed => f.write_str("pushed"),
            Fate::TicketDropped => f.write_str("ticket dropped"),
            Fate::Resolved(Ok(id)) => write!(f, "Ok(result of {id})"),
            Fate::Resolved(Err(e)) => write!(f, "Err({e:?})"),
            Fate::Unresolved => f.write_str("unresolved"),
        }
    }
}

type Fates = Vec<(u32, Fate)>;

/// Takes a result in hand: its id, the result dropped in the test's context.
fn settle(result: Result<Res, Error>) -> Fate {
    Fate::Resolved(result.map(|res| {
        let id = res.id;
        drop_contained(res);
        id
    }))
}

fn refused(id: u32, error: SubmitError<Item>, problems: &mut Vec<String>) -> Fate {
    let item = error.into_inner();
    if item.id != id {
        problems.push(format!(
            "submission of item {id} was refused with item {} in the error",
            item.id
        ));
    }
    drop_contained(item);
    Fate::Refused
}

/// Waits for `ticket` (at most `WAIT_BOUND`, or a short random wait after
/// which it is dropped unresolved).
fn finish_ticket(id: u32, mut ticket: Ticket<Res>, rng: &mut Rng, fates: &mut Fates) {
    if rng.below(10) == 0 {
        let wait = Duration::from_micros(rng.below(200));
        match ticket.wait_timeout(wait) {
            Some(result) => fates.push((id, settle(result))),
            None => {
                drop_contained(ticket);
                fates.push((id, Fate::TicketDropped));
            }
        }
        return;
    }
    let fate = match ticket.wait_timeout(WAIT_BOUND) {
        Some(result) => settle(result),
        None => {
            drop_contained(ticket);
            Fate::Unresolved
        }
    };
    fates.push((id, fate));
}

/// A producer thread's run over `ids`, by a mix of the submission calls.
fn produce(
    ctx: Arc<Ctx>,
    producer: Producer<Item, Res>,
    ids: std::ops::Range<u32>,
    seed: u64,
) -> (Fates, Vec<String>) {
    let mut rng = Rng::new(seed);
    let mut fates = Vec::with_capacity(ids.len());
    let mut problems = Vec::new();
    let mut held: Vec<(u32, Ticket<Res>)> = Vec::new();
    for id in ids {
        let item = ctx.item(id);
        let submitted = match rng.below(10) {
            0 | 1 => match producer.push(item) {
                Ok(()) => {
                    fates.push((id, Fate::Pushed));
                    continue;
                }
                Err(e) => Err(e),
            },
            2 => match producer.try_push(item) {
                Ok(()) => {
                    fates.push((id, Fate::Pushed));
                    continue;
                }
                Err(e) => Err(e),
            },
            3 => producer.try_submit(item),
            4 => producer.submit_timeout(item, Duration::from_micros(rng.below(500))),
            _ => producer.submit(item),
        };
        let mut ticket = match submitted {
            Ok(ticket) => ticket,
            Err(e) => {
                let fate = refused(id, e, &mut problems);
                fates.push((id, fate));
                continue;
            }
        };
        match rng.below(20) {
            0..=2 => {
                drop_contained(ticket);
                fates.push((id, Fate::TicketDropped));
            }
            3 | 4 => match ticket.try_take() {
                Some(result) => fates.push((id, settle(result))),
                None => held.push((id, ticket)),
            },
            _ => held.push((id, ticket)),
        }
        if held.len() >= 24 {
            for (id, ticket) in held.drain(..12) {
                finish_ticket(id, ticket, &mut rng, &mut fates);
            }
        }
    }
    for (id, ticket) in held {
        finish_ticket(id, ticket, &mut rng, &mut fates);
    }
    drop(producer);
    (fates, problems)
}

/// An async producer task's run over `ids`: `push` and `submit`, tickets
/// awaited, dropped or handed back to be waited on by a thread.
async fn produce_async(
    ctx: Arc<Ctx>,
    mut producer: ringbatch::AsyncProducer<Item, Res>,
    ids: std::ops::Range<u32>,
    seed: u64,
) -> (Fates, Vec<(u32, Ticket<Res>)>, Vec<String>) {
    let mut rng = Rng::new(seed);
    let mut fates = Vec::new();
    let mut problems = Vec::new();
    let mut handed_back = Vec::new();
    for id in ids {
        let item = ctx.item(id);
        if rng.below(5) == 0 {
            match producer.push(item).await {
                Ok(()) => fates.push((id, Fate::Pushed)),
                Err(e) => {
                    let fate = refused(id, e, &mut problems);
                    fates.push((id, fate));
                }
            }
            continue;
        }
        let ticket = match producer.submit(item).await {
            Ok(ticket) => ticket,
            Err(e) => {
                let fate = refused(id, e, &mut problems);
                fates.push((id, fate));
                continue;
            }
        };
        match rng.below(10) {
            0 | 1 => {
                drop_contained(ticket);
                fates.push((id, Fate::TicketDropped));
            }
            2..=5 => match tokio::time::timeout(WAIT_BOUND, ticket).await {
                Ok(result) => fates.push((id, settle(result))),
                Err(_) => fates.push((id, Fate::Unresolved)),
            },
            _ => handed_back.push((id, ticket)),
        }
    }
    (fates, handed_back, problems)
}

// ---------------------------------------------------------------------------
// A bounded thread.

struct BoundedThread<T> {
    rx: mpsc::Receiver<thread::Result<T>>,
    name: String,
}

fn bounded<T: Send + 'static>(
    name: impl Into<String>,
    f: impl FnOnce() -> T + Send + 'static,
) -> BoundedThread<T> {
    let name = name.into();
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
        })
        .expect("spawn a test thread");
    BoundedThread { rx, name }
}

impl<T> BoundedThread<T> {
    fn join(self, limit: Duration, setup: &Setup) -> T {
        match self.rx.recv_timeout(limit) {
            Ok(Ok(value)) => value,
            Ok(Err(panic)) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!(
                    "{}: thread {} panicked: {message}\n{setup:?}",
                    rerun(setup),
                    self.name
                )
            }
            Err(_) => panic!(
                "{}: thread {} did not finish within {limit:?} (hung)\n{setup:?}",
                rerun(setup),
                self.name
            ),
        }
    }
}

fn rerun(setup: &Setup) -> String {
    let test = match setup.mode {
        Mode::ThreadSync => "thread_drainer_blocking_handler",
        Mode::ThreadAsync => "thread_drainer_async_handler",
        Mode::RuntimeSync => "drain_on_runtime_blocking_handler",
        Mode::RuntimeAsync => "drain_on_runtime_async_handler",
    };
    format!(
        "case seed {:#x} failed (rerun: PANIC_INJECTION_SEED={:#x} cargo test --test panic_injection {test})",
        setup.seed, setup.seed
    )
}

// ---------------------------------------------------------------------------
// One case.

fn build(ctx: &Arc<Ctx>, runtime: Option<&tokio::runtime::Runtime>) -> Batcher<Item, Res> {
    let s = &ctx.setup;
    let mut builder = Batcher::builder()
        .lanes(s.lanes)
        .exclusive_lanes(s.exclusive)
        .capacity(s.capacity)
        .max_batch(s.max_batch)
        .wait_strategy(s.wait)
        .backpressure(s.backpressure)
        .lane_assignment(LaneAssignment::RoundRobin)
        .max_in_flight(s.max_in_flight);
    if let Some(runtime) = runtime {
        builder = builder.runtime(runtime.handle().clone());
    }
    if s.mode.on_runtime() {
        builder = builder.drain_on_runtime(true);
    }
    if s.spill {
        let c = Arc::clone(ctx);
        builder = builder.spill(move |item: Item| {
            c.spilled[item.id as usize].fetch_add(1, Ordering::SeqCst);
            consume(&c, Kind::Spill, "spill", item);
        });
    }
    if s.weigher {
        let c = Arc::clone(ctx);
        builder = builder
            .weigher(move |item: &Item| {
                if c.decide(Kind::Weigher, item.id) {
                    c.callback_panic("weigher", item.id);
                }
                c.setup.weight(item.id)
            })
            .max_bytes(MAX_BYTES);
    }
    if s.group_by {
        let c = Arc::clone(ctx);
        builder = builder.group_by(move |item: &Item| {
            if c.decide(Kind::GroupBy, item.id) {
                c.callback_panic("group_by", item.id);
            }
            item.id % 3
        });
    }
    if s.group_limits {
        let c = Arc::clone(ctx);
        builder = builder.group_limits(move |item: &Item| {
            if c.decide(Kind::GroupLimits, item.id) {
                c.callback_panic("group_limits", item.id);
            }
            match item.id % 4 {
                0 => GroupLimits::immediate(),
                n => GroupLimits::items(n as usize),
            }
        });
    }
    if s.conflate {
        let c = Arc::clone(ctx);
        builder = builder.conflate_by(move |item: &Item| {
            if c.decide(Kind::ConflateBy, item.id) {
                c.callback_panic("conflate_by", item.id);
            }
            item.id % 7
        });
    }
    if let Some(linger) = s.linger {
        builder = builder.linger(Linger::Fixed(linger));
    }
    if s.retries() {
        builder = builder.retry_policy(
            RetryPolicy::default()
                .with_max_retries(s.max_retries)
                .with_initial_delay(Duration::from_micros(200))
                .with_max_delay(Duration::from_millis(2))
                .with_multiplier(2.0)
                .with_jitter(0.1),
        );
    }
    if s.dead_letters() {
        let c = Arc::clone(ctx);
        builder = builder.dead_letter(move |letter: DeadLetter<Item>| {
            let DeadLetter { item, error, .. } = letter;
            let id = item.id;
            c.dead[id as usize].fetch_add(1, Ordering::SeqCst);
            c.letters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, error.to_string());
            consume(&c, Kind::DeadLetter, "dead letter", item);
        });
    }
    let batcher = if s.mode.async_handler() {
        let c = Arc::clone(ctx);
        builder
            .async_handler_fn(move |batch: AsyncBatch<Item, Res>| async_handling(&c, batch))
            .build()
    } else {
        let c = Arc::clone(ctx);
        builder
            .handler_fn(move |batch: &mut Batch<'_, Item, Res>| handle(&c, batch))
            .build()
    };
    batcher.unwrap_or_else(|e| panic!("{}: build failed: {e}\n{s:?}", rerun(s)))
}

fn run_case(setup: Setup) {
    quiet_injected_panics();
    let started = Instant::now();
    let for_case = setup.clone();
    let (stats, ctx, problems) =
        bounded(format!("case {:#x}", setup.seed), move || case(for_case)).join(CASE_BOUND, &setup);
    check(&ctx, &stats, problems);
    let elapsed = started.elapsed();
    assert!(
        elapsed < CASE_BOUND,
        "{}: took {elapsed:?}\n{setup:?}",
        rerun(&setup)
    );
}

/// Runs one case: builds, produces, waits, shuts down, and drops
/// everything. Returns the final stats, the counts and what the producers
/// found wrong.
fn case(setup: Setup) -> (Stats, Arc<Ctx>, Vec<String>) {
    let ctx = Ctx::new(setup.clone());
    let runtime =
        (setup.mode.async_handler() || setup.mode.on_runtime() || setup.tasks > 0).then(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime")
        });
    let batcher = build(&ctx, runtime.as_ref());
    let per = setup.items_per_producer;
    let mut next = 0u32;
    let mut ranges = std::iter::from_fn(|| {
        let range = next..next + per;
        next += per;
        Some(range)
    });
    let mut threads = Vec::new();
    // Exclusive producers first, so that each finds a lane of its own.
    for p in 0..setup.exclusive {
        let producer = batcher
            .exclusive_producer()
            .unwrap_or_else(|e| panic!("{}: exclusive producer: {e}", rerun(&setup)));
        let (c, ids) = (Arc::clone(&ctx), ranges.next().unwrap());
        let seed = mix(setup.seed ^ (p as u64 + 100));
        threads.push(bounded(format!("exclusive {p}"), move || {
            produce(c, producer, ids, seed)
        }));
    }
    let producers = batcher.producers();
    for p in 0..setup.shared {
        let (c, ids) = (Arc::clone(&ctx), ranges.next().unwrap());
        let seed = mix(setup.seed ^ (p as u64 + 200));
        // Half through the `Producers` handle, made on the thread.
        let handle = producers.clone();
        let made = (p % 2 == 1).then(|| batcher.producer());
        threads.push(bounded(format!("shared {p}"), move || {
            let producer = made.unwrap_or_else(|| handle.producer());
            produce(c, producer, ids, seed)
        }));
    }
    let mut tasks = Vec::new();
    for p in 0..setup.tasks {
        let runtime = runtime
            .as_ref()
            .expect("async producers run on the runtime");
        let (c, ids) = (Arc::clone(&ctx), ranges.next().unwrap());
        let seed = mix(setup.seed ^ (p as u64 + 300));
        let producer = producers.async_producer();
        tasks.push(runtime.spawn(produce_async(c, producer, ids, seed)));
    }
    drop(producers);
    let mut fates = Vec::new();
    let mut problems = Vec::new();
    if let Some(runtime) = &runtime {
        for task in tasks {
            let (task_fates, handed_back, task_problems) = runtime
                .block_on(async { tokio::time::timeout(CASE_BOUND, task).await })
                .unwrap_or_else(|_| panic!("{}: a producer task hung", rerun(&setup)))
                .unwrap_or_else(|e| panic!("{}: a producer task failed: {e}", rerun(&setup)));
            fates.extend(task_fates);
            problems.extend(task_problems);
            let mut rng = Rng::new(setup.seed ^ 0xBAC4);
            for (id, ticket) in handed_back {
                finish_ticket(id, ticket, &mut rng, &mut fates);
            }
        }
    }
    for thread in threads {
        let (thread_fates, thread_problems) = thread.join(CASE_BOUND, &setup);
        fates.extend(thread_fates);
        problems.extend(thread_problems);
    }
    let stats = bounded("shutdown", move || batcher.shutdown()).join(SHUTDOWN_BOUND, &setup);
    // Worker and drainer tasks end with the runtime; then every item the
    // batcher held has been dropped.
    drop(runtime);
    judge(&ctx, &fates, &mut problems);
    (stats, ctx, problems)
}

/// Checks each submission's fate against the counts and the injected
/// faults.
fn judge(ctx: &Ctx, fates: &Fates, problems: &mut Vec<String>) {
    let s = &ctx.setup;
    let count = |v: &[AtomicU32], id: u32| v[id as usize].load(Ordering::SeqCst);
    let mut seen = vec![false; s.items()];
    for (id, fate) in fates {
        let id = *id;
        if std::mem::replace(&mut seen[id as usize], true) {
            problems.push(format!("item {id}: two fates recorded"));
        }
        let answered = count(&ctx.answered, id);
        let dead = count(&ctx.dead, id);
        let spilled = count(&ctx.spilled, id);
        let mut problem = |what: String| {
            problems.push(format!(
                "item {id} ({fate:?}; answered {answered}, dead-lettered {dead}, spilled {spilled}, \
                 handler saw it {} times): {what}",
                count(&ctx.invocations, id)
            ))
        };
        if answered + dead + spilled > 1 {
            problem("expected at most one of answered, dead-lettered, spilled".into());
        }
        let attempts = if s.retries() { 1 + s.max_retries } else { 1 };
        if count(&ctx.invocations, id) > attempts {
            problem(format!(
                "expected the handler to see it at most {attempts} times"
            ));
        }
        // A callback that panics on this item fails it, wherever it runs.
        let must_fail = (s.weigher
            && (ctx.decide(Kind::Weigher, id) || ctx.decide(Kind::TooHeavy, id)))
            || (s.group_by && ctx.decide(Kind::GroupBy, id))
            || (s.conflate && ctx.decide(Kind::ConflateBy, id))
            || ctx.decide(Kind::HandlerPanic, id)
            || ctx.decide(Kind::Fail, id)
            || ctx.decide(Kind::RetryAlways, id)
            || ctx.decide(Kind::Skip, id)
            || (!s.retries() && ctx.decide(Kind::RetryOnce, id));
        if must_fail && answered > 0 {
            problem("answered Ok, though an injected fault must fail it".into());
        }
        match fate {
            Fate::Refused => {
                if answered + dead + spilled > 0 || count(&ctx.invocations, id) > 0 {
                    problem("refused, yet the batcher used it".into());
                }
            }
            Fate::Pushed | Fate::TicketDropped => {}
            Fate::Unresolved => {
                problem(format!("the ticket did not resolve within {WAIT_BOUND:?}"))
            }
            Fate::Resolved(Ok(result)) => {
                if *result != id {
                    problem(format!("Ok with the result of item {result}"));
                }
                if answered != 1 {
                    problem("Ok, so the handler must have answered it exactly once".into());
                }
                if dead + spilled > 0 {
                    problem("Ok, so it must not reach the dead letter or the spill".into());
                }
            }
            Fate::Resolved(Err(error)) => {
                if answered > 0 {
                    problem(format!(
                        "the handler answered it, yet the ticket says {error:?}"
                    ));
                }
                let allowed = match error {
                    Error::HandlerPanicked { message } => {
                        s.rates.0[Kind::HandlerPanic as usize] > 0
                            && message.starts_with("injected handler panic")
                    }
                    Error::BatchFailed(_) => s.rates.0[Kind::BatchError as usize] > 0,
                    Error::Failed(_) => {
                        ctx.decide(Kind::Fail, id)
                            || ctx.decide(Kind::RetryAlways, id)
                            || (!s.retries() && ctx.decide(Kind::RetryOnce, id))
                    }
                    Error::NotCompleted => ctx.decide(Kind::Skip, id),
                    Error::Dropped => s.drops(),
                    Error::Superseded => s.conflate,
                    Error::TooLarge { .. } => s.weigher && ctx.decide(Kind::TooHeavy, id),
                    Error::CallbackPanicked(panic) => {
                        let (on, kind) = match panic.callback() {
                            Callback::Weigher => (s.weigher, Kind::Weigher),
                            Callback::GroupBy => (s.group_by, Kind::GroupBy),
                            Callback::GroupLimits => (s.group_limits, Kind::GroupLimits),
                            Callback::ConflateBy => (s.conflate, Kind::ConflateBy),
                            _ => (false, Kind::Weigher),
                        };
                        on && ctx.decide(kind, id)
                            && panic.message().ends_with(&format!("panic at item {id}"))
                    }
                    _ => false,
                };
                if !allowed {
                    problem(format!(
                        "the ticket failed with {error:?}, which no injected fault of this \
                         case explains"
                    ));
                }
                // Failed for good by the handler or its policies: dead-lettered.
                let for_good = matches!(
                    error,
                    Error::HandlerPanicked { .. } | Error::BatchFailed(_) | Error::Failed(_)
                );
                let want_dead = u32::from(s.dead_letters() && for_good);
                if dead != want_dead {
                    problem(format!(
                        "expected {want_dead} dead letter(s) for a ticket that says {error:?}"
                    ));
                } else if dead == 1 {
                    let letters = ctx.letters.lock().unwrap_or_else(|e| e.into_inner());
                    let text = letters.get(&id).cloned().unwrap_or_default();
                    if text != error.to_string() {
                        problem(format!(
                            "the dead letter's error {text:?} is not the ticket's {error}"
                        ));
                    }
                }
                let want_spilled = u32::from(s.spill && matches!(error, Error::Dropped));
                if spilled != want_spilled {
                    problem(format!(
                        "expected {want_spilled} spill(s) for a ticket that says {error:?}"
                    ));
                }
            }
        }
    }
    if let Some(id) = seen.iter().position(|seen| !seen) {
        problems.push(format!("item {id}: no fate recorded (test bug)"));
    }
}

/// The checks after everything was dropped: drop counts and the stats.
fn check(ctx: &Arc<Ctx>, stats: &Stats, mut problems: Vec<String>) {
    let s = &ctx.setup;
    for id in 0..s.items() {
        let drops = ctx.item_drops[id].load(Ordering::SeqCst);
        if drops != 1 {
            problems.push(format!(
                "item {id} was dropped {drops} times, expected once"
            ));
        }
        let (made, dropped) = (
            ctx.results_made[id].load(Ordering::SeqCst),
            ctx.result_drops[id].load(Ordering::SeqCst),
        );
        if made != dropped {
            problems.push(format!(
                "item {id}: {made} result(s) made, {dropped} dropped"
            ));
        }
    }
    let unwinding = ctx.drops_while_unwinding.load(Ordering::SeqCst);
    if unwinding > 0 {
        problems.push(format!(
            "{unwinding} value(s) dropped while a panic unwound (a panicking drop there aborts)"
        ));
    }
    let callback_panics = ctx.callback_panics.load(Ordering::SeqCst);
    if stats.callback_panics != callback_panics {
        problems.push(format!(
            "stats.callback_panics is {}, expected the {callback_panics} injected",
            stats.callback_panics
        ));
    }
    let drop_panics = ctx.batcher_drop_panics.load(Ordering::SeqCst)
        + ctx.future_drop_panics.load(Ordering::SeqCst);
    if stats.drop_panics != drop_panics {
        problems.push(format!(
            "stats.drop_panics is {}, expected the {drop_panics} panicking drops the batcher ran",
            stats.drop_panics
        ));
    }
    if stats.pool_free != stats.pool_size {
        problems.push(format!(
            "{} of {} batch buffers back in the pool after shutdown",
            stats.pool_free, stats.pool_size
        ));
    }
    if !problems.is_empty() {
        let shown = problems.len().min(20);
        panic!(
            "{}\n{s:?}\n{} problem(s), the first {shown}:\n  {}\nstats: {stats:?}",
            rerun(s),
            problems.len(),
            problems[..shown].join("\n  ")
        );
    }
}

// ---------------------------------------------------------------------------
// The tests: a bounded number of seeded cases per mode.

fn seeds(salt: u64) -> Vec<u64> {
    let cases = std::env::var("PANIC_INJECTION_CASES").ok().map(|v| {
        v.trim()
            .parse::<u64>()
            .expect("PANIC_INJECTION_CASES: a number")
    });
    match std::env::var("PANIC_INJECTION_SEED") {
        Ok(seed) => {
            let seed = seed.trim();
            let seed = match seed.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => seed.parse(),
            }
            .expect("PANIC_INJECTION_SEED: a number (decimal or 0x hex)");
            (0..cases.unwrap_or(1)).map(|i| seed + i).collect()
        }
        Err(_) => (0..cases.unwrap_or(DEFAULT_CASES))
            .map(|i| mix(BASE_SEED ^ salt.wrapping_mul(1 << 32) ^ i))
            .collect(),
    }
}

fn run_mode(mode: Mode, salt: u64) {
    for seed in seeds(salt) {
        run_case(Setup::new(seed, mode));
    }
}

#[test]
fn thread_drainer_blocking_handler() {
    run_mode(Mode::ThreadSync, 1);
}

#[test]
fn thread_drainer_async_handler() {
    run_mode(Mode::ThreadAsync, 2);
}

#[test]
fn drain_on_runtime_blocking_handler() {
    run_mode(Mode::RuntimeSync, 3);
}

#[test]
fn drain_on_runtime_async_handler() {
    run_mode(Mode::RuntimeAsync, 4);
}

// ---------------------------------------------------------------------------
// Reproductions of library bugs the suite found.

/// A result whose `Drop` panics.
struct Boom(u64);

impl Drop for Boom {
    fn drop(&mut self) {
        if self.0 == 1 && !thread::panicking() {
            panic!("injected drop panic of result 1");
        }
    }
}

/// LIBRARY BUG (found by this suite, in every mode; e.g. seed
/// 0x53cbe87b44f0d2de of `thread_drainer_blocking_handler`): the handler's
/// result for a fire-and-forget item (a `push`, no ticket) is dropped
/// inside `Batch::ok` (`handler::send` drops it when the origin has no
/// ticket), outside any containment. A panic of its `Drop` escapes into
/// the handler: the rest of the batch fails with `HandlerPanicked`, and the
/// drop is not counted in `drop_panics`. The same result for a ticket
/// dropped a moment earlier is dropped contained and counted
/// (`CompletionSlot::complete`). Expected: contained and counted, the other
/// items of the batch answered.
#[test]
fn a_result_for_a_pushed_item_panicking_in_drop_is_contained() {
    quiet_injected_panics();
    let batcher = Batcher::builder()
        .lanes(1)
        .max_batch(4)
        .handler_fn(|batch: &mut Batch<'_, u64, Boom>| {
            for i in 0..batch.len() {
                let x = batch.items()[i];
                batch.ok(i, Boom(x)).unwrap();
            }
            Ok(())
        })
        .build()
        .unwrap();
    let producer = batcher.producer();
    // Both items in one batch: nothing is taken while paused.
    batcher.pause();
    producer.push(1).unwrap();
    let ticket = producer.submit(2).unwrap();
    batcher.resume();
    let result = common::wait_ticket(ticket);
    drop(producer);
    let stats = common::spawn_bounded("shutdown", move || batcher.shutdown()).join();
    assert_eq!(stats.items_handled, 2);
    assert!(
        matches!(&result, Ok(Boom(2))),
        "the pushed item's result panicked in its drop; the submitted item in the same \
         batch must still be answered, got {:?}",
        result.as_ref().map(|b| b.0)
    );
    assert_eq!(stats.handler_panics, 0, "the handler itself did not panic");
    assert_eq!(
        stats.drop_panics, 1,
        "the panicking drop is contained and counted"
    );
}
