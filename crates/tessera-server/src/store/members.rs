//! What the server knows about every device an automatic session names,
//! fetched in a few queries for the whole list (not a handful per member):
//! the devices, the latest attestation each way between each of them and
//! the creator, and each one's current grant to the creator.
//!
//! The rows and their order are those of `store::devices::by_id_any_tenant`,
//! `store::trust::latest_attestation` and `store::trust::current_grant`.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::Row;
use tessera_core::trust::{AutoJoinGrant, Scope};
use tessera_core::Timestamp;

use super::devices::{tags_from_json, DeviceRow};
use super::trust::{AttestationRow, GrantRow};
use super::{to_hash, Db, StoreResult};

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

/// `$first, $first+1, …` for `n` bound values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ts(r: &AnyRow, c: &str) -> Result<Option<Timestamp>, sqlx::Error> {
    Ok(r.try_get::<Option<i64>, _>(c)?.map(Timestamp::from_millis))
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
        "SELECT id, tenant_id, ed25519_public, x25519_public, name, hostname, os, \
         agent_version, tags, enrolled_via, enrolled_by, owner_user_id, created_at, connected_at, \
         disconnected_at, last_seen_at, last_ip, revoked_at, revoked_reason, ephemeral \
         FROM devices WHERE id IN ({})",
        placeholders(1, ids.len())
    );
    let mut q = sqlx::query(&sql);
    for id in ids {
        q = q.bind(id);
    }
    let mut out = HashMap::new();
    for r in q.fetch_all(db.pool()).await? {
        let tags: String = r.try_get("tags")?;
        let d = DeviceRow {
            id: r.try_get("id")?,
            tenant_id: r.try_get("tenant_id")?,
            ed25519_public: to_hash(r.try_get("ed25519_public")?),
            x25519_public: to_hash(r.try_get("x25519_public")?),
            name: r.try_get("name")?,
            hostname: r.try_get("hostname")?,
            os: r.try_get("os")?,
            agent_version: r.try_get("agent_version")?,
            tags: tags_from_json(&tags),
            enrolled_via: r.try_get("enrolled_via")?,
            enrolled_by: r.try_get("enrolled_by")?,
            owner_user_id: r.try_get("owner_user_id")?,
            created_at: Timestamp::from_millis(r.try_get("created_at")?),
            connected_at: ts(&r, "connected_at")?,
            disconnected_at: ts(&r, "disconnected_at")?,
            last_seen_at: ts(&r, "last_seen_at")?,
            last_ip: r.try_get("last_ip")?,
            revoked_at: ts(&r, "revoked_at")?,
            revoked_reason: r.try_get("revoked_reason")?,
            ephemeral: r.try_get::<i64, _>("ephemeral")? != 0,
        };
        out.insert(d.id.clone(), d);
    }
    Ok(out)
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
        "SELECT id, truster, trusted, trusted_ed25519, trusted_x25519, issued_at, signature, \
         withdrawn_at FROM trust_attestations WHERE {fixed} = $1 AND {listed} IN ({}) \
         ORDER BY issued_at DESC, created_at DESC",
        placeholders(2, members.len())
    );
    let mut q = sqlx::query(&sql).bind(creator);
    for m in members {
        q = q.bind(m);
    }
    let mut out = HashMap::new();
    for r in q.fetch_all(db.pool()).await? {
        let member: String = r.try_get(listed)?;
        // Rows come newest first: the first one per member is its latest.
        if out.contains_key(&member) {
            continue;
        }
        let a = AttestationRow {
            id: r.try_get("id")?,
            truster: r.try_get("truster")?,
            trusted: r.try_get("trusted")?,
            trusted_ed25519: r.try_get("trusted_ed25519")?,
            trusted_x25519: r.try_get("trusted_x25519")?,
            issued_at: Timestamp::from_millis(r.try_get("issued_at")?),
            signature: r.try_get("signature")?,
            withdrawn_at: ts(&r, "withdrawn_at")?,
        };
        out.insert(member, a);
    }
    Ok(out)
}

/// Each member's current (not superseded) grant to the creator, the
/// newest if there are several.
async fn current_grants(
    db: &Db,
    creator: &str,
    members: &[String],
) -> StoreResult<HashMap<String, GrantRow>> {
    let sql = format!(
        "SELECT id, tenant_id, granter, grantee, grantee_fingerprint, scopes, issued_at, \
         expires_at, signature, superseded_by, revoked_at, revoked_by, revoked_reason, last_used_at \
         FROM grants WHERE grantee = $1 AND granter IN ({}) AND superseded_by IS NULL \
         ORDER BY issued_at DESC",
        placeholders(2, members.len())
    );
    let mut q = sqlx::query(&sql).bind(creator);
    for m in members {
        q = q.bind(m);
    }
    let mut out = HashMap::new();
    for r in q.fetch_all(db.pool()).await? {
        let granter: String = r.try_get("granter")?;
        if out.contains_key(&granter) {
            continue;
        }
        let scopes: String = r.try_get("scopes")?;
        let g = GrantRow {
            grant: AutoJoinGrant {
                id: r.try_get("id")?,
                granter: granter.clone(),
                grantee: r.try_get("grantee")?,
                grantee_fingerprint: r.try_get("grantee_fingerprint")?,
                scopes: scopes.split(',').filter_map(Scope::parse).collect(),
                issued_at: Timestamp::from_millis(r.try_get("issued_at")?),
                expires_at: Timestamp::from_millis(r.try_get("expires_at")?),
            },
            tenant_id: r.try_get("tenant_id")?,
            signature: r.try_get("signature")?,
            superseded_by: r.try_get("superseded_by")?,
            revoked_at: ts(&r, "revoked_at")?,
            revoked_by: r.try_get("revoked_by")?,
            revoked_reason: r.try_get("revoked_reason")?,
            last_used_at: ts(&r, "last_used_at")?,
        };
        out.insert(granter, g);
    }
    Ok(out)
}
