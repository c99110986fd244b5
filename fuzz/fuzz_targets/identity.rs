//! Identity material a device or peer hands over: the identity document
//! (base64url), device ids (grouped or not, any case), hex keys and private
//! key files. Decoding never panics; what decodes is self-consistent and
//! encodes back to its one canonical spelling.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_core::identity::{DeviceId, DeviceKeys, IdentityDocument};
use tessera_core::trust::{fingerprint, fingerprint_display, key_from_hex};

fuzz_target!(|data: &[u8]| {
    if let Some(keys) = DeviceKeys::from_bytes(data) {
        assert_eq!(keys.to_bytes().as_slice(), data);
        let doc = keys.document();
        assert_eq!(IdentityDocument::decode(&doc.encode()), Ok(doc));
    }
    let Some(s) = tessera_fuzz::text(data) else {
        return;
    };
    if let Ok(doc) = IdentityDocument::decode(s) {
        assert!(doc.verify().is_ok());
        assert_eq!(doc.encode(), s.trim());
        let id = doc
            .device_id()
            .expect("a verified document names its device");
        assert_eq!(DeviceId::parse(id.as_str()), Ok(id));
    }
    if let Ok(id) = DeviceId::parse(s) {
        assert_eq!(id.as_str().len(), DeviceId::LEN);
        assert_eq!(DeviceId::parse(&id.grouped()).as_ref(), Ok(&id));
        assert_eq!(
            DeviceId::parse(&id.as_str().to_lowercase()).as_ref(),
            Ok(&id)
        );
        assert!(id.grouped().starts_with(&id.short()));
    }
    if let Some(key) = key_from_hex(s) {
        assert_eq!(tessera_core::secret::hex(&key), s);
        assert_eq!(fingerprint(&key).len(), 64);
    }
    let _ = fingerprint_display(s);
});
