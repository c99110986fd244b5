//! What the server knows about every device an automatic session names,
//! fetched in a few queries for the whole list (not a handful per member):
//! the devices, the latest attestation each way between each of them and
//! the creator, and each one's current grant to the creator.
//!
//! The rows and their order are those of `store::devices::by_id_any_tenant`,
//! `store::trust::latest_attestation` and `store::trust::current_grant`.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use sqlx::any::AnyRow;

use super::devices::{self, DeviceRow};
use super::trust::{self, AttestationRow, GrantRow};
use super::{bind_all, placeholders, Columns, Db, StoreResult};

/// The facts about the named members, by member device id.
#[derive(Debug, Default)]
pub struct MemberRows {
    pub devices: HashMap<String, DeviceRow>,
    /// The creator's latest attestation of each member.
    pub creator_trusts: HashMap<String, AttestationRow>,
    /// Each member's latest attestation of the creator.
    pub trusts_creator: HashMap<String, AttestationRow>,
    /// Each member's current grant to the creator.
    pub grants: HashMap<String, GrantRow>,
}

/// Fetches the rows for `members` (device ids) named by `creator`.
pub async fn for_members(db: &Db, creator: &str, members: &[String]) -> StoreResult<MemberRows> {
    if members.is_empty() {
        return Ok(MemberRows::default());
    }
    Ok(MemberRows {
        devices: devices(db, members).await?,
        creator_trusts: latest_attestations(db, creator, members, true).await?,
        trusts_creator: latest_attestations(db, creator, members, false).await?,
        grants: current_grants(db, creator, members).await?,
    })
}

async fn devices(db: &Db, ids: &[String]) -> StoreResult<HashMap<String, DeviceRow>> {
    let sql = format!(
        "SELECT {} FROM devices WHERE id IN ({})",
        devices::COLUMNS,
        placeholders(1, ids.len())
    );
    let rows = bind_all(sqlx::query(&sql), ids)
        .fetch_all(db.pool())
        .await?;
    Ok(first_per(rows, "id", devices::from_row)?)
}

/// The latest attestation per member: the creator's of each member
/// (`by_creator`), or each member's of the creator.
async fn latest_attestations(
    db: &Db,
    creator: &str,
    members: &[String],
    by_creator: bool,
) -> StoreResult<HashMap<String, AttestationRow>> {
    let (fixed, listed) = if by_creator {
        ("truster", "trusted")
    } else {
        ("trusted", "truster")
    };
    let sql = format!(
        "{} WHERE {fixed} = $1 AND {listed} IN ({}) ORDER BY issued_at DESC, created_at DESC",
        trust::ATTESTATION,
        placeholders(2, members.len())
    );
    let query = bind_all(sqlx::query(&sql).bind(creator), members);
    let rows = query.fetch_all(db.pool()).await?;
    Ok(first_per(rows, listed, trust::attestation)?)
}

/// Each member's current (not superseded) grant to the creator, the
/// newest if there are several.
async fn current_grants(
    db: &Db,
    creator: &str,
    members: &[String],
) -> StoreResult<HashMap<String, GrantRow>> {
    let sql = format!(
        "{} WHERE grantee = $1 AND granter IN ({}) AND superseded_by IS NULL \
         ORDER BY issued_at DESC",
        trust::GRANT,
        placeholders(2, members.len())
    );
    let query = bind_all(sqlx::query(&sql).bind(creator), members);
    let rows = query.fetch_all(db.pool()).await?;
    Ok(first_per(rows, "granter", trust::grant)?)
}

/// The first row for each value of `key`, read by `read`. Rows come newest
/// first, so for a member that is its latest.
fn first_per<T>(
    rows: Vec<AnyRow>,
    key: &str,
    read: fn(AnyRow) -> Result<T, sqlx::Error>,
) -> Result<HashMap<String, T>, sqlx::Error> {
    let mut out = HashMap::new();
    for r in rows {
        let k: String = r.col(key)?;
        if let Entry::Vacant(slot) = out.entry(k) {
            slot.insert(read(r)?);
        }
    }
    Ok(out)
}
