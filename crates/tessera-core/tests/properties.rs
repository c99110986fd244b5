//! Properties of the encodings others have to agree on: canonical JSON (the
//! audit chain's `details`), the canonical bytes signed statements are
//! signed over, the codes people type, the bearer secrets' text form, and
//! the audit chain's tamper evidence.
//!
//! Each property runs a modest number of cases so the whole file stays
//! well under a few seconds; the fuzz targets in `fuzz/` go wider.

use std::sync::LazyLock;

use data_encoding::BASE32_NOPAD;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tessera_core::audit::{canonical_json, chain_hash, AuditContent, ChainBreak, ChainVerifier};
use tessera_core::codes::{
    display_support_code, display_user_code, normalise_support_code, normalise_user_code,
    SUPPORT_CODE_ALPHABET, SUPPORT_CODE_LEN, USER_CODE_ALPHABET, USER_CODE_LEN,
};
use tessera_core::identity::DeviceKeys;
use tessera_core::secret::{Secret, SecretKind};
use tessera_core::trust::{
    AutoJoinGrant, KeyRotation, Scope, Signed, Statement, TrustAttestation, Withdrawal,
};
use tessera_core::Timestamp;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Shrinking a failure is worth a little time; a passing run is not.
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    }
}

static SIGNER: LazyLock<DeviceKeys> = LazyLock::new(DeviceKeys::generate);

// ---- canonical JSON --------------------------------------------------------

/// JSON without floats: serde_json (without its `float_roundtrip` feature)
/// may parse a float one ULP off, so floats are not a fixed point of
/// parse-then-canonicalise. Audit details hold no floats.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((".{0,6}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

type Entries = Vec<(String, Value)>;

/// An object's entries (unique keys) in two different orders.
fn entries_twice() -> impl Strategy<Value = (Entries, Entries)> {
    prop::collection::btree_map(".{0,6}", json(), 0..6)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>())
        .prop_flat_map(|entries| (Just(entries.clone()), Just(entries).prop_shuffle()))
}

/// JSON text of an object with its entries in exactly this order.
fn object_text(entries: &[(String, Value)]) -> String {
    let body: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), v))
        .collect();
    format!("{{ {} }}", body.join(" ,\n "))
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn canonical_json_ignores_key_order((a, b) in entries_twice()) {
        let va: Value = serde_json::from_str(&object_text(&a)).unwrap();
        let vb: Value = serde_json::from_str(&object_text(&b)).unwrap();
        prop_assert_eq!(canonical_json(&va), canonical_json(&vb));
    }

    #[test]
    fn canonical_json_round_trips_and_is_a_fixed_point(v in json()) {
        let text = canonical_json(&v);
        let back: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &v);
        prop_assert_eq!(canonical_json(&back), text.clone());
        // Compact, with sorted keys: what serde_json writes for a sorted map.
        let pretty = serde_json::to_string_pretty(&v).unwrap();
        let reparsed: Value = serde_json::from_str(&pretty).unwrap();
        prop_assert_eq!(canonical_json(&reparsed), text);
    }

    #[test]
    fn different_json_has_different_canonical_text(a in json(), b in json()) {
        prop_assume!(a != b);
        prop_assert_ne!(canonical_json(&a), canonical_json(&b));
    }
}

// ---- signed statements -----------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    ".{0,12}"
}

fn ts() -> impl Strategy<Value = Timestamp> {
    any::<i64>().prop_map(Timestamp::from_millis)
}

fn scopes() -> impl Strategy<Value = Vec<Scope>> {
    prop::collection::vec(select(vec![Scope::Files, Scope::Shell]), 0..3)
}

fn attestation() -> impl Strategy<Value = TrustAttestation> {
    (text(), text(), text(), text(), ts()).prop_map(|(a, b, c, d, t)| TrustAttestation {
        truster: a,
        trusted: b,
        trusted_ed25519: c,
        trusted_x25519: d,
        issued_at: t,
    })
}

fn grant() -> impl Strategy<Value = AutoJoinGrant> {
    (text(), text(), text(), text(), scopes(), ts(), ts()).prop_map(|(a, b, c, d, s, t, u)| {
        AutoJoinGrant {
            id: a,
            granter: b,
            grantee: c,
            grantee_fingerprint: d,
            scopes: s,
            issued_at: t,
            expires_at: u,
        }
    })
}

fn rotation() -> impl Strategy<Value = KeyRotation> {
    (text(), any::<u32>(), text(), text(), ts()).prop_map(|(a, e, b, c, t)| KeyRotation {
        device: a,
        epoch: e,
        old_ed25519: b,
        new_identity: c,
        issued_at: t,
    })
}

