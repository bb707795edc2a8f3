//! The sink's errors, and how a database error is classified (retryable,
//! permanent, the connection lost).

#[cfg(doc)]
use super::{PostgresSink, PostgresSinkBuilder};
#[cfg(doc)]
use crate::RetryPolicy;
use core::fmt;
use core::time::Duration;
use std::sync::Arc;

use tokio_postgres::error::SqlState;

/// Why a [`PostgresSinkBuilder`] could not build.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PostgresConfigError {
    /// No [`key`](PostgresSinkBuilder::key) column.
    NoKey,
    /// No [`returning`](PostgresSinkBuilder::returning).
    NoReturning,
    /// A name or type that is empty (which one).
    Empty(&'static str),
}

impl fmt::Display for PostgresConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostgresConfigError::NoKey => {
                f.write_str("the sink needs a key column (a column with a unique constraint)")
            }
            PostgresConfigError::NoReturning => {
                f.write_str("the sink needs `returning` (what each item resolves to)")
            }
            PostgresConfigError::Empty(what) => write!(f, "empty {what}"),
        }
    }
}

impl std::error::Error for PostgresConfigError {}

/// Why an item written by a [`PostgresSink`] failed: its ticket's
/// [`Error::Failed`](crate::Error::Failed) holds one (downcast
/// [`Error::handler_error`](crate::Error::handler_error) to it).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PostgresSinkError {
    /// The database rejected this row (a constraint violation, a value the
    /// column cannot hold); the other rows of its batch were written.
    Rejected(Arc<tokio_postgres::Error>),
    /// The statement failed for a reason not tied to any row (a missing
    /// table, a type mismatch between a column and its values): the rows it
    /// carried all fail with it.
    Statement(Arc<tokio_postgres::Error>),
    /// The server could not be reached, or kept losing the connection, for
    /// every attempt the [`RetryPolicy`] allowed. The row was not written
    /// (or, if a lost commit did write it, a later submission with the same
    /// key finds it).
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: Arc<tokio_postgres::Error>,
    },
    /// Every attempt the [`RetryPolicy`] allowed timed out (see
    /// [`attempt_timeout`](PostgresSinkBuilder::attempt_timeout)).
    TimedOut {
        /// Attempts made.
        attempts: u32,
        /// The time each attempt had.
        timeout: Duration,
    },
    /// The row was written, but decoding its `RETURNING` values failed.
    Decode(Arc<tokio_postgres::Error>),
    /// Another transaction kept inserting this row's key while its statement
    /// ran, so no statement found the row it names (after as many rounds as
    /// the retry settings' `max_retries`).
    Unresolved,
    /// (feature `durable`) The sink's key is the store's item id
    /// ([`store_key`](PostgresSinkBuilder::store_key)) but the item has
    /// none: the batcher has no durable store, or the store could not take
    /// the batch ([`AsyncBatch::store_error`](crate::AsyncBatch::store_error)).
    /// The row was not written.
    #[cfg(feature = "durable")]
    NoStoreId,
}

impl PostgresSinkError {
    /// The database's own error (its SQLSTATE, message, detail, constraint),
    /// when the server reported one.
    pub fn db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        match self {
            PostgresSinkError::Rejected(e)
            | PostgresSinkError::Statement(e)
            | PostgresSinkError::Decode(e)
            | PostgresSinkError::Unavailable { last: e, .. } => e.as_db_error(),
            PostgresSinkError::TimedOut { .. } | PostgresSinkError::Unresolved => None,
            #[cfg(feature = "durable")]
            PostgresSinkError::NoStoreId => None,
        }
    }

    /// The SQLSTATE the database reported, if any.
    pub fn code(&self) -> Option<&SqlState> {
        self.db_error().map(|e| e.code())
    }
}

impl fmt::Display for PostgresSinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostgresSinkError::Rejected(e) => write!(f, "the database rejected the row: {e}"),
            PostgresSinkError::Statement(e) => write!(f, "the insert statement failed: {e}"),
            PostgresSinkError::Unavailable { attempts, last } => write!(
                f,
                "the database was unavailable for {attempts} attempts; the last failed with: {last}"
            ),
            PostgresSinkError::TimedOut { attempts, timeout } => write!(
                f,
                "{attempts} attempts to write the row each timed out after {timeout:?}"
            ),
            PostgresSinkError::Decode(e) => {
                write!(f, "the row was written but its result could not be decoded: {e}")
            }
            PostgresSinkError::Unresolved => f.write_str(
                "the row's key was being inserted concurrently by another transaction on every attempt",
            ),
            #[cfg(feature = "durable")]
            PostgresSinkError::NoStoreId => f.write_str(
                "the key is the durable store's item id, and the item has none (no store, or the store refused its batch)",
            ),
        }
    }
}

