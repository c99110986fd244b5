//! `tessera view SESSION_ID`: the screen viewer. Joins the session like
//! `tessera connect` does (`crate::join`), then either shows the remote
//! screen in a window (`window`) or writes one picture and leaves
//! (`--snapshot`, `snapshot`). The network side is `tessera_client::screen`;
//! the picture and its decoder are `stream`; the key mapping is `keys`; the
//! local clipboard is `clipboard`.

mod clipboard;
mod cursor;
mod grab;
mod keys;
mod snapshot;
mod stream;
mod window;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use tessera_client::screen::{self, ScreenEvent, ScreenReceiver, ScreenSender};
use tessera_proto::v1::{KeyInput, PointerInput};
use tessera_proto::MAX_CLIPBOARD_TEXT;
use tokio::sync::mpsc;

use crate::join;
use crate::output::note;
use keys::HostKey;
use window::{lock, Shared, Wake};

#[derive(Args, Debug)]
pub(crate) struct ViewArgs {
    /// The screen session to join (`tessera ctl sessions create DEVICE
    /// --channel screen` opens one).
    session: String,
    /// Write the first whole picture to this PNG file and exit, with no
    /// window (for scripts and tests).
    #[arg(long, value_name = "PATH")]
    snapshot: Option<PathBuf>,
    /// With --snapshot: how long to wait for the picture.
    #[arg(long, default_value = "30s", value_parser = crate::duration::snapshot_wait)]
    wait: Duration,
    /// The key that captures the keyboard (so Alt+Tab, Super and the like
    /// go to the remote screen) and gives it back; held with Delete or
    /// F1–F12 it sends Ctrl+Alt+Delete or Ctrl+Alt+F1–F12, and with M it
    /// shows the device's next monitor.
    #[arg(long, value_enum, default_value = "right-ctrl")]
    host_key: HostKey,
    /// Show the device's Nth monitor (from 1, in the order its agent lists
    /// them; the window's title names the one shown). Needs control
    /// access: the device shows one monitor to every viewer of the session.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=16))]
    monitor: Option<u32>,
    /// Do not share the clipboard. Otherwise, with control access, text
    /// copied on this desktop goes to the remote display's clipboard and
    /// text copied there comes here (at most 32 KiB; never with --snapshot).
    #[arg(long)]
    no_clipboard: bool,
    /// Directory holding the login (default: the user's config dir).
    #[arg(long, env = "TESSERA_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
}

/// What the window asks the network side to send.
#[derive(Debug)]
pub(crate) enum Cmd {
    Ack(u64),
    Keyframe,
    Key(KeyInput),
    Pointer(PointerInput),
    Special(String),
    Release,
    /// Show the monitor with this index.
    Monitor(u32),
    Clipboard(String),
    Close,
}

/// Microseconds since the Unix epoch on this machine's clock.
pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

