//! The identity proof that opens a device connection: the server sends a
//! fresh nonce, the device signs it (bound to its id and protocol version)
//! with its Ed25519 key, and the server verifies against the key it stored
//! at enrollment. A stolen `cak_` alone therefore gets no further than the
//! challenge. A device that passes is recorded and registered.

use std::net::IpAddr;

use futures_util::StreamExt;
use tessera_core::identity::{self, challenge_body, DeviceId, Label};
use tessera_core::secret::random_bytes;
use tessera_proto::v1::Challenge;
use tessera_proto::{close, Body, Envelope, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

use super::{
    clip, close_with, linger, next_envelope, refuse, send, Accepted, Connected, Incoming, Presence,
    Session, HELLO_TIMEOUT,
};
use crate::auth::device::DevicePrincipal;
use crate::store;
use crate::store::audit::{Action, Actor, AuditEvent};
use crate::AppState;

async fn audit_auth_failure(state: &AppState, device: &DevicePrincipal, ip: IpAddr, reason: &str) {
    let event = AuditEvent::new(
        &device.tenant_id,
        Actor::Device(device.device_id.clone()),
        Action::DeviceAuthFailed,
    )
    .ip(Some(ip))
    .target(format!("device:{}", device.device_id))
    .detail("reason", reason)
    .detail("key", device.key_prefix.clone());
    if let Err(e) = state.db().audit(event).await {
        tracing::warn!(error = %e, "cannot audit a failed device authentication");
    }
}

/// Challenges the device to prove its identity key, then records and
/// registers the connection. `None`: refused (and told why) or gone.
pub(super) async fn handshake(accepted: Box<Accepted>) -> Option<Box<Connected>> {
    let Accepted {
        socket,
        state,
        device,
        ip,
        slot,
    } = *accepted;
    let (mut sink, mut stream) = socket.split();
    let nonce: [u8; 32] = random_bytes();
    let challenge = Body::Challenge(Challenge {
        nonce: nonce.to_vec().into(),
        protocol_version: PROTOCOL_VERSION,
        min_protocol_version: MIN_PROTOCOL_VERSION,
        server_time_ms: state.now().as_millis(),
    });
    send(&mut sink, challenge).await.ok()?;

    let hello = match tokio::time::timeout(HELLO_TIMEOUT, next_envelope(&state, &mut stream)).await
    {
        Ok(Incoming::Envelope(
            Envelope {
                body: Some(Body::Hello(h)),
            },
            _,
        )) => h,
        Ok(Incoming::Bad(code, why)) => {
            close_with(&mut sink, code, why).await;
            linger(&mut stream).await;
            return None;
        }
        Ok(Incoming::Closed) => return None,
        Ok(Incoming::Envelope(..)) => {
            refuse(
                &mut sink,
                &mut stream,
                close::AUTH_FAILED,
                "hello_expected",
                "expected Hello",
            )
            .await;
            return None;
        }
        Err(_) => {
            refuse(
                &mut sink,
                &mut stream,
                close::AUTH_FAILED,
                "hello_timeout",
                "no Hello within 10 s",
            )
            .await;
            return None;
        }
    };

    let claimed = DeviceId::parse(&hello.device_id)
        .ok()
        .filter(|c| c.as_str() == device.device_id);
    let Some(claimed) = claimed else {
        Box::pin(audit_auth_failure(
            &state,
            &device,
            ip,
            "device_id_mismatch",
        ))
        .await;
        refuse(
            &mut sink,
            &mut stream,
            close::AUTH_FAILED,
            "identity_proof_failed",
            "the device id does not match the key's device",
        )
        .await;
        return None;
    };
    if hello.protocol_version < MIN_PROTOCOL_VERSION {
        refuse(
            &mut sink,
            &mut stream,
            close::INCOMPATIBLE,
            "incompatible_version",
            &format!(
                "protocol {} is too old; this server needs {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}",
                hello.protocol_version
            ),
        )
        .await;
        return None;
    }
    let body = challenge_body(&nonce, &claimed, hello.protocol_version);
    if identity::verify(
        &device.ed25519_public,
        Label::Challenge,
        &body,
        &hello.signature,
    )
    .is_err()
    {
        Box::pin(audit_auth_failure(
            &state,
            &device,
            ip,
            "bad_challenge_signature",
        ))
        .await;
        refuse(
            &mut sink,
            &mut stream,
            close::AUTH_FAILED,
            "identity_proof_failed",
            "the challenge signature does not verify with this device's identity key",
        )
        .await;
        return None;
    }
    let version = hello.protocol_version.min(PROTOCOL_VERSION);
    let agent = hello.role != tessera_proto::role::CLIENT;
    let connected_at = state.now();

    // A client connection (a `tessera send`) does not make the device
    // online or offline: its agent does.
    if agent {
        let ip_text = ip.to_string();
        let connected = store::devices::Connected {
            id: &device.device_id,
            key_id: &device.key_id,
            ip: &ip_text,
            agent_version: &clip(&hello.agent_version, 64),
            os: &clip(&hello.os, 128),
            hostname: &clip(&hello.hostname, 255),
            node_id: state.cluster().node_id(),
            now: connected_at,
        };
        if let Err(e) = Box::pin(store::devices::mark_connected(state.db(), connected)).await {
            tracing::warn!(error = %e, "cannot record the connection");
        }
        // An older agent connection of it on another node gives way.
        let order = crate::cluster::orders::Order::AgentConnected {
            device_id: device.device_id.clone(),
        };
        Box::pin(crate::cluster::orders::publish(state.cluster(), order)).await;
    }
    // Registered only once the row says what connected, so a device that
    // shows online also shows its agent version and OS.
    let (presence, registration) =
        Presence::enter(&state, slot, &device, agent, version, connected_at);
    let conn_id = registration.conn_id;
    tracing::info!(conn_id, "device connected");
    Some(Box::new(Connected {
        sink,
        stream,
        registration,
        presence,
        session: Session {
            state,
            device,
            conn_id,
            pending_rotation: None,
        },
        agent,
        version,
    }))
}
