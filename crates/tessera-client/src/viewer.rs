//! The viewer side of a session's relay: `/ws/viewer` with a viewer token.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tessera_core::api::SecretString;
use tessera_proto::v1::{ChannelData, ChannelResize};
use tessera_proto::{Body, Envelope, MAX_VIEWER_FRAME};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::{ApiClient, ClientError};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the relay sends a viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewerEvent {
    /// Joined: the access granted and the device's name.
    Ready {
        access: String,
        device_name: String,
    },
    Output(Bytes),
    /// The shell ended.
    ChannelClosed {
        exit_status: Option<i32>,
        reason: String,
    },
    /// The session is over, and why.
    Ended {
        code: String,
        reason: String,
    },
    /// The socket closed (with its close code and reason, if any).
    Closed {
        code: Option<u16>,
        reason: String,
    },
}

/// Sends input and resizes.
pub struct ViewerSender {
    sink: SplitSink<Ws, Message>,
    session_id: String,
    channel_id: u32,
}

/// Receives output and notices.
pub struct ViewerReceiver {
    stream: SplitStream<Ws>,
}

/// Opens `/ws/viewer` for `session_id` with `token`.
pub async fn connect(
    client: &ApiClient,
    session_id: &str,
    token: &SecretString,
) -> Result<(ViewerSender, ViewerReceiver), ClientError> {
    connect_with(client, session_id, token, false).await
}

/// Opens `/ws/viewer` like [`connect`]; with `keep`, leaving does not end
/// a managed shell (`tessera connect --keep`), which otherwise ends once
/// unwatched for the server's grace period.
pub async fn connect_with(
    client: &ApiClient,
    session_id: &str,
    token: &SecretString,
    keep: bool,
) -> Result<(ViewerSender, ViewerReceiver), ClientError> {
    let ws = open_socket(client, session_id, token, keep).await?;
    let (sink, stream) = ws.split();
    Ok((
        ViewerSender {
            sink,
            session_id: session_id.to_owned(),
            channel_id: 1,
        },
        ViewerReceiver { stream },
    ))
}

/// Opens `/ws/viewer` for `session_id` with `token`: the socket that the
/// shell viewer here and the screen viewer (`crate::screen`) speak over.
/// The server's refusal of the upgrade comes back as its error code.
pub(crate) async fn open_socket(
    client: &ApiClient,
    session_id: &str,
    token: &SecretString,
    keep: bool,
) -> Result<Ws, ClientError> {
    let mut url = client.ws_url("/ws/viewer")?;
    url.query_pairs_mut().append_pair("session", session_id);
    if keep {
        url.query_pairs_mut().append_pair("keep", "true");
    }
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ClientError::Url(e.to_string()))?;
    let auth = format!("Bearer {}", token.expose())
        .parse()
        .map_err(|_| ClientError::Url("token is not a valid header value".into()))?;
    request.headers_mut().insert("authorization", auth);
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(tessera_proto::MAX_DEVICE_FRAME);
    let connected = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(config),
        true,
        Some(Connector::Rustls(Arc::clone(client.tls_config()))),
    )
    .await;
    let ws = match connected {
        Ok((ws, _)) => ws,
        Err(tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let parsed = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok());
            return Err(match parsed {
                Some(v) => ClientError::Api {
                    status,
                    code: v["error"]["code"].as_str().unwrap_or("").to_owned(),
                    message: v["error"]["message"].as_str().unwrap_or("").to_owned(),
                    retry_after,
                },
                None => ClientError::Unexpected {
                    status,
                    detail: "WebSocket upgrade refused".into(),
                },
            });
        }
        Err(e) => {
            return Err(
                crate::error::named_tls_error(&e, client.base_url()).unwrap_or(
                    ClientError::Unexpected {
                        status: 0,
                        detail: e.to_string(),
                    },
                ),
            )
        }
    };
    Ok(ws)
}

impl ViewerSender {
    async fn send(&mut self, body: Body) -> Result<(), ClientError> {
        self.sink
            .send(Message::Binary(Envelope::of(body).encode_to_vec().into()))
            .await
            .map_err(|e| ClientError::Unexpected {
                status: 0,
                detail: e.to_string(),
            })
    }

    /// Keystrokes (at most 64 KiB per message; longer input is split).
    pub async fn input(&mut self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(MAX_VIEWER_FRAME - 1024) {
            let body = Body::ChannelData(ChannelData {
                session_id: self.session_id.clone(),
                channel_id: self.channel_id,
                data: Bytes::copy_from_slice(chunk),
            });
            self.send(body).await?;
        }
        Ok(())
    }

    pub async fn resize(&mut self, cols: u16, rows: u16) -> Result<(), ClientError> {
        let body = Body::ChannelResize(ChannelResize {
            session_id: self.session_id.clone(),
            channel_id: self.channel_id,
            cols: u32::from(cols),
            rows: u32::from(rows),
        });
        self.send(body).await
    }

    /// Sends raw bytes as one WebSocket message (for tests of the limits).
    pub async fn raw(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.sink
            .send(Message::Binary(bytes.into()))
            .await
            .map_err(|e| ClientError::Unexpected {
                status: 0,
                detail: e.to_string(),
            })
    }

    pub async fn close(&mut self) {
        let _ = self.sink.close().await;
    }
}

impl ViewerReceiver {
    /// The next event; after `Closed` the stream is done.
    pub async fn next(&mut self) -> ViewerEvent {
        loop {
            let body = match read_body(&mut self.stream).await {
                Read::Body(body) => body,
                Read::Closed { code, reason } => return ViewerEvent::Closed { code, reason },
            };
            match body {
                Body::ViewerReady(r) => {
                    return ViewerEvent::Ready {
                        access: r.access,
                        device_name: r.device_name,
                    }
                }
                Body::ChannelData(d) => return ViewerEvent::Output(d.data),
                Body::ChannelClose(c) => {
                    return ViewerEvent::ChannelClosed {
                        exit_status: c.exit_status,
                        reason: c.reason,
                    }
                }
                Body::SessionEnded(e) => {
                    return ViewerEvent::Ended {
                        code: e.code,
                        reason: e.reason,
                    }
                }
                _ => continue,
            }
        }
    }
}

/// One read from a viewer socket: an envelope's body, or how it ended.
pub(crate) enum Read {
    Body(Body),
    Closed { code: Option<u16>, reason: String },
}

/// Reads until a message carries an envelope with a body (anything else is
/// skipped) or the socket ends: with its close frame's code and reason, a
/// read error's words, or nothing.
pub(crate) async fn read_body(stream: &mut SplitStream<Ws>) -> Read {
    loop {
        match stream.next().await {
            Some(Ok(Message::Binary(b))) => {
                if let Some(body) = Envelope::decode(b).ok().and_then(|e| e.body) {
                    return Read::Body(body);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Read::Closed {
                    code: frame.as_ref().map(|f| u16::from(f.code)),
                    reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                return Read::Closed {
                    code: None,
                    reason: e.to_string(),
                }
            }
            None => {
                return Read::Closed {
                    code: None,
                    reason: String::new(),
                }
            }
        }
    }
}
