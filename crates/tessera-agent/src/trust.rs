//! This device's trust store: the peers it verified (their keys pinned),
//! the grants it issued (its own signed copies), and tombstones for peers it
//! removed. Kept in `trust.json` (mode 0600). A peer's key comes from here,
//! never from the server, whose copy is only a hint that must match.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tessera_client::ClientError;
use tessera_core::api::{CreateExchangeRequest, ExchangeStepRequest, ExchangeView, PeerView};
use tessera_core::identity::{DeviceId, IdentityDocument};
use tessera_core::kinds::{ExchangeState, RejectionReason};
use tessera_core::secret::{hex, random_bytes};
use tessera_core::trust::{
    commitment, fingerprint, follow_rotations, is_identity_of, key_from_hex, new_grant, sas,
    AutoJoinGrant, KeyRotation, Scope, Signed, TrustAttestation, Withdrawal,
};
use tessera_core::{Clock, ErrorCode, SystemClock, Timestamp};

use crate::credentials::Credentials;
use crate::error::AgentError;
use crate::state::{write_private, AgentState, StateError};

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
    /// the server says is `creator_ed` (hex): `Err(reason)` to refuse.
    pub fn check_invite(
        &self,
        creator: &str,
        creator_ed: &str,
        scope: Scope,
        now: Timestamp,
    ) -> Result<(), RejectionReason> {
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
        if !g.scopes.contains(&scope) {
            return Err(RejectionReason::ScopeMissing);
        }
        Ok(())
    }
}

/// What a SAS exchange produced, for the person to compare.
pub struct Exchanged {
    pub peer: String,
    pub sas: String,
    pub peer_identity: IdentityDocument,
    pub peer_fingerprint: String,
}

/// Where an exchange stands, read from the server's view; a word this
/// version does not know is no step it waits for.
fn step(e: &ExchangeView) -> Option<ExchangeState> {
    e.state.parse().ok()
}

/// The API error code the server answered with, if it is one.
fn error_code(e: &ClientError) -> Option<ErrorCode> {
    e.code()?.parse().ok()
}

const POLL: Duration = Duration::from_millis(300);
const EXCHANGE_WAIT: Duration = Duration::from_secs(600);

fn nonce_hex() -> ([u8; 32], String) {
    let n: [u8; 32] = random_bytes();
    (n, hex(&n))
}

/// The identity the peer presented, if it is the peer's: named by its key,
/// or reached from the key that names it by signed rotations.
async fn identity_of_peer(
    client: &tessera_client::ApiClient,
    doc: &str,
    peer: &str,
) -> Result<IdentityDocument, TrustError> {
    let d = IdentityDocument::decode(doc)
        .map_err(|e| TrustError::Refused(format!("the peer's identity is invalid: {e}")))?;
    let named = d.device_id().is_ok_and(|id| id.to_string() == peer);
    if !named && !is_identity_of(peer, &d, &client.peer_rotations(peer).await?) {
        return Err(TrustError::Refused(
            "the peer's identity does not belong to its device id".into(),
        ));
    }
    Ok(d)
}

