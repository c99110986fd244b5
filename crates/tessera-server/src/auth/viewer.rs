//! Viewer tokens: EdDSA-signed JWTs, at most five minutes long, scoped to
//! one session, one access mode and one purpose.
//!
//! Each node signs with its own Ed25519 key, which lives in a file (see
//! `node_key`) and never in the database; the token's `kid` header names
//! the key, and the verifier takes the public half from `node_keys`. A copy
//! of the database therefore holds nothing that signs a token. Every minted
//! token's `jti` is recorded (`viewer_tokens`); `/ws/viewer` consumes it, so
//! a token the deployment never minted is refused even with a valid
//! signature, and one token opens one viewer.
//!
//! A token is checked on the viewer plane only: a login token or a device
//! key is never a viewer token (the purpose claim and the signature both
//! fail), and a viewer token opens no API route (it is not an `otk_`).
//! Besides the claims, `/ws/viewer` checks that the operator login that
//! minted the token is still live, so logging out kills its viewer tokens,
//! and that the user's current role allows the token's access; a role
//! change or disabling ends the user's unused tokens
//! (`store::node_keys::revoke_unused_of_user`).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;
use tessera_core::ErrorCode;

use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::{Deserialize, Serialize};
use tessera_core::Timestamp;

use crate::node_key::{NodeKey, NodeKeyError};
use crate::relay::Access;
use crate::store::{self, Db, StoreResult};

pub const PURPOSE: &str = "viewer";
/// The longest a viewer token may live.
pub const MAX_TTL: Duration = Duration::from_secs(300);
/// What the server mints.
pub const TTL: Duration = Duration::from_secs(120);

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ViewerClaims {
    /// The operator (user id).
    pub sub: String,
    /// The session this token opens.
    pub sid: String,
    /// The tenant.
    pub tid: String,
    /// `control` or `view_only`.
    pub access: String,
    /// Always `viewer`.
    pub purpose: String,
    /// The operator login that minted it.
    pub lid: String,
    /// Issued and expiry times, Unix seconds.
    pub iat: i64,
    pub exp: i64,
    /// Unique id: recorded at minting, consumed at admission, audited.
    pub jti: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ViewerTokenError {
    #[error("the viewer token is malformed or its signature does not verify")]
    Invalid,
    #[error("the viewer token has expired")]
    Expired,
    #[error("this token is not a viewer token")]
    WrongPurpose,
    #[error("this viewer token is for another session")]
    WrongSession,
    #[error("this viewer token was not issued by this deployment")]
    NotIssued,
    #[error("this viewer token has already opened a viewer; mint another")]
    Used,
}

impl ViewerTokenError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ViewerTokenError::Invalid | ViewerTokenError::NotIssued => ErrorCode::InvalidToken,
            ViewerTokenError::Expired => ErrorCode::TokenExpired,
            ViewerTokenError::WrongPurpose => ErrorCode::WrongCredentialType,
            ViewerTokenError::WrongSession => ErrorCode::WrongSession,
            ViewerTokenError::Used => ErrorCode::TokenUsed,
        }
    }
}

/// Signs viewer tokens with this node's key, and finds the public keys that
/// verify any node's tokens.
pub struct ViewerKeys {
    kid: String,
    encoding: EncodingKey,
    /// Public keys by kid, filled from `node_keys` on a miss.
    known: RwLock<HashMap<String, [u8; 32]>>,
}

impl std::fmt::Debug for ViewerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ViewerKeys({})", self.kid)
    }
}

impl ViewerKeys {
    pub fn new(node: &NodeKey) -> Result<Self, NodeKeyError> {
        let der = node.pkcs8_der()?;
        let known = HashMap::from([(node.kid().to_owned(), node.public_key())]);
        Ok(ViewerKeys {
            kid: node.kid().to_owned(),
            encoding: EncodingKey::from_ed_der(&der),
            known: RwLock::new(known),
        })
    }

