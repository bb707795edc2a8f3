//! A batcher whose data settings come from a TOML file, its handler from
//! code.
//!
//! Reads `examples/ringbatch.toml` (every setting at its default), or the
//! file given as the first argument, applies it with
//! `BatcherBuilder::with_config`, builds a batcher that sums `u64`s, and
//! prints the settings the batcher runs with. A key the file gets wrong is
//! reported with its name and line; a value out of range, as `build`
//! reports it.
//!
//! ```text
//! cargo run --example from_file --features serde [-- path/to/file.toml]
//! ```

use std::process::ExitCode;

use ringbatch::{Batch, Batcher, Settings};

fn main() -> ExitCode {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ringbatch.toml").to_owned()
    });
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = match Settings::from_toml_str(&text) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let built = Batcher::builder()
        .with_config(&settings)
        .handler_fn(|batch: &mut Batch<'_, u64, u64>| {
            let sum: u64 = batch.items().iter().sum();
            batch.ok_with(|_| sum);
            Ok(())
        })
        .build();
    let batcher = match built {
        Ok(batcher) => batcher,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{path}: {:#?}", batcher.config());

    let producer = batcher.producer();
    for item in 1..=1000 {
        if let Err(e) = producer.push(item) {
            eprintln!("push refused: {e}");
            return ExitCode::FAILURE;
        }
    }
    let ticket = producer.submit(0);
    drop(producer);
    if let Ok(ticket) = ticket {
        println!("the batch of the last item summed to {:?}", ticket.wait());
    }
    let stats = batcher.shutdown();
    println!(
        "{} items in {} batches ({} dropped)",
        stats.items_handled, stats.batches, stats.dropped
    );
    ExitCode::SUCCESS
}
