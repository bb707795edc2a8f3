//! The builder's batch shaping settings: bytes, linger, priorities, key
//! groups, conflation, deadlines, adaptive sizing.

use std::time::Duration;

use crate::batcher::BatcherBuilder;
use crate::shape::{Adaptive, GroupLimits, KeyPolicy, Linger, Oversize};

impl<T: Send + 'static, R: Send + 'static> BatcherBuilder<T, R> {
    /// A byte limit per batch, measured by the [`weigher`](Self::weigher)
    /// (which must be set too): a batch is dispatched before an item would
    /// take it over the limit. An item heavier than the limit on its own
    /// follows [`oversize`](Self::oversize). Default: 1 MiB once a weigher is
    /// set, no limit otherwise. At most `u32::MAX` (4 GiB): `build` refuses
    /// more with [`ConfigError::TooLarge`](crate::ConfigError::TooLarge) (field `"max_bytes"`).
    #[must_use = "a builder does nothing until it is built"]
    pub fn max_bytes(mut self, limit: usize) -> Self {
        self.shaping.max_bytes = Some(limit);
        self
    }

    /// A flush threshold on the bytes staged across every group and class
    /// (the staging area's memory), beside the per-batch
    /// [`max_bytes`](Self::max_bytes): once the staged items weigh `limit`
    /// or more, a batch goes at once (reason
    /// [`DispatchReason::Bytes`](crate::DispatchReason::Bytes)), from the
    /// heaviest group when items are grouped, until the staged weight is
    /// under `limit` again. Needs a [`weigher`](Self::weigher); `build`
    /// refuses 0 with [`ConfigError::Zero`](crate::ConfigError::Zero) (field
    /// `"max_staged_bytes"`). Default: none.
    #[must_use = "a builder does nothing until it is built"]
    pub fn max_staged_bytes(mut self, limit: usize) -> Self {
        self.shaping.max_staged_bytes = Some(limit);
        self
    }

    /// How many bytes an item adds to its batch: what the sink will really
    /// send (its encoded size). Called once per item, on the drainer.
    ///
    /// ```
    /// use ringbatch::{Batch, Batcher, DispatchReason};
    ///
    /// let batcher = Batcher::builder()
    ///     .weigher(|line: &String| line.len())
    ///     .max_bytes(64)
    ///     .linger(ringbatch::Linger::Fixed(std::time::Duration::from_secs(5)))
    ///     .handler_fn(|batch: &mut Batch<'_, String, ()>| {
    ///         assert!(batch.iter().map(String::len).sum::<usize>() <= 64);
    ///         batch.ok_with(|_| ());
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let producer = batcher.producer();
    /// for _ in 0..4 {
    ///     producer.push("x".repeat(30)).unwrap();
    /// }
    /// let stats = batcher.shutdown();
    /// assert!(stats.batches >= 2, "two 30-byte items at most per batch");
    /// ```
    #[must_use = "a builder does nothing until it is built"]
    pub fn weigher(mut self, weigher: impl Fn(&T) -> usize + Send + 'static) -> Self {
        self.shaping.weigher = Some(Box::new(weigher));
        self
    }

    /// What happens to an item heavier than `max_bytes` on its own
    /// (default [`Oversize::Fail`]: its ticket fails with
    /// [`Error::TooLarge`](crate::Error::TooLarge)).
    #[must_use = "a builder does nothing until it is built"]
    pub fn oversize(mut self, oversize: Oversize) -> Self {
        self.shaping.oversize = oversize;
        self
    }

    /// How long a batch may wait for more items (default [`Linger::None`],
    /// natural batching).
    #[must_use = "a builder does nothing until it is built"]
    pub fn linger(mut self, linger: Linger) -> Self {
        self.shaping.linger = linger;
        self
    }

    /// The shortest time between the starts of two batches (a flush,
    /// shutdown or Critical item does not wait for it).
    #[must_use = "a builder does nothing until it is built"]
    pub fn min_interval(mut self, interval: Duration) -> Self {
        self.shaping.min_interval = Some(interval);
        self
    }

    /// Priority classes: each lane gets one ring per [`Priority`](crate::Priority), and the
    /// drainer takes higher classes first. Producers pick a class with
    /// [`Batcher::producer_with_priority`](crate::Batcher::producer_with_priority); plain producers are `Normal`.
    #[must_use = "a builder does nothing until it is built"]
    pub fn priorities(mut self, on: bool) -> Self {
        self.shaping.priorities = on;
        self
    }

    /// With priority classes: a lower class whose oldest staged item has
    /// waited this long is taken before higher classes (default 10 ms).
    #[must_use = "a builder does nothing until it is built"]
    pub fn starvation_age(mut self, age: Duration) -> Self {
        self.shaping.starvation_age = age;
        self
    }

