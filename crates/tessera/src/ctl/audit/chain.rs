//! Checking the audit log: online (`verify`), offline from an export file
//! (`verify --file`), and writing that file (`export`).
//!
//! Online, the chain is recomputed here from what the API returns, every
//! checkpoint's signature is checked against the node keys and its row must
//! still carry the signed hash, and the server's own walk must agree. This
//! config dir also remembers the head it verified last on each server
//! (`audit-head.json`, next to the login, keyed by server URL): a later run fails if the log no longer extends it,
//! which catches a rewrite even when the rewriter also deleted the
//! checkpoints. The node keys come from the server here, so a database
//! writer who adds a key of their own fools the online check; offline, the
//! keys are the ones the person verifying gives.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use tessera_client::{ApiClient, AuditQuery};
use tessera_core::api::{AuditCheckpointView, AuditEntryView, NodeKeyView};
use tessera_core::audit::{Checkpoint, LogBreak, LogSummary, LogVerifier};
use tessera_core::secret::hex;
use tessera_core::{Clock, SystemClock};

use super::super::Ctx;
use crate::output::{self, say};

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// Verify this export file (from `audit export`) offline, with no
    /// server, against the public keys given by --public-key/--key-file.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// A node public key (64 hex digits) to trust; repeat for several nodes.
    #[arg(long, value_name = "HEX", requires = "file")]
    public_key: Vec<String>,
    /// A file of node public keys to trust: every 64-hex-digit word in it
    /// (the output of `tessera ctl audit keys` works).
    #[arg(long, value_name = "FILE", requires = "file")]
    key_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct ExportArgs {
    /// Where to write the export (JSON lines); refused if it exists.
    file: PathBuf,
}

/// One line of an export file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ExportLine {
    /// The first line.
    Header {
        format: String,
        server: String,
        exported_at: String,
    },
    NodeKey(NodeKeyView),
    Checkpoint(AuditCheckpointView),
    Row(AuditEntryView),
}

const FORMAT: &str = "tessera-audit-export/v1";

fn decode<const N: usize>(what: &str, hex_text: &str) -> anyhow::Result<[u8; N]> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex_text.trim().as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("{what} is not {N} bytes of hex"))
}

fn checkpoint_of(c: &AuditCheckpointView) -> anyhow::Result<Checkpoint> {
    c.checkpoint()
        .ok_or_else(|| anyhow!("the checkpoint at row {} is not in its wire form", c.seq))
}

/// Pushes one row through `v`; the remembered head, if this is its row,
/// must still have the hash seen then.
fn push_row(
    v: &mut LogVerifier,
    e: &AuditEntryView,
    remembered: Option<&Remembered>,
) -> anyhow::Result<Result<(), String>> {
    let content = e
        .content()
        .ok_or_else(|| anyhow!("row {}: unreadable time", e.seq))?;
    let (prev, hash) = e
        .hashes()
        .ok_or_else(|| anyhow!("row {}: a hash is not 64 hex digits", e.seq))?;
    if let Err(broken) = v.push(&content, &prev, &hash) {
        return Ok(Err(broken.to_string()));
    }
    if let Some(r) = remembered.filter(|r| r.seq == e.seq && r.hash != hex(&hash)) {
        return Ok(Err(format!(
            "the log was rewritten: row {} no longer has hash {} seen on {}",
            r.seq, r.hash, r.seen_at
        )));
    }
    Ok(Ok(()))
}

fn describe(s: &LogSummary) -> String {
    let mut text = format!(
        "audit chain OK: {} rows verified, head {}",
        s.rows,
        hex(&s.head)
    );
    match &s.last_checkpoint {
        Some(c) => {
            text.push_str(&format!(
                "; {} signed checkpoints, the last at row {} signed {} by {}",
                s.checkpoints, c.seq, c.signed_at, c.kid
            ));
            if s.uncovered() > 0 {
                text.push_str(&format!("; {} newer rows not yet signed", s.uncovered()));
            }
        }
        None => text.push_str("; no signed checkpoint yet"),
    }
    text
}

