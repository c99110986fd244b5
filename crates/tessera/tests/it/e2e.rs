//! The "done when", as processes: a server, `tessera agent enroll`
//! by device code, approval on `/device`, `tessera agent run`, `tessera ctl
//! devices list|revoke`, and the agent dropping with the reason.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use tessera_testkit::{ctl, eventually, tessera_bin, ServerProcess, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_by_device_code_approve_on_the_page_see_online_revoke_and_watch_it_drop() {
    let db = TestDb::new().await;
    let server = ServerProcess::spawn(
        &db.url,
        "info",
        &["--heartbeat-interval", "500ms", "--pairing-interval", "1s"],
    )
    .await;
    let pw = server.bootstrap_password().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let agent_state = state_dir.path().join("agent");

    // 1. The agent asks to pair and prints where to approve it.
    let mut enroll = tokio::process::Command::new(tessera_bin())
        .args(["agent", "--state-dir"])
        .arg(&agent_state)
        .args(["enroll", "--server", &server.url, "--name", "e2e-laptop"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(enroll.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let complete_url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if let Some(at) = line.find("(or open ") {
                return line[at + 9..].trim_end_matches(").").to_owned();
            }
        }
        panic!("no approval URL in: {printed}");
    })
    .await
    .unwrap();
    assert!(
        complete_url.starts_with(&format!("{}/device?user_code=", server.url)),
        "{complete_url}"
    );

    // 2. An operator approves it on the page.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let web = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let code = complete_url.rsplit('=').next().unwrap().to_owned();
    let signed = web
        .post(format!("{}/device/login", server.url))
        .form(&[
            ("username", "admin"),
            ("password", pw.as_str()),
            ("user_code", &code),
        ])
        .send()
        .await
        .unwrap();
    let cookie = signed.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = web
        .get(&complete_url)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("e2e-laptop"), "{page}");
    let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = page[at..at + 64].to_owned();
    let done = web
        .post(format!("{}/device", server.url))
        .header("cookie", &cookie)
        .form(&[
            ("user_code", code.as_str()),
            ("decision", "approve"),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let status = tokio::time::timeout(Duration::from_secs(20), enroll.wait())
        .await
        .unwrap()
        .unwrap();
    while let Some(line) = lines.next_line().await.unwrap() {
        printed.push_str(&line);
        printed.push('\n');
    }
    assert!(status.success(), "{printed}");
    assert!(printed.contains("Enrolled as device"), "{printed}");

    // 3. The agent runs; the operator sees it online.
    let mut run = tokio::process::Command::new(tessera_bin())
        .args(["agent", "--state-dir"])
        .arg(&agent_state)
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let cfg = tempfile::tempdir().unwrap();
    let (code, out, err) = ctl(
        cfg.path(),
        &["login", "--server", &server.url, "--password-stdin"],
        Some(&format!("{pw}\n")),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let online = eventually(Duration::from_secs(20), || async {
        let (_, out, _) = ctl(cfg.path(), &["devices", "list"], None).await;
        out.lines()
            .any(|l| l.starts_with("e2e-laptop") && l.contains("online"))
    })
    .await;
    assert!(online, "device listed online");
    let (_, out, _) = ctl(cfg.path(), &["devices", "list", "--json"], None).await;
    let devices: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let id = devices[0]["id"].as_str().unwrap().to_owned();

    // 4. Revoked: the agent drops at once and says why.
    let (code, out, err) = ctl(
        cfg.path(),
        &[
            "devices",
            "revoke",
            &id,
            "--reason",
            "laptop reported stolen",
        ],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("revoked"), "{out}");
    let status = tokio::time::timeout(Duration::from_secs(10), run.wait())
        .await
        .unwrap()
        .unwrap();
    let mut said = String::new();
    let mut out_lines = BufReader::new(run.stdout.take().unwrap()).lines();
    while let Some(line) = out_lines.next_line().await.unwrap() {
        said.push_str(&line);
        said.push('\n');
    }
    assert_eq!(status.code(), Some(3), "{said}");
    assert!(
        said.contains("revoked this device (device_revoked): laptop reported stolen"),
        "{said}"
    );

    let (_, out, _) = ctl(cfg.path(), &["audit", "list", "--limit", "1000"], None).await;
    for action in [
        "pairing_requested",
        "pairing_approved",
        "device_enrolled",
        "key_issued",
        "device_revoked",
    ] {
        assert!(out.contains(action), "audit lacks {action}: {out}");
    }
    let (code, out, _) = ctl(cfg.path(), &["audit", "verify"], None).await;
    assert_eq!(code, 0, "{out}");
    assert!(server.terminate().await.success());
}
