//! Trust between devices: SAS exchanges, attestations, grants, identity
//! key rotations, and automatic-session members.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor};
use tessera_core::ids::ExchangeId;
use tessera_core::kinds::ExchangeState;
use tessera_core::kinds::MemberOutcome;
use tessera_core::trust::{AutoJoinGrant, Scope};
use tessera_core::Timestamp;

use super::{changed_one, insert_unique, Columns, Db, StoreResult, Tx};

// ---- SAS exchanges ------------------------------------------------------

#[derive(Clone, Debug)]
pub struct ExchangeRow {
    pub id: ExchangeId,
    pub tenant_id: String,
    pub initiator: String,
    pub responder: String,
    pub commitment: String,
    pub responder_identity: Option<String>,
    pub responder_nonce: Option<String>,
    pub initiator_identity: Option<String>,
    pub initiator_nonce: Option<String>,
    pub state: ExchangeState,
    pub expires_at: Timestamp,
}

const EXCHANGE: &str =
    "SELECT id, tenant_id, initiator, responder, commitment, responder_identity, \
    responder_nonce, initiator_identity, initiator_nonce, state, expires_at FROM trust_exchanges";

fn exchange(r: AnyRow) -> Result<ExchangeRow, sqlx::Error> {
    Ok(ExchangeRow {
        id: r.id("id")?,
        tenant_id: r.col("tenant_id")?,
        initiator: r.col("initiator")?,
        responder: r.col("responder")?,
        commitment: r.col("commitment")?,
        responder_identity: r.col("responder_identity")?,
        responder_nonce: r.col("responder_nonce")?,
        initiator_identity: r.col("initiator_identity")?,
        initiator_nonce: r.col("initiator_nonce")?,
        state: r.word("state")?,
        expires_at: r.time("expires_at")?,
    })
}

/// A trust exchange the initiator has committed to.
pub struct NewExchange<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub initiator: &'a str,
    pub responder: &'a str,
    pub commitment: &'a str,
}

