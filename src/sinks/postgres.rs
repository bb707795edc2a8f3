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
//!   a new one, after a pause, under the sink's [`RetrySettings`]. When the
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

use core::fmt;
use core::marker::PhantomData;
use core::time::Duration;
use std::sync::{Arc, Mutex};

pub use tokio_postgres;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use super::RetrySettings;
use crate::error::{Error, SharedError};
use crate::handler::BatchError;
use crate::sync::{AtomicU64, Ordering};
use crate::{AsyncBatch, AsyncHandler};

/// Decodes a result row into an item's result.
type Decode<R> = Box<dyn Fn(&Row) -> Result<R, tokio_postgres::Error> + Send + Sync>;

/// One column of the table: its name, its SQL type and how an item gives
/// its value.
trait ColumnSpec<T>: Send + Sync {
    fn name(&self) -> &str;
    fn sql_type(&self) -> &str;
    /// The values of `rows` (indexes into `items`), as one array parameter.
    fn array(&self, items: &[T], rows: &[usize]) -> Box<dyn ToSql + Send + Sync>;
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

    fn array(&self, items: &[T], rows: &[usize]) -> Box<dyn ToSql + Send + Sync> {
        let values: Vec<V> = rows.iter().map(|&i| (self.value)(&items[i])).collect();
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
/// let id: i64 = producer.submit(trade).await?;
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
    retry: RetrySettings,
    attempt_timeout: Duration,
    /// Idle connections, each with the statement prepared on it.
    pool: Mutex<Vec<Connection>>,
    metrics: PostgresMetrics,
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
            retry: RetrySettings::default(),
            attempt_timeout: Duration::from_secs(30),
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

    /// One array parameter per column, for `rows` of `items`.
    fn params(&self, items: &[T], rows: &[usize]) -> Vec<Box<dyn ToSql + Send + Sync>> {
        self.columns.iter().map(|c| c.array(items, rows)).collect()
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
            tokio::time::sleep(self.retry.delay(attempt)).await;
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
        while let Some((rows, rounds)) = groups.pop() {
            // Built before awaiting: the items are not borrowed across the
            // round trip (so `T` need not be `Sync`).
            let arrays = self.params(batch.items(), &rows);
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

/// Builds a [`PostgresSink`]: the table's columns (one of them the key),
/// the `RETURNING` columns and how a result row becomes an item's result.
pub struct PostgresSinkBuilder<T, R> {
    config: Config,
    table: String,
    columns: Vec<Box<dyn ColumnSpec<T>>>,
    /// Index of the key in `columns`.
    key: Option<usize>,
    returning: Option<(Vec<String>, Decode<R>)>,
    retry: RetrySettings,
    attempt_timeout: Duration,
}

impl<T: Send + 'static, R: Send + 'static> PostgresSinkBuilder<T, R> {
    /// A column: its name as written in SQL, its SQL type as written in a
    /// cast (`int8`, `text`, `numeric`, `timestamptz`, a user enum) and the
    /// item's value for it. `V` is any [`ToSql`] type that accepts that SQL
    /// type (`Option<V>` for a nullable column). Columns are sent in the
    /// order they are added.
    pub fn column<V, F>(
        mut self,
        name: impl Into<String>,
        sql_type: impl Into<String>,
        value: F,
    ) -> Self
    where
        F: Fn(&T) -> V + Send + Sync + 'static,
        V: ToSql + Send + Sync + 'static,
    {
        self.columns.push(Box::new(Column {
            name: name.into(),
            sql_type: sql_type.into(),
            value,
            _value: PhantomData,
        }));
        self
    }

    /// The key column: a [`column`](Self::column) whose values identify rows
    /// (the table must have a unique constraint or unique index on exactly
    /// this column). Required; the [module docs](self) say why.
    pub fn key<V, F>(self, name: impl Into<String>, sql_type: impl Into<String>, value: F) -> Self
    where
        F: Fn(&T) -> V + Send + Sync + 'static,
        V: ToSql + Send + Sync + 'static,
    {
        let index = self.columns.len();
        let mut this = self.column(name, sql_type, value);
        this.key = Some(index);
        this
    }

    /// The table's columns to return for each row (names as written in SQL,
    /// plain columns of the table: `id`, `created_at`), and how to make an
    /// item's result from them. `decode` sees a row whose first columns are
    /// these, by name or by index from 0 (two more follow, for the sink's
    /// own use). For no result, return nothing:
    /// `.returning::<[&str; 0], _>([], |_| Ok(()))`.
    pub fn returning<I, F>(mut self, columns: I, decode: F) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
        F: Fn(&Row) -> Result<R, tokio_postgres::Error> + Send + Sync + 'static,
    {
        self.returning = Some((
            columns.into_iter().map(Into::into).collect(),
            Box::new(decode),
        ));
        self
    }

    /// How writes that failed for want of a server are retried (default
    /// [`RetrySettings::default`]).
    pub fn retry(mut self, retry: RetrySettings) -> Self {
        self.retry = retry;
        self
    }

    /// The longest one attempt (connect if needed, begin, insert, commit) may
    /// take before it counts as a lost connection (default 30 s).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The sink. Connects to nothing yet: connections are made by the first
    /// batches.
    ///
    /// # Errors
    ///
    /// A [`PostgresConfigError`] if there is no key column, no `returning`,
    /// or a name or type that is empty.
    pub fn build(self) -> Result<PostgresSink<T, R>, PostgresConfigError> {
        let key = self.key.ok_or(PostgresConfigError::NoKey)?;
        let (returning, decode) = self.returning.ok_or(PostgresConfigError::NoReturning)?;
        if self.table.trim().is_empty() {
            return Err(PostgresConfigError::Empty("table"));
        }
        for column in &self.columns {
            if column.name().trim().is_empty() {
                return Err(PostgresConfigError::Empty("column name"));
            }
            if column.sql_type().trim().is_empty() {
                return Err(PostgresConfigError::Empty("column type"));
            }
        }
        if returning.iter().any(|c| c.trim().is_empty()) {
            return Err(PostgresConfigError::Empty("returning column"));
        }
        let names: Vec<&str> = self.columns.iter().map(|c| c.name()).collect();
        let types: Vec<&str> = self.columns.iter().map(|c| c.sql_type()).collect();
        let sql = insert_sql(&self.table, &names, &types, key, &returning);
        Ok(PostgresSink {
            config: self.config,
            columns: self.columns,
            decode,
            returning: returning.len(),
            sql,
            retry: self.retry,
            attempt_timeout: self.attempt_timeout,
            pool: Mutex::new(Vec::new()),
            metrics: PostgresMetrics::default(),
        })
    }
}

impl<T, R> fmt::Debug for PostgresSinkBuilder<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns: Vec<&str> = self.columns.iter().map(|c| c.name()).collect();
        f.debug_struct("PostgresSinkBuilder")
            .field("table", &self.table)
            .field("columns", &columns)
            .field("key", &self.key.map(|k| columns[k]))
            .field("returning", &self.returning.as_ref().map(|(r, _)| r))
            .field("retry", &self.retry)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}

/// The statement a sink runs for each batch (see the module docs).
fn insert_sql(
    table: &str,
    names: &[&str],
    types: &[&str],
    key: usize,
    returning: &[String],
) -> String {
    let params: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, ty)| format!("${}::{ty}[]", i + 1))
        .collect();
    let aliases: Vec<String> = (1..=names.len()).map(|i| format!("rb_c{i}")).collect();
    let key_name = names[key];
    let key_alias = &aliases[key];
    let returned = |from: &str| -> String {
        returning
            .iter()
            .map(|c| format!("{from}.{c}, "))
            .collect::<String>()
    };
    let returning_list: String = returning.iter().map(|c| format!(", {c}")).collect();
    format!(
        "WITH rb_input AS (\
         SELECT * FROM unnest({params}) WITH ORDINALITY AS rb_input({aliases}, rb_ord)\
         ), rb_inserted AS (\
         INSERT INTO {table} ({names}) SELECT {aliases} FROM rb_input ORDER BY rb_ord \
         ON CONFLICT ({key_name}) DO NOTHING \
         RETURNING {key_name} AS rb_key{returning_list}\
         ) \
         SELECT {inserted}rb_input.rb_ord, true AS rb_new \
         FROM rb_input JOIN rb_inserted ON rb_inserted.rb_key = rb_input.{key_alias} \
         UNION ALL \
         SELECT {existing}rb_input.rb_ord, false \
         FROM rb_input JOIN {table} AS rb_existing ON rb_existing.{key_name} = rb_input.{key_alias}",
        params = params.join(", "),
        aliases = aliases.join(", "),
        names = names.join(", "),
        inserted = returned("rb_inserted"),
        existing = returned("rb_existing"),
    )
}

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
/// [`Error::Failed`] holds one (downcast
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
    /// every attempt the [`RetrySettings`] allowed. The row was not written
    /// (or, if a lost commit did write it, a later submission with the same
    /// key finds it).
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: Arc<tokio_postgres::Error>,
    },
    /// Every attempt the [`RetrySettings`] allowed timed out (see
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
        }
    }
}

/// How an attempt failed, as the sink sees it.
#[derive(Debug)]
enum Failure {
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
    fn is_retryable(&self) -> bool {
        matches!(self, Failure::Retryable(_) | Failure::TimedOut(_))
    }

    fn into_error(self) -> PostgresSinkError {
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
const RETRYABLE: &[SqlState] = &[
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
fn classify(error: tokio_postgres::Error, closed: bool) -> Failure {
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

/// A handle on a [`PostgresSink`]'s counters (cheap to clone); see
/// [`PostgresSink::metrics`].
#[derive(Clone, Default)]
pub struct PostgresMetrics {
    inner: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    statements: AtomicU64,
    rows_inserted: AtomicU64,
    rows_existing: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
    connects: AtomicU64,
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

#[cfg(test)]
mod tests {
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
