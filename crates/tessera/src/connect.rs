//! `tessera connect`: the terminal viewer. Opens (or joins) a session,
//! puts the terminal in raw mode, relays keystrokes and window size, and
//! restores the terminal on every way out, then says why the session ended.

use crate::output::note;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Args;
use tessera_client::viewer::{self, ViewerEvent};
use tessera_client::ApiClient;
use tessera_core::api::{CreateSessionRequest, SessionView};
use tessera_core::kinds::{SessionAccess, SessionState, ViewerAccess};

use crate::join;
use crate::terminal::{self, Remote, RemoteTerminal};

#[derive(Args, Debug)]
pub(crate) struct ConnectArgs {
    /// A session id to join, or a device (name, id or id prefix) to open a
    /// shell on; with --resume it may be left out (your one live session,
    /// on any device).
    #[arg(required_unless_present = "resume")]
    target: Option<String>,
    /// Open the session view-only.
    #[arg(long)]
    view_only: bool,
    /// Leave the shell running when you disconnect (it stays until it is
    /// ended or its device goes); without it, a managed shell ends once
    /// nobody has watched it for the server's grace period (default 60 s).
    #[arg(long)]
    keep: bool,
    /// Rejoin your own live session (on the device named, or on any device
    /// if none is) instead of opening a new shell; if you have several,
    /// they are listed with their ids and devices.
    #[arg(long)]
    resume: bool,
    /// Directory holding the login (default: the user's config dir).
    #[arg(long, env = "TESSERA_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
}

/// `--resume`: the one live session of `me` (on the device `target`, or on
/// any device), or why there is none to pick.
fn pick_resumable(
    sessions: &[SessionView],
    me: &str,
    target: Option<&str>,
) -> Result<String, String> {
    let wanted = target.map(|t| t.replace('-', "").to_ascii_uppercase());
    let mine: Vec<_> = sessions
        .iter()
        .filter(|s| s.created_by == me && s.state == SessionState::Active.as_str())
        // A screen session is watched with `tessera view`, not resumed here.
        .filter(|s| s.channel != "screen")
        .filter(|s| match (target, &wanted) {
            (Some(t), Some(w)) => s.device_name == t || s.device_id.replace('-', "") == *w,
            _ => true,
        })
        .collect();
    let on = target.map(|t| format!(" on {t}")).unwrap_or_default();
    match mine.as_slice() {
        [] => Err(match target {
            Some(t) => format!(
                "you have no live session on {t} to resume; `tessera connect {t}` opens a new shell"
            ),
            None => {
                "you have no live session to resume; `tessera connect DEVICE` opens a new shell"
                    .to_owned()
            }
        }),
        [one] => Ok(one.id.clone()),
        many => {
            let list: Vec<String> = many
                .iter()
                .map(|s| {
                    format!(
                        "  {}  on {} (started {})",
                        s.id,
                        s.device_name,
                        s.started_at.as_deref().unwrap_or("?")
                    )
                })
                .collect();
            let narrow = if target.is_none() {
                " or the device with `tessera connect DEVICE --resume`"
            } else {
                ""
            };
            Err(format!(
                "you have {} live sessions{on}; pick one by its id with `tessera connect SESSION`{narrow}:\n{}",
                many.len(),
                list.join("\n")
            ))
        }
    }
}

async fn resume_session(client: &ApiClient, target: Option<&str>) -> anyhow::Result<String> {
    let me = client.whoami().await?;
    let sessions = client.sessions(false).await?;
    pick_resumable(&sessions, &me.user_id, target).map_err(|e| anyhow!(e))
}

async fn open_session(client: &ApiClient, args: &ConnectArgs) -> anyhow::Result<String> {
    let target = args.target.as_deref();
    if let Some(t) = target.filter(|t| uuid::Uuid::parse_str(t).is_ok()) {
        let session = client.session(t).await?;
        if session.channel == "screen" {
            return Err(anyhow!(
                "{t} is a screen session: watch it with `tessera view {t}`"
            ));
        }
        return Ok(t.to_owned());
    }
    if args.resume {
        return resume_session(client, target).await;
    }
    let target = target.ok_or_else(|| anyhow!("name a device or a session to connect to"))?;
    let device = client.resolve_device(target).await?;
    let s = client
        .create_session(&CreateSessionRequest {
            device,
            access: Some(
                if args.view_only {
                    SessionAccess::View
                } else {
                    SessionAccess::Control
                }
                .as_str()
                .to_owned(),
            ),
            channel: None,
        })
        .await?;
    Ok(s.id)
}

