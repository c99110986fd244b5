//! Operator passwords: Argon2id with the crate's recommended parameters
//! (19 MiB, 2 passes), stored as PHC strings.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Shortest password accepted for a new or changed password.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest password accepted; Argon2 takes any length, but a bound keeps a
/// hostile request from costing more than its body limit already allows.
pub const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordPolicyError {
    #[error("password must be at least {MIN_PASSWORD_LEN} characters")]
    TooShort,
    #[error("password must be at most {MAX_PASSWORD_LEN} characters")]
    TooLong,
}

/// Checks a new password against the policy.
pub fn check_policy(password: &str) -> Result<(), PasswordPolicyError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(PasswordPolicyError::TooShort);
    }
    if n > MAX_PASSWORD_LEN {
        return Err(PasswordPolicyError::TooLong);
    }
    Ok(())
}

/// Hashes a password into a PHC string.
pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    // Hashing with valid default parameters and a fresh salt cannot fail;
    // if it ever did, an unusable hash is the safe outcome.
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_else(|_| "!".to_owned())
}

/// Whether `password` matches `phc`. A malformed stored hash never matches.
pub fn verify(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Spends the same work as [`verify`] for a user that does not exist, so
/// response time does not tell which usernames are real.
pub fn verify_dummy(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash("tessera-dummy-password"));
    let _ = verify(phc, password);
}

/// A random password for a bootstrap or admin-created account: 24 characters
/// of unambiguous base32 (120 bits).
pub fn generate() -> String {
    let bytes: [u8; 15] = crate::secret::random_bytes();
    data_encoding::BASE32_NOPAD
        .encode(&bytes)
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_the_same_password() {
        let h = hash("correct horse battery");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(&h, "correct horse battery"));
        assert!(!verify(&h, "correct horse battery "));
        assert!(!verify("not a phc string", "x"));
    }

    #[test]
    fn policy_bounds_length() {
        assert_eq!(check_policy("short"), Err(PasswordPolicyError::TooShort));
        assert!(check_policy("long enough pass").is_ok());
        assert_eq!(
            check_policy(&"x".repeat(MAX_PASSWORD_LEN + 1)),
            Err(PasswordPolicyError::TooLong)
        );
    }

    #[test]
    fn generated_passwords_pass_policy_and_differ() {
        let a = generate();
        assert!(check_policy(&a).is_ok());
        assert_ne!(a, generate());
    }
}
