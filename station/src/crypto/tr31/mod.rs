//! TR-31 / ANSI X9.143 key blocks: the header with its optional blocks, and wrapping and
//! unwrapping a key under a key block protection key (KBPK).
//!
//! The header's version field selects the protection method: A and C (TDES key variant binding),
//! B (TDES key derivation binding), D (AES key derivation binding) and E (ISO 20038, AES-CTR).
//! [`policy`] decides which headers the station writes and accepts.

mod binding;
mod codes;
mod error;
mod header;
mod optional;
pub mod policy;

pub use codes::{
    Exportability, KeyBlockAlgorithm, KeyBlockVersion, KeyContext, KeyUsage, KeyVersionNumber,
    ModeOfUse,
};
pub use error::Tr31Error;
pub use header::KeyBlockHeader;
pub use optional::OptionalBlock;

use super::{KeyAlgorithm, SecretKey};

/// Key length obfuscation applied by `wrap` (ANSI X9.143), which hides the length of the
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

/// Wraps `key` in a key block under `kbpk`, with key length obfuscation, after checking the
/// key block policy.
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
    binding::check_kbpk_algorithm(header.version(), kbpk.algorithm())?;
    policy::check_wrap(header, key.algorithm(), kbpk.algorithm())?;
    binding::wrap(binding::Kbpk::Clear(kbpk), header, key, masking)
}

/// A key block protection key that never enters station memory, such as a key in an HSM: the
/// holder computes the CMAC of the key derivation input, and everything else runs here.
///
/// Only the CMAC-derived versions (B, D and E) can use such a key, because versions A and C
/// derive their keys by XOR with the clear KBPK.
pub trait ExternalKbpk {
    /// Algorithm and length of the KBPK.
    fn algorithm(&self) -> KeyAlgorithm;

    /// Computes the CMAC of `data` under the KBPK, or returns why it failed.
    fn cmac(&self, data: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, String>;
}

/// Wraps `key` in a key block under a KBPK held outside station memory, with key length
/// obfuscation.
pub fn wrap_external(
    kbpk: &dyn ExternalKbpk,
    header: &KeyBlockHeader,
    key: &SecretKey,
) -> Result<String, Tr31Error> {
    header.check_key(key.algorithm())?;
    binding::check_kbpk_algorithm(header.version(), kbpk.algorithm())?;
    policy::check_wrap(header, key.algorithm(), kbpk.algorithm())?;
    binding::wrap(
        binding::Kbpk::External(kbpk),
        header,
        key,
        LengthMasking::default(),
    )
}

/// Unwraps a key block under a KBPK held outside station memory, as [`unwrap`] does.
pub fn unwrap_external(
    kbpk: &dyn ExternalKbpk,
    block: &str,
) -> Result<(KeyBlockHeader, SecretKey), Tr31Error> {
    let parsed = header::parse_block_header(block)?;
    let (header, key) = binding::unwrap(binding::Kbpk::External(kbpk), block, parsed)?;
    policy::check_unwrap(&header, key.expose().len())?;
    Ok((header, key))
}

/// Unwraps a key block: checks its syntax, verifies its MAC under `kbpk` and returns the header
/// and the key. The key's algorithm comes from the header's algorithm and the key length.
///
/// Blocks with and without key length obfuscation are both accepted.
pub fn unwrap(kbpk: &SecretKey, block: &str) -> Result<(KeyBlockHeader, SecretKey), Tr31Error> {
    let parsed = header::parse_block_header(block)?;
    let (header, key) = binding::unwrap(binding::Kbpk::Clear(kbpk), block, parsed)?;
    policy::check_unwrap(&header, key.expose().len())?;
    Ok((header, key))
}

/// Unwraps a key block that must carry `usage`, so that, for example, a BDK block is never
/// taken for a PIN key.
pub fn unwrap_for_usage(
    kbpk: &SecretKey,
    block: &str,
    usage: KeyUsage,
) -> Result<(KeyBlockHeader, SecretKey), Tr31Error> {
    let (header, key) = unwrap(kbpk, block)?;
    if header.key_usage() != usage {
        return Err(Tr31Error::UnexpectedUsage {
            expected: usage,
            found: header.key_usage(),
        });
    }
    Ok((header, key))
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
