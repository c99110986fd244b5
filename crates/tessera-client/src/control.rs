//! The device side of the control channel's opening handshake: receive the
//! server's `Challenge`, answer with a `Hello` signed by the device's
//! identity key, and wait for `Welcome`. The agent, the benchmarks and the
//! tests all open their device connections through [`handshake`], over any
//! WebSocket transport (TCP, TLS, or an in-memory pipe in tests).
//!
//! Opening the socket (URL, bearer key, TLS, frame limits) stays with the
//! caller, as do timeouts: wrap the call in `tokio::time::timeout`.

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tessera_core::identity::{challenge_body, DeviceId, DeviceKeys, Label};
use tessera_proto::v1::{Hello, Welcome};
use tessera_proto::{role, Body, Envelope, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// What a device says about itself in its `Hello`, and the key it proves
/// its identity with.
#[derive(Clone)]
pub struct DeviceHello<'a> {
    /// The identity key the challenge is signed with.
    pub keys: &'a DeviceKeys,
    /// The device id claimed (the id named by the first identity key, kept
    /// across rotations; a test may claim another).
    pub device_id: &'a DeviceId,
    /// The highest protocol version this side speaks; the `Hello` carries
    /// the lower of it and the server's.
    pub protocol_version: u32,
    /// [`role::AGENT`] or [`role::CLIENT`].
    pub role: u32,
    pub agent_version: String,
    pub os: String,
    pub hostname: String,
}

impl<'a> DeviceHello<'a> {
    /// An agent connection at this build's protocol version, reporting
    /// `agent_version` and nothing about its host.
    pub fn agent(
        keys: &'a DeviceKeys,
        device_id: &'a DeviceId,
        agent_version: impl Into<String>,
    ) -> DeviceHello<'a> {
        DeviceHello {
            keys,
            device_id,
            protocol_version: PROTOCOL_VERSION,
            role: role::AGENT,
            agent_version: agent_version.into(),
            os: String::new(),
            hostname: String::new(),
        }
    }
}

/// Why the handshake did not end in `Welcome`.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The server answered with an `Error` (e.g. `identity_proof_failed`).
    #[error("the server refused this device: {code}: {message}")]
    Refused { code: String, message: String },
    /// The server closed the socket; `code` is the close frame's code (none
    /// when the connection just ended), `reason` its text (for
    /// [`tessera_proto::close::REVOKED`], the revocation code).
    #[error("the connection closed during the handshake (close code {code:?})")]
    Closed { code: Option<u16>, reason: String },
    /// Another message arrived; only its name is kept, never its contents.
    #[error("protocol error: expected {wanted}, got {got}")]
    Unexpected {
        wanted: &'static str,
        got: &'static str,
    },
    /// A binary frame that is no envelope.
    #[error("protocol error: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("connection failed: {0}")]
    Transport(#[from] tungstenite::Error),
}

/// Answers the server's challenge as `hello` says and returns its
/// `Welcome` (the negotiated version, heartbeat interval, connection id).
pub async fn handshake<S>(
    ws: &mut WebSocketStream<S>,
    hello: &DeviceHello<'_>,
) -> Result<Welcome, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let challenge = match next_body(ws).await? {
        Body::Challenge(c) => c,
        other => return Err(unexpected("Challenge", &other)),
    };
    let version = hello.protocol_version.min(challenge.protocol_version);
    let signature = hello.keys.sign(
        Label::Challenge,
        &challenge_body(&challenge.nonce, hello.device_id, version),
    );
    let reply = Hello {
        protocol_version: version,
        agent_version: hello.agent_version.clone(),
        device_id: hello.device_id.to_string(),
        signature: signature.to_vec().into(),
        os: hello.os.clone(),
        hostname: hello.hostname.clone(),
        role: hello.role,
    };
    ws.send(Message::Binary(
        Envelope::of(Body::Hello(reply)).encode_to_vec().into(),
    ))
    .await?;
    match next_body(ws).await? {
        Body::Welcome(w) => Ok(w),
        Body::Error(e) => Err(HandshakeError::Refused {
            code: e.code,
            message: e.message,
        }),
        other => Err(unexpected("Welcome", &other)),
    }
}

fn unexpected(wanted: &'static str, got: &Body) -> HandshakeError {
    HandshakeError::Unexpected {
        wanted,
        got: body_name(got),
    }
}

