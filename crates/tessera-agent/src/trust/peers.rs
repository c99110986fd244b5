//! What follows for a pinned peer: granting it automatic join and
//! revoking that grant, removing it, comparing its pin with the server's
//! current keys and accepting a new key reached by signed rotations; and
//! rotating this device's own identity key.

use std::time::Duration;

use tessera_client::ClientError;
use tessera_core::api::PeerView;
use tessera_core::identity::{DeviceId, IdentityDocument};
use tessera_core::secret::hex;
use tessera_core::trust::{
    fingerprint, follow_rotations, key_from_hex, new_grant, KeyRotation, Scope, Signed,
    TrustAttestation, Withdrawal,
};
use tessera_core::ErrorCode;

use super::{now, TrustError, TrustStore};
use crate::credentials::Credentials;
use crate::state::AgentState;

/// The API error code the server answered with, if it is one.
fn error_code(e: &ClientError) -> Option<ErrorCode> {
    e.code()?.parse().ok()
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
