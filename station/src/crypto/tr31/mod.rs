//! TR-31 / ANSI X9.143-2022 key blocks: the header with its optional blocks, and wrapping and
//! unwrapping a key under a key block protection key (KBPK).
//!
//! The header's version field selects the protection method: A and C (TDES key variant binding),
//! B (TDES key derivation binding), D (AES key derivation binding) and E (ISO 20038, AES-CTR).

mod binding;
mod error;
mod header;

pub use error::Tr31Error;
pub use header::{
    Exportability, KeyBlockAlgorithm, KeyBlockHeader, KeyBlockVersion, KeyContext, KeyUsage,
    KeyVersionNumber, ModeOfUse, OptionalBlock,
};

use super::{KeyAlgorithm, SecretKey};

/// Key length obfuscation applied by `wrap` (ANSI X9.143-2022), which hides the length of the
/// wrapped key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LengthMasking {
    /// Pad the key to the longest key of its family (24 bytes for TDES, 32 for AES) before
    /// padding to whole cipher blocks, so the block length does not reveal the key length.
    #[default]
    MaxForAlgorithm,
    /// Pad only to whole cipher blocks; the block length shows the key length.
    Off,
}

/// Wraps `key` in a key block under `kbpk`, with key length obfuscation.
///
/// The header's length field and padding block are filled in here; a `PB` block in `header`
/// is never present because [`KeyBlockHeader`] does not keep one.
pub fn wrap(
    kbpk: &SecretKey,
    header: &KeyBlockHeader,
    key: &SecretKey,
) -> Result<String, Tr31Error> {
    wrap_with(kbpk, header, key, LengthMasking::default())
}

/// Wraps `key` in a key block under `kbpk` with the given length masking.
pub fn wrap_with(
    kbpk: &SecretKey,
    header: &KeyBlockHeader,
    key: &SecretKey,
    masking: LengthMasking,
) -> Result<String, Tr31Error> {
    header.check_key(key.algorithm())?;
    binding::wrap(kbpk, header, key, masking)
}

/// Unwraps a key block: checks its syntax, verifies its MAC under `kbpk` and returns the header
/// and the key. The key's algorithm comes from the header's algorithm and the key length.
///
/// Blocks with and without key length obfuscation are both accepted.
pub fn unwrap(kbpk: &SecretKey, block: &str) -> Result<(KeyBlockHeader, SecretKey), Tr31Error> {
    let parsed = header::parse_block_header(block)?;
    binding::unwrap(kbpk, block, parsed)
}

/// Chooses the clear key's algorithm from the header's algorithm and the key length in bytes.
fn key_algorithm_for(algorithm: KeyBlockAlgorithm, len: usize) -> Result<KeyAlgorithm, Tr31Error> {
    let found = match (algorithm, len) {
        (KeyBlockAlgorithm::Aes, 16) => Some(KeyAlgorithm::Aes128),
        (KeyBlockAlgorithm::Aes, 24) => Some(KeyAlgorithm::Aes192),
        (KeyBlockAlgorithm::Aes, 32) => Some(KeyAlgorithm::Aes256),
        (KeyBlockAlgorithm::Tdes, 16) => Some(KeyAlgorithm::Tdes2),
        (KeyBlockAlgorithm::Tdes, 24) => Some(KeyAlgorithm::Tdes3),
        _ => None,
    };
    found.ok_or(Tr31Error::UnsupportedKeyLength { algorithm, len })
}
