//! Failure counts and lockouts, one row per (purpose, subject), in the
//! database so that every node on it sees the same counts. What a failure
//! does to a row is decided in `auth::lockout`; this module only reads and
//! writes rows.
//!
//! Recording a failure first takes the row ([`hold`]: an upsert that locks
//! it on PostgreSQL; SQLite's write transaction already holds the database),
//! so two nodes counting failures for one subject at once queue there and
//! neither count is lost.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor};
use tessera_core::kinds::LockoutPurpose;
use tessera_core::Timestamp;

use super::{Columns, StoreResult, Tx};

/// One subject's failures in its current window, and its lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutRow {
    pub failures: i64,
    pub window_start: Timestamp,
    pub locked_until: Option<Timestamp>,
}

impl LockoutRow {
    /// No failures yet.
    pub fn fresh(now: Timestamp) -> LockoutRow {
        LockoutRow {
            failures: 0,
            window_start: now,
            locked_until: None,
        }
    }
}

fn from_row(r: AnyRow) -> Result<LockoutRow, sqlx::Error> {
    Ok(LockoutRow {
        failures: r.col("failures")?,
        window_start: r.time("window_start")?,
        locked_until: r.opt_time("locked_until")?,
    })
}

/// The row of `(purpose, subject)`, if it has one.
pub async fn get<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    purpose: LockoutPurpose,
    subject: &str,
) -> StoreResult<Option<LockoutRow>> {
    let query = sqlx::query(
        "SELECT failures, window_start, locked_until FROM lockouts \
         WHERE purpose = $1 AND subject = $2",
    )
    .bind(purpose.as_str())
    .bind(subject);
    Ok(query.try_map(from_row).fetch_optional(ex).await?)
}

/// The row of `(purpose, subject)`, created fresh at `now` if missing, and
/// held for the rest of the transaction.
pub async fn hold(
    tx: &mut Tx,
    purpose: LockoutPurpose,
    subject: &str,
    now: Timestamp,
) -> StoreResult<LockoutRow> {
    let query = sqlx::query(
        "INSERT INTO lockouts (purpose, subject, failures, window_start, locked_until) \
         VALUES ($1, $2, 0, $3, NULL) \
         ON CONFLICT (purpose, subject) DO UPDATE SET failures = lockouts.failures \
         RETURNING failures, window_start, locked_until",
    )
    .bind(purpose.as_str())
    .bind(subject)
    .bind(now.as_millis());
    Ok(query.try_map(from_row).fetch_one(&mut **tx).await?)
}

/// Stores the row [`hold`] returned, as the decision changed it.
pub async fn put(
    tx: &mut Tx,
    purpose: LockoutPurpose,
    subject: &str,
    row: &LockoutRow,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE lockouts SET failures = $1, window_start = $2, locked_until = $3 \
         WHERE purpose = $4 AND subject = $5",
    )
    .bind(row.failures)
    .bind(row.window_start.as_millis())
    .bind(row.locked_until.map(Timestamp::as_millis))
    .bind(purpose.as_str())
    .bind(subject)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes rows whose window began before `window_before` and that are not
/// locked at `now`: they would count as fresh anyway.
pub async fn forget_stale(
    tx: &mut Tx,
    window_before: Timestamp,
    now: Timestamp,
) -> StoreResult<u64> {
    let done = sqlx::query(
        "DELETE FROM lockouts WHERE window_start < $1 \
         AND (locked_until IS NULL OR locked_until <= $2)",
    )
    .bind(window_before.as_millis())
    .bind(now.as_millis())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes the wrong-password counts and locks of user `user_id` (from
/// every address): its password was just reset by the operator.
pub async fn forget_account(tx: &mut Tx, user_id: &str) -> StoreResult<u64> {
    let done =
        sqlx::query("DELETE FROM lockouts WHERE purpose = 'login_account' AND subject LIKE $1")
            .bind(format!("user:{user_id}@%"))
            .execute(&mut **tx)
            .await?;
    Ok(done.rows_affected())
}
