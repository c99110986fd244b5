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

/// Whether managed sessions in this tenant need the device's consent.
pub async fn require_consent_for_managed<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    ex: E,
    tenant: &str,
) -> StoreResult<bool> {
    let v: i64 =
        sqlx::query_scalar("SELECT require_consent_for_managed FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_one(ex)
            .await?;
    Ok(v != 0)
}

pub async fn set_require_consent_for_managed(
    tx: &mut Tx,
    tenant: &str,
    on: bool,
) -> StoreResult<()> {
    sqlx::query("UPDATE tenants SET require_consent_for_managed = $1 WHERE id = $2")
        .bind(i64::from(on))
        .bind(tenant)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
