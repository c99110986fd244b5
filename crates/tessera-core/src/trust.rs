//! Trust between devices: the short authentication string people compare,
//! and the signed statements that record trust, automatic-join grants, key
//! rotations and withdrawals.
//!
//! **SAS, commit-then-reveal.** The initiator commits to its identity and a
//! random nonce (`commitment`) before it sees the responder's; the responder
//! reveals its identity and nonce; then the initiator reveals. The SAS is
//! derived from the full SHA-256 of both keys and both nonces. A relay that
//! substitutes keys must fix its own nonce on each side before it learns the
//! other's, so each side's SAS is a fresh random number to it and a forged
//! pair matches with probability 10^-6 per attempt: it cannot grind.
//!
//! **Statements** are canonical byte strings (every field length-prefixed)
//! signed under their own label (see `identity::Label`), so no signature can
//! be replayed as another kind of statement.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::{self, DeviceId, DeviceKeys, IdentityError, Label};
use crate::Timestamp;

/// Digits in a short authentication string (shown `123-456`).
pub const SAS_DIGITS: u32 = 6;

fn put(buf: &mut Vec<u8>, field: &[u8]) {
    buf.extend_from_slice(&(field.len() as u64).to_be_bytes());
    buf.extend_from_slice(field);
}

/// The initiator's commitment to its identity document and nonce.
pub fn commitment(identity_doc: &str, nonce: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tessera/trust-commit/v1\0");
    h.update((identity_doc.len() as u64).to_be_bytes());
    h.update(identity_doc.as_bytes());
    h.update(nonce);
    h.finalize().into()
}

/// The SAS both sides show: from both full keys and both nonces, reduced to
/// six decimal digits from a 64-bit prefix of the hash (bias 10^6/2^64).
pub fn sas(
    initiator_ed: &[u8; 32],
    responder_ed: &[u8; 32],
    initiator_nonce: &[u8; 32],
    responder_nonce: &[u8; 32],
) -> String {
    let mut h = Sha256::new();
    h.update(b"tessera/sas/v1\0");
    h.update(initiator_ed);
    h.update(responder_ed);
    h.update(initiator_nonce);
    h.update(responder_nonce);
    let digest = h.finalize();
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    let n = u64::from_be_bytes(prefix) % 10u64.pow(SAS_DIGITS);
    format!("{:03}-{:03}", n / 1000, n % 1000)
}

/// A key's digest on the wire: hex SHA-256 of the Ed25519 public key. It is
/// signed into grants and pinned, so it keeps this form; people see it as
/// [`fingerprint_display`] shows it, which is [`crate::identity::fingerprint`].
pub fn fingerprint(ed25519: &[u8; 32]) -> String {
    crate::secret::hex(&Sha256::digest(ed25519))
}

/// The hex digest above as people see it: the key's
/// [`crate::identity::fingerprint`] (base32, grouped), the same string
/// enrollment and `ctl devices show` print. Anything else is shown as given.
pub fn fingerprint_display(fp: &str) -> String {
    match key_from_hex(fp) {
        Some(digest) => identity::fingerprint_of_digest(&digest),
        None => fp.to_owned(),
    }
}

/// What an automatic session may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Scope {
    Files,
    Shell,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Files => "files",
            Scope::Shell => "shell",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "files" => Some(Scope::Files),
            "shell" => Some(Scope::Shell),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// "I checked `trusted`'s keys (by SAS) and trust them."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrustAttestation {
    pub truster: String,
    pub trusted: String,
    /// Hex of the trusted device's Ed25519 and X25519 keys, as pinned.
    pub trusted_ed25519: String,
    pub trusted_x25519: String,
    pub issued_at: Timestamp,
}

/// "`grantee` may auto-join me (`granter`) into sessions it creates, while
/// it holds the key with this fingerprint, for these scopes, until then."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AutoJoinGrant {
    pub id: String,
    pub granter: String,
    pub grantee: String,
    /// Fingerprint of the grantee's Ed25519 key the grant is pinned to.
    pub grantee_fingerprint: String,
    /// Sorted, without duplicates.
    pub scopes: Vec<Scope>,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

