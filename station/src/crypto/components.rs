//! Key components: splitting a key into XOR components and combining them again, the
//! dual-control form of ANSI X9.24-1 for keys entered by custodians.
//!
//! Components keep whatever DES parity bits they have. Parity does not enter the DES key
//! schedule, so it does not change a DES check value, and the station never adjusts it.

use zeroize::Zeroizing;

use super::block_cipher::xor_in_place;
use super::{KeyAlgorithm, KeyError, SecretKey};

/// Errors in splitting or combining components.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ComponentError {
    /// Fewer components than dual control needs.
    #[error(
        "{count} components given; at least 2 are needed so that no single person holds the key"
    )]
    TooFewComponents { count: usize },
    /// Components of different algorithms were given.
    #[error(
        "component {index} is a {found} key but component 1 is {expected}; every component must be of the same algorithm"
    )]
    AlgorithmMismatch {
        index: usize,
        expected: KeyAlgorithm,
        found: KeyAlgorithm,
    },
    /// The random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
    /// A combined key could not be built; this is a bug.
    #[error("combined key is malformed (bug): {0}")]
    Key(#[from] KeyError),
}

/// Combines components by XOR. All components must be of the same algorithm (and so length).
pub fn combine(components: &[SecretKey]) -> Result<SecretKey, ComponentError> {
    let Some(first) = components.first() else {
        return Err(ComponentError::TooFewComponents { count: 0 });
    };
    if components.len() < 2 {
        return Err(ComponentError::TooFewComponents {
            count: components.len(),
        });
    }
    let algorithm = first.algorithm();
    let mut combined = Zeroizing::new(first.expose().to_vec());
    for (index, component) in components.iter().enumerate().skip(1) {
        if component.algorithm() != algorithm {
            return Err(ComponentError::AlgorithmMismatch {
                index: index + 1,
                expected: algorithm,
                found: component.algorithm(),
            });
        }
        xor_in_place(&mut combined, component.expose());
    }
    Ok(SecretKey::new(algorithm, combined)?)
}

/// Splits `key` into `count` components: `count - 1` random ones and a last one that makes the
/// XOR of all of them equal to `key`.
pub fn split(key: &SecretKey, count: usize) -> Result<Vec<SecretKey>, ComponentError> {
    if count < 2 {
        return Err(ComponentError::TooFewComponents { count });
    }
    let algorithm = key.algorithm();
    let mut last = Zeroizing::new(key.expose().to_vec());
    let mut components = Vec::with_capacity(count);
    for _ in 1..count {
        let component = SecretKey::generate(algorithm).map_err(|error| match error {
            KeyError::Random(message) => ComponentError::Random(message),
            other => ComponentError::Key(other),
        })?;
        xor_in_place(&mut last, component.expose());
        components.push(component);
    }
    components.push(SecretKey::new(algorithm, last)?);
    Ok(components)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_then_combine_returns_key() {
        let key = SecretKey::generate(KeyAlgorithm::Aes256).unwrap();
        for count in 2..=5 {
            let components = split(&key, count).unwrap();
            assert_eq!(components.len(), count);
            assert!(combine(&components).unwrap().ct_eq(&key));
        }
    }

    #[test]
    fn single_component_is_rejected() {
        let key = SecretKey::generate(KeyAlgorithm::Tdes2).unwrap();
        assert_eq!(
            split(&key, 1).unwrap_err(),
            ComponentError::TooFewComponents { count: 1 }
        );
        let error = combine(&[key]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "1 components given; at least 2 are needed so that no single person holds the key"
        );
    }

    #[test]
    fn mixed_algorithms_are_rejected() {
        let a = SecretKey::generate(KeyAlgorithm::Tdes2).unwrap();
        let b = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
        let error = combine(&[a, b]).unwrap_err();
        assert_eq!(
            error,
            ComponentError::AlgorithmMismatch {
                index: 2,
                expected: KeyAlgorithm::Tdes2,
                found: KeyAlgorithm::Aes128
            }
        );
    }
}
