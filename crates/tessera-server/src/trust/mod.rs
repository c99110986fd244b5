//! Trust between devices and the grants they give each other: the checks a
//! signed statement must pass and the changes it makes, apart from the HTTP
//! that carries them.
//!
//! The server stores and relays; it never decides whom a device trusts. It
//! checks every signed statement against the signer's current key, refuses
//! stale and replayed ones, and keeps tombstones: a withdrawn attestation or
//! a revoked grant is not brought back by re-sending it.

pub mod attestations;
pub mod exchanges;
pub mod grants;
pub mod rotation;

use std::time::Duration;

use tessera_core::identity::{DeviceId, IdentityDocument};
use tessera_core::trust::{key_from_hex, AutoJoinGrant, Signed, Statement};
use tessera_core::Timestamp;

use crate::auth::device::DevicePrincipal;
use crate::store::devices::DeviceRow;
use crate::store::trust::{AttestationRow, GrantRow};
use crate::store::{self, Db, StoreError};

/// How far a statement's `issued_at` may be from the server's clock.
pub const FRESHNESS: Duration = Duration::from_secs(600);
/// How long a SAS exchange stays open.
pub const EXCHANGE_TTL: Duration = Duration::from_secs(600);
/// The longest a grant may run.
pub const MAX_GRANT: Duration = Duration::from_secs(366 * 24 * 3600);