/// "My identity key changed": signed with the key it replaces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyRotation {
    pub device: String,
    /// The new key's epoch: 1 for the first rotation.
    pub epoch: u32,
    pub old_ed25519: String,
    /// The new identity document (base64url), which signs its own X25519 key.
    pub new_identity: String,
    pub issued_at: Timestamp,
}

/// "I withdraw this statement" (a grant or an attestation), by its issuer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Withdrawal {
    pub issuer: String,
    /// `grant:<id>` or `trust:<device id>`.
    pub subject: String,
    pub issued_at: Timestamp,
}

/// A statement that can be signed.
pub trait Statement {
    const LABEL: Label;
    fn canonical(&self) -> Vec<u8>;
}

impl Statement for TrustAttestation {
    const LABEL: Label = Label::TrustAttestation;
    fn canonical(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for f in [
            &self.truster,
            &self.trusted,
            &self.trusted_ed25519,
            &self.trusted_x25519,
        ] {
            put(&mut b, f.as_bytes());
        }
        b.extend_from_slice(&self.issued_at.as_millis().to_be_bytes());
        b
    }
}

impl Statement for AutoJoinGrant {
    const LABEL: Label = Label::AutoJoinGrant;
    fn canonical(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for f in [
            &self.id,
            &self.granter,
            &self.grantee,
            &self.grantee_fingerprint,
        ] {
            put(&mut b, f.as_bytes());
        }
        let scopes: Vec<&str> = self.scopes.iter().map(|s| s.as_str()).collect();
        put(&mut b, scopes.join(",").as_bytes());
        b.extend_from_slice(&self.issued_at.as_millis().to_be_bytes());
        b.extend_from_slice(&self.expires_at.as_millis().to_be_bytes());
        b
    }
}

impl Statement for KeyRotation {
    const LABEL: Label = Label::KeyRotation;
    fn canonical(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for f in [&self.device, &self.old_ed25519, &self.new_identity] {
            put(&mut b, f.as_bytes());
        }
        b.extend_from_slice(&self.epoch.to_be_bytes());
        b.extend_from_slice(&self.issued_at.as_millis().to_be_bytes());
        b
    }
}

impl Statement for Withdrawal {
    const LABEL: Label = Label::Withdrawal;
    fn canonical(&self) -> Vec<u8> {
        let mut b = Vec::new();
        put(&mut b, self.issuer.as_bytes());
        put(&mut b, self.subject.as_bytes());
        b.extend_from_slice(&self.issued_at.as_millis().to_be_bytes());
        b
    }
}

/// A statement and its signature (base64url), as stored and sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Signed<T> {
    pub statement: T,
    pub signature: String,
}

impl<T: Statement> Signed<T> {
    pub fn sign(statement: T, keys: &DeviceKeys) -> Signed<T> {
        let sig = keys.sign(T::LABEL, &statement.canonical());
        Signed {
            statement,
            signature: data_encoding::BASE64URL_NOPAD.encode(&sig),
        }
    }

    /// Verifies the signature with `ed25519` (the signer's key as the
    /// verifier knows it: pinned, or stored).
    pub fn verify(&self, ed25519: &[u8; 32]) -> Result<(), IdentityError> {
        let sig = data_encoding::BASE64URL_NOPAD
            .decode(self.signature.as_bytes())
            .map_err(|_| IdentityError::BadSignature)?;
        identity::verify(ed25519, T::LABEL, &self.statement.canonical(), &sig)
    }
}

/// Decodes a hex key.
pub fn key_from_hex(hex: &str) -> Option<[u8; 32]> {
    data_encoding::HEXLOWER
        .decode(hex.as_bytes())
        .ok()?
        .try_into()
        .ok()
}

/// Follows `device`'s rotation statements from the key `from`: each step
/// must start at the key reached so far and be signed by it. Returns the
/// identity the last such step names (`None` if none starts at `from`).
/// The server supplies the statements; only their signatures are believed.
pub fn follow_rotations(
    device: &str,
    from: &[u8; 32],
    chain: &[Signed<KeyRotation>],
) -> Option<identity::IdentityDocument> {
    let mut key = *from;
    let mut reached = None;
    for step in chain {
        let r = &step.statement;
        if r.device != device || key_from_hex(&r.old_ed25519) != Some(key) {
            continue;
        }
        // A step the key did not sign, or naming no valid identity, is
        // someone else's invention: skipped.
        if step.verify(&key).is_err() {
            continue;
        }
        let Ok(doc) = identity::IdentityDocument::decode(&r.new_identity) else {
            continue;
        };
        key = doc.ed25519;
        reached = Some(doc);
    }
    reached
}

