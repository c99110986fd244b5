//! Device identity: an Ed25519 signing key and an X25519 static key, the
//! X25519 key vouched for by the Ed25519 key.
//!
//! A [`DeviceId`] is the base32 SHA-256 of the Ed25519 public key, so it names
//! one key forever and cannot be claimed by anyone without that key.
//! Every signature is over `"tessera/v1/" ‖ label ‖ 0x00 ‖ body`, with a
//! distinct [`Label`] per statement type, so a signature made for one purpose
//! (say, a control-channel challenge) is never valid as another (a grant).

use std::fmt;

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey as XPublicKey, StaticSecret};
use zeroize::Zeroizing;

/// What a signature is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    /// Binds the X25519 key to the Ed25519 key.
    Identity,
    /// Answers the control channel's challenge.
    Challenge,
    /// Proves, when asking to pair, that the requester holds the key.
    PairingRequest,
    /// "I verified this peer's keys": a trust attestation.
    TrustAttestation,
    /// "This peer may auto-join me into its sessions": a grant.
    AutoJoinGrant,
    /// "My identity key is now this one", signed by the old key.
    KeyRotation,
    /// Withdraws a grant or an attestation, signed by its issuer.
    Withdrawal,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Identity => "identity",
            Label::Challenge => "control-challenge",
            Label::PairingRequest => "pairing-request",
            Label::TrustAttestation => "trust-attestation",
            Label::AutoJoinGrant => "auto-join-grant",
            Label::KeyRotation => "key-rotation",
            Label::Withdrawal => "withdrawal",
        }
    }
}

/// The exact bytes that are signed for `label` over `body`.
pub fn signed_message(label: Label, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + label.as_str().len() + body.len());
    m.extend_from_slice(b"tessera/v1/");
    m.extend_from_slice(label.as_str().as_bytes());
    m.push(0);
    m.extend_from_slice(body);
    m
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("identity document is not valid base64url")]
    Encoding,
    #[error("identity document has the wrong length or version")]
    Format,
    #[error("identity document's public key is invalid")]
    PublicKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("not a device id")]
    DeviceId,
}

/// A device's stable name: base32 (RFC 4648, no padding) of SHA-256 of its
/// Ed25519 public key, 52 characters. People see it grouped in fours.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

impl DeviceId {
    pub const LEN: usize = 52;

    pub fn of(key: &VerifyingKey) -> DeviceId {
        DeviceId(BASE32_NOPAD.encode(&Sha256::digest(key.as_bytes())))
    }

    /// Accepts the canonical form or the grouped one, any case.
    pub fn parse(s: &str) -> Result<DeviceId, IdentityError> {
        let compact: String = s
            .chars()
            .filter(|c| *c != '-' && !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        if compact.len() != Self::LEN {
            return Err(IdentityError::DeviceId);
        }
        match BASE32_NOPAD.decode(compact.as_bytes()) {
            Ok(b) if b.len() == 32 && BASE32_NOPAD.encode(&b) == compact => Ok(DeviceId(compact)),
            _ => Err(IdentityError::DeviceId),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `ABCD-EFGH-…`, for people to compare.
    pub fn grouped(&self) -> String {
        self.0
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-")
    }

    /// The first 16 characters, grouped: enough to tell devices apart in a
    /// list, never enough to verify one.
    pub fn short(&self) -> String {
        DeviceId(self.0[..16].to_owned()).grouped()
    }
}

/// A key's fingerprint: the one string people compare for a device's key,
/// everywhere it is shown (enrollment, the `/device` page, `ctl devices
/// show`, `trust show`, rotations). It is SHA-256 of the Ed25519 public key
/// in base32, grouped in fours (`ABCD-EFGH-…`). Until the key is rotated it
/// is the device's id, grouped; after a rotation the id stays (it names the
/// first key) and the fingerprint follows the current key.
pub fn fingerprint(ed25519: &[u8; 32]) -> String {
    fingerprint_of_digest(&Sha256::digest(ed25519).into())
}

/// [`fingerprint`] from the key's SHA-256 (the hex `fingerprint` fields on
/// the wire carry this digest).
pub fn fingerprint_of_digest(digest: &[u8; 32]) -> String {
    DeviceId(BASE32_NOPAD.encode(digest)).grouped()
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.0)
    }
}

/// A device's public identity: both public keys and the Ed25519 signature
/// over the X25519 one. Sent when enrolling; the server keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityDocument {
    pub ed25519: [u8; 32],
    pub x25519: [u8; 32],
    pub signature: [u8; 64],
}

const DOC_VERSION: u8 = 1;
const DOC_LEN: usize = 1 + 32 + 32 + 64;

impl IdentityDocument {
    fn body(ed25519: &[u8; 32], x25519: &[u8; 32]) -> Vec<u8> {
        let mut b = Vec::with_capacity(65);
        b.push(DOC_VERSION);
        b.extend_from_slice(ed25519);
        b.extend_from_slice(x25519);
        b
    }

