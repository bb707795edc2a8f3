//! A counting global allocator for the allocation tests: each test binary
//! that declares `mod counting;` counts every allocation of the process.
//!
//! Those binaries run without the libtest harness (`harness = false` in
//! `Cargo.toml`): the harness's own thread allocates at times of its
//! choosing (its channel's first blocking wait, its 60-second warnings),
//! and on a loaded machine that can land in a counted window. Without it,
//! the only threads are the test's and the batcher's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; it only
// counts allocations and reallocations on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations (and reallocations) made so far by the whole process.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::SeqCst)
}

/// Runs `test` as the harness would, unless the command line names tests
/// and none of them matches `name` (`cargo test <filter>`); `--list` lists it.
pub fn run(name: &str, test: fn()) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{name}: test");
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
        println!("test {name} ... filtered out");
        return;
    }
    test();
    println!("test {name} ... ok");
}

/// Builds the calling thread's waker, which a ticket makes the first time a
/// wait of this thread goes as far as parking (one allocation per thread).
///
/// A slow handler cannot force that: on a loaded machine the waiter's yield
/// phase can outlast any sleep. Here the handler holds the batch until the
/// ticket has timed out, and a `Park` waiter registers its waker before its
/// first timed sleep, so the waker exists when this returns.
pub fn build_thread_waker() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    let gate = Arc::new(AtomicBool::new(false));
    let held = Arc::clone(&gate);
    let batcher = ringbatch::Batcher::builder()
        .wait_strategy(ringbatch::WaitStrategy::Park)
        .handler_fn(move |batch: &mut ringbatch::Batch<'_, u8, u8>| {
            while !held.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            batch.ok_with(|&x| x);
            Ok(())
        })
        .build()
        .expect("valid settings");
    let mut ticket = batcher.producer().submit(7).expect("accepted");
    assert!(
        ticket.wait_timeout(Duration::from_millis(1)).is_none(),
        "the handler holds the batch, so the wait can only time out"
    );
    gate.store(true, Ordering::Release);
    assert_eq!(ticket.wait().expect("handled"), 7);
    batcher.shutdown();
}

/// The mixed steady-state workload of the allocation tests: `n` submissions
/// waited for one by one, `n` pushes, and `n / 16` slices of 16 submitted
/// with tickets into a reused vector. The handler answers `x` with `x + 1`.
#[allow(dead_code)]
pub fn workload(
    producer: &ringbatch::Producer<u64, u64>,
    n: u64,
    tickets: &mut Vec<ringbatch::Ticket<u64>>,
) {
    let slice: [u64; 16] = core::array::from_fn(|i| i as u64);
    for i in 0..n {
        let ticket = producer.submit(i).expect("accepted");
        assert_eq!(ticket.wait().expect("handled"), i + 1);
        producer.push(i).expect("accepted");
    }
    for _ in 0..n / 16 {
        producer.submit_many(&slice, tickets).expect("accepted");
        for (i, ticket) in tickets.drain(..).enumerate() {
            assert_eq!(ticket.wait().expect("handled"), i as u64 + 1);
        }
        producer.push_slice(&slice).expect("accepted");
    }
}
