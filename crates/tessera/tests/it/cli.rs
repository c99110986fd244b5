//! `tessera ctl` end to end: the quick start a new user follows.

use std::os::unix::fs::PermissionsExt;

use tessera_testkit::{ctl, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_login_create_user_read_and_verify_audit_logout() {
    let s = TestServer::start().await;
    let cfg = tempfile::tempdir().unwrap();
    let dir = cfg.path().join("tessera");
    let dir = dir.as_path();
    let pw = s.admin_password.clone().unwrap();

    let (code, _, err) = ctl(dir, &["whoami"], None).await;
    assert_eq!(code, 1);
    assert!(err.contains("not logged in"), "{err}");

    let (code, out, err) = ctl(
        dir,
        &[
            "login",
            "--server",
            &s.url,
            "--user",
            "admin",
            "--password-stdin",
        ],
        Some(&format!("{pw}\n")),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Logged in as admin"), "{out}");
    let mode = std::fs::metadata(dir.join("ctl.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dmode = std::fs::metadata(dir).unwrap().permissions().mode();
    assert_eq!(dmode & 0o777, 0o700);

    let (code, out, _) = ctl(dir, &["whoami"], None).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("admin") && out.contains("manage_users"),
        "{out}"
    );

    let (code, out, err) = ctl(dir, &["users", "add", "grace", "--role", "viewer"], None).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Initial password (shown once):"), "{out}");
    let (code, out, err) = ctl(
        dir,
        &[
            "users",
            "add",
            "heidi",
            "--role",
            "operator",
            "--password-stdin",
        ],
        Some("heidi-password-99\n"),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("Initial password"), "{out}");

    let (code, out, _) = ctl(dir, &["users", "list"], None).await;
    assert_eq!(code, 0);
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("USERNAME") && header.contains("ROLE"),
        "{out}"
    );
    assert!(out.contains("grace") && out.contains("heidi"), "{out}");

    let (code, out, _) = ctl(dir, &["users", "list", "--json"], None).await;
    assert_eq!(code, 0);
    let users: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(users.len(), 3);

    let (code, out, _) = ctl(
        dir,
        &["users", "set-role", "grace", "operator", "--json"],
        None,
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()[0]["role"],
        "operator"
    );
    let (code, out, _) = ctl(dir, &["users", "disable", "heidi"], None).await;
    assert_eq!(code, 0);
    assert!(out.contains("disabled"), "{out}");
    let (code, _, err) = ctl(dir, &["users", "set-role", "grace", "emperor"], None).await;
    assert_ne!(code, 0);
    assert!(err.contains("role must be"), "{err}");

    let (code, out, _) = ctl(dir, &["audit", "list"], None).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("user_created") && out.contains("user_disabled"),
        "{out}"
    );
    let (code, out, _) = ctl(
        dir,
        &["audit", "list", "--json", "--action", "user_created"],
        None,
    )
    .await;
    assert_eq!(code, 0);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 2);

    let (code, out, _) = ctl(dir, &["audit", "verify"], None).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("audit chain OK"), "{out}");

    let (code, out, _) = ctl(dir, &["logout"], None).await;
    assert_eq!(code, 0, "{out}");
    assert!(!dir.join("ctl.json").exists());
    let (code, _, err) = ctl(dir, &["users", "list"], None).await;
    assert_eq!(code, 1);
    assert!(err.contains("not logged in"), "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_reports_server_errors_with_their_code() {
    let s = TestServer::start().await;
    let cfg = tempfile::tempdir().unwrap();
    let (code, _, err) = ctl(
        cfg.path(),
        &["login", "--server", &s.url, "--password-stdin"],
        Some("definitely wrong\n"),
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("invalid_credentials"), "{err}");
    let (code, _, err) = ctl(
        cfg.path(),
        &["login", "--server", "ftp://example", "--password-stdin"],
        Some("x\n"),
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("http://"), "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_enroll_token_agent_enroll_and_device_commands() {
    let s = TestServer::start().await;
    let cfg = tempfile::tempdir().unwrap();
    let dir = cfg.path();
    let pw = s.admin_password.clone().unwrap();
    let (code, _, err) = ctl(
        dir,
        &["login", "--server", &s.url, "--password-stdin"],
        Some(&format!("{pw}\n")),
    )
    .await;
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = ctl(
        dir,
        &[
            "enroll-token",
            "create",
            "--uses",
            "2",
            "--ttl",
            "10m",
            "--tag",
            "site:lab",
        ],
        None,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("Enrollment token (shown once): "))
        .expect("token printed")
        .to_owned();
    let (_, out, _) = ctl(dir, &["enroll-token", "list"], None).await;
    assert!(
        out.contains("active") && out.contains("2/2") && !out.contains(&token),
        "{out}"
    );

    let agent_dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(tessera_testkit::tessera_bin())
        .args(["agent", "--state-dir"])
        .arg(agent_dir.path())
        .args([
            "enroll", "--server", &s.url, "--token", &token, "--name", "kiosk",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Enrolling the same state dir twice is refused locally.
    let again = tokio::process::Command::new(tessera_testkit::tessera_bin())
        .args(["agent", "--state-dir"])
        .arg(agent_dir.path())
        .args(["enroll", "--server", &s.url, "--token", &token])
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already enrolled"));

    let (_, out, _) = ctl(dir, &["devices", "list", "--json"], None).await;
    let devices: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let id = devices[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(devices[0]["tags"], serde_json::json!(["site:lab"]));

    let (code, out, _) = ctl(
        dir,
        &["devices", "tag", &id, "+role:kiosk", "-site:lab"],
        None,
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        out.contains("role:kiosk") && !out.contains("site:lab"),
        "{out}"
    );
    let (code, out, _) = ctl(dir, &["devices", "issue-key", &id], None).await;
    assert_eq!(code, 0);
    assert!(out.contains("Device key (shown once): cak_"), "{out}");
    let (_, out, _) = ctl(dir, &["devices", "show", &id, "--json"], None).await;
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    let keys = shown["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let key_id = keys[1]["id"].as_str().unwrap().to_owned();
    let (code, out, _) = ctl(
        dir,
        &["devices", "revoke-key", &id, &key_id, "--reason", "spare"],
        None,
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("revoked") && out.contains("spare"), "{out}");
    let (_, out, _) = ctl(dir, &["devices", "show", &id], None).await;
    assert!(
        out.contains("Fingerprint") && out.contains("kiosk"),
        "{out}"
    );

    let token_id = {
        let (_, out, _) = ctl(dir, &["enroll-token", "list", "--json"], None).await;
        let t: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        t[0]["id"].as_str().unwrap().to_owned()
    };
    let (code, _, _) = ctl(dir, &["enroll-token", "revoke", &token_id], None).await;
    assert_eq!(code, 0);
    let (_, out, _) = ctl(dir, &["enroll-token", "list"], None).await;
    assert!(out.contains("revoked"), "{out}");
    s.stop().await;
}

/// `tessera server` with these arguments, in a throwaway data directory;
/// returns (exit code, stdout + stderr).
fn server_with(args: &[&str]) -> (i32, String) {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(tessera_testkit::tessera_bin())
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn server_durations_out_of_range_are_refused_with_the_range_in_words() {
    for (flag, bad, words) in [
        (
            "--heartbeat-interval",
            "10m",
            "between 100 milliseconds and 5 minutes",
        ),
        (
            "--heartbeat-interval",
            "50ms",
            "between 100 milliseconds and 5 minutes",
        ),
        (
            "--pairing-interval",
            "500ms",
            "between 1 second and 1 minute",
        ),
        ("--session-ttl", "90d", "between 1 minute and 30 days"),
        ("--shell-grace", "2days", "between 0 seconds and 1 day"),
        ("--pairing-ttl", "5s", "between 1 minute and 1 day"),
    ] {
        let (code, out) = server_with(&[flag, bad]);
        assert_eq!(code, 2, "{flag} {bad}: {out}");
        assert!(
            out.contains(flag) && out.contains(words),
            "{flag} {bad}: {out}"
        );
    }
    let (code, help) = server_with(&["--help"]);
    assert_eq!(code, 0, "{help}");
    for words in [
        "100 milliseconds to 5 minutes",
        "1 second to 1 minute",
        "1 minute to 30 days",
        "0 seconds (it ends with its last viewer) to 1 day",
        "1 minute to 1 day",
    ] {
        // clap wraps help text: compare with the lines joined.
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(words), "{words}: {help}");
    }
}
