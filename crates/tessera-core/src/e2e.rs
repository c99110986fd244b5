//! End-to-end encryption of automatic sessions.
//!
//! Members pair up with the creator through a Noise `KK` handshake
//! (`Noise_KK_25519_ChaChaPoly_BLAKE2s`) between the X25519 keys each side
//! has pinned for the other, relayed by the server. The creator then sends
//! each member the session key inside its Noise channel. Session payloads
//! are sealed with ChaCha20-Poly1305 under the session key; the nonce is the
//! sender's member index and its own counter, so no two senders ever share
//! a nonce, and the associated data binds session, epoch, sender and counter.
//! Receivers accept each sender's counters only in increasing order, which
//! rejects replays. Removing a member moves the session to a new key epoch.
//! The server sees only ciphertext, and any byte it changes fails the tag.

use std::collections::HashMap;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use zeroize::Zeroizing;

/// The Noise pattern members use.
pub const NOISE_PATTERN: &str = "Noise_KK_25519_ChaChaPoly_BLAKE2s";
/// Largest Noise message.
pub const NOISE_MAX: usize = 65535;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum E2eError {
    #[error("the payload does not authenticate (altered, or the wrong key)")]
    Tampered,
    #[error("replayed or reordered payload from member {sender} (counter {counter})")]
    Replay { sender: u32, counter: u64 },
    #[error("payload for key epoch {got}, but this member holds epoch {have}")]
    WrongEpoch { got: u32, have: u32 },
    #[error("noise handshake failed: {0}")]
    Noise(String),
}

/// A session key of one epoch.
#[derive(Clone)]
pub struct SessionKey {
    key: Zeroizing<[u8; 32]>,
    pub epoch: u32,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionKey(epoch {})", self.epoch)
    }
}

impl SessionKey {
    pub fn generate(epoch: u32) -> SessionKey {
        SessionKey {
            key: Zeroizing::new(crate::secret::random_bytes()),
            epoch,
        }
    }

    pub fn from_bytes(bytes: &[u8], epoch: u32) -> Option<SessionKey> {
        let key: [u8; 32] = bytes.try_into().ok()?;
        Some(SessionKey {
            key: Zeroizing::new(key),
            epoch,
        })
    }

    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.key.to_vec())
    }
}

fn nonce(sender: u32, counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&sender.to_be_bytes());
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

fn aad(session_id: &str, epoch: u32, sender: u32, counter: u64) -> Vec<u8> {
    let mut a = Vec::with_capacity(64);
    a.extend_from_slice(b"tessera/e2e/v1\0");
    a.extend_from_slice(&(session_id.len() as u32).to_be_bytes());
    a.extend_from_slice(session_id.as_bytes());
    a.extend_from_slice(&epoch.to_be_bytes());
    a.extend_from_slice(&sender.to_be_bytes());
    a.extend_from_slice(&counter.to_be_bytes());
    a
}

/// Seals a payload from member `sender` with its `counter`.
pub fn seal(
    key: &SessionKey,
    session_id: &str,
    sender: u32,
    counter: u64,
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key.key.as_ref()));
    let aad = aad(session_id, key.epoch, sender, counter);
    // Encryption with a valid key and in-range lengths cannot fail.
    cipher
        .encrypt(
            Nonce::from_slice(&nonce(sender, counter)),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .unwrap_or_default()
}

/// Opens a payload; any change to it, or the wrong key, fails.
pub fn open(
    key: &SessionKey,
    session_id: &str,
    epoch: u32,
    sender: u32,
    counter: u64,
    ciphertext: &[u8],
) -> Result<Vec<u8>, E2eError> {
    if epoch != key.epoch {
        return Err(E2eError::WrongEpoch {
            got: epoch,
            have: key.epoch,
        });
    }
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key.key.as_ref()));
    let aad = aad(session_id, epoch, sender, counter);
    cipher
        .decrypt(
            Nonce::from_slice(&nonce(sender, counter)),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| E2eError::Tampered)
}

/// Rejects replayed or reordered counters, per sender.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    last: HashMap<u32, u64>,
}

impl ReplayGuard {
    /// Whether `counter` is new for `sender`; changes nothing, so a forged
    /// payload cannot move the window before it is authenticated.
    pub fn fresh(&self, sender: u32, counter: u64) -> Result<(), E2eError> {
        match self.last.get(&sender) {
            Some(last) if counter <= *last => Err(E2eError::Replay { sender, counter }),
            _ => Ok(()),
        }
    }

