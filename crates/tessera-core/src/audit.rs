//! The audit chain's canonical encoding.
//!
//! Each audit row's hash is `SHA-256(label ‖ prev_hash ‖ canonical(row))`,
//! where `canonical` encodes every field with an explicit length, so no two
//! different rows encode alike. The first row's `prev_hash` is all zeros.
//! The server computes the hash when it appends; `tessera ctl audit verify`
//! recomputes it from what the API returns, so a row changed behind the
//! database's triggers is found and named.
//!
//! `details` is hashed in the canonical JSON form made by [`canonical_json`]
//! (object keys sorted, no whitespace). Details hold ids, names and reasons:
//! never secrets.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Timestamp;

/// Domain-separation label for the chain hash.
const LABEL: &[u8] = b"tessera/audit-chain/v1\0";

/// `prev_hash` of the first row.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// The content of one audit row, everything the hash covers but the link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditContent {
    pub seq: i64,
    pub occurred_at: Timestamp,
    pub tenant_id: String,
    /// Who acted: `user:<id>`, `device:<id>`, `ip:<addr>` or `system`.
    pub actor: String,
    /// What happened, snake_case, e.g. `login_failed`.
    pub action: String,
    /// What it happened to, e.g. `user:<id>`.
    pub target: Option<String>,
    pub source_ip: Option<String>,
    /// Canonical JSON text of the details object.
    pub details: String,
}

/// The chain hash of `content` linked to `prev`.
pub fn chain_hash(prev: &[u8; 32], content: &AuditContent) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(LABEL);
    h.update(prev);
    h.update(content.seq.to_be_bytes());
    h.update(content.occurred_at.as_millis().to_be_bytes());
    for field in [
        Some(content.tenant_id.as_str()),
        Some(content.actor.as_str()),
        Some(content.action.as_str()),
        content.target.as_deref(),
        content.source_ip.as_deref(),
        Some(content.details.as_str()),
    ] {
        match field {
            None => h.update([0u8]),
            Some(s) => {
                h.update([1u8]);
                h.update((s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
        }
    }
    h.finalize().into()
}

/// JSON with object keys sorted and no insignificant whitespace, whatever
/// map order `serde_json` was built with.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(val) = map.get(k) {
                    write_canonical(val, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

/// Where and why a chain stopped verifying.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("row {seq}: its content does not match its hash (altered row)")]
    HashMismatch { seq: i64 },
    #[error("row {seq}: its prev_hash does not match the hash of row {prev_seq}")]
    LinkMismatch { seq: i64, prev_seq: i64 },
    #[error("row {seq}: expected sequence number {expected} (missing or reordered rows)")]
    Gap { seq: i64, expected: i64 },
}

/// Walks a chain row by row, in sequence order, so that a long log can be
/// verified a page at a time.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    prev_hash: [u8; 32],
    next_seq: i64,
    checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            prev_hash: GENESIS,
            next_seq: 1,
            checked: 0,
        }
    }
}

impl ChainVerifier {
    /// Checks the next row: its number, its link, its own hash.
    pub fn push(
        &mut self,
        content: &AuditContent,
        prev_hash: &[u8; 32],
        hash: &[u8; 32],
    ) -> Result<(), ChainBreak> {
        if content.seq != self.next_seq {
            return Err(ChainBreak::Gap {
                seq: content.seq,
                expected: self.next_seq,
            });
        }
        if prev_hash != &self.prev_hash {
            return Err(ChainBreak::LinkMismatch {
                seq: content.seq,
                prev_seq: content.seq - 1,
            });
        }
        if &chain_hash(prev_hash, content) != hash {
            return Err(ChainBreak::HashMismatch { seq: content.seq });
        }
        self.prev_hash = *hash;
        self.next_seq += 1;
        self.checked += 1;
        Ok(())
    }

    /// Rows verified so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Hash of the last verified row (the chain head).
    pub fn head(&self) -> [u8; 32] {
        self.prev_hash
    }
}

// ---- signed checkpoints --------------------------------------------------

