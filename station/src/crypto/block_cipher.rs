//! Block-cipher primitives shared by the payment-key modules: single-block ECB, CBC without
//! padding (NIST SP 800-38A section 6.2) and CMAC (NIST SP 800-38B), for every
//! [`KeyAlgorithm`].
//!
//! Callers pass whole blocks. The public modules check lengths before they reach this one, so a
//! partial block here is a bug in this crate, and the panic message names it as one.

use aes::{Aes128, Aes192, Aes256};
use cipher::{Block, BlockCipherDecrypt, BlockCipherEncrypt, BlockSizeUser, KeyInit};
use cmac::block_api::CmacCipher;
use cmac::{Cmac, Mac};
use des::{Des, TdesEde2, TdesEde3};
use zeroize::Zeroizing;

use super::{KeyAlgorithm, SecretKey};

/// A keyed block cipher of any algorithm the station supports.
pub(crate) enum BlockCipher {
    Aes128(Aes128),
    Aes192(Aes192),
    Aes256(Aes256),
    Tdes2(TdesEde2),
    Tdes3(TdesEde3),
}

impl BlockCipher {
    /// Schedules `key` for its own algorithm.
    pub(crate) fn new(key: &SecretKey) -> Self {
        let bytes = key.expose();
        // `SecretKey` guarantees that the length matches the algorithm.
        let invariant = "SecretKey length matches its algorithm";
        match key.algorithm() {
            KeyAlgorithm::Aes128 => Self::Aes128(Aes128::new_from_slice(bytes).expect(invariant)),
            KeyAlgorithm::Aes192 => Self::Aes192(Aes192::new_from_slice(bytes).expect(invariant)),
            KeyAlgorithm::Aes256 => Self::Aes256(Aes256::new_from_slice(bytes).expect(invariant)),
            KeyAlgorithm::Tdes2 => Self::Tdes2(TdesEde2::new_from_slice(bytes).expect(invariant)),
            KeyAlgorithm::Tdes3 => Self::Tdes3(TdesEde3::new_from_slice(bytes).expect(invariant)),
        }
    }

    /// Block length in bytes: 16 for AES, 8 for TDES.
    pub(crate) fn block_len(&self) -> usize {
        match self {
            Self::Aes128(_) | Self::Aes192(_) | Self::Aes256(_) => 16,
            Self::Tdes2(_) | Self::Tdes3(_) => 8,
        }
    }

    /// Encrypts one block in place.
    pub(crate) fn encrypt_block(&self, block: &mut [u8]) {
        match self {
            Self::Aes128(cipher) => cipher.encrypt_block(as_block::<Aes128>(block)),
            Self::Aes192(cipher) => cipher.encrypt_block(as_block::<Aes192>(block)),
            Self::Aes256(cipher) => cipher.encrypt_block(as_block::<Aes256>(block)),
            Self::Tdes2(cipher) => cipher.encrypt_block(as_block::<TdesEde2>(block)),
            Self::Tdes3(cipher) => cipher.encrypt_block(as_block::<TdesEde3>(block)),
        }
    }

    /// Decrypts one block in place.
    pub(crate) fn decrypt_block(&self, block: &mut [u8]) {
        match self {
            Self::Aes128(cipher) => cipher.decrypt_block(as_block::<Aes128>(block)),
            Self::Aes192(cipher) => cipher.decrypt_block(as_block::<Aes192>(block)),
            Self::Aes256(cipher) => cipher.decrypt_block(as_block::<Aes256>(block)),
            Self::Tdes2(cipher) => cipher.decrypt_block(as_block::<TdesEde2>(block)),
            Self::Tdes3(cipher) => cipher.decrypt_block(as_block::<TdesEde3>(block)),
        }
    }

