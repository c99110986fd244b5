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

use sqlx::AnyConnection;
use tessera_core::audit::Checkpoint;

use crate::node_key::SignedHead;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::{self, StoreError, StoreResult};
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

/// Why [`write`] signed nothing.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log no longer holds the head this node signed last: it was
    /// rewritten, and this node will not sign the result.
    #[error("{0}")]
    Refused(String),
}

/// Signs the current head if `when` says so; returns the checkpoint that
/// covers the head afterwards (new or already there), or `None` when the
/// log is empty or a checkpoint is not yet due. Refuses (and raises the
/// alarm) when the log contradicts the head this node signed last.
///
/// The check, the reads and the signature's row are one transaction that
/// holds the chain and the checkpoints still (see
/// [`store::checkpoints::hold_still`]): a rewrite or a deletion behind the
/// server's back lands wholly before it, and is refused, or wholly after
/// the commit. (Checked first and signed after, a rewrite landing in
/// between was signed.)
pub async fn write(state: &AppState, when: When) -> Result<Option<Checkpoint>, WriteError> {
    let db = state.db();
    // First without the locks: most sweeps find nothing due, and should
    // not hold the node's writers up to learn it.
    {
        let mut c = db.pool().acquire().await.map_err(StoreError::from)?;
        match assess(state, &mut c, when).await? {
            Next::Sign(..) => {}
            Next::Done(covered) => return Ok(covered),
            Next::Refuse(problem) => {
                drop(c);
                alarm(state, &problem).await;
                return Err(WriteError::Refused(problem));
            }
        }
    }
    // One signer at a time on this node, from the check to remembering
    // what it signed: a second one checking in between would judge the
    // log against the head before.
    let key = state.node_key();
    let _signing = key.signing().await;
    let mut tx = db.begin_write().await?;
    store::checkpoints::hold_still(db, &mut tx).await?;
    let (seq, hash) = match assess(state, &mut tx, when).await? {
        Next::Sign(seq, hash) => (seq, hash),
        Next::Done(covered) => return Ok(covered),
        Next::Refuse(problem) => {
            // Ended before the alarm writes its row.
            if let Err(e) = tx.rollback().await {
                tracing::warn!(error = %e, "cannot roll back a refused checkpoint");
            }
            alarm(state, &problem).await;
            return Err(WriteError::Refused(problem));
        }
    };
    let now = state.now();
    let kid = key.kid().to_owned();
    let signature = key.sign(&Checkpoint::message(seq, &hash, now, &kid));
    let checkpoint = Checkpoint {
        seq,
        hash,
        signed_at: now,
        kid,
        signature,
    };
    store::checkpoints::insert(&mut tx, &checkpoint).await?;
    tx.commit().await.map_err(StoreError::from)?;
    if let Err(e) = key.remember_signed(SignedHead { seq, hash }) {
        // Still remembered in memory; only a restart forgets it.
        tracing::error!(error = %e, "cannot keep the signed audit head on disk");
    }
    tracing::debug!(seq, kid = %checkpoint.kid, "audit checkpoint signed");
    Ok(Some(checkpoint))
}

/// What [`write`] should do, from what `c` reads now.
enum Next {
    /// The log contradicts the head this node signed last.
    Refuse(String),
    /// Nothing to sign: the log is empty, not due, or the head is covered
    /// (by this checkpoint).
    Done(Option<Checkpoint>),
    /// Sign this head.
    Sign(i64, [u8; 32]),
}

async fn assess(state: &AppState, c: &mut AnyConnection, when: When) -> StoreResult<Next> {
    if let Some(problem) = contradiction_in(state, c).await? {
        return Ok(Next::Refuse(problem));
    }
    let (seq, hash) = store::checkpoints::head(c).await?;
    if seq == 0 {
        return Ok(Next::Done(None));
    }
    let latest = latest_valid(c, seq, &hash).await?;
    if let Some(covering) = latest.as_ref().filter(|l| l.seq >= seq) {
        return Ok(Next::Done(Some(covering.clone())));
    }
    let config = state.config();
    let due = match (&latest, when) {
        (_, When::Uncovered) | (None, When::Due) => true,
        (Some(l), When::Due) => {
            seq - l.seq >= config.audit_checkpoint_rows
                || state.now().since(l.signed_at) >= config.audit_checkpoint_interval
        }
    };
    Ok(if due {
        Next::Sign(seq, hash)
    } else {
        Next::Done(None)
    })
}