fn withdrawal() -> impl Strategy<Value = Withdrawal> {
    (text(), text(), ts()).prop_map(|(a, b, t)| Withdrawal {
        issuer: a,
        subject: b,
        issued_at: t,
    })
}

/// A statement and a different one of the same kind: one field changed.
fn attestation_pair() -> impl Strategy<Value = (TrustAttestation, TrustAttestation)> {
    (attestation(), 0..5usize, text(), ts()).prop_map(|(a, field, s, t)| {
        let mut b = a.clone();
        match field {
            0 => b.truster = s,
            1 => b.trusted = s,
            2 => b.trusted_ed25519 = s,
            3 => b.trusted_x25519 = s,
            _ => b.issued_at = t,
        }
        (a, b)
    })
}

fn grant_pair() -> impl Strategy<Value = (AutoJoinGrant, AutoJoinGrant)> {
    (grant(), 0..7usize, text(), scopes(), ts()).prop_map(|(a, field, s, sc, t)| {
        let mut b = a.clone();
        match field {
            0 => b.id = s,
            1 => b.granter = s,
            2 => b.grantee = s,
            3 => b.grantee_fingerprint = s,
            4 => b.scopes = sc,
            5 => b.issued_at = t,
            _ => b.expires_at = t,
        }
        (a, b)
    })
}

fn rotation_pair() -> impl Strategy<Value = (KeyRotation, KeyRotation)> {
    (rotation(), 0..5usize, text(), any::<u32>(), ts()).prop_map(|(a, field, s, e, t)| {
        let mut b = a.clone();
        match field {
            0 => b.device = s,
            1 => b.epoch = e,
            2 => b.old_ed25519 = s,
            3 => b.new_identity = s,
            _ => b.issued_at = t,
        }
        (a, b)
    })
}

fn withdrawal_pair() -> impl Strategy<Value = (Withdrawal, Withdrawal)> {
    (withdrawal(), 0..3usize, text(), ts()).prop_map(|(a, field, s, t)| {
        let mut b = a.clone();
        match field {
            0 => b.issuer = s,
            1 => b.subject = s,
            _ => b.issued_at = t,
        }
        (a, b)
    })
}

/// Any change to a statement changes its signed bytes, so the original
/// signature no longer verifies; the original still does.
fn changed_statement_fails<T>(a: T, b: T) -> Result<(), TestCaseError>
where
    T: Statement + Clone + PartialEq + std::fmt::Debug,
{
    prop_assume!(a != b);
    prop_assert_ne!(a.canonical(), b.canonical());
    let signed = Signed::sign(a, &SIGNER);
    prop_assert!(signed.verify(&SIGNER.ed25519_public()).is_ok());
    let moved = Signed {
        statement: b,
        signature: signed.signature.clone(),
    };
    prop_assert!(moved.verify(&SIGNER.ed25519_public()).is_err());
    Ok(())
}

/// The JSON form, with its fields in any order, is the same statement and
/// its signature still verifies.
fn json_round_trips<T>(statement: T, order_seed: u64) -> Result<(), TestCaseError>
where
    T: Statement + serde::Serialize + serde::de::DeserializeOwned + Clone + PartialEq,
    T: std::fmt::Debug,
{
    let signed = Signed::sign(statement, &SIGNER);
    let Value::Object(fields) = serde_json::to_value(&signed.statement).unwrap() else {
        panic!("a statement is a JSON object");
    };
    let mut entries: Vec<(String, Value)> = fields.into_iter().collect();
    let n = entries.len();
    entries.rotate_left((order_seed as usize) % n.max(1));
    if order_seed % 2 == 1 {
        entries.reverse();
    }
    let text = format!(
        r#"{{"signature": {}, "statement": {}}}"#,
        Value::String(signed.signature.clone()),
        object_text(&entries)
    );
    let back: Signed<T> = serde_json::from_str(&text).unwrap();
    prop_assert_eq!(&back, &signed);
    prop_assert!(back.verify(&SIGNER.ed25519_public()).is_ok());
    Ok(())
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn a_changed_attestation_is_not_covered_by_its_signature((a, b) in attestation_pair()) {
        changed_statement_fails(a, b)?;
    }

    #[test]
    fn a_changed_grant_is_not_covered_by_its_signature((a, b) in grant_pair()) {
        changed_statement_fails(a, b)?;
    }

    #[test]
    fn a_changed_rotation_is_not_covered_by_its_signature((a, b) in rotation_pair()) {
        changed_statement_fails(a, b)?;
    }

    #[test]
    fn a_changed_withdrawal_is_not_covered_by_its_signature((a, b) in withdrawal_pair()) {
        changed_statement_fails(a, b)?;
    }

    #[test]
    fn statements_round_trip_through_json_in_any_field_order(
        a in attestation(), g in grant(), r in rotation(), w in withdrawal(), seed in any::<u64>()
    ) {
        json_round_trips(a, seed)?;
        json_round_trips(g, seed)?;
        json_round_trips(r, seed)?;
        json_round_trips(w, seed)?;
    }

    #[test]
    fn text_moved_between_adjacent_fields_changes_the_signed_bytes(
        a in text(), b in text(), cut in 0..12usize, t in ts()
    ) {
        // "ab" + "c" and "a" + "bc" must not sign alike.
        let joined = format!("{a}{b}");
        let cut = joined.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(joined.len());
        let (x, y) = joined.split_at(cut);
        prop_assume!(x != a);
        let w1 = Withdrawal { issuer: a.clone(), subject: b.clone(), issued_at: t };
        let w2 = Withdrawal { issuer: x.to_owned(), subject: y.to_owned(), issued_at: t };
        prop_assert_ne!(w1.canonical(), w2.canonical());
    }
}

