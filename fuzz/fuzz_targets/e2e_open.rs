//! Sealed session payloads and their replay guard, as a member sees them
//! from the relay: opening arbitrary ciphertext under arbitrary headers
//! never panics; a sealed payload opens to itself and to nothing else once
//! any byte, the sender, the counter, the epoch or the session changes;
//! origin tags bind a payload to its place; `open_from` opens a payload once
//! and a refusal never moves the replay window; the guard accepts a
//! sender's counter exactly when it is above every counter recorded for
//! that sender.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tessera_core::e2e::{
    check_origin, open, open_from, origin_tag, seal, E2eError, OriginKey, Place, ReplayGuard,
    SessionKey,
};

#[derive(Arbitrary, Debug)]
struct Input {
    key: [u8; 32],
    key_epoch: u32,
    session: String,
    epoch: u32,
    sender: u32,
    counter: u64,
    ciphertext: Vec<u8>,
    plaintext: Vec<u8>,
    flip_at: usize,
    flip_with: u8,
    origin: [u8; 32],
    tag: Vec<u8>,
    counters: Vec<(u8, u64, bool, bool)>,
}

fuzz_target!(|i: Input| {
    let Some(key) = SessionKey::from_bytes(&i.key, i.key_epoch) else {
        unreachable!("32 bytes are a key")
    };
    match open(
        &key,
        &i.session,
        i.epoch,
        i.sender,
        i.counter,
        &i.ciphertext,
    ) {
        Err(E2eError::WrongEpoch { got, have }) => {
            assert_eq!((got, have), (i.epoch, i.key_epoch));
        }
        // 2^-128 against us: a forged tag does not authenticate.
        Err(E2eError::Tampered) => assert_eq!(i.epoch, i.key_epoch),
        Err(other) => panic!("unexpected {other:?}"),
        Ok(_) => panic!("a forged payload opened"),
    }

    let sealed = seal(&key, &i.session, i.sender, i.counter, &i.plaintext);
    assert_eq!(sealed.len(), i.plaintext.len() + 16);
    let opened = open(&key, &i.session, i.key_epoch, i.sender, i.counter, &sealed);
    assert_eq!(opened.as_deref(), Ok(i.plaintext.as_slice()));
    if i.flip_with != 0 {
        let mut bad = sealed.clone();
        let at = i.flip_at % bad.len();
        bad[at] ^= i.flip_with;
        assert_eq!(
            open(&key, &i.session, i.key_epoch, i.sender, i.counter, &bad),
            Err(E2eError::Tampered)
        );
    }
    let other_sender = i.sender.wrapping_add(1);
    assert!(open(
        &key,
        &i.session,
        i.key_epoch,
        other_sender,
        i.counter,
        &sealed
    )
    .is_err());
    let other_counter = i.counter.wrapping_add(1);
    assert!(open(
        &key,
        &i.session,
        i.key_epoch,
        i.sender,
        other_counter,
        &sealed
    )
    .is_err());
    let other_session = format!("{}x", i.session);
    assert!(open(
        &key,
        &other_session,
        i.key_epoch,
        i.sender,
        i.counter,
        &sealed
    )
    .is_err());
    let other_epoch = i.key_epoch.wrapping_add(1);
    assert!(open(&key, &i.session, other_epoch, i.sender, i.counter, &sealed).is_err());

    // A payload from a peer whose origin key this side holds: only the
    // sealed bytes with their own tag open, and only once, in order.
    let origin = OriginKey::from_bytes(&i.origin).unwrap_or_else(|| unreachable!("32 bytes"));
    let at = Place {
        session_id: &i.session,
        epoch: i.key_epoch,
        sender: i.sender,
        counter: i.counter,
    };
    let mut guard = ReplayGuard::default();
    assert!(open_from(&key, &origin, &mut guard, at, &sealed, &i.tag).is_err());
    assert!(
        guard.fresh(i.sender, i.counter).is_ok(),
        "a refusal moved the window"
    );
    let tag = origin_tag(&origin, at, &sealed);
    assert!(check_origin(&origin, at, &sealed, &tag).is_ok());
    let forged_at = Place {
        counter: i.counter.wrapping_add(1),
        ..at
    };
    assert!(check_origin(&origin, forged_at, &sealed, &tag).is_err());
    assert_eq!(
        open_from(&key, &origin, &mut guard, at, &sealed, &tag).as_deref(),
        Ok(i.plaintext.as_slice())
    );
    assert!(open_from(&key, &origin, &mut guard, at, &sealed, &tag).is_err());

    // The guard against a model: the highest counter recorded per sender.
    let mut guard = ReplayGuard::default();
    let mut last: HashMap<u32, u64> = HashMap::new();
    for (sender, counter, record, reset) in i.counters {
        if reset {
            guard.reset();
            last.clear();
        }
        let sender = u32::from(sender % 4);
        let fresh = last.get(&sender).is_none_or(|l| counter > *l);
        assert_eq!(guard.fresh(sender, counter).is_ok(), fresh);
        if fresh && record {
            guard.record(sender, counter);
            last.insert(sender, counter);
        }
    }
});