impl std::error::Error for PostgresSinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PostgresSinkError::Rejected(e)
            | PostgresSinkError::Statement(e)
            | PostgresSinkError::Decode(e)
            | PostgresSinkError::Unavailable { last: e, .. } => Some(&**e),
            PostgresSinkError::TimedOut { .. } | PostgresSinkError::Unresolved => None,
            #[cfg(feature = "durable")]
            PostgresSinkError::NoStoreId => None,
        }
    }
}

/// How an attempt failed, as the sink sees it.
#[derive(Debug)]
pub(super) enum Failure {
    /// Some rows are at fault: split and retry the halves.
    Rows(tokio_postgres::Error),
    /// Not the rows' fault, and a retry will not help.
    Statement(tokio_postgres::Error),
    /// The connection, the server or a transient conflict: retry.
    Retryable(tokio_postgres::Error),
    /// The attempt outlived the attempt timeout: retry.
    TimedOut(Duration),
    /// Retries ran out.
    Exhausted { attempts: u32, last: Box<Failure> },
}

impl Failure {
    pub(super) fn is_retryable(&self) -> bool {
        matches!(self, Failure::Retryable(_) | Failure::TimedOut(_))
    }

    pub(super) fn into_error(self) -> PostgresSinkError {
        match self {
            Failure::Rows(e) => PostgresSinkError::Rejected(Arc::new(e)),
            Failure::Statement(e) => PostgresSinkError::Statement(Arc::new(e)),
            Failure::Retryable(e) => PostgresSinkError::Unavailable {
                attempts: 1,
                last: Arc::new(e),
            },
            Failure::TimedOut(timeout) => PostgresSinkError::TimedOut {
                attempts: 1,
                timeout,
            },
            Failure::Exhausted { attempts, last } => match *last {
                Failure::TimedOut(timeout) => PostgresSinkError::TimedOut { attempts, timeout },
                last => match last.into_error() {
                    PostgresSinkError::Unavailable { last, .. } => {
                        PostgresSinkError::Unavailable { attempts, last }
                    }
                    other => other,
                },
            },
        }
    }
}

/// SQLSTATEs worth a retry: the server going away or refusing connections
/// for now, and conflicts between transactions.
pub(super) const RETRYABLE: &[SqlState] = &[
    SqlState::ADMIN_SHUTDOWN,
    SqlState::CRASH_SHUTDOWN,
    SqlState::CANNOT_CONNECT_NOW,
    SqlState::TOO_MANY_CONNECTIONS,
    SqlState::T_R_SERIALIZATION_FAILURE,
    SqlState::T_R_DEADLOCK_DETECTED,
    SqlState::LOCK_NOT_AVAILABLE,
    SqlState::READ_ONLY_SQL_TRANSACTION,
];

/// Sorts an error from an attempt; `closed` says whether its connection is
/// gone.
pub(super) fn classify(error: tokio_postgres::Error, closed: bool) -> Failure {
    if error.is_closed() || closed {
        return Failure::Retryable(error);
    }
    let Some(code) = error.code() else {
        // Not from the server: an I/O error is a lost connection; a type
        // that does not fit its column fails every row alike; any other
        // (a value that could not be encoded) is the row's.
        let source = std::error::Error::source(&error);
        if source.is_some_and(|s| s.is::<std::io::Error>()) {
            return Failure::Retryable(error);
        }
        if source.is_some_and(|s| s.is::<tokio_postgres::types::WrongType>()) {
            return Failure::Statement(error);
        }
        return Failure::Rows(error);
    };
    let class = &code.code()[..2];
    if class == "08" || RETRYABLE.contains(code) {
        Failure::Retryable(error)
    } else if class == "22" || class == "23" {
        Failure::Rows(error)
    } else {
        Failure::Statement(error)
    }
}
