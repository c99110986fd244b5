//! Operator login sessions, found by the SHA-256 of their bearer token.
//!
//! Every authenticated request reads its session row, so a logout or a
//! revocation takes effect at once on every server sharing the database.

use sqlx::any::AnyRow;
use tessera_core::roles::Role;
use tessera_core::Timestamp;

use super::{changed_one, placeholders, Columns, Db, StoreResult, Tx};

pub struct NewSession<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub user_id: &'a str,
    pub token_hash: &'a [u8; 32],
    pub token_prefix: &'a str,
    pub source_ip: Option<&'a str>,
    pub now: Timestamp,
    pub expires_at: Timestamp,
}

pub async fn insert(tx: &mut Tx, s: NewSession<'_>) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO operator_sessions \
         (id, tenant_id, user_id, token_hash, token_prefix, source_ip, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(s.id)
    .bind(s.tenant_id)
    .bind(s.user_id)
    .bind(s.token_hash.to_vec())
    .bind(s.token_prefix)
    .bind(s.source_ip)
    .bind(s.now.as_millis())
    .bind(s.expires_at.as_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A session joined with its user, as the authenticator needs it.
#[derive(Clone, Debug)]
pub struct SessionRow {
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub username: String,
    pub role: Role,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub user_disabled_at: Option<Timestamp>,
}

const SELECT: &str = "SELECT s.id, s.tenant_id, s.user_id, u.username, u.role, s.expires_at, \
    s.revoked_at, u.disabled_at FROM operator_sessions s JOIN users u ON u.id = s.user_id";

fn from_row(r: AnyRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id: r.col("id")?,
        tenant_id: r.col("tenant_id")?,
        user_id: r.col("user_id")?,
        username: r.col("username")?,
        role: r.role("role")?,
        expires_at: r.time("expires_at")?,
        revoked_at: r.opt_time("revoked_at")?,
        user_disabled_at: r.opt_time("disabled_at")?,
    })
}

pub async fn by_token_hash(db: &Db, hash: &[u8; 32]) -> StoreResult<Option<SessionRow>> {
    let sql = format!("{SELECT} WHERE s.token_hash = $1");
    let query = sqlx::query(&sql).bind(hash.to_vec()).try_map(from_row);
    Ok(query.fetch_optional(db.pool()).await?)
}

/// Revokes one live session; returns false if it was already revoked.
pub async fn revoke(tx: &mut Tx, id: &str, reason: &str, now: Timestamp) -> StoreResult<bool> {
    let query = sqlx::query(
        "UPDATE operator_sessions SET revoked_at = $1, revoked_reason = $2 \
         WHERE id = $3 AND revoked_at IS NULL",
    )
    .bind(now.as_millis())
    .bind(reason)
    .bind(id);
    changed_one(&mut **tx, query).await
}

/// Revokes every live session of a user except `keep`; returns how many.
pub async fn revoke_all_of_user(
    tx: &mut Tx,
    user_id: &str,
    keep: Option<&str>,
    reason: &str,
    now: Timestamp,
) -> StoreResult<u64> {
    let n = sqlx::query(
        "UPDATE operator_sessions SET revoked_at = $1, revoked_reason = $2 \
         WHERE user_id = $3 AND revoked_at IS NULL AND id <> $4",
    )
    .bind(now.as_millis())
    .bind(reason)
    .bind(user_id)
    .bind(keep.unwrap_or(""))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n)
}

/// A login session by id (for viewer tokens, which carry the id of the login
/// that minted them).
pub async fn by_id(db: &Db, id: &str) -> StoreResult<Option<SessionRow>> {
    let sql = format!("{SELECT} WHERE s.id = $1");
    let query = sqlx::query(&sql).bind(id).try_map(from_row);
    Ok(query.fetch_optional(db.pool()).await?)
}

/// Where a login (and its user) stands now, for the relay sweep.
#[derive(Clone, Debug)]
pub struct Standing {
    pub id: String,
    /// Neither revoked nor expired.
    pub live: bool,
    pub user_disabled: bool,
    /// The user's current role.
    pub role: Role,
}

/// The standing of each of these login ids that exists.
pub async fn standing_among(db: &Db, ids: &[String], now: Timestamp) -> StoreResult<Vec<Standing>> {
    let mut found = Vec::new();
    for chunk in ids.chunks(500) {
        let sql = format!(
            "SELECT s.id, s.revoked_at, s.expires_at, u.disabled_at, u.role \
             FROM operator_sessions s JOIN users u ON u.id = s.user_id WHERE s.id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        let rows = q
            .try_map(|r: AnyRow| {
                let revoked: Option<Timestamp> = r.opt_time("revoked_at")?;
                let expires: Timestamp = r.time("expires_at")?;
                Ok(Standing {
                    id: r.col("id")?,
                    live: revoked.is_none() && expires > now,
                    user_disabled: r.opt_time("disabled_at")?.is_some(),
                    role: r.role("role")?,
                })
            })
            .fetch_all(db.pool())
            .await?;
        found.extend(rows);
    }
    Ok(found)
}
