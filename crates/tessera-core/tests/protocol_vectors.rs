//! The test vectors of `docs/PROTOCOL.md`, recomputed with the real code.
//!
//! Every signed or hashed byte layout that lives in `tessera-core` is
//! built here from fixed keys and inputs and compared with
//! `docs/protocol-vectors.json`, so the document cannot drift from the
//! code. Where the code does not expose a layout's bytes (the audit chain
//! hash, the SAS digest), the test builds them as PROTOCOL.md describes
//! and checks that hashing them gives what the code gives.
//!
//! To regenerate the file after a deliberate wire change:
//! `TESSERA_WRITE_VECTORS=1 cargo test -p tessera-core --test protocol_vectors`
//! (then the same for `tessera-server`), and say so in PROTOCOL.md.

use std::path::PathBuf;

use data_encoding::{BASE64URL_NOPAD, HEXLOWER};
use ed25519_dalek::Signer;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tessera_core::audit::{self, AuditContent, Checkpoint};
use tessera_core::e2e::{self, OriginKey, Place, SessionKey};
use tessera_core::identity::{
    challenge_body, signed_message, DeviceKeys, IdentityDocument, Label, PossessionClaim,
    ProofPurpose,
};
use tessera_core::trust::{
    self, AutoJoinGrant, KeyRotation, Scope, Signed, Statement, TrustAttestation, Withdrawal,
};
use tessera_core::Timestamp;

fn hex(b: &[u8]) -> String {
    HEXLOWER.encode(b)
}

fn b64(b: &[u8]) -> String {
    BASE64URL_NOPAD.encode(b)
}

/// `n` consecutive bytes starting at `start`: the fixed seeds.
fn seq32(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

/// A device's keys from a fixed Ed25519 seed and X25519 secret.
fn device(ed_seed: u8, x_secret: u8) -> DeviceKeys {
    let mut b = seq32(ed_seed).to_vec();
    b.extend_from_slice(&seq32(x_secret));
    DeviceKeys::from_bytes(&b).expect("64 bytes")
}

fn device_vector(k: &DeviceKeys, ed_seed: u8, x_secret: u8) -> Value {
    json!({
        "ed25519_seed": hex(&seq32(ed_seed)),
        "x25519_secret": hex(&seq32(x_secret)),
        "ed25519_public": hex(&k.ed25519_public()),
        "x25519_public": hex(&k.x25519_public()),
        "device_id": k.device_id().to_string(),
        "device_id_grouped": k.device_id().grouped(),
        "fingerprint": trust::fingerprint(&k.ed25519_public()),
    })
}

/// A signed statement's vector: its JSON, canonical body, the exact signed
/// bytes and the signature, checked to verify with the signer's key.
fn statement_vector<T>(statement: T, signer: &DeviceKeys) -> Value
where
    T: Statement + serde::Serialize + Clone,
{
    let body = statement.canonical();
    let signed = Signed::sign(statement.clone(), signer);
    signed
        .verify(&signer.ed25519_public())
        .expect("the statement verifies");
    let sig = BASE64URL_NOPAD
        .decode(signed.signature.as_bytes())
        .expect("base64url");
    json!({
        "statement": serde_json::to_value(&statement).expect("json"),
        "label": T::LABEL.as_str(),
        "canonical_hex": hex(&body),
        "signed_message_hex": hex(&signed_message(T::LABEL, &body)),
        "signature_hex": hex(&sig),
        "signature": signed.signature,
    })
}

const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);

