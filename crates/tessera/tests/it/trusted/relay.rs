//! End-to-end sessions through the relay: tampering is detected, a non-
//! member or removed member never gets the keys, and commitments and
//! identity keys cannot be swapped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use tessera_agent::trust::{self, TrustStore};
use tessera_core::trust::Scope;
use tessera_proto::{Body, Envelope};

use tessera_testkit::{device_cmd, eventually, AgentProcess, TestDevice, TestServer};

use super::*;

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
            .send_files(&items, |_| {})
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
        .send_files(&tessera_agent::files::walk(&[first]).unwrap(), |_| {})
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
        .send_files(&tessera_agent::files::walk(&[second]).unwrap(), |_| {})
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