/// What this config dir saw at its last successful online verify.
#[derive(Debug, Serialize, Deserialize)]
struct Remembered {
    server: String,
    seq: i64,
    /// Hex hash of row `seq`.
    hash: String,
    seen_at: String,
    /// The highest checkpointed row then, if any.
    #[serde(default)]
    checkpoint_seq: Option<i64>,
}

fn remembered_path(ctx: &Ctx) -> PathBuf {
    ctx.config_dir.join("audit-head.json")
}

/// `audit-head.json`: one remembered head per server URL, so verifying
/// another server never overwrites this one's.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RememberedHeads {
    servers: std::collections::BTreeMap<String, Remembered>,
}

/// What `audit-head.json` holds: the map, or the single head of older
/// versions (read as a map of one).
#[derive(Deserialize)]
#[serde(untagged)]
enum HeadsFile {
    Map(RememberedHeads),
    Single(Remembered),
}

fn recall_all(ctx: &Ctx) -> anyhow::Result<RememberedHeads> {
    let path = remembered_path(ctx);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RememberedHeads::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let file: HeadsFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is damaged; remove it to start remembering afresh",
            path.display()
        )
    })?;
    Ok(match file {
        HeadsFile::Map(m) => m,
        HeadsFile::Single(r) => RememberedHeads {
            servers: [(r.server.clone(), r)].into(),
        },
    })
}

/// The remembered head for `server`; another server's does not count.
fn recall(ctx: &Ctx, server: &str) -> anyhow::Result<Option<Remembered>> {
    Ok(recall_all(ctx)?.servers.remove(server))
}

/// Keeps `r` as its server's head, next to every other server's.
fn remember(ctx: &Ctx, r: Remembered) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut all = recall_all(ctx)?;
    all.servers.insert(r.server.clone(), r);
    let path = remembered_path(ctx);
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(&all)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

async fn node_keys(client: &ApiClient) -> anyhow::Result<HashMap<String, [u8; 32]>> {
    client
        .audit_node_keys()
        .await
        .context("cannot read the node keys")?
        .iter()
        .map(|k| Ok((k.kid.clone(), decode(&k.kid, &k.public_key)?)))
        .collect()
}

async fn all_checkpoints(client: &ApiClient, up_to: i64) -> anyhow::Result<Vec<Checkpoint>> {
    let mut out = Vec::new();
    let (mut after, mut after_kid) = (0, None);
    loop {
        let page = client
            .audit_checkpoints_page(after, after_kid.as_deref(), 1000)
            .await
            .context("cannot read the audit checkpoints")?;
        for c in &page.checkpoints {
            if c.seq <= up_to {
                out.push(checkpoint_of(c)?);
            }
        }
        match page.next_after {
            Some(n) if n <= up_to => (after, after_kid) = (n, page.next_after_kid),
            _ => return Ok(out),
        }
    }
}

/// Walks every row from the first, up to `up_to`, calling `each`.
async fn walk_rows(
    client: &ApiClient,
    up_to: i64,
    mut each: impl FnMut(&AuditEntryView) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
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
        for e in page.entries.iter().filter(|e| e.seq <= up_to) {
            if !each(e)? {
                return Ok(());
            }
        }
        match page.next_after {
            Some(n) if n < up_to => after = Some(n),
            _ => return Ok(()),
        }
    }
}

fn broken(why: impl std::fmt::Display) -> anyhow::Result<ExitCode> {
    say!("audit chain BROKEN: {why}");
    Ok(ExitCode::FAILURE)
}

