//! `tessera session shell PEER`: a shell on a trusted device that granted
//! this one `shell`, end to end encrypted (an automatic session with the
//! shell scope; the peer's agent runs its login shell in a PTY). The
//! terminal behaves as in `tessera connect` (`crate::terminal`).

use std::process::ExitCode;

use clap::Args;
use tessera_agent::auto::{AutoSession, Event};

use crate::output::note;
use crate::terminal::{self, Remote, RemoteTerminal};

#[derive(Args, Debug)]
pub(crate) struct ShellArgs {
    /// The trusted device to open a shell on (its id).
    pub(crate) peer: String,
}

/// Why a peer did not join, in words, with what to do about it.
fn refusal(peer: &str, word: &str) -> String {
    let hint = match word {
        "scope_missing" => format!(
            "it has not granted this device `shell`; on {peer} run \
             `tessera grant add <this device> --scope shell`"
        ),
        "no_grant" | "grant_revoked" | "grant_expired" => format!(
            "it has no live grant for this device; on {peer} run \
             `tessera grant add <this device> --scope shell`"
        ),
        "offline" => "it is offline (is `tessera agent run` running there?)".to_owned(),
        "relay_unavailable" => "it is connected to another server node, which this one cannot \
             reach right now; try again in a moment"
            .to_owned(),
        "not_mutually_trusted" => {
            "the two devices do not trust each other yet (`tessera trust add` on both)".to_owned()
        }
        _ => "see `tessera grant list` and `tessera trust show` on both devices".to_owned(),
    };
    format!("{peer} refused the shell ({word}): {hint}")
}

/// Runs the shell once the session is set up; ends the session on every
/// way out (the peer then kills the shell and all it started).
pub(crate) async fn run(mut session: AutoSession, args: &ShellArgs) -> anyhow::Result<ExitCode> {
    if session.joined().is_empty() {
        let word = session
            .refusals
            .first()
            .map(|(_, r)| r.clone())
            .or_else(|| {
                session
                    .outcomes
                    .iter()
                    .find(|o| o.outcome != "joined")
                    .map(|o| o.outcome.clone())
            })
            .unwrap_or_else(|| "did_not_join".to_owned());
        session.end().await;
        note!("{}", refusal(&args.peer, &word));
        return Ok(ExitCode::from(2));
    }
    note!(
        "Shell on {} (session {}), end to end encrypted. Ctrl-] disconnects.\r",
        args.peer,
        session.session_id
    );
    let (cols, rows) = terminal::size().unwrap_or((80, 24));
    session.open_shell(cols, rows).await?;
    let mut remote = E2eShell {
        session,
        then: None,
    };
    let done = terminal::attach(&mut remote).await;
    remote.session.end().await;
    note!("\r\n{}", done.ending);
    Ok(done.exit_code())
}

/// The session as the remote end of this terminal.
struct E2eShell {
    session: AutoSession,
    /// Said once the exit status was passed on.
    then: Option<String>,
}

impl RemoteTerminal for E2eShell {
    async fn next(&mut self) -> Remote {
        if let Some(why) = self.then.take() {
            return Remote::Ended(why);
        }
        loop {
            return match self.session.next_event().await {
                Ok(Some(Event::Output { data, .. })) => Remote::Output(data.to_vec()),
                Ok(Some(Event::ShellExited {
                    exit_status: Some(status),
                    ..
                })) => {
                    self.then = Some(format!("the remote shell exited with status {status}"));
                    Remote::Exited(Some(status))
                }
                Ok(Some(Event::ShellExited { reason, .. })) => {
                    Remote::Ended(format!("the remote shell ended: {reason}"))
                }
                Ok(Some(Event::Left { member, reason })) => {
                    Remote::Ended(format!("{member} left the session ({reason})"))
                }
                Ok(Some(Event::Ended { code, reason })) => {
                    Remote::Ended(format!("session ended ({code}): {reason}"))
                }
                Ok(Some(Event::Ack { .. })) => continue,
                Ok(None) => Remote::Ended("the connection to the server was lost".to_owned()),
                Err(e) => Remote::Ended(format!("the session failed: {e}")),
            };
        }
    }

    async fn input(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.session.shell_input(bytes).await.map_err(Into::into)
    }

    async fn resize(&mut self, cols: u16, rows: u16) {
        let _ = self.session.shell_resize(cols, rows).await;
    }

    async fn detach(&mut self) -> String {
        "disconnected (Ctrl-])".to_owned()
    }
}
