//! This device's trust store: the peers it verified (their keys pinned),
//! the grants it issued (its own signed copies), and tombstones for peers it
//! removed. Kept in `trust.json` (mode 0600). A peer's key comes from here,
//! never from the server, whose copy is only a hint that must match.
//!
//! - `exchange`: verifying a peer (the commit-then-reveal
//!   SAS exchange) and pinning it once the person confirmed;
//! - `peers`: what follows for a pinned peer (grants, removal, checking
//!   and accepting its new key) and rotating this device's own identity.

mod exchange;
mod peers;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_client::ClientError;
use tessera_core::kinds::RejectionReason;
use tessera_core::trust::{fingerprint, key_from_hex, AutoJoinGrant, Scope, Signed};
use tessera_core::{Clock, SystemClock, Timestamp};

use crate::error::AgentError;
use crate::state::{write_private, AgentState, StateError};

pub use exchange::{confirm, exchange, withdraw_open, Exchanged};
pub use peers::{accept_new_key, grant, remove, revoke_grant, rotate_identity, verify, Verified};

/// A pinned peer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pin {
    pub name: String,
    pub ed25519: String,
    pub x25519: String,
    pub verified_at: Timestamp,
    /// `sas`, or `rotation` (followed a rotation the pinned key signed).
    pub method: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrustStore {
    #[serde(default)]
    pub peers: BTreeMap<String, Pin>,
    /// Peers removed, and when: a later statement cannot bring them back
    /// without a fresh verification.
    #[serde(default)]
    pub removed: BTreeMap<String, Timestamp>,
    /// Grants this device issued, by grantee (the current one).
    #[serde(default)]
    pub grants: BTreeMap<String, Signed<AutoJoinGrant>>,
    /// Grant ids this device revoked.
    #[serde(default)]
    pub revoked_grants: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Server(#[from] ClientError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("{0}")]
    Refused(String),
}

fn now() -> Timestamp {
    SystemClock.now()
}

impl TrustStore {
    pub fn load(state: &AgentState) -> Result<TrustStore, StateError> {
        let path = state.dir().join("trust.json");
        if !path.exists() {
            return Ok(TrustStore::default());
        }
        crate::state::check_private(&path)?;
        let text = std::fs::read_to_string(&path).map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| StateError::Damaged {
            path,
            why: e.to_string(),
        })
    }

    pub fn save(&self, state: &AgentState) -> Result<(), StateError> {
        let path = state.dir().join("trust.json");
        let json = serde_json::to_vec_pretty(self).map_err(|e| StateError::Damaged {
            path: path.clone(),
            why: e.to_string(),
        })?;
        write_private(&path, &json)
    }

    /// This device's current, unrevoked grant to `grantee`.
    pub fn grant_to(&self, grantee: &str) -> Option<&Signed<AutoJoinGrant>> {
        self.grants
            .get(grantee)
            .filter(|g| !self.revoked_grants.contains(&g.statement.id))
    }

    /// The member's own checks on an invitation from `creator`, whose key
    /// the server says is `creator_ed` (hex), to a session opened for
    /// `scope`: `Err(reason)` to refuse. `Ok` holds the scopes the member
    /// joins under, those both asked for and granted: a member never acts
    /// on a payload its own grant does not allow (whatever the creator
    /// says), nor on one the session was not opened for (the server
    /// checked and recorded the session under that scope alone).
    pub fn check_invite(
        &self,
        creator: &str,
        creator_ed: &str,
        scope: Scope,
        now: Timestamp,
    ) -> Result<Vec<Scope>, RejectionReason> {
        let Some(pin) = self.peers.get(creator) else {
            return Err(RejectionReason::NotMutuallyTrusted);
        };
        if pin.ed25519 != creator_ed {
            return Err(RejectionReason::KeyMismatch);
        }
        let Some(grant) = self.grants.get(creator) else {
            return Err(RejectionReason::NoGrant);
        };
        if self.revoked_grants.contains(&grant.statement.id) {
            return Err(RejectionReason::GrantRevoked);
        }
        let g = &grant.statement;
        if g.expires_at <= now {
            return Err(RejectionReason::GrantExpired);
        }
        let pinned = key_from_hex(&pin.ed25519)
            .map(|k| fingerprint(&k))
            .unwrap_or_default();
        if g.grantee_fingerprint != pinned {
            return Err(RejectionReason::KeyMismatch);
        }
        let held = held_scopes(&[scope], &g.scopes);
        if held.is_empty() {
            return Err(RejectionReason::ScopeMissing);
        }
        Ok(held)
    }
}