/// Whether `doc` is `device`'s identity: its first key names the device,
/// or a signed chain of rotations leads there from the key that does.
pub fn is_identity_of(
    device: &str,
    doc: &identity::IdentityDocument,
    chain: &[Signed<KeyRotation>],
) -> bool {
    if doc.device_id().is_ok_and(|id| id.to_string() == device) {
        return true;
    }
    let Some(first) = chain
        .iter()
        .filter_map(|s| key_from_hex(&s.statement.old_ed25519))
        .find(|k| {
            ed25519_dalek::VerifyingKey::from_bytes(k)
                .is_ok_and(|v| DeviceId::of(&v).to_string() == device)
        })
    else {
        return false;
    };
    follow_rotations(device, &first, chain).is_some_and(|d| d == *doc)
}

/// Builds a grant with sorted, unique scopes.
pub fn new_grant(
    granter: &DeviceId,
    grantee: &DeviceId,
    grantee_ed: &[u8; 32],
    scopes: &[Scope],
    issued_at: Timestamp,
    expires_at: Timestamp,
) -> AutoJoinGrant {
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    AutoJoinGrant {
        id: uuid::Uuid::now_v7().to_string(),
        granter: granter.to_string(),
        grantee: grantee.to_string(),
        grantee_fingerprint: fingerprint(grantee_ed),
        scopes,
        issued_at,
        expires_at,
    }
}

/// How long before expiry a grant counts as expiring soon.
pub const EXPIRING_SOON: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// A grant's state, as `grant list` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GrantState {
    Active,
    ExpiringSoon,
    Expired,
    Revoked,
    /// The grantee's key changed since the grant was made.
    KeyMismatch,
}

impl GrantState {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Active => "active",
            GrantState::ExpiringSoon => "expiring_soon",
            GrantState::Expired => "expired",
            GrantState::Revoked => "revoked",
            GrantState::KeyMismatch => "key_mismatch",
        }
    }
}

