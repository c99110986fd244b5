//! `audit list|verify`.

use crate::output::say;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use tessera_client::AuditQuery;
use tessera_core::api::AuditEntryView;
use tessera_core::audit::{canonical_json, AuditContent, ChainVerifier};
use tessera_core::secret::hex;
use tessera_core::Timestamp;

use super::Ctx;
use crate::output;

#[derive(Subcommand, Debug)]
pub(super) enum AuditCommand {
    /// List audit rows, oldest first.
    List(ListArgs),
    /// Recompute the hash chain over every row; exit 1 and name the first
    /// broken row if it does not verify.
    Verify,
}

#[derive(Args, Debug)]
pub(super) struct ListArgs {
    /// Only this action, e.g. login_failed.
    #[arg(long)]
    action: Option<String>,
    /// Only this actor, e.g. user:<id>.
    #[arg(long)]
    actor: Option<String>,
    /// Only rows at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only rows before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Only rows after this sequence number.
    #[arg(long)]
    after: Option<i64>,
    /// At most this many rows.
    #[arg(long, default_value_t = 100)]
    limit: i64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(ctx: &Ctx, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::List(a) => list(ctx, a).await,
        AuditCommand::Verify => verify(ctx).await,
    }
}

async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<ExitCode> {
    let page = ctx
        .client()?
        .audit_page(&AuditQuery {
            action: a.action,
            actor: a.actor,
            since: a.since,
            until: a.until,
            after: a.after,
            limit: Some(a.limit),
        })
        .await?;
    if a.json {
        output::json(&page.entries)?;
    } else {
        let rows: Vec<Vec<String>> = page
            .entries
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    e.occurred_at.clone(),
                    e.action.clone(),
                    e.actor.clone(),
                    output::opt(e.target.as_deref()),
                    canonical_json(&e.details),
                ]
            })
            .collect();
        output::table(
            &["SEQ", "TIME", "ACTION", "ACTOR", "TARGET", "DETAILS"],
            &rows,
        );
        if let Some(next) = page.next_after {
            say!("(more: --after {next})");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn decode_hash(field: &str, seq: i64, hex_text: &str) -> anyhow::Result<[u8; 32]> {
    data_encoding::HEXLOWER
        .decode(hex_text.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("row {seq}: `{field}` is not a SHA-256 hex string"))
}

/// The hashed content of a row as the API returns it.
pub(super) fn content_of(e: &AuditEntryView) -> anyhow::Result<AuditContent> {
    Ok(AuditContent {
        seq: e.seq,
        occurred_at: Timestamp::parse_rfc3339(&e.occurred_at)
            .ok_or_else(|| anyhow!("row {}: unreadable time", e.seq))?,
        tenant_id: e.tenant_id.clone(),
        actor: e.actor.clone(),
        action: e.action.clone(),
        target: e.target.clone(),
        source_ip: e.source_ip.clone(),
        details: canonical_json(&e.details),
    })
}

async fn verify(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let mut verifier = ChainVerifier::default();
    let mut after = None;
    loop {
        let page = client
            .audit_page(&AuditQuery {
                after,
                limit: Some(1000),
                ..AuditQuery::default()
            })
            .await
            .context("cannot read the audit log")?;
        for e in &page.entries {
            let content = content_of(e)?;
            let prev = decode_hash("prev_hash", e.seq, &e.prev_hash)?;
            let hash = decode_hash("hash", e.seq, &e.hash)?;
            if let Err(broken) = verifier.push(&content, &prev, &hash) {
                say!("audit chain BROKEN: {broken}");
                return Ok(ExitCode::FAILURE);
            }
        }
        match page.next_after {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    say!(
        "audit chain OK: {} rows verified, head {}",
        verifier.checked(),
        hex(&verifier.head())
    );
    Ok(ExitCode::SUCCESS)
}