    /// Records an authenticated payload's counter.
    pub fn record(&mut self, sender: u32, counter: u64) {
        self.last.insert(sender, counter);
    }

    /// A new key epoch starts every sender's counter afresh.
    pub fn reset(&mut self) {
        self.last.clear();
    }
}

/// A key only the creator and one member share, handed over inside their
/// Noise channel. Every member holds the session key, so the AEAD tag only
/// says "some member sealed this"; an origin tag under this key says the
/// creator sealed it (to that member) or that member did (to the creator).
#[derive(Clone)]
pub struct OriginKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for OriginKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginKey(<redacted>)")
    }
}

impl OriginKey {
    pub fn generate() -> OriginKey {
        OriginKey(Zeroizing::new(crate::secret::random_bytes()))
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<OriginKey> {
        let k: [u8; 32] = bytes.try_into().ok()?;
        Some(OriginKey(Zeroizing::new(k)))
    }

    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.to_vec())
    }
}

/// Where a sealed payload sits: what its tags and its AEAD bind.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    pub session_id: &'a str,
    pub epoch: u32,
    pub sender: u32,
    pub counter: u64,
}

/// The origin tag of a sealed payload: keyed BLAKE3 over its place and
/// ciphertext.
pub fn origin_tag(key: &OriginKey, at: Place<'_>, ciphertext: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(&aad(at.session_id, at.epoch, at.sender, at.counter));
    h.update(ciphertext);
    *h.finalize().as_bytes()
}

/// Checks an origin tag (in constant time).
pub fn check_origin(
    key: &OriginKey,
    at: Place<'_>,
    ciphertext: &[u8],
    tag: &[u8],
) -> Result<(), E2eError> {
    let Ok(tag) = <[u8; 32]>::try_from(tag) else {
        return Err(E2eError::Tampered);
    };
    if blake3::Hash::from_bytes(origin_tag(key, at, ciphertext)) == blake3::Hash::from_bytes(tag) {
        Ok(())
    } else {
        Err(E2eError::Tampered)
    }
}

/// Opens a payload from a peer whose origin key this side holds: in order,
/// from that peer, unaltered. Only then is its counter recorded.
pub fn open_from(
    key: &SessionKey,
    origin: &OriginKey,
    guard: &mut ReplayGuard,
    at: Place<'_>,
    ciphertext: &[u8],
    tag: &[u8],
) -> Result<Vec<u8>, E2eError> {
    guard.fresh(at.sender, at.counter)?;
    check_origin(origin, at, ciphertext, tag)?;
    let plain = open(
        key,
        at.session_id,
        at.epoch,
        at.sender,
        at.counter,
        ciphertext,
    )?;
    guard.record(at.sender, at.counter);
    Ok(plain)
}

fn noise_err(e: snow::Error) -> E2eError {
    E2eError::Noise(e.to_string())
}

/// A Noise KK initiator (the session creator) toward one member.
pub fn kk_initiator(
    local_x25519_secret: &[u8; 32],
    remote_x25519: &[u8; 32],
    prologue: &[u8],
) -> Result<snow::HandshakeState, E2eError> {
    kk(local_x25519_secret, remote_x25519, prologue)?
        .build_initiator()
        .map_err(noise_err)
}

/// A Noise KK responder (a member) toward the creator.
pub fn kk_responder(
    local_x25519_secret: &[u8; 32],
    remote_x25519: &[u8; 32],
    prologue: &[u8],
) -> Result<snow::HandshakeState, E2eError> {
    kk(local_x25519_secret, remote_x25519, prologue)?
        .build_responder()
        .map_err(noise_err)
}

/// The KK handshake both roles build: the same keys and prologue, so that
/// either side's view of the pair is bound in.
fn kk<'a>(
    local_x25519_secret: &'a [u8; 32],
    remote_x25519: &'a [u8; 32],
    prologue: &'a [u8],
) -> Result<snow::Builder<'a>, E2eError> {
    let params = NOISE_PATTERN.parse().map_err(noise_err)?;
    Ok(snow::Builder::new(params)
        .local_private_key(local_x25519_secret)
        .remote_public_key(remote_x25519)
        .prologue(prologue))
}

