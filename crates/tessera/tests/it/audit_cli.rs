//! `tessera ctl audit list|export|verify --file` through the real binary
//! against a real server (issue 17 item 10, issue 12 finding 5's export):
//! newest rows first, `--tail`, time filters in words, `--follow`, and an
//! export that verifies offline only when nobody touched it.

use std::process::Stdio;
use std::time::Duration;

use tessera_core::api::AuditEntryView;
use tessera_core::audit::{chain_hash, AuditContent, GENESIS};
use tessera_core::roles::Role;
use tessera_core::secret::hex;
use tessera_core::{Clock, ManualClock, SystemClock, Timestamp};
use tessera_testkit::{ctl, ctl_admin, tessera_bin, Options, TestServer};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The SEQ column of a `ctl audit list` table, top to bottom.
fn seqs(out: &str) -> Vec<i64> {
    out.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_list_shows_the_newest_rows_first_and_tail_takes_the_last_n() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    for i in 0..4 {
        s.user(&admin, &format!("u{i}"), Role::Viewer).await;
    }
    let cfg = ctl_admin(&s).await;
    // 1 bootstrap + 1 login + 8 for the users + 1 ctl login.
    let (code, out, err) = ctl(cfg.path(), &["audit", "list"], None).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(seqs(&out), (1..=11).rev().collect::<Vec<_>>(), "{out}");
    assert!(
        out.lines().nth(1).unwrap().contains("login_succeeded"),
        "{out}"
    );

    let (code, out, _) = ctl(cfg.path(), &["audit", "list", "--tail", "3"], None).await;
    assert_eq!(code, 0);
    assert_eq!(seqs(&out), [11, 10, 9], "{out}");
    assert!(out.contains("(older: --before 9)"), "{out}");
    let (_, out, _) = ctl(
        cfg.path(),
        &["audit", "list", "--tail", "3", "--before", "9"],
        None,
    )
    .await;
    assert_eq!(seqs(&out), [8, 7, 6], "{out}");

    let (_, out, _) = ctl(
        cfg.path(),
        &["audit", "list", "--oldest-first", "--tail", "2"],
        None,
    )
    .await;
    assert_eq!(seqs(&out), [1, 2], "{out}");
    assert!(out.contains("(more: --after 2)"), "{out}");

    let (code, _, err) = ctl(cfg.path(), &["audit", "list", "--tail", "0"], None).await;
    assert_ne!(code, 0);
    assert!(err.contains("--tail"), "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_list_since_and_until_take_a_duration_in_words() {
    // The server's clock starts three hours ago, then catches up.
    let clock = ManualClock::new(SystemClock.now().minus(Duration::from_secs(3 * 3600)));
    let s = TestServer::start_with(Options {
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    let admin = s.admin().await;
    s.user(&admin, "early", Role::Viewer).await;
    clock.advance(Duration::from_secs(3 * 3600));
    s.user(&admin, "late", Role::Viewer).await;
    let cfg = ctl_admin(&s).await;

    let (code, out, err) = ctl(
        cfg.path(),
        &["audit", "list", "--since", "1h", "--action", "user_created"],
        None,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("late") && !out.contains("early"), "{out}");
    let (_, out, _) = ctl(
        cfg.path(),
        &["audit", "list", "--until", "2h", "--action", "user_created"],
        None,
    )
    .await;
    assert!(out.contains("early") && !out.contains("late"), "{out}");
    let (_, out, _) = ctl(cfg.path(), &["audit", "list", "--since", "4h"], None).await;
    assert!(out.contains("early") && out.contains("late"), "{out}");
    // An RFC 3339 time still works.
    let at = Timestamp::from_millis(clock.now_ms() - 60_000).to_rfc3339();
    let (_, out, _) = ctl(cfg.path(), &["audit", "list", "--since", &at], None).await;
    assert!(out.contains("late") && !out.contains("early"), "{out}");

    let (code, _, err) = ctl(cfg.path(), &["audit", "list", "--since", "soon"], None).await;
    assert_ne!(code, 0);
    assert!(err.contains("a duration ago such as `1h`"), "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_list_follow_prints_a_row_written_after_it_started() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let cfg = ctl_admin(&s).await;
    let mut child = tokio::process::Command::new(tessera_bin())
        .arg("ctl")
        .arg("--config-dir")
        .arg(cfg.path())
        .args(["audit", "list", "--follow", "--tail", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The two newest rows, oldest first, before anything new.
    let first = lines.next_line().await.unwrap().unwrap();
    let second = lines.next_line().await.unwrap().unwrap();
    assert!(
        first.starts_with("2 ") && second.starts_with("3 "),
        "{first}\n{second}"
    );
    s.user(&admin, "newcomer", Role::Viewer).await;
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("user_created") && line.contains("newcomer") {
                return line;
            }
        }
        panic!("ctl audit list --follow ended");
    })
    .await
    .expect("the new row is printed within 20 s");
    assert!(seen.starts_with("4 "), "{seen}");
    child.kill().await.unwrap();
    s.stop().await;
}

/// Rewrites an export file's lines with `edit` over the parsed JSON.
fn edit_export(
    from: &std::path::Path,
    to: &std::path::Path,
    edit: impl Fn(&mut Vec<serde_json::Value>),
) {
    let mut lines: Vec<serde_json::Value> = std::fs::read_to_string(from)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    edit(&mut lines);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(to, text).unwrap();
}

/// An export line's row, as the chain hashes it.
fn row_content(v: &serde_json::Value) -> AuditContent {
    serde_json::from_value::<AuditEntryView>(v.clone())
        .unwrap()
        .content()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_verifies_offline_and_a_tampered_export_does_not() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    for i in 0..3 {
        s.user(&admin, &format!("x{i}"), Role::Viewer).await;
    }
    let cfg = ctl_admin(&s).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let file_arg = file.to_str().unwrap();
    let (code, out, err) = ctl(cfg.path(), &["audit", "export", file_arg], None).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("exported 9 rows"), "{out}");
    let (code, keys, _) = ctl(cfg.path(), &["audit", "keys"], None).await;
    assert_eq!(code, 0);
    let key_file = dir.path().join("keys.txt");
    std::fs::write(&key_file, &keys).unwrap();
    let key_arg = key_file.to_str().unwrap();
    let public = hex(&s.state.node_key().public_key());
    assert!(keys.contains(&public), "{keys}");

    // Offline: a config dir that never logged in, and the server gone.
    s.stop().await;
    let nowhere = tempfile::tempdir().unwrap();
    let offline = async |file: &str, keys: &[&str]| {
        let mut args = vec!["audit", "verify", "--file", file];
        args.extend_from_slice(keys);
        ctl(nowhere.path(), &args, None).await
    };
    let (code, out, err) = offline(file_arg, &["--key-file", key_arg]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("audit chain OK: 9 rows verified"), "{out}");
    let (code, out, _) = offline(file_arg, &["--public-key", &public]).await;
    assert_eq!(code, 0, "{out}");
    let (code, _, err) = offline(file_arg, &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("give the node public keys you trust"), "{err}");
    let stranger = hex(&tessera_server::node_key::NodeKey::generate().public_key());
    let (code, out, _) = offline(file_arg, &["--public-key", &stranger]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not among the keys you gave"), "{out}");

    // Tampered: a row deleted and the rest re-chained inside the file.
    let rechained = dir.path().join("rechained.jsonl");
    edit_export(&file, &rechained, |lines| {
        lines.retain(|l| !(l["kind"] == "row" && l["seq"] == 4));
        let mut prev = GENESIS;
        let mut seq = 0;
        for l in lines.iter_mut().filter(|l| l["kind"] == "row") {
            seq += 1;
            l["seq"] = seq.into();
            let h = chain_hash(&prev, &row_content(l));
            l["prev_hash"] = hex(&prev).into();
            l["hash"] = hex(&h).into();
            prev = h;
        }
    });
    let (code, out, _) = offline(rechained.to_str().unwrap(), &["--key-file", key_arg]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("BROKEN") && out.contains("the log was rewritten"),
        "{out}"
    );

    // Tampered: one row's words changed, nothing else.
    let altered = dir.path().join("altered.jsonl");
    edit_export(&file, &altered, |lines| {
        for l in lines
            .iter_mut()
            .filter(|l| l["kind"] == "row" && l["seq"] == 5)
        {
            l["details"]["role"] = "admin".into();
        }
    });
    let (code, out, _) = offline(altered.to_str().unwrap(), &["--key-file", key_arg]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("row 5"), "{out}");

    // Tampered: the checkpoints dropped.
    let appended = dir.path().join("appended.jsonl");
    edit_export(&file, &appended, |lines| {
        lines.retain(|l| l["kind"] != "checkpoint");
    });
    let (code, out, _) = offline(appended.to_str().unwrap(), &["--key-file", key_arg]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nothing vouches"), "{out}");
}

/// Logs the config dir `dir` in to `server` as its admin.
async fn login_to(dir: &std::path::Path, server: &TestServer) {
    let pw = server.admin_password.clone().unwrap();
    let (code, out, err) = ctl(
        dir,
        &[
            "login",
            "--server",
            &server.url,
            "--user",
            "admin",
            "--password-stdin",
        ],
        Some(&format!("{pw}\n")),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
}

/// audit2 finding B: one config dir verifying two servers keeps a head for
/// each (before, the second overwrote the first), and the single-head file
/// of earlier versions is read as the head of its server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_verifying_two_servers_keeps_both_remembered_heads() {
    let one = TestServer::start().await;
    let two = TestServer::start().await;
    let cfg = ctl_admin(&one).await;
    let heads = cfg.path().join("audit-head.json");
    // An earlier version's file, remembering a hash row 1 of `two` never had.
    let bogus = "ab".repeat(32);
    std::fs::write(
        &heads,
        serde_json::json!({
            "server": two.url, "seq": 1, "hash": bogus,
            "seen_at": "2026-01-01T00:00:00Z", "checkpoint_seq": null,
        })
        .to_string(),
    )
    .unwrap();

    let (code, out, _) = ctl(cfg.path(), &["audit", "verify"], None).await;
    assert_eq!(code, 0, "{out}");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&heads).unwrap()).unwrap();
    let servers = file["servers"].as_object().unwrap();
    assert!(servers.contains_key(&one.url), "{file}");
    assert_eq!(servers[&two.url]["hash"], bogus, "the old entry is kept");

    login_to(cfg.path(), &two).await;
    let (code, out, _) = ctl(cfg.path(), &["audit", "verify"], None).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("row 1 no longer has hash {bogus} seen on")),
        "{out}"
    );

    // The first server's head survived the second's verify.
    login_to(cfg.path(), &one).await;
    let (code, out, _) = ctl(cfg.path(), &["audit", "verify"], None).await;
    assert_eq!(code, 0, "{out}");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&heads).unwrap()).unwrap();
    assert_eq!(file["servers"].as_object().unwrap().len(), 2, "{file}");
    one.stop().await;
    two.stop().await;
}
