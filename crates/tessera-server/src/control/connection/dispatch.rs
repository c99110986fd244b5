//! What a device sends on its control connection, each message to the
//! domain that handles it: heartbeats, key rotation, relay traffic,
//! consent answers and automatic sessions.

use bytes::Bytes;
use prost::Message as _;
use tessera_proto::v1::{ChannelData, HeartbeatAck, Revoked};
use tessera_proto::{close, Body, Envelope};

use super::rotation::REVOKED_CODE;
use super::writer::Farewell;
use super::{clip, error_body, Session};
use crate::automatic::Routing;
use crate::control::{queued, Outbox};
use crate::relay::{Output, MAX_PIECE, SHELL_CHANNEL};

impl Session {
    /// Handles one message; a reply goes to the writer through `replies`.
    /// `Err` ends the connection with that farewell.
    pub(super) async fn handle(
        &mut self,
        replies: &Outbox,
        env: Envelope,
        frame: Bytes,
    ) -> Result<(), Farewell> {
        if self.device.support_session_only && !support_device_may_send(env.body.as_ref()) {
            tracing::warn!("a support-code device sent what only an enrolled device may");
            return Err(Farewell::close(1008, "support_key_scope"));
        }
        let reply = match env.body {
            Some(Body::Heartbeat(h)) => Body::HeartbeatAck(HeartbeatAck { seq: h.seq }),
            Some(Body::RotateKeyRequest(_)) => match self.offer_rotation().await {
                Ok(body) => body,
                Err(e) if e.code() == REVOKED_CODE => return Err(self.cut_off()),
                Err(e) => error_body(e.code().as_str(), &e.message()),
            },
            Some(Body::RotateKeyConfirm(c)) => match self.confirm_rotation(&c.key_id).await {
                Ok(body) => body,
                Err(e) if e.code() == REVOKED_CODE => return Err(self.cut_off()),
                Err(e) => error_body(e.code().as_str(), &e.message()),
            },
            // Relay traffic from the device: nothing to answer.
            Some(Body::ChannelData(d)) => {
                // Output goes only into this device's own sessions.
                if let Some(live) = self.state.hub().get(&d.session_id) {
                    if live.device_id == self.device.device_id {
                        if forwards_as_is(&d, &frame) {
                            let out = Output {
                                data: d.data,
                                envelope: frame,
                            };
                            live.output_framed(out).await;
                            return Ok(());
                        }
                        // Bounded pieces, so a viewer queue's worst case is
                        // its length times this, whatever the device sends.
                        let mut data = d.data;
                        while !data.is_empty() {
                            let piece = data.split_to(data.len().min(MAX_PIECE));
                            live.output(piece).await;
                        }
                    }
                }
                return Ok(());
            }
            // A screen channel's messages: refused ones end the connection
            // (the device's stream is out of order or malformed).
            Some(Body::Screen(screen)) => {
                return crate::relay::screen_device::from_device(
                    &self.state,
                    &self.device.device_id,
                    self.conn_id,
                    screen,
                )
                .await
                .map_err(|r| {
                    tracing::warn!(
                        reason = r.reason,
                        "refused a screen message from the device"
                    );
                    Farewell::close(r.code, r.reason)
                });
            }
            Some(Body::ChannelClose(c)) => {
                crate::session::channel_closed(
                    &self.state,
                    &self.device.device_id,
                    &c.session_id,
                    c.exit_status,
                    &clip(&c.reason, 256),
                )
                .await;
                return Ok(());
            }
            Some(Body::SessionEndRequest(r)) => {
                if let Err(e) = crate::session::ended_by_user(
                    &self.state,
                    &self.device.device_id,
                    &r.session_id,
                    &clip(&r.reason, 256),
                )
                .await
                {
                    tracing::warn!(error = %e, "cannot end a session its person ended");
                }
                return Ok(());
            }
            Some(Body::ConsentResponse(r)) => {
                if let Err(e) = crate::session::consent_answer(
                    &self.state,
                    &self.device.device_id,
                    &r.session_id,
                    r.granted,
                    r.unavailable,
                )
                .await
                {
                    tracing::warn!(error = %e, "cannot record a consent answer");
                }
                return Ok(());
            }
            // Automatic sessions: the creator asks, members answer, and the
            // server routes what they seal for each other.
            Some(Body::AutoSessionCreate(req)) => {
                match crate::automatic::create(&self.state, &self.device, self.conn_id, req).await {
                    // The reply is queued before any member is invited, so
                    // no member's answer can overtake it.
                    Ok(creation) => {
                        if !queue_reply(replies, Body::AutoSessionCreated(creation.reply)) {
                            return Err(Farewell::silent());
                        }
                        creation.invites.send(&self.state).await;
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot create an automatic session");
                        error_body("internal", "the session could not be created")
                    }
                }
            }
            Some(Body::AutoJoinAnswer(a)) => {
                if let Err(e) = crate::automatic::answer(
                    &Routing::of(&self.state),
                    &self.device.device_id,
                    self.conn_id,
                    a,
                )
                .await
                {
                    tracing::warn!(error = %e, "cannot record an automatic join answer");
                }
                return Ok(());
            }
            Some(Body::E2eHandshake(h)) => {
                crate::automatic::handshake(
                    &Routing::of(&self.state),
                    &self.device.device_id,
                    self.conn_id,
                    h,
                )
                .await;
                return Ok(());
            }
            Some(Body::E2eData(d)) => {
                crate::automatic::data(
                    &Routing::of(&self.state),
                    &self.device.device_id,
                    self.conn_id,
                    d,
                )
                .await;
                return Ok(());
            }
            Some(Body::MemberLeft(m)) => {
                crate::automatic::remove_member(
                    &Routing::of(&self.state),
                    &self.device.device_id,
                    self.conn_id,
                    &m.session_id,
                    &m.device_id,
                    &m.reason,
                )
                .await;
                return Ok(());
            }
            Some(Body::SessionEnded(e)) => {
                crate::automatic::end_by_creator(
                    &Routing::of(&self.state),
                    &self.device.device_id,
                    self.conn_id,
                    &e.session_id,
                )
                .await;
                return Ok(());
            }
            _ => return Err(Farewell::close(1008, "unexpected_message")),
        };
        if queue_reply(replies, reply) {
            Ok(())
        } else {
            Err(Farewell::silent())
        }
    }

