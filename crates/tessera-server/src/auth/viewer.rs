//! Viewer tokens: signed (HS256, with a per-deployment secret every node
//! shares through the database), at most five minutes long, scoped to one
//! session, one access mode and one purpose.
//!
//! A token is checked on the viewer plane only: a login token or a device
//! key is never a viewer token (the purpose claim and the signature both
//! fail), and a viewer token opens no API route (it is not an `otk_`).
//! Besides the claims, `/ws/viewer` checks that the operator login that
//! minted the token is still live, so logging out kills its viewer tokens.

use std::time::Duration;
use tessera_core::ErrorCode;

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tessera_core::Timestamp;

use crate::relay::Access;

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
    /// Unique id, for the audit log.
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
}

impl ViewerTokenError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ViewerTokenError::Invalid => ErrorCode::InvalidToken,
            ViewerTokenError::Expired => ErrorCode::TokenExpired,
            ViewerTokenError::WrongPurpose => ErrorCode::WrongCredentialType,
            ViewerTokenError::WrongSession => ErrorCode::WrongSession,
        }
    }
}

/// Signs and checks viewer tokens.
#[derive(Clone)]
pub struct ViewerKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for ViewerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ViewerKeys(<secret>)")
    }
}

impl ViewerKeys {
    pub fn new(secret: &[u8]) -> Self {
        ViewerKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    pub fn mint(&self, claims: &ViewerClaims) -> Result<String, jsonwebtoken::errors::Error> {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// Verifies the signature and then the claims against `now` and the
    /// session asked for.
    pub fn check(
        &self,
        token: &str,
        session_id: &str,
        now: Timestamp,
    ) -> Result<ViewerClaims, ViewerTokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is judged by the server's clock below, not the system's.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let claims = decode::<ViewerClaims>(token, &self.decoding, &validation)
            .map_err(|_| ViewerTokenError::Invalid)?
            .claims;
        check_claims(&claims, session_id, now)?;
        Ok(claims)
    }
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

pub fn parse_access(s: &str) -> Option<Access> {
    match s {
        "control" => Some(Access::Control),
        "view_only" => Some(Access::ViewOnly),
        _ => None,
    }
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

    #[test]
    fn a_minted_token_checks_for_its_session_only() {
        let keys = ViewerKeys::new(&[7u8; 32]);
        let t = keys.mint(&claims(1_800_000_000)).unwrap();
        assert_eq!(keys.check(&t, "s1", NOW).unwrap().sid, "s1");
        assert_eq!(
            keys.check(&t, "s2", NOW),
            Err(ViewerTokenError::WrongSession)
        );
        let later = NOW.plus(Duration::from_secs(121));
        assert_eq!(keys.check(&t, "s1", later), Err(ViewerTokenError::Expired));
    }

    #[test]
    fn another_key_or_a_tampered_token_is_invalid() {
        let t = ViewerKeys::new(&[7u8; 32])
            .mint(&claims(1_800_000_000))
            .unwrap();
        assert_eq!(
            ViewerKeys::new(&[8u8; 32]).check(&t, "s1", NOW),
            Err(ViewerTokenError::Invalid)
        );
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        let mut c = claims(1_800_000_000);
        c.access = "control".into();
        c.sid = "s2".into();
        parts[1] =
            data_encoding::BASE64URL_NOPAD.encode(serde_json::to_string(&c).unwrap().as_bytes());
        assert_eq!(
            ViewerKeys::new(&[7u8; 32]).check(&parts.join("."), "s2", NOW),
            Err(ViewerTokenError::Invalid)
        );
        assert_eq!(
            ViewerKeys::new(&[7u8; 32]).check("otk_abc", "s1", NOW),
            Err(ViewerTokenError::Invalid)
        );
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
