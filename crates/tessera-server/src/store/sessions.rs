//! Relay sessions (attended, managed, automatic): their state and consent.
//! Every transition is a conditional UPDATE on the state it leaves.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor};
use tessera_core::ids::SessionId;
use tessera_core::kinds::{Consent, EndCode, Origin, SessionAccess, SessionChannel, SessionState};
use tessera_core::Timestamp;

use super::{changed_one, Columns, Db, StoreResult, Tx};

#[derive(Clone, Debug)]
pub struct SessionRow {
    pub id: SessionId,
    pub tenant_id: String,
    pub origin: Origin,
    pub device_id: String,
    pub device_name: String,
    pub created_by: String,
    pub created_by_name: Option<String>,
    pub access: SessionAccess,
    /// What it carries: a shell or the screen.
    pub channel: SessionChannel,
    pub consent: Consent,
    pub state: SessionState,
    pub created_at: Timestamp,
    pub consent_deadline: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// Kept as stored: rows ended by older versions may carry other words.
    pub end_code: Option<String>,
    pub end_reason: Option<String>,
}

const SELECT: &str = "SELECT s.id, s.tenant_id, s.origin, s.device_id, d.name AS device_name, \
    s.created_by, u.username, s.access, s.channel, s.consent, s.state, s.created_at, s.consent_deadline, \
    s.started_at, s.ended_at, s.end_code, s.end_reason \
    FROM sessions s JOIN devices d ON d.id = s.device_id LEFT JOIN users u ON u.id = s.created_by";

fn from_row(r: AnyRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id: r.id("id")?,
        tenant_id: r.col("tenant_id")?,
        origin: r.word("origin")?,
        device_id: r.col("device_id")?,
        device_name: r.col("device_name")?,
        created_by: r.col("created_by")?,
        created_by_name: r.col("username")?,
        access: r.word("access")?,
        channel: r.word("channel")?,
        consent: r.word("consent")?,
        state: r.word("state")?,
        created_at: r.time("created_at")?,
        consent_deadline: r.opt_time("consent_deadline")?,
        started_at: r.opt_time("started_at")?,
        ended_at: r.opt_time("ended_at")?,
        end_code: r.col("end_code")?,
        end_reason: r.col("end_reason")?,
    })
}

pub struct NewSession<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub origin: Origin,
    pub device_id: &'a str,
    pub created_by: &'a str,
    pub access: SessionAccess,
    pub channel: SessionChannel,
    /// `pending` or `not_required`.
    pub consent: Consent,
    pub support_code_id: Option<&'a str>,
    pub now: Timestamp,
    pub consent_deadline: Option<Timestamp>,
}

