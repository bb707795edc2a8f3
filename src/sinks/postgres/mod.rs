//! A PostgreSQL sink: each batch is inserted with one statement, and each
//! item's ticket resolves to its own row's result.
//!
//! # How a batch is written
//!
//! [`PostgresSink`] turns a batch into one array per column (the item-to-row
//! mapping is a closure per column) and sends them, in a transaction, as
//! the parameters of one prepared statement:
//!
//! ```sql
//! WITH rb_input AS (
//!     SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[])
//!         WITH ORDINALITY AS rb_input(rb_c1, rb_c2, rb_c3, rb_ord)
//! ), rb_inserted AS (
//!     INSERT INTO trades (account, symbol, order_key)
//!     SELECT rb_c1, rb_c2, rb_c3 FROM rb_input ORDER BY rb_ord
//!     ON CONFLICT (order_key) DO NOTHING
//!     RETURNING order_key AS rb_key, id
//! )
//! SELECT rb_inserted.id, rb_input.rb_ord, true AS rb_new
//!     FROM rb_input JOIN rb_inserted ON rb_inserted.rb_key = rb_input.rb_c3
//! UNION ALL
//! SELECT rb_existing.id, rb_input.rb_ord, false
//!     FROM rb_input JOIN trades AS rb_existing ON rb_existing.order_key = rb_input.rb_c3
//! ```
//!
//! Every result row carries the ordinal of its input row, so each ticket
//! gets its own row's `RETURNING` values whatever order the database
//! returns them in.
//!
//! # The key, and exactly once
//!
//! Every row has a **key**: a column with a unique constraint whose value the
//! item determines (a client order id, an event id; not a value the database
//! generates). It is what makes a retry safe. A batch whose connection is
//! lost may or may not have committed: the client cannot tell a commit lost
//! on the way back from one that never happened. The sink retries it, and
//! the retry's `ON CONFLICT (key) DO NOTHING` skips the rows that already
//! landed while the second branch of the query reads them back, so their
//! tickets still get the values the first attempt wrote (the generated id of
//! the row that exists, not a new one). A row is thus written once however
//! many times its batch is sent, and every ticket resolves to the one row
//! that holds its key.
//!
//! Both branches read from one snapshot, taken when the statement starts,
//! so a row is found by one branch or the other, never both. A row whose
//! key another transaction inserted and committed while the statement ran
//! is found by neither: the sink sends such rows again, in a new statement
//! that sees them.
//!
//! Items with the same key are the same row: they all resolve to it. Rows
//! written before with the same key (by anyone) are taken as this item's
//! row.
//!
//! With the batcher's durable store (feature `durable`), the key can be the
//! store's item id ([`store_key`](PostgresSinkBuilder::store_key)): the
//! replay after a restart or a crash then sends a row the sink already
//! wrote with the key it was written with, and the sink finds it instead of
//! writing it again.
//!
//! # Failures
//!
//! - **Rows the database rejects** (SQLSTATE classes 22, data exception, and
//!   23, integrity constraint violation: a check constraint, a unique column
//!   other than the key, a value the column cannot hold): the statement
//!   fails as a whole, so the sink splits the rows in halves and inserts each
//!   half in its own transaction, recursively, until the rejected rows stand
//!   alone. Only their tickets fail, each with the database's error
//!   ([`PostgresSinkError::Rejected`]); every other row lands. `k` bad rows
//!   among `n` cost about `2 k log2(n)` extra statements.
//! - **A lost connection** (or an attempt that outlives
//!   [`attempt_timeout`](PostgresSinkBuilder::attempt_timeout), a server
//!   shutting down, a serialization failure or deadlock, too many
//!   connections): the connection is dropped and the rows are sent again on
//!   a new one, after a pause, under the sink's [`RetryPolicy`]. When the
//!   retries run out their tickets fail with
//!   [`PostgresSinkError::Unavailable`].
//! - **Anything else** (a missing table, a column type that does not match
//!   its values): every row of the statement fails with
//!   [`PostgresSinkError::Statement`], at once.
//!
//! # Connections
//!
//! The sink keeps a small pool of connections: each batch in flight (up to
//! the batcher's `max_in_flight`) takes one, so batches never share a
//! transaction. Connections are made on demand with
//! [`tokio_postgres::NoTls`]: for TLS, put a TLS-terminating proxy (or a
//! unix socket) in front. The connection task runs on the runtime of the
//! batch that opened it.