/// The newest checkpoint at or before the head (`seq`, `hash`) that a key
/// in `node_keys` really signed — and, at the head itself, of the head's
/// hash. Junk rows (a forged checkpoint at `i64::MAX`, a bad signature)
/// are passed over, so they cannot stop this node from signing.
async fn latest_valid(
    c: &mut AnyConnection,
    seq: i64,
    hash: &[u8; 32],
) -> StoreResult<Option<Checkpoint>> {
    let keys = store::checkpoints::node_keys(c).await?;
    let recent = store::checkpoints::recent(c, seq, LATEST_SCAN).await?;
    Ok(recent.into_iter().find(|c| {
        (c.seq < seq || &c.hash == hash)
            && keys
                .iter()
                .any(|k| k.kid == c.kid && c.verify(&k.public_key))
    }))
}

/// How many of the highest checkpoints [`latest_valid`] looks through.
const LATEST_SCAN: i64 = 64;

/// What in the database contradicts the head this node signed last, in
/// words: the row is gone or has another hash (the log was rewritten), or
/// this node's checkpoint of it is gone or altered (checkpoints were
/// deleted). `None` when nothing does (or the node signed nothing yet).
pub async fn contradiction(state: &AppState) -> StoreResult<Option<String>> {
    let mut c = state.db().pool().acquire().await?;
    contradiction_in(state, &mut c).await
}

/// [`contradiction`], read on `c` (a transaction's connection, in [`write`]).
async fn contradiction_in(state: &AppState, c: &mut AnyConnection) -> StoreResult<Option<String>> {
    let key = state.node_key();
    let Some(signed) = key.signed_head() else {
        return Ok(None);
    };
    let kid = key.kid();
    let advice = match key.head_file() {
        Some(path) => format!(
            "; this node ({kid}) will not sign the log until it is restored (if a \
             backup was restored on purpose, remove {} and restart)",
            path.display()
        ),
        None => format!("; this node ({kid}) will not sign the log"),
    };
    let row = store::checkpoints::row_hash(c, signed.seq).await?;
    let problem = match row {
        None => format!(
            "the log was rewritten: row {} that this node signed is gone",
            signed.seq
        ),
        Some(h) if h != signed.hash => format!(
            "the log was rewritten: row {} no longer has the hash this node signed",
            signed.seq
        ),
        Some(_) => {
            let own = store::checkpoints::get(c, signed.seq, kid).await?;
            let intact = own.is_some_and(|c| c.hash == signed.hash && c.verify(&key.public_key()));
            if intact {
                return Ok(None);
            }
            format!(
                "signed checkpoints were deleted: this node's checkpoint of row {} is gone",
                signed.seq
            )
        }
    };
    Ok(Some(problem + &advice))
}

/// Raises the alarm for `problem`: counted in the metrics every time;
/// logged as an error and recorded in the audit log the first time.
async fn alarm(state: &AppState, problem: &str) {
    state.metrics().audit_checkpoint_refused();
    let key = state.node_key();
    if !key.raise_audit_alarm() {
        return;
    }
    tracing::error!(%problem, "refusing to sign the audit chain head");
    let seq = key.signed_head().map_or(0, |h| h.seq);
    let kid = key.kid().to_owned();
    let recorded: StoreResult<()> = state
        .db()
        .write(async |w| {
            w.audit(
                AuditEvent::new(
                    crate::tenancy::BOOTSTRAP_TENANT,
                    Actor::System,
                    Action::AuditCheckpointRefused,
                )
                .detail("kid", kid)
                .detail("signed_seq", seq),
            )
            .await?;
            Ok(())
        })
        .await;
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "cannot record the refused audit checkpoint");
    }
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
    let keys: HashMap<String, [u8; 32]> =
        store::checkpoints::node_keys(&mut *db.pool().acquire().await?)
            .await?
            .into_iter()
            .map(|k| (k.kid, k.public_key))
            .collect();
    let mut checkpoints = Vec::new();
    loop {
        let (after, after_kid) = checkpoints
            .last()
            .map_or((0, None), |c: &Checkpoint| (c.seq, Some(c.kid.clone())));
        let page = store::checkpoints::list(db, after, after_kid.as_deref(), PAGE).await?;
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
        target: None,
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
    // What this node remembers signing outranks what the database says.
    let mut problem = contradiction(state).await?;
    if problem.is_none() && summary.uncovered() > 0 {
        let first_unsigned = store::audit::list(
            db,
            &store::audit::Filter {
                target: None,
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
