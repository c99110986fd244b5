//! The one-time support agent: no enrollment, an identity that lives in
//! memory only, one attended session, then exit.
//!
//! The person being helped is told what happens, as [`Notice`]s: their
//! answer, the shell that opens, who joins and leaves (the server's
//! presence notices), and at the end why it ended. In a `view` session the
//! shell is the person's own, in a PTY on their terminal (like `script`),
//! mirrored to the session; in a `control` session the technician gets a
//! shell of their own on this machine, as this user.

use std::future::Future;
use std::sync::Arc;

use tessera_client::{ApiClient, ClientError, TlsTrust};
use tessera_core::api::{BindSupportCodeRequest, BoundSupportCode, SupportCodePreview};
use tessera_core::identity::DeviceKeys;
use tessera_core::kinds::{SessionAccess, ViewerAccess};
use tokio::sync::mpsc;

use crate::control::{run_attended, run_one_session, Exit, RunOptions};
use crate::credentials::Credentials;
use crate::error::AgentError;
use crate::sysinfo;

/// Who asked for this code, without using it.
pub async fn preview(
    server: &str,
    trust: &TlsTrust,
    code: &str,
) -> Result<SupportCodePreview, ClientError> {
    ApiClient::new(server, trust)?
        .preview_support_code(code)
        .await
}

/// Binds `code` with a fresh in-memory identity.
pub async fn bind(
    server: &str,
    trust: &TlsTrust,
    code: &str,
    name: Option<String>,
) -> Result<(Credentials, BoundSupportCode), ClientError> {
    let keys = DeviceKeys::generate();
    let client = ApiClient::new(server, trust)?;
    let (name, hostname, os) = (
        name.unwrap_or_else(sysinfo::hostname),
        sysinfo::hostname(),
        sysinfo::os(),
    );
    // The same proof of key possession a pairing request carries.
    let p = crate::enroll::possession_proof(
        &keys,
        (&name, &hostname, &os),
        tessera_core::identity::ProofPurpose::SupportBind,
        server,
    );
    let bound = client
        .bind_support_code(&BindSupportCodeRequest {
            code: tessera_core::api::SecretString::new(code),
            identity: keys.document().encode(),
            name,
            hostname,
            os,
            issued_at: Some(p.issued_at),
            proof: Some(p.proof),
            audience: Some(p.audience),
        })
        .await?;
    let creds = Credentials {
        server: server.to_owned(),
        trust: trust.clone(),
        device_id: keys.device_id(),
        keys: Arc::new(keys),
        key: bound.device_key.clone(),
    };
    Ok((creds, bound))
}

/// Serves the bound session until it ends.
pub async fn serve(
    creds: &Credentials,
    bound: &BoundSupportCode,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit, AgentError> {
    run_one_session(creds, &bound.session_id, opts, shutdown).await
}

/// What the person at the machine is told while the session runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Their answer to the consent question.
    Answered {
        technician: String,
        access: SessionAccess,
        granted: bool,
    },
    /// The session's shell started: the technician's own, or (`mirrored`)
    /// the person's, shared with the session.
    ShellStarted { mirrored: bool },
    /// The session's screen is being shared (while someone watches).
    ScreenStarted,
    /// Someone joined the session.
    Joined {
        name: String,
        access: ViewerAccess,
        viewers: u32,
    },
    /// Someone left it (`reason`: `left`, or why the server dropped them).
    Left {
        name: String,
        access: ViewerAccess,
        reason: String,
        viewers: u32,
    },
}

/// How the person attends the session.
#[derive(Clone, Debug)]
pub struct Attended {
    /// Where notices go. When full (nobody reading), notices are dropped:
    /// they are for a person, the session does not wait for them.
    pub notices: mpsc::Sender<Notice>,
    /// View mode: the session's shell is the person's own, on their
    /// terminal, mirrored to the session (viewer input is never taken).
    pub mirror: bool,
}

/// Serves the bound session, telling the person what happens.
pub async fn serve_attended(
    creds: &Credentials,
    bound: &BoundSupportCode,
    opts: RunOptions,
    attended: Attended,
    shutdown: impl Future<Output = ()>,
) -> Result<Exit, AgentError> {
    run_attended(creds, &bound.session_id, opts, attended, shutdown).await
}

/// How to end the session, in words: the person's own shell takes every
/// key, so there it is `exit` or Ctrl-].
pub fn how_to_end(mirrored: bool) -> &'static str {
    if mirrored {
        "To end the session, leave this shell (type exit) or press Ctrl-]."
    } else {
        "To end the session, type end and press Enter (or press Ctrl-C)."
    }
}

fn doing(access: ViewerAccess) -> &'static str {
    match access {
        ViewerAccess::Control => "controlling",
        ViewerAccess::ViewOnly => "watching",
    }
}