/// The next envelope's body, skipping pings and other control frames.
async fn next_body<S>(ws: &mut WebSocketStream<S>) -> Result<Body, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                return match Envelope::decode(b)?.body {
                    Some(body) => Ok(body),
                    None => Err(HandshakeError::Unexpected {
                        wanted: "a message",
                        got: "an empty envelope",
                    }),
                };
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(HandshakeError::Closed {
                    code: frame.as_ref().map(|f| u16::from(f.code)),
                    reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                })
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(HandshakeError::Closed {
                    code: None,
                    reason: String::new(),
                })
            }
        }
    }
}

/// A message's name, for errors and logs that must not show its contents
/// (a key rotation offer carries a key).
pub fn body_name(body: &Body) -> &'static str {
    match body {
        Body::Challenge(_) => "Challenge",
        Body::Hello(_) => "Hello",
        Body::Welcome(_) => "Welcome",
        Body::Heartbeat(_) => "Heartbeat",
        Body::HeartbeatAck(_) => "HeartbeatAck",
        Body::Error(_) => "Error",
        Body::Revoked(_) => "Revoked",
        Body::RotateKeyRequest(_) => "RotateKeyRequest",
        Body::RotateKeyOffer(_) => "RotateKeyOffer",
        Body::RotateKeyConfirm(_) => "RotateKeyConfirm",
        Body::RotateKeyDone(_) => "RotateKeyDone",
        Body::ChannelOpen(_) => "ChannelOpen",
        Body::ChannelData(_) => "ChannelData",
        Body::ChannelResize(_) => "ChannelResize",
        Body::ChannelClose(_) => "ChannelClose",
        Body::SessionEnded(_) => "SessionEnded",
        Body::ConsentRequest(_) => "ConsentRequest",
        Body::ConsentResponse(_) => "ConsentResponse",
        Body::ViewerReady(_) => "ViewerReady",
        Body::ViewerJoined(_) => "ViewerJoined",
        Body::ViewerLeft(_) => "ViewerLeft",
        Body::SessionEndRequest(_) => "SessionEndRequest",
        Body::AutoSessionCreate(_) => "AutoSessionCreate",
        Body::AutoSessionCreated(_) => "AutoSessionCreated",
        Body::AutoJoinInvite(_) => "AutoJoinInvite",
        Body::AutoJoinAnswer(_) => "AutoJoinAnswer",
        Body::E2eHandshake(_) => "E2eHandshake",
        Body::E2eData(_) => "E2eData",
        Body::MemberLeft(_) => "MemberLeft",
        Body::Screen(_) => "Screen",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::identity::verify;
    use tessera_proto::v1::{Challenge, Error as ErrorMsg};
    use tokio::io::DuplexStream;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

    type Pipe = WebSocketStream<DuplexStream>;

    /// A device socket and the server's end of it, in memory.
    async fn pipe() -> (Pipe, Pipe) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let device = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        (device, server)
    }

    async fn send(ws: &mut Pipe, body: Body) {
        ws.send(Message::Binary(Envelope::of(body).encode_to_vec().into()))
            .await
            .unwrap();
    }

    async fn recv(ws: &mut Pipe) -> Body {
        loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Binary(b) => return Envelope::decode(b).unwrap().body.unwrap(),
                _ => continue,
            }
        }
    }

    fn challenge(nonce: &[u8], version: u32) -> Body {
        Body::Challenge(Challenge {
            nonce: nonce.to_vec().into(),
            protocol_version: version,
            min_protocol_version: 1,
            server_time_ms: 0,
        })
    }

    /// The server side as the real one checks it: the signature over the
    /// challenge body at the version the Hello names, by the claimed id's key.
    async fn fake_server(mut ws: Pipe, keys_public: [u8; 32], version: u32) -> Hello {
        let nonce = [7u8; 32];
        send(&mut ws, challenge(&nonce, version)).await;
        let Body::Hello(hello) = recv(&mut ws).await else {
            panic!("expected Hello")
        };
        let id = DeviceId::parse(&hello.device_id).unwrap();
        verify(
            &keys_public,
            Label::Challenge,
            &challenge_body(&nonce, &id, hello.protocol_version),
            &hello.signature,
        )
        .expect("a valid challenge signature");
        send(
            &mut ws,
            Body::Welcome(Welcome {
                protocol_version: hello.protocol_version,
                heartbeat_interval_ms: 1234,
                connection_id: "conn-1".into(),
            }),
        )
        .await;
        hello
    }

    #[tokio::test]
    async fn a_signed_hello_gets_the_welcome() {
        let keys = DeviceKeys::generate();
        let id = keys.device_id();
        let (mut device, server) = pipe().await;
        let server = tokio::spawn(fake_server(server, keys.ed25519_public(), PROTOCOL_VERSION));
        let mut hello = DeviceHello::agent(&keys, &id, "test-agent");
        hello.hostname = "desk".into();
        let welcome = handshake(&mut device, &hello).await.unwrap();
        assert_eq!(welcome.connection_id, "conn-1");
        assert_eq!(welcome.heartbeat_interval_ms, 1234);
        let sent = server.await.unwrap();
        assert_eq!(sent.device_id, id.to_string());
        assert_eq!(sent.agent_version, "test-agent");
        assert_eq!(sent.hostname, "desk");
        assert_eq!(sent.role, role::AGENT);
        assert_eq!(sent.protocol_version, PROTOCOL_VERSION);
    }

    #[tokio::test]
    async fn the_hello_speaks_the_lower_of_both_versions() {
        let keys = DeviceKeys::generate();
        let id = keys.device_id();
        // An older server.
        let (mut device, server) = pipe().await;
        let server_task = tokio::spawn(fake_server(server, keys.ed25519_public(), 1));
        let welcome = handshake(&mut device, &DeviceHello::agent(&keys, &id, "t"))
            .await
            .unwrap();
        assert_eq!(welcome.protocol_version, 1);
        assert_eq!(server_task.await.unwrap().protocol_version, 1);
        // An older device.
        let (mut device, server) = pipe().await;
        let server_task = tokio::spawn(fake_server(server, keys.ed25519_public(), 99));
        let mut hello = DeviceHello::agent(&keys, &id, "t");
        hello.protocol_version = 1;
        handshake(&mut device, &hello).await.unwrap();
        assert_eq!(server_task.await.unwrap().protocol_version, 1);
    }

    #[tokio::test]
    async fn an_error_reply_is_a_refusal() {
        let keys = DeviceKeys::generate();
        let id = keys.device_id();
        let (mut device, mut server) = pipe().await;
        let server_task = tokio::spawn(async move {
            send(&mut server, challenge(&[1; 32], PROTOCOL_VERSION)).await;
            let _ = recv(&mut server).await;
            send(
                &mut server,
                Body::Error(ErrorMsg {
                    code: "identity_proof_failed".into(),
                    message: "no".into(),
                }),
            )
            .await;
            server
        });
        match handshake(&mut device, &DeviceHello::agent(&keys, &id, "t")).await {
            Err(HandshakeError::Refused { code, .. }) => assert_eq!(code, "identity_proof_failed"),
            other => panic!("{other:?}"),
        }
        drop(server_task.await.unwrap());
    }

    #[tokio::test]
    async fn a_close_or_a_wrong_message_is_reported_by_name() {
        let keys = DeviceKeys::generate();
        let id = keys.device_id();
        let (mut device, mut server) = pipe().await;
        let server_task = tokio::spawn(async move {
            server
                .close(Some(CloseFrame {
                    code: CloseCode::from(tessera_proto::close::REVOKED),
                    reason: "device_revoked".into(),
                }))
                .await
                .unwrap();
            while server.next().await.is_some() {}
        });
        match handshake(&mut device, &DeviceHello::agent(&keys, &id, "t")).await {
            Err(HandshakeError::Closed { code, reason }) => {
                assert_eq!(code, Some(tessera_proto::close::REVOKED));
                assert_eq!(reason, "device_revoked");
            }
            other => panic!("{other:?}"),
        }
        drop(device);
        server_task.await.unwrap();

        let (mut device, mut server) = pipe().await;
        let server_task = tokio::spawn(async move {
            send(
                &mut server,
                Body::Heartbeat(tessera_proto::v1::Heartbeat { seq: 1 }),
            )
            .await;
            server
        });
        match handshake(&mut device, &DeviceHello::agent(&keys, &id, "t")).await {
            Err(HandshakeError::Unexpected { wanted, got }) => {
                assert_eq!((wanted, got), ("Challenge", "Heartbeat"));
            }
            other => panic!("{other:?}"),
        }
        drop(server_task.await.unwrap());
    }
}
