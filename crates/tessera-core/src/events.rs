//! Device events and their canonical id.
//!
//! The id of an event is
//! `hex(SHA-256("tessera/event/v1\0" ‖ tenant ‖ owner ‖ kind ‖ subject ‖ bucket))`
//! with every field length-prefixed, where
//! - `owner` is the user who owns the reporting device (the operator who
//!   approved its pairing or created its enrollment token),
//! - `subject` is normalised: trimmed, internal whitespace collapsed to one
//!   space, lower-cased,
//! - `bucket` is `occurred_at` in milliseconds divided (flooring) by the
//!   bucket width (default 1 s).
//!
//! So the same occurrence reported by two devices of one owner, or retried,
//! gets one id and is stored once; different owners never collide.

use sha2::{Digest, Sha256};

use crate::Timestamp;

pub const DEFAULT_BUCKET_MS: i64 = 1000;
pub const MAX_KIND_LEN: usize = 64;
pub const MAX_SUBJECT_LEN: usize = 512;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("kind must be 1-64 characters of a-z, 0-9, '.', '_' or '-'")]
    Kind,
    #[error("subject must be 1-512 characters after trimming")]
    Subject,
}

pub fn validate_kind(kind: &str) -> Result<(), EventError> {
    let ok = !kind.is_empty()
        && kind.len() <= MAX_KIND_LEN
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    ok.then_some(()).ok_or(EventError::Kind)
}

pub fn normalise_subject(subject: &str) -> Result<String, EventError> {
    let s = subject
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    if s.is_empty() || s.chars().count() > MAX_SUBJECT_LEN {
        return Err(EventError::Subject);
    }
    Ok(s)
}

pub fn bucket(occurred_at: Timestamp, bucket_ms: i64) -> i64 {
    occurred_at.as_millis().div_euclid(bucket_ms.max(1))
}

/// The canonical id. `subject` must already be normalised.
pub fn event_id(tenant: &str, owner: &str, kind: &str, subject: &str, bucket: i64) -> String {
    let mut h = Sha256::new();
    h.update(b"tessera/event/v1\0");
    for part in [tenant, owner, kind, subject] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.update(bucket.to_be_bytes());
    crate::secret::hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_occurrence_same_id_within_a_bucket() {
        let s = normalise_subject("  Disk   /dev/SDA  full ").unwrap();
        assert_eq!(s, "disk /dev/sda full");
        let t1 = Timestamp::from_millis(1_700_000_000_100);
        let t2 = Timestamp::from_millis(1_700_000_000_900);
        let a = event_id("t", "u", "disk", &s, bucket(t1, DEFAULT_BUCKET_MS));
        let b = event_id("t", "u", "disk", &s, bucket(t2, DEFAULT_BUCKET_MS));
        assert_eq!(a, b);
        let next = Timestamp::from_millis(1_700_000_001_000);
        assert_ne!(
            a,
            event_id("t", "u", "disk", &s, bucket(next, DEFAULT_BUCKET_MS))
        );
        assert_ne!(
            a,
            event_id(
                "t",
                "other-owner",
                "disk",
                &s,
                bucket(t1, DEFAULT_BUCKET_MS)
            )
        );
    }

    #[test]
    fn fields_cannot_bleed_into_each_other() {
        assert_ne!(
            event_id("t", "u", "ab", "c", 0),
            event_id("t", "u", "a", "bc", 0)
        );
    }

    #[test]
    fn kinds_and_subjects_are_validated() {
        assert!(validate_kind("login.failed").is_ok());
        assert_eq!(validate_kind("Login"), Err(EventError::Kind));
        assert_eq!(validate_kind(""), Err(EventError::Kind));
        assert_eq!(normalise_subject("   "), Err(EventError::Subject));
        assert!(bucket(Timestamp::from_millis(-1), 1000) == -1);
    }
}
