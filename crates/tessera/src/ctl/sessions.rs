//! `sessions`, `support-code`, `policy`.

use crate::output::say;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use tessera_core::api::{CreateSupportCodeRequest, Policy, SessionView};

use super::{Ctx, JsonFlag};
use crate::output::{self, opt};

#[derive(Subcommand, Debug)]
pub(super) enum SessionsCommand {
    /// Open a session on an online device: its shell (default) or its
    /// screen (`--channel screen`, agents of protocol 4). Prints its id;
    /// join with `tessera connect ID` (shell) or `tessera view ID` (screen).
    Create {
        /// The device: its id, fingerprint or name.
        device: String,
        /// What the session carries.
        #[arg(long, value_enum, default_value_t = Channel::Shell)]
        channel: Channel,
        /// Ask to view only (nobody may type or click).
        #[arg(long)]
        view_only: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Sessions you may see (add --all for ended ones).
    List {
        /// Include ended sessions.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// One session.
    Show {
        /// The session's id.
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// End a session; its viewers and device are told at once.
    End {
        /// The session's id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum SupportCodeCommand {
    /// Create a support code for the person you are helping (shown once).
    Create {
        /// Ask to view only.
        #[arg(long)]
        view_only: bool,
        /// What the session carries once the person consents.
        #[arg(long, value_enum, default_value_t = Channel::Shell)]
        channel: Channel,
        /// How long it stays valid, e.g. `30m` (1 minute to 1 day).
        #[arg(long, default_value = "30m", value_parser = crate::duration::support_code_ttl)]
        ttl: Duration,
        #[command(flatten)]
        out: JsonFlag,
    },
}

/// What a session carries.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Channel {
    Shell,
    Screen,
}

impl Channel {
    fn as_str(self) -> &'static str {
        match self {
            Channel::Shell => "shell",
            Channel::Screen => "screen",
        }
    }

    /// The command that joins a session of this channel.
    fn join_command(self) -> &'static str {
        match self {
            Channel::Shell => "tessera connect",
            Channel::Screen => "tessera view",
        }
    }
}

#[derive(Subcommand, Debug)]
pub(super) enum PolicyCommand {
    /// Show the session policy.
    Show(JsonFlag),
    /// Require (or not) the device's consent for managed sessions.
    Set {
        /// `true`: a managed session starts only once the device's consent
        /// command allows it; `false`: it starts without asking.
        #[arg(long, action = clap::ArgAction::Set)]
        require_consent_for_managed: bool,
    },
}

fn rows(s: &[SessionView]) -> Vec<Vec<String>> {
    s.iter()
        .map(|s| {
            let state = match (s.state.as_str(), s.consent.as_str()) {
                ("pending", _) => "awaiting consent".to_owned(),
                (state, _) => state.to_owned(),
            };
            vec![
                s.id.clone(),
                s.origin.clone(),
                s.device_name.clone(),
                state,
                s.consent.clone(),
                s.access.clone(),
                opt(s.created_by_name.as_deref()),
                s.created_at.clone(),
                opt(s.end_reason.as_deref()),
            ]
        })
        .collect()
}

const HEADERS: [&str; 9] = [
    "ID",
    "ORIGIN",
    "DEVICE",
    "STATE",
    "CONSENT",
    "ACCESS",
    "BY",
    "CREATED",
    "ENDED BECAUSE",
];

pub(super) async fn sessions(ctx: &Ctx, cmd: SessionsCommand) -> anyhow::Result<ExitCode> {
    let c = ctx.client()?;
    match cmd {
        SessionsCommand::Create {
            device,
            channel,
            view_only,
            out,
        } => {
            let device = c.resolve_device(&device).await?;
            let s = c
                .create_session(&tessera_core::api::CreateSessionRequest {
                    device,
                    access: Some(if view_only { "view" } else { "control" }.to_owned()),
                    channel: Some(channel.as_str().to_owned()),
                })
                .await?;
            if out.json {
                output::json(&s)?;
            } else if s.state == "pending" {
                say!(
                    "Session {} on {} waits for consent at the device.",
                    s.id,
                    s.device_name
                );
                say!(
                    "Once accepted, join with: {} {}",
                    channel.join_command(),
                    s.id
                );
            } else {
                say!(
                    "Session {} ({}) on {} is open.",
                    s.id,
                    s.channel,
                    s.device_name
                );
                say!("Join with: {} {}", channel.join_command(), s.id);
            }
        }
        SessionsCommand::List { all, out } => {
            let s = c.sessions(all).await?;
            if out.json {
                output::json(&s)?;
            } else {
                output::table(&HEADERS, &rows(&s));
            }
        }
        SessionsCommand::Show { id, out } => {
            let s = c.session(&id).await?;
            if out.json {
                output::json(&s)?;
            } else {
                output::table(&HEADERS, &rows(&[s]));
            }
        }
        SessionsCommand::End { id } => {
            let s = c.end_session(&id).await?;
            say!("Ended session {} on {}.", s.id, s.device_name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn support_code(ctx: &Ctx, cmd: SupportCodeCommand) -> anyhow::Result<ExitCode> {
    let c = ctx.client()?;
    match cmd {
        SupportCodeCommand::Create {
            view_only,
            channel,
            ttl,
            out,
        } => {
            let code = c
                .create_support_code(&CreateSupportCodeRequest {
                    access: Some(if view_only { "view" } else { "control" }.to_owned()),
                    ttl_seconds: Some(ttl.as_secs()),
                    channel: Some(channel.as_str().to_owned()),
                })
                .await?;
            if out.json {
                output::json(&code)?;
            } else {
                say!("Support code (shown once): {}", code.code.expose());
                say!(
                    "Valid until {} for {} access.",
                    code.expires_at,
                    code.access
                );
                say!(
                    "The person you help runs: tessera agent support --server {} --code {}",
                    c.base_url().as_str().trim_end_matches('/'),
                    code.code.expose()
                );
                say!(
                    "When they accept, join with: tessera ctl sessions list, then {} SESSION_ID",
                    channel.join_command()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn policy(ctx: &Ctx, cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    let c = ctx.client()?;
    match cmd {
        PolicyCommand::Show(out) => {
            let p = c.policy().await?;
            if out.json {
                output::json(&p)?;
            } else {
                say!(
                    "require_consent_for_managed: {}",
                    p.require_consent_for_managed
                );
            }
        }
        PolicyCommand::Set {
            require_consent_for_managed,
        } => {
            let p = c
                .set_policy(&Policy {
                    require_consent_for_managed,
                })
                .await?;
            say!(
                "require_consent_for_managed: {}",
                p.require_consent_for_managed
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
