//! Devices and their keys.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor};
use tessera_core::Timestamp;

use super::{bind_all, changed_one, insert_unique, placeholders, Columns, Db, StoreResult, Tx};

#[derive(Clone, Debug)]
pub struct DeviceRow {
    pub id: String,
    pub tenant_id: String,
    pub ed25519_public: [u8; 32],
    pub x25519_public: [u8; 32],
    pub name: String,
    pub hostname: String,
    pub os: String,
    pub agent_version: Option<String>,
    pub tags: Vec<String>,
    pub enrolled_via: String,
    pub enrolled_by: String,
    pub owner_user_id: String,
    pub created_at: Timestamp,
    pub connected_at: Option<Timestamp>,
    pub disconnected_at: Option<Timestamp>,
    pub last_seen_at: Option<Timestamp>,
    pub last_ip: Option<String>,
    pub revoked_at: Option<Timestamp>,
    pub revoked_reason: Option<String>,
    pub ephemeral: bool,
}

pub(super) const COLUMNS: &str =
    "id, tenant_id, ed25519_public, x25519_public, name, hostname, os, \
    agent_version, tags, enrolled_via, enrolled_by, owner_user_id, created_at, connected_at, \
    disconnected_at, last_seen_at, last_ip, revoked_at, revoked_reason, ephemeral";

pub(crate) fn tags_from_json(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

pub(crate) fn tags_to_json(tags: &[String]) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "[]".to_owned())
}

pub(super) fn from_row(r: AnyRow) -> Result<DeviceRow, sqlx::Error> {
    let tags: String = r.col("tags")?;
    Ok(DeviceRow {
        id: r.col("id")?,
        tenant_id: r.col("tenant_id")?,
        ed25519_public: r.key32("ed25519_public")?,
        x25519_public: r.key32("x25519_public")?,
        name: r.col("name")?,
        hostname: r.col("hostname")?,
        os: r.col("os")?,
        agent_version: r.col("agent_version")?,
        tags: tags_from_json(&tags),
        enrolled_via: r.col("enrolled_via")?,
        enrolled_by: r.col("enrolled_by")?,
        owner_user_id: r.col("owner_user_id")?,
        created_at: r.time("created_at")?,
        connected_at: r.opt_time("connected_at")?,
        disconnected_at: r.opt_time("disconnected_at")?,
        last_seen_at: r.opt_time("last_seen_at")?,
        last_ip: r.col("last_ip")?,
        revoked_at: r.opt_time("revoked_at")?,
        revoked_reason: r.col("revoked_reason")?,
        ephemeral: r.col::<i64>("ephemeral")? != 0,
    })
}

pub struct NewDevice<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub ed25519_public: &'a [u8; 32],
    pub x25519_public: &'a [u8; 32],
    pub identity_signature: &'a [u8; 64],
    pub name: &'a str,
    pub hostname: &'a str,
    pub os: &'a str,
    pub tags: &'a [String],
    pub enrolled_via: &'a str,
    pub enrolled_by: &'a str,
    pub owner_user_id: &'a str,
    /// Exists for one attended session only.
    pub ephemeral: bool,
    pub now: Timestamp,
}

pub async fn insert(tx: &mut Tx, d: NewDevice<'_>) -> StoreResult<()> {
    let query = sqlx::query(
        "INSERT INTO devices (id, tenant_id, ed25519_public, x25519_public, identity_signature, \
         name, hostname, os, tags, enrolled_via, enrolled_by, owner_user_id, created_at, ephemeral) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(d.id)
    .bind(d.tenant_id)
    .bind(d.ed25519_public.to_vec())
    .bind(d.x25519_public.to_vec())
    .bind(d.identity_signature.to_vec())
    .bind(d.name)
    .bind(d.hostname)
    .bind(d.os)
    .bind(tags_to_json(d.tags))
    .bind(d.enrolled_via)
    .bind(d.enrolled_by)
    .bind(d.owner_user_id)
    .bind(d.now.as_millis())
    .bind(i64::from(d.ephemeral));
    insert_unique(tx, query).await
}

/// Looks a device up by id, through the pool or inside a transaction.
pub async fn by_id<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    tenant: &str,
    id: &str,
) -> StoreResult<Option<DeviceRow>> {
    let sql = format!("SELECT {COLUMNS} FROM devices WHERE tenant_id = $1 AND id = $2");
    let query = sqlx::query(&sql).bind(tenant).bind(id);
    Ok(query.try_map(from_row).fetch_optional(ex).await?)
}

