//! The server's checks on each device an automatic session names: one
//! pure function of what the server knows, tested without a database.

use tessera_core::kinds::RejectionReason;
use tessera_core::trust::{fingerprint, grant_state, GrantState, Scope};
use tessera_core::Timestamp;
use tessera_proto::AUTO_SESSION_VERSION;

use crate::store::devices::DeviceRow;
use crate::store::trust::{AttestationRow, GrantRow};

/// What the server knows about one named device.
#[derive(Debug, Default)]
pub struct Facts<'a> {
    pub device: Option<&'a DeviceRow>,
    pub same_tenant: bool,
    /// 1-based position among the members, the creator being 1.
    pub position: usize,
    pub online: bool,
    pub protocol: Option<u32>,
    pub creator_trusts_member: Option<&'a AttestationRow>,
    pub member_trusts_creator: Option<&'a AttestationRow>,
    /// The member's current grant to the creator.
    pub grant: Option<&'a GrantRow>,
}

pub(super) fn hex(b: &[u8; 32]) -> String {
    tessera_core::secret::hex(b)
}

fn live(a: Option<&AttestationRow>) -> Option<&AttestationRow> {
    a.filter(|a| a.withdrawn_at.is_none())
}

/// The outcome for one named device: `Ok` (it is invited), or the first
/// reason it cannot join, in a fixed order.
pub fn decide(
    creator: &DeviceRow,
    f: &Facts<'_>,
    scope: Scope,
    max_members: usize,
    now: Timestamp,
) -> Result<(), RejectionReason> {
    let Some(member) = f.device.filter(|d| d.revoked_at.is_none()) else {
        return Err(RejectionReason::UnknownDevice);
    };
    if !f.same_tenant {
        return Err(RejectionReason::OtherTenant);
    }
    if f.position > max_members {
        return Err(RejectionReason::TooManyMembers);
    }
    let (Some(c2m), Some(m2c)) = (live(f.creator_trusts_member), live(f.member_trusts_creator))
    else {
        return Err(RejectionReason::NotMutuallyTrusted);
    };
    // Each side's pin must still be the other's current key.
    if c2m.trusted_ed25519 != hex(&member.ed25519_public)
        || m2c.trusted_ed25519 != hex(&creator.ed25519_public)
    {
        return Err(RejectionReason::KeyMismatch);
    }
    let Some(grant) = f.grant else {
        return Err(RejectionReason::NoGrant);
    };
    match grant_state(
        &grant.grant,
        grant.revoked_at.is_some(),
        &fingerprint(&creator.ed25519_public),
        now,
    ) {
        GrantState::Revoked => return Err(RejectionReason::GrantRevoked),
        GrantState::Expired => return Err(RejectionReason::GrantExpired),
        GrantState::KeyMismatch => return Err(RejectionReason::KeyMismatch),
        GrantState::Active | GrantState::ExpiringSoon => {}
    }
    if !grant.grant.scopes.contains(&scope) {
        return Err(RejectionReason::ScopeMissing);
    }
    if !f.online {
        return Err(RejectionReason::Offline);
    }
    if f.protocol.is_none_or(|v| v < AUTO_SESSION_VERSION) {
        return Err(RejectionReason::IncompatibleVersion);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::trust::AutoJoinGrant;

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    fn device(id: &str, ed: u8) -> DeviceRow {
        DeviceRow {
            id: id.into(),
            tenant_id: "t".into(),
            ed25519_public: [ed; 32],
            x25519_public: [ed; 32],
            name: id.into(),
            hostname: "h".into(),
            os: "o".into(),
            agent_version: None,
            tags: vec![],
            enrolled_via: "pairing".into(),
            enrolled_by: "user:u".into(),
            owner_user_id: "u".into(),
            created_at: NOW,
            connected_at: None,
            disconnected_at: None,
            last_seen_at: None,
            last_ip: None,
            revoked_at: None,
            revoked_reason: None,
            ephemeral: false,
        }
    }

    fn att(truster: &str, trusted: &DeviceRow) -> AttestationRow {
        AttestationRow {
            id: "a".into(),
            truster: truster.into(),
            trusted: trusted.id.clone(),
            trusted_ed25519: hex(&trusted.ed25519_public),
            trusted_x25519: hex(&trusted.x25519_public),
            issued_at: NOW,
            signature: String::new(),
            withdrawn_at: None,
        }
    }

    fn grant(creator: &DeviceRow, scopes: &[Scope]) -> GrantRow {
        GrantRow {
            grant: AutoJoinGrant {
                id: "g".into(),
                granter: "B".into(),
                grantee: creator.id.clone(),
                grantee_fingerprint: fingerprint(&creator.ed25519_public),
                scopes: scopes.to_vec(),
                issued_at: NOW,
                expires_at: NOW.plus(std::time::Duration::from_secs(86_400 * 30)),
            },
            tenant_id: "t".into(),
            signature: String::new(),
            superseded_by: None,
            revoked_at: None,
            revoked_by: None,
            revoked_reason: None,
            last_used_at: None,
        }
    }

    #[test]
    fn each_reason_in_its_order() {
        let a = device("A", 1);
        let b = device("B", 2);
        let (c2m, m2c) = (att("A", &b), att("B", &a));
        let g = grant(&a, &[Scope::Files]);
        let ok = Facts {
            device: Some(&b),
            same_tenant: true,
            position: 2,
            online: true,
            protocol: Some(2),
            creator_trusts_member: Some(&c2m),
            member_trusts_creator: Some(&m2c),
            grant: Some(&g),
        };
        let d = |f: &Facts<'_>, scope| decide(&a, f, scope, 8, NOW);
        assert_eq!(d(&ok, Scope::Files), Ok(()));
        assert_eq!(
            d(
                &Facts {
                    device: None,
                    ..clone(&ok)
                },
                Scope::Files
            ),
            Err(RejectionReason::UnknownDevice)
        );
        assert_eq!(
            d(
                &Facts {
                    same_tenant: false,
                    ..clone(&ok)
                },
                Scope::Files
            ),
            Err(RejectionReason::OtherTenant)
        );
        assert_eq!(
            d(
                &Facts {
                    position: 9,
                    ..clone(&ok)
                },
                Scope::Files
            ),
            Err(RejectionReason::TooManyMembers)
        );
        assert_eq!(
            d(
                &Facts {
                    member_trusts_creator: None,
                    ..clone(&ok)
                },
                Scope::Files
            ),
            Err(RejectionReason::NotMutuallyTrusted)
        );
        assert_eq!(
            d(
                &Facts {
                    grant: None,
                    ..clone(&ok)
                },
                Scope::Files
            ),
            Err(RejectionReason::NoGrant)
        );
        assert_eq!(d(&ok, Scope::Shell), Err(RejectionReason::ScopeMissing));
        assert_eq!(
            d(
                &Facts {
                    online: false,
                    ..clone(&ok)
                },
                Scope::Files
            ),
            Err(RejectionReason::Offline)
        );
        assert_eq!(
            d(
                &Facts {
                    protocol: Some(1),
                    ..clone(&ok)
                },
                Scope::Files
            ),
            Err(RejectionReason::IncompatibleVersion)
        );
        let mut revoked = grant(&a, &[Scope::Files]);
        revoked.revoked_at = Some(NOW);
        assert_eq!(
            d(
                &Facts {
                    grant: Some(&revoked),
                    ..clone(&ok)
                },
                Scope::Files
            ),
            Err(RejectionReason::GrantRevoked)
        );
        let late = NOW.plus(std::time::Duration::from_secs(86_400 * 31));
        assert_eq!(
            decide(&a, &ok, Scope::Files, 8, late),
            Err(RejectionReason::GrantExpired)
        );
        let rotated = device("A", 9);
        assert_eq!(
            decide(&rotated, &ok, Scope::Files, 8, NOW),
            Err(RejectionReason::KeyMismatch)
        );
    }

    fn clone<'a>(f: &Facts<'a>) -> Facts<'a> {
        Facts {
            device: f.device,
            same_tenant: f.same_tenant,
            position: f.position,
            online: f.online,
            protocol: f.protocol,
            creator_trusts_member: f.creator_trusts_member,
            member_trusts_creator: f.member_trusts_creator,
            grant: f.grant,
        }
    }
}
