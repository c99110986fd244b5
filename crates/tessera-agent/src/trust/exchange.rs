//! Verifying a peer: both devices run a commit-then-reveal exchange
//! through the server, each derives the short authentication string (SAS)
//! the people compare, and once they confirm, the peer is pinned and this
//! device signs an attestation.

use std::time::Duration;

use tessera_core::api::{CreateExchangeRequest, ExchangeStepRequest, ExchangeView};
use tessera_core::identity::{DeviceId, IdentityDocument};
use tessera_core::kinds::ExchangeState;
use tessera_core::secret::{hex, random_bytes};
use tessera_core::trust::{
    commitment, fingerprint, is_identity_of, key_from_hex, sas, Signed, TrustAttestation,
};

use super::{now, Pin, TrustError, TrustStore};
use crate::credentials::Credentials;
use crate::state::AgentState;

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

/// The exchange `peer` started and committed to, awaiting this side's answer.
fn their_commitment<'a>(open: &'a [ExchangeView], peer: &str) -> Option<&'a ExchangeView> {
    open.iter()
        .find(|e| e.initiator == peer && step(e) == Some(ExchangeState::Committed))
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
    // What an interrupted earlier attempt of this device left open would
    // be answered by the peer and then wait for a reveal that never comes.
    for e in client.exchanges(&peer).await? {
        if e.initiator == me {
            let _ = client.withdraw_exchange(&e.id).await;
        }
    }
    let deadline = tokio::time::Instant::now() + EXCHANGE_WAIT;
    let mut mine: Option<ExchangeView> = None;
    // As responder: the exchange, and the commitment as it stood before
    // this side revealed anything.
    let mut responded: Option<(ExchangeView, String)> = None;
    // Answers the peer's commitment, keeping the commitment as it stood
    // before this side revealed anything.
    let answer = async |theirs: &ExchangeView| -> Result<(ExchangeView, String), TrustError> {
        let req = ExchangeStepRequest {
            identity: my_doc.clone(),
            nonce: resp_nonce_hex.clone(),
        };
        let r = client.exchange_step(&theirs.id, "respond", &req).await?;
        Ok((r, theirs.commitment.clone()))
    };
    loop {
        if tokio::time::Instant::now() > deadline {
            return Err(TrustError::Refused(
                "the other device did not take part in time".into(),
            ));
        }
        let open = client.exchanges(&peer).await?;
        // The other side gave up on the exchange this one was in (it was
        // interrupted, or started again): start over from what is open now.
        let gone = |id: &str| !open.iter().any(|e| e.id == id);
        if responded.as_ref().is_some_and(|(r, _)| gone(&r.id)) {
            responded = None;
        }
        if mine.as_ref().is_some_and(|m| gone(&m.id)) {
            mine = None;
        }
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
            if let Some(theirs) = their_commitment(&open, &peer) {
                if me > peer {
                    responded = Some(answer(theirs).await?);
                    mine = None;
                }
            }
        } else if let Some(theirs) = their_commitment(&open, &peer) {
            responded = Some(answer(theirs).await?);
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

/// Ends every exchange this device has open with `peer`, for a `trust add`
/// that is interrupted or gives up, so the peer's next attempt does not
/// answer it. Best effort: what cannot be withdrawn expires by itself.
pub async fn withdraw_open(creds: &Credentials, peer: &str) {
    let (Ok(client), Ok(peer)) = (creds.client(), DeviceId::parse(peer)) else {
        return;
    };
    let Ok(open) = client.exchanges(peer.as_str()).await else {
        return;
    };
    for e in open {
        let _ = client.withdraw_exchange(&e.id).await;
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
