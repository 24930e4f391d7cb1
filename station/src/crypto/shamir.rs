//! M-of-N key shares: Shamir secret sharing over GF(2^8) (the `blahaj` crate), for the station
//! master key and other keys held by custodians.
//!
//! Each share carries the threshold, its index, the key algorithm and a 4-byte checksum: the
//! start of a SHA-256 over the other fields. A custodian's typing error is then caught when the
//! share is entered, not later as a wrong combined key.
//!
//! Share text: `THRESHOLD-INDEX-ALGORITHM-VALUE-CHECKSUM`, for example
//! `2-1-aes128-<32 hex digits>-<8 hex digits>`.

use std::fmt;

use blahaj::{Share, Sharks};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::kcv::{Kcv, KcvMethod};
use super::{KeyAlgorithm, KeyError, SecretKey};

/// Errors in splitting, parsing or combining key shares. None carries share values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShareError {
    /// The threshold or share count is outside what the scheme allows.
    #[error(
        "cannot split into {count} shares with threshold {threshold}; use a threshold of at least 2 and at most the share count, and at most 255 shares"
    )]
    InvalidThreshold { threshold: usize, count: usize },
    /// Share text does not have the five dash-separated fields.
    #[error(
        "share {position} is not in the form THRESHOLD-INDEX-ALGORITHM-VALUE-CHECKSUM; check that it was copied whole"
    )]
    InvalidFormat { position: usize },
    /// The share's checksum does not match its contents.
    #[error("share {position} has a wrong checksum; it was mistyped or altered, so enter it again")]
    ChecksumMismatch { position: usize },
    /// Shares from different splits, or of different keys, were given together.
    #[error(
        "share {position} does not belong with share 1 (different threshold, algorithm or length); give shares of one split"
    )]
    Mismatch { position: usize },
    /// Two shares have the same index.
    #[error("shares {first} and {second} are the same share (index {index}); give distinct shares")]
    DuplicateIndex {
        first: usize,
        second: usize,
        index: u8,
    },
    /// Fewer shares than the threshold were given.
    #[error("{given} shares given but {threshold} are needed to recover the key")]
    TooFewShares { given: usize, threshold: usize },
    /// The recovered bytes do not form a key; this is a bug or a share of another split.
    #[error("recovered key is malformed: {0}")]
    Key(#[from] KeyError),
}

/// One custodian's share of a key. Zeroized on drop, never printed: `Debug` shows only the
/// threshold, index and algorithm.
#[derive(Clone)]
pub struct KeyShare {
    threshold: u8,
    index: u8,
    algorithm: KeyAlgorithm,
    value: Zeroizing<Vec<u8>>,
}

impl KeyShare {
    /// Returns the number of shares needed to recover the key.
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// Returns the share's index (its x coordinate, 1 to 255).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Returns the algorithm of the shared key.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// Returns the share as text for a custodian to write down. The text is secret.
    pub fn expose_text(&self) -> Zeroizing<String> {
        let value = Zeroizing::new(hex::encode_upper(self.value.as_slice()));
        Zeroizing::new(format!(
            "{}-{}-{}-{}-{}",
            self.threshold,
            self.index,
            self.algorithm.name(),
            value.as_str(),
            hex::encode_upper(self.checksum()),
        ))
    }

    /// Computes the check value of the share: its value taken as a key of the shared key's
    /// algorithm, so that a custodian checks a share the same way as a component.
    pub fn kcv(&self, method: KcvMethod) -> Kcv {
        let as_key = SecretKey::new(self.algorithm, self.value.clone())
            .expect("a share value has the length of its algorithm's keys");
        Kcv::compute(&as_key, method)
    }

    /// Parses share text written by [`KeyShare::expose_text`], checking its checksum.
    /// `position` (1-based) names the share in error messages.
    pub fn from_text(text: &str, position: usize) -> Result<Self, ShareError> {
        let invalid = || ShareError::InvalidFormat { position };
        let fields: Vec<&str> = text.trim().split('-').collect();
        let [threshold, index, algorithm, value, checksum] = fields.as_slice() else {
            return Err(invalid());
        };
        let threshold: u8 = threshold.parse().map_err(|_| invalid())?;
        let index: u8 = index.parse().map_err(|_| invalid())?;
        let algorithm = KeyAlgorithm::from_name(algorithm).ok_or_else(invalid)?;
        let value = Zeroizing::new(hex::decode(value).map_err(|_| invalid())?);
        let checksum = hex::decode(checksum).map_err(|_| invalid())?;
        if threshold < 2 || index == 0 || value.len() != algorithm.key_len() {
            return Err(invalid());
        }

        let share = Self {
            threshold,
            index,
            algorithm,
            value,
        };
        if !bool::from(share.checksum().as_slice().ct_eq(&checksum)) {
            return Err(ShareError::ChecksumMismatch { position });
        }
        Ok(share)
    }

    fn checksum(&self) -> [u8; 4] {
        let mut hasher = Sha256::new();
        hasher.update([self.threshold, self.index]);
        hasher.update(self.algorithm.name().as_bytes());
        hasher.update(self.value.as_slice());
        let digest = hasher.finalize();
        [digest[0], digest[1], digest[2], digest[3]]
    }
}

impl fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyShare({} of threshold {}, {}, redacted)",
            self.index, self.threshold, self.algorithm
        )
    }
}

