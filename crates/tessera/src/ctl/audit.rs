//! `audit list|verify|export|keys`: reading the log here; checking it
//! (online, against what this config dir remembers, or offline from an
//! export file) in [`chain`].

mod chain;

use crate::output::say;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use tessera_client::{ApiClient, AuditQuery};
use tessera_core::api::AuditEntryView;
use tessera_core::audit::canonical_json;
use tessera_core::{Clock, SystemClock, Timestamp};

use super::Ctx;
use crate::output;

#[derive(Subcommand, Debug)]
pub(super) enum AuditCommand {
    /// List audit rows, newest first (`--oldest-first` or `--after` for
    /// the other way), or watch new rows arrive with `--follow`.
    List(ListArgs),
    /// Verify the hash chain, every signed checkpoint, and that the log
    /// still extends the head this config dir saw last time; exit 1 and say
    /// what broke. With `--file`, verify an export offline, no server.
    Verify(chain::VerifyArgs),
    /// Write the chain, its signed checkpoints and the node public keys to
    /// FILE (JSON lines), after asking the server to sign its head.
    Export(chain::ExportArgs),
    /// Print the node public keys that sign checkpoints (keep a copy: it is
    /// what `verify --file … --key-file` trusts).
    Keys(super::JsonFlag),
}

#[derive(Args, Debug)]
pub(super) struct ListArgs {
    /// Only this action, e.g. login_failed.
    #[arg(long)]
    action: Option<String>,
    /// Only this actor, e.g. user:<id>.
    #[arg(long)]
    actor: Option<String>,
    /// Only rows this long ago or later (`1h`, `30m`, `2days`) or at or
    /// after an RFC 3339 time.
    #[arg(long, value_parser = when)]
    since: Option<Timestamp>,
    /// Only rows before this long ago (`1h`) or before an RFC 3339 time.
    #[arg(long, value_parser = when)]
    until: Option<Timestamp>,
    /// How many rows to show (the newest, unless --oldest-first or --after).
    #[arg(long, visible_alias = "limit", default_value_t = 100,
          value_parser = clap::value_parser!(i64).range(1..=1000))]
    tail: i64,
    /// Oldest first, from the first row.
    #[arg(long)]
    oldest_first: bool,
    /// Oldest first, from the row after this sequence number.
    #[arg(long, conflicts_with = "before")]
    after: Option<i64>,
    /// Only rows before this sequence number (the next page, newest first).
    #[arg(long)]
    before: Option<i64>,
    /// Keep running and print each new row as it is written (Ctrl-C ends).
    /// Rows print oldest to newest, like `tail -f`.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Print JSON instead of a table (one object per line with --follow).
    #[arg(long)]
    json: bool,
}

/// How often `--follow` asks for new rows.
const FOLLOW_POLL: Duration = Duration::from_secs(1);

/// `--since`/`--until`: a human duration meaning that long ago (the same
/// parser as `server --pairing-ttl`), or an RFC 3339 time.
fn when(s: &str) -> Result<Timestamp, String> {
    if let Some(t) = Timestamp::parse_rfc3339(s) {
        return Ok(t);
    }
    let ago = humantime::parse_duration(s).map_err(|e| {
        format!("{e} (write a duration ago such as `1h` or `2days`, or an RFC 3339 time)")
    })?;
    Ok(SystemClock.now().minus(ago))
}

pub(super) async fn run(ctx: &Ctx, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::List(a) => list(ctx, a).await,
        AuditCommand::Verify(a) => chain::verify(ctx, a).await,
        AuditCommand::Export(a) => chain::export(ctx, a).await,
        AuditCommand::Keys(f) => chain::keys(ctx, f.json).await,
    }
}

fn row_cells(e: &AuditEntryView) -> Vec<String> {
    vec![
        e.seq.to_string(),
        e.occurred_at.clone(),
        e.action.clone(),
        e.actor.clone(),
        output::opt(e.target.as_deref()),
        canonical_json(&e.details),
    ]
}

const HEADERS: [&str; 6] = ["SEQ", "TIME", "ACTION", "ACTOR", "TARGET", "DETAILS"];

/// One row as one line, for `--follow` (a table cannot pad rows it has
/// not seen yet).
fn print_line(e: &AuditEntryView, json: bool) -> anyhow::Result<()> {
    if json {
        say!("{}", serde_json::to_string(e)?);
    } else {
        say!("{}", row_cells(e).join("  "));
    }
    Ok(())
}

async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let oldest_first = a.oldest_first || a.after.is_some();
    let query = AuditQuery {
        action: a.action.clone(),
        actor: a.actor.clone(),
        since: a.since.map(Timestamp::to_rfc3339),
        until: a.until.map(Timestamp::to_rfc3339),
        after: a.after,
        before: a.before,
        order: (!oldest_first).then(|| "newest".to_owned()),
        limit: Some(a.tail),
    };
    let page = client.audit_page(&query).await?;
    if a.follow {
        let mut rows = page.entries;
        if !oldest_first {
            rows.reverse();
        }
        return follow(&client, query, rows, a.json).await;
    }
    if a.json {
        output::json(&page.entries)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = page.entries.iter().map(row_cells).collect();
    output::table(&HEADERS, &rows);
    if let Some(next) = page.next_after {
        say!("(more: --after {next})");
    }
    if let Some(next) = page.next_before {
        say!("(older: --before {next})");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `shown` (oldest to newest), then polls for rows after the newest
/// row of the log, printing each as it arrives, until interrupted.
async fn follow(
    client: &ApiClient,
    filters: AuditQuery,
    shown: Vec<AuditEntryView>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    for e in &shown {
        print_line(e, json)?;
    }
    // The cursor is the log's newest row, filtered or not, so a filter that
    // matched nothing yet does not replay the history.
    let newest = client
        .audit_page(&AuditQuery {
            order: Some("newest".to_owned()),
            limit: Some(1),
            ..AuditQuery::default()
        })
        .await?;
    let mut after = newest
        .entries
        .first()
        .map(|e| e.seq)
        .max(shown.last().map(|e| e.seq))
        .unwrap_or(0);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            () = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        loop {
            let page = client
                .audit_page(&AuditQuery {
                    after: Some(after),
                    before: None,
                    order: None,
                    limit: Some(1000),
                    ..filters.clone()
                })
                .await
                .map_err(|e| anyhow!("cannot read new audit rows: {e}"))?;
            for e in &page.entries {
                print_line(e, json)?;
                after = after.max(e.seq);
            }
            // A filtered page may end before the log does: skip to where it
            // stopped looking.
            match page.next_after {
                Some(n) => after = after.max(n),
                None => break,
            }
        }
    }
}
