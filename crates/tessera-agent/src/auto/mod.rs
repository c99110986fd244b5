//! Automatic sessions, end to end: the member side (an invited device's
//! agent) and the creator side (`tessera send`, `tessera session create`).
//!
//! Every member runs a Noise KK handshake with the creator between the
//! X25519 keys each pinned for the other; the creator then hands each member
//! the session key, its sender index and an origin key (shared by the two
//! of them only) inside its Noise channel. Payloads are sealed with the
//! session key and carry origin tags (see `tessera_core::e2e`), so a member
//! acts only on what the creator sent and the creator knows which member
//! answered. A member that sees a payload fail a check leaves the session
//! at once: what arrived is not trusted.
//!
//! - `member`: an invited device's part (run by its agent);
//! - `creator`: the creator's end ([`AutoSession`]);
//! - `transfer`: sending files to every member, and the events a
//!   transfer reports;
//! - `shell`: a shell on a member, driven by the creator's terminal.

mod creator;
mod member;
mod shell;
mod transfer;

use std::path::PathBuf;

use prost::Message as _;
use tessera_core::e2e::{self, E2eError, Place};
use tessera_core::kinds::RejectionReason;
use tessera_proto::v1::{e2e_payload, AutoJoinAnswer, E2eData, E2ePayload, MemberLeft};
use tessera_proto::Body;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

pub use creator::{AutoError, AutoSession, Event};
pub use member::{Abort, Member};
pub use shell::ShellService;
pub use transfer::{TransferEvent, TransferReport};

fn payload(body: e2e_payload::Body) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(E2ePayload { body: Some(body) }.encode_to_vec())
}

enum Noise {
    Handshake(Box<snow::HandshakeState>),
    Transport(Box<snow::TransportState>),
    Failed,
}

fn transport_read(
    t: &mut snow::TransportState,
    msg: &[u8],
) -> Result<Zeroizing<Vec<u8>>, E2eError> {
    let mut out = Zeroizing::new(vec![0u8; e2e::NOISE_MAX]);
    let n = t
        .read_message(msg, &mut out)
        .map_err(|e| E2eError::Noise(e.to_string()))?;
    out.truncate(n);
    Ok(out)
}

fn transport_write(t: &mut snow::TransportState, msg: &[u8]) -> Result<Vec<u8>, E2eError> {
    let mut out = vec![0u8; e2e::NOISE_MAX];
    let n = t
        .write_message(msg, &mut out)
        .map_err(|e| E2eError::Noise(e.to_string()))?;
    out.truncate(n);
    Ok(out)
}

fn place<'a>(d: &'a E2eData) -> Place<'a> {
    Place {
        session_id: &d.session_id,
        epoch: d.epoch,
        sender: d.sender,
        counter: d.counter,
    }
}

/// The tag `d` carries for `member`.
fn tag_for(d: &E2eData, member: u32) -> &[u8] {
    d.tags
        .iter()
        .find(|t| t.member == member)
        .map(|t| t.tag.as_ref())
        .unwrap_or_default()
}

/// The answer to send for an invitation.
pub fn answer(session_id: &str, accepted: Result<(), RejectionReason>) -> Body {
    Body::AutoJoinAnswer(AutoJoinAnswer {
        session_id: session_id.to_owned(),
        accept: accepted.is_ok(),
        reason: accepted
            .err()
            .map(RejectionReason::as_str)
            .unwrap_or("")
            .to_owned(),
        device_id: String::new(),
    })
}

/// A member leaving (after an abort).
pub fn leave(session_id: &str, me: &str, reason: &str) -> Body {
    Body::MemberLeft(MemberLeft {
        session_id: session_id.to_owned(),
        device_id: me.to_owned(),
        reason: reason.to_owned(),
    })
}

/// The inbox a member writes received files into.
pub fn inbox_of(state: &crate::AgentState) -> PathBuf {
    state.dir().join("inbox")
}

/// Queue for bodies produced by member handling.
pub type Outbound = mpsc::Sender<Body>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_carries_the_reason_word() {
        let Body::AutoJoinAnswer(yes) = answer("s", Ok(())) else {
            panic!("not an answer");
        };
        assert!(yes.accept);
        assert_eq!(yes.reason, "");
        let Body::AutoJoinAnswer(no) = answer("s", Err(RejectionReason::GrantExpired)) else {
            panic!("not an answer");
        };
        assert!(!no.accept);
        assert_eq!(no.reason, "grant_expired");
        assert_eq!(no.session_id, "s");
    }
}
