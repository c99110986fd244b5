//! Tenants. Only the bootstrap tenant exists today; every scoped row carries
//! its id so that isolation can be enforced later without a schema rewrite.

use super::{StoreResult, Tx};
use tessera_core::Timestamp;

/// Marks `tenant` bootstrapped if nobody has yet. Exactly one caller gets
/// `true`, even across processes: it is one conditional UPDATE.
pub async fn claim_bootstrap(tx: &mut Tx, tenant: &str, now: Timestamp) -> StoreResult<bool> {
    let claimed = sqlx::query(
        "UPDATE tenants SET bootstrapped_at = $1 WHERE id = $2 AND bootstrapped_at IS NULL",
    )
    .bind(now.as_millis())
    .bind(tenant)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

/// Serialises administrative changes within a tenant until `tx` ends: a
/// no-op write takes the tenant row's lock (PostgreSQL) or the write lock
/// (SQLite). Used where a check and a change must not interleave with
/// another transaction's, such as "not the last admin".
pub async fn lock(tx: &mut Tx, tenant: &str) -> StoreResult<()> {
    sqlx::query("UPDATE tenants SET name = name WHERE id = $1")
        .bind(tenant)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
