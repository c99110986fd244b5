//! `tessera agent`: enroll this device, run its control channel, rotate its
//! key.

use crate::output::say;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use tessera_agent::consent::ConsentMode;
use tessera_agent::control::{rotate_device_key, Exit, RunOptions};
use tessera_agent::enroll::{self, EnrollOptions};
use tessera_agent::AgentState;
use tessera_core::api::SecretString;
use tessera_core::codes::normalise_user_code;
use tessera_core::kinds::EndCode;

/// Exit code when the server revoked this device.
pub(crate) const EXIT_REVOKED: u8 = 3;

#[derive(Args, Debug)]
pub(crate) struct AgentArgs {
    /// Where the identity key, device key and settings live
    /// (default: ~/.local/share/tessera-agent).
    #[arg(long, env = "TESSERA_AGENT_STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: AgentCommand,
}

/// How the managed agent answers consent requests.
#[derive(Args, Debug, Default)]
struct SessionArgs {
    /// Decide consent (when the server's policy asks for it) by running
    /// this program: exit 0 = allow. Without it, such sessions are refused.
    #[arg(long)]
    consent_command: Option<PathBuf>,
    /// The shell sessions open (default: $SHELL).
    #[arg(long)]
    shell: Option<String>,
    /// Where files trusted devices send (`tessera send`) are saved
    /// (default: Tessera in your download folder, e.g. ~/Downloads/Tessera).
    #[arg(long, value_name = "DIR", env = "TESSERA_INBOX")]
    inbox: Option<PathBuf>,
    /// The X display screen sessions show (default: $DISPLAY).
    #[arg(long)]
    display: Option<String>,
}

/// `tessera agent run`: how sessions are served, and where to connect.
#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    session: SessionArgs,
    /// Other servers to use besides the one this device enrolled with:
    /// nodes on the same database, tried in turn (with a short, growing,
    /// jittered wait) whenever the current one cannot be reached or goes
    /// away. Repeat the flag or separate URLs with commas. A name that
    /// resolves to several addresses has each of them tried.
    #[arg(long = "server", value_name = "URL", env = "TESSERA_SERVER", value_delimiter = ',', value_parser = server_url)]
    servers: Vec<String>,
}

