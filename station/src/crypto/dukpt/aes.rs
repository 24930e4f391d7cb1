//! AES DUKPT key derivation, ANSI X9.24-3-2017 section 6: the initial key from a BDK and an
//! initial key ID, the intermediate derivation keys along a transaction counter, and the working
//! keys of one transaction.
//!
//! Every derivation step is the same function: AES-encrypt 16 bytes of derivation data under the
//! derivation key, once per 128 bits of requested key, and keep the leftmost bytes. The
//! derivation data (X9.24-3-2017 section 6.3.2) is:
//!
//! | bytes | content |
//! | --- | --- |
//! | 0 | version, `01` |
//! | 1 | key block counter, `01` then `02` for keys longer than 128 bits |
//! | 2-3 | key usage indicator ([`KeyUsage`]) |
//! | 4-5 | algorithm indicator of the derived key |
//! | 6-7 | length of the derived key in bits |
//! | 8-15 | initial key: the initial key ID; other keys: the derivation ID and the counter |

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use super::DukptError;
use crate::crypto::block_cipher::aes_encrypt_blocks;
use crate::crypto::{KeyAlgorithm, SecretKey};

/// ANSI X9.24-3-2017 caps the transaction counter's one-bits at 16, which bounds the number of
/// derivation steps from the initial key to any transaction key.
pub const MAX_COUNTER_ONE_BITS: u32 = 16;

/// The 8-byte initial key ID of an AES DUKPT device: the BDK ID and the derivation ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InitialKeyId {
    /// Identifies the base derivation key.
    pub bdk_id: [u8; 4],
    /// Identifies the device under that BDK.
    pub derivation_id: [u8; 4],
}

impl InitialKeyId {
    /// Builds the ID from its 8-byte wire form.
    pub fn from_bytes(bytes: [u8; 8]) -> Self {
        let mut bdk_id = [0u8; 4];
        let mut derivation_id = [0u8; 4];
        bdk_id.copy_from_slice(&bytes[..4]);
        derivation_id.copy_from_slice(&bytes[4..]);
        Self {
            bdk_id,
            derivation_id,
        }
    }

    /// Returns the 8-byte wire form: BDK ID then derivation ID.
    pub fn to_bytes(&self) -> [u8; 8] {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&self.bdk_id);
        bytes[4..].copy_from_slice(&self.derivation_id);
        bytes
    }

    /// Parses 16 hex digits (either case).
    pub fn from_hex(text: &str) -> Result<Self, DukptError> {
        let invalid = || DukptError::InvalidInitialKeyId {
            text: text.to_owned(),
        };
        let bytes: [u8; 8] = decode_hex_exact(text).ok_or_else(invalid)?;
        Ok(Self::from_bytes(bytes))
    }

    /// Returns the ID as 16 uppercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode_upper(self.to_bytes())
    }
}

impl fmt::Display for InitialKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for InitialKeyId {
    type Err = DukptError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_hex(text)
    }
}

/// A 12-byte AES DUKPT key serial number: the initial key ID and a 32-bit transaction counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ksn {
    /// The device's initial key ID.
    pub initial_key_id: InitialKeyId,
    /// The transaction counter, with at most [`MAX_COUNTER_ONE_BITS`] one-bits.
    pub counter: u32,
}

impl Ksn {
    /// Builds a KSN, rejecting a counter with more than 16 one-bits.
    pub fn new(initial_key_id: InitialKeyId, counter: u32) -> Result<Self, DukptError> {
        check_counter(counter)?;
        Ok(Self {
            initial_key_id,
            counter,
        })
    }

    /// Parses 24 hex digits (either case): 16 for the initial key ID, 8 for the counter.
    pub fn from_hex(text: &str) -> Result<Self, DukptError> {
        let bytes: [u8; 12] = decode_hex_exact(text).ok_or_else(|| DukptError::InvalidKsn {
            text: text.to_owned(),
        })?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[..8]);
        let counter = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        Self::new(InitialKeyId::from_bytes(id), counter)
    }

    /// Returns the KSN as 24 uppercase hex digits.
    pub fn to_hex(&self) -> String {
        format!("{}{:08X}", self.initial_key_id.to_hex(), self.counter)
    }
}

