//! RFC 8628 device pairing: the decisions, apart from the HTTP that carries
//! them.
//!
//! A pairing is `pending` until an operator approves or denies it by its
//! user code, then `consumed` by the one token exchange that returns the
//! device's key. The device polls; [`poll_outcome`] decides each answer.

use std::net::IpAddr;
use std::time::Duration;

use tessera_core::codes::normalise_user_code;
use tessera_core::kinds::PairingState;
use tessera_core::roles::Permission;
use tessera_core::secret::{Secret, SecretKind};
use tessera_core::Timestamp;

use crate::auth::lockout::{self, LockKey, Locked};
use crate::auth::{AuthError, Operator};
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::store::pairings::PairingRow;
use crate::store::{self, Db, StoreError, Write};
use crate::{enrollment, tenancy};

/// The RFC 8628 `client_id` of Tessera's agent.
pub const CLIENT_ID: &str = "tessera-agent";
/// RFC 8628 §3.5: each `slow_down` adds five seconds to the interval.
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// Why an operator cannot find or decide a pairing.
#[derive(Debug, thiserror::Error)]
pub enum PairingError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    LockedOut(Locked),
    #[error("pending pairing with that user code not found")]
    NotFound,
    #[error("this device identity was revoked; it cannot be paired again")]
    DeviceRevoked,
    #[error("this device is already enrolled")]
    AlreadyEnrolled,
    #[error("that code was already approved or denied, or has expired; start again on the device")]
    NotPending,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for PairingError {
    fn from(e: sqlx::Error) -> Self {
        PairingError::Store(e.into())
    }
}

/// The answer to one poll of the token endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum PollOutcome {
    /// Unknown, already redeemed, or issued to another client.
    InvalidGrant,
    AccessDenied,
    ExpiredToken,
    /// Polled too soon; the interval is now this long.
    SlowDown {
        interval_ms: i64,
    },
    AuthorizationPending,
    /// Approved: issue the device its key.
    Ready,
}

/// Decides a poll from the pairing's state, the poll's time and client.
pub fn poll_outcome(row: &PairingRow, client_id: &str, now: Timestamp) -> PollOutcome {
    if row.client_id != client_id || row.state == PairingState::Consumed {
        return PollOutcome::InvalidGrant;
    }
    if row.state == PairingState::Denied {
        return PollOutcome::AccessDenied;
    }
    if now >= row.expires_at {
        return PollOutcome::ExpiredToken;
    }
    if row.state == PairingState::Approved {
        return PollOutcome::Ready;
    }
    let too_soon = row
        .last_poll_at
        .is_some_and(|last| now.as_millis() - last.as_millis() < row.interval_ms);
    if too_soon {
        let step = i64::try_from(SLOW_DOWN_STEP.as_millis()).unwrap_or(5000);
        PollOutcome::SlowDown {
            interval_ms: row.interval_ms + step,
        }
    } else {
        PollOutcome::AuthorizationPending
    }
}

/// Looks up a pending pairing by a typed user code. A code that never
/// existed counts toward the operator's lockout at this address, so codes
/// cannot be guessed; a real code that was already decided or expired is
/// no guess ([`PairingError::NotPending`]).
pub async fn find_pending(
    db: &Db,
    op: &Operator,
    ip: IpAddr,
    typed: &str,
) -> Result<PairingRow, PairingError> {
    let now = db.now();
    let key = LockKey::pairing_code(&op.tenant_id, &op.user_id, ip);
    if let Some(locked) = lockout::check(db, std::slice::from_ref(&key)).await? {
        return Err(PairingError::LockedOut(locked));
    }
    let tenant = tenancy::for_anonymous();
    if let Some(code) = normalise_user_code(typed) {
        if let Some(p) =
            store::pairings::pending_by_user_code(db.pool(), tenant, &code, now).await?
        {
            return Ok(p);
        }
        if store::pairings::latest_by_user_code(db.pool(), tenant, &code)
            .await?
            .is_some()
        {
            return Err(PairingError::NotPending);
        }
    }
    db.write(async |w| lockout::record_failure(w, ip, std::slice::from_ref(&key)).await)
        .await?;
    Err(PairingError::NotFound)
}

/// An operator approves or denies the pairing shown under `typed`.
pub async fn decide(
    db: &Db,
    op: &Operator,
    ip: IpAddr,
    typed: &str,
    approve: bool,
) -> Result<PairingRow, PairingError> {
    op.require(Permission::ManageDevices)?;
    let pairing = find_pending(db, op, ip, typed).await?;
    db.write(async |w| {
        let now = w.now();
        if approve {
            if let Some(existing) =
                store::devices::by_id_any_tenant(w.conn(), &pairing.device_id).await?
            {
                return Err(if existing.revoked_at.is_some() {
                    PairingError::DeviceRevoked
                } else {
                    PairingError::AlreadyEnrolled
                });
            }
        }
        if !store::pairings::decide(w, &pairing.id, approve, &op.user_id, now).await? {
            return Err(PairingError::NotPending);
        }
        let action = if approve {
            Action::PairingApproved
        } else {
            Action::PairingDenied
        };
        w.audit(
            AuditEvent::new(&pairing.tenant_id, Actor::User(op.user_id.clone()), action)
                .ip(Some(ip))
                .target(format!("device:{}", pairing.device_id))
                .detail("pairing_id", pairing.id.as_str())
                .detail("device_name", pairing.name.clone())
                .detail("hostname", pairing.hostname.clone()),
        )
        .await?;
        Ok(())
    })
    .await?;
    Ok(pairing)
}