/// The bytes a checkpoint signature covers start with this: the
/// `"tessera/v1/" ‖ label ‖ 0` scheme of `identity::signed_message`, under
/// its own label, so no other signature of a node key is ever a checkpoint.
const CHECKPOINT_PREFIX: &[u8] = b"tessera/v1/audit-checkpoint\0";

/// A node's signed statement "row `seq` of the chain has hash `hash`"
/// (that row's hash is the chain head: it covers every row before it).
///
/// Someone who can write the database but does not hold a node key can
/// still re-chain the rows after a deletion, but cannot sign a checkpoint
/// for the new hashes: every checkpoint made before the rewrite then names a
/// row whose hash has changed (or that is gone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: [u8; 32],
    pub signed_at: Timestamp,
    /// The signing node key's id ([`node_kid`]).
    pub kid: String,
    pub signature: [u8; 64],
}

impl Checkpoint {
    /// The exact bytes signed, in this order: the prefix, `seq` as a
    /// big-endian i64, the 32-byte hash, `signed_at` (Unix milliseconds) as a
    /// big-endian i64, and the kid with a big-endian u64 length.
    pub fn message(seq: i64, hash: &[u8; 32], signed_at: Timestamp, kid: &str) -> Vec<u8> {
        let mut m = Vec::with_capacity(CHECKPOINT_PREFIX.len() + 56 + kid.len());
        m.extend_from_slice(CHECKPOINT_PREFIX);
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(hash);
        m.extend_from_slice(&signed_at.as_millis().to_be_bytes());
        m.extend_from_slice(&(kid.len() as u64).to_be_bytes());
        m.extend_from_slice(kid.as_bytes());
        m
    }

    /// Whether `public` (whose id must be this checkpoint's kid) signed it.
    pub fn verify(&self, public: &[u8; 32]) -> bool {
        if node_kid(public) != self.kid {
            return false;
        }
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(public) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature);
        key.verify_strict(
            &Self::message(self.seq, &self.hash, self.signed_at, &self.kid),
            &sig,
        )
        .is_ok()
    }
}

/// A node key's id: `nk_` and the first 16 hex digits of SHA-256 of the
/// Ed25519 public key.
pub fn node_kid(public: &[u8; 32]) -> String {
    let digest = Sha256::digest(public);
    format!("nk_{}", data_encoding::HEXLOWER.encode(&digest[..8]))
}

/// Why a log (rows and checkpoints together) does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogBreak {
    #[error(transparent)]
    Chain(#[from] ChainBreak),
    #[error(
        "the checkpoint at row {seq} is signed by {kid}, which is not a key this \
         verification trusts"
    )]
    UnknownKey { seq: i64, kid: String },
    #[error(
        "the checkpoint at row {seq} does not carry a valid signature by {kid} (forged checkpoint)"
    )]
    BadSignature { seq: i64, kid: String },
    #[error("the log was rewritten: row {seq} no longer has the hash {kid} signed on {signed_at}")]
    CheckpointMismatch {
        seq: i64,
        kid: String,
        signed_at: Timestamp,
    },
    #[error(
        "the log was rewritten: {kid} signed row {seq} on {signed_at}, but the log ends at \
         row {last} (rows were removed)"
    )]
    Truncated {
        seq: i64,
        last: i64,
        kid: String,
        signed_at: Timestamp,
    },
}

/// Verifies a chain together with its checkpoints: every checkpoint must be
/// signed by a trusted key, and the row it names must still have the hash
/// it signed. Feed the rows in order with [`LogVerifier::push`], then call
/// [`LogVerifier::finish`].
#[derive(Debug)]
pub struct LogVerifier {
    chain: ChainVerifier,
    /// Checkpoints not yet reached, by row.
    pending: std::collections::BTreeMap<i64, Vec<Checkpoint>>,
    checkpoints: u64,
    last_checkpoint: Option<Checkpoint>,
}

/// What a verified log showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSummary {
    pub rows: u64,
    /// The hash of the last row (zeros for an empty log).
    pub head: [u8; 32],
    pub head_seq: i64,
    /// Checkpoints whose signature and row both checked out.
    pub checkpoints: u64,
    /// The latest of them, if any.
    pub last_checkpoint: Option<Checkpoint>,
}

