//! Ingested device events, stored once per canonical id.

use tessera_core::Timestamp;

use super::{Columns, Db, StoreResult, Tx};

#[derive(Clone, Debug)]
pub struct NewEvent {
    pub event_id: String,
    pub kind: String,
    pub subject: String,
    pub occurred_at: Timestamp,
    pub attributes: String,
}

/// Rows per INSERT: 9 parameters each stays well under both backends'
/// parameter limits.
const CHUNK: usize = 400;

/// Inserts events not already stored; returns how many were new.
pub async fn insert_batch(
    tx: &mut Tx,
    tenant: &str,
    owner: &str,
    device: &str,
    events: &[NewEvent],
    now: Timestamp,
) -> StoreResult<u64> {
    let mut inserted = 0;
    for chunk in events.chunks(CHUNK) {
        let mut sql = String::from(
            "INSERT INTO events (tenant_id, event_id, owner_user_id, kind, subject, occurred_at, \
             attributes, device_id, received_at) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 9;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8,
                b + 9
            ));
        }
        sql.push_str(" ON CONFLICT (tenant_id, event_id) DO NOTHING");
        let mut q = sqlx::query(&sql);
        for e in chunk {
            q = q
                .bind(tenant)
                .bind(&e.event_id)
                .bind(owner)
                .bind(&e.kind)
                .bind(&e.subject)
                .bind(e.occurred_at.as_millis())
                .bind(&e.attributes)
                .bind(device)
                .bind(now.as_millis());
        }
        inserted += q.execute(&mut **tx).await?.rows_affected();
    }
    Ok(inserted)
}

#[derive(Clone, Debug)]
pub struct EventRow {
    pub event_id: String,
    pub owner_user_id: String,
    pub kind: String,
    pub subject: String,
    pub occurred_at: Timestamp,
    pub attributes: String,
    pub device_id: String,
    pub received_at: Timestamp,
}

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub kind: Option<String>,
    pub device_id: Option<String>,
    pub since: Option<Timestamp>,
    pub limit: i64,
    /// Page cursor: events received after this (received_at, event_id).
    pub after: Option<(i64, String)>,
}

pub async fn list(db: &Db, tenant: &str, f: &Filter) -> StoreResult<Vec<EventRow>> {
    let (after_ts, after_id) = f.after.clone().unwrap_or((i64::MIN, String::new()));
    let rows = sqlx::query(
        "SELECT event_id, owner_user_id, kind, subject, occurred_at, attributes, device_id, received_at \
         FROM events WHERE tenant_id = $1 \
           AND ($2 IS NULL OR kind = $2) AND ($3 IS NULL OR device_id = $3) \
           AND ($4 IS NULL OR occurred_at >= $4) \
           AND (received_at > $5 OR (received_at = $5 AND event_id > $6)) \
         ORDER BY received_at, event_id LIMIT $7",
    )
    .bind(tenant)
    .bind(f.kind.as_deref())
    .bind(f.device_id.as_deref())
    .bind(f.since.map(Timestamp::as_millis))
    .bind(after_ts)
    .bind(after_id)
    .bind(f.limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EventRow {
                event_id: r.col("event_id")?,
                owner_user_id: r.col("owner_user_id")?,
                kind: r.col("kind")?,
                subject: r.col("subject")?,
                occurred_at: r.time("occurred_at")?,
                attributes: r.col("attributes")?,
                device_id: r.col("device_id")?,
                received_at: r.time("received_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// How many events the tenant has stored.
pub async fn count(db: &Db, tenant: &str) -> StoreResult<i64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(db.pool())
        .await?;
    Ok(n)
}
