//! Signed checkpoints of the audit chain.
//!
//! The hash chain alone finds a row changed behind the triggers, but not a
//! rewrite: whoever can write the database can delete rows and recompute
//! every hash after them. A checkpoint is this node's Ed25519 signature
//! (the node key, kept in a file and never in the database) over the chain
//! head — `(seq, hash of row seq, signed_at, kid)` — so a rewrite of any row
//! at or before a checkpoint contradicts it, and a database writer cannot
//! sign a new one. What this does not cover (rows after the last
//! checkpoint, a holder of the key file) is in DESIGN.md, "Audit chain".
//!
//! A checkpoint is written at start-up and shutdown when the head is not
//! yet signed, every `audit_checkpoint_rows` rows or
//! `audit_checkpoint_interval` (whichever first, checked by the sweep), and
//! on demand (`POST /api/v1/audit/checkpoints`, which `ctl audit export`
//! calls so its file ends at a signed row).

use tessera_core::audit::Checkpoint;

use crate::store::{self, StoreResult};
use crate::AppState;

/// When [`write`] signs the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Whenever the head is not signed yet (start-up, shutdown, on demand).
    Uncovered,
    /// Only once the row count or the interval since the last checkpoint
    /// is reached (the periodic sweep).
    Due,
}

/// Signs the current head if `when` says so; returns the checkpoint that
/// covers the head afterwards (new or already there), or `None` when the
/// log is empty or a checkpoint is not yet due.
pub async fn write(state: &AppState, when: When) -> StoreResult<Option<Checkpoint>> {
    let db = state.db();
    let (seq, hash) = store::checkpoints::head(db).await?;
    if seq == 0 {
        return Ok(None);
    }
    let latest = store::checkpoints::latest(db).await?;
    if let Some(c) = latest.as_ref().filter(|c| c.seq >= seq) {
        return Ok(Some(c.clone()));
    }
    let now = state.now();
    let config = state.config();
    let due = match (&latest, when) {
        (_, When::Uncovered) | (None, When::Due) => true,
        (Some(c), When::Due) => {
            seq - c.seq >= config.audit_checkpoint_rows
                || now.since(c.signed_at) >= config.audit_checkpoint_interval
        }
    };
    if !due {
        return Ok(None);
    }
    let key = state.node_key();
    let kid = key.kid().to_owned();
    let signature = key.sign(&Checkpoint::message(seq, &hash, now, &kid));
    let checkpoint = Checkpoint {
        seq,
        hash,
        signed_at: now,
        kid,
        signature,
    };
    store::checkpoints::insert(db, &checkpoint).await?;
    tracing::debug!(seq, kid = %checkpoint.kid, "audit checkpoint signed");
    Ok(Some(checkpoint))
}

/// The server's own verification of the log (`GET /api/v1/audit/verify`).
#[derive(Clone, Debug)]
pub struct Report {
    pub rows: u64,
    pub head_seq: i64,
    pub head: [u8; 32],
    pub checkpoints: u64,
    pub last_checkpoint: Option<Checkpoint>,
    /// What broke, in words; `None` when everything verified.
    pub problem: Option<String>,
}

/// Walks the whole chain and every checkpoint, trusting the keys in
/// `node_keys`. Besides what [`LogVerifier`] checks, rows left unsigned for
/// longer than the checkpoint schedule allows are a problem: their
/// checkpoints were deleted (or this deployment's nodes stopped writing
/// them).
///
/// [`LogVerifier`]: tessera_core::audit::LogVerifier
pub async fn verify(state: &AppState) -> StoreResult<Report> {
    use std::collections::HashMap;
    use tessera_core::audit::LogVerifier;

    let db = state.db();
    let keys: HashMap<String, [u8; 32]> = store::checkpoints::node_keys(db)
        .await?
        .into_iter()
        .map(|k| (k.kid, k.public_key))
        .collect();
    let mut checkpoints = Vec::new();
    loop {
        let after = checkpoints.last().map_or(0, |c: &Checkpoint| c.seq);
        let page = store::checkpoints::list(db, after, PAGE).await?;
        let full = page.len() as i64 == PAGE;
        checkpoints.extend(page);
        if !full {
            break;
        }
    }
    let broken = |problem: String, rows: u64| Report {
        rows,
        head_seq: 0,
        head: tessera_core::audit::GENESIS,
        checkpoints: 0,
        last_checkpoint: None,
        problem: Some(problem),
    };
    let mut verifier = match LogVerifier::new(&keys, checkpoints) {
        Ok(v) => v,
        Err(e) => return Ok(broken(e.to_string(), 0)),
    };
    let mut filter = store::audit::Filter {
        limit: PAGE,
        ..Default::default()
    };
    let mut rows = 0u64;
    loop {
        let page = store::audit::list(db, &filter).await?;
        for r in &page {
            if let Err(e) = verifier.push(&r.content, &r.prev_hash, &r.hash) {
                return Ok(broken(e.to_string(), rows));
            }
            rows += 1;
        }
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => filter.after_seq = Some(last.content.seq),
            _ => break,
        }
    }
    let summary = match verifier.finish() {
        Ok(s) => s,
        Err(e) => return Ok(broken(e.to_string(), rows)),
    };
    let covered = summary.last_checkpoint.as_ref().map_or(0, |c| c.seq);
    let mut problem = None;
    if summary.uncovered() > 0 {
        let first_unsigned = store::audit::list(
            db,
            &store::audit::Filter {
                after_seq: Some(covered),
                limit: 1,
                ..Default::default()
            },
        )
        .await?;
        let config = state.config();
        let grace = config.audit_checkpoint_interval * 2 + config.heartbeat_interval * 2;
        if let Some(r) = first_unsigned.first() {
            if state.now().since(r.content.occurred_at) > grace {
                problem = Some(format!(
                    "rows {}–{} are older than the checkpoint schedule allows ({} s) \
                     but no signed checkpoint covers them: checkpoints were deleted, \
                     or no node is writing them",
                    r.content.seq,
                    summary.head_seq,
                    grace.as_secs()
                ));
            }
        }
    }
    Ok(Report {
        rows: summary.rows,
        head_seq: summary.head_seq,
        head: summary.head,
        checkpoints: summary.checkpoints,
        last_checkpoint: summary.last_checkpoint,
        problem,
    })
}

/// Rows and checkpoints read per query while verifying.
const PAGE: i64 = 1000;