    /// Compact text form: base64url of version ‖ ed25519 ‖ x25519 ‖ signature.
    pub fn encode(&self) -> String {
        let mut b = Self::body(&self.ed25519, &self.x25519);
        b.extend_from_slice(&self.signature);
        BASE64URL_NOPAD.encode(&b)
    }

    /// Parses and verifies: a document that decodes is self-consistent.
    pub fn decode(s: &str) -> Result<IdentityDocument, IdentityError> {
        let b = BASE64URL_NOPAD
            .decode(s.trim().as_bytes())
            .map_err(|_| IdentityError::Encoding)?;
        if b.len() != DOC_LEN || b[0] != DOC_VERSION {
            return Err(IdentityError::Format);
        }
        let mut doc = IdentityDocument {
            ed25519: [0; 32],
            x25519: [0; 32],
            signature: [0; 64],
        };
        doc.ed25519.copy_from_slice(&b[1..33]);
        doc.x25519.copy_from_slice(&b[33..65]);
        doc.signature.copy_from_slice(&b[65..]);
        doc.verify()?;
        Ok(doc)
    }

    /// Checks the Ed25519 signature over the X25519 key.
    pub fn verify(&self) -> Result<(), IdentityError> {
        verify(
            &self.ed25519,
            Label::Identity,
            &Self::body(&self.ed25519, &self.x25519),
            &self.signature,
        )
    }

    pub fn device_id(&self) -> Result<DeviceId, IdentityError> {
        let key = VerifyingKey::from_bytes(&self.ed25519).map_err(|_| IdentityError::PublicKey)?;
        Ok(DeviceId::of(&key))
    }
}

/// Verifies `signature` by `public` over `body` for `label`. Uses strict
/// verification (rejects small-order keys and malleable signatures).
pub fn verify(
    public: &[u8; 32],
    label: Label,
    body: &[u8],
    signature: &[u8],
) -> Result<(), IdentityError> {
    let key = VerifyingKey::from_bytes(public).map_err(|_| IdentityError::PublicKey)?;
    let sig = Signature::from_slice(signature).map_err(|_| IdentityError::BadSignature)?;
    key.verify_strict(&signed_message(label, body), &sig)
        .map_err(|_| IdentityError::BadSignature)
}

/// A device's private keys.
pub struct DeviceKeys {
    signing: SigningKey,
    agreement: StaticSecret,
}

impl fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKeys({})", self.device_id())
    }
}

/// Serialised private key length: Ed25519 seed ‖ X25519 secret.
pub const PRIVATE_KEYS_LEN: usize = 64;

impl DeviceKeys {
    pub fn generate() -> DeviceKeys {
        let mut rng = rand::rngs::OsRng;
        DeviceKeys {
            signing: SigningKey::generate(&mut rng),
            agreement: StaticSecret::random_from_rng(rng),
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<DeviceKeys> {
        if bytes.len() != PRIVATE_KEYS_LEN {
            return None;
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[..32]);
        let mut x = Zeroizing::new([0u8; 32]);
        x.copy_from_slice(&bytes[32..]);
        Some(DeviceKeys {
            signing: SigningKey::from_bytes(&seed),
            agreement: StaticSecret::from(*x),
        })
    }

    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(PRIVATE_KEYS_LEN));
        v.extend_from_slice(self.signing.as_bytes());
        v.extend_from_slice(self.agreement.as_bytes());
        v
    }

    /// The id of a device that never rotated its identity key. After a
    /// rotation the device keeps its first id; see `trust::KeyRotation`.
    pub fn device_id(&self) -> DeviceId {
        DeviceId::of(&self.signing.verifying_key())
    }

    pub fn ed25519_public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    pub fn x25519_public(&self) -> [u8; 32] {
        XPublicKey::from(&self.agreement).to_bytes()
    }

    /// The X25519 secret, for the Noise handshake.
    pub fn x25519_secret(&self) -> &StaticSecret {
        &self.agreement
    }

    pub fn document(&self) -> IdentityDocument {
        let ed = self.ed25519_public();
        let x = self.x25519_public();
        let sig = self.sign(Label::Identity, &IdentityDocument::body(&ed, &x));
        IdentityDocument {
            ed25519: ed,
            x25519: x,
            signature: sig,
        }
    }

    pub fn sign(&self, label: Label, body: &[u8]) -> [u8; 64] {
        self.signing.sign(&signed_message(label, body)).to_bytes()
    }
}

/// What a device signs to answer the control channel's challenge: the
/// server's nonce bound to the device id and the protocol version, so an
/// answer cannot be replayed to another connection or for another device.
pub fn challenge_body(nonce: &[u8], device_id: &DeviceId, protocol_version: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(nonce.len() + DeviceId::LEN + 12);
    b.extend_from_slice(&(nonce.len() as u32).to_be_bytes());
    b.extend_from_slice(nonce);
    b.extend_from_slice(device_id.as_str().as_bytes());
    b.extend_from_slice(&protocol_version.to_be_bytes());
    b
}