/// Why a redemption issued nothing; either way the transaction rolls back.
enum NotRedeemed {
    /// Another exchange won, or the identity already exists.
    Lost,
    Store(StoreError),
}

impl From<StoreError> for NotRedeemed {
    fn from(e: StoreError) -> Self {
        NotRedeemed::Store(e)
    }
}

/// Redeems an approved pairing: creates the device and returns its key.
/// One caller wins.
pub async fn redeem(db: &Db, pairing: &PairingRow) -> Result<(String, Secret), PollOutcome> {
    let result = db
        .write(async |w| {
            if !store::pairings::consume(w, &pairing.id).await? {
                return Err(NotRedeemed::Lost);
            }
            let owner = pairing.decided_by.clone().unwrap_or_default();
            let key = Secret::generate(SecretKind::DeviceKey);
            if !issue_for_pairing(w, pairing, &owner, &key).await? {
                return Err(NotRedeemed::Lost);
            }
            Ok(key)
        })
        .await;
    match result {
        Ok(key) => Ok((pairing.device_id.clone(), key)),
        Err(NotRedeemed::Lost) => Err(PollOutcome::InvalidGrant),
        Err(NotRedeemed::Store(e)) => {
            tracing::error!(error = %e, "cannot redeem a pairing");
            Err(PollOutcome::InvalidGrant)
        }
    }
}

async fn issue_for_pairing(
    w: &mut Write,
    p: &PairingRow,
    owner: &str,
    key: &Secret,
) -> Result<bool, StoreError> {
    // Pairing only ever creates a device: an identity that already exists
    // (enrolled, or revoked) gets nothing here. New keys for an enrolled
    // device come from an operator or a rotation.
    if store::devices::by_id_any_tenant(w.conn(), &p.device_id)
        .await?
        .is_some()
    {
        return Ok(false);
    }
    let now = w.now();
    store::devices::insert(
        w,
        store::devices::NewDevice {
            id: &p.device_id,
            tenant_id: &p.tenant_id,
            ed25519_public: &p.ed25519_public,
            x25519_public: &p.x25519_public,
            identity_signature: &p.identity_signature,
            name: &p.name,
            hostname: &p.hostname,
            os: &p.os,
            tags: &[],
            enrolled_via: "pairing",
            enrolled_by: &format!("user:{owner}"),
            owner_user_id: owner,
            ephemeral: false,
            now,
        },
    )
    .await?;
    enrollment::issue_key(
        w,
        &p.tenant_id,
        &p.device_id,
        key,
        &format!("user:{owner}"),
        "pairing",
    )
    .await?;
    w.audit(
        AuditEvent::new(
            &p.tenant_id,
            Actor::User(owner.to_owned()),
            Action::DeviceEnrolled,
        )
        .target(format!("device:{}", p.device_id))
        .detail("via", "pairing")
        .detail("pairing_id", p.id.as_str())
        .detail("device_name", p.name.clone()),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: &str, last_poll: Option<i64>) -> PairingRow {
        let state: PairingState = state.parse().unwrap();
        PairingRow {
            id: "p".into(),
            tenant_id: "t".into(),
            user_code: "BCDFGHJK".into(),
            client_id: CLIENT_ID.into(),
            device_id: "D".into(),
            ed25519_public: [0; 32],
            x25519_public: [0; 32],
            identity_signature: [0; 64],
            name: "n".into(),
            hostname: "h".into(),
            os: "o".into(),
            source_ip: None,
            created_at: Timestamp::from_millis(0),
            expires_at: Timestamp::from_millis(600_000),
            interval_ms: 5000,
            last_poll_at: last_poll.map(Timestamp::from_millis),
            state,
            decided_by: None,
        }
    }

    const T: Timestamp = Timestamp::from_millis(10_000);

    #[test]
    fn polls_follow_rfc_8628() {
        assert_eq!(
            poll_outcome(&row("pending", None), CLIENT_ID, T),
            PollOutcome::AuthorizationPending
        );
        assert_eq!(
            poll_outcome(&row("pending", Some(5_000)), CLIENT_ID, T),
            PollOutcome::AuthorizationPending
        );
        assert_eq!(
            poll_outcome(&row("pending", Some(6_000)), CLIENT_ID, T),
            PollOutcome::SlowDown {
                interval_ms: 10_000
            }
        );
        assert_eq!(
            poll_outcome(&row("approved", Some(9_999)), CLIENT_ID, T),
            PollOutcome::Ready
        );
        assert_eq!(
            poll_outcome(&row("denied", None), CLIENT_ID, T),
            PollOutcome::AccessDenied
        );
        assert_eq!(
            poll_outcome(&row("consumed", None), CLIENT_ID, T),
            PollOutcome::InvalidGrant
        );
        assert_eq!(
            poll_outcome(&row("pending", None), "other-client", T),
            PollOutcome::InvalidGrant
        );
        let late = Timestamp::from_millis(600_000);
        assert_eq!(
            poll_outcome(&row("pending", None), CLIENT_ID, late),
            PollOutcome::ExpiredToken
        );
        assert_eq!(
            poll_outcome(&row("approved", None), CLIENT_ID, late),
            PollOutcome::ExpiredToken
        );
        // A denial is reported as such even after expiry.
        assert_eq!(
            poll_outcome(&row("denied", None), CLIENT_ID, late),
            PollOutcome::AccessDenied
        );
    }
}
