//! Viewer tokens (EdDSA JWTs signed by a node key, named by `kid`) on
//! `/ws/viewer`: reading the `kid` of or verifying an arbitrary string never
//! panics and never admits it; the claim checks hold for any claims a token
//! could carry; a minted token verifies exactly as its claims do, and fails
//! under another node's key or with any byte of it changed.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tessera_fuzz::NOW;
use tessera_server::auth::viewer::{check_claims, token_kid, verify, ViewerClaims, ViewerKeys};
use tessera_server::node_key::NodeKey;

#[derive(Arbitrary, Debug)]
struct Input {
    token: String,
    sub: String,
    sid_matches: bool,
    sid: String,
    access: String,
    purpose_is_viewer: bool,
    iat: i64,
    exp: i64,
    tamper_at: usize,
    tamper_with: u8,
}

fuzz_target!(|i: Input| {
    let node = NodeKey::from_seed(&[7u8; 32]);
    let other = NodeKey::from_seed(&[8u8; 32]);
    let public = node.public_key();
    let _ = token_kid(&i.token);
    assert!(verify(&i.token, &public, "s1", NOW).is_err());
    let Ok(keys) = ViewerKeys::new(&node) else {
        return;
    };

    let claims = ViewerClaims {
        sub: i.sub,
        sid: if i.sid_matches { "s1".into() } else { i.sid },
        tid: "t".into(),
        access: i.access,
        purpose: if i.purpose_is_viewer {
            "viewer".into()
        } else {
            "login".into()
        },
        lid: "l".into(),
        iat: i.iat,
        exp: i.exp,
        jti: "j".into(),
    };
    let expected = check_claims(&claims, "s1", NOW);
    let Ok(token) = keys.mint(&claims) else {
        return;
    };
    assert_eq!(token_kid(&token).as_deref(), Ok(node.kid()));
    let checked = verify(&token, &public, "s1", NOW);
    assert_eq!(checked.as_ref().err(), expected.as_ref().err());
    if let Ok(c) = checked {
        assert_eq!(c, claims);
    }
    assert!(verify(&token, &other.public_key(), "s1", NOW).is_err());
    let mut bytes = token.into_bytes();
    let at = i.tamper_at % bytes.len();
    if bytes[at] != i.tamper_with && i.tamper_with.is_ascii_graphic() {
        bytes[at] = i.tamper_with;
        if let Ok(t) = String::from_utf8(bytes) {
            // Base64url has spellings that decode alike only in the unused
            // trailing bits; the JWT library refuses those too.
            assert!(
                verify(&t, &public, "s1", NOW).is_err(),
                "tampered token accepted"
            );
        }
    }
});