    /// The id of the key this node signs with.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn mint(&self, claims: &ViewerClaims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.encoding)
    }

    /// The public key named `kid`: this node's, one seen before, or one
    /// another node published in `node_keys`.
    pub async fn public_key(&self, db: &Db, kid: &str) -> StoreResult<Option<[u8; 32]>> {
        if let Some(k) = self.known.read().ok().and_then(|m| m.get(kid).copied()) {
            return Ok(Some(k));
        }
        let Some(key) = store::node_keys::public_key(db, kid)
            .await?
            .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
        else {
            return Ok(None);
        };
        if let Ok(mut m) = self.known.write() {
            m.insert(kid.to_owned(), key);
        }
        Ok(Some(key))
    }

    /// Verifies the signature (by the key its `kid` names) and the claims;
    /// the `jti` is consumed by the caller.
    pub async fn check(
        &self,
        db: &Db,
        token: &str,
        session_id: &str,
        now: Timestamp,
    ) -> StoreResult<Result<ViewerClaims, ViewerTokenError>> {
        let kid = match token_kid(token) {
            Ok(kid) => kid,
            Err(e) => return Ok(Err(e)),
        };
        Ok(match self.public_key(db, &kid).await? {
            Some(public) => verify(token, &public, session_id, now),
            None => Err(ViewerTokenError::Invalid),
        })
    }
}

/// The `kid` of an EdDSA token; any other algorithm, or no kid, is invalid.
pub fn token_kid(token: &str) -> Result<String, ViewerTokenError> {
    let header = decode_header(token).map_err(|_| ViewerTokenError::Invalid)?;
    if header.alg != Algorithm::EdDSA {
        return Err(ViewerTokenError::Invalid);
    }
    header.kid.ok_or(ViewerTokenError::Invalid)
}

/// Verifies an EdDSA signature by `public`, then the claims against `now`
/// and the session asked for.
pub fn verify(
    token: &str,
    public: &[u8; 32],
    session_id: &str,
    now: Timestamp,
) -> Result<ViewerClaims, ViewerTokenError> {
    let mut validation = Validation::new(Algorithm::EdDSA);
    // Expiry is judged by the server's clock below, not the system's.
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let claims = decode::<ViewerClaims>(token, &DecodingKey::from_ed_der(public), &validation)
        .map_err(|_| ViewerTokenError::Invalid)?
        .claims;
    check_claims(&claims, session_id, now)?;
    Ok(claims)
}

/// The claim checks, apart from the signature.
pub fn check_claims(
    c: &ViewerClaims,
    session_id: &str,
    now: Timestamp,
) -> Result<(), ViewerTokenError> {
    if c.purpose != PURPOSE {
        return Err(ViewerTokenError::WrongPurpose);
    }
    let now_s = now.as_millis().div_euclid(1000);
    // Saturating: whatever times a token carries, the arithmetic cannot
    // overflow (a panic in a debug build; in release a wrap-around that
    // would make a token good for centuries look short-lived).
    if c.exp <= now_s
        || c.exp.saturating_sub(c.iat) > MAX_TTL.as_secs() as i64
        || c.iat > now_s.saturating_add(60)
    {
        return Err(ViewerTokenError::Expired);
    }
    if c.sid != session_id {
        return Err(ViewerTokenError::WrongSession);
    }
    if parse_access(&c.access).is_none() {
        return Err(ViewerTokenError::Invalid);
    }
    Ok(())
}

