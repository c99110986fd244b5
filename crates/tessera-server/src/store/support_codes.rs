//! Support codes: one attended session each. Binding is one conditional
//! UPDATE, so among concurrent binders exactly one wins.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor};
use tessera_core::kinds::{SessionAccess, SessionChannel, SupportCodeState};
use tessera_core::Timestamp;

use super::{changed_one, insert_unique, Columns, StoreResult, Tx};

#[derive(Clone, Debug)]
pub struct SupportCodeRow {
    pub id: String,
    pub tenant_id: String,
    pub access: SessionAccess,
    /// What the attended session will carry.
    pub channel: SessionChannel,
    pub created_by: String,
    pub created_by_name: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub state: SupportCodeState,
    pub session_id: Option<String>,
}

impl SupportCodeRow {
    /// Whether the code can still be previewed and bound.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.state == SupportCodeState::Active && self.expires_at > now
    }
}

const SELECT: &str =
    "SELECT c.id, c.tenant_id, c.access, c.channel, c.created_by, u.username, c.created_at, \
    c.expires_at, c.state, c.session_id FROM support_codes c JOIN users u ON u.id = c.created_by";

fn from_row(r: AnyRow) -> Result<SupportCodeRow, sqlx::Error> {
    Ok(SupportCodeRow {
        id: r.col("id")?,
        tenant_id: r.col("tenant_id")?,
        access: r.word("access")?,
        channel: r.word("channel")?,
        created_by: r.col("created_by")?,
        created_by_name: r.col("username")?,
        created_at: r.time("created_at")?,
        expires_at: r.time("expires_at")?,
        state: r.word("state")?,
        session_id: r.col("session_id")?,
    })
}

pub struct NewCode<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub code_hash: &'a [u8; 32],
    pub access: SessionAccess,
    pub channel: SessionChannel,
    pub created_by: &'a str,
    pub now: Timestamp,
    pub expires_at: Timestamp,
}

pub async fn insert(tx: &mut Tx, c: NewCode<'_>) -> StoreResult<()> {
    let query = sqlx::query(
        "INSERT INTO support_codes (id, tenant_id, code_hash, access, created_by, created_at, expires_at, state, channel) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8)",
    )
    .bind(c.id)
    .bind(c.tenant_id)
    .bind(c.code_hash.to_vec())
    .bind(c.access.as_str())
    .bind(c.created_by)
    .bind(c.now.as_millis())
    .bind(c.expires_at.as_millis())
    .bind(c.channel.as_str());
    insert_unique(tx, query).await
}

pub async fn by_hash<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    hash: &[u8; 32],
) -> StoreResult<Option<SupportCodeRow>> {
    let sql = format!("{SELECT} WHERE c.code_hash = $1");
    let query = sqlx::query(&sql).bind(hash.to_vec());
    Ok(query.try_map(from_row).fetch_optional(ex).await?)
}

/// The codes `user` asked for, newest first.
pub async fn of_creator(
    db: &super::Db,
    tenant: &str,
    user: &str,
    limit: i64,
) -> StoreResult<Vec<SupportCodeRow>> {
    let sql = format!(
        "{SELECT} WHERE c.tenant_id = $1 AND c.created_by = $2 ORDER BY c.created_at DESC, c.id DESC LIMIT $3"
    );
    let query = sqlx::query(&sql).bind(tenant).bind(user).bind(limit);
    Ok(query.try_map(from_row).fetch_all(db.pool()).await?)
}

/// active → consumed, bound to `session_id`; false if someone else won,
/// or the code is expired or revoked.
pub async fn consume(tx: &mut Tx, id: &str, session_id: &str, now: Timestamp) -> StoreResult<bool> {
    let query = sqlx::query(
        "UPDATE support_codes SET state = 'consumed', consumed_at = $1, session_id = $2 \
         WHERE id = $3 AND state = 'active' AND expires_at > $1",
    )
    .bind(now.as_millis())
    .bind(session_id)
    .bind(id);
    changed_one(&mut **tx, query).await
}

/// Marks lapsed active codes expired; returns (id, tenant) of each.
pub async fn expire_lapsed(tx: &mut Tx, now: Timestamp) -> StoreResult<Vec<(String, String)>> {
    let rows = sqlx::query(
        "UPDATE support_codes SET state = 'expired' WHERE state = 'active' AND expires_at <= $1 \
         RETURNING id, tenant_id",
    )
    .bind(now.as_millis())
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| Ok((r.col("id")?, r.col("tenant_id")?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}
