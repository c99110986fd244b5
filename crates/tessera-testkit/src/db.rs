//! Fresh, empty databases on the backend under test.

use anyhow::Context;
use sqlx::{Connection, Executor};
use tempfile::TempDir;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The backend the tests run on, from `TESSERA_TEST_BACKEND`.
pub fn backend() -> Backend {
    match std::env::var("TESSERA_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    }
}

/// The PostgreSQL server tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("TESSERA_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty database for one test, and the directory it lives in.
pub struct TestDb {
    pub url: String,
    pub dir: TempDir,
    /// The PostgreSQL database's name (none on SQLite).
    pub pg_name: Option<String>,
}

impl TestDb {
    /// A database on the backend under test.
    pub async fn new() -> TestDb {
        let prefix =
            std::env::var("TESSERA_TEST_PG_PREFIX").unwrap_or_else(|_| "tessera_test_".to_owned());
        Self::create(backend(), &pg_admin_url(), &prefix)
            .await
            .expect("create the test database (is PostgreSQL running?)")
    }

    /// A database on `backend`; on PostgreSQL, created on the server at
    /// `pg_admin_url` and named `<prefix><random>`.
    pub async fn create(
        backend: Backend,
        pg_admin_url: &str,
        prefix: &str,
    ) -> anyhow::Result<TestDb> {
        let dir = tempfile::tempdir()?;
        let (url, pg_name) = match backend {
            Backend::Sqlite => (tessera_server::store::Db::sqlite_url(dir.path()), None),
            Backend::Postgres => {
                let name = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(pg_admin_url)
                    .await
                    .context("connect to PostgreSQL")?;
                conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
                    .await
                    .context("create the database")?;
                let base = pg_admin_url
                    .rsplit_once('/')
                    .map(|(b, _)| b)
                    .unwrap_or(pg_admin_url);
                (format!("{base}/{name}"), Some(name))
            }
        };
        Ok(TestDb { url, dir, pg_name })
    }

    /// Runs raw SQL against the test database, behind the server's back.
    pub async fn raw(&self, sql: &str) -> Result<(), sqlx::Error> {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.url).await?;
        conn.execute(sql).await.map(|_| ())
    }

    /// Runs raw SQL behind the server's back in a write transaction left
    /// open: what it changed stays invisible, and the locks it took stay
    /// held, until [`OpenWrite::commit`] (a writer racing the server).
    pub async fn raw_uncommitted(&self, sql: &str) -> Result<OpenWrite, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.url).await?;
        // SQLite: take the write lock at once, as the server's writers do.
        let begin = if self.pg_name.is_some() {
            "BEGIN"
        } else {
            "BEGIN IMMEDIATE"
        };
        conn.execute(begin).await?;
        conn.execute(sql).await?;
        Ok(OpenWrite { conn })
    }
}

/// See [`TestDb::raw_uncommitted`].
pub struct OpenWrite {
    conn: sqlx::AnyConnection,
}

impl OpenWrite {
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.conn.execute("COMMIT").await.map(|_| ())
    }
}
