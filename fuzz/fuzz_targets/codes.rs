//! Codes people type: pairing user codes (RFC 8628) and support codes.
//! Normalising never panics; what it accepts is canonical (its own
//! normal form, in its alphabet, of its length) and survives display.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_core::codes::{
    display_support_code, display_user_code, normalise_support_code, normalise_user_code,
    SUPPORT_CODE_ALPHABET, SUPPORT_CODE_LEN, USER_CODE_ALPHABET, USER_CODE_LEN,
};

fn check(
    input: &str,
    normalise: fn(&str) -> Option<String>,
    display: fn(&str) -> String,
    alphabet: &[u8],
    len: usize,
) {
    // Display is also handed what a server or a database says a code is.
    let _ = display(input);
    let Some(c) = normalise(input) else {
        return;
    };
    assert_eq!(c.len(), len);
    assert!(c.bytes().all(|b| alphabet.contains(&b)), "{c:?}");
    assert_eq!(normalise(&c).as_deref(), Some(c.as_str()));
    assert_eq!(normalise(&display(&c)).as_deref(), Some(c.as_str()));
    assert_eq!(
        normalise(&display(&c).to_lowercase()).as_deref(),
        Some(c.as_str())
    );
}

fuzz_target!(|data: &[u8]| {
    let Some(s) = tessera_fuzz::text(data) else {
        return;
    };
    check(
        s,
        normalise_user_code,
        display_user_code,
        USER_CODE_ALPHABET,
        USER_CODE_LEN,
    );
    check(
        s,
        normalise_support_code,
        display_support_code,
        SUPPORT_CODE_ALPHABET,
        SUPPORT_CODE_LEN,
    );
});