fn compute() -> Map<String, Value> {
    let a = device(0x00, 0x20);
    let b = device(0x40, 0x60);
    let a2 = device(0x80, 0xa0);
    let mut out = Map::new();

    out.insert(
        "keys".into(),
        json!({
            "device_a": device_vector(&a, 0x00, 0x20),
            "device_b": device_vector(&b, 0x40, 0x60),
            "device_a_rotated": device_vector(&a2, 0x80, 0xa0),
        }),
    );

    // Identity document.
    let doc = a.document();
    let mut doc_body = vec![1u8];
    doc_body.extend_from_slice(&doc.ed25519);
    doc_body.extend_from_slice(&doc.x25519);
    let encoded = doc.encode();
    assert_eq!(IdentityDocument::decode(&encoded).expect("decodes"), doc);
    out.insert(
        "identity_document".into(),
        json!({
            "device": "device_a",
            "label": Label::Identity.as_str(),
            "body_hex": hex(&doc_body),
            "signed_message_hex": hex(&signed_message(Label::Identity, &doc_body)),
            "signature_hex": hex(&doc.signature),
            "encoded": encoded,
        }),
    );

    // Proof of key possession (device authorization; token enrollment and
    // support-code binding differ only in the purpose).
    let issued_at = T0.as_millis();
    let audience = tessera_core::identity::audience_of("HTTPS://Tessera.Example:443/ignored")
        .expect("an http(s) URL");
    assert_eq!(audience, "https://tessera.example");
    let claim = PossessionClaim {
        client_id: "tessera-agent",
        name: "build-box",
        hostname: "build-box.local",
        os: "linux",
        issued_at_ms: issued_at,
        purpose: ProofPurpose::Pairing,
        audience: &audience,
    };
    let body = claim.body();
    let sig = a.sign(Label::PairingRequest, &body);
    out.insert(
        "pairing_proof".into(),
        json!({
            "device": "device_a",
            "client_id": "tessera-agent",
            "name": "build-box",
            "hostname": "build-box.local",
            "os": "linux",
            "issued_at": issued_at.to_string(),
            "purpose": ProofPurpose::Pairing.as_str(),
            "server_url": "HTTPS://Tessera.Example:443/ignored",
            "audience": audience,
            "label": Label::PairingRequest.as_str(),
            "body_hex": hex(&body),
            "signed_message_hex": hex(&signed_message(Label::PairingRequest, &body)),
            "signature_hex": hex(&sig),
            "proof": b64(&sig),
        }),
    );

    // Control-channel challenge and the Hello signature.
    let nonce = seq32(0xc0);
    let body = challenge_body(&nonce, &a.device_id(), 2);
    let sig = a.sign(Label::Challenge, &body);
    out.insert(
        "control_challenge".into(),
        json!({
            "device": "device_a",
            "nonce_hex": hex(&nonce),
            "device_id": a.device_id().to_string(),
            "protocol_version": 2,
            "label": Label::Challenge.as_str(),
            "body_hex": hex(&body),
            "signed_message_hex": hex(&signed_message(Label::Challenge, &body)),
            "signature_hex": hex(&sig),
        }),
    );

    // SAS: commitment, then the digits.
    let (na, nb) = (seq32(0xd0), seq32(0xe0));
    let a_doc = a.document().encode();
    let commitment = trust::commitment(&a_doc, &na);
    let mut pre = b"tessera/trust-commit/v1\0".to_vec();
    pre.extend_from_slice(&(a_doc.len() as u64).to_be_bytes());
    pre.extend_from_slice(a_doc.as_bytes());
    pre.extend_from_slice(&na);
    assert_eq!(
        Sha256::digest(&pre).as_slice(),
        commitment,
        "commitment layout"
    );
    let mut sas_pre = b"tessera/sas/v1\0".to_vec();
    sas_pre.extend_from_slice(&a.ed25519_public());
    sas_pre.extend_from_slice(&b.ed25519_public());
    sas_pre.extend_from_slice(&na);
    sas_pre.extend_from_slice(&nb);
    let digest = Sha256::digest(&sas_pre);
    let prefix = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    let n = prefix % 1_000_000;
    let sas = trust::sas(&a.ed25519_public(), &b.ed25519_public(), &na, &nb);
    assert_eq!(
        sas,
        format!("{:03}-{:03}", n / 1000, n % 1000),
        "SAS layout"
    );
    out.insert(
        "sas".into(),
        json!({
            "initiator": "device_a",
            "responder": "device_b",
            "initiator_identity": a_doc,
            "initiator_nonce_hex": hex(&na),
            "responder_nonce_hex": hex(&nb),
            "commitment_preimage_hex": hex(&pre),
            "commitment_hex": hex(&commitment),
            "sas_preimage_hex": hex(&sas_pre),
            "sas_digest_hex": hex(&digest),
            "sas_prefix_u64": prefix.to_string(),
            "sas": sas,
        }),
    );

    // Signed statements.
    out.insert(
        "trust_attestation".into(),
        statement_vector(
            TrustAttestation {
                truster: a.device_id().to_string(),
                trusted: b.device_id().to_string(),
                trusted_ed25519: hex(&b.ed25519_public()),
                trusted_x25519: hex(&b.x25519_public()),
                issued_at: T0,
            },
            &a,
        ),
    );
    out.insert(
        "auto_join_grant".into(),
        statement_vector(
            AutoJoinGrant {
                id: "0190f5a0-0000-7000-8000-000000000001".into(),
                granter: b.device_id().to_string(),
                grantee: a.device_id().to_string(),
                grantee_fingerprint: trust::fingerprint(&a.ed25519_public()),
                scopes: vec![Scope::Files, Scope::Shell],
                issued_at: T0,
                expires_at: Timestamp::from_millis(T0.as_millis() + 30 * 24 * 3600 * 1000),
            },
            &b,
        ),
    );
    out.insert(
        "withdrawal".into(),
        statement_vector(
            Withdrawal {
                issuer: b.device_id().to_string(),
                subject: "grant:0190f5a0-0000-7000-8000-000000000001".into(),
                issued_at: T0,
            },
            &b,
        ),
    );
    let rotation = KeyRotation {
        device: a.device_id().to_string(),
        epoch: 1,
        old_ed25519: hex(&a.ed25519_public()),
        new_identity: a2.document().encode(),
        issued_at: T0,
    };
    let chain = [Signed::sign(rotation.clone(), &a)];
    assert!(trust::is_identity_of(
        a.device_id().as_str(),
        &a2.document(),
        &chain
    ));
    out.insert("key_rotation".into(), statement_vector(rotation, &a));

    // Audit chain: two rows.
    let details = serde_json::from_str::<Value>(
        r#"{"reason":"wrong password","attempt":3,"nested":{"z":true,"a":null},"list":["x",1]}"#,
    )
    .expect("json");
    let canonical = audit::canonical_json(&details);
    let rows = [
        AuditContent {
            seq: 1,
            occurred_at: T0,
            tenant_id: "00000000-0000-0000-0000-000000000000".into(),
            actor: "ip:192.0.2.7".into(),
            action: "login_failed".into(),
            target: Some("user:alice".into()),
            source_ip: Some("192.0.2.7".into()),
            details: canonical.clone(),
        },
        AuditContent {
            seq: 2,
            occurred_at: Timestamp::from_millis(T0.as_millis() + 1),
            tenant_id: "00000000-0000-0000-0000-000000000000".into(),
            actor: "system".into(),
            action: "server_started".into(),
            target: None,
            source_ip: None,
            details: "{}".into(),
        },
    ];
    let mut prev = audit::GENESIS;
    let mut row_vectors = Vec::new();
    for row in &rows {
        let mut pre = b"tessera/audit-chain/v1\0".to_vec();
        pre.extend_from_slice(&prev);
        pre.extend_from_slice(&row.seq.to_be_bytes());
        pre.extend_from_slice(&row.occurred_at.as_millis().to_be_bytes());
        for field in [
            Some(row.tenant_id.as_str()),
            Some(row.actor.as_str()),
            Some(row.action.as_str()),
            row.target.as_deref(),
            row.source_ip.as_deref(),
            Some(row.details.as_str()),
        ] {
            match field {
                None => pre.push(0),
                Some(s) => {
                    pre.push(1);
                    pre.extend_from_slice(&(s.len() as u64).to_be_bytes());
                    pre.extend_from_slice(s.as_bytes());
                }
            }
        }
        let hash = audit::chain_hash(&prev, row);
        assert_eq!(Sha256::digest(&pre).as_slice(), hash, "audit row layout");
        row_vectors.push(json!({
            "seq": row.seq,
            "occurred_at_ms": row.occurred_at.as_millis(),
            "tenant_id": row.tenant_id,
            "actor": row.actor,
            "action": row.action,
            "target": row.target,
            "source_ip": row.source_ip,
            "details": row.details,
            "prev_hash_hex": hex(&prev),
            "preimage_hex": hex(&pre),
            "hash_hex": hex(&hash),
        }));
        prev = hash;
    }
    out.insert(
        "audit_chain".into(),
        json!({
            "details_input": r#"{"reason":"wrong password","attempt":3,"nested":{"z":true,"a":null},"list":["x",1]}"#,
            "details_canonical": canonical,
            "rows": row_vectors,
        }),
    );

    // Audit checkpoint, signed by a node key.
    let node = ed25519_dalek::SigningKey::from_bytes(&seq32(0xf0));
    let node_public = node.verifying_key().to_bytes();
    let kid = audit::node_kid(&node_public);
    let signed_at = Timestamp::from_millis(T0.as_millis() + 60_000);
    let message = Checkpoint::message(2, &prev, signed_at, &kid);
    let signature = node.sign(&message).to_bytes();
    let checkpoint = Checkpoint {
        seq: 2,
        hash: prev,
        signed_at,
        kid: kid.clone(),
        signature,
    };
    assert!(checkpoint.verify(&node_public));
    out.insert(
        "audit_checkpoint".into(),
        json!({
            "node_seed_hex": hex(&seq32(0xf0)),
            "node_public_hex": hex(&node_public),
            "kid": kid,
            "seq": 2,
            "hash_hex": hex(&prev),
            "signed_at_ms": signed_at.as_millis(),
            "message_hex": hex(&message),
            "signature_hex": hex(&signature),
        }),
    );

    // End-to-end payload of an automatic session.
    let session_key = SessionKey::from_bytes(&seq32(0x11), 1).expect("32 bytes");
    let origin = OriginKey::from_bytes(&seq32(0x33)).expect("32 bytes");
    let session_id = "0190f5a0-0000-7000-8000-0000000000aa";
    let (sender, counter) = (1u32, 7u64);
    let plaintext = b"hello, peer";
    let sealed = e2e::seal(&session_key, session_id, sender, counter, plaintext);
    let at = Place {
        session_id,
        epoch: 1,
        sender,
        counter,
    };
    let tag = e2e::origin_tag(&origin, at, &sealed);
    let mut guard = e2e::ReplayGuard::default();
    assert_eq!(
        e2e::open_from(&session_key, &origin, &mut guard, at, &sealed, &tag).expect("opens"),
        plaintext
    );
    let mut nonce = sender.to_be_bytes().to_vec();
    nonce.extend_from_slice(&counter.to_be_bytes());
    let mut aad = b"tessera/e2e/v1\0".to_vec();
    aad.extend_from_slice(&(session_id.len() as u32).to_be_bytes());
    aad.extend_from_slice(session_id.as_bytes());
    aad.extend_from_slice(&1u32.to_be_bytes());
    aad.extend_from_slice(&sender.to_be_bytes());
    aad.extend_from_slice(&counter.to_be_bytes());
    let mut h = blake3::Hasher::new_keyed(&seq32(0x33));
    h.update(&aad);
    h.update(&sealed);
    assert_eq!(h.finalize().as_bytes(), &tag, "origin tag layout");
    out.insert(
        "e2e_payload".into(),
        json!({
            "noise_pattern": e2e::NOISE_PATTERN,
            "prologue_session_creator_member": [session_id, a.device_id().to_string(), b.device_id().to_string()],
            "prologue_hex": hex(&e2e::prologue(session_id, a.device_id().as_str(), b.device_id().as_str())),
            "session_key_hex": hex(&seq32(0x11)),
            "epoch": 1,
            "origin_key_hex": hex(&seq32(0x33)),
            "session_id": session_id,
            "sender": sender,
            "counter": counter,
            "plaintext_hex": hex(plaintext),
            "nonce_hex": hex(&nonce),
            "aad_hex": hex(&aad),
            "ciphertext_hex": hex(&sealed),
            "origin_tag_hex": hex(&tag),
        }),
    );
    out
}

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol-vectors.json")
}

#[test]
fn protocol_vectors_match_the_code() {
    let computed = compute();
    let path = vectors_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| "{}".into());
    let mut file: Map<String, Value> = serde_json::from_str(&text).expect("vectors file is JSON");
    if std::env::var_os("TESSERA_WRITE_VECTORS").is_some() {
        for (k, v) in computed {
            file.insert(k, v);
        }
        let mut text = serde_json::to_string_pretty(&Value::Object(file)).expect("json");
        text.push('\n');
        std::fs::write(&path, text).expect("write vectors");
        return;
    }
    for (name, value) in &computed {
        assert_eq!(
            file.get(name),
            Some(value),
            "docs/protocol-vectors.json section `{name}` no longer matches the code"
        );
    }
}
