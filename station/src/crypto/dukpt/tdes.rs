//! TDES DUKPT key derivation, ANSI X9.24-1-2009: the IPEK from a double-length BDK and
//! a 10-byte key serial number, the transaction keys along the 21-bit counter, and their
//! PIN, MAC and data variants.
//!
//! The KSN is the key set ID and device ID (59 bits) followed by a 21-bit transaction counter.
//! A counter may have at most 10 one-bits, so each transaction key is at most 10 non-reversible
//! steps away from the IPEK.

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use super::DukptError;
use crate::crypto::block_cipher::{BlockCipher, des_encrypt, xor_in_place};
use crate::crypto::{KeyAlgorithm, SecretKey};

/// X9.24-1-2009 caps the counter's one-bits at 10.
pub const MAX_COUNTER_ONE_BITS: u32 = 10;

/// The counter is the rightmost 21 bits of the KSN.
pub const COUNTER_BITS: u32 = 21;

const COUNTER_MASK: u32 = (1 << COUNTER_BITS) - 1;

/// The mask XORed into a key to derive the second IPEK half and the left half of each
/// non-reversible step.
const KEY_MASK: [u8; 16] = [
    0xC0, 0xC0, 0xC0, 0xC0, 0, 0, 0, 0, 0xC0, 0xC0, 0xC0, 0xC0, 0, 0, 0, 0,
];

/// A 10-byte TDES DUKPT key serial number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ksn([u8; 10]);

impl Ksn {
    /// Builds a KSN from its 10 bytes.
    pub fn from_bytes(bytes: [u8; 10]) -> Self {
        Self(bytes)
    }

    /// Parses 16 to 20 hex digits (an even count). A KSN shorter than 20 digits is left-padded
    /// with `F`, as devices that send an 8- or 9-byte KSN expect.
    pub fn from_hex(text: &str) -> Result<Self, DukptError> {
        let text = text.trim();
        let invalid = || DukptError::InvalidTdesKsn {
            text: text.to_owned(),
        };
        if !text.len().is_multiple_of(2)
            || !(16..=20).contains(&text.len())
            || !text.bytes().all(|byte| byte.is_ascii_hexdigit())
        {
            return Err(invalid());
        }
        let padded = format!("{}{text}", "F".repeat(20 - text.len()));
        let mut bytes = [0u8; 10];
        hex::decode_to_slice(&padded, &mut bytes).map_err(|_| invalid())?;
        Ok(Self(bytes))
    }

    /// Returns the 10 bytes.
    pub fn to_bytes(&self) -> [u8; 10] {
        self.0
    }

    /// Returns the KSN as 20 uppercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode_upper(self.0)
    }

    /// Returns the 21-bit transaction counter.
    pub fn counter(&self) -> u32 {
        u32::from_be_bytes([0, self.0[7], self.0[8], self.0[9]]) & COUNTER_MASK
    }

    /// Returns this KSN with its counter replaced by `counter`, which must fit in 21 bits.
    pub fn with_counter(&self, counter: u32) -> Result<Self, DukptError> {
        if counter > COUNTER_MASK {
            return Err(DukptError::TdesCounterTooLarge { counter });
        }
        let mut bytes = self.0;
        let counter_bytes = counter.to_be_bytes();
        bytes[7] = (bytes[7] & 0xE0) | counter_bytes[1];
        bytes[8] = counter_bytes[2];
        bytes[9] = counter_bytes[3];
        Ok(Self(bytes))
    }

    /// Returns this KSN with its counter cleared: exactly the rightmost 21 bits.
    pub fn initial(&self) -> Self {
        let mut bytes = self.0;
        bytes[7] &= 0xE0;
        bytes[8] = 0;
        bytes[9] = 0;
        Self(bytes)
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

/// A variant of the transaction key, ANSI X9.24-1-2009: the key XORed with a mask that
/// selects what it may protect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// PIN encryption, mask `00000000000000FF` in each half.
    Pin,
    /// MAC of a request, mask `000000000000FF00`.
    MacRequest,
    /// MAC of a response, mask `00000000FF000000`.
    MacResponse,
    /// Data encryption of a request, mask `0000000000FF0000`.
    DataRequest,
    /// Data encryption of a response, mask `000000FF00000000`.
    DataResponse,
}

