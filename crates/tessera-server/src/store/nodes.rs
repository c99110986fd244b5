//! Node leases: which server nodes run on this database (see
//! `crate::cluster`). Each node renews its row every heartbeat; one whose
//! lease lapsed is gone.

use sqlx::Row;
use tessera_core::Timestamp;

use super::{Db, StoreResult};

/// A node as its lease row records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub id: String,
    pub advertise_url: Option<String>,
    /// Whether it routes through NATS.
    pub nats: bool,
    pub started_at: Timestamp,
    pub lease_until: Timestamp,
}

/// Takes (or renews) this node's lease until `lease_until`.
pub async fn claim(db: &Db, node: &NodeRow) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO nodes (id, advertise_url, nats, started_at, lease_until) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET advertise_url = $2, nats = $3, started_at = $4, \
         lease_until = $5",
    )
    .bind(&node.id)
    .bind(node.advertise_url.as_deref())
    .bind(i64::from(node.nats))
    .bind(node.started_at.as_millis())
    .bind(node.lease_until.as_millis())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Extends this node's lease.
pub async fn renew(db: &Db, id: &str, lease_until: Timestamp) -> StoreResult<()> {
    sqlx::query("UPDATE nodes SET lease_until = $1 WHERE id = $2")
        .bind(lease_until.as_millis())
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Gives the lease up (a clean shutdown): the node is gone at once.
pub async fn release(db: &Db, id: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM nodes WHERE id = $1")
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Every node whose lease runs past `now`, this one included.
pub async fn live(db: &Db, now: Timestamp) -> StoreResult<Vec<NodeRow>> {
    let rows = sqlx::query(
        "SELECT id, advertise_url, nats, started_at, lease_until FROM nodes \
         WHERE lease_until > $1 ORDER BY id",
    )
    .bind(now.as_millis())
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(NodeRow {
                id: r.try_get("id")?,
                advertise_url: r.try_get("advertise_url")?,
                nats: r.try_get::<i64, _>("nats")? != 0,
                started_at: Timestamp::from_millis(r.try_get("started_at")?),
                lease_until: Timestamp::from_millis(r.try_get("lease_until")?),
            })
        })
        .collect()
}

/// The node holding `device_id`'s agent connection, if its lease is live.
pub async fn of_device(db: &Db, device_id: &str, now: Timestamp) -> StoreResult<Option<String>> {
    let row = sqlx::query(
        "SELECT n.id FROM devices d JOIN nodes n ON n.id = d.node_id \
         WHERE d.id = $1 AND n.lease_until > $2 \
         AND d.connected_at IS NOT NULL \
         AND (d.disconnected_at IS NULL OR d.connected_at > d.disconnected_at)",
    )
    .bind(device_id)
    .bind(now.as_millis())
    .fetch_optional(db.pool())
    .await?;
    Ok(match row {
        Some(r) => Some(r.try_get("id")?),
        None => None,
    })
}

/// The cluster's id: the one row of `cluster`, made with `fresh` by the
/// first node that asks.
pub async fn cluster_id(db: &Db, fresh: &str, now: Timestamp) -> StoreResult<String> {
    sqlx::query("INSERT INTO cluster (id, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(fresh)
        .bind(now.as_millis())
        .execute(db.pool())
        .await?;
    let row = sqlx::query("SELECT id FROM cluster ORDER BY created_at, id LIMIT 1")
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get("id")?)
}
