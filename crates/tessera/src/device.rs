//! The device's own commands, run beside its agent (same state dir):
//! `trust`, `grant`, `session create` and `send`.

use crate::output::{note, say};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use tessera_agent::auto::{AutoError, AutoSession, Event};
use tessera_agent::control::Credentials;
use tessera_agent::trust::{self, TrustStore, Verified};
use tessera_agent::AgentState;
use tessera_client::lookup::Candidate;
use tessera_core::trust::{fingerprint, fingerprint_display, key_from_hex, Scope};
use tessera_core::{Clock, SystemClock};

use crate::{output, progress};

#[derive(Args, Debug)]
pub(crate) struct StateDir {
    /// The agent's state directory (default: ~/.local/share/tessera-agent).
    #[arg(long, env = "TESSERA_AGENT_STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,
}

impl StateDir {
    fn state(&self) -> AgentState {
        AgentState::new(
            self.state_dir
                .clone()
                .unwrap_or_else(AgentState::default_dir),
        )
    }
}

#[derive(Args, Debug)]
pub(crate) struct TrustArgs {
    #[command(flatten)]
    dir: StateDir,
    #[command(subcommand)]
    command: TrustCommand,
}

#[derive(Subcommand, Debug)]
enum TrustCommand {
    /// Verify another device of yours and pin its key. Run it on both
    /// devices at about the same time and compare the codes they show.
    Add {
        /// The other device: its name, id (grouped or not) or an id prefix.
        device: String,
        /// What to call the peer here (default: its name on the server).
        #[arg(long)]
        name: Option<String>,
    },
    /// Devices this one trusts.
    List(Json),
    /// One trusted device: its pinned key and the grants between you.
    Show {
        /// The trusted device: its name, id or an id prefix.
        device: String,
        #[command(flatten)]
        out: Json,
    },
    /// Stop trusting a device: unpin it and withdraw any grant to it.
    Remove {
        /// The trusted device: its name, id or an id prefix.
        device: String,
    },
    /// Check a peer's current key against the pin; after it rotated, show
    /// the old and new fingerprints and ask before accepting the new one.
    Verify {
        /// The trusted device: its name, id or an id prefix.
        device: String,
    },
}

