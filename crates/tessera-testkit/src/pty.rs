//! A `tessera` command in a pseudo-terminal, driven the way a person at a
//! terminal drives it: what it draws is read back as text, keys are typed,
//! the window is resized.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};

/// A process on the slave side of a fresh pseudo-terminal.
pub struct Terminal {
    master: Box<dyn MasterPty + Send>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    screen: Arc<Mutex<Vec<u8>>>,
    /// Set once the reader has seen the terminal close: everything the
    /// program wrote is in `screen`.
    drained: Arc<AtomicBool>,
}

impl Terminal {
    /// Starts the `tessera` binary with `args` and `env` in a 24×80 terminal.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Terminal {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: 24,
                cols: 80,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("openpty");
        let mut cmd = CommandBuilder::new(crate::tessera_bin());
        cmd.args(args);
        cmd.env("TERM", "xterm-256color");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = pty.slave.spawn_command(cmd).expect("spawn in the terminal");
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().expect("pty reader");
        let writer = pty.master.take_writer().expect("pty writer");
        let screen: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = screen.clone();
        let drained = Arc::new(AtomicBool::new(false));
        let done = drained.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
            done.store(true, Ordering::Release);
        });
        Terminal {
            master: pty.master,
            writer,
            child,
            screen,
            drained,
        }
    }

    /// Everything the program has written to the terminal so far, as text
    /// (escape sequences included).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Waits until the output contains `needle`; panics with the output
    /// after `limit`.
    pub async fn wait_for(&self, needle: &str, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let out = self.output();
            if out.contains(needle) {
                return out;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("the terminal never showed {needle:?}; it shows:\n{out}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `bytes` (`b"\x1d"` is Ctrl-], `b"\x03"` Ctrl-C, `b"\r"` Enter).
    pub fn type_bytes(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .expect("type into the terminal");
        let _ = self.writer.flush();
    }

    /// Resizes the window, as dragging its corner does (SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) {
        self.master
            .resize(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("resize");
    }

    /// The exit code once the program ended within `limit`; `None` if it is
    /// still running.
    pub async fn exit_code(&mut self, limit: Duration) -> Option<u32> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // What the program wrote just before it exited may still be
                // in the terminal: read it all before the caller looks at
                // `output()` (bounded, in case a child of its own holds the
                // terminal open).
                let drain_by = tokio::time::Instant::now() + Duration::from_secs(2);
                while !self.drained.load(Ordering::Acquire)
                    && tokio::time::Instant::now() < drain_by
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                return Some(status.exit_code());
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.process_id()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}