    /// Encrypts `data` in place in CBC mode. `data` is a whole number of blocks.
    pub(crate) fn cbc_encrypt(&self, iv: &[u8], data: &mut [u8]) {
        let block_len = self.block_len();
        assert_eq!(iv.len(), block_len, "bug: CBC IV is one block");
        assert_eq!(data.len() % block_len, 0, "bug: CBC input is whole blocks");

        let mut chain = Zeroizing::new(iv.to_vec());
        for block in data.chunks_exact_mut(block_len) {
            xor_in_place(block, &chain);
            self.encrypt_block(block);
            chain.copy_from_slice(block);
        }
    }

    /// Decrypts `data` in place in CBC mode. `data` is a whole number of blocks.
    pub(crate) fn cbc_decrypt(&self, iv: &[u8], data: &mut [u8]) {
        let block_len = self.block_len();
        assert_eq!(iv.len(), block_len, "bug: CBC IV is one block");
        assert_eq!(data.len() % block_len, 0, "bug: CBC input is whole blocks");

        let mut chain = Zeroizing::new(iv.to_vec());
        let mut ciphertext = Zeroizing::new(vec![0u8; block_len]);
        for block in data.chunks_exact_mut(block_len) {
            ciphertext.copy_from_slice(block);
            self.decrypt_block(block);
            xor_in_place(block, &chain);
            chain.copy_from_slice(&ciphertext);
        }
    }
}

impl BlockCipher {
    /// Applies CTR mode (NIST SP 800-38A section 6.5) to `data` in place: the keystream is the
    /// encryption of `initial_counter`, incremented as a big-endian integer for each block.
    pub(crate) fn ctr_apply(&self, initial_counter: &[u8], data: &mut [u8]) {
        let block_len = self.block_len();
        assert_eq!(
            initial_counter.len(),
            block_len,
            "bug: CTR counter is one block"
        );

        let mut counter = Zeroizing::new(initial_counter.to_vec());
        let mut keystream = Zeroizing::new(vec![0u8; block_len]);
        for chunk in data.chunks_mut(block_len) {
            keystream.copy_from_slice(&counter);
            self.encrypt_block(&mut keystream);
            xor_in_place(chunk, &keystream[..chunk.len()]);
            for byte in counter.iter_mut().rev() {
                *byte = byte.wrapping_add(1);
                if *byte != 0 {
                    break;
                }
            }
        }
    }

    /// Computes the CBC-MAC (ISO 9797-1 MAC algorithm 1 without padding) of `data`, a whole
    /// number of blocks: the last block of the CBC encryption under a zero IV.
    pub(crate) fn cbc_mac(&self, data: &[u8]) -> Zeroizing<Vec<u8>> {
        let block_len = self.block_len();
        assert_eq!(
            data.len() % block_len,
            0,
            "bug: CBC-MAC input is whole blocks"
        );

        let mut chain = Zeroizing::new(vec![0u8; block_len]);
        for block in data.chunks_exact(block_len) {
            xor_in_place(&mut chain, block);
            self.encrypt_block(&mut chain);
        }
        chain
    }
}

/// Computes the CMAC (NIST SP 800-38B) of `message` under `key`; the tag is one cipher block.
///
/// The tag is returned in a zeroizing buffer because key derivation uses CMAC output as key
/// material.
pub(crate) fn cmac(key: &SecretKey, message: &[u8]) -> Zeroizing<Vec<u8>> {
    CmacKey::new(key).compute(message)
}

/// A key scheduled once for several CMAC computations, as a KDF needs. The key schedule and the
/// CMAC state zeroize on drop (the `zeroize` features of `aes`, `des` and `cmac`).
#[derive(Clone)]
pub(crate) enum CmacKey {
    Aes128(Cmac<Aes128>),
    Aes192(Cmac<Aes192>),
    Aes256(Cmac<Aes256>),
    Tdes2(Cmac<TdesEde2>),
    Tdes3(Cmac<TdesEde3>),
}

