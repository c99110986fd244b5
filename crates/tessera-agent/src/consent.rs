//! Asking the person at the machine.
//!
//! Anything but an explicit yes is a no: an empty answer, a timeout, no
//! terminal, a consent command that fails or does not answer in time.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tessera_core::kinds::SessionAccess;

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

/// The question, as the person reads it: `access` is the session's
/// (`view` or `control`); anything but control is asked as view.
pub fn prompt(technician: &str, access: &str) -> String {
    let verb = if access.parse() == Ok(SessionAccess::Control) {
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

/// Whether `mode` can ask anybody at all: not when told to deny, nor on a
/// terminal when the process has none. A "no" from a mode that cannot ask
/// is reported as unavailable, not as a person declining.
pub fn can_ask(mode: &ConsentMode) -> bool {
    match mode {
        ConsentMode::Deny => false,
        ConsentMode::Terminal => crate::terminal::typed().is_some(),
        ConsentMode::Command(_) => true,
    }
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
        ConsentMode::Terminal => ask_terminal(&prompt(technician, access), timeout).await,
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

/// One question at a time; answers typed before it was asked are dropped.
/// The terminal is read by the one reader in [`crate::terminal`].
async fn ask_terminal(question: &str, timeout: Duration) -> bool {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(typed) = crate::terminal::typed() else {
        return false;
    };
    let Ok(mut out) = std::fs::OpenOptions::new().write(true).open("/dev/tty") else {
        return false;
    };
    let question = question.to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        let typed = typed.lock().ok()?;
        crate::terminal::forget_typed_ahead(&typed);
        write!(out, "\n{question}").ok()?;
        out.flush().ok()?;
        crate::terminal::read_line(&typed, timeout)
    })
    .await;
    matches!(answer, Ok(Some(line)) if is_yes(&line))
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
        let command = async |prog: &str| {
            ask(&ConsentMode::Command(prog.into()), "a", "control", "s", t).await
        };
        assert!(command("/bin/true").await);
        assert!(!command("/bin/false").await);
        assert!(!command("/nonexistent/prog").await);
        assert!(!ask(&ConsentMode::Deny, "a", "control", "s", t).await);
    }
}
