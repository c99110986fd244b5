//! Node public keys and minted viewer tokens.
//!
//! `node_keys` holds only public halves: each node's private key lives in a
//! file outside the database (see `node_key`). `viewer_tokens` records every
//! viewer token minted, by its `jti`, so that a token the server never
//! minted is refused and a minted one opens at most one viewer.

use sqlx::Row;
use tessera_core::kinds::ViewerAccess;
use tessera_core::Timestamp;

use super::{Db, StoreResult, Write};

/// Records this node's public key (kept if already there).
pub async fn publish(db: &Db, kid: &str, public_key: &[u8], now: Timestamp) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO node_keys (kid, public_key, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (kid) DO NOTHING",
    )
    .bind(kid)
    .bind(public_key.to_vec())
    .bind(now.as_millis())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The public key named `kid`, if some node published it.
pub async fn public_key(db: &Db, kid: &str) -> StoreResult<Option<Vec<u8>>> {
    let row = sqlx::query("SELECT public_key FROM node_keys WHERE kid = $1")
        .bind(kid)
        .fetch_optional(db.pool())
        .await?;
    Ok(match row {
        Some(r) => Some(r.try_get("public_key")?),
        None => None,
    })
}

/// A viewer token as minted, without its value.
#[derive(Debug)]
pub struct MintedToken<'a> {
    pub jti: &'a str,
    pub tenant_id: &'a str,
    pub session_id: &'a str,
    pub user_id: &'a str,
    pub login_id: &'a str,
    pub access: ViewerAccess,
    pub kid: &'a str,
    pub expires_at: Timestamp,
}

/// Records a minted token, in the transaction that audits the minting.
pub async fn record_minted(w: &mut Write, t: &MintedToken<'_>) -> StoreResult<()> {
    let now = w.now();
    sqlx::query(
        "INSERT INTO viewer_tokens \
         (jti, tenant_id, session_id, user_id, login_id, access, kid, minted_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(t.jti)
    .bind(t.tenant_id)
    .bind(t.session_id)
    .bind(t.user_id)
    .bind(t.login_id)
    .bind(t.access.as_str())
    .bind(t.kid)
    .bind(now.as_millis())
    .bind(t.expires_at.as_millis())
    .execute(w.conn())
    .await?;
    Ok(())
}

/// What consuming a token's `jti` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumed {
    /// Marked used now: the viewer may open.
    Admitted,
    /// No such token was minted (for this session, user, login and access).
    NeverMinted,
    /// It was minted and has already opened a viewer.
    AlreadyUsed,
    /// It was minted but has expired.
    Expired,
}

/// The claims a token's record must match to be consumed.
#[derive(Debug)]
pub struct Presented<'a> {
    pub jti: &'a str,
    pub session_id: &'a str,
    pub user_id: &'a str,
    pub login_id: &'a str,
    pub access: ViewerAccess,
}

/// Marks the token used, in one conditional UPDATE, so that of two
/// connections racing with one token at most one is admitted. Runs in the
/// caller's transaction, so the admission's audit row commits with it.
pub async fn consume(w: &mut Write, p: &Presented<'_>, now: Timestamp) -> StoreResult<Consumed> {
    let used = sqlx::query(
        "UPDATE viewer_tokens SET used_at = $1 \
         WHERE jti = $2 AND session_id = $3 AND user_id = $4 AND login_id = $5 \
           AND access = $6 AND used_at IS NULL AND expires_at > $1 \
         RETURNING jti",
    )
    .bind(now.as_millis())
    .bind(p.jti)
    .bind(p.session_id)
    .bind(p.user_id)
    .bind(p.login_id)
    .bind(p.access.as_str())
    .fetch_optional(w.conn())
    .await?;
    if used.is_some() {
        return Ok(Consumed::Admitted);
    }
    let row = sqlx::query(
        "SELECT session_id, user_id, login_id, access, expires_at, used_at \
         FROM viewer_tokens WHERE jti = $1",
    )
    .bind(p.jti)
    .fetch_optional(w.conn())
    .await?;
    let Some(row) = row else {
        return Ok(Consumed::NeverMinted);
    };
    let matches = row.try_get::<String, _>("session_id")? == p.session_id
        && row.try_get::<String, _>("user_id")? == p.user_id
        && row.try_get::<String, _>("login_id")? == p.login_id
        && row.try_get::<String, _>("access")? == p.access.as_str();
    if !matches {
        return Ok(Consumed::NeverMinted);
    }
    if row.try_get::<Option<i64>, _>("used_at")?.is_some() {
        return Ok(Consumed::AlreadyUsed);
    }
    // Matching and unused, yet the UPDATE found nothing: it has expired.
    Ok(Consumed::Expired)
}

/// Ends every unused token `user_id` minted (their expiry becomes `now`),
/// when the user's role changes or the account is disabled: a token minted
/// under the old standing opens nothing afterwards. Returns how many.
pub async fn revoke_unused_of_user(w: &mut Write, user_id: &str) -> StoreResult<u64> {
    let now = w.now();
    let done = sqlx::query(
        "UPDATE viewer_tokens SET expires_at = $1 \
         WHERE user_id = $2 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(now.as_millis())
    .bind(user_id)
    .execute(w.conn())
    .await?;
    Ok(done.rows_affected())
}

/// Forgets tokens that expired before `before`. Their claims refuse them
/// (expired) before their row is ever looked up, and the audit log keeps
/// who minted each; the table holds only tokens that can still be used.
pub async fn purge_expired(db: &Db, before: Timestamp) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM viewer_tokens WHERE expires_at < $1")
        .bind(before.as_millis())
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected())
}