/// Inserts a session: `pending` while consent is pending, else `active`.
pub async fn insert(tx: &mut Tx, s: NewSession<'_>) -> StoreResult<()> {
    let state = SessionState::initial(s.consent);
    let active = state.carries_traffic();
    sqlx::query(
        "INSERT INTO sessions (id, tenant_id, origin, device_id, created_by, access, consent, state, \
         support_code_id, created_at, consent_deadline, started_at, channel) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(s.id)
    .bind(s.tenant_id)
    .bind(s.origin.as_str())
    .bind(s.device_id)
    .bind(s.created_by)
    .bind(s.access.as_str())
    .bind(s.consent.as_str())
    .bind(state.as_str())
    .bind(s.support_code_id)
    .bind(s.now.as_millis())
    .bind(s.consent_deadline.map(Timestamp::as_millis))
    .bind(active.then(|| s.now.as_millis()))
    .bind(s.channel.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn by_id<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    tenant: &str,
    id: &str,
) -> StoreResult<Option<SessionRow>> {
    let sql = format!("{SELECT} WHERE s.tenant_id = $1 AND s.id = $2");
    let query = sqlx::query(&sql).bind(tenant).bind(id);
    Ok(query.try_map(from_row).fetch_optional(ex).await?)
}

/// Sessions `viewer` may see: all but attended ones whose consent was never
/// granted, which only their creator sees.
pub async fn list_visible(
    db: &Db,
    tenant: &str,
    viewer: &str,
    include_ended: bool,
) -> StoreResult<Vec<SessionRow>> {
    let sql = format!(
        "{SELECT} WHERE s.tenant_id = $1 \
         AND (s.origin <> 'attended' OR s.consent = 'granted' OR s.created_by = $2) \
         AND ($3 = 1 OR s.state <> 'ended') \
         ORDER BY s.created_at DESC LIMIT 500"
    );
    let query = sqlx::query(&sql)
        .bind(tenant)
        .bind(viewer)
        .bind(i64::from(include_ended));
    Ok(query.try_map(from_row).fetch_all(db.pool()).await?)
}

/// Which sessions a page of the console lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listed {
    /// Pending or active, newest first.
    Live,
    /// Ended, most recently ended first.
    Ended,
}

/// One page of the sessions `viewer` may see (as [`list_visible`]), read
/// in index order: `(tenant_id, state, created_at)` for live ones,
/// `(tenant_id, state, ended_at, id)` for ended ones. Returns up to
/// `limit + 1` rows: the extra one says a next page exists, without
/// counting every ended session.
pub async fn page(
    db: &Db,
    tenant: &str,
    viewer: &str,
    listed: Listed,
    offset: i64,
    limit: i64,
) -> StoreResult<Vec<SessionRow>> {
    let (states, order) = match listed {
        Listed::Live => ("state IN ('pending', 'active')", "created_at DESC, id DESC"),
        Listed::Ended => ("state = 'ended'", "ended_at DESC, id DESC"),
    };
    // The page's ids are chosen from `sessions` alone, through an index
    // that also holds the visibility columns, so the rows an offset skips
    // cost an index entry each; only the page's rows are joined.
    let sql = format!(
        "{SELECT} WHERE s.id IN (SELECT id FROM sessions WHERE tenant_id = $1 AND {states} \
           AND (origin <> 'attended' OR consent = 'granted' OR created_by = $2) \
           ORDER BY {order} LIMIT $3 OFFSET $4) \
         ORDER BY s.{}",
        order.replace(", ", ", s.")
    );
    let query = sqlx::query(&sql)
        .bind(tenant)
        .bind(viewer)
        .bind(limit + 1)
        .bind(offset);
    Ok(query.try_map(from_row).fetch_all(db.pool()).await?)
}

/// The newest sessions of one device that `viewer` may see (as
/// [`list_visible`]), through the `(device_id, state)` index.
pub async fn recent_for_device(
    db: &Db,
    tenant: &str,
    viewer: &str,
    device_id: &str,
    limit: i64,
) -> StoreResult<Vec<SessionRow>> {
    let sql = format!(
        "{SELECT} WHERE s.device_id = $1 AND s.tenant_id = $2 \
         AND (s.origin <> 'attended' OR s.consent = 'granted' OR s.created_by = $3) \
         ORDER BY s.created_at DESC, s.id DESC LIMIT $4"
    );
    let query = sqlx::query(&sql)
        .bind(device_id)
        .bind(tenant)
        .bind(viewer)
        .bind(limit);
    Ok(query.try_map(from_row).fetch_all(db.pool()).await?)
}

/// Sessions of a device waiting for its consent.
pub async fn pending_for_device(db: &Db, device_id: &str) -> StoreResult<Vec<SessionRow>> {
    let sql = format!(
        "{SELECT} WHERE s.device_id = $1 AND s.consent = 'pending' AND s.state = 'pending'"
    );
    let query = sqlx::query(&sql).bind(device_id);
    Ok(query.try_map(from_row).fetch_all(db.pool()).await?)
}

/// Live (pending or active) sessions of a device.
pub async fn live_for_device(db: &Db, device_id: &str) -> StoreResult<Vec<SessionRow>> {
    let sql = format!("{SELECT} WHERE s.device_id = $1 AND s.state <> 'ended'");
    let query = sqlx::query(&sql).bind(device_id);
    Ok(query.try_map(from_row).fetch_all(db.pool()).await?)
}

/// pending consent → granted: the session becomes active, unless its
/// consent deadline has passed.
pub async fn grant_consent(tx: &mut Tx, id: &str, now: Timestamp) -> StoreResult<bool> {
    let query = sqlx::query(
        "UPDATE sessions SET consent = 'granted', state = 'active', started_at = $1 \
         WHERE id = $2 AND consent = 'pending' AND state = 'pending' \
           AND (consent_deadline IS NULL OR consent_deadline > $1)",
    )
    .bind(now.as_millis())
    .bind(id);
    changed_one(&mut **tx, query).await
}

/// pending consent → denied (refused, timed out or abandoned): the session
/// ends before it began.
pub async fn refuse_consent(
    tx: &mut Tx,
    id: &str,
    code: EndCode,
    reason: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let query = sqlx::query(
        "UPDATE sessions SET consent = 'denied', state = 'ended', ended_at = $1, end_code = $2, end_reason = $3 \
         WHERE id = $4 AND consent = 'pending' AND state = 'pending'",
    )
    .bind(now.as_millis())
    .bind(code.as_str())
    .bind(reason)
    .bind(id);
    changed_one(&mut **tx, query).await
}

/// Ends a live session; false if it had already ended.
pub async fn end(
    tx: &mut Tx,
    id: &str,
    code: EndCode,
    reason: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let query = sqlx::query(
        "UPDATE sessions SET state = 'ended', ended_at = $1, end_code = $2, end_reason = $3 \
         WHERE id = $4 AND state <> 'ended'",
    )
    .bind(now.as_millis())
    .bind(code.as_str())
    .bind(reason)
    .bind(id);
    changed_one(&mut **tx, query).await
}

/// Sessions not yet ended (pending or active) whose device no node has
/// connected (never connected, disconnected, or not seen since `cutoff`),
/// for the start-up reconcile. Not automatic sessions (see
/// [`active_with_device_gone`]).
pub async fn live_with_device_offline(db: &Db, cutoff: Timestamp) -> StoreResult<Vec<String>> {
    let ids = sqlx::query_scalar(
        "SELECT s.id FROM sessions s JOIN devices d ON d.id = s.device_id \
         WHERE s.state <> 'ended' AND s.origin <> 'automatic' AND (d.connected_at IS NULL \
            OR (d.disconnected_at IS NOT NULL AND d.disconnected_at >= d.connected_at) \
            OR d.last_seen_at < $1)",
    )
    .bind(cutoff.as_millis())
    .fetch_all(db.pool())
    .await?;
    Ok(ids)
}

/// Sessions not yet ended that an operator since disabled opened.
pub async fn live_of_disabled_users(db: &Db) -> StoreResult<Vec<String>> {
    let ids = sqlx::query_scalar(
        "SELECT s.id FROM sessions s JOIN users u ON u.id = s.created_by \
         WHERE s.state <> 'ended' AND u.disabled_at IS NOT NULL",
    )
    .fetch_all(db.pool())
    .await?;
    Ok(ids)
}

/// A session by id in any tenant (for the device and relay side, which know
/// the session id from a trusted source).
pub async fn by_id_any_tenant<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    id: &str,
) -> StoreResult<Option<SessionRow>> {
    let sql = format!("{SELECT} WHERE s.id = $1");
    let query = sqlx::query(&sql).bind(id);
    Ok(query.try_map(from_row).fetch_optional(ex).await?)
}

