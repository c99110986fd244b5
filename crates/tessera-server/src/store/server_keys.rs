//! Per-deployment secrets shared by every node (in the database, so that a
//! token minted on one node verifies on another).

use sqlx::Row;
use tessera_core::Timestamp;

use super::{Db, StoreResult};

/// The named secret, created (with `fresh`) by whichever node asks first.
pub async fn get_or_create(
    db: &Db,
    name: &str,
    fresh: &[u8],
    now: Timestamp,
) -> StoreResult<Vec<u8>> {
    sqlx::query("INSERT INTO server_keys (name, secret, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(fresh.to_vec())
        .bind(now.as_millis())
        .execute(db.pool())
        .await?;
    let row = sqlx::query("SELECT secret FROM server_keys WHERE name = $1")
        .bind(name)
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get("secret")?)
}
