//! The audit chain's rows.
//!
//! Appending first bumps the single `audit_head` row. That UPDATE takes the
//! row's lock (PostgreSQL) or the database write lock (SQLite), so concurrent
//! appenders, in this process or another, queue there and each links to the
//! head the previous one left: the chain stays linear without an advisory
//! lock, and a rolled-back append leaves no gap.

use sqlx::any::AnyRow;
use sqlx::Row;
use tessera_core::audit::{chain_hash, AuditContent};
use tessera_core::Timestamp;

use super::{to_hash, Db, StoreResult, Tx};

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
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Rows with `seq` greater than this (the pagination cursor).
    pub after_seq: Option<i64>,
    pub limit: i64,
}

fn from_row(r: &AnyRow) -> Result<AuditRow, sqlx::Error> {
    Ok(AuditRow {
        content: AuditContent {
            seq: r.try_get("seq")?,
            occurred_at: Timestamp::from_millis(r.try_get("occurred_at")?),
            tenant_id: r.try_get("tenant_id")?,
            actor: r.try_get("actor")?,
            action: r.try_get("action")?,
            target: r.try_get("target")?,
            source_ip: r.try_get("source_ip")?,
            details: r.try_get("details")?,
        },
        prev_hash: to_hash(r.try_get("prev_hash")?),
        hash: to_hash(r.try_get("hash")?),
    })
}

/// Rows matching `f`, oldest first.
pub async fn list(db: &Db, f: &Filter) -> StoreResult<Vec<AuditRow>> {
    // Unset filters compare against NULL and drop out, which keeps this one
    // statement (and one query plan) instead of string-built SQL.
    let rows = sqlx::query(
        "SELECT seq, occurred_at, tenant_id, actor, action, target, source_ip, details, \
                prev_hash, hash \
         FROM audit_log \
         WHERE ($1 IS NULL OR tenant_id = $1) \
           AND ($2 IS NULL OR action = $2) \
           AND ($3 IS NULL OR actor = $3) \
           AND ($4 IS NULL OR occurred_at >= $4) \
           AND ($5 IS NULL OR occurred_at < $5) \
           AND seq > $6 \
         ORDER BY seq LIMIT $7",
    )
    .bind(f.tenant_id.as_deref())
    .bind(f.action.as_deref())
    .bind(f.actor.as_deref())
    .bind(f.since.map(Timestamp::as_millis))
    .bind(f.until.map(Timestamp::as_millis))
    .bind(f.after_seq.unwrap_or(0))
    .bind(f.limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}