/// Any tenant's device with this id (ids are global: they hash a key).
pub async fn by_id_any_tenant<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: &str,
) -> StoreResult<Option<DeviceRow>> {
    let sql = format!("SELECT {COLUMNS} FROM devices WHERE id = $1");
    let query = sqlx::query(&sql).bind(id);
    Ok(query.try_map(from_row).fetch_optional(ex).await?)
}

/// Whether the person at this (support-code) device consented to its
/// session: until then only its technician may see the device.
pub async fn consented<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    device_id: &str,
) -> StoreResult<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sessions WHERE device_id = $1 AND consent = 'granted'",
    )
    .bind(device_id)
    .fetch_one(ex)
    .await?;
    Ok(n > 0)
}

/// The tenant's enrolled devices (not the one-session agents of support codes).
pub async fn list(db: &Db, tenant: &str) -> StoreResult<Vec<DeviceRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM devices WHERE tenant_id = $1 AND ephemeral = 0 ORDER BY name, id"
    );
    let query = sqlx::query(&sql).bind(tenant);
    Ok(query.try_map(from_row).fetch_all(db.pool()).await?)
}

/// Revokes a live device and every key it has; false if already revoked.
pub async fn revoke(
    tx: &mut Tx,
    tenant: &str,
    id: &str,
    reason: &str,
    by: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let n = sqlx::query(
        "UPDATE devices SET revoked_at = $1, revoked_reason = $2, revoked_by = $3 \
         WHERE tenant_id = $4 AND id = $5 AND revoked_at IS NULL",
    )
    .bind(now.as_millis())
    .bind(reason)
    .bind(by)
    .bind(tenant)
    .bind(id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if n == 1 {
        sqlx::query(
            "UPDATE device_keys SET revoked_at = $1, revoked_reason = 'device_revoked' \
             WHERE device_id = $2 AND revoked_at IS NULL",
        )
        .bind(now.as_millis())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(n == 1)
}

pub async fn set_tags(tx: &mut Tx, tenant: &str, id: &str, tags: &[String]) -> StoreResult<bool> {
    let query = sqlx::query("UPDATE devices SET tags = $1 WHERE tenant_id = $2 AND id = $3")
        .bind(tags_to_json(tags))
        .bind(tenant)
        .bind(id);
    changed_one(&mut **tx, query).await
}

/// What the agent reported on connecting.
pub struct Connected<'a> {
    pub id: &'a str,
    pub key_id: &'a str,
    pub ip: &'a str,
    pub agent_version: &'a str,
    pub os: &'a str,
    pub hostname: &'a str,
    /// The node that holds the connection.
    pub node_id: &'a str,
    pub now: Timestamp,
}

pub async fn mark_connected(db: &Db, c: Connected<'_>) -> StoreResult<()> {
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "UPDATE devices SET connected_at = $1, last_seen_at = $1, last_ip = $2, \
         agent_version = $3, os = $4, hostname = $5, node_id = $6 WHERE id = $7",
    )
    .bind(c.now.as_millis())
    .bind(c.ip)
    .bind(c.agent_version)
    .bind(c.os)
    .bind(c.hostname)
    .bind(c.node_id)
    .bind(c.id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE device_keys SET last_used_at = $1 WHERE id = $2")
        .bind(c.now.as_millis())
        .bind(c.key_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Records that the connection made at `connected_at` is gone. A newer
/// connection of the device (a takeover, here or on another node) has
/// recorded its own `connected_at` since: then the device stays connected.
pub async fn mark_disconnected(
    db: &Db,
    id: &str,
    connected_at: Timestamp,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE devices SET last_seen_at = $1, \
         disconnected_at = CASE WHEN connected_at = $2 THEN $1 ELSE disconnected_at END \
         WHERE id = $3",
    )
    .bind(now.as_millis())
    .bind(connected_at.as_millis())
    .bind(id)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Chunk size for statements with one parameter per id.
const CHUNK: usize = 500;

/// Records that these devices were seen now (one statement per chunk).
pub async fn touch_seen(db: &Db, ids: &[String], now: Timestamp) -> StoreResult<()> {
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "UPDATE devices SET last_seen_at = $1 WHERE id IN ({})",
            placeholders(2, chunk.len())
        );
        let query = bind_all(sqlx::query(&sql).bind(now.as_millis()), chunk);
        query.execute(db.pool()).await?;
    }
    Ok(())
}

/// Of these keys, the ones that no longer authenticate (the key or its
/// device revoked), with the code to tell the device.
pub async fn revoked_among(
    db: &Db,
    key_ids: &[String],
) -> StoreResult<Vec<(String, &'static str)>> {
    let mut out = Vec::new();
    for chunk in key_ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT k.id, d.revoked_at AS device_revoked_at FROM device_keys k \
             JOIN devices d ON d.id = k.device_id \
             WHERE k.id IN ({}) AND (k.revoked_at IS NOT NULL OR d.revoked_at IS NOT NULL)",
            placeholders(1, chunk.len())
        );
        for r in bind_all(sqlx::query(&sql), chunk)
            .fetch_all(db.pool())
            .await?
        {
            let code = if r.col::<Option<i64>>("device_revoked_at")?.is_some() {
                "device_revoked"
            } else {
                "key_revoked"
            };
            out.push((r.col("id")?, code));
        }
    }
    Ok(out)
}

