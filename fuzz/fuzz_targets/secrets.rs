//! Bearer credentials as the server reads them: the `Authorization` header,
//! then the tagged secret inside (`cak_`, `etk_`, `otk_`, `dvc_`). Parsing
//! never panics; an accepted secret is exactly the text given, of the kind
//! its tag says, and never shows more than its public prefix.
#![no_main]

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tessera_core::secret::{Secret, SecretKind};
use tessera_server::auth::device::{parse_device_key, DeviceAuthError};
use tessera_server::auth::{bearer_from, parse_operator_token, AuthError};

const KINDS: [SecretKind; 4] = [
    SecretKind::DeviceKey,
    SecretKind::EnrollmentToken,
    SecretKind::OperatorToken,
    SecretKind::DeviceCode,
];

fn secret(s: &str) {
    let tagged = SecretKind::of(s);
    for kind in KINDS {
        let Ok(secret) = Secret::parse(kind, s) else {
            continue;
        };
        assert_eq!(tagged, Some(kind));
        assert_eq!(secret.expose(), s);
        assert_eq!(secret.kind(), kind);
        let again = Secret::parse(kind, s).expect("parses twice");
        assert_eq!(again.hash(), secret.hash());
        let prefix = secret.prefix();
        assert!(prefix.starts_with(&format!("{}_", kind.tag())));
        assert_eq!(prefix.len(), kind.tag().len() + 1 + 8);
        let shown = format!("{secret:?} {secret}");
        assert!(!shown.contains(s));
        // Only one kind accepts a given text.
        for other in KINDS.into_iter().filter(|k| *k != kind) {
            assert!(Secret::parse(other, s).is_err());
        }
    }
    let device = parse_device_key(s);
    assert_eq!(
        device.is_ok(),
        Secret::parse(SecretKind::DeviceKey, s).is_ok()
    );
    let operator = parse_operator_token(s);
    assert_eq!(
        operator.is_ok(),
        Secret::parse(SecretKind::OperatorToken, s).is_ok()
    );
    // A refused string is malformed or the other kind of secret: never a
    // reason that needs the database (revoked, expired, disabled).
    if let Err(e) = device {
        assert!(matches!(
            e,
            DeviceAuthError::InvalidKey | DeviceAuthError::WrongCredentialType
        ));
    }
    if let Err(e) = operator {
        assert!(matches!(
            e,
            AuthError::InvalidToken | AuthError::WrongCredentialType
        ));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        if let Some(token) = bearer_from(&headers) {
            secret(token);
        }
    }
    if let Some(s) = tessera_fuzz::text(data) {
        secret(s);
    }
});
