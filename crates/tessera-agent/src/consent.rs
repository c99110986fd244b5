//! Asking the person at the machine.
//!
//! Anything but an explicit yes is a no: an empty answer, a timeout, no
//! terminal, a consent command that fails or does not answer in time.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

/// How consent is asked for.
#[derive(Clone, Debug, Default)]
pub enum ConsentMode {
    /// On the controlling terminal (`/dev/tty`).
    #[default]
    Terminal,
    /// By running a program: exit status 0 means yes. It gets
    /// `TESSERA_TECHNICIAN`, `TESSERA_ACCESS` and `TESSERA_SESSION_ID`.
    Command(PathBuf),
    /// Nobody to ask (unattended): always no.
    Deny,
}

/// The question, as the person reads it.
pub fn prompt(technician: &str, access: &str) -> String {
    let verb = if access == "control" {
        "control"
    } else {
        "view"
    };
    format!("Allow {technician} to {verb} this computer? [y/N] ")
}

/// Only `y` or `yes` (any case, surrounding spaces ignored) is a yes.
pub fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Asks, waiting at most `timeout`.
pub async fn ask(
    mode: &ConsentMode,
    technician: &str,
    access: &str,
    session_id: &str,
    timeout: Duration,
) -> bool {
    match mode {
        ConsentMode::Deny => false,
        ConsentMode::Terminal => {
            let question = prompt(technician, access);
            let asked = tokio::task::spawn_blocking(move || ask_terminal(&question));
            matches!(
                tokio::time::timeout(timeout, asked).await,
                Ok(Ok(Some(true)))
            )
        }
        ConsentMode::Command(program) => {
            let child = tokio::process::Command::new(program)
                .env("TESSERA_TECHNICIAN", technician)
                .env("TESSERA_ACCESS", access)
                .env("TESSERA_SESSION_ID", session_id)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .status();
            matches!(tokio::time::timeout(timeout, child).await, Ok(Ok(status)) if status.success())
        }
    }
}

/// `None` when there is no terminal to ask on.
fn ask_terminal(question: &str) -> Option<bool> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let mut out = tty.try_clone().ok()?;
    write!(out, "\n{question}").ok()?;
    out.flush().ok()?;
    let mut line = String::new();
    std::io::BufReader::new(tty).read_line(&mut line).ok()?;
    Some(is_yes(&line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_explicit_yes_is_yes() {
        for yes in ["y", "Y", "yes", " YES \n"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yep", "sure", "y y"] {
            assert!(!is_yes(no), "{no:?}");
        }
        assert_eq!(
            prompt("Alice", "control"),
            "Allow Alice to control this computer? [y/N] "
        );
    }

    #[tokio::test]
    async fn a_consent_command_decides_by_exit_status_and_in_time() {
        let t = Duration::from_secs(5);
        assert!(
            ask(
                &ConsentMode::Command("/bin/true".into()),
                "a",
                "control",
                "s",
                t
            )
            .await
        );
        assert!(
            !ask(
                &ConsentMode::Command("/bin/false".into()),
                "a",
                "control",
                "s",
                t
            )
            .await
        );
        assert!(
            !ask(
                &ConsentMode::Command("/nonexistent/prog".into()),
                "a",
                "control",
                "s",
                t
            )
            .await
        );
        assert!(!ask(&ConsentMode::Deny, "a", "control", "s", t).await);
    }
}