/// Why a trust statement or step is refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// `{0}` names what was not found.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A device acting for another, or on another's key.
    #[error("{0}")]
    NotYours(&'static str),
    #[error("the signature does not verify with the signer's current key")]
    BadSignature,
    #[error("the statement's time is more than ten minutes from the server's clock")]
    OutOfTime,
    /// A newer statement, or this very one, is already on record.
    #[error("{0}")]
    Superseded(&'static str),
    #[error("{0}")]
    InvalidField(String),
    #[error("{0}")]
    InvalidIdentity(String),
    #[error("a grant needs an id, a scope and an expiry within a year")]
    InvalidGrant,
    #[error("{0}")]
    ExchangeNotOpen(&'static str),
    #[error("cannot encode the statement: {0}")]
    Encode(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Hex of a key, as statements pin keys.
pub fn hex(b: &[u8; 32]) -> String {
    tessera_core::secret::hex(b)
}

/// Refuses a statement whose time is more than [`FRESHNESS`] from `now`,
/// either way.
pub fn fresh(issued_at: Timestamp, now: Timestamp) -> Result<(), TrustError> {
    if issued_at.since(now) > FRESHNESS || now.since(issued_at) > FRESHNESS {
        return Err(TrustError::OutOfTime);
    }
    Ok(())
}

/// Checks a statement's signature against the signer's current key.
pub fn verified<T: Statement>(signed: &Signed<T>, key: &[u8; 32]) -> Result<(), TrustError> {
    signed.verify(key).map_err(|_| TrustError::BadSignature)
}

/// What a statement a device makes for itself must pass, in this order:
/// it names the caller as `issuer` (`why` says what a device may do only
/// for itself), the caller's key signed it, and it was issued within
/// [`FRESHNESS`] of `now`.
pub fn issued_by_me<T: Statement>(
    signed: &Signed<T>,
    issuer: &str,
    issued_at: Timestamp,
    me: &DevicePrincipal,
    why: &'static str,
    now: Timestamp,
) -> Result<(), TrustError> {
    own(issuer, me, why)?;
    verified(signed, &me.ed25519_public)?;
    fresh(issued_at, now)
}

/// The signer must be the caller: `why` says what a device may do only
/// for itself.
pub fn own(issuer: &str, me: &DevicePrincipal, why: &'static str) -> Result<(), TrustError> {
    if issuer == me.device_id {
        Ok(())
    } else {
        Err(TrustError::NotYours(why))
    }
}

/// A 32-byte key or nonce in hex.
pub fn hex32(s: &str, what: &str) -> Result<(), TrustError> {
    key_from_hex(s)
        .map(|_| ())
        .ok_or_else(|| TrustError::InvalidField(format!("`{what}` must be 64 hex digits")))
}

/// What a withdrawal's subject names after `prefix` (`trust:` or `grant:`).
pub fn subject<'a>(
    subject: &'a str,
    prefix: &str,
    shape: &'static str,
) -> Result<&'a str, TrustError> {
    subject
        .strip_prefix(prefix)
        .ok_or_else(|| TrustError::InvalidField(shape.to_owned()))
}

/// An attestation no newer than the last one about the same peer, or than
/// that one's withdrawal, is a replay: revocation wins.
pub fn attestation_is_stale(issued_at: Timestamp, previous: Option<&AttestationRow>) -> bool {
    previous.is_some_and(|prev| {
        issued_at <= prev.issued_at || prev.withdrawn_at.is_some_and(|w| issued_at <= w)
    })
}

/// Whether `a`'s live attestation about `b` pins the key `b` holds now.
pub fn pins_current_key(a_about_b: Option<&AttestationRow>, b_ed25519: &[u8; 32]) -> bool {
    a_about_b.is_some_and(|x| x.withdrawn_at.is_none() && x.trusted_ed25519 == hex(b_ed25519))
}

/// A grant must have a scope, a uuid id and an expiry in the future, at
/// most [`MAX_GRANT`] after it was issued.
pub fn check_grant_shape(g: &AutoJoinGrant, now: Timestamp) -> Result<(), TrustError> {
    if g.scopes.is_empty()
        || g.expires_at <= now
        || g.expires_at.since(g.issued_at) > MAX_GRANT
        || uuid::Uuid::parse_str(&g.id).is_err()
    {
        return Err(TrustError::InvalidGrant);
    }
    Ok(())
}

/// A grant no newer than the current one to the same device is stale.
pub fn grant_is_stale(g: &AutoJoinGrant, current: Option<&GrantRow>) -> bool {
    current.is_some_and(|p| g.issued_at <= p.grant.issued_at)
}

/// An operator's revocation reason, as stored: no control characters, at
/// most 200 characters.
pub fn revocation_reason(reason: &str) -> String {
    tessera_core::text::printable(reason, 200)
}

/// The identity a device shows in an exchange step must be its current one.
pub fn check_step(identity: &str, nonce: &str, me: &DevicePrincipal) -> Result<(), TrustError> {
    hex32(nonce, "nonce")?;
    let doc = IdentityDocument::decode(identity)
        .map_err(|e| TrustError::InvalidIdentity(e.to_string()))?;
    if doc.ed25519 != me.ed25519_public {
        return Err(TrustError::InvalidIdentity(
            "that is not this device's current identity".to_owned(),
        ));
    }
    Ok(())
}

/// A device of the caller's tenant, by id; never a one-session device.
pub async fn peer(db: &Db, me: &DevicePrincipal, id: &str) -> Result<DeviceRow, TrustError> {
    let id = DeviceId::parse(id).map_err(|_| TrustError::NotFound("device"))?;
    store::devices::by_id(db.pool(), &me.tenant_id, id.as_str())
        .await?
        .filter(|d| !d.ephemeral && d.revoked_at.is_none())
        .ok_or(TrustError::NotFound("device"))
}

/// The devices `me` can name as peers: its tenant's enrolled, unrevoked
/// devices other than itself (the same ones [`peer`] answers for).
pub async fn peers(db: &Db, me: &DevicePrincipal) -> Result<Vec<DeviceRow>, TrustError> {
    Ok(store::devices::list(db, &me.tenant_id)
        .await?
        .into_iter()
        .filter(|d| d.revoked_at.is_none() && d.id != me.device_id)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::trust::Scope;

    const NOW: Timestamp = Timestamp::from_millis(1_000_000_000);

    fn attestation(issued: i64, withdrawn: Option<i64>, key: &[u8; 32]) -> AttestationRow {
        AttestationRow {
            id: "a".into(),
            truster: "A".into(),
            trusted: "B".into(),
            trusted_ed25519: hex(key),
            trusted_x25519: hex(&[0; 32]),
            issued_at: Timestamp::from_millis(issued),
            signature: String::new(),
            withdrawn_at: withdrawn.map(Timestamp::from_millis),
        }
    }

    fn grant(issued: Timestamp, expires: Timestamp) -> AutoJoinGrant {
        AutoJoinGrant {
            id: uuid::Uuid::now_v7().to_string(),
            granter: "A".into(),
            grantee: "B".into(),
            grantee_fingerprint: String::new(),
            scopes: vec![Scope::Files],
            issued_at: issued,
            expires_at: expires,
        }
    }

    #[test]
    fn statements_must_be_within_ten_minutes_either_way() {
        assert!(fresh(NOW, NOW).is_ok());
        assert!(fresh(NOW.plus(FRESHNESS), NOW).is_ok());
        assert!(fresh(NOW.plus(FRESHNESS + Duration::from_millis(1)), NOW).is_err());
        let early = Timestamp::from_millis(NOW.as_millis() - 600_001);
        assert!(matches!(fresh(early, NOW), Err(TrustError::OutOfTime)));
    }

    #[test]
    fn an_attestation_must_be_newer_than_the_last_and_its_withdrawal() {
        let k = [7; 32];
        assert!(!attestation_is_stale(NOW, None));
        let prev = attestation(NOW.as_millis() - 10, None, &k);
        assert!(!attestation_is_stale(NOW, Some(&prev)));
        let same = attestation(NOW.as_millis(), None, &k);
        assert!(attestation_is_stale(NOW, Some(&same)));
        let withdrawn = attestation(NOW.as_millis() - 10, Some(NOW.as_millis()), &k);
        assert!(attestation_is_stale(NOW, Some(&withdrawn)));
    }

    #[test]
    fn a_pin_counts_only_while_live_and_on_the_current_key() {
        let k = [7; 32];
        assert!(pins_current_key(Some(&attestation(1, None, &k)), &k));
        assert!(!pins_current_key(Some(&attestation(1, None, &k)), &[8; 32]));
        assert!(!pins_current_key(Some(&attestation(1, Some(2), &k)), &k));
        assert!(!pins_current_key(None, &k));
    }

    #[test]
    fn grants_need_a_scope_an_id_and_a_bounded_future_expiry() {
        let ok = grant(NOW, NOW.plus(Duration::from_secs(3600)));
        assert!(check_grant_shape(&ok, NOW).is_ok());
        let mut no_scope = ok.clone();
        no_scope.scopes.clear();
        assert!(check_grant_shape(&no_scope, NOW).is_err());
        let mut bad_id = ok.clone();
        bad_id.id = "x".into();
        assert!(check_grant_shape(&bad_id, NOW).is_err());
        assert!(check_grant_shape(&grant(NOW, NOW), NOW).is_err());
        let too_long = grant(NOW, NOW.plus(MAX_GRANT + Duration::from_secs(1)));
        assert!(matches!(
            check_grant_shape(&too_long, NOW),
            Err(TrustError::InvalidGrant)
        ));
    }

    #[test]
    fn reasons_lose_control_characters_and_are_bounded() {
        assert_eq!(revocation_reason("a\nb\u{7}c"), "abc");
        assert_eq!(revocation_reason(&"x".repeat(500)).len(), 200);
    }

    #[test]
    fn subjects_name_their_kind() {
        assert_eq!(subject("grant:g1", "grant:", "s").unwrap(), "g1");
        assert!(subject("trust:d", "grant:", "s").is_err());
    }
}
