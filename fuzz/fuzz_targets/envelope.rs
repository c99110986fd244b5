//! `/ws/device` and `/ws/viewer` frames: the protobuf `Envelope` decode the
//! server runs on every binary message, then the pure checks it makes on
//! each body before acting on it (device ids, the challenge signature,
//! scopes, the viewer's resize clamp, sealed payloads it cannot open).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tessera_core::e2e::{self, SessionKey};
use tessera_core::identity::{self, challenge_body, DeviceId, Label};
use tessera_core::trust::Scope;
use tessera_fuzz::SIGNER;
use tessera_proto::{Body, Envelope};

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::decode(data) else {
        return;
    };
    // What the server relays is what it decoded: re-encoding is stable.
    let bytes = env.encode_to_vec();
    let again = Envelope::decode(bytes.as_slice()).expect("a re-encoded envelope decodes");
    assert_eq!(again, env);
    assert_eq!(again.encode_to_vec(), bytes);

    match env.body {
        Some(Body::Hello(h)) => {
            if let Ok(id) = DeviceId::parse(&h.device_id) {
                assert_eq!(id.as_str().len(), DeviceId::LEN);
                assert_eq!(DeviceId::parse(id.as_str()).as_ref(), Ok(&id));
                assert_eq!(DeviceId::parse(&id.grouped()).as_ref(), Ok(&id));
                let _ = id.short();
                let body = challenge_body(&[0u8; 32], &id, h.protocol_version);
                // Nobody forges an Ed25519 signature by chance.
                assert!(identity::verify(
                    &SIGNER.ed25519_public(),
                    Label::Challenge,
                    &body,
                    &h.signature
                )
                .is_err());
            }
        }
        Some(Body::AutoSessionCreate(c)) => {
            if let Some(s) = Scope::parse(&c.scope) {
                assert_eq!(s.as_str(), c.scope);
            }
            for m in &c.members {
                if let Ok(id) = DeviceId::parse(m) {
                    assert_eq!(DeviceId::parse(id.as_str()).as_ref(), Ok(&id));
                }
            }
        }
        Some(Body::ChannelResize(r)) => {
            // What the relay forwards from a viewer.
            assert!((1..=1000).contains(&r.cols.clamp(1, 1000)));
            assert!((1..=1000).contains(&r.rows.clamp(1, 1000)));
        }
        Some(Body::E2eData(d)) => {
            // The relay cannot open what members seal, and a forged payload
            // does not open for a member either.
            let Some(key) = SessionKey::from_bytes(&[1u8; 32], d.epoch) else {
                unreachable!("32 bytes are a key")
            };
            assert!(e2e::open(
                &key,
                &d.session_id,
                d.epoch,
                d.sender,
                d.counter,
                &d.ciphertext
            )
            .is_err());
        }
        _ => {}
    }
});
