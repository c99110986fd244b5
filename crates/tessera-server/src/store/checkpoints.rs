//! Signed checkpoints of the audit chain, and the chain head they sign.
//!
//! A checkpoint row holds what a node signed (`seq`, that row's `hash`,
//! `signed_at`, its `kid`) and the signature; the signature is made by the
//! node key, which is never in the database (see `crate::checkpoint`).
//! Like `audit_log`, the table refuses updates and deletes by trigger — which
//! stops mistakes, not someone with write access: what stops a rewrite is
//! that nobody without the node key can sign a new checkpoint.

use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use tessera_core::audit::Checkpoint;
use tessera_core::Timestamp;

use super::{to_hash, Backend, Columns, Db, StoreResult, Tx};

/// Holds the chain and its checkpoints still until `tx` ends, so that
/// what the transaction reads (the head, the row this node signed last,
/// the checkpoints) is still so when it signs and commits: no other writer
/// (another node signing, an append, a rewrite behind the server's back)
/// gets in between. SQLite's write transactions (`BEGIN IMMEDIATE`) hold
/// every other writer off already; PostgreSQL takes the three tables in a
/// mode that lets readers through and queues writers, itself included,
/// one after the other in the order an audit append touches them
/// (`audit_head`, then `audit_log`): in the other order, an append holding
/// the head and a checkpoint holding the log wait for each other.
pub async fn hold_still(db: &Db, tx: &mut Tx) -> StoreResult<()> {
    if db.backend() == Backend::Postgres {
        sqlx::query(
            "LOCK TABLE audit_head, audit_log, audit_checkpoints IN SHARE ROW EXCLUSIVE MODE",
        )
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The committed chain head: the last row's `seq` and hash (0 and zeros
/// before the first row).
pub async fn head(c: &mut AnyConnection) -> StoreResult<(i64, [u8; 32])> {
    let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut *c)
        .await?;
    Ok((row.col("seq")?, row.key32("hash")?))
}

fn from_row(r: AnyRow) -> Result<Checkpoint, sqlx::Error> {
    let signature: Vec<u8> = r.col("signature")?;
    Ok(Checkpoint {
        seq: r.col("seq")?,
        hash: r.key32("hash")?,
        signed_at: r.time("signed_at")?,
        kid: r.col("kid")?,
        // A stored signature of the wrong length reads as all zeros, which
        // no key verifies: the verifier names it as forged.
        signature: signature.try_into().unwrap_or([0u8; 64]),
    })
}

/// The hash of row `seq`, if the row is there.
pub async fn row_hash(c: &mut AnyConnection, seq: i64) -> StoreResult<Option<[u8; 32]>> {
    let row = sqlx::query("SELECT hash FROM audit_log WHERE seq = $1")
        .bind(seq)
        .fetch_optional(&mut *c)
        .await?;
    Ok(match row {
        Some(r) => Some(r.key32("hash")?),
        None => None,
    })
}

/// The checkpoint `kid` made of row `seq`, if it is there.
pub async fn get(c: &mut AnyConnection, seq: i64, kid: &str) -> StoreResult<Option<Checkpoint>> {
    Ok(sqlx::query(
        "SELECT seq, hash, signed_at, kid, signature FROM audit_checkpoints \
         WHERE seq = $1 AND kid = $2",
    )
    .bind(seq)
    .bind(kid)
    .try_map(from_row)
    .fetch_optional(&mut *c)
    .await?)
}

/// Up to `limit` checkpoints of rows at or before `up_to`, the highest
/// first. Rows are not trusted for being here: the caller verifies each
/// (a database writer can insert anything, e.g. a row at `i64::MAX`).
pub async fn recent(c: &mut AnyConnection, up_to: i64, limit: i64) -> StoreResult<Vec<Checkpoint>> {
    Ok(sqlx::query(
        "SELECT seq, hash, signed_at, kid, signature FROM audit_checkpoints \
         WHERE seq <= $1 ORDER BY seq DESC, signed_at DESC LIMIT $2",
    )
    .bind(up_to)
    .bind(limit)
    .try_map(from_row)
    .fetch_all(&mut *c)
    .await?)
}

/// Checkpoints after the cursor `after` — a row, or with `after_kid` one
/// node's checkpoint of that row — ordered by `(seq, kid)`, at most
/// `limit`. Paging by the pair keeps a second node's checkpoint of the
/// same row that falls on the next page.
pub async fn list(
    db: &Db,
    after: i64,
    after_kid: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<Checkpoint>> {
    let query = match after_kid {
        None => sqlx::query(
            "SELECT seq, hash, signed_at, kid, signature FROM audit_checkpoints \
             WHERE seq > $1 ORDER BY seq, kid LIMIT $2",
        )
        .bind(after)
        .bind(limit),
        Some(kid) => sqlx::query(
            "SELECT seq, hash, signed_at, kid, signature FROM audit_checkpoints \
             WHERE seq > $1 OR (seq = $2 AND kid > $3) ORDER BY seq, kid LIMIT $4",
        )
        .bind(after)
        .bind(after)
        .bind(kid.to_owned())
        .bind(limit),
    };
    Ok(query.try_map(from_row).fetch_all(db.pool()).await?)
}

/// Stores `c`; a second checkpoint of the same row by the same key is
/// dropped (two ticks racing).
pub async fn insert(c: &mut AnyConnection, checkpoint: &Checkpoint) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, hash, signed_at, kid, signature) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq, kid) DO NOTHING",
    )
    .bind(checkpoint.seq)
    .bind(checkpoint.hash.to_vec())
    .bind(checkpoint.signed_at.as_millis())
    .bind(&checkpoint.kid)
    .bind(checkpoint.signature.to_vec())
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// A node's published public key.
#[derive(Clone, Debug)]
pub struct NodePublicKey {
    pub kid: String,
    pub public_key: [u8; 32],
    pub created_at: Timestamp,
}

/// Every node key in `node_keys`: the keys the server's own verification
/// trusts (a verifier that must not trust the database pins its own).
pub async fn node_keys(c: &mut AnyConnection) -> StoreResult<Vec<NodePublicKey>> {
    Ok(
        sqlx::query("SELECT kid, public_key, created_at FROM node_keys ORDER BY created_at, kid")
            .try_map(|r: AnyRow| {
                let public: Vec<u8> = r.col("public_key")?;
                Ok(NodePublicKey {
                    kid: r.col("kid")?,
                    public_key: to_hash(public),
                    created_at: r.time("created_at")?,
                })
            })
            .fetch_all(&mut *c)
            .await?,
    )
}
