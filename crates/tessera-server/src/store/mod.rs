//! Storage: one sqlx `AnyPool` over SQLite (the embedded default) or
//! PostgreSQL, chosen by URL at start-up.
//!
//! Queries are written once in the SQL both backends accept (`$n`
//! placeholders, `RETURNING`, `ON CONFLICT`); times are BIGINT milliseconds and
//! ids are text, so the same row mapping serves both. Where the dialects truly
//! differ (DDL, triggers) each backend has its own migration folder.
//!
//! Code holding a transaction never takes a second pool connection: on
//! SQLite the other connections may all be queued behind that transaction's
//! write lock, and the two would wait on each other until a timeout. Reads
//! inside a transaction go through the transaction (store functions that
//! read take any `Executor`).
//!
//! Write transactions on SQLite start with `BEGIN IMMEDIATE`, so a
//! transaction that reads before it writes waits for the write lock instead of
//! failing with `SQLITE_BUSY` when another writer got there first.

pub mod audit;
pub mod checkpoints;
pub mod device_list;
pub mod devices;
pub mod enrollment;
pub mod events;
pub mod lockouts;
pub mod logins;
pub mod members;
pub mod node_keys;
pub mod nodes;
pub mod pairings;
pub mod proofs;
pub mod sessions;
pub mod support_codes;
pub mod tenants;
pub mod trust;
pub mod users;

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tessera_core::{Clock, SystemClock, Timestamp};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Executor, Transaction};

/// The storage error kinds callers act on; everything else is internal.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a row with this key already exists")]
    Conflict,
    /// The database could not be reached or dropped the connection
    /// ([`unreachable`]). Worth trying again once it is back. Nothing ran,
    /// unless the connection broke during a commit: whether that commit
    /// took is then unknown.
    #[error("the database is unreachable: {0}")]
    Unavailable(sqlx::Error),
    #[error("database error: {0}")]
    Db(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if unreachable(&e) {
            StoreError::Unavailable(e)
        } else {
            StoreError::Db(e)
        }
    }
}

/// Whether `e` says the database could not be reached rather than that it
/// refused the statement: no connection within the pool's acquire timeout
/// (the server is down or refuses connections), the connection broke
/// mid-statement, the pool was closed, or PostgreSQL answered that it is
/// shutting down, starting up or out of connections.
pub fn unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| sqlstate_unreachable(&c)),
        _ => false,
    }
}

/// PostgreSQL's SQLSTATEs for "cannot serve you now": class 08 (connection
/// exception), class 53 (insufficient resources: too many connections,
/// disk full, out of memory) and 57P01–57P03 (admin or crash shutdown,
/// cannot connect now). SQLite's codes are numbers and never match.
fn sqlstate_unreachable(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
fn conflict_on_unique(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::from(e),
    }
}

/// Runs an `INSERT` whose unique keys may collide; a collision is
/// [`StoreError::Conflict`], for the caller to answer or retry.
pub(crate) async fn insert_unique(tx: &mut Tx, query: Query<'_>) -> StoreResult<()> {
    query.execute(&mut **tx).await.map_err(conflict_on_unique)?;
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The database handle every store function takes. It carries the clock
/// that stamps audit rows and the counter of appended rows, so a domain
/// function that writes with audit needs nothing but the `Db`.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    clock: Arc<dyn Clock>,
    audit_appends: Counter,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// A write transaction that records what it changes: the audit rows it
/// appends commit or roll back with the change they describe. Dropping it
/// without [`Write::commit`] rolls everything back.
pub struct Write {
    tx: Tx,
    now: Timestamp,
    appended: u64,
    audit_appends: Counter,
}

impl Write {
    /// The time this transaction began; audit rows and changes share it.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Appends `event` at [`Write::now`]; returns its sequence number.
    pub async fn audit(&mut self, event: audit::AuditEvent) -> StoreResult<i64> {
        let seq = audit::record(&mut self.tx, self.now, event).await?;
        self.appended += 1;
        Ok(seq)
    }

    /// The connection under the transaction, for store functions that
    /// take any executor.
    pub fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }

    pub async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await?;
        self.audit_appends.inc_by(self.appended);
        Ok(())
    }
}

impl Deref for Write {
    type Target = Tx;

    fn deref(&self) -> &Tx {
        &self.tx
    }
}

impl DerefMut for Write {
    fn deref_mut(&mut self) -> &mut Tx {
        &mut self.tx
    }
}

pub type Tx = Transaction<'static, Any>;

