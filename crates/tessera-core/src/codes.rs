//! Short codes people type: RFC 8628 user codes and support codes.
//!
//! Both are drawn uniformly from the OS CSPRNG (`gen_range` rejects and
//! redraws rather than reducing modulo the alphabet size, so there is no
//! bias). Comparison ignores case, dashes and spaces.

use rand::Rng;

/// RFC 8628 §6.1: twenty consonants, no vowels (no words), no digits.
pub const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
pub const USER_CODE_LEN: usize = 8;

/// Support codes: digits and capitals without the look-alikes 0/O, 1/I/L:
/// 31 symbols, so nine of them carry log2(31^9) ≈ 44.6 bits.
pub const SUPPORT_CODE_ALPHABET: &[u8; 31] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
pub const SUPPORT_CODE_LEN: usize = 9;

fn draw(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rngs::OsRng;
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

fn normalise(input: &str, alphabet: &[u8], len: usize) -> Option<String> {
    let s: String = input
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    (s.len() == len && s.bytes().all(|b| alphabet.contains(&b))).then_some(s)
}

/// A fresh user code, canonical form (8 letters, no dash).
pub fn new_user_code() -> String {
    draw(USER_CODE_ALPHABET, USER_CODE_LEN)
}

/// The canonical form of a typed user code, if it is one.
pub fn normalise_user_code(input: &str) -> Option<String> {
    normalise(input, USER_CODE_ALPHABET, USER_CODE_LEN)
}

/// `BCDF-GHJK`. Anything that is not eight ASCII symbols (say, a code a
/// misbehaving server sent) is shown as it is, never split inside a
/// character.
pub fn display_user_code(canonical: &str) -> String {
    match (canonical.get(..4), canonical.get(4..)) {
        (Some(a), Some(b)) if canonical.len() == USER_CODE_LEN => format!("{a}-{b}"),
        _ => canonical.to_owned(),
    }
}

/// A fresh support code, canonical form (9 symbols, no dashes).
pub fn new_support_code() -> String {
    draw(SUPPORT_CODE_ALPHABET, SUPPORT_CODE_LEN)
}

pub fn normalise_support_code(input: &str) -> Option<String> {
    normalise(input, SUPPORT_CODE_ALPHABET, SUPPORT_CODE_LEN)
}

/// `XXX-XXX-XXX`; like [`display_user_code`], anything else as it is.
pub fn display_support_code(canonical: &str) -> String {
    match (canonical.get(..3), canonical.get(3..6), canonical.get(6..)) {
        (Some(a), Some(b), Some(c)) if canonical.len() == SUPPORT_CODE_LEN => {
            format!("{a}-{b}-{c}")
        }
        _ => canonical.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_use_the_rfc_alphabet_and_normalise() {
        let c = new_user_code();
        assert_eq!(c.len(), 8);
        assert!(c.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)));
        let shown = display_user_code(&c);
        assert_eq!(shown.len(), 9);
        assert_eq!(normalise_user_code(&shown.to_lowercase()), Some(c.clone()));
        assert_eq!(normalise_user_code(&format!(" {} ", &c)), Some(c));
        assert_eq!(normalise_user_code("BCDF-GHJ"), None);
        assert_eq!(normalise_user_code("AEIO-UBCD"), None);
    }

    #[test]
    fn support_codes_have_31_symbols_and_normalise() {
        assert_eq!(SUPPORT_CODE_ALPHABET.len(), 31);
        let mut sorted = SUPPORT_CODE_ALPHABET.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 31, "no repeated symbols");
        let c = new_support_code();
        let shown = display_support_code(&c);
        assert_eq!(shown.len(), 11);
        assert_eq!(normalise_support_code(&shown.to_lowercase()), Some(c));
    }

    #[test]
    fn draws_are_uniform_enough() {
        // 20 000 symbols over 20 letters: each should appear ~1000 times.
        let mut counts = [0usize; 20];
        for _ in 0..2500 {
            for b in new_user_code().bytes() {
                counts[USER_CODE_ALPHABET.iter().position(|x| *x == b).unwrap()] += 1;
            }
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }
}
