//! `tessera connect`: the terminal viewer. Opens (or joins) a session,
//! puts the terminal in raw mode, relays keystrokes and window size, and
//! restores the terminal on every way out, then says why the session ended.

use crate::output::note;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use tessera_client::viewer::{self, ViewerEvent};
use tessera_client::ApiClient;
use tessera_core::api::CreateSessionRequest;
use tessera_core::kinds::{SessionAccess, SessionState, ViewerAccess};

use crate::terminal::{self, Remote, RemoteTerminal};

#[derive(Args, Debug)]
pub(crate) struct ConnectArgs {
    /// A session id to join, or a device (id, fingerprint or name) to open a
    /// shell on.
    target: String,
    /// Open the session view-only.
    #[arg(long)]
    view_only: bool,
    /// Directory holding the login (default: the user's config dir).
    #[arg(long, env = "TESSERA_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
}

async fn open_session(client: &ApiClient, args: &ConnectArgs) -> anyhow::Result<String> {
    if uuid::Uuid::parse_str(&args.target).is_ok() {
        return Ok(args.target.clone());
    }
    let s = client
        .create_session(&CreateSessionRequest {
            device: args.target.clone(),
            access: Some(
                if args.view_only {
                    SessionAccess::View
                } else {
                    SessionAccess::Control
                }
                .as_str()
                .to_owned(),
            ),
        })
        .await?;
    Ok(s.id)
}

/// Waits while the person at the device decides.
async fn wait_until_active(client: &ApiClient, id: &str) -> anyhow::Result<()> {
    let mut told = false;
    loop {
        let s = client.session(id).await?;
        match s.state.parse() {
            Ok(SessionState::Active) => return Ok(()),
            Ok(SessionState::Ended) => {
                return Err(anyhow!(
                    "the session ended before it started ({}): {}",
                    s.end_code.unwrap_or_default(),
                    s.end_reason.unwrap_or_default()
                ))
            }
            _ => {
                if !told {
                    note!("Waiting for the person at {} to accept…", s.device_name);
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

pub(crate) async fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let ctx = crate::ctl::Ctx::from_dir(args.config_dir.clone())?;
    let client = ctx.client()?;
    let id = open_session(&client, &args).await?;
    wait_until_active(&client, &id).await?;
    let token = client.viewer_token(&id).await?;
    let (tx, mut rx) = viewer::connect(&client, &id, &token.token)
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

    let mut remote = Viewer { tx, rx };
    let done = terminal::attach(&mut remote).await;
    note!("\r\n{}", done.ending);
    Ok(done.exit_code())
}

/// The relay's viewer socket as the remote end of this terminal.
struct Viewer {
    tx: viewer::ViewerSender,
    rx: viewer::ViewerReceiver,
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

    async fn detach(&mut self) {
        self.tx.close().await;
    }
}
