//! Session channels on the device. Today: the shell, in a real PTY.
//!
//! Output is read on a dedicated thread and handed to the connection with a
//! blocking send into a bounded queue: when the network is slower than the
//! shell, the shell blocks on its terminal instead of the agent buffering
//! without bound. Input is written on another thread, so a shell that stops
//! reading never stalls the connection.

use std::io::{Read, Write};
use std::sync::mpsc as std_mpsc;

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
    master: Box<dyn MasterPty + Send>,
    killer: Box<dyn ChildKiller + Send + Sync>,
}

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
        let err = |e: &dyn std::fmt::Display| ShellError(e.to_string());
        let pair = native_pty_system()
            .openpty(size(cols, rows))
            .map_err(|e| err(&e))?;
        let mut cmd = CommandBuilder::new(program);
        cmd.env(
            "TERM",
            std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into()),
        );
        cmd.env("TESSERA_SESSION", session_id);
        if let Ok(home) = std::env::var("HOME") {
            cmd.cwd(home);
        }
        let mut child = pair.slave.spawn_command(cmd).map_err(|e| err(&e))?;
        drop(pair.slave);
        let killer = child.clone_killer();
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
        Ok(Shell {
            input,
            master: pair.master,
            killer,
        })
    }

    /// Queues keystrokes; false if the shell is gone.
    pub fn write(&self, data: &[u8]) -> bool {
        self.input.try_send(data.to_vec()).is_ok()
    }

    pub fn resize(&self, cols: u32, rows: u32) {
        let _ = self.master.resize(size(cols, rows));
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.killer.kill();
    }
}
