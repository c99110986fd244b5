//! The audit chain's rows, and the typed events they are made from.
//!
//! Every call site names an [`Action`] and fills [`AuditEvent::details`] with
//! ids, names and reasons. There is deliberately no way to pass a secret type
//! here: callers hand over `Secret::prefix()` when a credential must be named.
//!
//! Appending first bumps the single `audit_head` row. That UPDATE takes the
//! row's lock (PostgreSQL) or the database write lock (SQLite), so concurrent
//! appenders, in this process or another, queue there and each links to the
//! head the previous one left: the chain stays linear without an advisory
//! lock, and a rolled-back append leaves no gap.

use std::net::IpAddr;

use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::Row;
use tessera_core::audit::{canonical_json, chain_hash, AuditContent};
use tessera_core::Timestamp;

use super::{to_hash, Arg, Built, Columns, Db, StoreResult, Tx};

/// Who acted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    User(String),
    Device(String),
    /// An unauthenticated caller, known by address.
    Anonymous,
    System,
}

impl Actor {
    pub fn render(&self, ip: Option<IpAddr>) -> String {
        match self {
            Actor::User(id) => format!("user:{id}"),
            Actor::Device(id) => format!("device:{id}"),
            Actor::Anonymous => match ip {
                Some(ip) => format!("ip:{ip}"),
                None => "anonymous".to_owned(),
            },
            Actor::System => "system".to_owned(),
        }
    }
}

/// Everything the audit log records. The string forms are stable: they are
/// what `GET /api/v1/audit?action=` filters on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    BootstrapAdminCreated,
    AdminPasswordReset,
    LoginSucceeded,
    LoginFailed,
    LockoutTriggered,
    Logout,
    PasswordChanged,
    UserCreated,
    UserRoleChanged,
    UserDisabled,
    UserEnabled,
    PairingRequested,
    PairingApproved,
    PairingDenied,
    PairingReplaced,
    DeviceEnrolled,
    DeviceAuthFailed,
    DeviceStalled,
    DeviceRevoked,
    DeviceTagged,
    KeyIssued,
    KeyRotated,
    KeyRevoked,
    EnrollmentTokenCreated,
    EnrollmentTokenUsed,
    EnrollmentTokenExhausted,
    EnrollmentTokenRevoked,
    EnrollmentRefused,
    SessionCreated,
    SessionJoined,
    SessionLeft,
    SessionEnded,
    ConsentRequested,
    ConsentGranted,
    ConsentDenied,
    ConsentUnavailable,
    ConsentTimedOut,
    ConsentAbandoned,
    SupportCodeCreated,
    SupportCodeConsumed,
    SupportCodeExpired,
    SupportCodeRefused,
    ViewerTokenMinted,
    ViewerThrottled,
    PolicyChanged,
    TrustEstablished,
    TrustRemoved,
    GrantCreated,
    GrantRenewed,
    GrantRevoked,
    GrantExpired,
    IdentityKeyRotated,
    AutoSessionCreated,
    AutoJoin,
    AutoMemberLeft,
    AuditCheckpointRefused,
    ScreenOpened,
    ScreenReconfigured,
    ScreenClosed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::BootstrapAdminCreated => "bootstrap_admin_created",
            Action::AdminPasswordReset => "admin_password_reset",
            Action::LoginSucceeded => "login_succeeded",
            Action::LoginFailed => "login_failed",
            Action::LockoutTriggered => "lockout_triggered",
            Action::Logout => "logout",
            Action::PasswordChanged => "password_changed",
            Action::UserCreated => "user_created",
            Action::UserRoleChanged => "user_role_changed",
            Action::UserDisabled => "user_disabled",
            Action::UserEnabled => "user_enabled",
            Action::PairingRequested => "pairing_requested",
            Action::PairingApproved => "pairing_approved",
            Action::PairingDenied => "pairing_denied",
            Action::PairingReplaced => "pairing_replaced",
            Action::DeviceEnrolled => "device_enrolled",
            Action::DeviceAuthFailed => "device_auth_failed",
            Action::DeviceStalled => "device_stalled",
            Action::DeviceRevoked => "device_revoked",
            Action::DeviceTagged => "device_tagged",
            Action::KeyIssued => "key_issued",
            Action::KeyRotated => "key_rotated",
            Action::KeyRevoked => "key_revoked",
            Action::EnrollmentTokenCreated => "enrollment_token_created",
            Action::EnrollmentTokenUsed => "enrollment_token_used",
            Action::EnrollmentTokenExhausted => "enrollment_token_exhausted",
            Action::EnrollmentTokenRevoked => "enrollment_token_revoked",
            Action::EnrollmentRefused => "enrollment_refused",
            Action::SessionCreated => "session_created",
            Action::SessionJoined => "session_joined",
            Action::SessionLeft => "session_left",
            Action::SessionEnded => "session_ended",
            Action::ConsentRequested => "consent_requested",
            Action::ConsentGranted => "consent_granted",
            Action::ConsentDenied => "consent_denied",
            Action::ConsentUnavailable => "consent_unavailable",
            Action::ConsentTimedOut => "consent_timed_out",
            Action::ConsentAbandoned => "consent_abandoned",
            Action::SupportCodeCreated => "support_code_created",
            Action::SupportCodeConsumed => "support_code_consumed",
            Action::SupportCodeExpired => "support_code_expired",
            Action::SupportCodeRefused => "support_code_refused",
            Action::ViewerTokenMinted => "viewer_token_minted",
            Action::ViewerThrottled => "viewer_throttled",
            Action::PolicyChanged => "policy_changed",
            Action::TrustEstablished => "trust_established",
            Action::TrustRemoved => "trust_removed",
            Action::GrantCreated => "grant_created",
            Action::GrantRenewed => "grant_renewed",
            Action::GrantRevoked => "grant_revoked",
            Action::GrantExpired => "grant_expired",
            Action::IdentityKeyRotated => "identity_key_rotated",
            Action::AutoSessionCreated => "auto_session_created",
            Action::AutoJoin => "auto_join",
            Action::AutoMemberLeft => "auto_member_left",
            Action::AuditCheckpointRefused => "audit_checkpoint_refused",
            Action::ScreenOpened => "screen_opened",
            Action::ScreenReconfigured => "screen_reconfigured",
            Action::ScreenClosed => "screen_closed",
        }
    }
}