/// Runs the commit-then-reveal exchange with `peer` (who must run the same
/// at about the same time) and returns the SAS to compare.
pub async fn exchange(creds: &Credentials, peer: &str) -> Result<Exchanged, TrustError> {
    let peer = DeviceId::parse(peer)
        .map_err(|_| TrustError::Refused("not a device id".into()))?
        .to_string();
    let me = creds.device_id.to_string();
    let client = creds.client()?;
    let my_doc = creds.keys.document().encode();
    // One nonce per role: the one committed to as initiator is never shown
    // while that commitment could still be used.
    let (my_nonce, my_nonce_hex) = nonce_hex();
    let (resp_nonce, resp_nonce_hex) = nonce_hex();
    let deadline = tokio::time::Instant::now() + EXCHANGE_WAIT;
    let mut mine: Option<ExchangeView> = None;
    // As responder: the exchange, and the commitment as it stood before
    // this side revealed anything.
    let mut responded: Option<(ExchangeView, String)> = None;
    loop {
        if tokio::time::Instant::now() > deadline {
            return Err(TrustError::Refused(
                "the other device did not take part in time".into(),
            ));
        }
        let open = client.exchanges(&peer).await?;
        if let Some((r, committed)) = &responded {
            // Responder: wait for the initiator's reveal, and check it
            // against the commitment seen before answering (the server's
            // copy now is only a hint).
            if let Some(e) = open
                .iter()
                .find(|e| e.id == r.id && step(e) == Some(ExchangeState::Revealed))
            {
                let (Some(doc), Some(n)) = (&e.initiator_identity, &e.initiator_nonce) else {
                    continue;
                };
                let their_nonce =
                    key_from_hex(n).ok_or_else(|| TrustError::Refused("bad nonce".into()))?;
                if hex(&commitment(doc, &their_nonce)) != *committed || e.commitment != *committed {
                    return Err(TrustError::Refused("the other device's reveal does not match its commitment: stop, someone is interfering".into()));
                }
                let theirs = identity_of_peer(&client, doc, &peer).await?;
                return Ok(Exchanged {
                    sas: sas(
                        &theirs.ed25519,
                        &creds.keys.ed25519_public(),
                        &their_nonce,
                        &resp_nonce,
                    ),
                    peer_fingerprint: fingerprint(&theirs.ed25519),
                    peer_identity: theirs,
                    peer,
                });
            }
        } else if let Some(m) = &mine {
            // Initiator: wait for the answer, then reveal.
            if let Some(e) = open
                .iter()
                .find(|e| e.id == m.id && step(e) == Some(ExchangeState::Responded))
            {
                let (Some(doc), Some(n)) = (&e.responder_identity, &e.responder_nonce) else {
                    continue;
                };
                let their_nonce =
                    key_from_hex(n).ok_or_else(|| TrustError::Refused("bad nonce".into()))?;
                let theirs = identity_of_peer(&client, doc, &peer).await?;
                client
                    .exchange_step(
                        &e.id,
                        "reveal",
                        &ExchangeStepRequest {
                            identity: my_doc.clone(),
                            nonce: my_nonce_hex.clone(),
                        },
                    )
                    .await?;
                return Ok(Exchanged {
                    sas: sas(
                        &creds.keys.ed25519_public(),
                        &theirs.ed25519,
                        &my_nonce,
                        &their_nonce,
                    ),
                    peer_fingerprint: fingerprint(&theirs.ed25519),
                    peer_identity: theirs,
                    peer,
                });
            }
            // Both started at once: the device with the larger id yields.
            if let Some(theirs) = open
                .iter()
                .find(|e| e.initiator == peer && step(e) == Some(ExchangeState::Committed))
            {
                if me > peer {
                    let committed = theirs.commitment.clone();
                    let r = client
                        .exchange_step(
                            &theirs.id,
                            "respond",
                            &ExchangeStepRequest {
                                identity: my_doc.clone(),
                                nonce: resp_nonce_hex.clone(),
                            },
                        )
                        .await?;
                    responded = Some((r, committed));
                    mine = None;
                }
            }
        } else if let Some(theirs) = open
            .iter()
            .find(|e| e.initiator == peer && step(e) == Some(ExchangeState::Committed))
        {
            let committed = theirs.commitment.clone();
            let r = client
                .exchange_step(
                    &theirs.id,
                    "respond",
                    &ExchangeStepRequest {
                        identity: my_doc.clone(),
                        nonce: resp_nonce_hex.clone(),
                    },
                )
                .await?;
            responded = Some((r, committed));
        } else {
            let c = hex(&commitment(&my_doc, &my_nonce));
            mine = Some(
                client
                    .create_exchange(&CreateExchangeRequest {
                        peer: peer.clone(),
                        commitment: c,
                    })
                    .await?,
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// After the person confirmed the SAS: pin the peer and sign the
/// attestation.
pub async fn confirm(
    state: &AgentState,
    creds: &Credentials,
    x: &Exchanged,
    name: &str,
) -> Result<tessera_core::api::AttestationView, TrustError> {
    let mut store = TrustStore::load(state)?;
    let pin = Pin {
        name: name.to_owned(),
        ed25519: hex(&x.peer_identity.ed25519),
        x25519: hex(&x.peer_identity.x25519),
        verified_at: now(),
        method: "sas".into(),
    };
    let att = TrustAttestation {
        truster: creds.device_id.to_string(),
        trusted: x.peer.clone(),
        trusted_ed25519: pin.ed25519.clone(),
        trusted_x25519: pin.x25519.clone(),
        issued_at: now(),
    };
    store.peers.insert(x.peer.clone(), pin);
    store.removed.remove(&x.peer);
    store.save(state)?;
    Ok(creds
        .client()?
        .attest(&Signed::sign(att, &creds.keys))
        .await?)
}

/// Removes a peer: unpinned, its grant withdrawn, the server told.
pub async fn remove(state: &AgentState, creds: &Credentials, peer: &str) -> Result<(), TrustError> {
    let mut store = TrustStore::load(state)?;
    if store.peers.remove(peer).is_none() {
        return Err(TrustError::Refused(format!("{peer} is not a trusted peer")));
    }
    store.removed.insert(peer.to_owned(), now());
    let grant = store.grants.get(peer).map(|g| g.statement.id.clone());
    store.save(state)?;
    let me = creds.device_id.to_string();
    let client = creds.client()?;
    let w = Withdrawal {
        issuer: me.clone(),
        subject: format!("trust:{peer}"),
        issued_at: now(),
    };
    client.withdraw_trust(&Signed::sign(w, &creds.keys)).await?;
    if let Some(id) = grant {
        revoke_grant_id(state, creds, &id).await?;
    }
    Ok(())
}

/// Grants `grantee` (a pinned peer) automatic join, pinned to its key.
pub async fn grant(
    state: &AgentState,
    creds: &Credentials,
    grantee: &str,
    scopes: &[Scope],
    ttl: Duration,
) -> Result<tessera_core::api::GrantView, TrustError> {
    let store = TrustStore::load(state)?;
    let pin = store.peers.get(grantee).ok_or_else(|| {
        TrustError::Refused(format!(
            "{grantee} is not a trusted peer; run `tessera trust add {grantee}` first"
        ))
    })?;
    let grantee_ed =
        key_from_hex(&pin.ed25519).ok_or_else(|| TrustError::Refused("damaged pin".into()))?;
    let me = &creds.device_id;
    let granted =
        DeviceId::parse(grantee).map_err(|_| TrustError::Refused("not a device id".into()))?;
    let t = now();
    let g = new_grant(me, &granted, &grantee_ed, scopes, t, t.plus(ttl));
    let signed = Signed::sign(g, &creds.keys);
    let view = creds.client()?.submit_grant(&signed).await?;
    // Read again: the store may have changed while the server answered.
    let mut store = TrustStore::load(state)?;
    if !store.peers.contains_key(grantee) {
        return Err(TrustError::Refused(format!(
            "{grantee} was removed meanwhile"
        )));
    }
    store.grants.insert(grantee.to_owned(), signed);
    store.save(state)?;
    Ok(view)
}

async fn revoke_grant_id(
    state: &AgentState,
    creds: &Credentials,
    id: &str,
) -> Result<(), TrustError> {
    let w = Withdrawal {
        issuer: creds.device_id.to_string(),
        subject: format!("grant:{id}"),
        issued_at: now(),
    };
    // Refused here first: from this moment this device's own check says no,
    // whatever the server answers.
    let mut store = TrustStore::load(state)?;
    if !store.revoked_grants.iter().any(|g| g == id) {
        store.revoked_grants.push(id.to_owned());
    }
    store.save(state)?;
    let result = creds
        .client()?
        .withdraw_grant(&Signed::sign(w, &creds.keys))
        .await;
    match result {
        Ok(()) => Ok(()),
        // Already revoked on the server (by an admin): the local mark stands.
        Err(e) if error_code(&e) == Some(ErrorCode::NotFound) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Revokes this device's grant to `grantee`.
pub async fn revoke_grant(
    state: &AgentState,
    creds: &Credentials,
    grantee: &str,
) -> Result<(), TrustError> {
    let store = TrustStore::load(state)?;
    let id = store
        .grant_to(grantee)
        .map(|g| g.statement.id.clone())
        .ok_or_else(|| TrustError::Refused(format!("no live grant to {grantee}")))?;
    revoke_grant_id(state, creds, &id).await
}

/// What `trust verify` found.
pub enum Verified {
    Unchanged,
    /// The key changed. `chained` is the identity that signed rotations lead
    /// to from the pinned key, when it is the one the server now shows; the
    /// keys to pin come from it, never from the server's view.
    Changed {
        old_fingerprint: String,
        new: PeerView,
        chained: Option<Box<IdentityDocument>>,
    },
}

/// Compares a peer's pin with the server's current keys.
pub async fn verify(
    state: &AgentState,
    creds: &Credentials,
    peer: &str,
) -> Result<Verified, TrustError> {
    let store = TrustStore::load(state)?;
    let pin = store
        .peers
        .get(peer)
        .ok_or_else(|| TrustError::Refused(format!("{peer} is not a trusted peer")))?;
    let client = creds.client()?;
    let now_view = client.peer(peer).await?;
    if now_view.ed25519 == pin.ed25519 {
        return Ok(Verified::Unchanged);
    }
    let chain = client.peer_rotations(peer).await?;
    let pinned = key_from_hex(&pin.ed25519)
        .ok_or_else(|| TrustError::Refused("the pin is damaged".into()))?;
    let chained = follow_rotations(peer, &pinned, &chain)
        .filter(|doc| hex(&doc.ed25519) == now_view.ed25519 && hex(&doc.x25519) == now_view.x25519)
        .map(Box::new);
    Ok(Verified::Changed {
        old_fingerprint: fingerprint(&pinned),
        chained,
        new: now_view,
    })
}

/// Accepts a peer's new identity (reached by signed rotations from the pin,
/// after the person confirmed), re-attests it, and re-issues this device's
/// grant to it pinned to the new key.
pub async fn accept_new_key(
    state: &AgentState,
    creds: &Credentials,
    peer: &str,
    new: &IdentityDocument,
) -> Result<(), TrustError> {
    let mut store = TrustStore::load(state)?;
    let Some(pin) = store.peers.get_mut(peer) else {
        return Err(TrustError::Refused(format!("{peer} is not a trusted peer")));
    };
    pin.ed25519 = hex(&new.ed25519);
    pin.x25519 = hex(&new.x25519);
    pin.verified_at = now();
    pin.method = "rotation".into();
    let regrant = store
        .grant_to(peer)
        .map(|g| (g.statement.scopes.clone(), g.statement.expires_at));
    store.save(state)?;
    let att = TrustAttestation {
        truster: creds.device_id.to_string(),
        trusted: peer.to_owned(),
        trusted_ed25519: hex(&new.ed25519),
        trusted_x25519: hex(&new.x25519),
        issued_at: now(),
    };
    creds
        .client()?
        .attest(&Signed::sign(att, &creds.keys))
        .await?;
    if let Some((scopes, expires)) = regrant {
        let ttl = expires.since(now()).max(Duration::from_secs(3600));
        grant(state, creds, peer, &scopes, ttl).await?;
    }
    Ok(())
}

/// Rotates this device's identity key: the new key is stored beside the
/// old, announced in a statement the old key signs, then put in place.
pub async fn rotate_identity(state: &AgentState) -> Result<PeerView, TrustError> {
    let creds = Credentials::load(state)?;
    let client = creds.client()?;
    let me = creds.device_id.to_string();
    let current = client.peer(&me).await?;
    let next = tessera_core::identity::DeviceKeys::generate();
    state.save_next_identity(&next)?;
    let statement = KeyRotation {
        device: me,
        epoch: current.key_epoch + 1,
        old_ed25519: current.ed25519.clone(),
        new_identity: next.document().encode(),
        issued_at: now(),
    };
    let view = client
        .rotate_identity(&Signed::sign(statement, &creds.keys))
        .await?;
    state.promote_next_identity()?;
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::identity::DeviceKeys;

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
    fn an_invitation_is_checked_against_the_own_pin_and_grant() {
        let (me, creator) = (DeviceKeys::generate(), DeviceKeys::generate());
        let now = SystemClock.now();
        let store = store_with_grant(&me, &creator, now);
        let id = creator.device_id().to_string();
        let ed = hex(&creator.ed25519_public());
        assert_eq!(store.check_invite(&id, &ed, Scope::Files, now), Ok(()));
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
