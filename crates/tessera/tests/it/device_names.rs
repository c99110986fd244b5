//! "A device" as people type it: every command that takes one accepts the
//! canonical id, the grouped id `enroll` prints, an unambiguous id prefix or
//! a name, refuses an ambiguous name with the candidates listed, and the id
//! stays the same across a key rotation. Through the real binary.

use std::process::Stdio;
use std::time::Duration;

use tessera_core::identity::DeviceId;
use tessera_core::trust::Scope;
use tokio::io::{AsyncBufReadExt, BufReader};

use tessera_testkit::{
    ctl, ctl_admin, device_cmd, tessera_bin, AgentProcess, TestDevice, TestServer,
};

use crate::trusted::{grant, trust_both, DAY};

fn grouped(id: &str) -> String {
    DeviceId::parse(id).expect("a device id").grouped()
}

/// The forms a person may type for `d`, by what they are.
fn forms(d: &TestDevice) -> Vec<(&'static str, String)> {
    let g = grouped(&d.device_id);
    vec![
        ("canonical", d.device_id.clone()),
        ("grouped", g.clone()),
        ("grouped lower-case", g.to_lowercase()),
        ("prefix", d.device_id[..8].to_owned()),
        ("grouped prefix", g[..9].to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_devices_accepts_every_form_and_lists_the_candidates_of_an_ambiguous_name() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let alpha = TestDevice::enroll(&s, &admin, "alpha").await;
    let t1 = TestDevice::enroll(&s, &admin, "twin").await;
    let t2 = TestDevice::enroll(&s, &admin, "twin").await;
    let cfg = ctl_admin(&s).await;

    let mut typed = forms(&alpha);
    typed.push(("name", "alpha".to_owned()));
    for (what, t) in &typed {
        let (code, out, err) = ctl(cfg.path(), &["devices", "show", t], None).await;
        assert_eq!(code, 0, "{what} {t}: {out}{err}");
        assert!(out.contains(&alpha.device_id), "{what} {t}: {out}");
        let (code, out, err) = ctl(
            cfg.path(),
            &["devices", "tag", t, &format!("+by-{}", what.len())],
            None,
        )
        .await;
        assert_eq!(code, 0, "tag by {what} {t}: {out}{err}");
    }

    let (code, out, err) = ctl(cfg.path(), &["devices", "show", "twin"], None).await;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("\"twin\" fits 2 devices"), "{err}");
    assert!(err.contains(&grouped(&t1.device_id)), "{err}");
    assert!(err.contains(&grouped(&t2.device_id)), "{err}");
    let (code, _, err) = ctl(cfg.path(), &["devices", "revoke", "nosuch"], None).await;
    assert_ne!(code, 0);
    assert!(err.contains("no device named \"nosuch\""), "{err}");
    // Too short to be a prefix: not guessed at.
    let (code, _, err) = ctl(
        cfg.path(),
        &["devices", "show", &alpha.device_id[..3]],
        None,
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("no device named"), "{err}");
    // Nothing changed for the refused ones.
    let twins = admin.list_devices().await.expect("devices");
    assert!(twins.iter().all(|d| !d.revoked), "nothing revoked");

    // Durations: human form, and the range in words when out of it.
    let (code, _, err) = ctl(
        cfg.path(),
        &["enroll-token", "create", "--ttl", "40d"],
        None,
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("between 1 minute and 30 days"), "{err}");

    // The twins by their ids still work, and the fingerprint shown is the
    // grouped id until a rotation.
    let (code, out, _) = ctl(
        cfg.path(),
        &["devices", "show", &grouped(&t2.device_id)],
        None,
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("Fingerprint") && l.contains(&grouped(&t2.device_id))),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_commands_accept_grouped_ids_prefixes_and_names() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    let _c = TestDevice::enroll(&s, &admin, "charlie").await;
    trust_both(&a, &b).await;

    // trust show: every form, and the trust store's own name ("peer").
    let mut typed = forms(&b);
    typed.push(("local name", "peer".to_owned()));
    typed.push(("server name", "bravo".to_owned()));
    for (what, t) in &typed {
        let (code, out, err) = device_cmd(&a, &["trust", "show", t], None).await;
        assert_eq!(code, 0, "trust show by {what} {t}: {out}{err}");
        assert!(out.contains(&b.device_id), "{what}: {out}");
        // One fingerprint: the grouped id before any rotation.
        assert!(out.contains(&grouped(&b.device_id)), "{what}: {out}");
    }
    let (code, _, err) = device_cmd(&a, &["trust", "show", "nosuch"], None).await;
    assert_ne!(code, 0);
    assert!(err.contains("no device named \"nosuch\""), "{err}");

    // grant add / revoke with the dashed id enroll prints, and by name.
    let (code, out, err) = device_cmd(
        &b,
        &["grant", "add", &grouped(&a.device_id), "--scope", "files"],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = device_cmd(&b, &["grant", "revoke", "alpha"], None).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = device_cmd(
        &b,
        &[
            "grant",
            "add",
            &a.device_id[..8].to_lowercase(),
            "--scope",
            "files",
        ],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");

    // A duration out of range is refused with the range in words, and
    // nothing is granted.
    let (code, _, err) = device_cmd(
        &b,
        &["grant", "renew", "alpha", "--expires", "2years"],
        None,
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("between 1 minute and 1 year"), "{err}");

    // send by the server's name of the receiver.
    let _agent_b = AgentProcess::start(&s, &b).await;
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("hello.txt");
    std::fs::write(&file, b"hi\n").unwrap();
    let (code, out, err) = device_cmd(
        &a,
        &["send", "bravo", file.to_str().unwrap(), "--quiet"],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Sent 1 file(s)"), "{out}");

    // trust remove by grouped prefix.
    let (code, out, err) =
        device_cmd(&a, &["trust", "remove", &grouped(&b.device_id)[..9]], None).await;
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_keeps_the_device_id_the_agent_and_the_server_show() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let id = grouped(&a.device_id);

    let (code, out, err) = device_cmd(&a, &["agent", "rotate-key"], None).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("the device id stays {id}")), "{out}");
    let new_fp = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("new fingerprint"))
        .map(|f| f.trim().to_owned())
        .expect("the new fingerprint is printed");
    assert_ne!(new_fp, id);

    // The operator sees the same id and the new key's fingerprint.
    let cfg = ctl_admin(&s).await;
    let (code, out, err) = ctl(cfg.path(), &["devices", "show", &id], None).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&a.device_id), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("Fingerprint") && l.contains(&new_fp)),
        "{out}"
    );

    // The agent announces the id the server knows.
    let mut child = tokio::process::Command::new(tessera_bin())
        .args(["agent", "run", "--state-dir"])
        .arg(a.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn agent run");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the agent says something")
        .expect("read")
        .expect("a line");
    assert!(
        first.contains(&format!("device {id} connecting")),
        "{first}"
    );
    let _ = child.kill().await;

    // B's trust verify shows the same new fingerprint.
    let (_, out, _) = device_cmd(&b, &["trust", "verify", "alpha"], Some("no\n")).await;
    assert!(out.contains(&new_fp), "{out}");
}
