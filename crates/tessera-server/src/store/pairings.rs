//! RFC 8628 pairings: pending → approved | denied → consumed. Each
//! transition is one conditional UPDATE on the expected state.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor};
use tessera_core::ids::PairingId;
use tessera_core::kinds::PairingState;
use tessera_core::Timestamp;

use super::{changed_one, insert_unique, Columns, Db, StoreResult, Tx};

#[derive(Clone, Debug)]
pub struct PairingRow {
    pub id: PairingId,
    pub tenant_id: String,
    pub user_code: String,
    pub client_id: String,
    pub device_id: String,
    pub ed25519_public: [u8; 32],
    pub x25519_public: [u8; 32],
    pub identity_signature: [u8; 64],
    pub name: String,
    pub hostname: String,
    pub os: String,
    pub source_ip: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub interval_ms: i64,
    pub last_poll_at: Option<Timestamp>,
    pub state: PairingState,
    pub decided_by: Option<String>,
}

const COLUMNS: &str = "id, tenant_id, user_code, client_id, device_id, ed25519_public, \
    x25519_public, identity_signature, name, hostname, os, source_ip, created_at, expires_at, \
    interval_ms, last_poll_at, state, decided_by";

fn from_row(r: AnyRow) -> Result<PairingRow, sqlx::Error> {
    let sig: Vec<u8> = r.col("identity_signature")?;
    Ok(PairingRow {
        id: r.id("id")?,
        tenant_id: r.col("tenant_id")?,
        user_code: r.col("user_code")?,
        client_id: r.col("client_id")?,
        device_id: r.col("device_id")?,
        ed25519_public: r.key32("ed25519_public")?,
        x25519_public: r.key32("x25519_public")?,
        identity_signature: sig.try_into().unwrap_or([0u8; 64]),
        name: r.col("name")?,
        hostname: r.col("hostname")?,
        os: r.col("os")?,
        source_ip: r.col("source_ip")?,
        created_at: r.time("created_at")?,
        expires_at: r.time("expires_at")?,
        interval_ms: r.col("interval_ms")?,
        last_poll_at: r.opt_time("last_poll_at")?,
        state: r.word("state")?,
        decided_by: r.col("decided_by")?,
    })
}

pub struct NewPairing<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub device_code_hash: &'a [u8; 32],
    pub user_code: &'a str,
    pub client_id: &'a str,
    pub device_id: &'a str,
    pub ed25519_public: &'a [u8; 32],
    pub x25519_public: &'a [u8; 32],
    pub identity_signature: &'a [u8; 64],
    pub name: &'a str,
    pub hostname: &'a str,
    pub os: &'a str,
    pub source_ip: &'a str,
    pub now: Timestamp,
    pub expires_at: Timestamp,
    pub interval_ms: i64,
}

/// Inserts a pending pairing; `Conflict` if its user code is taken by
/// another pending one (the caller draws a new code).
pub async fn insert(tx: &mut Tx, p: NewPairing<'_>) -> StoreResult<()> {
    let query = sqlx::query(
        "INSERT INTO pairings (id, tenant_id, device_code_hash, user_code, client_id, device_id, \
         ed25519_public, x25519_public, identity_signature, name, hostname, os, source_ip, \
         created_at, expires_at, interval_ms, state) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 'pending')",
    )
    .bind(p.id)
    .bind(p.tenant_id)
    .bind(p.device_code_hash.to_vec())
    .bind(p.user_code)
    .bind(p.client_id)
    .bind(p.device_id)
    .bind(p.ed25519_public.to_vec())
    .bind(p.x25519_public.to_vec())
    .bind(p.identity_signature.to_vec())
    .bind(p.name)
    .bind(p.hostname)
    .bind(p.os)
    .bind(p.source_ip)
    .bind(p.now.as_millis())
    .bind(p.expires_at.as_millis())
    .bind(p.interval_ms);
    insert_unique(tx, query).await
}

