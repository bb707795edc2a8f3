//! The sink's own counters.

#[cfg(doc)]
use super::PostgresSink;
use core::fmt;
use std::sync::Arc;

use crate::sync::{AtomicU64, Ordering};

/// A handle on a [`PostgresSink`]'s counters (cheap to clone); see
/// [`PostgresSink::metrics`].
#[derive(Clone, Default)]
pub struct PostgresMetrics {
    pub(super) inner: Arc<Counters>,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) batches: AtomicU64,
    pub(super) statements: AtomicU64,
    pub(super) rows_inserted: AtomicU64,
    pub(super) rows_existing: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) connects: AtomicU64,
}

/// A snapshot of a [`PostgresSink`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresStats {
    /// Batches handled.
    pub batches: u64,
    /// Insert statements sent (more than `batches` when rejected rows split
    /// batches or failed attempts were retried).
    pub statements: u64,
    /// Rows inserted.
    pub rows_inserted: u64,
    /// Items resolved to a row that was already there (written by an
    /// attempt whose commit was not acknowledged, or an earlier item with
    /// the same key).
    pub rows_existing: u64,
    /// Items whose rows the database rejected.
    pub rejected: u64,
    /// Attempts retried after a lost connection, a timeout or a transient
    /// error.
    pub retries: u64,
    /// Connections opened.
    pub connects: u64,
}

impl PostgresMetrics {
    /// The counters now.
    pub fn get(&self) -> PostgresStats {
        let c = &*self.inner;
        // Relaxed: statistics, ordered with nothing.
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PostgresStats {
            batches: load(&c.batches),
            statements: load(&c.statements),
            rows_inserted: load(&c.rows_inserted),
            rows_existing: load(&c.rows_existing),
            rejected: load(&c.rejected),
            retries: load(&c.retries),
            connects: load(&c.connects),
        }
    }
}

impl fmt::Debug for PostgresMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}