mod builder;
mod error;
mod metrics;

pub use builder::PostgresSinkBuilder;
pub use error::{PostgresConfigError, PostgresSinkError};
pub use metrics::{PostgresMetrics, PostgresStats};

use core::fmt;
use core::marker::PhantomData;
use core::time::Duration;
use std::sync::{Arc, Mutex};

pub use tokio_postgres;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use crate::RetryPolicy;
use crate::error::{Error, SharedError};
use crate::handler::BatchError;
use crate::sinks::postgres::error::classify;
use crate::sync::Ordering;
use crate::{AsyncBatch, AsyncHandler};
use error::Failure;

/// Decodes a result row into an item's result.
type Decode<R> = Box<dyn Fn(&Row) -> Result<R, tokio_postgres::Error> + Send + Sync>;

/// What a batch gives the columns: its items and (feature `durable`) their
/// ids in the batcher's store.
struct Source<'a, T> {
    items: &'a [T],
    #[cfg(feature = "durable")]
    ids: &'a [crate::durable::ItemId],
}

/// One column of the table: its name, its SQL type and how an item gives
/// its value.
trait ColumnSpec<T>: Send + Sync {
    fn name(&self) -> &str;
    fn sql_type(&self) -> &str;
    /// The values of `rows` (indexes into the batch), as one array parameter.
    fn array(&self, source: &Source<'_, T>, rows: &[usize]) -> Box<dyn ToSql + Send + Sync>;
}

struct Column<F, V> {
    name: String,
    sql_type: String,
    value: F,
    _value: PhantomData<fn() -> V>,
}

impl<T, F, V> ColumnSpec<T> for Column<F, V>
where
    F: Fn(&T) -> V + Send + Sync,
    V: ToSql + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn sql_type(&self) -> &str {
        &self.sql_type
    }

    fn array(&self, source: &Source<'_, T>, rows: &[usize]) -> Box<dyn ToSql + Send + Sync> {
        let values: Vec<V> = rows
            .iter()
            .map(|&i| (self.value)(&source.items[i]))
            .collect();
        Box::new(values)
    }
}

/// (feature `durable`) The key column made from the store's item ids:
/// `{prefix}-{item id}` as `text`.
#[cfg(feature = "durable")]
struct StoreKey {
    name: String,
    prefix: String,
}

#[cfg(feature = "durable")]
impl<T> ColumnSpec<T> for StoreKey {
    fn name(&self) -> &str {
        &self.name
    }

    fn sql_type(&self) -> &str {
        "text"
    }

    fn array(&self, source: &Source<'_, T>, rows: &[usize]) -> Box<dyn ToSql + Send + Sync> {
        // `write` fails the rows without an id before any statement.
        let values: Vec<Option<String>> = rows
            .iter()
            .map(|&i| {
                let id = source.ids.get(i)?;
                Some(format!("{}-{id}", self.prefix))
            })
            .collect();
        Box::new(values)
    }
}

