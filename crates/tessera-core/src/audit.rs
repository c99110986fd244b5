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
}