/// A token's `access` claim: one of the viewer access words.
pub fn parse_access(s: &str) -> Option<Access> {
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> ViewerClaims {
        ViewerClaims {
            sub: "u".into(),
            sid: "s1".into(),
            tid: "t".into(),
            access: "control".into(),
            purpose: PURPOSE.into(),
            lid: "l".into(),
            iat: now,
            exp: now + 120,
            jti: "j".into(),
        }
    }

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    /// Checks `token` as `/ws/viewer` would with `node` the only key known.
    fn check(
        node: &NodeKey,
        token: &str,
        sid: &str,
        now: Timestamp,
    ) -> Result<(), ViewerTokenError> {
        let kid = token_kid(token)?;
        if kid != node.kid() {
            return Err(ViewerTokenError::Invalid);
        }
        verify(token, &node.public_key(), sid, now).map(|_| ())
    }

    #[test]
    fn a_minted_token_is_eddsa_under_the_node_kid_and_checks_for_its_session_only() {
        let node = NodeKey::generate();
        let t = ViewerKeys::new(&node)
            .unwrap()
            .mint(&claims(1_800_000_000))
            .unwrap();
        let header = decode_header(&t).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(node.kid()));
        assert_eq!(verify(&t, &node.public_key(), "s1", NOW).unwrap().sid, "s1");
        assert_eq!(
            check(&node, &t, "s2", NOW),
            Err(ViewerTokenError::WrongSession)
        );
        let later = NOW.plus(Duration::from_secs(121));
        assert_eq!(
            check(&node, &t, "s1", later),
            Err(ViewerTokenError::Expired)
        );
    }

    #[test]
    fn another_key_under_the_real_kid_an_hs256_token_or_a_tampered_one_is_invalid() {
        let node = NodeKey::generate();
        // Another Ed25519 key, claiming to be the node's.
        let other = NodeKey::generate();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(node.kid().to_owned());
        let forged = encode(
            &header,
            &claims(1_800_000_000),
            &EncodingKey::from_ed_der(&other.pkcs8_der().unwrap()),
        )
        .unwrap();
        assert_eq!(
            check(&node, &forged, "s1", NOW),
            Err(ViewerTokenError::Invalid)
        );
        // HS256 with any secret, even the public key as the secret.
        for secret in [&[7u8; 32][..], &node.public_key()[..]] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(node.kid().to_owned());
            let hs = encode(
                &header,
                &claims(1_800_000_000),
                &EncodingKey::from_secret(secret),
            )
            .unwrap();
            assert_eq!(token_kid(&hs), Err(ViewerTokenError::Invalid));
            assert_eq!(
                verify(&hs, &node.public_key(), "s1", NOW),
                Err(ViewerTokenError::Invalid)
            );
        }
        // A real token with its claims rewritten.
        let t = ViewerKeys::new(&node)
            .unwrap()
            .mint(&claims(1_800_000_000))
            .unwrap();
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        let mut c = claims(1_800_000_000);
        c.sid = "s2".into();
        parts[1] =
            data_encoding::BASE64URL_NOPAD.encode(serde_json::to_string(&c).unwrap().as_bytes());
        assert_eq!(
            check(&node, &parts.join("."), "s2", NOW),
            Err(ViewerTokenError::Invalid)
        );
        assert_eq!(
            check(&node, "otk_abc", "s1", NOW),
            Err(ViewerTokenError::Invalid)
        );
        // No kid at all.
        let bare = encode(
            &Header::new(Algorithm::EdDSA),
            &claims(1_800_000_000),
            &EncodingKey::from_ed_der(&node.pkcs8_der().unwrap()),
        )
        .unwrap();
        assert_eq!(token_kid(&bare), Err(ViewerTokenError::Invalid));
    }

    #[test]
    fn refusals_of_the_jti_have_their_own_codes() {
        assert_eq!(ViewerTokenError::NotIssued.code(), ErrorCode::InvalidToken);
        assert_eq!(ViewerTokenError::Used.code(), ErrorCode::TokenUsed);
    }

    #[test]
    fn claims_beyond_five_minutes_or_of_another_purpose_are_refused() {
        let mut long = claims(1_800_000_000);
        long.exp = long.iat + 301;
        assert_eq!(
            check_claims(&long, "s1", NOW),
            Err(ViewerTokenError::Expired)
        );
        let mut other = claims(1_800_000_000);
        other.purpose = "login".into();
        assert_eq!(
            check_claims(&other, "s1", NOW),
            Err(ViewerTokenError::WrongPurpose)
        );
    }
}