impl LogSummary {
    /// Rows after the last checkpoint: no signature vouches for them.
    pub fn uncovered(&self) -> i64 {
        self.head_seq - self.last_checkpoint.as_ref().map_or(0, |c| c.seq)
    }
}

impl LogVerifier {
    /// Checks every signature up front against `trusted` (kid → public key).
    pub fn new(
        trusted: &std::collections::HashMap<String, [u8; 32]>,
        checkpoints: Vec<Checkpoint>,
    ) -> Result<Self, LogBreak> {
        let mut pending = std::collections::BTreeMap::<i64, Vec<Checkpoint>>::new();
        for c in checkpoints {
            let Some(public) = trusted.get(&c.kid) else {
                return Err(LogBreak::UnknownKey {
                    seq: c.seq,
                    kid: c.kid,
                });
            };
            if !c.verify(public) {
                return Err(LogBreak::BadSignature {
                    seq: c.seq,
                    kid: c.kid,
                });
            }
            pending.entry(c.seq).or_default().push(c);
        }
        Ok(LogVerifier {
            chain: ChainVerifier::default(),
            pending,
            checkpoints: 0,
            last_checkpoint: None,
        })
    }

    /// Checks the next row, and every checkpoint that names it.
    pub fn push(
        &mut self,
        content: &AuditContent,
        prev_hash: &[u8; 32],
        hash: &[u8; 32],
    ) -> Result<(), LogBreak> {
        self.chain.push(content, prev_hash, hash)?;
        if let Some(here) = self.pending.remove(&content.seq) {
            for c in here {
                if &c.hash != hash {
                    return Err(LogBreak::CheckpointMismatch {
                        seq: c.seq,
                        kid: c.kid,
                        signed_at: c.signed_at,
                    });
                }
                self.checkpoints += 1;
                self.last_checkpoint = Some(c);
            }
        }
        Ok(())
    }

