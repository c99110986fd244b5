//! The local end of a remote terminal, shared by `tessera connect` and
//! `tessera session shell`: raw mode for as long as it is attached (put
//! back on every way out, a panic included), keystrokes relayed as typed,
//! the window size sent at the start and on every SIGWINCH, Ctrl-] to
//! leave, and the remote's exit status remembered for the process's own.

use std::io::{IsTerminal, Read, Write};

use tokio::sync::mpsc;

/// Ctrl-] detaches, as in telnet and ssh-like tools.
pub(crate) const DETACH: u8 = 0x1d;

/// This terminal's size as (columns, rows).
pub(crate) fn size() -> Option<(u16, u16)> {
    crossterm::terminal::size().ok()
}

/// What the remote end of a terminal reports.
#[derive(Debug)]
pub(crate) enum Remote {
    /// Bytes to draw.
    Output(Vec<u8>),
    /// The remote program exited with this status (the session may still
    /// say why it ended).
    Exited(Option<i32>),
    /// The session is over; the words say why.
    Ended(String),
}

/// A remote terminal: where keystrokes and sizes go, and what comes back.
pub(crate) trait RemoteTerminal {
    /// The next thing the remote end reports.
    async fn next(&mut self) -> Remote;
    /// Sends keystrokes; an error means the connection is lost.
    async fn input(&mut self, bytes: &[u8]) -> anyhow::Result<()>;
    /// Sends the window size.
    async fn resize(&mut self, cols: u16, rows: u16);
    /// Leaves on purpose (Ctrl-]); what to tell the person.
    async fn detach(&mut self) -> String;
}

/// How an attached terminal ended.
pub(crate) struct Detached {
    /// Why, in words, for the line printed after the terminal is restored.
    pub(crate) ending: String,
    /// The remote program's exit status, if it exited.
    pub(crate) exit_status: Option<i32>,
}

impl Detached {
    /// The process exit code that passes the remote's status on.
    pub(crate) fn exit_code(&self) -> std::process::ExitCode {
        match self.exit_status {
            Some(0) | None => std::process::ExitCode::SUCCESS,
            Some(s) => std::process::ExitCode::from(u8::try_from(s).unwrap_or(1)),
        }
    }
}

/// Attaches this terminal to `remote` in raw mode until the session ends
/// or Ctrl-] is typed; the terminal is restored before this returns.
pub(crate) async fn attach(remote: &mut impl RemoteTerminal) -> Detached {
    // Raw mode only on a real terminal: crossterm would otherwise take
    // /dev/tty from under a piped stdin.
    let raw = std::io::stdin()
        .is_terminal()
        .then(tessera_agent::terminal::RawMode::enter);
    // Standard input is read on a thread of its own (a blocking read);
    // at most 64 reads wait here, then the reader waits for the network.
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
    if let Some((cols, rows)) = size() {
        remote.resize(cols, rows).await;
    }
    let mut stdout = std::io::stdout();
    let mut exit_status: Option<i32> = None;
    let mut stdin_open = true;
    let ending = loop {
        tokio::select! {
            event = remote.next() => match event {
                Remote::Output(data) => {
                    let _ = stdout.write_all(&data);
                    let _ = stdout.flush();
                }
                Remote::Exited(s) => exit_status = s,
                Remote::Ended(why) => break why,
            },
            Some(bytes) = keys.recv(), if stdin_open => {
                if let Some(at) = bytes.iter().position(|b| *b == DETACH) {
                    let _ = remote.input(&bytes[..at]).await;
                    break remote.detach().await;
                }
                if remote.input(&bytes).await.is_err() {
                    break "the connection to the server was lost".to_owned();
                }
            }
            _ = async { match winch.as_mut() { Some(w) => { w.recv().await; } None => std::future::pending::<()>().await } } => {
                if let Some((cols, rows)) = size() {
                    remote.resize(cols, rows).await;
                }
            }
            else => stdin_open = false,
        }
    };
    drop(raw);
    Detached {
        ending,
        exit_status,
    }
}