    /// Tells the device its key or itself is revoked, and ends the
    /// connection.
    fn cut_off(&self) -> Farewell {
        Farewell::after(
            Body::Revoked(Revoked {
                code: REVOKED_CODE.as_str().to_owned(),
                reason: "the key this connection authenticated with is no longer valid".to_owned(),
            }),
            close::REVOKED,
            REVOKED_CODE.as_str(),
        )
    }
}

/// What a support-code device may send on its control channel: heartbeats,
/// its session's relay traffic and its consent answer. Automatic sessions,
/// end-to-end routing and key rotation are for enrolled devices; letting a
/// one-time key create sessions would let it probe which device ids exist.
/// Queues a reply; `false` when the device asked for more answers than fit
/// in its reply queue, so is not reading them and its connection ends
/// rather than waiting.
fn queue_reply(replies: &Outbox, reply: Body) -> bool {
    let queued = replies.try_send(queued(reply)).is_ok();
    if !queued {
        tracing::warn!("device is not reading its replies; disconnecting");
    }
    queued
}

fn support_device_may_send(body: Option<&Body>) -> bool {
    matches!(
        body,
        Some(
            Body::Heartbeat(_)
                | Body::ChannelData(_)
                | Body::Screen(_)
                | Body::ChannelClose(_)
                | Body::SessionEndRequest(_)
                | Body::ConsentResponse(_)
        )
    )
}

/// Whether the device's frame carrying `d` may go to viewers as it came:
/// it is what the relay would send them (the shell channel, one piece of
/// at most [`MAX_PIECE`]) and holds nothing else. A protobuf encoding is
/// never shorter than the canonical one of what it decodes to, and any
/// unknown, repeated or default-valued field makes it longer; so a frame
/// exactly as long as the canonical encoding of `d` says `d` and only `d`
/// (the session id was matched by the caller).
fn forwards_as_is(d: &ChannelData, frame: &[u8]) -> bool {
    d.channel_id == SHELL_CHANNEL
        && d.data.len() <= MAX_PIECE
        && !d.data.is_empty()
        && frame.len() == Envelope::of(Body::ChannelData(d.clone())).encoded_len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::v1::{AutoSessionCreate, E2eData, Heartbeat, RotateKeyRequest};

    fn shell_data(channel_id: u32, data: Vec<u8>) -> ChannelData {
        ChannelData {
            session_id: "019a0000-0000-7000-8000-000000000000".into(),
            channel_id,
            data: data.into(),
        }
    }

    fn framed(d: &ChannelData) -> Vec<u8> {
        Envelope::of(Body::ChannelData(d.clone())).encode_to_vec()
    }

    #[test]
    fn a_canonical_shell_piece_goes_to_viewers_as_it_came() {
        let d = shell_data(SHELL_CHANNEL, vec![7; MAX_PIECE]);
        assert!(forwards_as_is(&d, &framed(&d)));
    }

    #[test]
    fn a_frame_with_anything_more_than_its_output_is_encoded_again() {
        let d = shell_data(SHELL_CHANNEL, b"ls\r\n".to_vec());
        // An unknown field (number 1000, varint 1) after the body: the
        // decoder skips it, the viewer must not get it.
        let mut padded = framed(&d);
        padded.extend_from_slice(&[0xc0, 0x3e, 0x01]);
        let decoded = Envelope::decode(padded.as_slice()).unwrap();
        assert_eq!(decoded.body, Some(Body::ChannelData(d.clone())));
        assert!(!forwards_as_is(&d, &padded));
        // Another channel, an oversized piece, nothing at all.
        let other = shell_data(SHELL_CHANNEL + 1, b"x".to_vec());
        assert!(!forwards_as_is(&other, &framed(&other)));
        let big = shell_data(SHELL_CHANNEL, vec![7; MAX_PIECE + 1]);
        assert!(!forwards_as_is(&big, &framed(&big)));
        let empty = shell_data(SHELL_CHANNEL, Vec::new());
        assert!(!forwards_as_is(&empty, &framed(&empty)));
    }

    #[test]
    fn a_support_device_may_serve_its_session_and_nothing_else() {
        assert!(support_device_may_send(Some(&Body::Heartbeat(
            Heartbeat::default()
        ))));
        assert!(support_device_may_send(Some(&Body::SessionEndRequest(
            tessera_proto::v1::SessionEndRequest::default()
        ))));
        for body in [
            Body::AutoSessionCreate(AutoSessionCreate::default()),
            Body::E2eData(E2eData::default()),
            Body::RotateKeyRequest(RotateKeyRequest::default()),
        ] {
            assert!(!support_device_may_send(Some(&body)), "{body:?}");
        }
        assert!(!support_device_may_send(None));
    }
}