/// What the server sent, made safe to print on the person's terminal: no
/// control characters (a name or reason could otherwise carry escapes).
fn printable(s: String) -> String {
    tessera_core::text::printable(&s, usize::MAX)
}

/// A notice in words, for the person.
pub fn describe(notice: &Notice, user: &str) -> String {
    printable(describe_raw(notice, user))
}

fn describe_raw(notice: &Notice, user: &str) -> String {
    match notice {
        Notice::Answered {
            technician,
            granted: false,
            ..
        } => format!("You declined; nothing was shared with {technician}."),
        Notice::Answered {
            technician,
            access: SessionAccess::Control,
            ..
        } => format!(
            "You allowed {technician} to control this computer: {technician} gets a shell of their own \
             on this machine, as you ({user}), and can run anything you can. Waiting for {technician} to connect…"
        ),
        Notice::Answered { technician, .. } => format!(
            "You allowed {technician} to watch: {technician} sees this terminal, where your shell starts now, \
             and cannot type into it. Waiting for {technician} to connect…"
        ),
        Notice::ShellStarted { mirrored: true } => format!(
            "Your shell is shared, view-only (open channel: shell). {}",
            how_to_end(true)
        ),
        Notice::ShellStarted { mirrored: false } => format!(
            "A shell for the technician is open on this machine (open channel: shell). {}",
            how_to_end(false)
        ),
        Notice::ScreenStarted => format!(
            "Your screen is shared with the session (open channel: screen); \
             what the technician may do with it follows their access. {}",
            how_to_end(false)
        ),
        Notice::Joined {
            name,
            access,
            viewers,
        } => {
            let others = match viewers {
                0 | 1 => String::new(),
                n => format!(" {n} people are in the session."),
            };
            format!("{name} is connected ({}).{others}", doing(*access))
        }
        Notice::Left {
            name,
            access,
            reason,
            viewers,
        } => {
            let how = if reason == "left" {
                "left".to_owned()
            } else {
                format!("was disconnected by the server ({reason})")
            };
            let still = match viewers {
                0 => " Nobody is connected now.".to_owned(),
                n => format!(" {n} still connected."),
            };
            format!("{name} {how} (was {}).{still}", doing(*access))
        }
    }
}

/// Why the session ended, in words (`code` and `reason` as the server or
/// the agent gave them).
pub fn ended(code: &str, reason: &str) -> String {
    use tessera_core::kinds::EndCode;
    let why = match code.parse::<EndCode>() {
        Ok(EndCode::EndedByOperator) => format!("the technician ended it ({reason})"),
        Ok(EndCode::EndedByUser) => "you ended it".to_owned(),
        Ok(EndCode::ConsentDenied) => "you declined".to_owned(),
        Ok(EndCode::ConsentTimeout) => "nobody answered the question in time".to_owned(),
        Ok(EndCode::ShellExited) => reason.to_owned(),
        Ok(EndCode::ServerShuttingDown) => "the server shut down".to_owned(),
        Ok(EndCode::DeviceRevoked) => "the server withdrew this session's access".to_owned(),
        _ if code == "disconnected" => "the connection to the server was lost".to_owned(),
        _ if reason.is_empty() => code.to_owned(),
        _ => format!("{reason} ({code})"),
    };
    printable(format!("Support session ended ({code}): {why}."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_person_reads_who_is_connected_how_and_how_to_end() {
        let joined = Notice::Joined {
            name: "alice".into(),
            access: ViewerAccess::Control,
            viewers: 1,
        };
        assert_eq!(
            describe(&joined, "bob"),
            "alice is connected (controlling)."
        );
        let left = Notice::Left {
            name: "alice".into(),
            access: ViewerAccess::ViewOnly,
            reason: "left".into(),
            viewers: 0,
        };
        assert_eq!(
            describe(&left, "bob"),
            "alice left (was watching). Nobody is connected now."
        );
        let granted = Notice::Answered {
            technician: "alice".into(),
            access: SessionAccess::Control,
            granted: true,
        };
        assert!(describe(&granted, "bob").contains("as you (bob)"));
        assert!(describe(&Notice::ShellStarted { mirrored: true }, "bob").contains("exit"));
        assert_eq!(
            ended("ended_by_operator", "ended by alice"),
            "Support session ended (ended_by_operator): the technician ended it (ended by alice)."
        );
        assert!(ended("disconnected", "").contains("connection to the server was lost"));
        let hostile = Notice::Joined {
            name: "eve\x1b]0;pwned\x07".into(),
            access: ViewerAccess::Control,
            viewers: 1,
        };
        assert!(!describe(&hostile, "bob").contains('\x1b'));
    }
}
