//! Unwraps arbitrary text as a key block under fixed AES and TDES KBPKs. Unwrapping must
//! return an error or a key, never panic, whatever the text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use station::crypto::tr31;
use station::crypto::{KeyAlgorithm, SecretKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let aes = SecretKey::from_slice(KeyAlgorithm::Aes256, &[0x42; 32]).expect("32-byte key");
    let tdes = SecretKey::from_slice(KeyAlgorithm::Tdes2, &[0x24; 16]).expect("16-byte key");
    for kbpk in [&aes, &tdes] {
        if let Ok((header, key)) = tr31::unwrap(kbpk, text) {
            // A random MAC verifies with odds of 2^-32 at best, so a key here is worth a look:
            // it must still be a key the header allows.
            assert_eq!(
                tr31::KeyBlockAlgorithm::for_key(key.algorithm()),
                header.algorithm()
            );
        }
    }
});
