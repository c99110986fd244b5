//! Trusted devices: SAS-verified pins, automatic-join grants, automatic
//! end-to-end sessions and file transfer, with real agent processes on
//! separate state directories.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use prost::Message as _;
use tessera_agent::auto::AutoSession;
use tessera_agent::control::Credentials;
use tessera_agent::trust::{self, TrustStore};
use tessera_client::control::{handshake, DeviceHello};
use tessera_client::{ApiClient, AuditQuery};
use tessera_core::api::AuditEntryView;
use tessera_core::trust::Scope;
use tessera_proto::{Body, Envelope};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use tessera_testkit::{
    ctl, ctl_admin, device_cmd, eventually, open_ws, peak_rss, tessera_bin, AgentProcess, Options,
    TestDevice, TestServer,
};

const DAY: Duration = Duration::from_secs(86_400);

fn creds(d: &TestDevice) -> Credentials {
    Credentials::load(&d.state).expect("credentials")
}

/// Both devices verify each other through the library (the SAS compared
/// by the test, as a person would).
async fn trust_both(a: &TestDevice, b: &TestDevice) {
    let (ca, cb) = (creds(a), creds(b));
    let (xa, xb) = tokio::join!(
        trust::exchange(&ca, &b.device_id),
        trust::exchange(&cb, &a.device_id)
    );
    let (xa, xb) = (xa.expect("exchange a"), xb.expect("exchange b"));
    assert_eq!(xa.sas, xb.sas, "both sides show the same code");
    trust::confirm(&a.state, &ca, &xa, "peer")
        .await
        .expect("confirm a");
    let att = trust::confirm(&b.state, &cb, &xb, "peer")
        .await
        .expect("confirm b");
    assert!(att.mutual);
}

/// `granter` lets `grantee` auto-join it.
async fn grant(
    granter: &TestDevice,
    grantee: &TestDevice,
    scopes: &[Scope],
    ttl: Duration,
) -> tessera_core::api::GrantView {
    trust::grant(
        &granter.state,
        &creds(granter),
        &grantee.device_id,
        scopes,
        ttl,
    )
    .await
    .expect("grant")
}

async fn create(a: &TestDevice, members: &[&str], scope: Scope, all: bool) -> AutoSession {
    let store = TrustStore::load(&a.state).expect("trust store");
    let members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
    AutoSession::create(&creds(a), &store, &members, scope, all)
        .await
        .expect("session request answered")
}

fn outcomes(s: &AutoSession) -> HashMap<String, String> {
    s.outcomes
        .iter()
        .map(|o| (o.device_id.clone(), o.outcome.clone()))
        .collect()
}

async fn audit(admin: &ApiClient, action: &str) -> Vec<AuditEntryView> {
    admin
        .audit_page(&AuditQuery {
            action: Some(action.to_owned()),
            limit: Some(500),
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
        .entries
}

/// Every file under `dir`, relative path → contents.
fn files_under(dir: &Path) -> HashMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut HashMap<String, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = HashMap::new();
    walk(dir, dir, &mut out);
    out
}

fn inbox(d: &TestDevice) -> PathBuf {
    d.dir().join("inbox")
}

/// A `tessera trust add` process, answered on its standard input.
struct TrustAdd {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl TrustAdd {
    fn spawn(me: &TestDevice, peer: &TestDevice) -> TrustAdd {
        let mut child = tokio::process::Command::new(tessera_bin())
            .args(["trust", "add", &peer.device_id])
            .env("TESSERA_AGENT_STATE_DIR", me.dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tessera trust add");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        TrustAdd { child, lines }
    }

    /// The code it shows (`123-456`).
    async fn sas(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                let t = line.trim();
                if t.len() == 7
                    && t.as_bytes()[3] == b'-'
                    && t.replace('-', "").parse::<u32>().is_ok()
                {
                    return t.to_owned();
                }
            }
            panic!("trust add ended without showing a code")
        })
        .await
        .expect("a code within 30 s")
    }

    async fn answer(mut self, text: &str) -> (i32, String) {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).await.unwrap();
        drop(stdin);
        let mut rest = String::new();
        while let Ok(Some(l)) = self.lines.next_line().await {
            rest.push_str(&l);
            rest.push('\n');
        }
        let status = self.child.wait().await.unwrap();
        (status.code().unwrap_or(-1), rest)
    }
}

