//! `tessera agent`: enroll this device, run its control channel, rotate its
//! key.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use tessera_agent::control::{rotate_device_key, Exit, RunOptions};
use tessera_agent::enroll::{self, EnrollOptions};
use tessera_agent::AgentState;
use tessera_core::api::SecretString;
use tessera_core::codes::normalise_user_code;

/// Exit code when the server revoked this device.
pub const EXIT_REVOKED: u8 = 3;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Where the identity key, device key and settings live
    /// (default: ~/.local/share/tessera-agent).
    #[arg(long, env = "TESSERA_AGENT_STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Subcommand, Debug)]
enum AgentCommand {
    /// Enroll this device: with --token (unattended), or by pairing, which
    /// an operator approves at the URL shown.
    Enroll(EnrollArgs),
    /// Keep this device connected to its server.
    Run,
    /// Replace this device's key with a new one, over the control channel.
    RotateDeviceKey,
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

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
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
                        println!(
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
            println!(
                "Enrolled as device {}.\nStart it with: tessera agent run",
                id.grouped()
            );
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::Run => {
            let enrollment = state.enrollment()?;
            println!(
                "tessera agent: device {} connecting to {}",
                state.identity()?.device_id().grouped(),
                enrollment.server
            );
            let exit = tessera_agent::run(&state, RunOptions::default(), shutdown_signal())
                .await
                .context("the agent stopped")?;
            match exit {
                Exit::Shutdown => {
                    println!("tessera agent: stopped");
                    Ok(ExitCode::SUCCESS)
                }
                Exit::Revoked { code, reason } => {
                    let why = if reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {reason}")
                    };
                    println!("tessera agent: the server revoked this device ({code}){why}. Not reconnecting.");
                    Ok(ExitCode::from(EXIT_REVOKED))
                }
            }
        }
        AgentCommand::RotateDeviceKey => {
            let key_id = rotate_device_key(&state).await?;
            println!(
                "Device key rotated; the new key ({key_id}) is stored and the old one revoked."
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