impl fmt::Display for Ksn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Ksn {
    type Err = DukptError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_hex(text)
    }
}

/// The key usage indicator of the derivation data, ANSI X9.24-3-2017 section 6.3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyUsage {
    /// Key encryption key, `0002`.
    KeyEncryptionKey,
    /// PIN encryption, `1000`.
    PinEncryption,
    /// MAC generation, `2000`.
    MacGeneration,
    /// MAC verification, `2001`.
    MacVerification,
    /// MAC generation and verification, `2002`.
    MacBothWays,
    /// Data encryption, `3000`.
    DataEncryptionEncrypt,
    /// Data decryption, `3001`.
    DataEncryptionDecrypt,
    /// Data encryption and decryption, `3002`.
    DataEncryptionBothWays,
    /// Intermediate derivation key, `8000`.
    KeyDerivation,
    /// Initial key, `8001`.
    KeyDerivationInitialKey,
}

impl KeyUsage {
    /// Returns the 16-bit indicator placed in bytes 2-3 of the derivation data.
    pub fn indicator(self) -> u16 {
        match self {
            Self::KeyEncryptionKey => 0x0002,
            Self::PinEncryption => 0x1000,
            Self::MacGeneration => 0x2000,
            Self::MacVerification => 0x2001,
            Self::MacBothWays => 0x2002,
            Self::DataEncryptionEncrypt => 0x3000,
            Self::DataEncryptionDecrypt => 0x3001,
            Self::DataEncryptionBothWays => 0x3002,
            Self::KeyDerivation => 0x8000,
            Self::KeyDerivationInitialKey => 0x8001,
        }
    }
}

/// Derives a device's initial key from the BDK, ANSI X9.24-3-2017 section 6.
///
/// `key_type` is the algorithm of the initial key. It must be AES, because every later
/// derivation step encrypts with the initial key under AES.
pub fn initial_key(
    bdk: &SecretKey,
    id: &InitialKeyId,
    key_type: KeyAlgorithm,
) -> Result<SecretKey, DukptError> {
    check_aes(bdk.algorithm())?;
    if !key_type.is_aes() {
        return Err(DukptError::InitialKeyNotAes {
            algorithm: key_type,
        });
    }
    let data = derivation_data(KeyUsage::KeyDerivationInitialKey, key_type, &id.to_bytes());
    derive(bdk, key_type, data)
}

/// Derives the intermediate derivation key of `ksn` from the initial key: one derivation step
/// per one-bit of the counter, from the most significant bit down, ANSI X9.24-3-2017 section 6.
///
/// A counter of zero yields the initial key itself.
pub fn derivation_key(initial_key: &SecretKey, ksn: &Ksn) -> Result<SecretKey, DukptError> {
    check_counter(ksn.counter)?;
    derivation_key_unchecked(initial_key, &ksn.initial_key_id, ksn.counter)
}

/// Derives the intermediate derivation key for any 32-bit counter, without the one-bit rule,
/// which the update key's reserved counter `FFFFFFFF` breaks.
fn derivation_key_unchecked(
    initial_key: &SecretKey,
    id: &InitialKeyId,
    counter: u32,
) -> Result<SecretKey, DukptError> {
    let key_type = initial_key.algorithm();
    if !key_type.is_aes() {
        return Err(DukptError::InitialKeyNotAes {
            algorithm: key_type,
        });
    }

    // Each step replaces the key in this one buffer, so no intermediate key is left behind.
    let len = key_type.key_len();
    let mut key = Zeroizing::new([0u8; 32]);
    key[..len].copy_from_slice(initial_key.expose());
    let mut working_counter = 0u32;
    for bit in (0..32).rev() {
        let mask = 1u32 << bit;
        if counter & mask == 0 {
            continue;
        }
        working_counter |= mask;
        let data = derivation_data(
            KeyUsage::KeyDerivation,
            key_type,
            &counter_suffix(id, working_counter),
        );
        derive_in_place(key_type, &mut key[..len], &data);
    }
    Ok(SecretKey::from_slice(key_type, &key[..len])?)
}