/// An [`AsyncHandler`] that inserts each batch into a PostgreSQL table with
/// one statement in a transaction and answers each item with its row's
/// `RETURNING` values; see the [module docs](self) for the statement, the
/// key that makes retries exactly-once, and how failures are split.
///
/// # Examples
///
/// ```no_run
/// use ringbatch::Batcher;
/// use ringbatch::sinks::postgres::PostgresSink;
///
/// struct Trade {
///     order_id: i64,
///     symbol: String,
///     qty: i64,
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // CREATE TABLE trades (id bigserial PRIMARY KEY, order_id int8 UNIQUE NOT NULL,
/// //                      symbol text NOT NULL, qty int8 NOT NULL CHECK (qty > 0));
/// let sink = PostgresSink::builder("host=127.0.0.1 user=postgres".parse()?, "trades")
///     .key("order_id", "int8", |t: &Trade| t.order_id)
///     .column("symbol", "text", |t: &Trade| t.symbol.clone())
///     .column("qty", "int8", |t: &Trade| t.qty)
///     .returning(["id"], |row| row.try_get::<_, i64>("id"))
///     .build()?;
/// let batcher = Batcher::builder().max_batch(1024).async_handler(sink).build()?;
/// let mut producer = batcher.async_producer();
/// let trade = Trade { order_id: 7, symbol: "ABC".into(), qty: 100 };
/// let id: i64 = producer.call(trade).await?;
/// println!("trade 7 is row {id}");
/// batcher.shutdown_async().await;
/// # Ok(())
/// # }
/// ```
pub struct PostgresSink<T, R> {
    config: Config,
    columns: Vec<Box<dyn ColumnSpec<T>>>,
    decode: Decode<R>,
    /// Number of `RETURNING` columns (the ordinal follows them).
    returning: usize,
    sql: String,
    retry: RetryPolicy,
    attempt_timeout: Duration,
    /// Idle connections, each with the statement prepared on it.
    pool: Mutex<Vec<Connection>>,
    metrics: PostgresMetrics,
    /// (feature `durable`) Whether the key is the store's item id.
    #[cfg(feature = "durable")]
    store_key: bool,
}

/// A connection and the insert statement prepared on it.
struct Connection {
    client: Client,
    insert: Statement,
}

impl<T: Send + 'static, R: Send + 'static> PostgresSink<T, R> {
    /// A builder for a sink writing to `table` (as written in SQL: `trades`,
    /// `market.trades`, `"Trades"`) through connections made from `config`
    /// (parse one from a URL or a key-value string:
    /// `"postgres://user@host:5432/db".parse()?`).
    pub fn builder(config: Config, table: impl Into<String>) -> PostgresSinkBuilder<T, R> {
        PostgresSinkBuilder {
            config,
            table: table.into(),
            columns: Vec::new(),
            key: None,
            returning: None,
            retry: super::default_retry_policy(),
            attempt_timeout: Duration::from_secs(30),
            #[cfg(feature = "durable")]
            store_key: false,
        }
    }
}

impl<T, R> PostgresSink<T, R> {
    /// A handle on the sink's counters, to keep before the sink moves into
    /// the batcher.
    pub fn metrics(&self) -> PostgresMetrics {
        self.metrics.clone()
    }

    /// The statement each batch runs (for logs and `EXPLAIN`).
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// One array parameter per column, for `rows` of the batch.
    fn params(&self, source: &Source<'_, T>, rows: &[usize]) -> Vec<Box<dyn ToSql + Send + Sync>> {
        self.columns.iter().map(|c| c.array(source, rows)).collect()
    }

