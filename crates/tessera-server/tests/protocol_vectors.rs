//! The parts of `docs/PROTOCOL.md` that live in the server and the wire
//! crate, recomputed with the real code: the control channel's envelopes,
//! the viewer token, the limits, and the close codes. `tessera-core`'s
//! `tests/protocol_vectors.rs` covers the signed and hashed layouts; this
//! file also checks that the server accepts that file's pairing proof.
//!
//! Regenerate with `TESSERA_WRITE_VECTORS=1` (see the core test).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use data_encoding::{BASE64URL_NOPAD, HEXLOWER};
use prost::Message as _;
use serde_json::{json, Map, Value};
use tessera_core::identity::{challenge_body, DeviceKeys, Label, ProofPurpose};
use tessera_core::Timestamp;
use tessera_proto::v1::{Challenge, Hello};
use tessera_proto::{Body, Envelope};
use tessera_server::auth::viewer::{self as viewer_token, ViewerClaims, ViewerKeys};
use tessera_server::node_key::NodeKey;

fn hex(b: &[u8]) -> String {
    HEXLOWER.encode(b)
}

fn seq32(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

const T0: Timestamp = Timestamp::from_millis(1_800_000_000_000);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_vectors() -> Map<String, Value> {
    let text = std::fs::read_to_string(root().join("docs/protocol-vectors.json"))
        .unwrap_or_else(|_| "{}".into());
    serde_json::from_str(&text).expect("vectors file is JSON")
}

fn compute() -> Map<String, Value> {
    let mut out = Map::new();
    let mut b = seq32(0x00).to_vec();
    b.extend_from_slice(&seq32(0x20));
    let a = DeviceKeys::from_bytes(&b).expect("64 bytes");

    // The control channel's first two messages, as bytes on the wire.
    let nonce = seq32(0xc0);
    let challenge = Envelope::of(Body::Challenge(Challenge {
        nonce: nonce.to_vec().into(),
        protocol_version: 2,
        min_protocol_version: 1,
        server_time_ms: T0.as_millis(),
    }))
    .encode_to_vec();
    let signature = a.sign(Label::Challenge, &challenge_body(&nonce, &a.device_id(), 2));
    let hello = Envelope::of(Body::Hello(Hello {
        protocol_version: 2,
        role: tessera_proto::role::AGENT,
        agent_version: "0.1.0".into(),
        device_id: a.device_id().to_string(),
        signature: signature.to_vec().into(),
        os: "linux".into(),
        hostname: "build-box".into(),
    }))
    .encode_to_vec();
    out.insert(
        "control_envelopes".into(),
        json!({
            "device": "device_a",
            "challenge_envelope_hex": hex(&challenge),
            "hello": {
                "protocol_version": 2,
                "role": tessera_proto::role::AGENT,
                "agent_version": "0.1.0",
                "device_id": a.device_id().to_string(),
                "os": "linux",
                "hostname": "build-box",
                "signature_hex": hex(&signature),
            },
            "hello_envelope_hex": hex(&hello),
        }),
    );

    // A viewer token minted by a node key from a fixed seed.
    let node = NodeKey::from_seed(&seq32(0xf0));
    let keys = ViewerKeys::new(&node).expect("node key");
    let iat = T0.as_millis() / 1000;
    let claims = ViewerClaims {
        sub: "0190f5a0-0000-7000-8000-0000000000b0".into(),
        sid: "0190f5a0-0000-7000-8000-0000000000aa".into(),
        tid: "00000000-0000-0000-0000-000000000000".into(),
        access: "view_only".into(),
        purpose: viewer_token::PURPOSE.into(),
        lid: "0190f5a0-0000-7000-8000-0000000000c0".into(),
        iat,
        exp: iat + viewer_token::TTL.as_secs() as i64,
        jti: "0190f5a0-0000-7000-8000-0000000000d0".into(),
    };
    let token = keys.mint(&claims).expect("mint");
    assert_eq!(
        viewer_token::verify(&token, &node.public_key(), &claims.sid, T0),
        Ok(claims.clone())
    );
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let decode = |s: &str| BASE64URL_NOPAD.decode(s.as_bytes()).expect("base64url");
    out.insert(
        "viewer_token".into(),
        json!({
            "node_seed_hex": hex(&seq32(0xf0)),
            "node_public_hex": hex(&node.public_key()),
            "kid": node.kid(),
            "header_json": String::from_utf8(decode(parts[0])).expect("utf-8"),
            "claims_json": String::from_utf8(decode(parts[1])).expect("utf-8"),
            "signing_input": format!("{}.{}", parts[0], parts[1]),
            "signature_hex": hex(&decode(parts[2])),
            "token": token,
        }),
    );

    out.insert(
        "limits".into(),
        json!({
            "protocol_version": tessera_proto::PROTOCOL_VERSION,
            "min_protocol_version": tessera_proto::MIN_PROTOCOL_VERSION,
            "auto_session_version": tessera_proto::AUTO_SESSION_VERSION,
            "max_device_message_bytes": tessera_proto::MAX_DEVICE_FRAME,
            "max_viewer_message_bytes": tessera_proto::MAX_VIEWER_FRAME,
            "pairing_proof_window_ms": tessera_server::enrollment::PROOF_WINDOW.as_millis() as u64,
            "viewer_token_ttl_s": viewer_token::TTL.as_secs(),
            "viewer_token_max_ttl_s": viewer_token::MAX_TTL.as_secs(),
            "pairing_client_id": tessera_server::pairing::CLIENT_ID,
        }),
    );
    out
}

#[test]
fn protocol_vectors_match_the_server() {
    let computed = compute();
    let mut file = read_vectors();
    if std::env::var_os("TESSERA_WRITE_VECTORS").is_some() {
        for (k, v) in computed {
            file.insert(k, v);
        }
        let mut text = serde_json::to_string_pretty(&Value::Object(file)).expect("json");
        text.push('\n');
        std::fs::write(root().join("docs/protocol-vectors.json"), text).expect("write");
        return;
    }
    for (name, value) in &computed {
        assert_eq!(
            file.get(name),
            Some(value),
            "docs/protocol-vectors.json section `{name}` no longer matches the server"
        );
    }
}

/// The server checks the pairing proof of the vectors file the way
/// `/oauth/device_authorization`, `/api/v1/enroll` and
/// `/api/v1/support-codes/bind` do: accepted as written, refused when any
/// signed field differs.
#[test]
fn the_server_accepts_the_documented_pairing_proof() {
    let file = read_vectors();
    let p = &file["pairing_proof"];
    let s = |k: &str| p[k].as_str().expect("string field").to_owned();
    let doc = tessera_core::identity::IdentityDocument::decode(
        file["identity_document"]["encoded"]
            .as_str()
            .expect("encoded"),
    )
    .expect("identity document");
    let issued_at: i64 = s("issued_at").parse().expect("decimal");
    let proof = s("proof");
    let audience = s("audience");
    let check = |name: &str, at: i64, purpose: ProofPurpose, expected: &str| {
        let offer = tessera_server::enrollment::ProofOffer {
            issued_at: at,
            proof: &proof,
            audience: &audience,
        };
        tessera_server::enrollment::check_possession(
            &doc,
            (name, &s("hostname"), &s("os")),
            purpose,
            offer,
            expected,
            Timestamp::from_millis(issued_at),
        )
    };
    assert_eq!(s("client_id"), tessera_server::pairing::CLIENT_ID);
    assert_eq!(s("purpose"), ProofPurpose::Pairing.as_str());
    let here = audience.as_str();
    assert!(check(&s("name"), issued_at, ProofPurpose::Pairing, here).is_ok());
    assert!(check("another-name", issued_at, ProofPurpose::Pairing, here).is_err());
    assert!(check(&s("name"), issued_at + 1, ProofPurpose::Pairing, here).is_err());
    assert!(check(&s("name"), issued_at, ProofPurpose::Enroll, here).is_err());
    assert!(check(
        &s("name"),
        issued_at,
        ProofPurpose::Pairing,
        "https://other.example"
    )
    .is_err());
}

/// Close codes in the table of PROTOCOL.md's "Close codes" section.
fn documented_close_codes() -> BTreeSet<u16> {
    let text = std::fs::read_to_string(root().join("docs/PROTOCOL.md")).expect("PROTOCOL.md");
    let section = text
        .split("\n## ")
        .find(|s| s.lines().next().is_some_and(|h| h.ends_with("Close codes")))
        .expect("a `## … Close codes` section");
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(' ').next())
        .filter_map(|c| c.parse().ok())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every close code the server can send: the `u16` constants of the close
/// code modules (`tessera_proto::close`, the viewer relay's `close`) and
/// every number literal passed where a close frame is made.
fn close_codes_in_code() -> BTreeSet<u16> {
    let mut files = Vec::new();
    rust_files(&root().join("crates/tessera-server/src"), &mut files);
    rust_files(&root().join("crates/tessera-proto/src"), &mut files);
    let mut codes = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source");
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("pub const ") {
                if let Some((_, value)) = rest.split_once(": u16 = ") {
                    if let Ok(c) = value.trim_end_matches(';').parse::<u16>() {
                        if (1000..5000).contains(&c) {
                            codes.insert(c);
                        }
                    }
                }
            }
        }
        for marker in [
            "close_with(",
            "Farewell::close(",
            "Farewell::after(",
            "Incoming::Bad(",
        ] {
            for (at, _) in text.match_indices(marker) {
                let call = &text[at + marker.len()..];
                let call = &call[..call.find(';').unwrap_or(call.len()).min(300)];
                for word in call.split(|c: char| !c.is_ascii_digit()) {
                    if let Ok(c) = word.parse::<u16>() {
                        if (1000..5000).contains(&c) {
                            codes.insert(c);
                        }
                    }
                }
            }
        }
    }
    codes
}

#[test]
fn the_documented_close_codes_are_the_ones_the_server_sends() {
    let in_code = close_codes_in_code();
    // The named constants are found by the scan too.
    for c in [
        tessera_proto::close::REVOKED,
        tessera_proto::close::AUTH_FAILED,
        tessera_proto::close::INCOMPATIBLE,
        tessera_proto::close::HEARTBEAT_TIMEOUT,
        tessera_proto::close::REPLACED,
        tessera_server::relay::viewer::close::SESSION_ENDED,
        tessera_server::relay::viewer::close::TOO_SLOW,
        tessera_server::relay::viewer::close::LOGGED_OUT,
        tessera_server::relay::viewer::close::ROLE_CHANGED,
        tessera_server::relay::viewer::close::USER_DISABLED,
        tessera_proto::close::GOING_AWAY,
    ] {
        assert!(in_code.contains(&c), "the scan missed close code {c}");
    }
    assert_eq!(
        documented_close_codes(),
        in_code,
        "docs/PROTOCOL.md's close code table differs from the codes the server sends"
    );
}