// ---- codes -------------------------------------------------------------------

fn code(alphabet: &'static [u8], len: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(select(alphabet.to_vec()), len)
        .prop_map(|b| String::from_utf8(b).unwrap())
}

/// How a person might type a code: any case, with spaces and dashes.
fn typed(canonical: String) -> impl Strategy<Value = String> {
    let n = canonical.len();
    (
        prop::collection::vec(select(vec!["", "", "", " ", "-", "  ", "\t"]), n + 1),
        prop::collection::vec(any::<bool>(), n),
    )
        .prop_map(move |(seps, lower)| {
            let mut out = String::new();
            for (i, c) in canonical.chars().enumerate() {
                out.push_str(seps[i]);
                out.push(if lower[i] { c.to_ascii_lowercase() } else { c });
            }
            out.push_str(seps[n]);
            out
        })
}

/// A code with one symbol replaced by something outside its alphabet
/// (and not a separator).
fn one_bad_symbol(alphabet: &'static [u8], len: usize) -> impl Strategy<Value = String> {
    (code(alphabet, len), 0..len, any::<char>()).prop_filter_map(
        "replacement must be outside the alphabet",
        move |(c, at, bad)| {
            let upper = bad.to_ascii_uppercase();
            let outside = !(upper.is_ascii() && alphabet.contains(&(upper as u8)))
                && bad != '-'
                && !bad.is_whitespace();
            outside.then(|| {
                let mut chars: Vec<char> = c.chars().collect();
                chars[at] = bad;
                chars.into_iter().collect()
            })
        },
    )
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn user_codes_normalise_back_from_their_display(
        t in code(USER_CODE_ALPHABET, USER_CODE_LEN)
            .prop_flat_map(|c| (Just(c.clone()), typed(c)))
    ) {
        let (c, typed) = t;
        prop_assert_eq!(normalise_user_code(&display_user_code(&c)), Some(c.clone()));
        prop_assert_eq!(normalise_user_code(&typed), Some(c.clone()));
        prop_assert_eq!(normalise_user_code(&c), Some(c));
    }

    #[test]
    fn support_codes_normalise_back_from_their_display(
        t in code(SUPPORT_CODE_ALPHABET, SUPPORT_CODE_LEN)
            .prop_flat_map(|c| (Just(c.clone()), typed(c)))
    ) {
        let (c, typed) = t;
        prop_assert_eq!(normalise_support_code(&display_support_code(&c)), Some(c.clone()));
        prop_assert_eq!(normalise_support_code(&typed), Some(c.clone()));
        prop_assert_eq!(normalise_support_code(&c), Some(c));
    }

    #[test]
    fn a_code_with_a_foreign_symbol_is_refused(
        u in one_bad_symbol(USER_CODE_ALPHABET, USER_CODE_LEN),
        s in one_bad_symbol(SUPPORT_CODE_ALPHABET, SUPPORT_CODE_LEN),
    ) {
        prop_assert_eq!(normalise_user_code(&u), None);
        prop_assert_eq!(normalise_support_code(&s), None);
    }

    #[test]
    fn displaying_any_text_as_a_code_never_panics(s in "\\PC{0,12}") {
        // Regression (fuzz target `codes`): display once sliced by bytes and
        // panicked on eight or nine bytes that were not eight or nine chars.
        let _ = display_user_code(&s);
        let _ = display_support_code(&s);
        if let Some(c) = normalise_user_code(&s) {
            prop_assert_eq!(normalise_user_code(&display_user_code(&c)), Some(c));
        }
    }
}