impl Variant {
    /// Every variant.
    pub const ALL: [Self; 5] = [
        Self::Pin,
        Self::MacRequest,
        Self::MacResponse,
        Self::DataRequest,
        Self::DataResponse,
    ];

    /// Returns the name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pin => "pin",
            Self::MacRequest => "mac-request",
            Self::MacResponse => "mac-response",
            Self::DataRequest => "data-request",
            Self::DataResponse => "data-response",
        }
    }

    /// Parses a name produced by [`Variant::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|variant| variant.name() == name)
    }

    /// Returns the index of the byte that the mask sets to `FF` in each 8-byte half.
    fn mask_byte(self) -> usize {
        match self {
            Self::Pin => 7,
            Self::MacRequest => 6,
            Self::MacResponse => 4,
            Self::DataRequest => 5,
            Self::DataResponse => 3,
        }
    }
}

/// Derives the IPEK from a double-length BDK and an initial KSN, ANSI X9.24-1-2009.
///
/// The counter of `initial_ksn` must be zero. A non-zero counter would be cleared and give the
/// IPEK of the initial KSN, which hides a caller's mix-up of the initial and the current KSN.
pub fn ipek(bdk: &SecretKey, initial_ksn: &Ksn) -> Result<SecretKey, DukptError> {
    check_bdk(bdk)?;
    let counter = initial_ksn.counter();
    if counter != 0 {
        return Err(DukptError::InitialKsnCounterNotZero {
            ksn: initial_ksn.to_hex(),
            counter,
        });
    }
    derive_ipek(bdk, initial_ksn)
}

/// Derives the transaction key ("current key") of `ksn` from the BDK: the IPEK of the KSN's
/// initial KSN, then one non-reversible step per one-bit of the counter.
pub fn transaction_key_from_bdk(bdk: &SecretKey, ksn: &Ksn) -> Result<SecretKey, DukptError> {
    check_bdk(bdk)?;
    check_counter(ksn.counter())?;
    let ipek = derive_ipek(bdk, &ksn.initial())?;
    transaction_key(&ipek, ksn)
}

/// Derives the transaction key of `ksn` from the device's IPEK.
pub fn transaction_key(ipek: &SecretKey, ksn: &Ksn) -> Result<SecretKey, DukptError> {
    check_bdk(ipek)?;
    let counter = ksn.counter();
    check_counter(counter)?;

    let mut register = [0u8; 8];
    register.copy_from_slice(&ksn.initial().to_bytes()[2..]);
    let mut key = Zeroizing::new(ipek.expose().to_vec());
    for bit in (0..COUNTER_BITS).rev() {
        let mask = 1u32 << bit;
        if counter & mask == 0 {
            continue;
        }
        let mask_bytes = mask.to_be_bytes();
        register[5] |= mask_bytes[1];
        register[6] |= mask_bytes[2];
        register[7] |= mask_bytes[3];
        key = non_reversible_step(&key, &register);
    }
    Ok(SecretKey::new(KeyAlgorithm::Tdes2, key)?)
}

/// Applies a variant mask to a transaction key.
pub fn variant_key(transaction_key: &SecretKey, variant: Variant) -> Result<SecretKey, DukptError> {
    check_bdk(transaction_key)?;
    let mut key = Zeroizing::new(transaction_key.expose().to_vec());
    key[variant.mask_byte()] ^= 0xFF;
    key[8 + variant.mask_byte()] ^= 0xFF;
    Ok(SecretKey::new(KeyAlgorithm::Tdes2, key)?)
}

/// Derives the data encryption key with the one-way step of X9.24-1-2009: each half of the
/// data variant key is TDES-encrypted under the whole variant key.
///
/// [`variant_key`] with a data variant returns the key before this step; some devices use that
/// one, so callers choose.
pub fn data_key_one_way(data_variant_key: &SecretKey) -> Result<SecretKey, DukptError> {
    check_bdk(data_variant_key)?;
    let cipher = BlockCipher::new(data_variant_key);
    let mut key = Zeroizing::new(data_variant_key.expose().to_vec());
    cipher.encrypt_block(&mut key[..8]);
    cipher.encrypt_block(&mut key[8..]);
    Ok(SecretKey::new(KeyAlgorithm::Tdes2, key)?)
}

