//! What a member decodes after opening a sealed payload (`E2ePayload`) and
//! what it decodes inside its Noise channel from the creator
//! (`SessionKeyGrant`): decodes never panic, re-encode stably, and a key
//! grant yields a session key exactly when it carries 32 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tessera_core::e2e::{OriginKey, SessionKey};
use tessera_proto::v1::{E2ePayload, SessionKeyGrant};

fn stable<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) {
    let bytes = m.encode_to_vec();
    let again = M::decode(bytes.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(&again, m);
    assert_eq!(again.encode_to_vec(), bytes);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = E2ePayload::decode(data) {
        stable(&p);
    }
    if let Ok(g) = SessionKeyGrant::decode(data) {
        stable(&g);
        assert_eq!(
            OriginKey::from_bytes(&g.origin_key).is_some(),
            g.origin_key.len() == 32
        );
        let key = SessionKey::from_bytes(&g.key, g.epoch);
        assert_eq!(key.is_some(), g.key.len() == 32);
        if let Some(k) = key {
            assert_eq!(k.epoch, g.epoch);
            assert_eq!(k.to_bytes().as_slice(), g.key.as_ref());
            // The grant's Debug never shows the key.
            let shown = format!("{g:?}");
            assert!(shown.contains("<redacted>"));
            assert!(!shown.contains(&format!("{:?}", g.key.as_ref())));
        }
    }
});