    /// Key groups: every batch holds items of a single key (and class).
    /// Each group follows its [`group_limits`](Self::group_limits); the
    /// number of groups open at once is bounded by
    /// [`max_open_groups`](Self::max_open_groups) (when a new key finds no
    /// free group, the group with the oldest item is dispatched first).
    #[must_use = "a builder does nothing until it is built"]
    pub fn group_by<K, F>(mut self, key: F) -> Self
    where
        T: 'static,
        K: core::hash::Hash + Eq,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        self.shaping.group = Some(KeyPolicy::new(key));
        self
    }

    /// The limits of each key group, from an item of the group (called once
    /// when the group opens).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ringbatch::{Batch, Batcher, GroupLimits, Linger};
    ///
    /// #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    /// enum Op { Add, Get, Pin, PubSub, Dht }
    ///
    /// let batcher = Batcher::builder()
    ///     .max_batch(100)
    ///     .linger(Linger::Fixed(Duration::from_millis(5)))
    ///     .group_by(|op: &(Op, u64)| op.0)
    ///     .group_limits(|op: &(Op, u64)| match op.0 {
    ///         Op::Add => GroupLimits::share(0.25),
    ///         Op::Get => GroupLimits::share(0.5),
    ///         Op::Pin => GroupLimits::share(0.33),
    ///         Op::PubSub | Op::Dht => GroupLimits::immediate(),
    ///     })
    ///     .handler_fn(|batch: &mut Batch<'_, (Op, u64), ()>| {
    ///         let op = batch.items()[0].0;
    ///         assert!(batch.iter().all(|item| item.0 == op), "one key per batch");
    ///         batch.ok_with(|_| ());
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// batcher.producer().submit((Op::Dht, 1)).unwrap().wait().unwrap();
    /// ```
    #[must_use = "a builder does nothing until it is built"]
    pub fn group_limits(mut self, limits: impl Fn(&T) -> GroupLimits + Send + 'static) -> Self {
        self.shaping.group_limits = Some(Box::new(limits));
        self
    }

    /// The most key groups open at once (default 64).
    #[must_use = "a builder does nothing until it is built"]
    pub fn max_open_groups(mut self, groups: usize) -> Self {
        self.shaping.max_open_groups = groups;
        self
    }

    /// Conflation: within a batch only the latest item per key is kept, in
    /// the order of each key's first arrival; a replaced item's ticket
    /// fails with [`Error::Superseded`](crate::Error::Superseded) and is counted in
    /// [`Stats::superseded`](crate::Stats::superseded).
    ///
    /// "Latest" is the order the drainer takes items in: for one producer
    /// in one class, the order of submission. Items of different lanes or
    /// classes have no common order (the drainer takes higher classes first
    /// in each sweep), so a key updated from several producers or classes
    /// keeps the one taken last; submit each key from one producer and class
    /// where the latest must win.
    ///
    /// ```
    /// use ringbatch::{Batch, Batcher, Linger};
    /// use std::time::Duration;
    ///
    /// // (symbol, price): the sink wants the latest price per symbol.
    /// let batcher = Batcher::builder()
    ///     .conflate_by(|quote: &(&str, u32)| quote.0)
    ///     .linger(Linger::Fixed(Duration::from_secs(5)))
    ///     .handler_fn(|batch: &mut Batch<'_, (&'static str, u32), ()>| {
    ///         assert_eq!(batch.items(), &[("AAPL", 3), ("MSFT", 2)]);
    ///         batch.ok_with(|_| ());
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let producer = batcher.producer();
    /// for quote in [("AAPL", 1), ("MSFT", 2), ("AAPL", 3)] {
    ///     producer.push(quote).unwrap();
    /// }
    /// batcher.flush();
    /// assert_eq!(batcher.stats().superseded, 1);
    /// ```
    #[must_use = "a builder does nothing until it is built"]
    pub fn conflate_by<K, F>(mut self, key: F) -> Self
    where
        T: 'static,
        K: core::hash::Hash + Eq,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        self.shaping.conflate = Some(KeyPolicy::new(key));
        self
    }

    /// Per-item deadlines ([`Producer::submit_with_deadline`](crate::Producer::submit_with_deadline)): producers
    /// stamp each item's expiry (one store per item), and expired items
    /// never reach the handler.
    #[must_use = "a builder does nothing until it is built"]
    pub fn deadlines(mut self, on: bool) -> Self {
        self.shaping.deadlines = on;
        self
    }

    /// The longest an item may wait between its submission and its
    /// dispatch; older items never reach the handler, their tickets fail
    /// with [`Error::Expired`](crate::Error::Expired). Turns on [`deadlines`](Self::deadlines), and
    /// producers read the clock once per item.
    #[must_use = "a builder does nothing until it is built"]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.shaping.max_age = Some(age);
        self
    }

    /// Adaptive batch sizing; see [`Adaptive`].
    #[must_use = "a builder does nothing until it is built"]
    pub fn adaptive(mut self, adaptive: Adaptive) -> Self {
        self.shaping.adaptive = Some(adaptive);
        self
    }

    /// Items the drainer's staging area holds (with shaping policies on):
    /// default four times `max_batch`. When it is full the drainer stops
    /// taking items from the lanes, so producers feel backpressure.
    #[must_use = "a builder does nothing until it is built"]
    pub fn staging(mut self, items: usize) -> Self {
        self.shaping.staging = Some(items);
        self
    }
}