    /// An idle connection, or a new one with the statement prepared.
    async fn checkout(&self) -> Result<Connection, Failure> {
        let idle = self.lock_pool().pop();
        if let Some(conn) = idle {
            if !conn.client.is_closed() {
                return Ok(conn);
            }
        }
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            // A server that is restarting or unreachable may be back soon.
            .map_err(Failure::Retryable)?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; the
            // next query on the client then reports the error.
            let _ = connection.await;
        });
        self.metrics.inner.connects.fetch_add(1, Ordering::Relaxed);
        let insert = client
            .prepare(&self.sql)
            .await
            .map_err(|e| classify(e, client.is_closed()))?;
        Ok(Connection { client, insert })
    }

    fn checkin(&self, conn: Connection) {
        if !conn.client.is_closed() {
            self.lock_pool().push(conn);
        }
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One attempt: the statement in a transaction on a pooled connection.
    async fn attempt(&self, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Failure> {
        let mut conn = self.checkout().await?;
        self.metrics
            .inner
            .statements
            .fetch_add(1, Ordering::Relaxed);
        let outcome = async {
            let tx = conn.client.transaction().await?;
            match tx.query(&conn.insert, params).await {
                Ok(rows) => {
                    tx.commit().await?;
                    Ok(rows)
                }
                Err(e) => {
                    // The transaction is aborted; end it so the connection
                    // can serve the next batch.
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        }
        .await;
        match outcome {
            Ok(rows) => {
                self.checkin(conn);
                Ok(rows)
            }
            Err(e) => {
                let failure = classify(e, conn.client.is_closed());
                if !matches!(failure, Failure::Retryable(_)) {
                    self.checkin(conn);
                }
                Err(failure)
            }
        }
    }

    /// Inserts the rows whose column arrays are `arrays`, retrying what a
    /// lost connection or a timeout interrupted. Returns the result rows.
    async fn insert(&self, arrays: Vec<Box<dyn ToSql + Send + Sync>>) -> Result<Vec<Row>, Failure> {
        let params: Vec<&(dyn ToSql + Sync)> =
            arrays.iter().map(|a| &**a as &(dyn ToSql + Sync)).collect();
        let mut attempt = 0;
        loop {
            let failure =
                match tokio::time::timeout(self.attempt_timeout, self.attempt(&params)).await {
                    Ok(Ok(rows)) => return Ok(rows),
                    Ok(Err(failure)) => failure,
                    // The attempt's connection was dropped with its future.
                    Err(_) => Failure::TimedOut(self.attempt_timeout),
                };
            if !failure.is_retryable() {
                return Err(failure);
            }
            if attempt >= self.retry.max_retries {
                return Err(Failure::Exhausted {
                    attempts: attempt + 1,
                    last: Box::new(failure),
                });
            }
            tokio::time::sleep(crate::sinks::pause(&self.retry, attempt)).await;
            attempt += 1;
            self.metrics.inner.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes `batch`, completing every item.
    async fn write(&self, batch: &mut AsyncBatch<T, R>) {
        let n = batch.len();
        self.metrics.inner.batches.fetch_add(1, Ordering::Relaxed);
        // Groups of item indexes still to write, each with the number of
        // times its rows came back unresolved (see `resolve`).
        let mut groups: Vec<(Vec<usize>, u32)> = vec![((0..n).collect(), 0)];
        #[cfg(feature = "durable")]
        if self.store_key && batch.item_ids().len() < n {
            // Without a stable id there is no key that makes a replay
            // safe: the rows are not written.
            let error = SharedError::new(PostgresSinkError::NoStoreId);
            for i in batch.item_ids().len()..n {
                let _ = batch.complete(i, Err(Error::Failed(error.clone())));
            }
            groups[0].0.truncate(batch.item_ids().len());
        }
        while let Some((rows, rounds)) = groups.pop() {
            if rows.is_empty() {
                continue;
            }
            // Built before awaiting: the items are not borrowed across the
            // round trip (so `T` need not be `Sync`).
            let arrays = {
                let source = Source {
                    items: batch.items(),
                    #[cfg(feature = "durable")]
                    ids: batch.item_ids(),
                };
                self.params(&source, &rows)
            };
            match self.insert(arrays).await {
                Ok(result) => {
                    let missing = self.resolve(batch, &rows, &result);
                    if missing.is_empty() {
                        continue;
                    }
                    if rounds >= self.retry.max_retries {
                        let error = SharedError::new(PostgresSinkError::Unresolved);
                        for &i in &missing {
                            let _ = batch.complete(i, Err(Error::Failed(error.clone())));
                        }
                    } else {
                        groups.push((missing, rounds + 1));
                    }
                }
                Err(Failure::Rows(_)) if rows.len() > 1 => {
                    let (first, second) = rows.split_at(rows.len() / 2);
                    // The first half is popped (written) first.
                    groups.push((second.to_vec(), rounds));
                    groups.push((first.to_vec(), rounds));
                }
                Err(failure) => {
                    let error = failure.into_error();
                    if matches!(error, PostgresSinkError::Rejected(_)) {
                        self.metrics
                            .inner
                            .rejected
                            .fetch_add(rows.len() as u64, Ordering::Relaxed);
                    }
                    let error = SharedError::new(error);
                    for &i in &rows {
                        let _ = batch.complete(i, Err(Error::Failed(error.clone())));
                    }
                }
            }
        }
    }

    /// Completes each of `rows` found in `result`; returns those not found.
    fn resolve(&self, batch: &mut AsyncBatch<T, R>, rows: &[usize], result: &[Row]) -> Vec<usize> {
        let mut done = vec![false; rows.len()];
        let (mut new, mut existing) = (0, 0);
        for row in result {
            let position = row
                .try_get::<_, i64>(self.returning)
                .ok()
                .and_then(|ord| usize::try_from(ord - 1).ok())
                .filter(|&p| p < rows.len());
            let Some(position) = position else { continue };
            if std::mem::replace(&mut done[position], true) {
                continue;
            }
            if row.try_get::<_, bool>(self.returning + 1).unwrap_or(true) {
                new += 1;
            } else {
                existing += 1;
            }
            let result = (self.decode)(row).map_err(|e| {
                Error::Failed(SharedError::new(PostgresSinkError::Decode(Arc::new(e))))
            });
            let _ = batch.complete(rows[position], result);
        }
        let metrics = &self.metrics.inner;
        metrics.rows_inserted.fetch_add(new, Ordering::Relaxed);
        metrics.rows_existing.fetch_add(existing, Ordering::Relaxed);
        rows.iter()
            .zip(done)
            .filter(|(_, done)| !done)
            .map(|(&i, _)| i)
            .collect()
    }
}

impl<T: Send + 'static, R: Send + 'static> AsyncHandler<T, R> for PostgresSink<T, R> {
    async fn handle(&self, mut batch: AsyncBatch<T, R>) -> Result<(), BatchError> {
        self.write(&mut batch).await;
        Ok(())
    }
}

impl<T, R> fmt::Debug for PostgresSink<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSink")
            .field("sql", &self.sql)
            .field("retry", &self.retry)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("metrics", &self.metrics.get())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::builder::insert_sql;
    use super::*;

    #[test]
    fn the_statement_maps_ordinals_and_reads_back_existing_rows() {
        let sql = insert_sql(
            "trades",
            &["order_id", "qty"],
            &["int8", "int4"],
            0,
            &["id".to_string(), "created".to_string()],
        );
        assert!(
            sql.contains(
                "unnest($1::int8[], $2::int4[]) WITH ORDINALITY AS rb_input(rb_c1, rb_c2, rb_ord)"
            ),
            "{sql}"
        );
        assert!(sql.contains("INSERT INTO trades (order_id, qty) SELECT rb_c1, rb_c2 FROM rb_input ORDER BY rb_ord"), "{sql}");
        assert!(
            sql.contains(
                "ON CONFLICT (order_id) DO NOTHING RETURNING order_id AS rb_key, id, created"
            ),
            "{sql}"
        );
        assert!(
            sql.contains(
                "SELECT rb_inserted.id, rb_inserted.created, rb_input.rb_ord, true AS rb_new"
            ),
            "{sql}"
        );
        assert!(
            sql.contains("JOIN trades AS rb_existing ON rb_existing.order_id = rb_input.rb_c1"),
            "{sql}"
        );
    }

    #[test]
    fn building_needs_a_key_and_returning() {
        let config: Config = "host=localhost".parse().unwrap();
        let no_key = PostgresSink::<u64, ()>::builder(config.clone(), "t")
            .column("v", "int8", |&v: &u64| v as i64)
            .returning::<[&str; 0], _>([], |_| Ok(()))
            .build();
        assert_eq!(no_key.unwrap_err(), PostgresConfigError::NoKey);
        let no_returning = PostgresSink::<u64, ()>::builder(config, "t")
            .key("v", "int8", |&v: &u64| v as i64)
            .build();
        assert_eq!(no_returning.unwrap_err(), PostgresConfigError::NoReturning);
    }
}