/// A server URL as the agent takes it (`http://` or `https://`), refused
/// with the URL it probably meant.
fn server_url(s: &str) -> Result<String, String> {
    tessera_client::parse_server_url(s)
        .map(|_| s.trim().to_owned())
        .map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
enum AgentCommand {
    /// Enroll this device: with --token (unattended), or by pairing, which
    /// an operator approves at the URL shown.
    Enroll(EnrollArgs),
    /// Keep this device connected to its server (or, failing it, to one
    /// of the others given with --server).
    Run(RunArgs),
    /// Replace this device's key with a new one, over the control channel.
    RotateDeviceKey,
    /// Replace this device's identity key. The old key signs the change;
    /// peers must accept it (`tessera trust verify`) before their grants
    /// work again.
    RotateKey,
    /// Let a technician help you: join one attended session with the
    /// support code they gave you. No enrollment; you will be asked first.
    Support(SupportArgs),
}

#[derive(Args, Debug)]
struct SupportArgs {
    /// Server URL.
    #[arg(long, env = "TESSERA_SERVER")]
    server: String,
    /// The code the technician gave you, `XXX-XXX-XXX`.
    #[arg(long)]
    code: String,
    /// Decide consent by running this program (exit 0 = allow) instead of
    /// asking on the terminal.
    #[arg(long)]
    consent_command: Option<PathBuf>,
    /// The shell to open (default: $SHELL).
    #[arg(long)]
    shell: Option<String>,
    /// The X display a screen session shows (default: $DISPLAY).
    #[arg(long)]
    display: Option<String>,
    /// Trust exactly the server certificate with this SHA-256 fingerprint.
    #[arg(long)]
    tls_fingerprint: Option<String>,
    /// Trust server certificates issued by the CA(s) in this PEM file.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct EnrollArgs {
    /// Server URL, e.g. https://tessera.example:8443
    #[arg(long, env = "TESSERA_SERVER")]
    server: String,
    /// An enrollment token (`etk_…`); without it, pair by device code.
    #[arg(long, env = "TESSERA_ENROLL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Name to show operators (default: the hostname).
    #[arg(long)]
    name: Option<String>,
    /// Trust exactly the server certificate with this SHA-256 fingerprint.
    #[arg(long)]
    tls_fingerprint: Option<String>,
    /// Trust server certificates issued by the CA(s) in this PEM file.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}

pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    if matches!(args.command, AgentCommand::Support(_)) {
        // The person being helped reads sentences, not the agent's log:
        // warnings only, unless TESSERA_LOG asks for more.
        let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    crate::server::init_logging(crate::server::LogFormat::Text);
    let state = AgentState::new(args.state_dir.unwrap_or_else(AgentState::default_dir));
    match args.command {
        AgentCommand::Enroll(a) => {
            let opts = EnrollOptions {
                server: a.server,
                tls_fingerprint: a.tls_fingerprint,
                ca_cert: a.ca_cert,
                name: a.name,
            };
            let id = match a.token {
                Some(t) => enroll::with_token(&state, &opts, SecretString::new(t)).await?,
                None => {
                    enroll::with_pairing(&state, &opts, |auth, id| {
                        let code = normalise_user_code(&auth.user_code).unwrap_or_default();
                        say!(
                            "To approve this device, open\n\n    {}\n\nand enter the code {} (or open {}).\n\
                             Check that the page shows this fingerprint:\n\n    {}\n\n\
                             Waiting for approval (the code expires in {} minutes)…",
                            auth.verification_uri,
                            tessera_core::codes::display_user_code(&code),
                            auth.verification_uri_complete,
                            id.grouped(),
                            auth.expires_in / 60
                        );
                    })
                    .await?
                }
            };
            say!(
                "Enrolled as device {}.\nStart it with: tessera agent run",
                id.grouped()
            );
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::Run(RunArgs {
            session: sargs,
            servers,
        }) => {
            let enrollment = state.enrollment()?;
            // The id the server knows: it names the first key, so after a
            // rotation it is not the current key's hash.
            let id = tessera_core::identity::DeviceId::parse(&enrollment.device_id)
                .map(|id| id.grouped())
                .unwrap_or_else(|_| enrollment.device_id.clone());
            let inbox = sargs
                .inbox
                .or_else(tessera_agent::auto::default_inbox)
                .unwrap_or_else(|| tessera_agent::auto::inbox_of(&state));
            let all = tessera_agent::control::failover::server_list(
                &enrollment.server,
                &enrollment.alternates,
                &servers,
            );
            let others = match all.split_first() {
                Some((_, rest)) if !rest.is_empty() => format!(" (then {})", rest.join(", ")),
                _ => String::new(),
            };
            say!(
                "tessera agent: device {id} connecting to {}{others}\nFiles sent to this device are saved in {}",
                enrollment.server,
                inbox.display()
            );
            let opts = RunOptions {
                shell: sargs.shell,
                inbox: Some(inbox),
                display: sargs.display,
                consent: match sargs.consent_command {
                    Some(p) => ConsentMode::Command(p),
                    None => ConsentMode::Deny,
                },
                alternates: servers,
                ..RunOptions::default()
            };
            let exit = tessera_agent::control::run_reporting(
                &state,
                opts,
                crate::progress::receiving(),
                crate::server::shutdown_signal(),
            )
            .await
            .context("the agent stopped")?;
            match exit {
                Exit::Shutdown => {
                    say!("tessera agent: stopped");
                    Ok(ExitCode::SUCCESS)
                }
                Exit::Revoked { code, reason } => {
                    let why = if reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {reason}")
                    };
                    say!("tessera agent: the server revoked this device ({code}){why}. Not reconnecting.");
                    Ok(ExitCode::from(EXIT_REVOKED))
                }
                Exit::SessionEnded { .. } => Ok(ExitCode::SUCCESS),
            }
        }
        AgentCommand::RotateDeviceKey => {
            let key_id = rotate_device_key(&state).await?;
            say!("Device key rotated; the new key ({key_id}) is stored and the old one revoked.");
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::RotateKey => {
            let old = tessera_core::trust::fingerprint(&state.identity()?.ed25519_public());
            let view = tessera_agent::trust::rotate_identity(&state).await?;
            say!(
                "Identity key rotated (epoch {}); the device id stays {}.\n  old fingerprint  {}\n  new fingerprint  {}\n\
                 Peers that trust this device must run `tessera trust verify {}` and accept the new key; \
                 until then their grants and sessions with this device are refused with key_mismatch.\n\
                 Restart `tessera agent run` so its connection uses the new key.",
                view.key_epoch,
                tessera_core::identity::DeviceId::parse(&view.device_id)
                    .map(|id| id.grouped())
                    .unwrap_or_else(|_| view.device_id.clone()),
                tessera_core::trust::fingerprint_display(&old),
                tessera_core::trust::fingerprint_display(&view.fingerprint),
                view.device_id
            );
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::Support(a) => support(a).await,
    }
}

async fn support(a: SupportArgs) -> anyhow::Result<ExitCode> {
    use tessera_agent::support::{self, Attended};
    use tessera_core::kinds::SessionAccess;
    let trust = crate::ctl::trust_from(a.tls_fingerprint, a.ca_cert);
    let preview = support::preview(&a.server, &trust, &a.code)
        .await
        .context("that support code is not valid")?;
    let mirror = preview.access.parse() == Ok(SessionAccess::View);
    let technician = &preview.requested_by;
    let what = if mirror {
        format!(
            "to watch: {technician} would see your own shell in this terminal, and could not type"
        )
    } else {
        format!(
            "to control: {technician} would get a shell of their own on this machine, as you, \
             and could run anything you can"
        )
    };
    say!("{technician} asked for a support session {what}. You will be asked before anything is shared.");
    let (creds, bound) = support::bind(&a.server, &trust, &a.code, None)
        .await
        .context("cannot use that support code")?;
    let consent = match a.consent_command {
        Some(p) => ConsentMode::Command(p),
        None => ConsentMode::Terminal,
    };
    let opts = RunOptions {
        shell: a.shell,
        display: a.display,
        consent,
        ..RunOptions::default()
    };
    say!("Connected; waiting for the consent prompt…");
    // What happens is said as it happens; in view mode the terminal is in
    // raw mode under the person's shell, hence the explicit line starts.
    let (notices, mut told) = tokio::sync::mpsc::channel(64);
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "this user".to_owned());
    let lead = if mirror { "\r\n" } else { "" };
    let printer = tokio::spawn(async move {
        while let Some(notice) = told.recv().await {
            say!("{lead}[tessera] {}\r", support::describe(&notice, &user));
            // Once they said yes, the terminal is theirs to type `end` in
            // (in view mode their own shell takes every key).
            if !mirror && matches!(notice, support::Notice::Answered { granted: true, .. }) {
                tessera_agent::terminal::end_on_typed_word();
            }
        }
    });
    let ended_by_person = async {
        tokio::select! {
            () = crate::server::shutdown_signal() => {}
            () = tessera_agent::terminal::end_requested() => {}
        }
    };
    let exit = support::serve_attended(
        &creds,
        &bound,
        opts,
        Attended { notices, mirror },
        ended_by_person,
    )
    .await;
    // Every notice is said before the end.
    let _ = printer.await;
    match exit? {
        Exit::SessionEnded { code, reason } => {
            say!("{lead}[tessera] {}\r", support::ended(&code, &reason));
            Ok(
                if matches!(
                    code.parse(),
                    Ok(EndCode::ConsentDenied | EndCode::ConsentTimeout)
                ) {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                },
            )
        }
        Exit::Shutdown => {
            say!("{lead}[tessera] You ended the support session; nothing more is shared.\r");
            Ok(ExitCode::SUCCESS)
        }
        Exit::Revoked { code, .. } => {
            say!("{lead}[tessera] {}\r", support::ended(&code, ""));
            Ok(ExitCode::SUCCESS)
        }
    }
}
