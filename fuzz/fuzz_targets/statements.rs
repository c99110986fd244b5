//! Signed statements as the server and agents receive them: the JSON decode
//! of `Signed<TrustAttestation | AutoJoinGrant | KeyRotation | Withdrawal>`
//! and its verification. Nothing panics; a statement verifies only with a
//! signature its signer made for exactly that statement and kind; JSON
//! round-trips; and the server's follow-up checks (identity document of a
//! rotation, grant state, freshness arithmetic) are total.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_core::identity::{self, IdentityDocument, Label};
use tessera_core::trust::{
    follow_rotations, grant_state, is_identity_of, key_from_hex, AutoJoinGrant, KeyRotation,
    Signed, Statement, TrustAttestation, Withdrawal,
};
use tessera_fuzz::{NOW, OTHER, SIGNER};

fn check<T>(data: &[u8]) -> Option<T>
where
    T: Statement + Serialize + DeserializeOwned + PartialEq + Clone + std::fmt::Debug,
{
    let signed: Signed<T> = serde_json::from_slice(data).ok()?;
    // Only the signer's own signature verifies (Ed25519 signing is
    // deterministic, and nobody else can make another).
    let genuine = Signed::sign(signed.statement.clone(), &SIGNER);
    if signed.verify(&SIGNER.ed25519_public()).is_ok() {
        assert_eq!(signed.signature, genuine.signature);
    }
    let text = serde_json::to_string(&signed).expect("a statement serialises");
    let back: Signed<T> = serde_json::from_str(&text).expect("and parses back");
    assert_eq!(back, signed);
    assert_eq!(back.statement.canonical(), signed.statement.canonical());

    assert!(genuine.verify(&SIGNER.ed25519_public()).is_ok());
    assert!(genuine.verify(&OTHER.ed25519_public()).is_err());
    // The signature is bound to its kind: the same bytes signed as this
    // statement are no challenge answer (nor any other label).
    let sig = data_encoding::BASE64URL_NOPAD
        .decode(genuine.signature.as_bytes())
        .expect("our own signature decodes");
    assert!(identity::verify(
        &SIGNER.ed25519_public(),
        Label::Challenge,
        &signed.statement.canonical(),
        &sig
    )
    .is_err());
    Some(signed.statement)
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Some(a) = check::<TrustAttestation>(rest) {
                let _ = key_from_hex(&a.trusted_ed25519);
                let _ = key_from_hex(&a.trusted_x25519);
                let _ = a.issued_at.since(NOW);
                let _ = NOW.since(a.issued_at);
            }
        }
        1 => {
            if let Some(g) = check::<AutoJoinGrant>(rest) {
                let _ = grant_state(&g, false, &g.grantee_fingerprint, NOW);
                let _ = grant_state(&g, true, "", NOW);
                let _ = g.expires_at.since(g.issued_at);
            }
        }
        2 => {
            if let Some(r) = check::<KeyRotation>(rest) {
                if let Ok(doc) = IdentityDocument::decode(&r.new_identity) {
                    assert!(doc.verify().is_ok());
                }
            }
        }
        3 => {
            if let Some(w) = check::<Withdrawal>(rest) {
                let _ = w.subject.strip_prefix("grant:");
                let _ = w.subject.strip_prefix("trust:");
            }
        }
        _ => rotation_chain(rest),
    }
});

/// A chain of rotations as the server hands it to a peer: whatever it
/// holds, following it from the signer's first key reaches only identities
/// some verified step names, and the first key is always its device's.
fn rotation_chain(data: &[u8]) {
    let Ok(chain) = serde_json::from_slice::<Vec<Signed<KeyRotation>>>(data) else {
        return;
    };
    let device = SIGNER.device_id().to_string();
    if let Some(doc) = follow_rotations(&device, &SIGNER.ed25519_public(), &chain) {
        assert!(doc.verify().is_ok());
        assert!(chain.iter().any(|step| {
            IdentityDocument::decode(&step.statement.new_identity).is_ok_and(|d| d == doc)
                && step.statement.device == device
        }));
    }
    assert!(is_identity_of(&device, &SIGNER.document(), &chain));
    let other = OTHER.document();
    if is_identity_of(&device, &other, &chain) {
        assert!(chain.iter().any(|step| {
            IdentityDocument::decode(&step.statement.new_identity).is_ok_and(|d| d == other)
        }));
    }
}