impl CmacKey {
    /// Schedules `key` for CMAC.
    pub(crate) fn new(key: &SecretKey) -> Self {
        fn init<C: CmacCipher + KeyInit>(key: &[u8]) -> Cmac<C> {
            <Cmac<C> as KeyInit>::new_from_slice(key)
                .expect("SecretKey length matches its algorithm")
        }

        let bytes = key.expose();
        match key.algorithm() {
            KeyAlgorithm::Aes128 => Self::Aes128(init(bytes)),
            KeyAlgorithm::Aes192 => Self::Aes192(init(bytes)),
            KeyAlgorithm::Aes256 => Self::Aes256(init(bytes)),
            KeyAlgorithm::Tdes2 => Self::Tdes2(init(bytes)),
            KeyAlgorithm::Tdes3 => Self::Tdes3(init(bytes)),
        }
    }

    /// Computes the CMAC of `message`.
    pub(crate) fn compute(&self, message: &[u8]) -> Zeroizing<Vec<u8>> {
        fn run<C: CmacCipher + Clone>(mac: &Cmac<C>, message: &[u8]) -> Zeroizing<Vec<u8>> {
            let mut mac = mac.clone();
            mac.update(message);
            Zeroizing::new(mac.finalize().into_bytes().to_vec())
        }

        match self {
            Self::Aes128(mac) => run(mac, message),
            Self::Aes192(mac) => run(mac, message),
            Self::Aes256(mac) => run(mac, message),
            Self::Tdes2(mac) => run(mac, message),
            Self::Tdes3(mac) => run(mac, message),
        }
    }
}

/// Encrypts one 8-byte block in place with single DES under an 8-byte key, the primitive of the
/// TDES DUKPT non-reversible step. Single DES is used nowhere else.
pub(crate) fn des_encrypt(key: &[u8], block: &mut [u8]) {
    let cipher = Des::new_from_slice(key).expect("bug: a DES key is 8 bytes");
    cipher.encrypt_block(as_block::<Des>(block));
}

/// XORs `other` into `target`; both have the same length.
pub(crate) fn xor_in_place(target: &mut [u8], other: &[u8]) {
    assert_eq!(
        target.len(),
        other.len(),
        "bug: XOR operands differ in length"
    );
    for (byte, mask) in target.iter_mut().zip(other) {
        *byte ^= mask;
    }
}

fn as_block<C: BlockSizeUser>(bytes: &mut [u8]) -> &mut Block<C> {
    bytes
        .try_into()
        .expect("bug: a block-cipher call was given a partial block")
}

#[cfg(test)]
mod tests {
    use hex_literal::hex;

    use super::*;

    fn key(algorithm: KeyAlgorithm, bytes: &[u8]) -> SecretKey {
        SecretKey::from_slice(algorithm, bytes).expect("test key has the right length")
    }

    #[test]
    fn cbc_matches_sp800_38a_f2_1() {
        // NIST SP 800-38A appendix F.2.1, CBC-AES128.Encrypt, first two blocks.
        let cipher = BlockCipher::new(&key(
            KeyAlgorithm::Aes128,
            &hex!("2b7e151628aed2a6abf7158809cf4f3c"),
        ));
        let iv = hex!("000102030405060708090a0b0c0d0e0f");
        let plaintext = hex!("6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51");
        let mut data = plaintext;
        cipher.cbc_encrypt(&iv, &mut data);
        assert_eq!(
            data,
            hex!("7649abac8119b246cee98e9b12e9197d 5086cb9b507219ee95db113a917678b2")
        );
        cipher.cbc_decrypt(&iv, &mut data);
        assert_eq!(data, plaintext);
    }

    #[test]
    fn tdes2_single_block_decrypts_back() {
        let cipher = BlockCipher::new(&key(
            KeyAlgorithm::Tdes2,
            &hex!("0123456789ABCDEFFEDCBA9876543210"),
        ));
        let mut block = [0u8; 8];
        cipher.encrypt_block(&mut block);
        assert_eq!(block[..3], hex!("08D7B4"));
        cipher.decrypt_block(&mut block);
        assert_eq!(block, [0u8; 8]);
    }
}