/// Returns the counter that follows `counter` on a device: the next value with at most 10
/// one-bits, or `None` when the 21-bit counter is exhausted.
pub fn next_counter(counter: u32) -> Option<u32> {
    let mut candidate = counter.checked_add(1)?;
    // Adding the lowest one-bit skips every value that keeps the same too-long run of one-bits.
    while candidate.count_ones() > MAX_COUNTER_ONE_BITS {
        candidate += candidate & candidate.wrapping_neg();
    }
    (candidate <= COUNTER_MASK).then_some(candidate)
}

fn check_bdk(key: &SecretKey) -> Result<(), DukptError> {
    if key.algorithm() != KeyAlgorithm::Tdes2 {
        return Err(DukptError::TdesKeyNotDoubleLength {
            algorithm: key.algorithm(),
        });
    }
    Ok(())
}

fn check_counter(counter: u32) -> Result<(), DukptError> {
    let ones = counter.count_ones();
    if ones > MAX_COUNTER_ONE_BITS {
        return Err(DukptError::TdesCounterTooManyOneBits { counter, ones });
    }
    Ok(())
}

fn derive_ipek(bdk: &SecretKey, initial_ksn: &Ksn) -> Result<SecretKey, DukptError> {
    let mut data = [0u8; 8];
    data.copy_from_slice(&initial_ksn.to_bytes()[..8]);

    // The IPEK is built in place: the KSN block is encrypted under the BDK for the left half and
    // under the masked BDK for the right half.
    let mut ipek = Zeroizing::new(Vec::with_capacity(16));
    ipek.extend_from_slice(&data);
    ipek.extend_from_slice(&data);
    BlockCipher::new(bdk).encrypt_block(&mut ipek[..8]);

    let mut masked = Zeroizing::new(bdk.expose().to_vec());
    xor_in_place(&mut masked, &KEY_MASK);
    let masked = SecretKey::new(KeyAlgorithm::Tdes2, masked)?;
    BlockCipher::new(&masked).encrypt_block(&mut ipek[8..]);

    Ok(SecretKey::new(KeyAlgorithm::Tdes2, ipek)?)
}

/// Runs the non-reversible key generation process of ANSI X9.24-1-2009.
///
/// The new right half is the register XOR the key's right half, DES-encrypted under the key's
/// left half and XORed with the right half again. The new left half is the same computation on
/// the key XOR `C0C0C0C000000000C0C0C0C000000000`.
fn non_reversible_step(key: &[u8], register: &[u8; 8]) -> Zeroizing<Vec<u8>> {
    let half = |key: &[u8]| {
        let mut block = Zeroizing::new(*register);
        xor_in_place(block.as_mut_slice(), &key[8..]);
        des_encrypt(&key[..8], block.as_mut_slice());
        xor_in_place(block.as_mut_slice(), &key[8..]);
        block
    };
    let right = half(key);
    let mut masked = Zeroizing::new(key.to_vec());
    xor_in_place(&mut masked, &KEY_MASK);
    let left = half(&masked);

    let mut next = Zeroizing::new(Vec::with_capacity(16));
    next.extend_from_slice(left.as_slice());
    next.extend_from_slice(right.as_slice());
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ksn_is_padded_with_f() {
        let ksn = Ksn::from_hex("9876543210E00008").unwrap();
        assert_eq!(ksn.to_hex(), "FFFF9876543210E00008");
        assert_eq!(ksn.counter(), 8);
        assert_eq!(ksn.initial().to_hex(), "FFFF9876543210E00000");
    }

    #[test]
    fn counter_is_exactly_21_bits() {
        let ksn = Ksn::from_hex("FFFF9876543210FFFFFF").unwrap();
        assert_eq!(ksn.counter(), 0x1F_FFFF);
        assert_eq!(ksn.initial().to_hex(), "FFFF9876543210E00000");
        let replaced = ksn.with_counter(0x10_0001).unwrap();
        assert_eq!(replaced.to_hex(), "FFFF9876543210F00001");
        assert!(ksn.with_counter(0x20_0000).is_err());
    }

    #[test]
    fn variant_names_round_trip() {
        for variant in Variant::ALL {
            assert_eq!(Variant::from_name(variant.name()), Some(variant));
        }
    }
}