/// Both devices run `tessera trust add` for each other; the person checks
/// the codes match and says yes on both.
async fn trust_cli(a: &TestDevice, b: &TestDevice) {
    let (mut pa, mut pb) = (TrustAdd::spawn(a, b), TrustAdd::spawn(b, a));
    let (sa, sb) = tokio::join!(pa.sas(), pb.sas());
    assert_eq!(sa, sb, "both screens show the same code");
    let ((ca, oa), (cb, ob)) = tokio::join!(pa.answer("yes\n"), pb.answer("yes\n"));
    assert_eq!((ca, cb), (0, 0), "{oa}\n{ob}");
    assert!(
        oa.contains("Trusted") && ob.contains("Trusted"),
        "{oa}\n{ob}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_trust_grant_and_send_a_folder_then_a_revoked_grant_stops_the_next_session() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    let c = TestDevice::enroll(&s, &admin, "charlie").await;
    let _agent_b = AgentProcess::start(&s, &b).await;
    let _agent_c = AgentProcess::start(&s, &c).await;

    trust_cli(&a, &b).await;
    trust_cli(&a, &c).await;
    trust_cli(&b, &c).await;
    let (code, out, err) = device_cmd(&a, &["trust", "list"], None).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("bravo") && out.contains("charlie"), "{out}");
    let (code, out, _) = device_cmd(&a, &["trust", "show", &b.device_id], None).await;
    assert_eq!(code, 0);
    assert!(out.contains("pinned key"), "{out}");

    for d in [&b, &c] {
        let (code, out, err) =
            device_cmd(d, &["grant", "add", &a.device_id, "--scope", "files"], None).await;
        assert_eq!(code, 0, "{out}{err}");
    }

    let src = tempfile::tempdir().unwrap();
    let folder = src.path().join("holiday");
    std::fs::create_dir_all(folder.join("raw")).unwrap();
    std::fs::write(folder.join("notes.txt"), b"what we saw\n").unwrap();
    let photo: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(folder.join("raw/photo.bin"), &photo).unwrap();
    let to = format!("{},{}", b.device_id, c.device_id);
    let (code, out, err) = device_cmd(
        &a,
        &["send", &to, folder.to_str().unwrap(), "--quiet"],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Sent 2 file(s)"), "{out}");
    for d in [&b, &c] {
        let got = files_under(&inbox(d));
        assert_eq!(got.len(), 2, "{:?}", got.keys());
        assert_eq!(got["holiday/notes.txt"], b"what we saw\n");
        assert_eq!(got["holiday/raw/photo.bin"], photo);
    }

    // Governance: the granting device and the operator both see the grant
    // and its last use.
    let (code, out, _) = device_cmd(&b, &["grant", "list", "--json"], None).await;
    assert_eq!(code, 0);
    let grants: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let to_a = grants
        .iter()
        .find(|g| g["grantee"] == a.device_id.as_str())
        .expect("b's grant to a");
    assert_eq!(to_a["state"], "active");
    assert!(to_a["last_used_at"].is_string(), "{to_a}");
    let cfg = ctl_admin(&s).await;
    let (code, out, _) = ctl(cfg.path(), &["grants", "list"], None).await;
    assert_eq!(code, 0);
    assert_eq!(out.matches("active").count(), 2, "{out}");

    // B takes its grant back: the next session is refused with the reason.
    let (code, out, err) = device_cmd(&b, &["grant", "revoke", &a.device_id], None).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = device_cmd(
        &a,
        &[
            "send",
            &b.device_id,
            folder.join("notes.txt").to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("grant_revoked"), "{out}");
    let (code, out, _) = ctl(
        cfg.path(),
        &["audit", "list", "--action", "auto_join"],
        None,
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("grant_revoked"), "{out}");
    assert!(out.contains("\"outcome\":\"joined\""), "{out}");
    s.stop().await;
}

/// A device online with protocol version 1: it predates automatic
/// sessions.
async fn connect_v1(s: &TestServer, d: &TestDevice) -> impl Drop {
    let mut ws = open_ws(&format!("ws://{}/ws/device", s.addr), d.key.expose())
        .await
        .expect("upgrade");
    let keys = d.state.identity().unwrap();
    let id = keys.device_id();
    let hello = DeviceHello {
        protocol_version: 1,
        os: "old".into(),
        hostname: "old".into(),
        ..DeviceHello::agent(&keys, &id, "0.0.1-old")
    };
    let welcome = handshake(&mut ws, &hello).await.expect("welcome");
    assert_eq!(welcome.protocol_version, 1);
    // Keep reading (and so answering nothing) in the background.
    let task = tokio::spawn(async move { while ws.next().await.is_some() {} });
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    Abort(task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_reason_is_produced_for_real_and_audited() {
    let s = TestServer::start_with(Options {
        configure: Some(Box::new(|c| c.auto_session_max_members = 16)),
        ..Options::default()
    })
    .await;
    let admin = s.admin().await;
    let enroll = |name: &'static str| TestDevice::enroll(&s, &admin, name);
    let a = enroll("creator").await;
    let ok = enroll("ok").await;
    let other = enroll("other-tenant").await;
    let offline = enroll("offline").await;
    let stranger = enroll("stranger").await;
    let no_grant = enroll("no-grant").await;
    let revoked = enroll("revoked").await;
    let expired = enroll("expired").await;
    let shell_only = enroll("shell-only").await;
    let old = enroll("old-version").await;
    for d in [
        &ok,
        &other,
        &offline,
        &no_grant,
        &revoked,
        &expired,
        &shell_only,
        &old,
    ] {
        trust_both(&a, d).await;
    }
    for d in [&ok, &other, &offline, &revoked, &old] {
        grant(d, &a, &[Scope::Files], 30 * DAY).await;
    }
    grant(&expired, &a, &[Scope::Files], Duration::from_secs(3600)).await;
    grant(&shell_only, &a, &[Scope::Shell], 30 * DAY).await;
    // An operator takes one grant back server-side.
    let cfg = ctl_admin(&s).await;
    let revoked_id = admin
        .grants()
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.granter == revoked.device_id)
        .unwrap()
        .id;
    let (code, out, err) = ctl(
        cfg.path(),
        &["grants", "revoke", &revoked_id, "--reason", "lost laptop"],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    // One device moves to another tenant behind the API's back.
    let db = s.db.as_ref().unwrap();
    db.raw("INSERT INTO tenants (id, name, created_at) VALUES ('00000000-0000-0000-0000-0000000000ff', 'elsewhere', 0)")
        .await
        .unwrap();
    db.raw(&format!(
        "UPDATE devices SET tenant_id = '00000000-0000-0000-0000-0000000000ff' WHERE id = '{}'",
        other.device_id
    ))
    .await
    .unwrap();
    let _agent_ok = AgentProcess::start(&s, &ok).await;
    let _old_conn = connect_v1(&s, &old).await;
    // Two hours later the one-hour grant has lapsed (the server's clock).
    s.clock.advance(Duration::from_secs(2 * 3600));

    let unknown = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let named = [
        (ok.device_id.as_str(), "joined"),
        (unknown, "unknown_device"),
        (other.device_id.as_str(), "other_tenant"),
        (offline.device_id.as_str(), "offline"),
        (stranger.device_id.as_str(), "not_mutually_trusted"),
        (no_grant.device_id.as_str(), "no_grant"),
        (revoked.device_id.as_str(), "grant_revoked"),
        (expired.device_id.as_str(), "grant_expired"),
        (shell_only.device_id.as_str(), "scope_missing"),
        (old.device_id.as_str(), "incompatible_version"),
    ];
    let ids: Vec<&str> = named.iter().map(|(d, _)| *d).collect();
    let mut session = create(&a, &ids, Scope::Files, false).await;
    let got = outcomes(&session);
    for (d, want) in named {
        assert_eq!(got.get(d).map(String::as_str), Some(want), "{d}");
    }
    assert_eq!(session.joined(), vec![ok.device_id.clone()]);
    session.send_text("hello").await.unwrap();
    session.end().await;

    // All or nothing: one refusal and nobody is invited.
    let all = create(
        &a,
        &[ok.device_id.as_str(), stranger.device_id.as_str()],
        Scope::Files,
        true,
    )
    .await;
    assert!(all.joined().is_empty());
    all.end().await;

    let rows = audit(&admin, "auto_join").await;
    for (d, want) in named {
        let want = if want == "joined" { "invited" } else { want };
        assert!(
            rows.iter().any(|r| r.details["member"] == d
                && r.details["outcome"] == want
                && r.details["checked_by"] == "server"),
            "no audit row for {d} {want}"
        );
    }
    assert!(rows
        .iter()
        .any(|r| r.details["member"] == ok.device_id.as_str()
            && r.details["outcome"] == "joined"
            && r.details["checked_by"] == "member"));
    assert_eq!(audit(&admin, "auto_session_created").await.len(), 2);
    assert!(!audit(&admin, "grant_revoked").await.is_empty());
    assert!(!audit(&admin, "trust_established").await.is_empty());
    assert!(!audit(&admin, "grant_created").await.is_empty());
    no_key_material_in_audit(&admin, &[&a, &ok, &offline, &old]).await;
    s.stop().await;
}

/// No audit row holds a key: no device's public or private key bytes (hex
/// or base64url) and no device key.
async fn no_key_material_in_audit(admin: &ApiClient, devices: &[&TestDevice]) {
    let rows = admin
        .audit_page(&AuditQuery {
            limit: Some(1000),
            ..AuditQuery::default()
        })
        .await
        .unwrap()
        .entries;
    let text = serde_json::to_string(&rows).unwrap();
    let b64 = |b: &[u8]| data_encoding::BASE64URL_NOPAD.encode(b);
    for d in devices {
        let k = d.state.identity().unwrap();
        let secret = k.to_bytes();
        for needle in [
            tessera_core::secret::hex(&k.ed25519_public()),
            tessera_core::secret::hex(&k.x25519_public()),
            b64(&k.ed25519_public()),
            b64(&k.x25519_public()),
            tessera_core::secret::hex(&secret[..32]),
            tessera_core::secret::hex(&secret[32..]),
            b64(&secret[..32]),
            d.key.expose().to_owned(),
        ] {
            assert!(!text.contains(&needle), "key material in the audit log");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_member_limit_devices_are_refused_with_too_many_members() {
    let s = TestServer::start_with(Options {
        configure: Some(Box::new(|c| c.auto_session_max_members = 3)),
        ..Options::default()
    })
    .await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "creator").await;
    let mut members = Vec::new();
    for name in ["m1", "m2", "m3"] {
        members.push(TestDevice::enroll(&s, &admin, name).await);
    }
    let ids: Vec<&str> = members.iter().map(|m| m.device_id.as_str()).collect();
    let session = create(&a, &ids, Scope::Files, false).await;
    let got = outcomes(&session);
    // The creator counts: two named devices fit, the third does not.
    assert_eq!(got[ids[0]], "not_mutually_trusted");
    assert_eq!(got[ids[1]], "not_mutually_trusted");
    assert_eq!(got[ids[2]], "too_many_members");
    let rows = audit(&admin, "auto_join").await;
    assert!(rows
        .iter()
        .any(|r| r.details["member"] == ids[2] && r.details["outcome"] == "too_many_members"));
    session.end().await;
    // A request naming more than any session could hold is refused whole,
    // before a single lookup; names that are no device id are unknown.
    let many: Vec<String> = (0..300).map(|i| format!("name-{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let refused = create(&a, &many, Scope::Files, false).await;
    assert_eq!(
        outcomes(&refused).get(""),
        Some(&"too_many_members".to_owned())
    );
    refused.end().await;
    let odd = create(&a, &["../../etc\u{0}passwd"], Scope::Files, false).await;
    assert_eq!(odd.outcomes.len(), 1);
    assert_eq!(odd.outcomes[0].outcome, "unknown_device");
    odd.end().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_refused_with_key_mismatch_until_the_peer_accepts_it() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let agent_a = AgentProcess::start(&s, &a).await;
    let _agent_b = AgentProcess::start(&s, &b).await;
    let first = create(&a, &[&b.device_id], Scope::Files, false).await;
    assert_eq!(first.joined(), vec![b.device_id.clone()]);
    first.end().await;

    let (code, out, err) = device_cmd(&a, &["agent", "rotate-key"], None).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("old") && out.contains("new"), "{out}");
    // A's running agent proved the old key: it reconnects with the new one.
    let conn_before = s.state.registry().conn_of(&a.device_id);
    let (state, id) = (s.state.clone(), a.device_id.clone());
    assert!(
        eventually(Duration::from_secs(15), || {
            let (state, id) = (state.clone(), id.clone());
            async move {
                let c = state.registry().conn_of(&id);
                c.is_some() && c != conn_before
            }
        })
        .await,
        "a's agent reconnected with its new key; log: {}",
        agent_a.log()
    );

    // B pinned A's old key, and its grant names the old fingerprint.
    let refused = create(&a, &[&b.device_id], Scope::Files, false).await;
    assert_eq!(outcomes(&refused)[&b.device_id], "key_mismatch");
    refused.end().await;
    let (_, out, _) = device_cmd(&b, &["grant", "list", "--json"], None).await;
    let grants: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(grants
        .iter()
        .any(|g| g["grantee"] == a.device_id.as_str() && g["state"] == "key_mismatch"));

    // Saying no keeps the old pin.
    let (code, out, _) = device_cmd(&b, &["trust", "verify", &a.device_id], Some("no\n")).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("pinned") && out.contains("now"), "{out}");
    // Accepting it re-pins and re-grants; sessions work again.
    let (code, out, err) = device_cmd(&b, &["trust", "verify", &a.device_id], Some("yes\n")).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("signed the change"), "{out}");
    let again = create(&a, &[&b.device_id], Scope::Files, false).await;
    assert_eq!(
        again.joined(),
        vec![b.device_id.clone()],
        "{:?}",
        again.refusals
    );
    again.end().await;
    assert!(!audit(&admin, "identity_key_rotated").await.is_empty());
    assert!(!audit(&admin, "grant_renewed").await.is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_refuses_locally_is_reported_and_audited() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    // B's own store no longer pins A (restored from an old backup, say):
    // the server still thinks they trust each other, B does not.
    let mut store = TrustStore::load(&b.state).unwrap();
    store.peers.remove(&a.device_id);
    store.save(&b.state).unwrap();
    let _agent_b = AgentProcess::start(&s, &b).await;
    let session = create(&a, &[&b.device_id], Scope::Files, false).await;
    assert_eq!(outcomes(&session)[&b.device_id], "joined");
    assert!(session.joined().is_empty());
    assert_eq!(
        session.refusals,
        vec![(b.device_id.clone(), "not_mutually_trusted".to_owned())]
    );
    session.end().await;
    let rows = audit(&admin, "auto_join").await;
    assert!(rows
        .iter()
        .any(|r| r.actor == format!("device:{}", b.device_id)
            && r.details["outcome"] == "not_mutually_trusted"
            && r.details["checked_by"] == "member"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_trust_withdraws_the_grant_and_stops_sessions() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let (code, out, err) = device_cmd(&b, &["trust", "remove", &a.device_id], None).await;
    assert_eq!(code, 0, "{out}{err}");
    let _agent_b = AgentProcess::start(&s, &b).await;
    let session = create(&a, &[&b.device_id], Scope::Files, false).await;
    assert_eq!(
        outcomes(&session)[&b.device_id],
        "not_mutually_trusted",
        "withdrawn trust counts"
    );
    session.end().await;
    let g = admin.grants().await.unwrap();
    assert!(g.iter().all(|g| g.state == "revoked"), "{g:?}");
    assert!(!audit(&admin, "trust_removed").await.is_empty());
    // Removing twice is refused and changes nothing.
    let (code, _, err) = device_cmd(&b, &["trust", "remove", &a.device_id], None).await;
    assert_eq!(code, 1);
    assert!(err.contains("not a trusted peer"), "{err}");
    s.stop().await;
}

/// Relayed traffic seen by the test's relay tap.
type Seen = Arc<Mutex<Vec<Body>>>;

fn record(s: &TestServer) -> Seen {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    s.state.set_relay_tap(Some(Arc::new(move |b: &mut Body| {
        sink.lock().unwrap().push(b.clone());
    })));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_flipped_on_the_relay_is_detected_and_the_member_aborts() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let _agent_b = AgentProcess::start(&s, &b).await;
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("big.bin");
    std::fs::write(&file, vec![7u8; 4 * 1024 * 1024]).unwrap();
    let items = tessera_agent::files::walk(&[file]).unwrap();
    // The relay flips one bit of the creator's third payload (a chunk): in
    // the ciphertext, then in the origin tag that says the creator sent it.
    for part in ["ciphertext", "origin tag"] {
        s.state.set_relay_tap(Some(Arc::new(move |b: &mut Body| {
            if let Body::E2eData(d) = b {
                if d.sender == 0 && d.counter == 3 {
                    if part == "ciphertext" {
                        let mut v = d.ciphertext.to_vec();
                        v[20] ^= 0x01;
                        d.ciphertext = v.into();
                    } else {
                        for t in &mut d.tags {
                            let mut v = t.tag.to_vec();
                            v[0] ^= 0x01;
                            t.tag = v.into();
                        }
                    }
                }
            }
        })));
        let mut session = create(&a, &[&b.device_id], Scope::Files, false).await;
        assert_eq!(session.joined(), vec![b.device_id.clone()]);
        let err = session
            .send_files(&items, false)
            .await
            .expect_err("the member aborts");
        assert!(err.to_string().contains("tampered"), "{part}: {err}");
        session.end().await;
        assert!(
            files_under(&inbox(&b)).is_empty(),
            "{part}: nothing kept, not even a partial file"
        );
    }
    let left = audit(&admin, "auto_member_left").await;
    assert!(
        left.iter()
            .any(|r| r.details["member"] == b.device_id.as_str()
                && r.details["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("tampered"))),
        "{left:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_cannot_decrypt_and_a_removed_member_gets_the_next_key_never() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    let c = TestDevice::enroll(&s, &admin, "charlie").await;
    let eve = TestDevice::enroll(&s, &admin, "eve").await;
    for d in [&b, &c] {
        trust_both(&a, d).await;
        grant(d, &a, &[Scope::Files], 30 * DAY).await;
    }
    trust_both(&a, &eve).await;
    let _agent_b = AgentProcess::start(&s, &b).await;
    let _agent_c = AgentProcess::start(&s, &c).await;
    let seen = record(&s);
    let marker = "MARKER-the-relay-must-never-see-this";
    let src = tempfile::tempdir().unwrap();
    let first = src.path().join("first.txt");
    std::fs::write(&first, marker.repeat(100)).unwrap();
    let second = src.path().join("second.txt");
    std::fs::write(&second, marker.repeat(50)).unwrap();

    let mut session = create(&a, &[&b.device_id, &c.device_id], Scope::Files, false).await;
    assert_eq!(session.joined().len(), 2);
    session.send_text(marker).await.unwrap();
    session
        .send_files(&tessera_agent::files::walk(&[first]).unwrap(), false)
        .await
        .unwrap();
    let before_removal = seen.lock().unwrap().len();
    session.remove(&c.device_id).await.unwrap();
    // Eve, no member, tries to slip a payload to B: the relay drops it (B
    // would abort on it, and the next transfer would fail).
    let eve_conn = tessera_agent::control::ClientConnection::open(&creds(&eve))
        .await
        .unwrap();
    eve_conn
        .send(Body::E2eData(tessera_proto::v1::E2eData {
            session_id: session.session_id.clone(),
            epoch: 1,
            sender: 0,
            counter: 1_000_000,
            ciphertext: bytes::Bytes::from_static(b"junk that would not open"),
            to: b.device_id.clone(),
            tags: vec![],
        }))
        .await
        .unwrap();
    session
        .send_files(&tessera_agent::files::walk(&[second]).unwrap(), false)
        .await
        .expect("b still takes part");
    let session_id = session.session_id.clone();
    session.end().await;

    assert!(files_under(&inbox(&b)).contains_key("second.txt"));
    let c_got = files_under(&inbox(&c));
    assert!(c_got.contains_key("first.txt"));
    assert!(
        !c_got.contains_key("second.txt"),
        "the removed member got nothing after"
    );

    let seen = seen.lock().unwrap().clone();
    for body in &seen {
        let bytes = Envelope::of(body.clone()).encode_to_vec();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "plaintext on the relay"
        );
    }
    // After the removal: the new key went to B only, and every payload
    // is under it.
    for body in &seen[before_removal..] {
        match body {
            Body::E2eHandshake(h) => assert_eq!(h.to, b.device_id),
            Body::E2eData(d) if d.sender == 0 => assert_eq!(d.epoch, 1),
            _ => {}
        }
    }
    // Eve holds every relayed byte and her own keys, and even claiming to
    // be B cannot open the handshake that carries B's session key.
    let m1 = seen
        .iter()
        .find_map(|body| match body {
            Body::E2eHandshake(h) if h.to == b.device_id && h.from == a.device_id => {
                Some(h.payload.clone())
            }
            _ => None,
        })
        .expect("the creator's first handshake message to b");
    let eve_keys = eve.state.identity().unwrap();
    let a_x = a.state.identity().unwrap().x25519_public();
    let mut hs = tessera_core::e2e::kk_responder(
        &eve_keys.x25519_secret().to_bytes(),
        &a_x,
        &tessera_core::e2e::prologue(&session_id, &a.device_id, &b.device_id),
    )
    .unwrap();
    assert!(tessera_core::e2e::read(&mut hs, &m1).is_err());
    s.stop().await;
}

/// Writes `size` bytes of pseudo-random content (BLAKE3's output stream)
/// and returns their hash.
fn random_file(path: &Path, size: u64) -> blake3::Hash {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut stream = blake3::Hasher::new()
        .update(b"tessera test file")
        .finalize_xof();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        stream.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    out.flush().unwrap();
    hasher.finalize()
}

fn hash_file(path: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path).unwrap()).unwrap();
    h.finalize()
}

/// Spawns `tessera send` as `from`, and samples its peak memory until it
/// exits; returns (exit code, stdout, stderr, peak RSS in bytes).
async fn send_measured(from: &TestDevice, to: &str, path: &Path) -> (i32, String, String, u64) {
    let mut child = tokio::process::Command::new(tessera_bin())
        .args(["send", to, path.to_str().unwrap(), "--quiet"])
        .env("TESSERA_AGENT_STATE_DIR", from.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut peak = 0;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let io = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut o, mut e) = (String::new(), String::new());
        let _ = tokio::join!(stdout.read_to_string(&mut o), stderr.read_to_string(&mut e));
        (o, e)
    });
    let status = tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if !status.contains("State:\tZ") {
                    peak = peak.max(peak_rss(pid));
                }
            }
            match tokio::time::timeout(Duration::from_millis(200), child.wait()).await {
                Ok(status) => return status.unwrap(),
                Err(_) => continue,
            }
        }
    })
    .await
    .expect("send finishes");
    let (o, e) = io.await.unwrap();
    (status.code().unwrap_or(-1), o, e, peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_streams_through_in_bounded_memory_and_verifies() {
    const SIZE: u64 = 1 << 30;
    const BOUND: u64 = 96 << 20;
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let agent_b = AgentProcess::start(&s, &b).await;
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("disk.img");
    let want = random_file(&file, SIZE);

    let started = std::time::Instant::now();
    let (code, out, err, sender_peak) = send_measured(&a, &b.device_id, &file).await;
    let took = started.elapsed();
    assert_eq!(code, 0, "{out}{err}");
    let receiver_peak = peak_rss(agent_b.pid());
    let test_peak = peak_rss(std::process::id());
    eprintln!(
        "1 GiB: {:.1} s, sender peak {} MiB, receiver peak {} MiB, server+test peak {} MiB",
        took.as_secs_f64(),
        sender_peak >> 20,
        receiver_peak >> 20,
        test_peak >> 20
    );
    assert!(sender_peak < BOUND, "sender peak {} MiB", sender_peak >> 20);
    assert!(
        receiver_peak < BOUND,
        "receiver peak {} MiB",
        receiver_peak >> 20
    );
    // The relay (in this test process) holds bounded queues, not the file.
    assert!(test_peak < 2 * BOUND, "server peak {} MiB", test_peak >> 20);
    let got = inbox(&b).join("disk.img");
    assert_eq!(std::fs::metadata(&got).unwrap().len(), SIZE);
    assert_eq!(hash_file(&got), want);
    std::fs::remove_file(got).unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_transfer_leaves_no_file_under_its_final_name() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let _agent_b = AgentProcess::start(&s, &b).await;
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("movie.mkv");
    random_file(&file, 512 << 20);

    for signal in ["-INT", "-KILL"] {
        let mut child = tokio::process::Command::new(tessera_bin())
            .args(["send", &b.device_id, file.to_str().unwrap(), "--quiet"])
            .env("TESSERA_AGENT_STATE_DIR", a.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Wait until part of it has arrived (under a temporary name).
        let dir = inbox(&b);
        assert!(
            eventually(Duration::from_secs(30), || {
                let dir = dir.clone();
                async move {
                    std::fs::read_dir(&dir).is_ok_and(|entries| {
                        entries.flatten().any(|e| {
                            e.file_name().to_string_lossy().contains("tessera-partial")
                                && e.metadata().is_ok_and(|m| m.len() > 1 << 20)
                        })
                    })
                }
            })
            .await,
            "a partial file appears"
        );
        std::process::Command::new("kill")
            .args([signal, &child.id().unwrap().to_string()])
            .status()
            .unwrap();
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("sender stops")
            .unwrap();
        assert!(!out.success(), "{signal}");
        assert!(
            eventually(Duration::from_secs(10), || {
                let dir = dir.clone();
                async move { files_under(&dir).is_empty() }
            })
            .await,
            "{signal}: nothing left in the inbox: {:?}",
            files_under(&dir).keys().collect::<Vec<_>>()
        );
        assert!(!dir.join("movie.mkv").exists());
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reveal_that_does_not_match_the_commitment_seen_before_answering_is_refused() {
    use tessera_core::api::{CreateExchangeRequest, ExchangeStepRequest};
    use tessera_core::secret::hex;
    use tessera_core::trust::commitment;
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    // The test plays A and a server that, having seen B's nonce, swaps A's
    // commitment for one to a nonce of its choosing (a SAS grinding attack).
    let ca = creds(&a);
    let client_a = ca.client().unwrap();
    let doc = ca.keys.document().encode();
    let ex = client_a
        .create_exchange(&CreateExchangeRequest {
            peer: b.device_id.clone(),
            commitment: hex(&commitment(&doc, &[1u8; 32])),
        })
        .await
        .unwrap();
    let cb = creds(&b);
    let a_id = a.device_id.clone();
    let b_side = tokio::spawn(async move { trust::exchange(&cb, &a_id).await });
    let b_id = b.device_id.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let (client_a, b_id, id) = (client_a.clone(), b_id.clone(), ex.id.clone());
            async move {
                client_a
                    .exchanges(&b_id)
                    .await
                    .unwrap()
                    .iter()
                    .any(|e| e.id == id && e.state == "responded")
            }
        })
        .await
    );
    let forged = [2u8; 32];
    s.db.as_ref()
        .unwrap()
        .raw(&format!(
            "UPDATE trust_exchanges SET commitment = '{}' WHERE id = '{}'",
            hex(&commitment(&doc, &forged)),
            ex.id
        ))
        .await
        .unwrap();
    client_a
        .exchange_step(
            &ex.id,
            "reveal",
            &ExchangeStepRequest {
                identity: doc,
                nonce: hex(&forged),
            },
        )
        .await
        .unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(10), b_side)
        .await
        .unwrap()
        .unwrap()
        .err()
        .expect("b refuses");
    assert!(
        refused
            .to_string()
            .contains("does not match its commitment"),
        "{refused}"
    );
    assert!(TrustStore::load(&b.state).unwrap().peers.is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_identity_whose_keys_the_server_changed_is_not_accepted() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    let eve = TestDevice::enroll(&s, &admin, "eve").await;
    trust_both(&a, &b).await;
    trust::rotate_identity(&a.state).await.unwrap();
    // The server serves the real, signed chain but puts Eve's X25519 key
    // in A's record.
    s.db.as_ref()
        .unwrap()
        .raw(&format!(
            "UPDATE devices SET x25519_public = (SELECT x25519_public FROM devices WHERE id = '{}') WHERE id = '{}'",
            eve.device_id, a.device_id
        ))
        .await
        .unwrap();
    let (code, out, _) = device_cmd(&b, &["trust", "verify", &a.device_id], Some("yes\n")).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("NOT signed"), "{out}");
    let pin = &TrustStore::load(&b.state).unwrap().peers[&a.device_id];
    assert_ne!(
        pin.x25519,
        tessera_core::secret::hex(&eve.state.identity().unwrap().x25519_public())
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_the_member_refuses_fails_the_transfer_for_the_sender() {
    let s = TestServer::start().await;
    let admin = s.admin().await;
    let a = TestDevice::enroll(&s, &admin, "alpha").await;
    let b = TestDevice::enroll(&s, &admin, "bravo").await;
    trust_both(&a, &b).await;
    grant(&b, &a, &[Scope::Files], 30 * DAY).await;
    let _agent_b = AgentProcess::start(&s, &b).await;
    // Something on B planted a link in its inbox where the folder would go.
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(inbox(&b)).unwrap();
    std::os::unix::fs::symlink(outside.path(), inbox(&b).join("docs")).unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("docs")).unwrap();
    std::fs::write(src.path().join("docs/a.txt"), b"a").unwrap();
    std::fs::write(src.path().join("ok.txt"), b"ok").unwrap();
    let items =
        tessera_agent::files::walk(&[src.path().join("ok.txt"), src.path().join("docs")]).unwrap();
    let mut session = create(&a, &[&b.device_id], Scope::Files, false).await;
    let err = session
        .send_files(&items, false)
        .await
        .expect_err("b refuses one file");
    assert!(err.to_string().contains("refused the transfer"), "{err}");
    session.end().await;
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    s.stop().await;
}