#[test]
fn display_of_a_code_with_multibyte_characters_is_shown_as_it_is() {
    // Eight bytes, seven characters: the fourth byte is inside one.
    let odd = "BCD\u{e9}GHJ";
    assert_eq!(odd.len(), USER_CODE_LEN);
    assert_eq!(display_user_code(odd), odd);
    let odd = "23\u{a0}ACD\u{6bb}";
    assert_eq!(odd.len(), SUPPORT_CODE_LEN);
    assert_eq!(display_support_code(odd), odd);
}

// ---- secrets -------------------------------------------------------------------

const KINDS: [SecretKind; 4] = [
    SecretKind::DeviceKey,
    SecretKind::EnrollmentToken,
    SecretKind::OperatorToken,
    SecretKind::DeviceCode,
];

/// The text form of a secret with these 256 bits.
fn format_secret(kind: SecretKind, bits: &[u8; 32]) -> String {
    format!(
        "{}_{}",
        kind.tag(),
        BASE32_NOPAD.encode(bits).to_ascii_lowercase()
    )
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn secrets_parse_back_from_their_text(kind in select(KINDS.to_vec()), bits in any::<[u8; 32]>()) {
        let text = format_secret(kind, &bits);
        let s = Secret::parse(kind, &text).unwrap();
        prop_assert_eq!(s.expose(), text.as_str());
        prop_assert_eq!(s.kind(), kind);
        prop_assert_eq!(s.hash(), <[u8; 32]>::from(Sha256::digest(text.as_bytes())));
        prop_assert_eq!(s.prefix(), text[..kind.tag().len() + 1 + 8].to_owned());
        prop_assert_eq!(SecretKind::of(&text), Some(kind));
        for other in KINDS.into_iter().filter(|k| *k != kind) {
            prop_assert!(Secret::parse(other, &text).is_err());
        }
    }

    #[test]
    fn one_changed_character_is_refused_or_is_another_secret(
        kind in select(KINDS.to_vec()),
        bits in any::<[u8; 32]>(),
        at in 0..56usize,
        with in prop_oneof![
            select("abcdefghijklmnopqrstuvwxyz234567ABZ01_-= ".chars().collect::<Vec<_>>()),
            any::<char>(),
        ],
    ) {
        let text = format_secret(kind, &bits);
        let original = Secret::parse(kind, &text).unwrap();
        let mut chars: Vec<char> = text.chars().collect();
        let at = at % chars.len();
        prop_assume!(chars[at] != with);
        chars[at] = with;
        let changed: String = chars.into_iter().collect();
        for k in KINDS {
            if let Ok(s) = Secret::parse(k, &changed) {
                prop_assert_ne!(s.expose(), original.expose());
                prop_assert_ne!(s.hash(), original.hash());
            }
        }
    }

    #[test]
    fn generated_secrets_parse_back(kind in select(KINDS.to_vec())) {
        let s = Secret::generate(kind);
        let back = Secret::parse(kind, s.expose()).unwrap();
        prop_assert_eq!(back.hash(), s.hash());
    }
}

// ---- the audit chain -------------------------------------------------------------

fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(text())
}

fn content() -> impl Strategy<Value = AuditContent> {
    (
        any::<i64>(),
        text(),
        text(),
        text(),
        opt_text(),
        opt_text(),
        json(),
    )
        .prop_map(
            |(t, tenant, actor, action, target, ip, details)| AuditContent {
                seq: 0,
                occurred_at: Timestamp::from_millis(t),
                tenant_id: tenant,
                actor,
                action,
                target,
                source_ip: ip,
                details: canonical_json(&details),
            },
        )
}

type Row = (AuditContent, [u8; 32], [u8; 32]);

/// A chain as the server appends it: numbered from 1, each row linked to
/// the hash of the one before.
fn chain() -> impl Strategy<Value = Vec<Row>> {
    prop::collection::vec(content(), 2..8).prop_map(|contents| {
        let mut prev = tessera_core::audit::GENESIS;
        contents
            .into_iter()
            .zip(1..)
            .map(|(mut c, seq)| {
                c.seq = seq;
                let h = chain_hash(&prev, &c);
                let row = (c, prev, h);
                prev = h;
                row
            })
            .collect()
    })
}

/// The first break, or the head and row count of an intact chain.
fn verify(rows: &[Row]) -> Result<([u8; 32], u64), ChainBreak> {
    let mut v = ChainVerifier::default();
    for (c, prev, hash) in rows {
        v.push(c, prev, hash)?;
    }
    Ok((v.head(), v.checked()))
}