/// A retry from the same identity replaces its live pending pairings:
/// they expire now (their user codes stop matching, their device codes
/// poll as `expired_token`). Returns the replaced pairings' ids.
pub async fn replace_pending(
    tx: &mut Tx,
    device_id: &str,
    now: Timestamp,
) -> StoreResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "UPDATE pairings SET expires_at = $1 \
         WHERE device_id = $2 AND state = $3 AND expires_at > $1 RETURNING id",
    )
    .bind(now.as_millis())
    .bind(device_id)
    .bind(PairingState::Pending.as_str())
    .fetch_all(&mut **tx)
    .await?)
}

pub async fn by_device_code<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    hash: &[u8; 32],
) -> StoreResult<Option<PairingRow>> {
    let sql = format!("SELECT {COLUMNS} FROM pairings WHERE device_code_hash = $1");
    let query = sqlx::query(&sql).bind(hash.to_vec());
    Ok(query.try_map(from_row).fetch_optional(ex).await?)
}

/// The live pending pairing with this (canonical) user code.
pub async fn pending_by_user_code<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    tenant: &str,
    user_code: &str,
    now: Timestamp,
) -> StoreResult<Option<PairingRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM pairings \
         WHERE tenant_id = $1 AND user_code = $2 AND state = 'pending' AND expires_at > $3"
    );
    let query = sqlx::query(&sql)
        .bind(tenant)
        .bind(user_code)
        .bind(now.as_millis());
    Ok(query.try_map(from_row).fetch_optional(ex).await?)
}

/// The latest pairing ever shown under this (canonical) user code, in any
/// state: a code that was real but is no longer pending is no guess.
pub async fn latest_by_user_code<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    tenant: &str,
    user_code: &str,
) -> StoreResult<Option<PairingRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM pairings WHERE tenant_id = $1 AND user_code = $2 \
         ORDER BY created_at DESC LIMIT 1"
    );
    let query = sqlx::query(&sql).bind(tenant).bind(user_code);
    Ok(query.try_map(from_row).fetch_optional(ex).await?)
}

pub async fn list_pending(db: &Db, tenant: &str, now: Timestamp) -> StoreResult<Vec<PairingRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM pairings WHERE tenant_id = $1 AND state = 'pending' \
         AND expires_at > $2 ORDER BY created_at"
    );
    let query = sqlx::query(&sql).bind(tenant).bind(now.as_millis());
    Ok(query.try_map(from_row).fetch_all(db.pool()).await?)
}

/// Records a poll and the interval now in force.
pub async fn record_poll(db: &Db, id: &str, now: Timestamp, interval_ms: i64) -> StoreResult<()> {
    sqlx::query("UPDATE pairings SET last_poll_at = $1, interval_ms = $2 WHERE id = $3")
        .bind(now.as_millis())
        .bind(interval_ms)
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// pending → approved/denied, if still pending and unexpired.
pub async fn decide(
    tx: &mut Tx,
    id: &PairingId,
    approve: bool,
    by: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let query = sqlx::query(
        "UPDATE pairings SET state = $1, decided_by = $2, decided_at = $3 \
         WHERE id = $4 AND state = $5 AND expires_at > $3",
    )
    .bind(
        if approve {
            PairingState::Approved
        } else {
            PairingState::Denied
        }
        .as_str(),
    )
    .bind(by)
    .bind(now.as_millis())
    .bind(id.as_str())
    .bind(PairingState::Pending.as_str());
    changed_one(&mut **tx, query).await
}

/// approved → consumed: exactly one token exchange wins.
pub async fn consume(tx: &mut Tx, id: &PairingId) -> StoreResult<bool> {
    let query = sqlx::query("UPDATE pairings SET state = $1 WHERE id = $2 AND state = $3")
        .bind(PairingState::Consumed.as_str())
        .bind(id.as_str())
        .bind(PairingState::Approved.as_str());
    changed_one(&mut **tx, query).await
}
