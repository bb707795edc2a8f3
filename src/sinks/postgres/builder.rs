//! [`PostgresSinkBuilder`]: the table, the columns, the pool of
//! connections, and the insert statement built from them.

use core::fmt;
use core::marker::PhantomData;
use core::time::Duration;
use std::sync::Mutex;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Config, Row};

use crate::RetryPolicy;
use crate::sinks::postgres::{
    Column, ColumnSpec, Decode, PostgresConfigError, PostgresMetrics, PostgresSink,
};

/// Builds a [`PostgresSink`]: the table's columns (one of them the key),
/// the `RETURNING` columns and how a result row becomes an item's result.
pub struct PostgresSinkBuilder<T, R> {
    pub(super) config: Config,
    pub(super) table: String,
    pub(super) columns: Vec<Box<dyn ColumnSpec<T>>>,
    /// Index of the key in `columns`.
    pub(super) key: Option<usize>,
    pub(super) returning: Option<(Vec<String>, Decode<R>)>,
    pub(super) retry: RetryPolicy,
    pub(super) attempt_timeout: Duration,
    /// (feature `durable`) Whether the key is [`store_key`](Self::store_key).
    #[cfg(feature = "durable")]
    pub(super) store_key: bool,
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
    /// this column). Required; the [module docs](super) say why.
    pub fn key<V, F>(self, name: impl Into<String>, sql_type: impl Into<String>, value: F) -> Self
    where
        F: Fn(&T) -> V + Send + Sync + 'static,
        V: ToSql + Send + Sync + 'static,
    {
        let index = self.columns.len();
        let mut this = self.column(name, sql_type, value);
        this.key = Some(index);
        #[cfg(feature = "durable")]
        {
            this.store_key = false;
        }
        this
    }

    /// (feature `durable`) The key column, made from the batcher's durable
    /// store: each row's key is `{prefix}-{item id}`
    /// ([`AsyncBatch::item_id`](crate::AsyncBatch::item_id)), a `text`
    /// column with a unique constraint. An item keeps its id in every
    /// delivery, the replays after a restart or a crash included, so a
    /// batch the sink wrote whose completion the store had not recorded
    /// is not written twice. The prefix must be unique to the store's
    /// directory among everything that writes to the table (item ids are
    /// unique per directory). An item without an id (no store, or the
    /// store refused its batch) fails with
    /// [`PostgresSinkError::NoStoreId`](super::PostgresSinkError::NoStoreId).
    /// Replaces a [`key`](Self::key) set before.
    ///
    /// ```no_run
    /// # use ringbatch::sinks::postgres::PostgresSink;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // CREATE TABLE events (id bigserial PRIMARY KEY, rb_key text UNIQUE NOT NULL,
    /// //                      value int8 NOT NULL);
    /// let sink = PostgresSink::builder("host=127.0.0.1 user=postgres".parse()?, "events")
    ///     .store_key("rb_key", "host-a")
    ///     .column("value", "int8", |&v: &i64| v)
    ///     .returning(["id"], |row| row.try_get::<_, i64>("id"))
    ///     .build()?;
    /// # drop(sink);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "durable")]
    pub fn store_key(mut self, name: impl Into<String>, prefix: impl Into<String>) -> Self {
        self.key = Some(self.columns.len());
        self.columns.push(Box::new(super::StoreKey {
            name: name.into(),
            prefix: prefix.into(),
        }));
        self.store_key = true;
        self
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
    /// [`default_retry_policy`](crate::sinks::default_retry_policy)).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
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
            #[cfg(feature = "durable")]
            store_key: self.store_key,
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
pub(super) fn insert_sql(
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
