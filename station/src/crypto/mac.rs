//! CMAC message authentication (NIST SP 800-38B) under a station key, for messages such as the
//! terminal's load confirmation.

use subtle::ConstantTimeEq;

use super::SecretKey;
use super::block_cipher;

/// Computes the full CMAC tag of `message` under `key`: 16 bytes for AES, 8 bytes for TDES.
pub fn cmac(key: &SecretKey, message: &[u8]) -> Vec<u8> {
    block_cipher::cmac(key, message).to_vec()
}

/// Checks `tag` against the CMAC of `message` in constant time.
///
/// `tag` may be truncated to its leftmost bytes, down to 4 bytes. A shorter tag, or one longer
/// than the cipher block, does not verify.
pub fn verify_cmac(key: &SecretKey, message: &[u8], tag: &[u8]) -> bool {
    let expected = block_cipher::cmac(key, message);
    if tag.len() < 4 || tag.len() > expected.len() {
        return false;
    }
    bool::from(expected[..tag.len()].ct_eq(tag))
}
