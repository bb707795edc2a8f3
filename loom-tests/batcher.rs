//! The whole batcher under loom: the builder's shared state, the real
//! drainer loop on a loom thread, real producers and tickets, and the real
//! `shutdown` (`BatcherBuilder::start_modelled` stands in for `build`,
//! whose std channel handshake with the drainer thread loom cannot run).

use loom::thread;

use crate::sync::{Arc, AtomicUsize, Ordering};
use crate::{Batch, Batcher, SubmitError, WaitStrategy};

/// A batcher of one lane of two slots whose handler answers `x + 1` and
/// counts the items it saw.
fn batcher(handled: &Arc<AtomicUsize>) -> Batcher<u8, u8> {
    let handled = Arc::clone(handled);
    Batcher::builder()
        .lanes(1)
        .capacity(2)
        .result_slots(2)
        .pool_size(2)
        .wait_strategy(WaitStrategy::Park)
        .handler_fn(move |batch: &mut Batch<'_, u8, u8>| {
            handled.fetch_add(batch.len(), Ordering::SeqCst);
            batch.ok_with(|&x| x + 1);
            Ok(())
        })
        .start_modelled()
}

/// A producer submits while the batcher shuts down: the submission is
/// refused with its item, or accepted and then handled with its result in
/// the ticket; the drainer exits and `shutdown` returns.
#[test]
fn a_submission_racing_shutdown_is_handled_or_refused_by_the_real_drainer() {
    // At the preemption bound of `bin/loom` (2): about 2,000 executions.
    loom::model(|| {
        let handled = Arc::new(AtomicUsize::new(0));
        let batcher = batcher(&handled);
        let producer = batcher.producer();
        let submitter = thread::spawn(move || match producer.submit(7) {
            Ok(ticket) => Some(ticket.wait()),
            Err(SubmitError::Closed(item)) => {
                assert_eq!(item, 7, "a refused submission gives its item back");
                None
            }
            Err(other) => panic!("expected acceptance or Closed, got {other:?}"),
        });
        let stats = batcher.shutdown();
        let outcome = submitter.join().unwrap();
        match outcome {
            Some(result) => {
                assert!(
                    matches!(result, Ok(8)),
                    "an accepted item is handled with its own result, got {result:?}"
                );
                assert_eq!(handled.load(Ordering::SeqCst), 1);
            }
            None => assert_eq!(handled.load(Ordering::SeqCst), 0),
        }
        assert_eq!(stats.items_handled as usize, handled.load(Ordering::SeqCst));
    });
}

/// A flush against the real drainer's park: an item pushed before the
/// flush is handled when `flush` returns, whether the drainer was asleep,
/// about to sleep or awake; then `shutdown` returns.
#[test]
fn a_flush_returns_after_the_real_drainer_handled_what_came_before() {
    loom::model(|| {
        let handled = Arc::new(AtomicUsize::new(0));
        let batcher = batcher(&handled);
        let producer = batcher.producer();
        let pusher = thread::spawn(move || producer.push(1).expect("room"));
        pusher.join().unwrap();
        batcher.flush();
        assert_eq!(
            handled.load(Ordering::SeqCst),
            1,
            "an item pushed before the flush is handled when it returns"
        );
        batcher.shutdown();
    });
}