// ---- keys -------------------------------------------------------------

pub struct NewKey<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub device_id: &'a str,
    pub key_hash: &'a [u8; 32],
    pub key_prefix: &'a str,
    pub created_by: &'a str,
    /// False for a rotation awaiting the device's confirmation.
    pub active: bool,
    pub now: Timestamp,
}

pub async fn insert_key(tx: &mut Tx, k: NewKey<'_>) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO device_keys (id, tenant_id, device_id, key_hash, key_prefix, created_at, \
         created_by, activated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(k.id)
    .bind(k.tenant_id)
    .bind(k.device_id)
    .bind(k.key_hash.to_vec())
    .bind(k.key_prefix)
    .bind(k.now.as_millis())
    .bind(k.created_by)
    .bind(k.active.then(|| k.now.as_millis()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A key with its device, as device-plane authentication needs it.
#[derive(Clone, Debug)]
pub struct KeyAuthRow {
    pub key_id: String,
    pub key_prefix: String,
    pub device_id: String,
    pub tenant_id: String,
    pub owner_user_id: String,
    pub ed25519_public: [u8; 32],
    pub key_activated_at: Option<Timestamp>,
    pub key_revoked_at: Option<Timestamp>,
    pub device_revoked_at: Option<Timestamp>,
    pub device_revoked_reason: Option<String>,
    /// A support-code device: its key serves its one session's control
    /// channel and nothing else.
    pub ephemeral: bool,
}

pub async fn key_auth<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    hash: &[u8; 32],
) -> StoreResult<Option<KeyAuthRow>> {
    let row = sqlx::query(
        "SELECT k.id, k.key_prefix, k.device_id, k.tenant_id, d.owner_user_id, d.ed25519_public, \
                k.activated_at, k.revoked_at, d.revoked_at AS device_revoked_at, \
                d.revoked_reason AS device_revoked_reason, d.ephemeral \
         FROM device_keys k JOIN devices d ON d.id = k.device_id WHERE k.key_hash = $1",
    )
    .bind(hash.to_vec())
    .fetch_optional(ex)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(KeyAuthRow {
        key_id: r.col("id")?,
        key_prefix: r.col("key_prefix")?,
        device_id: r.col("device_id")?,
        tenant_id: r.col("tenant_id")?,
        owner_user_id: r.col("owner_user_id")?,
        ed25519_public: r.key32("ed25519_public")?,
        key_activated_at: r.opt_time("activated_at")?,
        key_revoked_at: r.opt_time("revoked_at")?,
        device_revoked_at: r.opt_time("device_revoked_at")?,
        device_revoked_reason: r.col("device_revoked_reason")?,
        ephemeral: r.col::<i64>("ephemeral")? != 0,
    }))
}

#[derive(Clone, Debug)]
pub struct KeyRow {
    pub id: String,
    pub device_id: String,
    pub key_prefix: String,
    pub created_at: Timestamp,
    pub created_by: String,
    pub activated_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub revoked_reason: Option<String>,
}

pub async fn list_keys(db: &Db, tenant: &str, device_id: &str) -> StoreResult<Vec<KeyRow>> {
    let rows = sqlx::query(
        "SELECT id, device_id, key_prefix, created_at, created_by, activated_at, last_used_at, \
                revoked_at, revoked_reason \
         FROM device_keys WHERE tenant_id = $1 AND device_id = $2 ORDER BY created_at, id",
    )
    .bind(tenant)
    .bind(device_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(KeyRow {
                id: r.col("id")?,
                device_id: r.col("device_id")?,
                key_prefix: r.col("key_prefix")?,
                created_at: r.time("created_at")?,
                created_by: r.col("created_by")?,
                activated_at: r.opt_time("activated_at")?,
                last_used_at: r.opt_time("last_used_at")?,
                revoked_at: r.opt_time("revoked_at")?,
                revoked_reason: r.col("revoked_reason")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Revokes one live key of a device; false if no such live key.
pub async fn revoke_key(
    tx: &mut Tx,
    tenant: &str,
    device_id: &str,
    key_id: &str,
    reason: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let query = sqlx::query(
        "UPDATE device_keys SET revoked_at = $1, revoked_reason = $2 \
         WHERE tenant_id = $3 AND device_id = $4 AND id = $5 AND revoked_at IS NULL",
    )
    .bind(now.as_millis())
    .bind(reason)
    .bind(tenant)
    .bind(device_id)
    .bind(key_id);
    changed_one(&mut **tx, query).await
}

/// Activates a pending (rotation) key; false if it is not pending.
pub async fn activate_key(
    tx: &mut Tx,
    device_id: &str,
    key_id: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let query = sqlx::query(
        "UPDATE device_keys SET activated_at = $1 \
         WHERE device_id = $2 AND id = $3 AND activated_at IS NULL AND revoked_at IS NULL",
    )
    .bind(now.as_millis())
    .bind(device_id)
    .bind(key_id);
    changed_one(&mut **tx, query).await
}

/// Inside a write transaction: confirms the key and its device are live,
/// and takes the key row's lock so that a concurrent revocation waits for
/// this transaction (on SQLite the write lock already serialises them).
pub async fn hold_live_key(
    tx: &mut Tx,
    device_id: &str,
    key_id: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let query = sqlx::query(
        "UPDATE device_keys SET last_used_at = $1 \
         WHERE id = $2 AND device_id = $3 AND revoked_at IS NULL AND activated_at IS NOT NULL \
           AND EXISTS (SELECT 1 FROM devices WHERE id = $3 AND revoked_at IS NULL)",
    )
    .bind(now.as_millis())
    .bind(key_id)
    .bind(device_id);
    changed_one(&mut **tx, query).await
}

/// The signature of a device's current identity document.
pub async fn identity_signature(db: &Db, id: &str) -> StoreResult<[u8; 64]> {
    let sig: Vec<u8> = sqlx::query_scalar("SELECT identity_signature FROM devices WHERE id = $1")
        .bind(id)
        .fetch_one(db.pool())
        .await?;
    Ok(sig.try_into().unwrap_or([0u8; 64]))
}

/// How many times a device has rotated its identity key.
pub async fn key_epoch(db: &Db, id: &str) -> StoreResult<u32> {
    let epoch: i64 = sqlx::query_scalar("SELECT key_epoch FROM devices WHERE id = $1")
        .bind(id)
        .fetch_one(db.pool())
        .await?;
    Ok(u32::try_from(epoch).unwrap_or(0))
}
