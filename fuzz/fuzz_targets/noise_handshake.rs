//! Noise KK handshake messages relayed by the server (`E2eHandshake`): a
//! member's responder and a creator's initiator read arbitrary bytes
//! without panicking, and never complete a handshake with someone who does
//! not hold the pinned key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_core::e2e::{kk_initiator, kk_responder, prologue, read, write};
use tessera_fuzz::{OTHER, SIGNER};

fuzz_target!(|data: &[u8]| {
    let p = prologue("s", "creator", "member");
    let (creator, member) = (&*SIGNER, &*OTHER);
    let creator_secret = creator.x25519_secret().to_bytes();
    let member_secret = member.x25519_secret().to_bytes();

    // A member reading a forged first message.
    let mut responder =
        kk_responder(&member_secret, &creator.x25519_public(), &p).expect("a responder builds");
    // Nobody but the creator can write a first message the member accepts.
    assert!(read(&mut responder, data).is_err());

    // A creator reading a forged answer to its first message.
    let mut initiator =
        kk_initiator(&creator_secret, &member.x25519_public(), &p).expect("an initiator builds");
    let _first = write(&mut initiator, &[]).expect("the first message writes");
    assert!(read(&mut initiator, data).is_err());
    assert!(!initiator.is_handshake_finished());
});
