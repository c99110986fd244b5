//! Enrollment tokens. A use is consumed by one conditional UPDATE, so N
//! concurrent enrollments against a token with one use left: exactly one
//! wins.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor};
use tessera_core::Timestamp;

use super::devices::{tags_from_json, tags_to_json};
use super::{changed_one, Columns, Db, StoreResult, Tx};

#[derive(Clone, Debug)]
pub struct TokenRow {
    pub id: String,
    pub tenant_id: String,
    pub token_prefix: String,
    pub uses_total: i64,
    pub uses_remaining: i64,
    pub tags: Vec<String>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

const COLUMNS: &str = "id, tenant_id, token_prefix, uses_total, uses_remaining, tags, created_by, \
    created_at, expires_at, last_used_at, revoked_at";

fn from_row(r: AnyRow) -> Result<TokenRow, sqlx::Error> {
    let tags: String = r.col("tags")?;
    Ok(TokenRow {
        id: r.col("id")?,
        tenant_id: r.col("tenant_id")?,
        token_prefix: r.col("token_prefix")?,
        uses_total: r.col("uses_total")?,
        uses_remaining: r.col("uses_remaining")?,
        tags: tags_from_json(&tags),
        created_by: r.col("created_by")?,
        created_at: r.time("created_at")?,
        expires_at: r.time("expires_at")?,
        last_used_at: r.opt_time("last_used_at")?,
        revoked_at: r.opt_time("revoked_at")?,
    })
}

pub struct NewToken<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub token_hash: &'a [u8; 32],
    pub token_prefix: &'a str,
    pub uses: i64,
    pub tags: &'a [String],
    pub created_by: &'a str,
    pub now: Timestamp,
    pub expires_at: Timestamp,
}

pub async fn insert(tx: &mut Tx, t: NewToken<'_>) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO enrollment_tokens (id, tenant_id, token_hash, token_prefix, uses_total, \
         uses_remaining, tags, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9)",
    )
    .bind(t.id)
    .bind(t.tenant_id)
    .bind(t.token_hash.to_vec())
    .bind(t.token_prefix)
    .bind(t.uses)
    .bind(tags_to_json(t.tags))
    .bind(t.created_by)
    .bind(t.now.as_millis())
    .bind(t.expires_at.as_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes one use of a live token; `None` if it is unknown, revoked,
/// expired or used up (ask [`by_hash`] which).
pub async fn consume(
    tx: &mut Tx,
    hash: &[u8; 32],
    now: Timestamp,
) -> StoreResult<Option<TokenRow>> {
    let sql = format!(
        "UPDATE enrollment_tokens SET uses_remaining = uses_remaining - 1, last_used_at = $1 \
         WHERE token_hash = $2 AND revoked_at IS NULL AND expires_at > $1 AND uses_remaining > 0 \
         RETURNING {COLUMNS}"
    );
    let query = sqlx::query(&sql).bind(now.as_millis()).bind(hash.to_vec());
    Ok(query.try_map(from_row).fetch_optional(&mut **tx).await?)
}

pub async fn by_hash<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    hash: &[u8; 32],
) -> StoreResult<Option<TokenRow>> {
    let sql = format!("SELECT {COLUMNS} FROM enrollment_tokens WHERE token_hash = $1");
    let query = sqlx::query(&sql).bind(hash.to_vec());
    Ok(query.try_map(from_row).fetch_optional(ex).await?)
}

pub async fn list(db: &Db, tenant: &str) -> StoreResult<Vec<TokenRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM enrollment_tokens WHERE tenant_id = $1 ORDER BY created_at DESC, id"
    );
    let query = sqlx::query(&sql).bind(tenant);
    Ok(query.try_map(from_row).fetch_all(db.pool()).await?)
}

/// Revokes a live token; false if unknown or already revoked.
pub async fn revoke(
    tx: &mut Tx,
    tenant: &str,
    id: &str,
    by: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let query = sqlx::query(
        "UPDATE enrollment_tokens SET revoked_at = $1, revoked_by = $2 \
         WHERE tenant_id = $3 AND id = $4 AND revoked_at IS NULL",
    )
    .bind(now.as_millis())
    .bind(by)
    .bind(tenant)
    .bind(id);
    changed_one(&mut **tx, query).await
}
