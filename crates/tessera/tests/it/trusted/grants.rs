//! Grants and automatic joins: trust by SAS, a grant per peer, every
//! rejection reason produced for real and audited, member limits, rotated
//! keys and withdrawn trust.

use std::time::Duration;

use futures_util::StreamExt;
use tessera_agent::trust::TrustStore;
use tessera_client::control::{handshake, DeviceHello};
use tessera_client::{ApiClient, AuditQuery};
use tessera_core::trust::Scope;

use tessera_testkit::{
    ctl, ctl_admin, device_cmd, eventually, open_ws, AgentProcess, Options, TestDevice, TestServer,
};

use super::*;

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
