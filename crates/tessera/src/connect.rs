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
use tessera_core::api::CreateSessionRequest;
use tessera_core::kinds::{SessionAccess, SessionState, ViewerAccess};

use crate::join;
use crate::terminal::{self, Remote, RemoteTerminal};

#[derive(Args, Debug)]
pub(crate) struct ConnectArgs {
    /// A session id to join, or a device (name, id or id prefix) to open a
    /// shell on.
    target: String,
    /// Open the session view-only.
    #[arg(long)]
    view_only: bool,
    /// Leave the shell running when you disconnect (it stays until it is
    /// ended or its device goes); without it, a managed shell ends once
    /// nobody has watched it for the server's grace period (default 60 s).
    #[arg(long)]
    keep: bool,
    /// Rejoin your own live session on the device instead of opening a new
    /// shell (the candidates are listed if there are several).
    #[arg(long)]
    resume: bool,
    /// Directory holding the login (default: the user's config dir).
    #[arg(long, env = "TESSERA_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
}

/// `--resume`: the one live session of mine on the device `target`.
async fn resume_session(client: &ApiClient, target: &str) -> anyhow::Result<String> {
    let me = client.whoami().await?;
    let wanted = target.replace('-', "").to_ascii_uppercase();
    let mine: Vec<_> = client
        .sessions(false)
        .await?
        .into_iter()
        .filter(|s| s.created_by == me.user_id && s.state == SessionState::Active.as_str())
        .filter(|s| s.device_name == target || s.device_id.replace('-', "") == wanted)
        .collect();
    match mine.as_slice() {
        [] => Err(anyhow!(
            "you have no live session on {target} to resume; `tessera connect {target}` opens a new shell"
        )),
        [one] => Ok(one.id.clone()),
        many => {
            let list: Vec<String> = many
                .iter()
                .map(|s| format!("  {} (started {})", s.id, s.started_at.as_deref().unwrap_or("?")))
                .collect();
            Err(anyhow!(
                "you have {} live sessions on {target}; resume one by its id with `tessera connect SESSION`:\n{}",
                many.len(),
                list.join("\n")
            ))
        }
    }
}

async fn open_session(client: &ApiClient, args: &ConnectArgs) -> anyhow::Result<String> {
    if uuid::Uuid::parse_str(&args.target).is_ok() {
        return Ok(args.target.clone());
    }
    if args.resume {
        return resume_session(client, &args.target).await;
    }
    let device = client.resolve_device(&args.target).await?;
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
            "disconnected (Ctrl-]); the shell ends unless you rejoin within the server's grace period: `tessera connect {} --resume`",
            args.target
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