/// The scopes a member holds in a session: those the invitation asked for
/// that its own grant allows.
fn held_scopes(asked: &[Scope], granted: &[Scope]) -> Vec<Scope> {
    let mut held: Vec<Scope> = asked
        .iter()
        .copied()
        .filter(|s| granted.contains(s))
        .collect();
    held.sort();
    held.dedup();
    held
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use tessera_core::identity::DeviceKeys;
    use tessera_core::secret::hex;
    use tessera_core::trust::new_grant;

    /// A store on device `me` that pinned `creator` and granted it files.
    fn store_with_grant(me: &DeviceKeys, creator: &DeviceKeys, now: Timestamp) -> TrustStore {
        let id = creator.device_id().to_string();
        let mut store = TrustStore::default();
        store.peers.insert(
            id.clone(),
            Pin {
                name: "creator".into(),
                ed25519: hex(&creator.ed25519_public()),
                x25519: hex(&creator.document().x25519),
                verified_at: now,
                method: "sas".into(),
            },
        );
        let g = new_grant(
            &me.device_id(),
            &creator.device_id(),
            &creator.ed25519_public(),
            &[Scope::Files],
            now,
            now.plus(Duration::from_secs(3600)),
        );
        store.grants.insert(id, Signed::sign(g, me));
        store
    }

    #[test]
    fn a_member_holds_only_the_scope_the_session_was_opened_for() {
        let (me, creator) = (DeviceKeys::generate(), DeviceKeys::generate());
        let now = SystemClock.now();
        let mut store = store_with_grant(&me, &creator, now);
        let id = creator.device_id().to_string();
        let ed = hex(&creator.ed25519_public());
        // A grant for both: a shell session still holds shell alone.
        let both = new_grant(
            &me.device_id(),
            &creator.device_id(),
            &creator.ed25519_public(),
            &[Scope::Files, Scope::Shell],
            now,
            now.plus(Duration::from_secs(3600)),
        );
        store.grants.insert(id.clone(), Signed::sign(both, &me));
        assert_eq!(
            store.check_invite(&id, &ed, Scope::Shell, now),
            Ok(vec![Scope::Shell])
        );
        assert_eq!(
            store.check_invite(&id, &ed, Scope::Files, now),
            Ok(vec![Scope::Files])
        );
        assert_eq!(
            held_scopes(&[Scope::Shell, Scope::Files], &[Scope::Shell]),
            vec![Scope::Shell]
        );
        assert!(held_scopes(&[Scope::Files], &[Scope::Shell]).is_empty());
    }

    #[test]
    fn an_invitation_is_checked_against_the_own_pin_and_grant() {
        let (me, creator) = (DeviceKeys::generate(), DeviceKeys::generate());
        let now = SystemClock.now();
        let store = store_with_grant(&me, &creator, now);
        let id = creator.device_id().to_string();
        let ed = hex(&creator.ed25519_public());
        assert_eq!(
            store.check_invite(&id, &ed, Scope::Files, now),
            Ok(vec![Scope::Files])
        );
        assert_eq!(
            store.check_invite(&id, &ed, Scope::Shell, now),
            Err(RejectionReason::ScopeMissing)
        );
        assert_eq!(
            store.check_invite(&id, &hex(&me.ed25519_public()), Scope::Files, now),
            Err(RejectionReason::KeyMismatch)
        );
        let stranger = DeviceKeys::generate().device_id().to_string();
        assert_eq!(
            store.check_invite(&stranger, &ed, Scope::Files, now),
            Err(RejectionReason::NotMutuallyTrusted)
        );
        assert_eq!(
            store.check_invite(&id, &ed, Scope::Files, now.plus(Duration::from_secs(7200))),
            Err(RejectionReason::GrantExpired)
        );
        let mut revoked = store.clone();
        let grant_id = revoked.grants[&id].statement.id.clone();
        revoked.revoked_grants.push(grant_id);
        assert_eq!(
            revoked.check_invite(&id, &ed, Scope::Files, now),
            Err(RejectionReason::GrantRevoked)
        );
        let mut no_grant = store;
        no_grant.grants.clear();
        assert_eq!(
            no_grant.check_invite(&id, &ed, Scope::Files, now),
            Err(RejectionReason::NoGrant)
        );
    }
}
