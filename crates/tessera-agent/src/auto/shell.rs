//! A shell between trusted devices, end to end: the member runs its
//! login shell in a PTY when the creator asks (`PtyOpen`, shell scope
//! only), takes keystrokes and window sizes from the creator's sealed
//! payloads, and seals the PTY's output and, at the end, its exit status
//! back to the creator. The server relays ciphertext only.
//!
//! Threats and rules:
//! - the shell runs as the agent's user, and only for a creator whose
//!   grant carries `shell` (`member::admit` refuses every PTY payload in a
//!   session joined under `files` alone, before this module sees it);
//! - nothing the shell prints or is typed into it is logged;
//! - when the session ends, the creator leaves or this member leaves, the
//!   shell's whole session is killed: its process group and every process
//!   that stayed in its terminal session (background jobs of an
//!   interactive shell get process groups of their own). Dropping the
//!   [`PtyShell`] does it, so no way out of a session leaves one behind.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use portable_pty::{native_pty_system, CommandBuilder, MasterPty, PtySize};
use tessera_core::e2e::{self, OriginKey, Place, SessionKey};
use tessera_proto::v1::{e2e_payload, E2eData, OriginTag, PtyData, PtyExit, PtyOpen, PtyResize};
use tessera_proto::Body;
use tokio::sync::mpsc;

use super::creator::AutoSession;
use super::payload;
use crate::auto::AutoError;

/// Largest read from the PTY at once (one sealed payload each).
const READ_CHUNK: usize = 16 * 1024;

/// What a member seals to the creator with: shared by the member (for its
/// acknowledgements) and its shell's output thread, so counters stay in
/// the order payloads enter the outbound queue.
pub(super) struct Sealer {
    pub(super) session_id: String,
    pub(super) creator: String,
    pub(super) key: Option<SessionKey>,
    pub(super) origin: Option<OriginKey>,
    pub(super) index: u32,
    pub(super) counter: u64,
}

impl Sealer {
    /// `body` sealed for the creator with this member's next counter;
    /// `None` before the session key arrived.
    pub(super) fn seal(&mut self, body: e2e_payload::Body) -> Option<Body> {
        let (key, origin) = (self.key.as_ref()?, self.origin.as_ref()?);
        self.counter += 1;
        let at = Place {
            session_id: &self.session_id,
            epoch: key.epoch,
            sender: self.index,
            counter: self.counter,
        };
        let ciphertext = e2e::seal(key, at.session_id, at.sender, at.counter, &payload(body));
        let tag = e2e::origin_tag(origin, at, &ciphertext);
        Some(Body::E2eData(E2eData {
            session_id: self.session_id.clone(),
            epoch: key.epoch,
            sender: self.index,
            counter: self.counter,
            ciphertext: Bytes::from(ciphertext),
            to: self.creator.clone(),
            tags: vec![OriginTag {
                member: self.index,
                tag: Bytes::copy_from_slice(&tag),
            }],
        }))
    }
}

pub(super) type SharedSealer = Arc<Mutex<Sealer>>;

/// Seals `body` and queues it, waiting for room in the queue first (on a
/// thread of its own: the shell then waits on its terminal instead of the
/// agent buffering without bound). The lock is held only while sealing
/// and queueing into a slot already reserved, so counters enter the queue
/// in order.
fn send_blocking(
    rt: &tokio::runtime::Handle,
    outbound: &mpsc::Sender<Body>,
    sealer: &SharedSealer,
    body: e2e_payload::Body,
) -> bool {
    let Ok(permit) = rt.block_on(outbound.reserve()) else {
        return false;
    };
    let Ok(mut s) = sealer.lock() else {
        return false;
    };
    match s.seal(body) {
        Some(sealed) => {
            permit.send(sealed);
            true
        }
        None => false,
    }
}

fn size(cols: u32, rows: u32) -> PtySize {
    PtySize {
        rows: rows.clamp(1, 1000) as u16,
        cols: cols.clamp(1, 1000) as u16,
        pixel_width: 0,
        pixel_height: 0,
    }
}

/// Where a member's shell comes from and where its output goes.
#[derive(Clone)]
pub struct ShellService {
    /// The program to run; `None`: the agent user's login shell.
    pub program: Option<String>,
    /// The connection's outbound queue.
    pub outbound: mpsc::Sender<Body>,
}

