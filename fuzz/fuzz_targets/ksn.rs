//! Parses arbitrary text as a TDES KSN, an AES KSN and an AES initial key ID. Parsing must never
//! panic, and a value that parses must print as hex that parses back to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use station::crypto::dukpt::{aes, tdes};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ksn) = tdes::Ksn::from_hex(text) {
        assert_eq!(tdes::Ksn::from_hex(&ksn.to_hex()), Ok(ksn));
        assert_eq!(ksn.initial().counter(), 0);
    }
    if let Ok(ksn) = aes::Ksn::from_hex(text) {
        assert_eq!(aes::Ksn::from_hex(&ksn.to_hex()), Ok(ksn));
        assert!(ksn.counter.count_ones() <= aes::MAX_COUNTER_ONE_BITS);
    }
    if let Ok(id) = aes::InitialKeyId::from_hex(text) {
        assert_eq!(aes::InitialKeyId::from_hex(&id.to_hex()), Ok(id));
    }
});