/// One field of `c` changed to something else.
fn alter(c: &mut AuditContent, field: usize, with: &str, t: i64) {
    let other = |s: &str| {
        if s == with {
            format!("{with}x")
        } else {
            with.to_owned()
        }
    };
    match field {
        0 => {
            let ms = c.occurred_at.as_millis();
            c.occurred_at = Timestamp::from_millis(if ms == t { ms.wrapping_add(1) } else { t });
        }
        1 => c.tenant_id = other(&c.tenant_id),
        2 => c.actor = other(&c.actor),
        3 => c.action = other(&c.action),
        4 => {
            c.target = match &c.target {
                None => Some(String::new()),
                Some(s) => Some(other(s)),
            }
        }
        5 => {
            c.source_ip = match &c.source_ip {
                Some(_) => None,
                None => Some(with.to_owned()),
            }
        }
        _ => c.details = other(&c.details),
    }
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn an_intact_chain_verifies(rows in chain()) {
        let (head, n) = verify(&rows).unwrap();
        prop_assert_eq!(n as usize, rows.len());
        prop_assert_eq!(head, rows.last().unwrap().2);
    }

    #[test]
    fn an_altered_row_is_named(rows in chain(), at in any::<prop::sample::Index>(),
                               field in 0..7usize, with in text(), t in any::<i64>()) {
        let mut rows = rows;
        let k = at.index(rows.len());
        alter(&mut rows[k].0, field, &with, t);
        prop_assert_eq!(verify(&rows), Err(ChainBreak::HashMismatch { seq: k as i64 + 1 }));
    }

    #[test]
    fn an_altered_and_rehashed_row_breaks_the_next_link_or_moves_the_head(
        rows in chain(), at in any::<prop::sample::Index>(),
        field in 0..7usize, with in text(), t in any::<i64>()
    ) {
        let head = rows.last().unwrap().2;
        let mut rows = rows;
        let k = at.index(rows.len());
        alter(&mut rows[k].0, field, &with, t);
        rows[k].2 = chain_hash(&rows[k].1, &rows[k].0);
        let seq = k as i64 + 1;
        if k + 1 < rows.len() {
            prop_assert_eq!(
                verify(&rows),
                Err(ChainBreak::LinkMismatch { seq: seq + 1, prev_seq: seq })
            );
        } else {
            // The last row rewritten whole: only the head says so, which is
            // why `ctl audit verify` prints it for comparison.
            let (new_head, _) = verify(&rows).unwrap();
            prop_assert_ne!(new_head, head);
        }
    }

    #[test]
    fn a_removed_row_is_named(rows in chain(), at in any::<prop::sample::Index>()) {
        let head = rows.last().unwrap().2;
        let n = rows.len();
        let mut rows = rows;
        let k = at.index(n);
        rows.remove(k);
        let seq = k as i64 + 1;
        if k + 1 < n {
            prop_assert_eq!(verify(&rows), Err(ChainBreak::Gap { seq: seq + 1, expected: seq }));
        } else {
            // A cut tail is a shorter chain with an older head.
            let (new_head, count) = verify(&rows).unwrap();
            prop_assert_ne!(new_head, head);
            prop_assert_eq!(count as usize, n - 1);
        }
    }

    #[test]
    fn reordered_rows_are_named(rows in chain(), at in any::<prop::sample::Index>(),
                                renumber in any::<bool>()) {
        let mut rows = rows;
        let k = at.index(rows.len() - 1);
        rows.swap(k, k + 1);
        let seq = k as i64 + 1;
        if renumber {
            // Hiding the swap by renumbering changes what the hashes cover.
            rows[k].0.seq = seq;
            rows[k + 1].0.seq = seq + 1;
            let broke = verify(&rows).unwrap_err();
            prop_assert!(
                broke == ChainBreak::LinkMismatch { seq, prev_seq: seq - 1 }
                    || broke == ChainBreak::HashMismatch { seq },
                "{:?}", broke
            );
        } else {
            prop_assert_eq!(verify(&rows), Err(ChainBreak::Gap { seq: seq + 1, expected: seq }));
        }
    }

    #[test]
    fn a_changed_link_is_named(rows in chain(), at in any::<prop::sample::Index>(),
                               flip in 0..32usize) {
        let mut rows = rows;
        let k = at.index(rows.len());
        rows[k].1[flip] ^= 1;
        let seq = k as i64 + 1;
        prop_assert_eq!(verify(&rows), Err(ChainBreak::LinkMismatch { seq, prev_seq: seq - 1 }));
    }
}
