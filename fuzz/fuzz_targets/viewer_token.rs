//! Viewer tokens (HS256 JWTs) on `/ws/viewer`: checking an arbitrary string
//! never panics and never admits it; the claim checks hold for any claims a
//! token could carry; a minted token checks exactly as its claims do, and
//! fails under another key or with any byte of it changed.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tessera_fuzz::NOW;
use tessera_server::auth::viewer::{check_claims, ViewerClaims, ViewerKeys};

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
    let keys = ViewerKeys::new(&[7u8; 32]);
    assert!(keys.check(&i.token, "s1", NOW).is_err());

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
    let checked = keys.check(&token, "s1", NOW);
    assert_eq!(checked.as_ref().err(), expected.as_ref().err());
    if let Ok(c) = checked {
        assert_eq!(c, claims);
    }
    assert!(ViewerKeys::new(&[8u8; 32])
        .check(&token, "s1", NOW)
        .is_err());
    let mut bytes = token.into_bytes();
    let at = i.tamper_at % bytes.len();
    if bytes[at] != i.tamper_with && i.tamper_with.is_ascii_graphic() {
        bytes[at] = i.tamper_with;
        if let Ok(t) = String::from_utf8(bytes) {
            // Base64url has spellings that decode alike only in the unused
            // trailing bits; the JWT library refuses those too.
            assert!(
                keys.check(&t, "s1", NOW).is_err(),
                "tampered token accepted"
            );
        }
    }
});