pub(crate) async fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let ctx = crate::ctl::Ctx::from_dir(args.config_dir.clone())?;
    let client = ctx.client()?;
    let id = open_session(&client, &args).await?;
    let token = join::viewer_token(&client, &id).await?;
    let (tx, mut rx) = viewer::connect_with(&client, &id, &token, args.keep)
        .await
        .context("cannot join the session")?;
    let (access, device) = match rx.next().await {
        ViewerEvent::Ready {
            access,
            device_name,
        } => (access, device_name),
        ViewerEvent::Ended { code, reason } => {
            return Err(anyhow!("the session ended ({code}): {reason}"))
        }
        other => return Err(anyhow!("unexpected answer from the relay: {other:?}")),
    };
    note!(
        "Connected to {device} ({}). Ctrl-] disconnects.\r",
        if access.parse() == Ok(ViewerAccess::Control) {
            "control"
        } else {
            "view only"
        }
    );

    let rejoin = if args.keep {
        format!("disconnected (Ctrl-]); the shell keeps running: `tessera connect {id}` rejoins it")
    } else {
        format!(
            "disconnected (Ctrl-]); the shell ends unless you rejoin within the server's grace period: `tessera connect {}--resume`",
            args.target
                .as_deref()
                .map(|t| format!("{t} "))
                .unwrap_or_default()
        )
    };
    let mut remote = Viewer { tx, rx, rejoin };
    let done = terminal::attach(&mut remote).await;
    note!("\r\n{}", done.ending);
    Ok(done.exit_code())
}

/// The relay's viewer socket as the remote end of this terminal.
struct Viewer {
    tx: viewer::ViewerSender,
    rx: viewer::ViewerReceiver,
    /// What to tell the person who leaves with Ctrl-].
    rejoin: String,
}

impl RemoteTerminal for Viewer {
    async fn next(&mut self) -> Remote {
        loop {
            return match self.rx.next().await {
                ViewerEvent::Output(data) => Remote::Output(data.to_vec()),
                ViewerEvent::ChannelClosed { exit_status, .. } => Remote::Exited(exit_status),
                ViewerEvent::Ended { code, reason } => {
                    Remote::Ended(format!("session ended ({code}): {reason}"))
                }
                ViewerEvent::Closed { code, reason } => Remote::Ended(format!(
                    "disconnected by the server ({}): {reason}",
                    code.map(|c| c.to_string())
                        .unwrap_or_else(|| "no code".into())
                )),
                ViewerEvent::Ready { .. } => continue,
            };
        }
    }

    async fn input(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.tx.input(bytes).await.map_err(Into::into)
    }

    async fn resize(&mut self, cols: u16, rows: u16) {
        let _ = self.tx.resize(cols, rows).await;
    }

    async fn detach(&mut self) -> String {
        self.tx.close().await;
        self.rejoin.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, device: &str, by: &str, state: &str) -> SessionView {
        SessionView {
            id: id.into(),
            origin: "managed".into(),
            device_id: format!("ID-{}", device.to_ascii_uppercase()),
            device_name: device.into(),
            created_by: by.into(),
            created_by_name: None,
            access: "control".into(),
            consent: "not_required".into(),
            state: state.into(),
            created_at: "2026-11-26T08:00:00Z".into(),
            started_at: Some("2026-11-26T08:00:01Z".into()),
            ended_at: None,
            end_code: None,
            end_reason: None,
            channel: "shell".into(),
        }
    }

    #[test]
    fn a_screen_session_is_not_resumed_as_a_shell() {
        let mut screen = session("s1", "box", "me", "active");
        screen.channel = "screen".into();
        let e = pick_resumable(&[screen], "me", None).unwrap_err();
        assert!(e.starts_with("you have no live session to resume"), "{e}");
    }

    #[test]
    fn resume_without_a_device_takes_my_one_live_session_anywhere() {
        let all = [
            session("s1", "box", "me", "active"),
            session("s2", "nas", "someone", "active"),
            session("s3", "nas", "me", "pending"),
        ];
        assert_eq!(pick_resumable(&all, "me", None), Ok("s1".into()));
        assert_eq!(pick_resumable(&all, "me", Some("box")), Ok("s1".into()));
        assert_eq!(pick_resumable(&all, "me", Some("idbox")), Ok("s1".into()));
    }

    #[test]
    fn resume_lists_several_with_ids_and_devices_and_says_how_to_pick() {
        let all = [
            session("s1", "box", "me", "active"),
            session("s2", "nas", "me", "active"),
        ];
        let e = pick_resumable(&all, "me", None).unwrap_err();
        assert!(e.starts_with("you have 2 live sessions; pick one"), "{e}");
        assert!(e.contains("`tessera connect SESSION`"), "{e}");
        assert!(e.contains("`tessera connect DEVICE --resume`"), "{e}");
        assert!(e.contains("s1  on box") && e.contains("s2  on nas"), "{e}");
        // Naming the device narrows it to one.
        assert_eq!(pick_resumable(&all, "me", Some("nas")), Ok("s2".into()));
    }

    #[test]
    fn resume_with_nothing_live_says_so() {
        let all = [session("s1", "box", "someone", "active")];
        let e = pick_resumable(&all, "me", None).unwrap_err();
        assert_eq!(
            e,
            "you have no live session to resume; `tessera connect DEVICE` opens a new shell"
        );
        let e = pick_resumable(&all, "me", Some("box")).unwrap_err();
        assert!(e.contains("no live session on box"), "{e}");
    }
}