/// The prologue both sides bind their handshake to.
pub fn prologue(session_id: &str, creator: &str, member: &str) -> Vec<u8> {
    format!("tessera/e2e-kk/v1\0{session_id}\0{creator}\0{member}").into_bytes()
}

/// Writes the next handshake or transport message.
pub fn write(state: &mut snow::HandshakeState, payload: &[u8]) -> Result<Vec<u8>, E2eError> {
    let mut out = vec![0u8; NOISE_MAX];
    let n = state.write_message(payload, &mut out).map_err(noise_err)?;
    out.truncate(n);
    Ok(out)
}

/// Reads the next handshake message.
pub fn read(state: &mut snow::HandshakeState, message: &[u8]) -> Result<Vec<u8>, E2eError> {
    let mut out = vec![0u8; NOISE_MAX];
    let n = state.read_message(message, &mut out).map_err(noise_err)?;
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceKeys;

    #[test]
    fn a_sealed_payload_opens_once_and_not_when_altered() {
        let k = SessionKey::generate(0);
        let ct = seal(&k, "s", 1, 7, b"hello");
        assert_eq!(open(&k, "s", 0, 1, 7, &ct).unwrap(), b"hello");
        for i in 0..ct.len() {
            let mut bad = ct.clone();
            bad[i] ^= 1;
            assert_eq!(
                open(&k, "s", 0, 1, 7, &bad),
                Err(E2eError::Tampered),
                "byte {i}"
            );
        }
        assert_eq!(
            open(&k, "s", 0, 2, 7, &ct),
            Err(E2eError::Tampered),
            "another sender"
        );
        assert_eq!(
            open(&k, "t", 0, 1, 7, &ct),
            Err(E2eError::Tampered),
            "another session"
        );
        assert_eq!(
            open(&SessionKey::generate(0), "s", 0, 1, 7, &ct),
            Err(E2eError::Tampered),
            "another key"
        );
        assert!(matches!(
            open(&k, "s", 1, 1, 7, &ct),
            Err(E2eError::WrongEpoch { .. })
        ));
    }

    #[test]
    fn replays_and_reorders_are_refused_per_sender() {
        let mut g = ReplayGuard::default();
        let mut take = |s, c| g.fresh(s, c).map(|()| g.record(s, c));
        assert!(take(1, 1).is_ok());
        assert!(take(1, 2).is_ok());
        assert!(take(2, 1).is_ok());
        assert!(take(1, 2).is_err());
        assert!(take(1, 1).is_err());
        g.reset();
        assert!(g.fresh(1, 1).is_ok());
        // Checking alone moves nothing.
        assert!(g.fresh(1, u64::MAX).is_ok());
        assert!(g.fresh(1, 1).is_ok());
    }

    #[test]
    fn kk_between_pinned_keys_carries_a_session_key_and_fails_with_a_wrong_pin() {
        let (a, b) = (DeviceKeys::generate(), DeviceKeys::generate());
        let p = prologue("s", "A", "B");
        let mut init = kk_initiator(&a.x25519_secret().to_bytes(), &b.x25519_public(), &p).unwrap();
        let mut resp = kk_responder(&b.x25519_secret().to_bytes(), &a.x25519_public(), &p).unwrap();
        let m1 = write(&mut init, &[]).unwrap();
        read(&mut resp, &m1).unwrap();
        let m2 = write(&mut resp, &[]).unwrap();
        read(&mut init, &m2).unwrap();
        let mut it = init.into_transport_mode().unwrap();
        let mut rt = resp.into_transport_mode().unwrap();
        let key = SessionKey::generate(0);
        let mut buf = vec![0u8; 1024];
        let n = it.write_message(&key.to_bytes(), &mut buf).unwrap();
        let mut out = vec![0u8; 1024];
        let m = rt.read_message(&buf[..n], &mut out).unwrap();
        assert_eq!(&out[..m], key.to_bytes().as_slice());

        // A responder that pinned someone else's key cannot complete.
        let mallory = DeviceKeys::generate();
        let mut init = kk_initiator(&a.x25519_secret().to_bytes(), &b.x25519_public(), &p).unwrap();
        let mut wrong =
            kk_responder(&b.x25519_secret().to_bytes(), &mallory.x25519_public(), &p).unwrap();
        let m1 = write(&mut init, &[]).unwrap();
        assert!(read(&mut wrong, &m1).is_err());
    }
}