pub(crate) async fn verify(ctx: &Ctx, a: VerifyArgs) -> anyhow::Result<ExitCode> {
    if let Some(file) = a.file {
        return verify_file(&file, &a.public_key, a.key_file.as_deref());
    }
    let saved = ctx.load()?;
    let client = ctx.client()?;
    let remembered = recall(ctx, &saved.server)?;
    let keys = node_keys(&client).await?;
    // Checkpoints first, rows after: every checkpoint read names a row the
    // walk will reach.
    let checkpoints = all_checkpoints(&client, i64::MAX).await?;
    let mut verifier = match LogVerifier::new(&keys, checkpoints) {
        Ok(v) => v,
        Err(e) => return broken(e),
    };
    let mut failure = None;
    walk_rows(&client, i64::MAX, |e| {
        match push_row(&mut verifier, e, remembered.as_ref())? {
            Ok(()) => Ok(true),
            Err(why) => {
                failure = Some(why);
                Ok(false)
            }
        }
    })
    .await?;
    if let Some(why) = failure {
        return broken(why);
    }
    let summary = match verifier.finish() {
        Ok(s) => s,
        Err(e) => return broken(e),
    };
    if let Some(r) = &remembered {
        if r.seq > summary.head_seq {
            return broken(format!(
                "the log was rewritten: row {} (hash {}, seen on {}) is gone; the log now \
                 ends at row {}",
                r.seq, r.hash, r.seen_at, summary.head_seq
            ));
        }
        let last = summary.last_checkpoint.as_ref().map_or(0, |c| c.seq);
        if let Some(cp) = r.checkpoint_seq.filter(|&cp| cp > last) {
            return broken(format!(
                "signed checkpoints were deleted: the one at row {cp}, seen on {}, is gone",
                r.seen_at
            ));
        }
    }
    let server = client
        .audit_verify()
        .await
        .context("cannot ask the server to verify")?;
    if let Some(problem) = server.problem.filter(|_| !server.ok) {
        return broken(format!("the server's own check: {problem}"));
    }
    remember(
        ctx,
        Remembered {
            server: saved.server.clone(),
            seq: summary.head_seq,
            hash: hex(&summary.head),
            seen_at: SystemClock.now().to_rfc3339(),
            checkpoint_seq: summary.last_checkpoint.as_ref().map(|c| c.seq),
        },
    )?;
    say!("{}", describe(&summary));
    Ok(ExitCode::SUCCESS)
}

/// Every 64-hex-digit word of `text`.
fn keys_in(text: &str) -> anyhow::Result<Vec<[u8; 32]>> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .filter(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|w| decode("a public key", w))
        .collect()
}

