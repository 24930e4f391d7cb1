//! Clear key material and the algorithms it belongs to.
//!
//! `SecretKey` is the only type that carries clear key bytes. It zeroizes on drop, has no
//! `Display`, and its `Debug` shows only the algorithm and check value. Its bytes leave it only
//! through [`SecretKey::expose`], so a reviewer can find every place that touches clear keys.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::kcv::{Kcv, KcvMethod};

/// A symmetric key algorithm together with its key length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// Double-length (two-key) triple DES, 16 bytes.
    Tdes2,
    /// Triple-length (three-key) triple DES, 24 bytes.
    Tdes3,
    /// AES with a 128-bit key.
    Aes128,
    /// AES with a 192-bit key.
    Aes192,
    /// AES with a 256-bit key.
    Aes256,
}

impl KeyAlgorithm {
    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::Tdes2 | Self::Aes128 => 16,
            Self::Tdes3 | Self::Aes192 => 24,
            Self::Aes256 => 32,
        }
    }

    /// Returns true for the AES algorithms.
    pub fn is_aes(self) -> bool {
        matches!(self, Self::Aes128 | Self::Aes192 | Self::Aes256)
    }

    /// Block size of the cipher in bytes: 8 for TDES, 16 for AES.
    pub fn block_len(self) -> usize {
        if self.is_aes() { 16 } else { 8 }
    }

    /// Returns the name used on the command line, in the database and in audit events.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tdes2 => "tdes2",
            Self::Tdes3 => "tdes3",
            Self::Aes128 => "aes128",
            Self::Aes192 => "aes192",
            Self::Aes256 => "aes256",
        }
    }

    /// Parses a name produced by [`KeyAlgorithm::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Tdes2,
            Self::Tdes3,
            Self::Aes128,
            Self::Aes192,
            Self::Aes256,
        ]
        .into_iter()
        .find(|algorithm| algorithm.name() == name)
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors in building a key from bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The byte count does not match the algorithm.
    #[error("a {algorithm} key is {expected} bytes long, but {actual} bytes were given")]
    WrongLength {
        algorithm: KeyAlgorithm,
        expected: usize,
        actual: usize,
    },
    /// The key was given as hex text that is not valid hex.
    #[error("key is not valid hex: {0}; give an even number of digits 0-9 and A-F")]
    InvalidHex(String),
    /// No length matches any algorithm of the requested family.
    #[error("{actual} bytes is not a valid {family} key length; use {allowed}")]
    UnsupportedLength {
        family: &'static str,
        actual: usize,
        allowed: &'static str,
    },
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
}

/// A clear symmetric key. Zeroized on drop; never printed, logged or stored in the clear.
pub struct SecretKey {
    algorithm: KeyAlgorithm,
    bytes: Zeroizing<Vec<u8>>,
}

impl SecretKey {
    /// Takes ownership of `bytes` as a key of `algorithm`, checking the length.
    pub fn new(algorithm: KeyAlgorithm, bytes: Zeroizing<Vec<u8>>) -> Result<Self, KeyError> {
        if bytes.len() != algorithm.key_len() {
            return Err(KeyError::WrongLength {
                algorithm,
                expected: algorithm.key_len(),
                actual: bytes.len(),
            });
        }
        Ok(Self { algorithm, bytes })
    }

    /// Copies `bytes` into a new key of `algorithm`.
    pub fn from_slice(algorithm: KeyAlgorithm, bytes: &[u8]) -> Result<Self, KeyError> {
        Self::new(algorithm, Zeroizing::new(bytes.to_vec()))
    }

    /// Parses hex text (either case) into a key of `algorithm`. The error never repeats the text.
    pub fn from_hex(algorithm: KeyAlgorithm, text: &str) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(
            hex::decode(text.trim()).map_err(|error| KeyError::InvalidHex(error.to_string()))?,
        );
        Self::new(algorithm, bytes)
    }

    /// Generates a fresh random key from the operating system's random number generator.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new(vec![0u8; algorithm.key_len()]);
        getrandom::fill(&mut bytes).map_err(|error| KeyError::Random(error.to_string()))?;
        Self::new(algorithm, bytes)
    }

    /// Returns the key's algorithm and length.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// Returns the clear key bytes. Every caller is a place where clear key material is used.
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// Makes a second copy of the key, for the rare step that must keep one while passing one on.
    pub fn duplicate(&self) -> Self {
        Self {
            algorithm: self.algorithm,
            bytes: Zeroizing::new(self.bytes.to_vec()),
        }
    }

    /// Compares two keys in constant time. Keys of different algorithms are never equal.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.algorithm == other.algorithm && bool::from(self.bytes.ct_eq(&other.bytes))
    }
}

// `Debug` identifies the key by its check value only: CMAC for AES, legacy for TDES, the forms
// each family's key blocks and custodians use.
impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = if self.algorithm.is_aes() {
            KcvMethod::Cmac
        } else {
            KcvMethod::Legacy
        };
        let kcv = Kcv::compute(self, method);
        write!(f, "SecretKey({}, kcv {kcv})", self.algorithm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_bytes() {
        let key = SecretKey::from_hex(KeyAlgorithm::Aes128, "2B7E151628AED2A6ABF7158809CF4F3C")
            .expect("valid key");
        let shown = format!("{key:?}");
        assert!(!shown.to_lowercase().contains("2b7e"), "{shown}");
        assert_eq!(shown, "SecretKey(aes128, kcv 7AD386 (cmac))");
    }

    #[test]
    fn wrong_length_is_rejected() {
        let error = SecretKey::from_slice(KeyAlgorithm::Aes256, &[0u8; 16]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "a aes256 key is 32 bytes long, but 16 bytes were given"
        );
    }

    #[test]
    fn constant_time_equality() {
        let a = SecretKey::from_slice(KeyAlgorithm::Aes128, &[1u8; 16]).unwrap();
        let b = SecretKey::from_slice(KeyAlgorithm::Aes128, &[1u8; 16]).unwrap();
        let c = SecretKey::from_slice(KeyAlgorithm::Tdes2, &[1u8; 16]).unwrap();
        assert!(a.ct_eq(&b));
        assert!(!a.ct_eq(&c));
    }
}
