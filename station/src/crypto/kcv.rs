//! Key check values (ANSI X9.24-1): the legacy form (encrypt an all-zero block) and the CMAC form
//! (CMAC of an all-zero block, also used by the X9.143 `KC` and `KP` optional blocks).
//!
//! A KCV identifies a key without revealing it, so it may be shown, logged and stored. It always
//! carries its method, because the two forms of one key differ and comparing across methods is a
//! classic mistake.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::SecretKey;
use super::block_cipher::{BlockCipher, cmac};

/// Method of computing a check value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KcvMethod {
    /// Encrypt one all-zero block with the key and keep the leftmost bytes.
    Legacy,
    /// Compute the CMAC of one all-zero block and keep the leftmost bytes.
    Cmac,
}

impl KcvMethod {
    /// Returns the name used on the command line, in the database and in audit events.
    pub fn name(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Cmac => "cmac",
        }
    }

    /// Parses a name produced by [`KcvMethod::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Legacy, Self::Cmac]
            .into_iter()
            .find(|method| method.name() == name)
    }

    /// Returns the allowed check value lengths in bytes: 2 to 4 for the legacy form and 2 to 5
    /// for CMAC, because X9.143 key blocks carry 5-byte CMAC check values.
    pub fn allowed_lengths(self) -> std::ops::RangeInclusive<usize> {
        match self {
            Self::Legacy => 2..=4,
            Self::Cmac => 2..=5,
        }
    }
}

impl fmt::Display for KcvMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors in computing, parsing or comparing check values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KcvError {
    /// The requested or given length is outside the range of the method.
    #[error(
        "a {method} check value is {min} to {max} bytes long, but {actual} bytes were requested"
    )]
    LengthOutOfRange {
        method: KcvMethod,
        actual: usize,
        min: usize,
        max: usize,
    },
    /// The text is not hex.
    #[error("check value {text:?} is not valid hex; give 4 to 10 digits 0-9 and A-F")]
    InvalidHex { text: String },
    /// Two check values of different methods were compared.
    #[error(
        "cannot compare a {left} check value with a {right} check value; compute both with the same method"
    )]
    MethodMismatch { left: KcvMethod, right: KcvMethod },
    /// Two check values of different lengths were compared.
    #[error(
        "cannot compare a {left}-byte check value with a {right}-byte check value; compute both with the same length"
    )]
    LengthMismatch { left: usize, right: usize },
}

/// A key check value with its method. Compare two of them with [`Kcv::matches`].
#[derive(Clone)]
pub struct Kcv {
    method: KcvMethod,
    value: Vec<u8>,
}

impl Kcv {
    /// Computes the 3-byte check value of `key`.
    pub fn compute(key: &SecretKey, method: KcvMethod) -> Kcv {
        Self::compute_len(key, method, 3).expect("3 bytes is valid for every method")
    }

    /// Computes the check value of `key` with `len` bytes.
    pub fn compute_len(key: &SecretKey, method: KcvMethod, len: usize) -> Result<Kcv, KcvError> {
        check_len(method, len)?;

        // The output of either method is one cipher block of at least 8 bytes, and `len` is at
        // most 5, so the truncation below always has enough bytes.
        let full = match method {
            KcvMethod::Legacy => {
                let cipher = BlockCipher::new(key);
                let mut block = Zeroizing::new(vec![0u8; cipher.block_len()]);
                cipher.encrypt_block(&mut block);
                block
            }
            KcvMethod::Cmac => cmac(key, &vec![0u8; key.algorithm().block_len()]),
        };
        Ok(Kcv {
            method,
            value: full[..len].to_vec(),
        })
    }

    /// Parses a check value given as hex text (either case), for example one typed by a
    /// custodian.
    pub fn from_hex(method: KcvMethod, hex: &str) -> Result<Kcv, KcvError> {
        let text = hex.trim();
        let value = hex::decode(text).map_err(|_| KcvError::InvalidHex {
            text: text.to_owned(),
        })?;
        check_len(method, value.len())?;
        Ok(Kcv { method, value })
    }

    /// Returns the method the value was computed with.
    pub fn method(&self) -> KcvMethod {
        self.method
    }

    /// Returns the check value bytes.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// Returns the check value as uppercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode_upper(&self.value)
    }

    /// Compares two check values in constant time.
    ///
    /// Returns an error, not `false`, when the methods or lengths differ, because such a
    /// comparison tells nothing about the keys.
    pub fn matches(&self, other: &Kcv) -> Result<bool, KcvError> {
        if self.method != other.method {
            return Err(KcvError::MethodMismatch {
                left: self.method,
                right: other.method,
            });
        }
        if self.value.len() != other.value.len() {
            return Err(KcvError::LengthMismatch {
                left: self.value.len(),
                right: other.value.len(),
            });
        }
        Ok(bool::from(self.value.ct_eq(&other.value)))
    }
}

fn check_len(method: KcvMethod, len: usize) -> Result<(), KcvError> {
    let allowed = method.allowed_lengths();
    if allowed.contains(&len) {
        Ok(())
    } else {
        Err(KcvError::LengthOutOfRange {
            method,
            actual: len,
            min: *allowed.start(),
            max: *allowed.end(),
        })
    }
}

impl fmt::Display for Kcv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.to_hex(), self.method)
    }
}

// A check value is not secret, so `Debug` shows the same text as `Display`.
impl fmt::Debug for Kcv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kcv({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyAlgorithm;

    #[test]
    fn display_shows_hex_and_method() {
        let kcv = Kcv::from_hex(KcvMethod::Cmac, "7ad386").expect("valid hex");
        assert_eq!(kcv.to_string(), "7AD386 (cmac)");
        assert_eq!(format!("{kcv:?}"), "Kcv(7AD386 (cmac))");
    }

    #[test]
    fn method_names_round_trip() {
        for method in [KcvMethod::Legacy, KcvMethod::Cmac] {
            assert_eq!(KcvMethod::from_name(method.name()), Some(method));
        }
        assert_eq!(KcvMethod::from_name("sha1"), None);
    }

    #[test]
    fn length_limits_per_method() {
        let key = SecretKey::from_slice(KeyAlgorithm::Tdes2, &[0x11; 16]).unwrap();
        assert!(Kcv::compute_len(&key, KcvMethod::Legacy, 1).is_err());
        assert!(Kcv::compute_len(&key, KcvMethod::Legacy, 4).is_ok());
        let error = Kcv::compute_len(&key, KcvMethod::Legacy, 5).unwrap_err();
        assert_eq!(
            error.to_string(),
            "a legacy check value is 2 to 4 bytes long, but 5 bytes were requested"
        );
        assert!(Kcv::compute_len(&key, KcvMethod::Cmac, 5).is_ok());
        assert!(Kcv::compute_len(&key, KcvMethod::Cmac, 6).is_err());
    }

    #[test]
    fn matches_rejects_other_method() {
        let legacy = Kcv::from_hex(KcvMethod::Legacy, "7DF76B").unwrap();
        let cmac = Kcv::from_hex(KcvMethod::Cmac, "7DF76B").unwrap();
        assert!(matches!(
            legacy.matches(&cmac),
            Err(KcvError::MethodMismatch { .. })
        ));
    }
}