    /// Ends the walk: a checkpoint past the last row means rows were cut.
    pub fn finish(self) -> Result<LogSummary, LogBreak> {
        let last = self.chain.next_seq - 1;
        if let Some(c) = self.pending.into_values().flatten().next() {
            return Err(LogBreak::Truncated {
                seq: c.seq,
                last,
                kid: c.kid,
                signed_at: c.signed_at,
            });
        }
        Ok(LogSummary {
            rows: self.chain.checked(),
            head: self.chain.head(),
            head_seq: last,
            checkpoints: self.checkpoints,
            last_checkpoint: self.last_checkpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(seq: i64, action: &str) -> AuditContent {
        AuditContent {
            seq,
            occurred_at: Timestamp::from_millis(1_700_000_000_000 + seq),
            tenant_id: "t".into(),
            actor: "system".into(),
            action: action.into(),
            target: None,
            source_ip: Some("127.0.0.1".into()),
            details: canonical_json(&json!({"b": 1, "a": [true, null, "x"]})),
        }
    }

    fn chain(n: i64) -> Vec<(AuditContent, [u8; 32], [u8; 32])> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|i| {
                let c = row(i, "login_succeeded");
                let h = chain_hash(&prev, &c);
                let out = (c, prev, h);
                prev = h;
                out
            })
            .collect()
    }

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let v: Value = serde_json::from_str(r#"{ "z": 1, "a": {"y": "q", "b": [1, 2]} }"#).unwrap();
        assert_eq!(canonical_json(&v), r#"{"a":{"b":[1,2],"y":"q"},"z":1}"#);
        let again: Value = serde_json::from_str(&canonical_json(&v)).unwrap();
        assert_eq!(canonical_json(&again), canonical_json(&v));
    }

    #[test]
    fn an_intact_chain_verifies() {
        let mut v = ChainVerifier::default();
        for (c, p, h) in chain(5) {
            v.push(&c, &p, &h).unwrap();
        }
        assert_eq!(v.checked(), 5);
    }

    #[test]
    fn an_altered_row_is_named() {
        let mut rows = chain(5);
        rows[2].0.action = "login_failed".into();
        let mut v = ChainVerifier::default();
        let err = rows
            .iter()
            .try_for_each(|(c, p, h)| v.push(c, p, h))
            .unwrap_err();
        assert_eq!(err, ChainBreak::HashMismatch { seq: 3 });
    }

    #[test]
    fn a_missing_row_is_a_gap() {
        let mut rows = chain(5);
        rows.remove(1);
        let mut v = ChainVerifier::default();
        let err = rows
            .iter()
            .try_for_each(|(c, p, h)| v.push(c, p, h))
            .unwrap_err();
        assert_eq!(
            err,
            ChainBreak::Gap {
                seq: 3,
                expected: 2
            }
        );
    }

    #[test]
    fn absent_and_empty_fields_hash_differently() {
        let mut a = row(1, "x");
        let mut b = row(1, "x");
        a.target = None;
        b.target = Some(String::new());
        assert_ne!(chain_hash(&GENESIS, &a), chain_hash(&GENESIS, &b));
    }

    fn signed(key: &ed25519_dalek::SigningKey, seq: i64, hash: [u8; 32]) -> Checkpoint {
        use ed25519_dalek::Signer;
        let kid = node_kid(&key.verifying_key().to_bytes());
        let at = Timestamp::from_millis(1_700_000_100_000);
        Checkpoint {
            seq,
            hash,
            signed_at: at,
            signature: key
                .sign(&Checkpoint::message(seq, &hash, at, &kid))
                .to_bytes(),
            kid,
        }
    }

    fn trusted(key: &ed25519_dalek::SigningKey) -> std::collections::HashMap<String, [u8; 32]> {
        let public = key.verifying_key().to_bytes();
        [(node_kid(&public), public)].into()
    }

    #[test]
    fn checkpoints_that_match_the_chain_verify() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let rows = chain(6);
        let cps = vec![signed(&key, 3, rows[2].2), signed(&key, 6, rows[5].2)];
        let mut v = LogVerifier::new(&trusted(&key), cps).unwrap();
        for (c, p, h) in &rows {
            v.push(c, p, h).unwrap();
        }
        let s = v.finish().unwrap();
        assert_eq!((s.rows, s.checkpoints, s.uncovered()), (6, 2, 0));
    }

    #[test]
    fn a_rechained_log_contradicts_its_checkpoint() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let honest = chain(6);
        let cps = vec![signed(&key, 4, honest[3].2)];
        // Row 2 deleted, the rest renumbered and re-chained: the chain
        // itself verifies, the checkpoint does not.
        let mut prev = GENESIS;
        let mut rewritten = Vec::new();
        for (i, (c, _, _)) in honest.iter().filter(|r| r.0.seq != 2).enumerate() {
            let mut c = c.clone();
            c.seq = i as i64 + 1;
            c.action = format!("{}-{}", c.action, c.seq);
            let h = chain_hash(&prev, &c);
            rewritten.push((c, prev, h));
            prev = h;
        }
        let mut v = LogVerifier::new(&trusted(&key), cps.clone()).unwrap();
        let err = rewritten
            .iter()
            .try_for_each(|(c, p, h)| v.push(c, p, h))
            .unwrap_err();
        assert!(
            matches!(err, LogBreak::CheckpointMismatch { seq: 4, .. }),
            "{err}"
        );
        // Cut to three rows: the checkpoint at row 4 names a row that is gone.
        let mut v = LogVerifier::new(&trusted(&key), cps).unwrap();
        for (c, p, h) in honest.iter().take(3) {
            v.push(c, p, h).unwrap();
        }
        assert!(matches!(
            v.finish().unwrap_err(),
            LogBreak::Truncated {
                seq: 4,
                last: 3,
                ..
            }
        ));
    }

    #[test]
    fn a_checkpoint_by_an_untrusted_key_or_with_a_bad_signature_is_refused() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let other = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let rows = chain(2);
        let err = LogVerifier::new(&trusted(&key), vec![signed(&other, 1, rows[0].2)]).unwrap_err();
        assert!(matches!(err, LogBreak::UnknownKey { seq: 1, .. }));
        let mut forged = signed(&key, 1, rows[0].2);
        forged.hash = rows[1].2;
        let err = LogVerifier::new(&trusted(&key), vec![forged]).unwrap_err();
        assert!(matches!(err, LogBreak::BadSignature { seq: 1, .. }));
    }
}
