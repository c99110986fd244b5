//! Bearer secrets: their wire format, how they are minted and how they are
//! stored.
//!
//! A secret reads `<kind>_<52 lowercase base32 chars>` and carries 256 bits
//! from the OS CSPRNG. The server stores only its SHA-256 and finds the row by
//! that hash (an indexed equality lookup, never a scan), so a database dump
//! yields nothing usable. The first eight body characters are a public
//! *prefix*: the only part that may appear in logs, lists and audit rows.
//!
//! [`Secret`]'s `Debug` and `Display` print the masked prefix, so a secret
//! that ends up in a `tracing` field or a panic message does not leak.

use std::fmt;

use data_encoding::BASE32_NOPAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Length of the random part in bytes.
const SECRET_BYTES: usize = 32;
/// 32 bytes in unpadded base32.
const BODY_LEN: usize = 52;
/// How much of the body is public.
const PREFIX_LEN: usize = 8;

/// What a secret is for; its tag is the secret's visible prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecretKind {
    /// Authenticates one device on the device plane.
    DeviceKey,
    /// Allows enrolling a device.
    EnrollmentToken,
    /// An operator's login session.
    OperatorToken,
    /// RFC 8628 `device_code`, held by a device while its pairing is pending.
    DeviceCode,
}

impl SecretKind {
    pub const fn tag(self) -> &'static str {
        match self {
            SecretKind::DeviceKey => "cak",
            SecretKind::EnrollmentToken => "etk",
            SecretKind::OperatorToken => "otk",
            SecretKind::DeviceCode => "dvc",
        }
    }

    /// The kind whose tag starts `s`, if any.
    pub fn of(s: &str) -> Option<SecretKind> {
        let tag = s.split('_').next()?;
        [
            SecretKind::DeviceKey,
            SecretKind::EnrollmentToken,
            SecretKind::OperatorToken,
            SecretKind::DeviceCode,
        ]
        .into_iter()
        .find(|k| k.tag() == tag)
    }
}

/// Why a presented string is not a well-formed secret of the expected kind.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretFormatError {
    #[error("expected a credential starting with `{expected}_`")]
    WrongKind { expected: &'static str },
    #[error("credential has the wrong length")]
    Length,
    #[error("credential contains characters outside its alphabet")]
    Alphabet,
}

/// A bearer secret in plaintext. Shown once to its owner, then only hashed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    kind: SecretKind,
    text: Zeroizing<String>,
}

impl Secret {
    /// Mints a fresh secret from the OS CSPRNG.
    pub fn generate(kind: SecretKind) -> Secret {
        let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        let body = BASE32_NOPAD.encode(bytes.as_ref()).to_ascii_lowercase();
        Secret {
            kind,
            text: Zeroizing::new(format!("{}_{}", kind.tag(), body)),
        }
    }

    /// Checks that `s` is a canonical secret of `kind`. Says nothing about
    /// whether the secret is valid: that is the store's question.
    pub fn parse(kind: SecretKind, s: &str) -> Result<Secret, SecretFormatError> {
        let body = s
            .strip_prefix(kind.tag())
            .and_then(|rest| rest.strip_prefix('_'))
            .ok_or(SecretFormatError::WrongKind {
                expected: kind.tag(),
            })?;
        if body.len() != BODY_LEN {
            return Err(SecretFormatError::Length);
        }
        if !body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        {
            return Err(SecretFormatError::Alphabet);
        }
        // Reject encodings whose trailing bits are not zero, so that each
        // secret has exactly one spelling and thus one hash.
        match BASE32_NOPAD.decode(body.to_ascii_uppercase().as_bytes()) {
            Ok(bytes) if bytes.len() == SECRET_BYTES => {}
            _ => return Err(SecretFormatError::Alphabet),
        }
        Ok(Secret {
            kind,
            text: Zeroizing::new(s.to_owned()),
        })
    }

    pub fn kind(&self) -> SecretKind {
        self.kind
    }

    /// The plaintext. Only for handing to its owner once, or for sending.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// What the store keeps: SHA-256 of the whole string.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.text.as_bytes()).into()
    }

    /// The public part: `cak_abcdefgh`. Safe for logs, lists and audit rows.
    pub fn prefix(&self) -> String {
        let tag_len = self.kind.tag().len() + 1;
        self.text[..tag_len + PREFIX_LEN].to_owned()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}…)", self.prefix())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", self.prefix())
    }
}

/// Random bytes from the OS CSPRNG, for keys that are not bearer secrets
/// (signing keys, salts).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut out);
    out
}

/// Lowercase hex, for hashes and fingerprints in JSON.
pub fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_parses_back_and_hashes_stably() {
        let s = Secret::generate(SecretKind::DeviceKey);
        assert!(s.expose().starts_with("cak_"));
        assert_eq!(s.expose().len(), 4 + BODY_LEN);
        let p = Secret::parse(SecretKind::DeviceKey, s.expose()).unwrap();
        assert_eq!(p.hash(), s.hash());
    }

    #[test]
    fn wrong_kind_is_refused() {
        let s = Secret::generate(SecretKind::OperatorToken);
        assert_eq!(
            Secret::parse(SecretKind::DeviceKey, s.expose()),
            Err(SecretFormatError::WrongKind { expected: "cak" })
        );
    }

    #[test]
    fn non_canonical_spellings_are_refused() {
        let s = Secret::generate(SecretKind::DeviceKey);
        let upper = format!("cak_{}", s.expose()[4..].to_ascii_uppercase());
        assert_eq!(
            Secret::parse(SecretKind::DeviceKey, &upper),
            Err(SecretFormatError::Alphabet)
        );
        assert_eq!(
            Secret::parse(SecretKind::DeviceKey, &s.expose()[..40]),
            Err(SecretFormatError::Length)
        );
        // 52 chars of 'z' decode to more than 256 bits' worth of ones: the
        // final character carries non-zero padding bits.
        let bad = format!("cak_{}", "z".repeat(BODY_LEN));
        assert_eq!(
            Secret::parse(SecretKind::DeviceKey, &bad),
            Err(SecretFormatError::Alphabet)
        );
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let s = Secret::generate(SecretKind::EnrollmentToken);
        let shown = format!("{s:?} {s}");
        assert!(!shown.contains(s.expose()));
        assert!(shown.contains(&s.prefix()));
        assert_eq!(s.prefix().len(), 4 + PREFIX_LEN);
    }

    #[test]
    fn kind_is_read_from_the_tag() {
        assert_eq!(SecretKind::of("otk_abc"), Some(SecretKind::OperatorToken));
        assert_eq!(SecretKind::of("xyz_abc"), None);
    }
}