fn verify_file(file: &Path, given: &[String], key_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut trusted = HashMap::new();
    for k in given {
        let public: [u8; 32] = decode(&format!("--public-key {k}"), k)?;
        trusted.insert(tessera_core::audit::node_kid(&public), public);
    }
    if let Some(path) = key_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let found = keys_in(&text)?;
        if found.is_empty() {
            bail!("{} holds no public key (64 hex digits)", path.display());
        }
        for public in found {
            trusted.insert(tessera_core::audit::node_kid(&public), public);
        }
    }
    if trusted.is_empty() {
        bail!(
            "give the node public keys you trust: --public-key HEX or --key-file FILE \
             (`tessera ctl audit keys` prints them; keep a copy from a time you trust)"
        );
    }
    let f = std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut lines = BufReader::new(f).lines();
    let first = lines
        .next()
        .transpose()?
        .ok_or_else(|| anyhow!("{} is empty", file.display()))?;
    match serde_json::from_str::<ExportLine>(&first) {
        Ok(ExportLine::Header { format, .. }) if format == FORMAT => {}
        _ => bail!(
            "{} is not a Tessera audit export ({FORMAT})",
            file.display()
        ),
    }
    let mut rows = Vec::new();
    let mut checkpoints = Vec::new();
    for (i, line) in lines.enumerate() {
        let line = line?;
        let parsed: ExportLine = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not an export line", file.display(), i + 2))?;
        match parsed {
            ExportLine::Row(r) => rows.push(r),
            ExportLine::Checkpoint(c) => checkpoints.push(checkpoint_of(&c)?),
            // The file's own keys are not trusted: whoever edited the file
            // could have put theirs there.
            ExportLine::NodeKey(_) | ExportLine::Header { .. } => {}
        }
    }
    let mut verifier = match LogVerifier::new(&trusted, checkpoints) {
        Ok(v) => v,
        Err(LogBreak::UnknownKey { seq, kid }) => {
            return broken(format!(
                "the checkpoint at row {seq} is signed by {kid}, which is not among the keys \
                 you gave"
            ))
        }
        Err(e) => return broken(e),
    };
    rows.sort_by_key(|r| r.seq);
    for r in &rows {
        if let Err(why) = push_row(&mut verifier, r, None)? {
            return broken(why);
        }
    }
    let summary = match verifier.finish() {
        Ok(s) => s,
        Err(e) => return broken(e),
    };
    let Some(last) = &summary.last_checkpoint else {
        return broken(format!(
            "no checkpoint in {} is signed by a key you gave: nothing vouches for its rows",
            file.display()
        ));
    };
    if summary.uncovered() > 0 {
        return broken(format!(
            "rows {}–{} follow the last signed checkpoint (row {}): nothing vouches for them",
            last.seq + 1,
            summary.head_seq,
            last.seq
        ));
    }
    say!("{}", describe(&summary));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn export(ctx: &Ctx, a: ExportArgs) -> anyhow::Result<ExitCode> {
    use std::os::unix::fs::OpenOptionsExt;
    let saved = ctx.load()?;
    let client = ctx.client()?;
    // Signed first, so the file ends at a signed row: anything after that
    // in a file is someone else's addition.
    let head = client
        .audit_checkpoint_now()
        .await
        .context("cannot ask the server to sign its head")?;
    let up_to = head.as_ref().map_or(0, |c| c.seq);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&a.file)
        .with_context(|| format!("cannot create {}", a.file.display()))?;
    let mut out = std::io::BufWriter::new(f);
    let mut line = |l: &ExportLine| -> anyhow::Result<()> {
        serde_json::to_writer(&mut out, l)?;
        out.write_all(b"\n")?;
        Ok(())
    };
    line(&ExportLine::Header {
        format: FORMAT.to_owned(),
        server: saved.server.clone(),
        exported_at: SystemClock.now().to_rfc3339(),
    })?;
    let keys = client.audit_node_keys().await?;
    for k in &keys {
        line(&ExportLine::NodeKey(k.clone()))?;
    }
    let mut checkpoints = 0;
    let (mut after, mut after_kid) = (0, None);
    loop {
        let page = client
            .audit_checkpoints_page(after, after_kid.as_deref(), 1000)
            .await?;
        for c in page.checkpoints.iter().filter(|c| c.seq <= up_to) {
            line(&ExportLine::Checkpoint(c.clone()))?;
            checkpoints += 1;
        }
        match page.next_after {
            Some(n) if n <= up_to => (after, after_kid) = (n, page.next_after_kid),
            _ => break,
        }
    }
    let mut rows = 0;
    walk_rows(&client, up_to, |e| {
        line(&ExportLine::Row(e.clone()))?;
        rows += 1;
        Ok(true)
    })
    .await?;
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    say!(
        "exported {rows} rows and {checkpoints} checkpoints (signed up to row {up_to}) to {}",
        a.file.display()
    );
    say!(
        "verify it anywhere with: tessera ctl audit verify --file {} --key-file KEYS \
         (KEYS: the output of `tessera ctl audit keys`, kept from a time you trust)",
        a.file.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn keys(ctx: &Ctx, json: bool) -> anyhow::Result<ExitCode> {
    let keys = ctx.client()?.audit_node_keys().await?;
    if json {
        output::json(&keys)?;
    } else {
        let rows: Vec<Vec<String>> = keys
            .iter()
            .map(|k| vec![k.kid.clone(), k.public_key.clone(), k.created_at.clone()])
            .collect();
        output::table(&["KID", "PUBLIC KEY", "CREATED"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}