/// One event to append.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub tenant_id: String,
    pub actor: Actor,
    pub action: Action,
    pub target: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub details: Map<String, Value>,
}

impl AuditEvent {
    pub fn new(tenant_id: &str, actor: Actor, action: Action) -> Self {
        AuditEvent {
            tenant_id: tenant_id.to_owned(),
            actor,
            action,
            target: None,
            source_ip: None,
            details: Map::new(),
        }
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn ip(mut self, ip: Option<IpAddr>) -> Self {
        self.source_ip = ip;
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// Appends `event` inside `tx`, so it commits or rolls back with the change
/// it records.
pub async fn record(tx: &mut Tx, now: Timestamp, event: AuditEvent) -> StoreResult<i64> {
    let actor = event.actor.render(event.source_ip);
    let ip = event.source_ip.map(|ip| ip.to_string());
    let details = canonical_json(&Value::Object(event.details));
    append(
        tx,
        NewEntry {
            occurred_at: now,
            tenant_id: &event.tenant_id,
            actor: &actor,
            action: event.action.as_str(),
            target: event.target.as_deref(),
            source_ip: ip.as_deref(),
            details,
        },
    )
    .await
}

/// What the caller supplies; the store assigns `seq` and the hashes.
pub struct NewEntry<'a> {
    pub occurred_at: Timestamp,
    pub tenant_id: &'a str,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub source_ip: Option<&'a str>,
    /// Canonical JSON text.
    pub details: String,
}

#[derive(Clone, Debug)]
pub struct AuditRow {
    pub content: AuditContent,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// Appends one row inside `tx`; returns its sequence number.
pub async fn append(tx: &mut Tx, e: NewEntry<'_>) -> StoreResult<i64> {
    // Returns the new seq and the previous head hash (unchanged by this SET).
    let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut **tx)
        .await?;
    let seq: i64 = head.try_get("seq")?;
    let prev_hash = to_hash(head.try_get("hash")?);
    let content = AuditContent {
        seq,
        occurred_at: e.occurred_at,
        tenant_id: e.tenant_id.to_owned(),
        actor: e.actor.to_owned(),
        action: e.action.to_owned(),
        target: e.target.map(str::to_owned),
        source_ip: e.source_ip.map(str::to_owned),
        details: e.details,
    };
    let hash = chain_hash(&prev_hash, &content);
    sqlx::query(
        "INSERT INTO audit_log \
         (seq, occurred_at, tenant_id, actor, action, target, source_ip, details, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(seq)
    .bind(content.occurred_at.as_millis())
    .bind(&content.tenant_id)
    .bind(&content.actor)
    .bind(&content.action)
    .bind(&content.target)
    .bind(&content.source_ip)
    .bind(&content.details)
    .bind(prev_hash.to_vec())
    .bind(hash.to_vec())
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(hash.to_vec())
        .execute(&mut **tx)
        .await?;
    Ok(seq)
}

/// Filters for listing; all optional, combined with AND.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub tenant_id: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    /// Only rows about this target, e.g. `device:<id>`.
    pub target: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Rows with `seq` greater than this (the pagination cursor).
    pub after_seq: Option<i64>,
    /// Rows with `seq` less than this (the cursor when newest first).
    pub before_seq: Option<i64>,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
    pub limit: i64,
}

fn from_row(r: AnyRow) -> Result<AuditRow, sqlx::Error> {
    Ok(AuditRow {
        content: AuditContent {
            seq: r.col("seq")?,
            occurred_at: r.time("occurred_at")?,
            tenant_id: r.col("tenant_id")?,
            actor: r.col("actor")?,
            action: r.col("action")?,
            target: r.col("target")?,
            source_ip: r.col("source_ip")?,
            details: r.col("details")?,
        },
        prev_hash: r.key32("prev_hash")?,
        hash: r.key32("hash")?,
    })
}

/// The listing statement for `f`: only the filters that are set become
/// clauses, so each combination is its own statement with its own plan,
/// and an equality filter meets its `(column, seq)` index (a catch-all
/// `$1 IS NULL OR …` would keep the planner off every index). Values are
/// bound, never spliced. Pure: tests read it, [`list`] runs it.
pub(crate) fn list_sql(f: &Filter) -> Built {
    let mut b = Built::default();
    let mut clauses = Vec::new();
    let text = |b: &mut Built, v: &Option<String>| v.clone().map(|v| b.arg(Arg::Text(v)));
    if let Some(p) = text(&mut b, &f.tenant_id) {
        clauses.push(format!("tenant_id = {p}"));
    }
    if let Some(p) = text(&mut b, &f.action) {
        clauses.push(format!("action = {p}"));
    }
    if let Some(p) = text(&mut b, &f.actor) {
        clauses.push(format!("actor = {p}"));
    }
    if let Some(p) = text(&mut b, &f.target) {
        clauses.push(format!("target = {p}"));
    }
    if let Some(t) = f.since {
        let p = b.arg(Arg::Int(t.as_millis()));
        // With no end, the newest rows since then are the first ones met
        // walking `seq` down: `+occurred_at` keeps the planner from
        // reading every row since then through the time index and sorting
        // them (rows are appended in time order, so the walk stops at the
        // page's last row). With an end, the time index finds the window.
        let column = if f.until.is_none() && f.newest_first {
            "+occurred_at"
        } else {
            "occurred_at"
        };
        clauses.push(format!("{column} >= {p}"));
    }
    if let Some(t) = f.until {
        let p = b.arg(Arg::Int(t.as_millis()));
        clauses.push(format!("occurred_at < {p}"));
    }
    if let Some(seq) = f.after_seq {
        let p = b.arg(Arg::Int(seq));
        clauses.push(format!("seq > {p}"));
    }
    if let Some(seq) = f.before_seq {
        let p = b.arg(Arg::Int(seq));
        clauses.push(format!("seq < {p}"));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let order = if f.newest_first { "DESC" } else { "ASC" };
    let limit = b.arg(Arg::Int(f.limit));
    b.sql = format!(
        "SELECT seq, occurred_at, tenant_id, actor, action, target, source_ip, details, \
                prev_hash, hash \
         FROM audit_log {filter} ORDER BY seq {order} LIMIT {limit}"
    );
    b
}

/// Rows matching `f`, oldest first (or newest first).
pub async fn list(db: &Db, f: &Filter) -> StoreResult<Vec<AuditRow>> {
    let built = list_sql(f);
    Ok(built.query().try_map(from_row).fetch_all(db.pool()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_set_filters_become_clauses_and_values_are_bound() {
        let all = list_sql(&Filter {
            limit: 50,
            newest_first: true,
            ..Filter::default()
        });
        assert!(!all.sql.contains("WHERE"), "{}", all.sql);
        assert!(all.sql.ends_with("ORDER BY seq DESC LIMIT $1"));
        let some = list_sql(&Filter {
            action: Some("x' OR 1=1 --".to_owned()),
            before_seq: Some(900),
            limit: 50,
            ..Filter::default()
        });
        assert!(
            some.sql.contains("WHERE action = $1 AND seq < $2"),
            "{}",
            some.sql
        );
        assert!(!some.sql.contains("OR 1=1"));
        assert_eq!(
            some.args,
            [
                Arg::Text("x' OR 1=1 --".to_owned()),
                Arg::Int(900),
                Arg::Int(50)
            ]
        );
    }
}
