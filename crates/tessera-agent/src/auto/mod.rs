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
pub use transfer::{Delivery, MemberDelivery, TransferEvent, TransferReport};

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

/// The inbox a member writes received files into when its caller named
/// none (the library's fallback; `tessera agent run` always names one, see
/// [`default_inbox`]).
pub fn inbox_of(state: &crate::AgentState) -> PathBuf {
    state.dir().join("inbox")
}

/// The visible inbox `tessera agent run` uses when `--inbox` is not given:
/// `Tessera` in the person's download folder: `$XDG_DOWNLOAD_DIR`, else
/// the one `user-dirs.dirs` names (`$XDG_CONFIG_HOME`, else
/// `~/.config`), else `~/Downloads`. `None` without a home folder.
pub fn default_inbox() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let home = var("HOME").map(PathBuf::from);
    let user_dirs = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".config")))
        .and_then(|c| std::fs::read_to_string(c.join("user-dirs.dirs")).ok());
    inbox_in(
        var("XDG_DOWNLOAD_DIR").map(PathBuf::from),
        user_dirs.as_deref(),
        home.as_deref(),
    )
}

/// [`default_inbox`]'s choice, from what it read.
fn inbox_in(
    download_var: Option<PathBuf>,
    user_dirs: Option<&str>,
    home: Option<&std::path::Path>,
) -> Option<PathBuf> {
    let downloads = download_var
        .filter(|p| p.is_absolute())
        .or_else(|| user_dirs.and_then(|text| download_dir_in(text, home?)))
        .or_else(|| home.map(|h| h.join("Downloads")))?;
    Some(downloads.join("Tessera"))
}

/// `XDG_DOWNLOAD_DIR` from a `user-dirs.dirs` file: `"$HOME/…"` or an
/// absolute path, in double quotes. A value that is the home folder itself
/// (how xdg-user-dirs says "disabled") counts as none.
fn download_dir_in(text: &str, home: &std::path::Path) -> Option<PathBuf> {
    let line = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("XDG_DOWNLOAD_DIR="))?;
    let value = line.strip_prefix('"')?.strip_suffix('"')?;
    let path = match value.strip_prefix("$HOME") {
        Some(rest) => home.join(rest.trim_start_matches('/')),
        None if value.starts_with('/') => PathBuf::from(value),
        None => return None,
    };
    (path != home).then_some(path)
}

/// Queue for bodies produced by member handling.
pub type Outbound = mpsc::Sender<Body>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inbox_is_in_the_download_folder() {
        let home = std::path::Path::new("/home/ann");
        let dirs = "# written by xdg-user-dirs-update\nXDG_DESKTOP_DIR=\"$HOME/Desktop\"\nXDG_DOWNLOAD_DIR=\"$HOME/Téléchargements\"\n";
        assert_eq!(
            inbox_in(None, Some(dirs), Some(home)),
            Some(PathBuf::from("/home/ann/Téléchargements/Tessera"))
        );
        // The variable wins; a relative one is ignored.
        assert_eq!(
            inbox_in(Some("/data/dl".into()), Some(dirs), Some(home)),
            Some(PathBuf::from("/data/dl/Tessera"))
        );
        assert_eq!(
            inbox_in(Some("dl".into()), None, Some(home)),
            Some(PathBuf::from("/home/ann/Downloads/Tessera"))
        );
        // An absolute value; "$HOME/" alone means disabled.
        let abs = "XDG_DOWNLOAD_DIR=\"/srv/in\"";
        assert_eq!(
            inbox_in(None, Some(abs), Some(home)),
            Some(PathBuf::from("/srv/in/Tessera"))
        );
        let off = "XDG_DOWNLOAD_DIR=\"$HOME/\"";
        assert_eq!(
            inbox_in(None, Some(off), Some(home)),
            Some(PathBuf::from("/home/ann/Downloads/Tessera"))
        );
        assert_eq!(inbox_in(None, None, None), None);
    }

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