pub async fn insert_exchange(
    tx: &mut Tx,
    e: &NewExchange<'_>,
    now: Timestamp,
    expires_at: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO trust_exchanges (id, tenant_id, initiator, responder, commitment, state, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(e.id)
    .bind(e.tenant)
    .bind(e.initiator)
    .bind(e.responder)
    .bind(e.commitment)
    .bind(ExchangeState::Committed.as_str())
    .bind(now.as_millis())
    .bind(expires_at.as_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn exchange_by_id(db: &Db, id: &str) -> StoreResult<Option<ExchangeRow>> {
    let sql = format!("{EXCHANGE} WHERE id = $1");
    let query = sqlx::query(&sql).bind(id);
    Ok(query.try_map(exchange).fetch_optional(db.pool()).await?)
}

/// Live exchanges between two devices, either way round.
pub async fn exchanges_between(
    db: &Db,
    a: &str,
    b: &str,
    now: Timestamp,
) -> StoreResult<Vec<ExchangeRow>> {
    let sql = format!(
        "{EXCHANGE} WHERE ((initiator = $1 AND responder = $2) OR (initiator = $2 AND responder = $1)) \
         AND expires_at > $3 ORDER BY created_at"
    );
    let query = sqlx::query(&sql).bind(a).bind(b).bind(now.as_millis());
    Ok(query.try_map(exchange).fetch_all(db.pool()).await?)
}

/// Ends, by expiring them now, the live exchanges `initiator` opened with
/// `responder`: a new attempt supersedes what an interrupted one left.
pub async fn supersede_exchanges(
    tx: &mut Tx,
    initiator: &str,
    responder: &str,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE trust_exchanges SET expires_at = $3          WHERE initiator = $1 AND responder = $2 AND expires_at > $3",
    )
    .bind(initiator)
    .bind(responder)
    .bind(now.as_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Ends a live exchange `device` takes part in, either side; `false` if
/// there was none.
pub async fn withdraw_exchange(
    tx: &mut Tx,
    id: &str,
    device: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let query = sqlx::query(
        "UPDATE trust_exchanges SET expires_at = $3          WHERE id = $1 AND (initiator = $2 OR responder = $2) AND expires_at > $3",
    )
    .bind(id)
    .bind(device)
    .bind(now.as_millis());
    changed_one(&mut **tx, query).await
}

/// committed → responded, by the responder.
pub async fn respond(
    db: &Db,
    id: &str,
    responder: &str,
    identity: &str,
    nonce: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let query = sqlx::query(
        "UPDATE trust_exchanges SET responder_identity = $1, responder_nonce = $2, state = $6 \
         WHERE id = $3 AND responder = $4 AND state = $7 AND expires_at > $5",
    )
    .bind(identity)
    .bind(nonce)
    .bind(id)
    .bind(responder)
    .bind(now.as_millis())
    .bind(ExchangeState::Responded.as_str())
    .bind(ExchangeState::Committed.as_str());
    changed_one(db.pool(), query).await
}

/// responded → revealed, by the initiator.
pub async fn reveal(
    db: &Db,
    id: &str,
    initiator: &str,
    identity: &str,
    nonce: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let query = sqlx::query(
        "UPDATE trust_exchanges SET initiator_identity = $1, initiator_nonce = $2, state = $6 \
         WHERE id = $3 AND initiator = $4 AND state = $7 AND expires_at > $5",
    )
    .bind(identity)
    .bind(nonce)
    .bind(id)
    .bind(initiator)
    .bind(now.as_millis())
    .bind(ExchangeState::Revealed.as_str())
    .bind(ExchangeState::Responded.as_str());
    changed_one(db.pool(), query).await
}

// ---- attestations -------------------------------------------------------

#[derive(Clone, Debug)]
pub struct AttestationRow {
    pub id: String,
    pub truster: String,
    pub trusted: String,
    pub trusted_ed25519: String,
    pub trusted_x25519: String,
    pub issued_at: Timestamp,
    pub signature: String,
    pub withdrawn_at: Option<Timestamp>,
}

pub(super) const ATTESTATION: &str =
    "SELECT id, truster, trusted, trusted_ed25519, trusted_x25519, issued_at, \
    signature, withdrawn_at FROM trust_attestations";

pub(super) fn attestation(r: AnyRow) -> Result<AttestationRow, sqlx::Error> {
    Ok(AttestationRow {
        id: r.col("id")?,
        truster: r.col("truster")?,
        trusted: r.col("trusted")?,
        trusted_ed25519: r.col("trusted_ed25519")?,
        trusted_x25519: r.col("trusted_x25519")?,
        issued_at: r.time("issued_at")?,
        signature: r.col("signature")?,
        withdrawn_at: r.opt_time("withdrawn_at")?,
    })
}

pub struct NewAttestation<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub truster: &'a str,
    pub trusted: &'a str,
    pub trusted_ed25519: &'a str,
    pub trusted_x25519: &'a str,
    pub issued_at: Timestamp,
    pub signature: &'a str,
    pub now: Timestamp,
}

/// Records an attestation, withdrawing any earlier one for the same pair.
pub async fn insert_attestation(tx: &mut Tx, a: NewAttestation<'_>) -> StoreResult<()> {
    sqlx::query("UPDATE trust_attestations SET withdrawn_at = $1 WHERE truster = $2 AND trusted = $3 AND withdrawn_at IS NULL")
        .bind(a.now.as_millis())
        .bind(a.truster)
        .bind(a.trusted)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO trust_attestations (id, tenant_id, truster, trusted, trusted_ed25519, trusted_x25519, \
         issued_at, signature, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(a.id)
    .bind(a.tenant_id)
    .bind(a.truster)
    .bind(a.trusted)
    .bind(a.trusted_ed25519)
    .bind(a.trusted_x25519)
    .bind(a.issued_at.as_millis())
    .bind(a.signature)
    .bind(a.now.as_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The newest attestation `truster` made about `trusted`, withdrawn or not.
pub async fn latest_attestation<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    truster: &str,
    trusted: &str,
) -> StoreResult<Option<AttestationRow>> {
    let sql = format!("{ATTESTATION} WHERE truster = $1 AND trusted = $2 ORDER BY issued_at DESC, created_at DESC LIMIT 1");
    let query = sqlx::query(&sql).bind(truster).bind(trusted);
    Ok(query.try_map(attestation).fetch_optional(ex).await?)
}

pub async fn withdraw_attestation(
    tx: &mut Tx,
    truster: &str,
    trusted: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let n = sqlx::query("UPDATE trust_attestations SET withdrawn_at = $1 WHERE truster = $2 AND trusted = $3 AND withdrawn_at IS NULL")
        .bind(now.as_millis())
        .bind(truster)
        .bind(trusted)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// Attestations a device made or received (live ones).
pub async fn attestations_of(db: &Db, device: &str) -> StoreResult<Vec<AttestationRow>> {
    let sql = format!("{ATTESTATION} WHERE (truster = $1 OR trusted = $1) AND withdrawn_at IS NULL ORDER BY created_at");
    let query = sqlx::query(&sql).bind(device);
    Ok(query.try_map(attestation).fetch_all(db.pool()).await?)
}

// ---- grants -------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct GrantRow {
    pub grant: AutoJoinGrant,
    pub tenant_id: String,
    pub signature: String,
    pub superseded_by: Option<String>,
    pub revoked_at: Option<Timestamp>,
    pub revoked_by: Option<String>,
    pub revoked_reason: Option<String>,
    pub last_used_at: Option<Timestamp>,
}

pub(super) const GRANT: &str = "SELECT id, tenant_id, granter, grantee, grantee_fingerprint, scopes, issued_at, \
    expires_at, signature, superseded_by, revoked_at, revoked_by, revoked_reason, last_used_at FROM grants";

pub(super) fn grant(r: AnyRow) -> Result<GrantRow, sqlx::Error> {
    let scopes: String = r.col("scopes")?;
    Ok(GrantRow {
        grant: AutoJoinGrant {
            id: r.col("id")?,
            granter: r.col("granter")?,
            grantee: r.col("grantee")?,
            grantee_fingerprint: r.col("grantee_fingerprint")?,
            scopes: scopes.split(',').filter_map(Scope::parse).collect(),
            issued_at: r.time("issued_at")?,
            expires_at: r.time("expires_at")?,
        },
        tenant_id: r.col("tenant_id")?,
        signature: r.col("signature")?,
        superseded_by: r.col("superseded_by")?,
        revoked_at: r.opt_time("revoked_at")?,
        revoked_by: r.col("revoked_by")?,
        revoked_reason: r.col("revoked_reason")?,
        last_used_at: r.opt_time("last_used_at")?,
    })
}

pub async fn insert_grant(
    tx: &mut Tx,
    tenant: &str,
    g: &AutoJoinGrant,
    signature: &str,
    now: Timestamp,
) -> StoreResult<()> {
    let scopes: Vec<&str> = g.scopes.iter().map(|s| s.as_str()).collect();
    let query = sqlx::query(
        "INSERT INTO grants (id, tenant_id, granter, grantee, grantee_fingerprint, scopes, issued_at, \
         expires_at, signature, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&g.id)
    .bind(tenant)
    .bind(&g.granter)
    .bind(&g.grantee)
    .bind(&g.grantee_fingerprint)
    .bind(scopes.join(","))
    .bind(g.issued_at.as_millis())
    .bind(g.expires_at.as_millis())
    .bind(signature)
    .bind(now.as_millis());
    insert_unique(tx, query).await
}

/// Marks every earlier live grant of the pair superseded by `newer`.
pub async fn supersede(
    tx: &mut Tx,
    granter: &str,
    grantee: &str,
    newer: &str,
) -> StoreResult<Vec<String>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "UPDATE grants SET superseded_by = $1 WHERE granter = $2 AND grantee = $3 AND id <> $1 \
         AND superseded_by IS NULL RETURNING id",
    )
    .bind(newer)
    .bind(granter)
    .bind(grantee)
    .fetch_all(&mut **tx)
    .await?;
    Ok(ids)
}

pub async fn grant_by_id<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: &str,
) -> StoreResult<Option<GrantRow>> {
    let sql = format!("{GRANT} WHERE id = $1");
    let query = sqlx::query(&sql).bind(id);
    Ok(query.try_map(grant).fetch_optional(ex).await?)
}

/// The current (not superseded) grant from `granter` to `grantee`.
pub async fn current_grant<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    granter: &str,
    grantee: &str,
) -> StoreResult<Option<GrantRow>> {
    let sql = format!("{GRANT} WHERE granter = $1 AND grantee = $2 AND superseded_by IS NULL ORDER BY issued_at DESC LIMIT 1");
    let query = sqlx::query(&sql).bind(granter).bind(grantee);
    Ok(query.try_map(grant).fetch_optional(ex).await?)
}

/// Revokes a live grant; false if unknown or already revoked.
pub async fn revoke_grant(
    tx: &mut Tx,
    id: &str,
    by: &str,
    reason: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let query = sqlx::query("UPDATE grants SET revoked_at = $1, revoked_by = $2, revoked_reason = $3 WHERE id = $4 AND revoked_at IS NULL")
        .bind(now.as_millis())
        .bind(by)
        .bind(reason)
        .bind(id);
    changed_one(&mut **tx, query).await
}

/// Current grants, optionally only those made by or to `device`.
pub async fn list_grants(
    db: &Db,
    tenant: &str,
    device: Option<&str>,
) -> StoreResult<Vec<GrantRow>> {
    let sql = format!(
        "{GRANT} WHERE tenant_id = $1 AND superseded_by IS NULL AND ($2 IS NULL OR granter = $2 OR grantee = $2) \
         ORDER BY issued_at DESC"
    );
    let query = sqlx::query(&sql).bind(tenant).bind(device);
    Ok(query.try_map(grant).fetch_all(db.pool()).await?)
}

/// Current grants that lapsed and whose expiry is not yet in the audit log;
/// marks them recorded.
pub async fn take_newly_expired(
    tx: &mut Tx,
    now: Timestamp,
) -> StoreResult<Vec<(String, String, String, String)>> {
    let rows = sqlx::query(
        "UPDATE grants SET expiry_recorded = 1 WHERE expiry_recorded = 0 AND revoked_at IS NULL \
         AND superseded_by IS NULL AND expires_at <= $1 RETURNING id, tenant_id, granter, grantee",
    )
    .bind(now.as_millis())
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.col("id")?,
                r.col("tenant_id")?,
                r.col("granter")?,
                r.col("grantee")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

pub async fn touch_grant(db: &Db, id: &str, now: Timestamp) -> StoreResult<()> {
    sqlx::query("UPDATE grants SET last_used_at = $1 WHERE id = $2")
        .bind(now.as_millis())
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

// ---- identity rotation ----------------------------------------------

pub struct Rotation<'a> {
    pub device_id: &'a str,
    pub epoch: u32,
    pub old_ed25519: &'a [u8; 32],
    pub new_ed25519: &'a [u8; 32],
    pub new_x25519: &'a [u8; 32],
    pub new_signature: &'a [u8; 64],
    pub statement: &'a str,
    pub signature: &'a str,
    pub now: Timestamp,
}

/// Moves a device to its next identity key, if it still holds `old_ed25519`
/// at the epoch before `epoch`; false otherwise (a stale or replayed
/// statement).
pub async fn rotate_identity(tx: &mut Tx, r: Rotation<'_>) -> StoreResult<bool> {
    let n = sqlx::query(
        "UPDATE devices SET ed25519_public = $1, x25519_public = $2, identity_signature = $3, key_epoch = $4 \
         WHERE id = $5 AND ed25519_public = $6 AND key_epoch = $7 AND revoked_at IS NULL",
    )
    .bind(r.new_ed25519.to_vec())
    .bind(r.new_x25519.to_vec())
    .bind(r.new_signature.to_vec())
    .bind(i64::from(r.epoch))
    .bind(r.device_id)
    .bind(r.old_ed25519.to_vec())
    .bind(i64::from(r.epoch) - 1)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if n != 1 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO key_rotations (id, device_id, epoch, old_ed25519, new_ed25519, statement, signature, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(r.device_id)
    .bind(i64::from(r.epoch))
    .bind(r.old_ed25519.to_vec())
    .bind(r.new_ed25519.to_vec())
    .bind(r.statement)
    .bind(r.signature)
    .bind(r.now.as_millis())
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

/// The rotation statements of a device, oldest first (statement, signature).
pub async fn rotations_of(db: &Db, device: &str) -> StoreResult<Vec<(String, String)>> {
    let rows = sqlx::query(
        "SELECT statement, signature FROM key_rotations WHERE device_id = $1 ORDER BY epoch",
    )
    .bind(device)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| Ok((r.col("statement")?, r.col("signature")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

// ---- automatic session members ------------------------------------------

pub async fn insert_member(
    tx: &mut Tx,
    session: &str,
    device: &str,
    index: u32,
    outcome: &str,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO session_members (session_id, device_id, member_index, outcome) VALUES ($1, $2, $3, $4)")
        .bind(session)
        .bind(device)
        .bind(i64::from(index))
        .bind(outcome)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// An invited member's own answer, as its row records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberAnswer<'a> {
    Joined,
    /// The member's local checks refused; its reason, as it gave it.
    Refused(&'a str),
}

impl MemberAnswer<'_> {
    pub fn word(&self) -> &str {
        match self {
            MemberAnswer::Joined => MemberOutcome::Joined.as_str(),
            MemberAnswer::Refused(reason) => reason,
        }
    }
}

/// Records a member's final outcome (joined, or its local refusal).
pub async fn set_member_outcome(
    tx: &mut Tx,
    session: &str,
    device: &str,
    answer: MemberAnswer<'_>,
    now: Timestamp,
) -> StoreResult<bool> {
    let joined = matches!(answer, MemberAnswer::Joined).then(|| now.as_millis());
    let query = sqlx::query(
        "UPDATE session_members SET outcome = $1, joined_at = $2 WHERE session_id = $3 AND device_id = $4 AND outcome = 'invited'",
    )
    .bind(answer.word())
    .bind(joined)
    .bind(session)
    .bind(device);
    changed_one(&mut **tx, query).await
}

/// Marks a member gone; `false` if it had already left.
pub async fn member_left(
    tx: &mut Tx,
    session: &str,
    device: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let query = sqlx::query("UPDATE session_members SET left_at = $1 WHERE session_id = $2 AND device_id = $3 AND left_at IS NULL")
        .bind(now.as_millis())
        .bind(session)
        .bind(device);
    changed_one(&mut **tx, query).await
}

/// (device, index, outcome) of each member of a session.
pub async fn members(db: &Db, session: &str) -> StoreResult<Vec<(String, u32, String)>> {
    let rows = sqlx::query("SELECT device_id, member_index, outcome FROM session_members WHERE session_id = $1 ORDER BY member_index")
        .bind(session)
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| {
            let idx: i64 = r.col("member_index")?;
            Ok((
                r.col("device_id")?,
                u32::try_from(idx).unwrap_or(0),
                r.col("outcome")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}