#[derive(Args, Debug)]
pub(crate) struct Json {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct GrantArgs {
    #[command(flatten)]
    dir: StateDir,
    #[command(subcommand)]
    command: GrantCommand,
}

#[derive(Subcommand, Debug)]
enum GrantCommand {
    /// Let DEVICE (a trusted peer) join this one into its automatic
    /// sessions with no code or prompt.
    Add {
        /// The trusted device to let in (name, id or id prefix).
        device: String,
        /// What its sessions may carry (comma-separated: files, shell).
        #[arg(long, value_delimiter = ',', default_value = "files")]
        scope: Vec<String>,
        /// How long the grant lasts, e.g. `30d` (1 minute to 1 year).
        #[arg(long, default_value = "30d", value_parser = crate::duration::grant_expiry)]
        expires: Duration,
    },
    /// Grants this device made and received, with their state and last use.
    List(Json),
    /// Re-issue the grant to DEVICE with the same scopes and a new expiry.
    Renew {
        /// The device the grant is to (name, id or id prefix).
        device: String,
        /// How long the renewed grant lasts, e.g. `30d` (1 minute to 1 year).
        #[arg(long, default_value = "30d", value_parser = crate::duration::grant_expiry)]
        expires: Duration,
    },
    /// Take back the grant to DEVICE.
    Revoke {
        /// The device the grant is to (name, id or id prefix).
        device: String,
    },
}

#[derive(Args, Debug)]
pub(crate) struct SessionArgs {
    #[command(flatten)]
    dir: StateDir,
    #[command(subcommand)]
    command: SessionCommand,
}

#[derive(Subcommand, Debug)]
enum SessionCommand {
    /// Start an end-to-end encrypted session with trusted devices that
    /// granted this one automatic join. Lines typed are sent to every
    /// member; end with Ctrl-D or Ctrl-C.
    Create {
        /// The members (names, ids or id prefixes, comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        with: Vec<String>,
        /// What the session carries: files or shell.
        #[arg(long, default_value = "files")]
        scope: String,
        /// Start only if every member joins.
        #[arg(long)]
        all_or_nothing: bool,
        #[command(flatten)]
        out: Json,
    },
    /// Open a shell on a trusted device that granted this one `shell`, end
    /// to end encrypted, in this terminal (Ctrl-] disconnects).
    Shell(crate::session_shell::ShellArgs),
}

#[derive(Args, Debug)]
pub(crate) struct SendArgs {
    #[command(flatten)]
    dir: StateDir,
    /// The receiving devices (names, ids or id prefixes, comma-separated).
    to: String,
    /// Files and folders to send.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// A device as typed (name, id grouped or not, or an id prefix), resolved
/// through this device's trust store (its local names first) and the peers
/// it can see on the server. The one parser every device command uses.
async fn peer_id(state: &AgentState, creds: &Credentials, typed: &str) -> anyhow::Result<String> {
    let known: Vec<Candidate> = TrustStore::load(state)?
        .peers
        .iter()
        .map(|(id, p)| Candidate {
            id: id.clone(),
            name: p.name.clone(),
        })
        .collect();
    Ok(creds.client()?.resolve_peer(typed, &known).await?)
}

async fn peer_ids(
    state: &AgentState,
    creds: &Credentials,
    typed: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(typed.len());
    for t in typed {
        ids.push(peer_id(state, creds, t).await?);
    }
    Ok(ids)
}

fn credentials(state: &AgentState) -> anyhow::Result<Credentials> {
    Credentials::load(state).context("this device is not enrolled (run `tessera agent enroll`)")
}

/// Asks `question` and waits for the answer line (only `yes` or `y` is
/// yes) or Ctrl-C (`None`).
///
/// Once any `tokio::signal::ctrl_c` has been awaited, the process no
/// longer dies on SIGINT: tokio's handler takes it for good. A blocking
/// read here would then swallow Ctrl-C, so the line is read on a thread of
/// its own (a plain thread, which does not hold the process open at exit
/// as a blocking task would) while this waits for either.
async fn ask(question: &str) -> anyhow::Result<Option<bool>> {
    output::prompt(&format!("{question} "));
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = std::io::stdin().lock().read_line(&mut line).map(|_| line);
        let _ = tx.send(read);
    });
    tokio::select! {
        read = rx => {
            let line = read.context("the terminal reader stopped")??;
            Ok(Some(is_yes(&line)))
        }
        _ = tokio::signal::ctrl_c() => Ok(None),
    }
}