pub(crate) async fn run(args: ViewArgs) -> anyhow::Result<ExitCode> {
    let ctx = crate::ctl::Ctx::from_dir(args.config_dir.clone())?;
    let client = ctx.client()?;
    let token = join::viewer_token(&client, &args.session).await?;
    let (tx, rx, joined) = screen::connect(&client, &args.session, &token, stream::DECODERS)
        .await
        .context("cannot join the session")?;
    if let Some(path) = &args.snapshot {
        snapshot::run(tx, rx, path, args.wait, args.monitor).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.monitor.is_some() && !joined.may_control() {
        note!("View only: --monitor cannot choose the monitor; showing the one the session shows.");
    }
    note!(
        "Connected to {} ({}).",
        joined.device_name,
        if joined.may_control() {
            "control"
        } else {
            "view only: your keys and pointer stay here"
        }
    );
    let shared = Arc::new(Mutex::new(Shared {
        want_monitor: args.monitor.filter(|_| joined.may_control()),
        ..Shared::default()
    }));
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(tx, cmd_rx));
    let local_clipboard = if clipboard::shares_clipboard(joined.may_control(), args.no_clipboard) {
        start_clipboard(cmd_tx.clone())
    } else {
        None
    };
    let (proxy_tx, proxy_rx) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(read_loop(
        rx,
        Arc::clone(&shared),
        cmd_tx.clone(),
        proxy_rx,
        local_clipboard.clone(),
    ));
    let opts = window::Options {
        control: joined.may_control(),
        device: joined.device_name,
        host_key: args.host_key,
    };
    let ui_shared = Arc::clone(&shared);
    let ui_cmds = cmd_tx.clone();
    let shown = tokio::task::spawn_blocking(move || {
        window::run(opts, ui_shared, ui_cmds, |proxy| {
            let _ = proxy_tx.send(proxy);
        })
    })
    .await
    .context("the viewer's window stopped")?;
    let _ = cmd_tx.send(Cmd::Close);
    reader.abort();
    let _ = reader.await;
    let _ = writer.await;
    drop(local_clipboard);
    shown?;
    let ended = lock(&shared).ended.clone();
    match ended {
        Some(why) => {
            note!("{why}");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Sends what the window asks for, in order, until it closes.
async fn write_loop(mut tx: ScreenSender, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
    while let Some(cmd) = cmds.recv().await {
        let sent = match cmd {
            Cmd::Ack(n) => tx.ack(n).await,
            Cmd::Keyframe => tx.request_keyframe().await,
            Cmd::Key(k) => tx.key(k).await.map(drop),
            Cmd::Pointer(p) => tx.pointer(p).await.map(drop),
            Cmd::Special(c) => tx.special_keys(&c).await.map(drop),
            Cmd::Release => tx.release_input().await.map(drop),
            Cmd::Monitor(m) => tx.choose_monitor(m).await.map(drop),
            // Over the cap it is refused before sending (and the caller
            // checked already): not a reason to stop.
            Cmd::Clipboard(text) => match tx.clipboard(&text).await {
                Err(tessera_client::ClientError::Api { .. }) => Ok(()),
                other => other.map(drop),
            },
            Cmd::Close => break,
        };
        if sent.is_err() {
            break;
        }
    }
    tx.close().await;
}

/// Watches this desktop's clipboard: what is copied here goes to the
/// remote one. Without it (no X display to watch) the viewer runs on.
fn start_clipboard(cmds: mpsc::UnboundedSender<Cmd>) -> Option<Arc<clipboard::LocalClipboard>> {
    let copied = move |text: Result<String, usize>| match text {
        Ok(text) => {
            let _ = cmds.send(Cmd::Clipboard(text));
        }
        Err(size) => note!(
            "The text copied here ({size} bytes) is not sent to the remote clipboard: \
             at most {MAX_CLIPBOARD_TEXT} bytes are shared."
        ),
    };
    match clipboard::LocalClipboard::start(copied) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            note!("The clipboard is not shared: {e:#}");
            None
        }
    }
}

/// Applies what the relay sends to the shared picture and wakes the window.
async fn read_loop(
    mut rx: ScreenReceiver,
    shared: Arc<Mutex<Shared>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    proxy: tokio::sync::oneshot::Receiver<winit::event_loop::EventLoopProxy<Wake>>,
    local_clipboard: Option<Arc<clipboard::LocalClipboard>>,
) {
    let Ok(proxy) = proxy.await else {
        return;
    };
    let wake = || {
        let _ = proxy.send_event(Wake::Picture);
    };
    loop {
        let event = rx.next().await;
        let mut s = lock(&shared);
        match event {
            ScreenEvent::Format(f) => {
                if let Err(e) = s.stream.format(&f) {
                    s.ended = Some(format!("{e} ({})", e.code()));
                    drop(s);
                    let _ = cmds.send(Cmd::Close);
                    wake();
                    return;
                }
            }
            ScreenEvent::Frame(f) => match s.stream.frame(&f, now_us()) {
                Ok(()) => {}
                Err(_) => {
                    let _ = cmds.send(Cmd::Keyframe);
                }
            },
            ScreenEvent::Resync { .. } => {
                let _ = cmds.send(Cmd::Keyframe);
            }
            ScreenEvent::Notice { code, message } => s.notice = Some(format!("{message} ({code})")),
            ScreenEvent::ChannelClosed { reason } => {
                s.ended = Some(format!("the screen channel closed ({reason})"));
            }
            ScreenEvent::Ended { code, reason } => {
                s.ended = Some(format!("the session ended ({code}): {reason}"));
            }
            ScreenEvent::Closed { code, reason } => {
                if s.ended.is_none() {
                    s.ended = Some(format!(
                        "disconnected by the server ({}): {reason}",
                        code.map_or_else(|| "no code".into(), |c| c.to_string())
                    ));
                }
            }
            ScreenEvent::Cursor(c) => s.cursor = Some(c),
            ScreenEvent::Monitors(monitors) => {
                if let Some(n) = s.want_monitor.take() {
                    match stream::nth_monitor(&monitors, n) {
                        Some(index) => {
                            let _ = cmds.send(Cmd::Monitor(index));
                        }
                        None => note!(
                            "The device has {} monitor(s): there is no monitor {n} to show (monitor_unknown).",
                            monitors.len()
                        ),
                    }
                }
                s.monitors = monitors;
            }
            ScreenEvent::Clipboard(text) => {
                drop(s);
                if let Some(c) = &local_clipboard {
                    if let Err(e) = c.offer(text) {
                        tracing::debug!(error = %e, "could not take the local clipboard");
                    }
                }
                continue;
            }
        }
        let done = s.ended.is_some();
        drop(s);
        wake();
        if done {
            return;
        }
    }
}
