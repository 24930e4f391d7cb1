//! Password hashing with argon2id (RFC 9106), with the `argon2` crate's default parameters
//! (argon2 0.6 `Params::default()`: 19 MiB of memory, 2 passes, 1 lane).
//!
//! Both functions take tens of milliseconds of CPU time: async callers run them with
//! `tokio::task::spawn_blocking`.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use super::UserError;

/// Hashes `password` with argon2id and a fresh random salt, returning the PHC string.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|error| UserError::Hashing(error.to_string()))?;
    Ok(hash.to_string())
}

/// Checks `password` against a PHC string from [`hash_password`]. Returns false for a wrong
/// password, and an error only when the stored hash is unreadable.
pub fn verify_password(password: &str, phc: &str) -> Result<bool, UserError> {
    let parsed = PasswordHash::new(phc).map_err(|error| UserError::Hashing(error.to_string()))?;
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(error) => Err(UserError::Hashing(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_and_verifies() {
        let hash = hash_password("correct horse battery").unwrap();

        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(verify_password("correct horse battery", &hash).unwrap());
        assert!(!verify_password("correct horse battery!", &hash).unwrap());
    }

    #[test]
    fn same_password_gets_new_salt() {
        let first = hash_password("the same password").unwrap();
        let second = hash_password("the same password").unwrap();

        assert_ne!(first, second);
    }
}