/// Splits `key` into `count` shares, any `threshold` of which recover it.
pub fn split(key: &SecretKey, threshold: usize, count: usize) -> Result<Vec<KeyShare>, ShareError> {
    let invalid = ShareError::InvalidThreshold { threshold, count };
    let (Ok(threshold_u8), Ok(_)) = (u8::try_from(threshold), u8::try_from(count)) else {
        return Err(invalid);
    };
    if threshold < 2 || count < threshold {
        return Err(invalid);
    }

    let shares = Sharks(threshold_u8)
        .dealer(key.expose())
        .take(count)
        .map(|share| {
            let bytes = Zeroizing::new(Vec::from(&share));
            KeyShare {
                threshold: threshold_u8,
                index: bytes[0],
                algorithm: key.algorithm(),
                value: Zeroizing::new(bytes[1..].to_vec()),
            }
        })
        .collect();
    Ok(shares)
}

/// Recovers a key from at least `threshold` shares of one split.
pub fn combine(shares: &[KeyShare]) -> Result<SecretKey, ShareError> {
    let Some(first) = shares.first() else {
        return Err(ShareError::TooFewShares {
            given: 0,
            threshold: 2,
        });
    };
    for (offset, share) in shares.iter().enumerate().skip(1) {
        let position = offset + 1;
        if share.threshold != first.threshold
            || share.algorithm != first.algorithm
            || share.value.len() != first.value.len()
        {
            return Err(ShareError::Mismatch { position });
        }
        if let Some(earlier) = shares[..offset]
            .iter()
            .position(|other| other.index == share.index)
        {
            return Err(ShareError::DuplicateIndex {
                first: earlier + 1,
                second: position,
                index: share.index,
            });
        }
    }
    let threshold = usize::from(first.threshold);
    if shares.len() < threshold {
        return Err(ShareError::TooFewShares {
            given: shares.len(),
            threshold,
        });
    }

    let mut parsed = Vec::with_capacity(shares.len());
    for share in shares {
        let mut bytes = Zeroizing::new(Vec::with_capacity(share.value.len() + 1));
        bytes.push(share.index);
        bytes.extend_from_slice(&share.value);
        parsed.push(
            Share::try_from(bytes.as_slice()).expect("a share value is at least 16 bytes long"),
        );
    }
    let secret = Sharks(first.threshold)
        .recover(parsed.iter())
        .map(Zeroizing::new)
        .map_err(|_| ShareError::TooFewShares {
            given: shares.len(),
            threshold,
        })?;
    Ok(SecretKey::new(first.algorithm, secret)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_threshold_subset_recovers_key() {
        let key = SecretKey::generate(KeyAlgorithm::Aes256).unwrap();
        let shares = split(&key, 3, 5).unwrap();
        assert_eq!(shares.len(), 5);
        for subset in [[0, 1, 2], [0, 2, 4], [1, 3, 4], [4, 3, 2]] {
            let chosen: Vec<KeyShare> = subset.iter().map(|&i| shares[i].clone()).collect();
            assert!(combine(&chosen).unwrap().ct_eq(&key), "{subset:?}");
        }
        assert_eq!(
            combine(&shares[..2]).unwrap_err(),
            ShareError::TooFewShares {
                given: 2,
                threshold: 3
            }
        );
    }

    #[test]
    fn share_text_round_trips_and_detects_typos() {
        let key = SecretKey::generate(KeyAlgorithm::Tdes2).unwrap();
        let shares = split(&key, 2, 3).unwrap();
        let text = shares[1].expose_text();
        let parsed = KeyShare::from_text(&text, 2).unwrap();
        assert_eq!(parsed.index(), shares[1].index());
        assert!(combine(&[shares[0].clone(), parsed]).unwrap().ct_eq(&key));

        let mut typo = text.to_string();
        let position = typo.find("tdes2-").unwrap() + 6;
        let replacement = if &typo[position..=position] == "0" {
            "1"
        } else {
            "0"
        };
        typo.replace_range(position..=position, replacement);
        assert_eq!(
            KeyShare::from_text(&typo, 2).unwrap_err(),
            ShareError::ChecksumMismatch { position: 2 }
        );
    }

    #[test]
    fn share_kcv_matches_value_as_key() {
        let key = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
        let share = split(&key, 2, 2).unwrap().remove(0);
        let text = share.expose_text();
        let value = text.split('-').nth(3).unwrap();
        let as_key = SecretKey::from_hex(KeyAlgorithm::Aes128, value).unwrap();
        for method in [KcvMethod::Legacy, KcvMethod::Cmac] {
            assert_eq!(
                share.kcv(method).to_hex(),
                Kcv::compute(&as_key, method).to_hex()
            );
        }
    }

    #[test]
    fn bad_parameters_are_rejected() {
        let key = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
        for (threshold, count) in [(1, 3), (4, 3), (2, 256), (0, 0)] {
            assert!(
                split(&key, threshold, count).is_err(),
                "{threshold} {count}"
            );
        }
        let shares = split(&key, 2, 2).unwrap();
        let error = combine(&[shares[0].clone(), shares[0].clone()]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "shares 1 and 2 are the same share (index 1); give distinct shares"
        );
        assert!(!format!("{:?}", shares[0]).contains(&hex::encode_upper(key.expose())[..8]));
    }
}