/// Pending sessions whose consent deadline has passed.
pub async fn pending_past_deadline(db: &Db, now: Timestamp) -> StoreResult<Vec<String>> {
    let ids = sqlx::query_scalar(
        "SELECT id FROM sessions WHERE state = 'pending' AND consent_deadline IS NOT NULL \
         AND consent_deadline <= $1",
    )
    .bind(now.as_millis())
    .fetch_all(db.pool())
    .await?;
    Ok(ids)
}

/// Active sessions whose device disconnected, or has not been seen since
/// `cutoff` by any node. Not automatic sessions: their device is the
/// creator, whose client connection (a `tessera send`) never marks it
/// online; they end when that connection closes, on the node routing them.
pub async fn active_with_device_gone(db: &Db, cutoff: Timestamp) -> StoreResult<Vec<String>> {
    let ids = sqlx::query_scalar(
        "SELECT s.id FROM sessions s JOIN devices d ON d.id = s.device_id \
         WHERE s.state = 'active' AND s.origin <> 'automatic' AND (d.connected_at IS NULL \
            OR (d.disconnected_at IS NOT NULL AND d.disconnected_at >= d.connected_at) \
            OR d.last_seen_at < $1)",
    )
    .bind(cutoff.as_millis())
    .fetch_all(db.pool())
    .await?;
    Ok(ids)
}

/// Records, in the transaction creating it, that `node` routes an
/// automatic session (the node its creator is connected to): if that node
/// is lost, the others' sweeps end it `node_lost`.
pub async fn set_routing_node(tx: &mut Tx, id: &str, node: &str) -> StoreResult<()> {
    sqlx::query("UPDATE sessions SET node_id = $1 WHERE id = $2")
        .bind(node)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records that `node` relays the session from now on.
pub async fn set_relay_node(db: &Db, id: &str, node: &str) -> StoreResult<()> {
    sqlx::query("UPDATE sessions SET node_id = $1 WHERE id = $2")
        .bind(node)
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// The node relaying an active session, while that node's lease is live.
/// Not an automatic session's hub: nothing relays those to viewers.
pub async fn relay_node(db: &Db, id: &str, now: Timestamp) -> StoreResult<Option<String>> {
    let node = sqlx::query_scalar(
        "SELECT n.id FROM sessions s JOIN nodes n ON n.id = s.node_id \
         WHERE s.id = $1 AND s.state = 'active' AND s.origin <> 'automatic' \
         AND n.lease_until > $2",
    )
    .bind(id)
    .bind(now.as_millis())
    .fetch_optional(db.pool())
    .await?;
    Ok(node)
}

/// Active sessions relayed (or, automatic ones, routed) by a node other
/// than `me` whose lease lapsed (or was given up): nothing relays them any
/// more. Never `me`'s own: its lease may lapse while the database is away.
pub async fn active_on_lost_nodes(db: &Db, me: &str, now: Timestamp) -> StoreResult<Vec<String>> {
    let ids = sqlx::query_scalar(
        "SELECT s.id FROM sessions s LEFT JOIN nodes n ON n.id = s.node_id \
         WHERE s.state = 'active' AND s.node_id IS NOT NULL AND s.node_id <> $2 \
         AND (n.id IS NULL OR n.lease_until <= $1)",
    )
    .bind(now.as_millis())
    .bind(me)
    .fetch_all(db.pool())
    .await?;
    Ok(ids)
}

/// Active sessions recorded as relayed by `node`.
pub async fn active_relayed_by(db: &Db, node: &str) -> StoreResult<Vec<String>> {
    let ids = sqlx::query_scalar("SELECT id FROM sessions WHERE state = 'active' AND node_id = $1")
        .bind(node)
        .fetch_all(db.pool())
        .await?;
    Ok(ids)
}