/// Whether an answer line says yes.
fn is_yes(line: &str) -> bool {
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

fn parse_scopes(names: &[String]) -> anyhow::Result<Vec<Scope>> {
    let mut scopes = Vec::new();
    for n in names {
        let s = Scope::parse(n.trim())
            .ok_or_else(|| anyhow!("unknown scope {n:?}: use files or shell"))?;
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    if scopes.is_empty() {
        bail!("name at least one scope");
    }
    Ok(scopes)
}

fn short(fp: &str) -> String {
    fingerprint_display(fp)
}

pub(crate) async fn trust(args: TrustArgs) -> anyhow::Result<ExitCode> {
    let state = args.dir.state();
    match args.command {
        TrustCommand::Add { device, name } => {
            let creds = credentials(&state)?;
            let device = peer_id(&state, &creds, &device).await?;
            say!("Waiting for {device} to run `tessera trust add` for this device…");
            // Interrupted or failed, the attempt withdraws what it opened,
            // so the other device's next `trust add` does not answer it.
            let x = tokio::select! {
                x = trust::exchange(&creds, &device) => match x {
                    Ok(x) => x,
                    Err(e) => {
                        trust::withdraw_open(&creds, &device).await;
                        return Err(e.into());
                    }
                },
                _ = tokio::signal::ctrl_c() => {
                    trust::withdraw_open(&creds, &device).await;
                    say!("\nStopped; nothing was trusted.");
                    return Ok(ExitCode::from(130));
                }
            };
            say!(
                "\nBoth devices now show a code. This one shows:\n\n    {}\n\n\
                 Its fingerprint for {} is {}.",
                x.sas,
                x.peer,
                short(&x.peer_fingerprint)
            );
            match ask("Does the other device show the same code? Type yes to trust it:").await? {
                Some(true) => {}
                Some(false) => {
                    say!("Not trusted. If the codes differ, someone may be in the middle: do not retry on this network.");
                    return Ok(ExitCode::from(2));
                }
                None => {
                    trust::withdraw_open(&creds, &device).await;
                    say!("\nStopped; nothing was trusted.");
                    return Ok(ExitCode::from(130));
                }
            }
            let name = match name {
                Some(n) => n,
                None => creds.client()?.peer(&x.peer).await?.name,
            };
            let att = trust::confirm(&state, &creds, &x, &name).await?;
            say!(
                "Trusted {name} ({}).{}",
                x.peer,
                if att.mutual {
                    " It trusts this device too."
                } else {
                    " Waiting for it to confirm on its side."
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        TrustCommand::List(out) => {
            let store = TrustStore::load(&state)?;
            if out.json {
                return output::json(&store.peers).map(|_| ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = store
                .peers
                .iter()
                .map(|(id, p)| {
                    vec![
                        p.name.clone(),
                        pin_fingerprint(&p.ed25519),
                        p.method.clone(),
                        p.verified_at.to_rfc3339(),
                        id.clone(),
                    ]
                })
                .collect();
            output::table(
                &["NAME", "FINGERPRINT", "VERIFIED BY", "SINCE", "ID"],
                &rows,
            );
            Ok(ExitCode::SUCCESS)
        }
        TrustCommand::Show { device, out } => {
            let creds = credentials(&state)?;
            let device = peer_id(&state, &creds, &device).await?;
            let store = TrustStore::load(&state)?;
            let pin = store
                .peers
                .get(&device)
                .ok_or_else(|| anyhow!("{device} is not a trusted peer"))?;
            let grants: Vec<_> = creds
                .client()?
                .my_grants()
                .await?
                .into_iter()
                .filter(|g| g.granter == device || g.grantee == device)
                .collect();
            if out.json {
                #[derive(serde::Serialize)]
                struct Shown<'a> {
                    device: &'a str,
                    pin: &'a trust::Pin,
                    grants: &'a [tessera_core::api::GrantView],
                }
                return output::json(&Shown {
                    device: &device,
                    pin,
                    grants: &grants,
                })
                .map(|_| ExitCode::SUCCESS);
            }
            say!("{} ({device})", pin.name);
            say!("  pinned key   {}", pin_fingerprint(&pin.ed25519));
            say!(
                "  verified     {} by {}",
                pin.verified_at.to_rfc3339(),
                pin.method
            );
            output::grants(&grants);
            Ok(ExitCode::SUCCESS)
        }
        TrustCommand::Remove { device } => {
            let creds = credentials(&state)?;
            let device = peer_id(&state, &creds, &device).await?;
            trust::remove(&state, &creds, &device).await?;
            say!("{device} is no longer trusted; any grant to it is revoked.");
            Ok(ExitCode::SUCCESS)
        }
        TrustCommand::Verify { device } => {
            let creds = credentials(&state)?;
            let device = peer_id(&state, &creds, &device).await?;
            match trust::verify(&state, &creds, &device).await? {
                Verified::Unchanged => {
                    say!("{device} still has the key pinned here.");
                    Ok(ExitCode::SUCCESS)
                }
                Verified::Changed {
                    old_fingerprint,
                    new,
                    chained,
                } => {
                    say!(
                        "{} ({device}) has a new identity key.\n  pinned  {}\n  now     {}",
                        new.name,
                        short(&old_fingerprint),
                        short(&new.fingerprint)
                    );
                    let Some(identity) = chained else {
                        say!(
                            "The new key is NOT signed by the pinned one. Do not accept it: \
                             remove the peer and verify again with `tessera trust add`."
                        );
                        return Ok(ExitCode::from(2));
                    };
                    say!("The pinned key signed the change.");
                    match ask("Accept the new key (and re-issue your grant to it)? Type yes:")
                        .await?
                    {
                        Some(true) => {}
                        answer => {
                            say!("Kept the old pin; sessions with {device} stay refused.");
                            // Ctrl-C ends it as an interrupted command does.
                            let code = if answer.is_none() { 130 } else { 2 };
                            return Ok(ExitCode::from(code));
                        }
                    }
                    trust::accept_new_key(&state, &creds, &device, &identity).await?;
                    say!("Pinned the new key.");
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}

fn pin_fingerprint(ed_hex: &str) -> String {
    key_from_hex(ed_hex)
        .map(|k| short(&fingerprint(&k)))
        .unwrap_or_else(|| "(damaged pin)".into())
}

pub(crate) async fn grant(args: GrantArgs) -> anyhow::Result<ExitCode> {
    let state = args.dir.state();
    let creds = credentials(&state)?;
    match args.command {
        GrantCommand::Add {
            device,
            scope,
            expires,
        } => {
            let scopes = parse_scopes(&scope)?;
            let device = peer_id(&state, &creds, &device).await?;
            let g = trust::grant(&state, &creds, &device, &scopes, expires).await?;
            say!(
                "{} may now join this device into its sessions ({}) until {}.",
                g.grantee_name.as_deref().unwrap_or(&g.grantee),
                g.scopes.join(","),
                g.expires_at
            );
            Ok(ExitCode::SUCCESS)
        }
        GrantCommand::List(out) => {
            let grants = creds.client()?.my_grants().await?;
            if out.json {
                return output::json(&grants).map(|_| ExitCode::SUCCESS);
            }
            output::grants(&grants);
            Ok(ExitCode::SUCCESS)
        }
        GrantCommand::Renew { device, expires } => {
            let device = peer_id(&state, &creds, &device).await?;
            let store = TrustStore::load(&state)?;
            let scopes = store
                .grant_to(&device)
                .map(|g| g.statement.scopes.clone())
                .ok_or_else(|| {
                    anyhow!("no live grant to {device}; add one with `tessera grant add`")
                })?;
            let g = trust::grant(&state, &creds, &device, &scopes, expires).await?;
            say!("Renewed until {}.", g.expires_at);
            Ok(ExitCode::SUCCESS)
        }
        GrantCommand::Revoke { device } => {
            let device = peer_id(&state, &creds, &device).await?;
            trust::revoke_grant(&state, &creds, &device).await?;
            say!("{device} can no longer join this device automatically.");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn outcome_rows(s: &AutoSession) -> Vec<Vec<String>> {
    s.outcomes
        .iter()
        .map(|o| {
            let refused = s
                .refusals
                .iter()
                .find(|(d, _)| *d == o.device_id)
                .map(|(_, r)| r.clone());
            let outcome = match refused {
                Some(r) => format!("refused: {r}"),
                None => o.outcome.clone(),
            };
            vec![o.device_id.clone(), outcome]
        })
        .collect()
}

async fn open_session(
    state: &AgentState,
    members: &[String],
    scope: Scope,
    all_or_nothing: bool,
) -> anyhow::Result<AutoSession> {
    let creds = credentials(state)?;
    let members = peer_ids(state, &creds, members).await?;
    let store = TrustStore::load(state)?;
    Ok(AutoSession::create(&creds, &store, &members, scope, all_or_nothing).await?)
}

pub(crate) async fn session(args: SessionArgs) -> anyhow::Result<ExitCode> {
    let state = args.dir.state();
    let (with, scope, all_or_nothing, out) = match args.command {
        SessionCommand::Create {
            with,
            scope,
            all_or_nothing,
            out,
        } => (with, scope, all_or_nothing, out),
        SessionCommand::Shell(shell) => {
            let s = open_session(
                &state,
                std::slice::from_ref(&shell.peer),
                Scope::Shell,
                true,
            )
            .await?;
            return crate::session_shell::run(s, &shell).await;
        }
    };
    let scope =
        Scope::parse(&scope).ok_or_else(|| anyhow!("unknown scope {scope:?}: files or shell"))?;
    let mut s = open_session(&state, &with, scope, all_or_nothing).await?;
    let joined = s.joined();
    if out.json {
        #[derive(serde::Serialize)]
        struct Created<'a> {
            session_id: &'a str,
            members: Vec<serde_json::Value>,
            joined: &'a [String],
        }
        let members = outcome_rows(&s)
            .into_iter()
            .map(|r| serde_json::json!({"device_id": r[0], "outcome": r[1]}))
            .collect();
        output::json(&Created {
            session_id: &s.session_id,
            members,
            joined: &joined,
        })?;
    } else {
        say!("Session {}", s.session_id);
        output::table(&["MEMBER", "OUTCOME"], &outcome_rows(&s));
    }
    if joined.is_empty() {
        s.end().await;
        note!("No member joined; the session is closed.");
        return Ok(ExitCode::from(2));
    }
    if !out.json {
        say!("End-to-end keys set with {} member(s). Type lines to send them; Ctrl-D ends the session.", joined.len());
    }
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(l) => s.send_text(&l).await?,
                None => break,
            },
            event = s.next_event() => match event? {
                Some(Event::Left { member, reason }) => {
                    note!("{member} left ({reason}); the others moved to a new key.");
                    if s.joined().is_empty() {
                        note!("No member is left.");
                        break;
                    }
                }
                Some(Event::Ended { code, reason }) => {
                    note!("The session ended ({code}) {reason}");
                    return Ok(ExitCode::SUCCESS);
                }
                Some(Event::Ack { .. } | Event::Output { .. } | Event::ShellExited { .. }) => {}
                None => return Err(anyhow!("the connection to the server closed")),
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    s.end().await;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let state = args.dir.state();
    let items = tessera_agent::files::walk(&args.paths).context("cannot read what to send")?;
    let to: Vec<String> = args
        .to
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if to.is_empty() {
        bail!("name the device to send to");
    }
    let total: u64 = items.iter().map(|i| i.size).sum();
    let mut s = open_session(&state, &to, Scope::Files, false).await?;
    let joined = s.joined();
    if joined.len() < to.len() {
        output::table(&["MEMBER", "OUTCOME"], &outcome_rows(&s));
        s.end().await;
        note!("Not sent: not every receiver joined.");
        return Ok(ExitCode::from(2));
    }
    let started = SystemClock.now();
    let sent = tokio::select! {
        r = s.send_files(&items, progress::sending(&items, !args.quiet)) => r,
        _ = tokio::signal::ctrl_c() => Err(AutoError::Transfer("cancelled".into())),
    };
    match sent {
        Ok(delivery) => {
            let bytes = delivery.bytes;
            let secs = SystemClock.now().since(started).as_secs_f64().max(0.001);
            say!(
                "Sent {} file(s), {} bytes, to {} in {secs:.1} s ({:.1} MB/s); every receiver verified the BLAKE3 hashes.",
                items.len(),
                bytes,
                joined.join(", "),
                bytes as f64 / secs / 1e6
            );
            let store = TrustStore::load(&state).ok();
            let name_of = |id: &str| match store.as_ref().and_then(|t| t.peers.get(id)) {
                Some(pin) if !pin.name.is_empty() => format!("{} ({id})", pin.name),
                _ => id.to_owned(),
            };
            for line in delivery.notes(name_of) {
                say!("{line}");
            }
            s.end().await;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let _ = s.cancel(&e.to_string()).await;
            s.end().await;
            note!("Transfer of {total} bytes failed: {e}. Receivers kept no partial file.");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_yes;

    #[test]
    fn only_y_or_yes_in_any_case_is_a_yes() {
        for yes in ["y\n", "yes\n", " YES \r\n", "Y"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n\n", "no", "yess", "y e s", "ja"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }
}