/// A member's running shell; dropping it kills the shell's whole session.
pub(super) struct PtyShell {
    input: std_mpsc::SyncSender<Vec<u8>>,
    master: Box<dyn MasterPty + Send>,
    leader: Option<u32>,
    /// Set when the session is going: the exit the kill causes is not
    /// reported to a creator that is gone.
    closing: Arc<AtomicBool>,
}

impl PtyShell {
    /// Starts the shell in a PTY of the size asked; its output and exit
    /// status are sealed to the creator as they come.
    pub(super) fn spawn(
        service: &ShellService,
        open: &PtyOpen,
        sealer: SharedSealer,
    ) -> Result<PtyShell, String> {
        let rt = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
        let pair = native_pty_system()
            .openpty(size(open.cols, open.rows))
            .map_err(|e| e.to_string())?;
        let mut cmd = match &service.program {
            Some(p) => CommandBuilder::new(p),
            None => CommandBuilder::new_default_prog(),
        };
        cmd.env("TERM", "xterm-256color");
        if let Ok(s) = sealer.lock() {
            cmd.env("TESSERA_SESSION", &s.session_id);
        }
        if let Ok(home) = std::env::var("HOME") {
            cmd.cwd(home);
        }
        let mut child = pair.slave.spawn_command(cmd).map_err(|e| e.to_string())?;
        drop(pair.slave);
        let leader = child.process_id();
        let mut reader = pair.master.try_clone_reader().map_err(|e| e.to_string())?;
        let mut writer = pair.master.take_writer().map_err(|e| e.to_string())?;

        // At most 256 keystroke batches wait for a shell that stops
        // reading; then they are dropped (the creator's terminal is a
        // person typing, not a bulk channel).
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

        let closing = Arc::new(AtomicBool::new(false));
        let quiet = closing.clone();
        let outbound = service.outbound.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let data = e2e_payload::Body::PtyData(PtyData {
                            data: Bytes::copy_from_slice(&buf[..n]),
                        });
                        if !send_blocking(&rt, &outbound, &sealer, data) {
                            break;
                        }
                    }
                }
            }
            let status = child.wait().ok().map(|s| s.exit_code() as i32);
            if !quiet.load(Ordering::SeqCst) {
                let exit = e2e_payload::Body::PtyExit(PtyExit {
                    exit_status: status,
                    reason: String::new(),
                });
                send_blocking(&rt, &outbound, &sealer, exit);
            }
        });
        Ok(PtyShell {
            input,
            master: pair.master,
            leader,
            closing,
        })
    }

    /// Queues keystrokes for the shell.
    pub(super) fn write(&self, data: &[u8]) {
        let _ = self.input.try_send(data.to_vec());
    }

    pub(super) fn resize(&self, r: &PtyResize) {
        let _ = self.master.resize(size(r.cols, r.rows));
    }
}

impl Drop for PtyShell {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
        if let Some(leader) = self.leader {
            crate::process_session::end(leader);
        }
    }
}

impl AutoSession {
    /// Asks every member (one in practice) to start a shell of
    /// `cols`×`rows`.
    pub async fn open_shell(&mut self, cols: u16, rows: u16) -> Result<(), AutoError> {
        let b = self.seal(
            e2e_payload::Body::PtyOpen(PtyOpen {
                cols: cols.into(),
                rows: rows.into(),
            }),
            "",
        );
        self.conn.send(b).await.map_err(Into::into)
    }

    /// Keystrokes for the shell.
    pub async fn shell_input(&mut self, data: &[u8]) -> Result<(), AutoError> {
        let b = self.seal(
            e2e_payload::Body::PtyData(PtyData {
                data: Bytes::copy_from_slice(data),
            }),
            "",
        );
        self.conn.send(b).await.map_err(Into::into)
    }

    /// The window's new size.
    pub async fn shell_resize(&mut self, cols: u16, rows: u16) -> Result<(), AutoError> {
        let b = self.seal(
            e2e_payload::Body::PtyResize(PtyResize {
                cols: cols.into(),
                rows: rows.into(),
            }),
            "",
        );
        self.conn.send(b).await.map_err(Into::into)
    }
}
