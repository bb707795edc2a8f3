//! Every invalid setting is a typed error naming the field and the reason;
//! nothing panics on bad configuration.

use ringbatch::{
    Batch, Batcher, BatcherBuilder, Config, ConfigError, Error, LaneError, MAX_CAPACITY,
};

fn builder() -> BatcherBuilder<u64, ()> {
    Batcher::builder().handler_fn(|batch: &mut Batch<'_, u64, ()>| {
        batch.complete_with(|_| Ok::<_, Error>(()));
        Ok(())
    })
}

fn error_of(builder: BatcherBuilder<u64, ()>) -> ConfigError {
    match builder.build() {
        Ok(_) => panic!("expected a configuration error"),
        Err(e) => e,
    }
}

#[test]
fn zero_values_are_refused_by_name() {
    for (builder, field) in [
        (builder().lanes(0), "lanes"),
        (builder().capacity(0), "capacity"),
        (builder().max_batch(0), "max_batch"),
        (builder().pool_size(0), "pool_size"),
        (builder().result_slots(0), "result_slots"),
    ] {
        let e = error_of(builder);
        assert_eq!(e, ConfigError::Zero { field });
        assert_eq!(e.field(), field);
        assert_eq!(e.to_string(), format!("{field} must be at least 1"));
    }
}

#[test]
fn sizes_must_be_powers_of_two() {
    assert_eq!(
        error_of(builder().capacity(1000)),
        ConfigError::NotPowerOfTwo {
            field: "capacity",
            value: 1000
        }
    );
    let e = error_of(builder().result_slots(48));
    assert_eq!(
        e,
        ConfigError::NotPowerOfTwo {
            field: "result_slots",
            value: 48
        }
    );
    assert!(e.to_string().contains("power of two"), "{e}");
}

#[test]
fn sizes_above_their_maximum_are_refused() {
    let e = error_of(builder().capacity(MAX_CAPACITY * 2));
    assert_eq!(
        e,
        ConfigError::TooLarge {
            field: "capacity",
            value: MAX_CAPACITY * 2,
            max: MAX_CAPACITY
        }
    );
    assert!(matches!(
        error_of(builder().lanes(ringbatch::MAX_LANES + 1)),
        ConfigError::TooLarge { field: "lanes", .. }
    ));
    assert!(matches!(
        error_of(builder().pool_size(1 << 20)),
        ConfigError::TooLarge {
            field: "pool_size",
            ..
        }
    ));
    // `Error::TooLarge` reports the byte limit as a `u32`.
    let above = u32::MAX as usize + 1;
    assert_eq!(
        error_of(builder().weigher(|_: &u64| 8).max_bytes(above)),
        ConfigError::TooLarge {
            field: "max_bytes",
            value: above,
            max: u32::MAX as usize
        }
    );
    assert!(
        builder()
            .weigher(|_: &u64| 8)
            .max_bytes(u32::MAX as usize)
            .build()
            .is_ok(),
        "a limit of exactly u32::MAX is accepted"
    );
}

#[test]
fn max_batch_above_capacity_is_refused() {
    let e = error_of(builder().capacity(64).max_batch(65));
    assert_eq!(
        e,
        ConfigError::MaxBatchAboveCapacity {
            max_batch: 65,
            capacity: 64
        }
    );
    assert_eq!(e.field(), "max_batch");
    // Unset, max_batch follows a capacity below its default.
    let batcher = builder().capacity(64).build().unwrap();
    assert_eq!(batcher.config().max_batch, 64);
}

#[test]
fn a_core_that_does_not_exist_is_refused() {
    let e = error_of(builder().pin_drainer(100_000));
    match &e {
        ConfigError::NoSuchCore { core, available } => {
            assert_eq!(*core, 100_000);
            assert!(!available.is_empty());
        }
        // Platforms without affinity support say so instead.
        ConfigError::PinningUnsupported { core } => assert_eq!(*core, 100_000),
        other => panic!("expected NoSuchCore, got {other:?}"),
    }
    assert_eq!(e.field(), "pin_drainer");
}

#[test]
fn pinning_to_an_available_core_works() {
    let Some(core) = core_affinity::get_core_ids().and_then(|ids| ids.first().map(|c| c.id)) else {
        return; // no affinity support here: covered by the test above
    };
    let batcher = builder().pin_drainer(core).build().unwrap();
    batcher.producer().push(1).unwrap();
    assert_eq!(batcher.shutdown().items_handled, 1);
}

#[test]
fn missing_handler_and_bad_thread_name_are_refused() {
    let e = match Batcher::<u64, ()>::builder().build() {
        Ok(_) => panic!("a batcher without a handler was built"),
        Err(e) => e,
    };
    assert_eq!(e, ConfigError::MissingHandler);
    assert_eq!(e.field(), "handler");
    assert!(matches!(
        error_of(builder().thread_name("bad\0name")),
        ConfigError::InvalidThreadName { .. }
    ));
}

#[test]
fn a_lane_that_does_not_exist_is_refused() {
    let batcher = builder().lanes(2).build().unwrap();
    assert_eq!(
        batcher.producer_on_lane(2).unwrap_err(),
        LaneError::NoSuchLane { lane: 2, lanes: 2 }
    );
    assert_eq!(batcher.producer_on_lane(1).unwrap().lane(), 1);
}

#[test]
fn a_whole_config_is_validated_too() {
    let mut config = Config::default();
    config.capacity = 3;
    assert_eq!(
        config.validate(),
        Err(ConfigError::NotPowerOfTwo {
            field: "capacity",
            value: 3
        })
    );
    assert_eq!(Config::default().validate(), Ok(()));
    assert!(matches!(
        error_of(builder().config(config)),
        ConfigError::NotPowerOfTwo { .. }
    ));
}

/// `.config(Config::default())` changes nothing: with an async handler the
/// pool still grows to fit `max_in_flight` (it failed with `PoolTooSmall`),
/// and `max_batch` still follows a smaller capacity.
#[cfg(feature = "tokio")]
#[test]
fn a_default_config_changes_nothing() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let batcher = Batcher::builder()
        .config(Config::default())
        .runtime(runtime.handle().clone())
        .async_handler_fn(|mut batch: ringbatch::AsyncBatch<u64, ()>| async move {
            batch.ok_with(|_| ());
            Ok(())
        })
        .build()
        .expect("the defaults with an async handler build, as without `.config`");
    assert!(batcher.config().pool_size > batcher.config().max_in_flight);
    drop(batcher);

    let mut config = Config::default();
    config.capacity = 8;
    let small = builder().config(config).build().expect("valid settings");
    assert_eq!(
        small.config().max_batch,
        8,
        "max_batch follows the capacity"
    );

    let mut config = Config::default();
    config.pool_size = 3;
    let explicit = builder().config(config).build().expect("valid settings");
    assert_eq!(explicit.config().pool_size, 3, "a pool size set is kept");
}