/// Decides a grant's state: revoked, then expired, then key mismatch
/// against the grantee's current key fingerprint, then expiring soon.
pub fn grant_state(
    g: &AutoJoinGrant,
    revoked: bool,
    grantee_current_fp: &str,
    now: Timestamp,
) -> GrantState {
    if revoked {
        GrantState::Revoked
    } else if g.expires_at <= now {
        GrantState::Expired
    } else if g.grantee_fingerprint != grantee_current_fp {
        GrantState::KeyMismatch
    } else if g.expires_at <= now.plus(EXPIRING_SOON) {
        GrantState::ExpiringSoon
    } else {
        GrantState::Active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    #[test]
    fn sas_is_symmetric_in_roles_and_changes_with_any_input() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let (na, nb) = ([3u8; 32], [4u8; 32]);
        let s = sas(&a, &b, &na, &nb);
        assert_eq!(s.len(), 7);
        assert_eq!(&s[3..4], "-");
        assert_eq!(s, sas(&a, &b, &na, &nb));
        assert_ne!(s, sas(&a, &[9u8; 32], &na, &nb));
        assert_ne!(s, sas(&a, &b, &[5u8; 32], &nb));
    }

    #[test]
    fn sas_digits_are_spread_evenly() {
        // A cheap check that the reduction is not lopsided.
        let mut first = [0u32; 10];
        for i in 0..5000u32 {
            let mut n = [0u8; 32];
            n[..4].copy_from_slice(&i.to_be_bytes());
            let s = sas(&[1; 32], &[2; 32], &n, &[0; 32]);
            first[(s.as_bytes()[0] - b'0') as usize] += 1;
        }
        assert!(first.iter().all(|c| (350..650).contains(c)), "{first:?}");
    }

    #[test]
    fn commitments_bind_document_and_nonce() {
        let c = commitment("doc", &[1u8; 32]);
        assert_ne!(c, commitment("doc", &[2u8; 32]));
        assert_ne!(c, commitment("doc2", &[1u8; 32]));
    }

    #[test]
    fn signed_grants_verify_only_with_the_granter_key_and_untampered() {
        let b = DeviceKeys::generate();
        let a = DeviceKeys::generate();
        let g = new_grant(
            &b.device_id(),
            &a.device_id(),
            &a.ed25519_public(),
            &[Scope::Shell, Scope::Files, Scope::Files],
            T,
            T.plus(std::time::Duration::from_secs(60)),
        );
        assert_eq!(g.scopes, [Scope::Files, Scope::Shell]);
        let signed = Signed::sign(g, &b);
        assert!(signed.verify(&b.ed25519_public()).is_ok());
        assert!(signed.verify(&a.ed25519_public()).is_err());
        let mut tampered = signed.clone();
        tampered.statement.expires_at = T.plus(std::time::Duration::from_secs(3600 * 24 * 365));
        assert!(tampered.verify(&b.ed25519_public()).is_err());
        // A grant signature is no attestation signature.
        let att = TrustAttestation {
            truster: b.device_id().to_string(),
            trusted: a.device_id().to_string(),
            trusted_ed25519: String::new(),
            trusted_x25519: String::new(),
            issued_at: T,
        };
        let forged = Signed {
            statement: att,
            signature: signed.signature.clone(),
        };
        assert!(forged.verify(&b.ed25519_public()).is_err());
    }

    #[test]
    fn grant_states_follow_their_precedence() {
        let g = AutoJoinGrant {
            id: "g".into(),
            granter: "B".into(),
            grantee: "A".into(),
            grantee_fingerprint: "fp".into(),
            scopes: vec![Scope::Files],
            issued_at: T,
            expires_at: T.plus(std::time::Duration::from_secs(30 * 24 * 3600)),
        };
        assert_eq!(grant_state(&g, false, "fp", T), GrantState::Active);
        assert_eq!(grant_state(&g, false, "other", T), GrantState::KeyMismatch);
        assert_eq!(grant_state(&g, true, "fp", T), GrantState::Revoked);
        let late = T.plus(std::time::Duration::from_secs(25 * 24 * 3600));
        assert_eq!(grant_state(&g, false, "fp", late), GrantState::ExpiringSoon);
        assert_eq!(
            grant_state(&g, false, "fp", g.expires_at),
            GrantState::Expired
        );
    }

    fn rotation(
        device: &str,
        from: &DeviceKeys,
        to: &DeviceKeys,
        epoch: u32,
    ) -> Signed<KeyRotation> {
        Signed::sign(
            KeyRotation {
                device: device.to_owned(),
                epoch,
                old_ed25519: crate::secret::hex(&from.ed25519_public()),
                new_identity: to.document().encode(),
                issued_at: T,
            },
            from,
        )
    }

    #[test]
    fn rotations_are_followed_only_along_signatures_from_the_first_key() {
        let (k0, k1, k2, evil) = (
            DeviceKeys::generate(),
            DeviceKeys::generate(),
            DeviceKeys::generate(),
            DeviceKeys::generate(),
        );
        let dev = k0.device_id().to_string();
        let r1 = rotation(&dev, &k0, &k1, 1);
        let r2 = rotation(&dev, &k1, &k2, 2);
        // The server slips in a step "from k1" that k1 never signed.
        let mut forged = rotation(&dev, &evil, &evil, 2);
        forged.statement.old_ed25519 = crate::secret::hex(&k1.ed25519_public());
        let chain = vec![r1.clone(), forged, r2];
        assert_eq!(
            follow_rotations(&dev, &k0.ed25519_public(), &chain),
            Some(k2.document())
        );
        assert!(is_identity_of(&dev, &k2.document(), &chain));
        assert!(is_identity_of(&dev, &k0.document(), &[]));
        assert!(!is_identity_of(&dev, &evil.document(), &chain));
        assert!(!is_identity_of(&dev, &k1.document(), &chain[2..]));
        // Another device's statements do not count.
        let other = k1.device_id().to_string();
        assert_eq!(follow_rotations(&other, &k0.ed25519_public(), &chain), None);
        assert_eq!(
            follow_rotations(&dev, &k0.ed25519_public(), &[r1]),
            Some(k1.document())
        );
    }
}
