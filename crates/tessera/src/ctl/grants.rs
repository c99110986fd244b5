//! `grants`: who may auto-join whom, and taking a grant back.

use crate::output::say;
use std::process::ExitCode;

use clap::Subcommand;

use super::{Ctx, JsonFlag};
use crate::output;

#[derive(Subcommand, Debug)]
pub(super) enum GrantsCommand {
    /// Every current automatic-join grant: scopes, expiry, state, last use.
    List(JsonFlag),
    /// Revoke a grant server-side (by its id).
    Revoke {
        /// The grant's id, as `grants list` shows it.
        id: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
}

pub(super) async fn run(ctx: &Ctx, cmd: GrantsCommand) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    match cmd {
        GrantsCommand::List(out) => {
            let grants = client.grants().await?;
            if out.json {
                output::json(&grants)?;
            } else {
                output::grants(&grants);
            }
        }
        GrantsCommand::Revoke { id, reason, out } => {
            let g = client.revoke_grant(&id, reason).await?;
            if out.json {
                output::json(&g)?;
            } else {
                say!(
                    "Revoked: {} may no longer join {} automatically.",
                    g.grantee_name.as_deref().unwrap_or(&g.grantee),
                    g.granter_name.as_deref().unwrap_or(&g.granter)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