/// Derives the working key of one transaction: `usage` and `key_type` select the key, `ksn` the
/// transaction, ANSI X9.24-3-2017 section 6.
pub fn working_key(
    initial_key: &SecretKey,
    ksn: &Ksn,
    usage: KeyUsage,
    key_type: KeyAlgorithm,
) -> Result<SecretKey, DukptError> {
    let derivation = derivation_key(initial_key, ksn)?;
    let data = derivation_data(
        usage,
        key_type,
        &counter_suffix(&ksn.initial_key_id, ksn.counter),
    );
    derive(&derivation, key_type, data)
}

/// The transaction counter reserved for the update key of ANSI X9.24-3-2017. All 32 bits are
/// set, so no transaction uses it, because it breaks the 16 one-bit rule.
pub const UPDATE_KEY_COUNTER: u32 = 0xFFFF_FFFF;

/// Derives a device's update key (ANSI X9.24-3-2017): the key-encryption key under which a
/// host sends the device a new initial key.
///
/// It is the key-encryption working key (usage `0002`) of the reserved counter `FFFFFFFF`,
/// derived from the intermediate derivation key of that counter, which takes all 32 derivation
/// steps. `key_type` is the algorithm of the update key, and so of the new initial key it
/// protects.
pub fn update_key(
    initial_key: &SecretKey,
    id: &InitialKeyId,
    key_type: KeyAlgorithm,
) -> Result<SecretKey, DukptError> {
    let derivation = derivation_key_unchecked(initial_key, id, UPDATE_KEY_COUNTER)?;
    let data = derivation_data(
        KeyUsage::KeyEncryptionKey,
        key_type,
        &counter_suffix(id, UPDATE_KEY_COUNTER),
    );
    derive(&derivation, key_type, data)
}

/// Returns the counter that follows `counter` on a device: the next value with at most 16
/// one-bits, or `None` when the counter space is exhausted.
pub fn next_counter(counter: u32) -> Option<u32> {
    let mut candidate = counter.checked_add(1)?;
    // Adding the lowest one-bit skips every value that shares the too-long run of one-bits.
    while candidate.count_ones() > MAX_COUNTER_ONE_BITS {
        candidate = candidate.checked_add(candidate & candidate.wrapping_neg())?;
    }
    Some(candidate)
}

fn check_aes(algorithm: KeyAlgorithm) -> Result<(), DukptError> {
    if algorithm.is_aes() {
        Ok(())
    } else {
        Err(DukptError::BdkNotAes { algorithm })
    }
}

fn check_counter(counter: u32) -> Result<(), DukptError> {
    let ones = counter.count_ones();
    if ones > MAX_COUNTER_ONE_BITS {
        return Err(DukptError::CounterTooManyOneBits { counter, ones });
    }
    Ok(())
}

fn counter_suffix(id: &InitialKeyId, counter: u32) -> [u8; 8] {
    let mut suffix = [0u8; 8];
    suffix[..4].copy_from_slice(&id.derivation_id);
    suffix[4..].copy_from_slice(&counter.to_be_bytes());
    suffix
}

fn algorithm_indicator(algorithm: KeyAlgorithm) -> u16 {
    match algorithm {
        KeyAlgorithm::Tdes2 => 0x0000,
        KeyAlgorithm::Tdes3 => 0x0001,
        KeyAlgorithm::Aes128 => 0x0002,
        KeyAlgorithm::Aes192 => 0x0003,
        KeyAlgorithm::Aes256 => 0x0004,
    }
}