macro_rules! migrations {
    ($dir:literal: $($version:literal $name:literal),* $(,)?) => {
        vec![$(Migration::new(
            $version,
            Cow::Borrowed($name),
            MigrationType::Simple,
            Cow::Borrowed(include_str!(concat!("../../migrations/", $dir, "/", $name, ".sql"))),
            false,
        )),*]
    };
}

fn migrator(backend: Backend) -> Migrator {
    migrator_up_to(backend, i64::MAX)
}

/// The migrations up to and including `version`; tests use it to check that
/// a later migration keeps the data an earlier schema held.
pub fn migrator_up_to(backend: Backend, version: i64) -> Migrator {
    let mut migrations = match backend {
        Backend::Sqlite => migrations!("sqlite":
            1 "0001_foundation",
            2 "0002_devices",
            3 "0003_sessions",
            4 "0004_trust",
            5 "0005_node_keys",
            6 "0006_audit_checkpoints",
            7 "0007_lockouts",
            8 "0008_spent_proofs",
            9 "0009_console",
            10 "0010_session_channel",
            11 "0011_list_indexes",
            12 "0012_nodes",
        ),
        Backend::Postgres => migrations!("postgres":
            1 "0001_foundation",
            2 "0002_devices",
            3 "0003_sessions",
            4 "0004_trust",
            5 "0005_node_keys",
            6 "0006_audit_checkpoints",
            7 "0007_lockouts",
            8 "0008_spent_proofs",
            9 "0009_console",
            10 "0010_session_channel",
            11 "0011_list_indexes",
            12 "0012_nodes",
        ),
    };
    migrations.retain(|m| m.version <= version);
    Migrator {
        migrations: Cow::Owned(migrations),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
}

impl Db {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and applies any
    /// migrations not yet applied. Safe to run from several processes at once
    /// on PostgreSQL: the migrator takes an advisory lock.
    pub async fn connect(url: &str) -> StoreResult<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Db(sqlx::Error::Configuration(
                "database URL must start with sqlite:// or postgres://".into(),
            )));
        };
        let options = AnyConnectOptions::from_str(url)?;
        let max = match backend {
            // One writer at a time anyway; a few readers alongside it.
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(
                            "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                             PRAGMA synchronous = NORMAL;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if backend == Backend::Sqlite {
            // Persistent in the file: readers no longer block the writer.
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        migrator(backend).run(&pool).await?;
        Ok(Db {
            pool,
            backend,
            clock: Arc::new(SystemClock),
            audit_appends: Counter::default(),
        })
    }

    /// Stamps audit rows (and [`Write::now`]) with `clock`'s time.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Db {
        self.clock = clock;
        self
    }

    /// Counts committed audit rows in `counter` (a metric).
    pub fn counting_audit_in(mut self, counter: Counter) -> Db {
        self.audit_appends = counter;
        self
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The default embedded database inside `data_dir`.
    pub fn sqlite_url(data_dir: &Path) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("tessera.db").display()
        )
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction that will write.
    pub async fn begin_write(&self) -> StoreResult<Tx> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(tx)
    }

    /// A write transaction that can append audit rows (see [`Write`]).
    pub async fn begin_audited(&self) -> StoreResult<Write> {
        Ok(Write {
            tx: self.begin_write().await?,
            now: self.now(),
            appended: 0,
            audit_appends: self.audit_appends.clone(),
        })
    }

    /// Runs `change` in a write transaction and commits what it did, audit
    /// rows included, if it returns `Ok`; rolls all of it back otherwise.
    pub async fn write<T, E>(
        &self,
        change: impl AsyncFnOnce(&mut Write) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut w = self.begin_audited().await?;
        let out = change(&mut w).await?;
        w.commit().await?;
        Ok(out)
    }

    /// Appends one audit row in a transaction of its own, for events that
    /// change nothing else (a refusal, a departure).
    pub async fn audit(&self, event: audit::AuditEvent) -> StoreResult<()> {
        self.write(async |w| w.audit(event).await.map(drop)).await
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Typed reads of a row's columns: how times, keys and words are stored is
/// decided here once, not in every row mapping.
pub(crate) trait Columns {
    /// Any column sqlx decodes as it is.
    fn col<T>(&self, column: &str) -> Result<T, sqlx::Error>
    where
        T: for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any>;

    /// A typed id, stored as text.
    fn id<T: From<String>>(&self, column: &str) -> Result<T, sqlx::Error> {
        Ok(T::from(self.col::<String>(column)?))
    }

    /// A time, stored as milliseconds since the epoch.
    fn time(&self, column: &str) -> Result<Timestamp, sqlx::Error> {
        Ok(Timestamp::from_millis(self.col(column)?))
    }

    /// A time that may be unset.
    fn opt_time(&self, column: &str) -> Result<Option<Timestamp>, sqlx::Error> {
        Ok(self.col::<Option<i64>>(column)?.map(Timestamp::from_millis))
    }

    /// A 32-byte key or hash stored as BLOB/BYTEA (see [`to_hash`]).
    fn key32(&self, column: &str) -> Result<[u8; 32], sqlx::Error> {
        Ok(to_hash(self.col(column)?))
    }

    /// A TEXT column holding one of tessera-core's words (a state, a
    /// reason); an unknown word is a decode error, not a panic.
    fn word<T>(&self, column: &str) -> Result<T, sqlx::Error>
    where
        T: FromStr<Err = tessera_core::kinds::UnknownWord>,
    {
        let text: String = self.col(column)?;
        text.parse().map_err(
            |e: tessera_core::kinds::UnknownWord| sqlx::Error::ColumnDecode {
                index: column.to_owned(),
                source: Box::new(e),
            },
        )
    }

    /// An operator role.
    fn role(&self, column: &str) -> Result<tessera_core::roles::Role, sqlx::Error> {
        let text: String = self.col(column)?;
        tessera_core::roles::Role::parse(&text)
            .ok_or_else(|| sqlx::Error::Decode("unknown role".into()))
    }
}

impl Columns for sqlx::any::AnyRow {
    fn col<T>(&self, column: &str) -> Result<T, sqlx::Error>
    where
        T: for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any>,
    {
        sqlx::Row::try_get(self, column)
    }
}

/// A query as store functions build it.
pub(crate) type Query<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>;

/// Runs a conditional `UPDATE … WHERE <the state it leaves>`: true if it
/// changed exactly one row, that is, if this caller made the transition.
pub(crate) async fn changed_one<'e, 'q: 'e, E>(ex: E, query: Query<'q>) -> StoreResult<bool>
where
    E: Executor<'e, Database = Any>,
{
    Ok(query.execute(ex).await?.rows_affected() == 1)
}