/// What a proof of key possession is for. Each route takes only proofs
/// made for it, so a proof seen on one cannot be replayed on another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofPurpose {
    /// Asking to pair (RFC 8628 device authorization).
    Pairing,
    /// Enrolling with an enrollment token.
    Enroll,
    /// Binding a support code.
    SupportBind,
}

impl ProofPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            ProofPurpose::Pairing => "pairing",
            ProofPurpose::Enroll => "enroll",
            ProofPurpose::SupportBind => "support-bind",
        }
    }
}

/// What a device signs to prove it holds its identity key when it asks to
/// pair, enrolls with a token or binds a support code: the request's
/// fields, the time it was made, what it is for and the server it is meant
/// for (its origin, [`audience_of`]). The public identity document alone
/// cannot be replayed into any of them; a proof made for one route or one
/// server is refused by another.
pub struct PossessionClaim<'a> {
    pub client_id: &'a str,
    pub name: &'a str,
    pub hostname: &'a str,
    pub os: &'a str,
    pub issued_at_ms: i64,
    pub purpose: ProofPurpose,
    pub audience: &'a str,
}

impl PossessionClaim<'_> {
    /// The signed bytes: each string as `u64 length ‖ UTF-8`, in the order
    /// client id, name, hostname, OS; then `i64 issued_at`; then purpose and
    /// audience as strings (all integers big-endian).
    pub fn body(&self) -> Vec<u8> {
        let mut b = Vec::new();
        let put = |b: &mut Vec<u8>, field: &str| {
            b.extend_from_slice(&(field.len() as u64).to_be_bytes());
            b.extend_from_slice(field.as_bytes());
        };
        for field in [self.client_id, self.name, self.hostname, self.os] {
            put(&mut b, field);
        }
        b.extend_from_slice(&self.issued_at_ms.to_be_bytes());
        put(&mut b, self.purpose.as_str());
        put(&mut b, self.audience);
        b
    }
}

/// The audience a server URL names in a proof: its origin, as
/// `scheme://host[:port]` with the host in lower case (IDNA) and a default
/// port left out, so `HTTPS://Example.org:443/x` and `https://example.org`
/// are one audience. `None` for what is not an http(s) URL.
pub fn audience_of(server_url: &str) -> Option<String> {
    let url = url::Url::parse(server_url).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_document_round_trips_and_names_the_device() {
        let keys = DeviceKeys::generate();
        let doc = keys.document();
        let text = doc.encode();
        let back = IdentityDocument::decode(&text).unwrap();
        assert_eq!(back, doc);
        assert_eq!(back.device_id().unwrap(), keys.device_id());
        assert_eq!(keys.device_id().as_str().len(), DeviceId::LEN);
    }

    #[test]
    fn a_substituted_x25519_key_is_detected() {
        let keys = DeviceKeys::generate();
        let mut doc = keys.document();
        doc.x25519 = DeviceKeys::generate().x25519_public();
        assert_eq!(
            IdentityDocument::decode(&doc.encode()),
            Err(IdentityError::BadSignature)
        );
    }

    #[test]
    fn signatures_do_not_cross_labels() {
        let keys = DeviceKeys::generate();
        let sig = keys.sign(Label::Challenge, b"body");
        assert!(verify(&keys.ed25519_public(), Label::Challenge, b"body", &sig).is_ok());
        assert_eq!(
            verify(&keys.ed25519_public(), Label::Identity, b"body", &sig),
            Err(IdentityError::BadSignature)
        );
    }

    #[test]
    fn device_ids_parse_grouped_or_not() {
        let id = DeviceKeys::generate().device_id();
        assert_eq!(DeviceId::parse(&id.grouped()).unwrap(), id);
        assert_eq!(DeviceId::parse(&id.as_str().to_lowercase()).unwrap(), id);
        assert!(DeviceId::parse("ABCD").is_err());
        assert!(DeviceId::parse(&"1".repeat(52)).is_err());
        assert_eq!(id.grouped().len(), 52 + 12);
    }

    #[test]
    fn private_keys_round_trip() {
        let keys = DeviceKeys::generate();
        let again = DeviceKeys::from_bytes(&keys.to_bytes()).unwrap();
        assert_eq!(again.device_id(), keys.device_id());
        assert_eq!(again.x25519_public(), keys.x25519_public());
        assert!(DeviceKeys::from_bytes(&[0u8; 10]).is_none());
    }

    #[test]
    fn garbage_documents_are_refused() {
        assert_eq!(
            IdentityDocument::decode("!!!"),
            Err(IdentityError::Encoding)
        );
        assert_eq!(IdentityDocument::decode("AAAA"), Err(IdentityError::Format));
    }
}
