//! `tessera connect`: the terminal viewer. Opens (or joins) a session,
//! puts the terminal in raw mode, relays keystrokes and window size, and
//! restores the terminal on every way out, then says why the session ended.

use crate::output::note;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use tessera_client::viewer::{self, ViewerEvent};
use tessera_client::ApiClient;
use tessera_core::api::CreateSessionRequest;
use tessera_core::kinds::{SessionAccess, SessionState, ViewerAccess};
use tokio::sync::mpsc;

/// Ctrl-] detaches, as in telnet and ssh-like tools.
const DETACH: u8 = 0x1d;

#[derive(Args, Debug)]
pub(crate) struct ConnectArgs {
    /// A session id to join, or a device (name, id or id prefix) to open a
    /// shell on.
    target: String,
    /// Open the session view-only.
    #[arg(long)]
    view_only: bool,
    /// Directory holding the login (default: the user's config dir).
    #[arg(long, env = "TESSERA_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
}

/// Puts the terminal back however we leave: normal return, error or panic.
struct RawMode(bool);

impl RawMode {
    fn enter() -> RawMode {
        let on = std::io::stdin().is_terminal() && crossterm::terminal::enable_raw_mode().is_ok();
        if on {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let _ = crossterm::terminal::disable_raw_mode();
                previous(info);
            }));
        }
        RawMode(on)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.0 {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    crossterm::terminal::size().ok()
}

async fn open_session(client: &ApiClient, args: &ConnectArgs) -> anyhow::Result<String> {
    if uuid::Uuid::parse_str(&args.target).is_ok() {
        return Ok(args.target.clone());
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
    let (mut tx, mut rx) = viewer::connect(&client, &id, &token.token)
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

    let raw = RawMode::enter();
    let (keys_tx, mut keys) = mpsc::channel::<Vec<u8>>(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if keys_tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut winch =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok();
    if let Some((cols, rows)) = terminal_size() {
        let _ = tx.resize(cols, rows).await;
    }
    let mut stdout = std::io::stdout();
    let mut exit_status: Option<i32> = None;
    let mut stdin_open = true;
    let ending = loop {
        tokio::select! {
            event = rx.next() => match event {
                ViewerEvent::Output(data) => {
                    let _ = stdout.write_all(&data);
                    let _ = stdout.flush();
                }
                ViewerEvent::ChannelClosed { exit_status: s, .. } => exit_status = s,
                ViewerEvent::Ended { code, reason } => break format!("session ended ({code}): {reason}"),
                ViewerEvent::Closed { code, reason } => {
                    break format!("disconnected by the server ({}): {reason}", code.map(|c| c.to_string()).unwrap_or_else(|| "no code".into()))
                }
                ViewerEvent::Ready { .. } => {}
            },
            Some(bytes) = keys.recv(), if stdin_open => {
                if let Some(at) = bytes.iter().position(|b| *b == DETACH) {
                    let _ = tx.input(&bytes[..at]).await;
                    tx.close().await;
                    break "disconnected (Ctrl-])".to_owned();
                }
                if tx.input(&bytes).await.is_err() {
                    break "the connection to the server was lost".to_owned();
                }
            }
            _ = async { match winch.as_mut() { Some(w) => { w.recv().await; } None => std::future::pending::<()>().await } } => {
                if let Some((cols, rows)) = terminal_size() {
                    let _ = tx.resize(cols, rows).await;
                }
            }
            else => stdin_open = false,
        }
    };
    drop(raw);
    note!("\r\n{ending}");
    Ok(match exit_status {
        Some(0) | None => ExitCode::SUCCESS,
        Some(s) => ExitCode::from(u8::try_from(s).unwrap_or(1)),
    })
}