/// A value bound to a placeholder of a built statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
}

/// A statement built from fixed pieces (which clauses, never input), with
/// its values in placeholder order, for lists whose filters vary.
#[derive(Debug, Default)]
pub(crate) struct Built {
    pub sql: String,
    pub args: Vec<Arg>,
}

impl Built {
    /// Adds `v` and returns its placeholder.
    pub(crate) fn arg(&mut self, v: Arg) -> String {
        self.args.push(v);
        format!("${}", self.args.len())
    }

    pub(crate) fn query(&self) -> Query<'_> {
        let mut q = sqlx::query(&self.sql);
        for a in &self.args {
            q = match a {
                Arg::Text(t) => q.bind(t.as_str()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }
}

/// `$first, $first+1, …` for `n` bound values (an `IN (…)` list).
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Binds each of `values` in turn, for the `IN (…)` list of [`placeholders`].
fn bind_all<'q>(mut query: Query<'q>, values: &'q [String]) -> Query<'q> {
    for v in values {
        query = query.bind(v);
    }
    query
}

/// Hashes stored as BLOB/BYTEA come back as `Vec<u8>`; a wrong length means a
/// corrupted row, which reads as "no match" rather than a panic.
pub(crate) fn to_hash(v: Vec<u8>) -> [u8; 32] {
    v.try_into().unwrap_or([0u8; 32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_unavailability_and_a_refused_statement_is_not() {
        let io = |kind| sqlx::Error::Io(std::io::Error::from(kind));
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            io(std::io::ErrorKind::ConnectionRefused),
            io(std::io::ErrorKind::ConnectionReset),
            io(std::io::ErrorKind::UnexpectedEof),
        ] {
            assert!(unreachable(&e), "{e}");
            assert!(matches!(StoreError::from(e), StoreError::Unavailable(_)));
        }
        for e in [
            sqlx::Error::RowNotFound,
            sqlx::Error::Protocol("unexpected message".into()),
            sqlx::Error::ColumnNotFound("id".into()),
        ] {
            assert!(!unreachable(&e), "{e}");
            assert!(matches!(StoreError::from(e), StoreError::Db(_)));
        }
    }

    #[test]
    fn postgres_shutdown_start_up_and_exhaustion_codes_mean_unreachable() {
        for code in [
            "08006", "08001", "53300", "53100", "57P01", "57P02", "57P03",
        ] {
            assert!(sqlstate_unreachable(code), "{code}");
        }
        // Unique and foreign-key violations, a cancelled statement, a
        // dropped database, a serialization failure, and SQLite's BUSY.
        for code in ["23505", "23503", "57014", "57P04", "40001", "5"] {
            assert!(!sqlstate_unreachable(code), "{code}");
        }
    }
}
