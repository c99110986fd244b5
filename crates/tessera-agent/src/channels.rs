//! Session channels on the device. Today: the shell, in a real PTY.
//!
//! Output is read on a dedicated thread and handed to the connection with a
//! blocking send into a bounded queue: when the network is slower than the
//! shell, the shell blocks on its terminal instead of the agent buffering
//! without bound. Input is written on another thread, so a shell that stops
//! reading never stalls the connection.
//!
//! When the session ends the shell's whole process session ends with it
//! ([`crate::process_session`]).

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use portable_pty::{native_pty_system, ChildKiller, CommandBuilder, MasterPty, PtySize};
use tessera_proto::v1::{ChannelClose, ChannelData};
use tessera_proto::Body;
use tokio::sync::mpsc;

/// Largest read from the PTY at once.
const READ_CHUNK: usize = 32 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("cannot start the shell: {0}")]
pub struct ShellError(String);

/// A running shell.
pub struct Shell {
    input: std_mpsc::SyncSender<Vec<u8>>,
    master: Arc<Mutex<Box<dyn MasterPty + Send>>>,
    killer: Box<dyn ChildKiller + Send + Sync>,
    /// The shell's pid, which is also its session and group id.
    leader: Option<u32>,
    /// The person's own shell on their terminal, mirrored to a view-only
    /// session: it takes keys and size from that terminal only.
    mirrored: bool,
    /// Cleared when the shell goes, so the thread passing the person's
    /// keys to it lets go of the terminal.
    alive: Arc<AtomicBool>,
    /// Raw mode on the person's terminal while a mirrored shell runs.
    _raw: Option<crate::terminal::RawMode>,
}

/// Ctrl-]: in a mirrored shell, ends the session (as it detaches in
/// `tessera connect`).
const END_KEY: u8 = 0x1d;

/// The shell to run: `$SHELL`, else `/bin/sh`.
pub fn default_shell() -> String {
    std::env::var("SHELL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".to_owned())
}

fn size(cols: u32, rows: u32) -> PtySize {
    PtySize {
        rows: rows.clamp(1, 1000) as u16,
        cols: cols.clamp(1, 1000) as u16,
        pixel_width: 0,
        pixel_height: 0,
    }
}

impl Shell {
    /// Starts `program` in a PTY of `cols`×`rows`; its output and, at the
    /// end, its exit status go to `outbound` as channel messages.
    pub fn spawn(
        program: &str,
        session_id: &str,
        channel_id: u32,
        cols: u32,
        rows: u32,
        outbound: mpsc::Sender<Body>,
    ) -> Result<Shell, ShellError> {
        Shell::start(
            program,
            session_id,
            channel_id,
            (cols, rows),
            outbound,
            None,
        )
    }

    /// Starts `program` as the person's own shell on their terminal (like
    /// `script`): what it draws goes to that terminal and to the session,
    /// what the person types goes to it, and it follows the terminal's
    /// size. Ctrl-] asks to end the session ([`crate::terminal::end_requested`]).
    pub fn spawn_mirrored(
        program: &str,
        session_id: &str,
        channel_id: u32,
        outbound: mpsc::Sender<Body>,
    ) -> Result<Shell, ShellError> {
        let screen = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/tty")
            .map_err(|e| ShellError(format!("no terminal to share: {e}")))?;
        let (cols, rows) = crate::terminal::size().unwrap_or((80, 24));
        Shell::start(
            program,
            session_id,
            channel_id,
            (u32::from(cols), u32::from(rows)),
            outbound,
            Some(screen),
        )
    }

    fn start(
        program: &str,
        session_id: &str,
        channel_id: u32,
        (cols, rows): (u32, u32),
        outbound: mpsc::Sender<Body>,
        mut screen: Option<std::fs::File>,
    ) -> Result<Shell, ShellError> {
        let err = |e: &dyn std::fmt::Display| ShellError(e.to_string());
        let mirrored = screen.is_some();
        let pair = native_pty_system()
            .openpty(size(cols, rows))
            .map_err(|e| err(&e))?;
        let mut cmd = CommandBuilder::new(program);
        cmd.env(
            "TERM",
            std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into()),
        );
        cmd.env("TESSERA_SESSION", session_id);
        if mirrored {
            // The person's shell starts where they are.
            if let Ok(here) = std::env::current_dir() {
                cmd.cwd(here);
            }
        } else if let Ok(home) = std::env::var("HOME") {
            cmd.cwd(home);
        }
        let mut child = pair.slave.spawn_command(cmd).map_err(|e| err(&e))?;
        drop(pair.slave);
        let killer = child.clone_killer();
        let leader = child.process_id();
        let mut reader = pair.master.try_clone_reader().map_err(|e| err(&e))?;
        let mut writer = pair.master.take_writer().map_err(|e| err(&e))?;

