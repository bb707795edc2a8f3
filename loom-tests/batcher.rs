//! The whole batcher under loom: the builder's shared state, the real
//! drainer loop on a loom thread, real producers and tickets, and the real
//! `shutdown` (`BatcherBuilder::start_modelled` stands in for `build`,
//! whose std channel handshake with the drainer thread loom cannot run).

use loom::thread;

use crate::sync::{Arc, AtomicUsize, Ordering};
use crate::{Batch, Batcher, Error, Producer, SubmitError, WaitStrategy};

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

/// Submits 7 and waits for its result; `None` if it was refused as closed
/// (with its item given back).
fn submit_seven(producer: &Producer<u8, u8>) -> Option<Result<u8, Error>> {
    match producer.submit(7) {
        Ok(ticket) => Some(ticket.wait()),
        Err(SubmitError::Closed(item)) => {
            assert_eq!(item, 7, "a refused submission gives its item back");
            None
        }
        Err(other) => panic!("expected acceptance or Closed, got {other:?}"),
    }
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
        let submitter = thread::spawn(move || submit_seven(&producer));
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

/// `shutdown_timeout` past its deadline at once, racing a submission: the
/// item is refused with its item, handled (its ticket has the result), or
/// given back (in the returned items, its ticket failed with `Closed`):
/// exactly one of the three.
#[test]
fn shutdown_past_its_deadline_gives_back_or_handles_each_item_once() {
    loom::model(|| {
        let handled = Arc::new(AtomicUsize::new(0));
        let batcher = batcher(&handled);
        let producer = batcher.producer();
        let submitter = thread::spawn(move || submit_seven(&producer));
        let (stats, given_back) = batcher.shutdown_timeout(std::time::Duration::ZERO);
        let outcome = submitter.join().unwrap();
        let handled = handled.load(Ordering::SeqCst);
        assert_eq!(stats.items_handled as usize, handled);
        match outcome {
            None => assert!(handled == 0 && given_back.is_empty(), "refused, yet seen"),
            Some(Ok(result)) => {
                assert_eq!(result, 8, "its own result");
                assert!(handled == 1 && given_back.is_empty(), "handled once only");
            }
            Some(Err(error)) => {
                assert!(matches!(error, Error::Closed), "got {error:?}");
                assert_eq!(given_back, [7], "a failed ticket's item is given back");
                assert_eq!(handled, 0);
            }
        }
    });
}