fn derivation_data(usage: KeyUsage, key_type: KeyAlgorithm, suffix: &[u8; 8]) -> [u8; 16] {
    let bits = u16::try_from(key_type.key_len() * 8).expect("key lengths are at most 256 bits");
    let mut data = [0u8; 16];
    data[0] = 0x01;
    data[1] = 0x01;
    data[2..4].copy_from_slice(&usage.indicator().to_be_bytes());
    data[4..6].copy_from_slice(&algorithm_indicator(key_type).to_be_bytes());
    data[6..8].copy_from_slice(&bits.to_be_bytes());
    data[8..].copy_from_slice(suffix);
    data
}

/// Derives a key of `key_type` from `key` and the derivation data.
fn derive(
    key: &SecretKey,
    key_type: KeyAlgorithm,
    data: [u8; 16],
) -> Result<SecretKey, DukptError> {
    let mut output = Zeroizing::new([0u8; 32]);
    derive_bytes(key.algorithm(), key.expose(), &data, &mut output);
    Ok(SecretKey::from_slice(
        key_type,
        &output[..key_type.key_len()],
    )?)
}

/// Encrypts the derivation data under `key`, an AES key of `algorithm`, once per 128 bits of
/// output, bumping the key block counter in byte 1: the first `output.len()` bytes of the
/// results are the derived key.
fn derive_bytes(algorithm: KeyAlgorithm, key: &[u8], data: &[u8; 16], output: &mut [u8; 32]) {
    let length_bits = u16::from_be_bytes([data[6], data[7]]);
    let blocks = if length_bits > 128 { 2 } else { 1 };
    for (counter, block) in (1u8..).zip(output.chunks_exact_mut(16).take(blocks)) {
        block.copy_from_slice(data);
        block[1] = counter;
    }
    aes_encrypt_blocks(algorithm, key, &mut output[..16 * blocks]);
}

/// Replaces `key`, an AES key of `algorithm`, by the key of the same type derived from it.
fn derive_in_place(algorithm: KeyAlgorithm, key: &mut [u8], data: &[u8; 16]) {
    let mut output = Zeroizing::new([0u8; 32]);
    derive_bytes(algorithm, key, data, &mut output);
    key.copy_from_slice(&output[..key.len()]);
}

fn decode_hex_exact<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.trim();
    if text.len() != 2 * N {
        return None;
    }
    let mut bytes = [0u8; N];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_key_id_hex_round_trip() {
        let id = InitialKeyId::from_hex("123456789012345a").expect("valid ID");
        assert_eq!(id.bdk_id, [0x12, 0x34, 0x56, 0x78]);
        assert_eq!(id.derivation_id, [0x90, 0x12, 0x34, 0x5A]);
        assert_eq!(id.to_string(), "123456789012345A");
    }

    #[test]
    fn initial_key_id_rejects_bad_text() {
        for text in ["", "1234", "123456789012345G", "12345678901234567890"] {
            let error = InitialKeyId::from_hex(text).unwrap_err();
            assert!(
                matches!(error, DukptError::InvalidInitialKeyId { .. }),
                "{text}"
            );
        }
    }

    #[test]
    fn counter_with_17_one_bits_is_rejected() {
        let error = Ksn::from_hex("12345678901234560001FFFF").unwrap_err();
        assert_eq!(
            error.to_string(),
            "transaction counter 0x0001FFFF has 17 one-bits; AES DUKPT allows at most 16"
        );
    }

    #[test]
    fn next_counter_skips_values_over_16_bits() {
        assert_eq!(next_counter(0), Some(1));
        assert_eq!(next_counter(0x0000_FFFF), Some(0x0001_0000));
        assert_eq!(next_counter(0x0001_FFFE), Some(0x0002_0000));
        assert_eq!(next_counter(0xFFFF_0000), None);
    }

    #[test]
    fn tdes_bdk_is_rejected() {
        let bdk = SecretKey::from_slice(KeyAlgorithm::Tdes2, &[0x11; 16]).unwrap();
        let id = InitialKeyId::from_hex("1234567890123456").unwrap();
        let error = initial_key(&bdk, &id, KeyAlgorithm::Aes128).unwrap_err();
        assert_eq!(
            error,
            DukptError::BdkNotAes {
                algorithm: KeyAlgorithm::Tdes2
            }
        );
    }
}