        let (input, input_rx) = std_mpsc::sync_channel::<Vec<u8>>(256);
        std::thread::spawn(move || {
            for chunk in input_rx {
                if writer
                    .write_all(&chunk)
                    .and_then(|()| writer.flush())
                    .is_err()
                {
                    break;
                }
            }
        });

        let session = session_id.to_owned();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Some(screen) = screen.as_mut() {
                            let _ = screen.write_all(&buf[..n]).and_then(|()| screen.flush());
                        }
                        let data = Body::ChannelData(ChannelData {
                            session_id: session.clone(),
                            channel_id,
                            data: Bytes::copy_from_slice(&buf[..n]),
                        });
                        if outbound.blocking_send(data).is_err() {
                            break;
                        }
                    }
                }
            }
            let status = child.wait().ok().map(|s| s.exit_code() as i32);
            let _ = outbound.blocking_send(Body::ChannelClose(ChannelClose {
                session_id: session,
                channel_id,
                exit_status: status,
                reason: String::new(),
            }));
        });
        let master = Arc::new(Mutex::new(pair.master));
        let alive = Arc::new(AtomicBool::new(true));
        let raw = if mirrored {
            let raw = crate::terminal::RawMode::enter();
            pass_keys(input.clone(), alive.clone());
            follow_size(Arc::downgrade(&master));
            Some(raw)
        } else {
            None
        };
        Ok(Shell {
            input,
            master,
            killer,
            leader,
            mirrored,
            alive,
            _raw: raw,
        })
    }

    /// Whether this is the person's own shell (which takes no keys or
    /// size from the session).
    pub fn is_mirrored(&self) -> bool {
        self.mirrored
    }

    /// Queues keystrokes; false if the shell is gone.
    pub fn write(&self, data: &[u8]) -> bool {
        self.input.try_send(data.to_vec()).is_ok()
    }

    pub fn resize(&self, cols: u32, rows: u32) {
        if let Ok(m) = self.master.lock() {
            let _ = m.resize(size(cols, rows));
        }
    }
}

/// Passes what the person types to their mirrored shell until it goes;
/// Ctrl-] asks to end the session instead.
fn pass_keys(input: std_mpsc::SyncSender<Vec<u8>>, alive: Arc<AtomicBool>) {
    let Some(typed) = crate::terminal::typed() else {
        return;
    };
    std::thread::spawn(move || {
        let Ok(typed) = typed.lock() else { return };
        crate::terminal::forget_typed_ahead(&typed);
        while alive.load(Ordering::Acquire) {
            let Ok(chunk) = typed.recv_timeout(std::time::Duration::from_millis(200)) else {
                continue;
            };
            if let Some(at) = chunk.iter().position(|b| *b == END_KEY) {
                let _ = input.send(chunk[..at].to_vec());
                crate::terminal::request_end();
                return;
            }
            if input.send(chunk).is_err() {
                return;
            }
        }
    });
}

/// Resizes the mirrored shell when the person's terminal is resized.
fn follow_size(master: std::sync::Weak<Mutex<Box<dyn MasterPty + Send>>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut winch) = signal(SignalKind::window_change()) else {
        return;
    };
    tokio::spawn(async move {
        while winch.recv().await.is_some() {
            let Some(master) = master.upgrade() else {
                return;
            };
            let Some((cols, rows)) = crate::terminal::size() else {
                continue;
            };
            let resized = master
                .lock()
                .map(|m| m.resize(size(u32::from(cols), u32::from(rows))));
            drop(resized);
        }
    });
}

impl Drop for Shell {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
        let _ = self.killer.kill();
        if let Some(leader) = self.leader {
            crate::process_session::end(leader);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s[s.rfind(')')? + 1..].to_owned();
                rest.split_whitespace()
                    .next()
                    .map(|st| st != "Z" && st != "X")
            })
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn ending_a_shell_kills_its_background_jobs_too() {
        let (tx, mut rx) = mpsc::channel(64);
        let shell = Shell::spawn("/bin/sh", "s", 1, 80, 24, tx).unwrap();
        shell.write(b"set -m; sleep 3333 & echo BG=$!\n");
        let mut seen = String::new();
        let pid: i32 = loop {
            let Some(Body::ChannelData(d)) = rx.recv().await else {
                panic!("shell ended early: {seen}");
            };
            seen.push_str(&String::from_utf8_lossy(&d.data));
            // The last `BG=`: the first is the terminal echoing the command.
            if let Some(at) = seen.rfind("BG=") {
                let digits: String = seen[at + 3..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if !digits.is_empty() && seen[at + 3 + digits.len()..].starts_with(['\r', '\n']) {
                    break digits.parse().unwrap();
                }
            }
        };
        assert!(alive(pid));
        drop(shell);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "sleep {pid} outlived its shell"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
