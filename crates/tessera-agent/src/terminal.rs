//! The person's own terminal (`/dev/tty`), as the one-time support agent
//! uses it: the consent question, the keystrokes of a shell mirrored to a
//! view-only session, raw mode while that shell runs, and the person's
//! wish to end the session.
//!
//! One thread reads the terminal for the whole process, so whoever reads
//! next (the consent question, then the mirrored shell) gets every byte,
//! and an abandoned reader cannot swallow a later answer.

use std::io::Read;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Chunks read ahead of their reader: a person types far less than this;
/// when full, the reading thread waits (the terminal buffers meanwhile).
const TYPED_AHEAD: usize = 256;

/// Bytes typed on the terminal; `None` if there is no terminal.
pub fn typed() -> Option<&'static Mutex<Receiver<Vec<u8>>>> {
    static TYPED: std::sync::OnceLock<Option<Mutex<Receiver<Vec<u8>>>>> =
        std::sync::OnceLock::new();
    TYPED
        .get_or_init(|| {
            let mut tty = std::fs::File::open("/dev/tty").ok()?;
            let (tx, rx) = std::sync::mpsc::sync_channel(TYPED_AHEAD);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match tty.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send(buf[..n].to_vec()).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            Some(Mutex::new(rx))
        })
        .as_ref()
}

/// Drops what was typed before now (an answer typed before its question).
pub fn forget_typed_ahead(typed: &Receiver<Vec<u8>>) {
    while typed.try_recv().is_ok() {}
}

/// The next line typed, waiting at most `timeout` (blocking).
pub fn read_line(typed: &Receiver<Vec<u8>>, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match typed.recv_timeout(left) {
            Ok(chunk) => {
                if let Some(at) = chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
                    line.extend_from_slice(&chunk[..at]);
                    return Some(String::from_utf8_lossy(&line).into_owned());
                }
                line.extend_from_slice(&chunk);
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// The terminal's size (columns, rows), if there is one.
pub fn size() -> Option<(u16, u16)> {
    crossterm::terminal::size().ok()
}

/// Raw mode while it lives: keystrokes go to the mirrored shell as typed
/// (Ctrl-C included), and the terminal is put back however we leave.
pub struct RawMode(bool);

impl RawMode {
    pub fn enter() -> RawMode {
        let on = crossterm::terminal::enable_raw_mode().is_ok();
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

/// The person asked to end the session (Ctrl-] in a mirrored shell).
static END: tokio::sync::Notify = tokio::sync::Notify::const_new();

pub fn request_end() {
    END.notify_one();
}

/// Resolves when the person asks to end the session.
pub async fn end_requested() {
    END.notified().await;
}

/// What the person types to end the session (control mode, where nothing
/// else reads the terminal once they answered).
pub const END_WORD: &str = "end";

/// Whether a typed line asks to end the session: the word alone, in any
/// case, spaces around it allowed.
pub fn is_end_word(line: &str) -> bool {
    line.trim().eq_ignore_ascii_case(END_WORD)
}

/// Watches what the person types, line by line, and asks to end the
/// session when a line is [`END_WORD`]; other lines are ignored. For the
/// control mode only: it takes the terminal's input for good (a mirrored
/// shell needs every key, and there Ctrl-] or `exit` ends it).
pub fn end_on_typed_word() {
    let Some(typed) = typed() else {
        return;
    };
    std::thread::spawn(move || {
        let Ok(typed) = typed.lock() else { return };
        let mut line = Vec::new();
        while let Ok(chunk) = typed.recv() {
            for b in chunk {
                if b == b'\n' || b == b'\r' {
                    if is_end_word(&String::from_utf8_lossy(&line)) {
                        request_end();
                        return;
                    }
                    line.clear();
                } else if line.len() < 256 {
                    line.push(b);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_alone_on_a_line_ends_the_session() {
        for yes in ["end", "END", "  end ", "End"] {
            assert!(is_end_word(yes), "{yes:?}");
        }
        for no in ["", "ending", "end now", "the end", "e n d"] {
            assert!(!is_end_word(no), "{no:?}");
        }
    }
}
