//! Integration tests: crypto. Known-answer vectors come from the data files in `tests/data/`,
//! which name their sources, and the psec cross-check runs an independent Python implementation.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use proptest::prelude::*;
use station::crypto::components::{self, ComponentError};
use station::crypto::dukpt::DukptError;
use station::crypto::dukpt::aes::{self as aes_dukpt, InitialKeyId, KeyUsage as DukptUsage, Ksn};
use station::crypto::dukpt::tdes::{self as tdes_dukpt, Ksn as TdesKsn, Variant};
use station::crypto::kcv::{Kcv, KcvError, KcvMethod};
use station::crypto::mac;
use station::crypto::tr31::{
    self, Exportability, KeyBlockAlgorithm, KeyBlockHeader, KeyBlockVersion, KeyUsage,
    LengthMasking, ModeOfUse, Tr31Error, policy,
};
use station::crypto::{KeyAlgorithm, SecretKey};

/// One record of a data file: `name = value` lines, records separated by blank lines.
type Record = HashMap<String, String>;

fn data_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn records(name: &str) -> Vec<Record> {
    let text = std::fs::read_to_string(data_path(name))
        .unwrap_or_else(|error| panic!("cannot read data file {name}: {error}"));
    let mut records = Vec::new();
    let mut current = Record::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            if !current.is_empty() {
                records.push(std::mem::take(&mut current));
            }
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("data file {name}: line without '=': {line}"));
        current.insert(name.trim().to_owned(), value.trim().to_owned());
    }
    if !current.is_empty() {
        records.push(current);
    }
    assert!(!records.is_empty(), "data file {name} has no records");
    records
}

fn field<'a>(record: &'a Record, name: &str) -> &'a str {
    record
        .get(name)
        .unwrap_or_else(|| panic!("record {record:?} has no field {name}"))
}

fn algorithm_of(name: &str) -> KeyAlgorithm {
    KeyAlgorithm::from_name(name).unwrap_or_else(|| panic!("unknown algorithm name {name}"))
}

fn aes_key(text: &str) -> SecretKey {
    let algorithm = match text.len() {
        32 => KeyAlgorithm::Aes128,
        48 => KeyAlgorithm::Aes192,
        64 => KeyAlgorithm::Aes256,
        other => panic!("{other} hex digits is not an AES key"),
    };
    SecretKey::from_hex(algorithm, text).expect("test key is valid hex")
}

fn hex_of(key: &SecretKey) -> String {
    hex::encode_upper(key.expose())
}

// ---------------------------------------------------------------------------------------------
// CMAC and check values

#[test]
fn cmac_matches_sp800_38b() {
    for record in records("cmac.txt") {
        let key = SecretKey::from_hex(
            algorithm_of(field(&record, "algorithm")),
            field(&record, "key"),
        )
        .unwrap();
        let message = hex::decode(field(&record, "message")).unwrap();
        let tag = hex::decode(field(&record, "tag")).unwrap();
        assert_eq!(mac::cmac(&key, &message), tag, "{record:?}");
        assert!(mac::verify_cmac(&key, &message, &tag), "{record:?}");
        assert!(mac::verify_cmac(&key, &message, &tag[..4]), "{record:?}");
    }
}

#[test]
fn cmac_verify_rejects_bad_tags() {
    let key =
        SecretKey::from_hex(KeyAlgorithm::Aes128, "2b7e151628aed2a6abf7158809cf4f3c").unwrap();
    let mut tag = mac::cmac(&key, b"message");
    assert!(!mac::verify_cmac(&key, b"message", &tag[..3]));
    tag[0] ^= 1;
    assert!(!mac::verify_cmac(&key, b"message", &tag));
}

#[test]
fn kcv_field_cases() {
    for record in records("kcv.txt") {
        let key = SecretKey::from_hex(
            algorithm_of(field(&record, "algorithm")),
            field(&record, "key"),
        )
        .unwrap();
        let method = KcvMethod::from_name(field(&record, "method")).unwrap();
        let expected = Kcv::from_hex(method, field(&record, "expect")).unwrap();
        let computed = Kcv::compute_len(&key, method, expected.value().len()).unwrap();
        assert_eq!(
            computed.to_hex(),
            expected.to_hex(),
            "{}",
            field(&record, "source")
        );
        assert_eq!(computed.matches(&expected), Ok(true));
    }
}

#[test]
fn kcv_shown_with_method() {
    let key =
        SecretKey::from_hex(KeyAlgorithm::Aes128, "2B7E151628AED2A6ABF7158809CF4F3C").unwrap();
    let cmac = Kcv::compute(&key, KcvMethod::Cmac);
    let legacy = Kcv::compute(&key, KcvMethod::Legacy);
    assert_eq!(cmac.to_string(), "7AD386 (cmac)");
    assert_eq!(legacy.to_string(), "7DF76B (legacy)");
    assert_eq!(
        cmac.matches(&legacy),
        Err(KcvError::MethodMismatch {
            left: KcvMethod::Cmac,
            right: KcvMethod::Legacy
        })
    );
}

#[test]
fn kcv_lengths_and_bad_input() {
    let key = SecretKey::from_hex(KeyAlgorithm::Tdes2, "0123456789ABCDEFFEDCBA9876543210").unwrap();
    assert_eq!(
        Kcv::compute_len(&key, KcvMethod::Legacy, 2)
            .unwrap()
            .to_hex(),
        "08D7"
    );
    assert_eq!(
        Kcv::compute_len(&key, KcvMethod::Cmac, 5)
            .unwrap()
            .value()
            .len(),
        5
    );
    assert!(matches!(
        Kcv::compute_len(&key, KcvMethod::Legacy, 5),
        Err(KcvError::LengthOutOfRange { actual: 5, .. })
    ));
    let error = Kcv::from_hex(KcvMethod::Legacy, "08D7BZ").unwrap_err();
    assert_eq!(
        error.to_string(),
        "check value \"08D7BZ\" is not valid hex; give 4 to 10 digits 0-9 and A-F"
    );
    let short = Kcv::from_hex(KcvMethod::Legacy, "08D7").unwrap();
    let long = Kcv::compute(&key, KcvMethod::Legacy);
    assert_eq!(
        long.matches(&short),
        Err(KcvError::LengthMismatch { left: 3, right: 2 })
    );
    let other = Kcv::from_hex(KcvMethod::Legacy, "08D7B5").unwrap();
    assert_eq!(long.matches(&other), Ok(false));
}

// ---------------------------------------------------------------------------------------------
// Components

/// Field case C4: three TDES components with even-parity bytes combine to the known key.
#[test]
fn components_field_case_c4() {
    let parts: Vec<SecretKey> = [
        "988A59D7273186B8C9C9922B6D40BA75",
        "8936E5269ADFABE7D4829B2EFB3BF5D9",
        "109FF9963445E0B0E397B39DE02F7DBC",
    ]
    .iter()
    .map(|text| SecretKey::from_hex(KeyAlgorithm::Tdes2, text).unwrap())
    .collect();
    let combined = components::combine(&parts).unwrap();
    assert_eq!(hex_of(&combined), "0123456789ABCDEFFEDCBA9876543210");
    assert_eq!(
        Kcv::compute(&combined, KcvMethod::Legacy).to_hex(),
        "08D7B4"
    );
}

#[test]
fn components_split_and_reject() {
    let key = SecretKey::generate(KeyAlgorithm::Tdes3).unwrap();
    let parts = components::split(&key, 3).unwrap();
    assert!(components::combine(&parts).unwrap().ct_eq(&key));
    assert!(!parts[0].ct_eq(&key));
    assert_eq!(
        components::split(&key, 0).unwrap_err(),
        ComponentError::TooFewComponents { count: 0 }
    );
    assert_eq!(
        components::combine(&[]).unwrap_err(),
        ComponentError::TooFewComponents { count: 0 }
    );
}

// ---------------------------------------------------------------------------------------------
// AES DUKPT

fn dukpt_usage(name: &str) -> Option<DukptUsage> {
    match name {
        "pin" => Some(DukptUsage::PinEncryption),
        "mac-generation" => Some(DukptUsage::MacGeneration),
        "data-encrypt" => Some(DukptUsage::DataEncryptionEncrypt),
        "transaction" => None,
        other => panic!("unknown usage {other} in aes_dukpt.txt"),
    }
}

#[test]
fn aes_dukpt_known_answers() {
    for record in records("aes_dukpt.txt") {
        let source = field(&record, "source");
        if let Some(expected) = record.get("expect_initial_key") {
            let bdk = aes_key(field(&record, "bdk"));
            let id = InitialKeyId::from_hex(field(&record, "initial_key_id")).unwrap();
            let key = aes_dukpt::initial_key(&bdk, &id, bdk.algorithm()).unwrap();
            assert_eq!(&hex_of(&key), expected, "{source}");
            continue;
        }

        let ksn = Ksn::from_hex(field(&record, "ksn")).unwrap();
        let initial = match record.get("initial_key") {
            Some(text) => aes_key(text),
            None => {
                let bdk = aes_key(field(&record, "bdk"));
                aes_dukpt::initial_key(&bdk, &ksn.initial_key_id, bdk.algorithm()).unwrap()
            }
        };
        let key_type = algorithm_of(field(&record, "key_type"));
        let derived = match dukpt_usage(field(&record, "usage")) {
            None => aes_dukpt::derivation_key(&initial, &ksn).unwrap(),
            Some(usage) => aes_dukpt::working_key(&initial, &ksn, usage, key_type).unwrap(),
        };
        assert_eq!(hex_of(&derived), field(&record, "expect"), "{source}");
    }
}

#[test]
fn aes_dukpt_update_key_known_answers() {
    for record in records("aes_dukpt_update_key.txt") {
        let source = field(&record, "source");
        let initial = aes_key(field(&record, "initial_key"));
        let id = InitialKeyId::from_hex(field(&record, "initial_key_id")).unwrap();
        let key_type = algorithm_of(field(&record, "key_type"));
        let update = aes_dukpt::update_key(&initial, &id, key_type).unwrap();
        assert_eq!(update.algorithm(), key_type, "{source}");
        assert_eq!(hex_of(&update), field(&record, "expect"), "{source}");
    }
}

/// The update key's counter FFFFFFFF is reserved: no transaction KSN may carry it, and the
/// update key is not the key-encryption working key of any valid counter.
#[test]
fn aes_dukpt_update_counter_is_reserved() {
    let id = InitialKeyId::from_hex("1234567890123456").unwrap();
    let error = Ksn::new(id, aes_dukpt::UPDATE_KEY_COUNTER).unwrap_err();
    assert_eq!(
        error,
        DukptError::CounterTooManyOneBits {
            counter: 0xFFFF_FFFF,
            ones: 32
        }
    );

    let initial = aes_key("1273671EA26AC29AFA4D1084127652A1");
    let update = aes_dukpt::update_key(&initial, &id, KeyAlgorithm::Aes128).unwrap();
    let last_valid = Ksn::new(id, 0xFFFF_0000).unwrap();
    let kek = aes_dukpt::working_key(
        &initial,
        &last_valid,
        DukptUsage::KeyEncryptionKey,
        KeyAlgorithm::Aes128,
    )
    .unwrap();
    assert!(!update.ct_eq(&kek));
}

#[test]
fn aes_dukpt_update_key_needs_aes_initial_key() {
    let tdes =
        SecretKey::from_hex(KeyAlgorithm::Tdes2, "0123456789ABCDEFFEDCBA9876543210").unwrap();
    let id = InitialKeyId::from_hex("1234567890123456").unwrap();
    let error = aes_dukpt::update_key(&tdes, &id, KeyAlgorithm::Aes128).unwrap_err();
    assert_eq!(
        error,
        DukptError::InitialKeyNotAes {
            algorithm: KeyAlgorithm::Tdes2
        }
    );
}

/// Field case D7: the AES KSN is 24 hex digits, and its counter allows 16 one-bits.
#[test]
fn aes_dukpt_field_case_d7() {
    let bdk = aes_key("FEDCBA9876543210F1F1F1F1F1F1F1F1");
    let ksn = Ksn::from_hex("123456789012345600000001").unwrap();
    let initial = aes_dukpt::initial_key(&bdk, &ksn.initial_key_id, KeyAlgorithm::Aes128).unwrap();
    assert_eq!(hex_of(&initial), "1273671EA26AC29AFA4D1084127652A1");
    let transaction = aes_dukpt::derivation_key(&initial, &ksn).unwrap();
    assert_eq!(hex_of(&transaction), "4F21B565BAD9835E112B6465635EAE44");
    let pin = aes_dukpt::working_key(
        &initial,
        &ksn,
        DukptUsage::PinEncryption,
        KeyAlgorithm::Aes128,
    )
    .unwrap();
    assert_eq!(hex_of(&pin), "AF8CB133A78F8DC2D1359F18527593FB");

    assert!(Ksn::from_hex("12345678901234560000FFFF").is_ok());
    assert_eq!(aes_dukpt::next_counter(0x0000_FFFF), Some(0x0001_0000));
    assert!(matches!(
        Ksn::from_hex("9876543210E00001"),
        Err(DukptError::InvalidKsn { .. })
    ));
    assert!(matches!(
        Ksn::from_hex("FFFF9876543210E00001"),
        Err(DukptError::InvalidKsn { .. })
    ));
}

#[test]
fn aes_dukpt_counter_limits() {
    let error = Ksn::from_hex("12345678901234560001FFFF").unwrap_err();
    assert_eq!(
        error,
        DukptError::CounterTooManyOneBits {
            counter: 0x0001_FFFF,
            ones: 17
        }
    );
    let id = InitialKeyId::from_hex("1234567890123456").unwrap();
    assert!(Ksn::new(id, 0xFFFF_0000).is_ok());
    assert_eq!(aes_dukpt::next_counter(0xFFFF_0000), None);
    assert_eq!(aes_dukpt::next_counter(0x0001_FFFE), Some(0x0002_0000));
}

#[test]
fn aes_dukpt_every_derived_key_type() {
    let id = InitialKeyId::from_hex("1234567890123456").unwrap();
    let ksn = Ksn::new(id, 5).unwrap();
    for bdk_type in [
        KeyAlgorithm::Aes128,
        KeyAlgorithm::Aes192,
        KeyAlgorithm::Aes256,
    ] {
        let bdk = SecretKey::generate(bdk_type).unwrap();
        let initial = aes_dukpt::initial_key(&bdk, &id, bdk_type).unwrap();
        assert_eq!(initial.algorithm(), bdk_type);
        for key_type in [
            KeyAlgorithm::Tdes2,
            KeyAlgorithm::Tdes3,
            KeyAlgorithm::Aes128,
            KeyAlgorithm::Aes192,
            KeyAlgorithm::Aes256,
        ] {
            let key =
                aes_dukpt::working_key(&initial, &ksn, DukptUsage::KeyEncryptionKey, key_type)
                    .unwrap();
            assert_eq!(key.algorithm(), key_type);
            assert_eq!(key.expose().len(), key_type.key_len());
        }
    }
    let tdes = SecretKey::generate(KeyAlgorithm::Tdes2).unwrap();
    assert!(matches!(
        aes_dukpt::initial_key(&tdes, &id, KeyAlgorithm::Aes128),
        Err(DukptError::BdkNotAes { .. })
    ));
    let bdk = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    assert!(matches!(
        aes_dukpt::initial_key(&bdk, &id, KeyAlgorithm::Tdes2),
        Err(DukptError::InitialKeyNotAes { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// TR-31 version D: published blocks

/// Builds the KBPK of a published block: TDES for versions A, B and C, AES otherwise.
fn kbpk_for(block: &str, text: &str) -> SecretKey {
    match (block.chars().next(), text.len()) {
        (Some('A' | 'B' | 'C'), 32) => SecretKey::from_hex(KeyAlgorithm::Tdes2, text).unwrap(),
        (Some('A' | 'B' | 'C'), 48) => SecretKey::from_hex(KeyAlgorithm::Tdes3, text).unwrap(),
        _ => aes_key(text),
    }
}

#[test]
fn tr31_published_blocks_unwrap() {
    let mut all = records("tr31_version_d.txt");
    all.extend(records("tr31_versions_abce.txt"));
    for record in all {
        let source = field(&record, "source");
        let block = field(&record, "block");
        let kbpk = kbpk_for(block, field(&record, "kbpk"));
        if let Some(kcv) = record.get("kbpk_kcv_cmac") {
            let computed = Kcv::compute_len(&kbpk, KcvMethod::Cmac, kcv.len() / 2).unwrap();
            assert_eq!(&computed.to_hex(), kcv, "{source}");
        }
        if let Some(error) = record.get("error") {
            let found = tr31::unwrap(&kbpk, block).unwrap_err();
            assert!(
                format!("{found:?}").starts_with(error.as_str()),
                "{source}: {found:?}"
            );
            continue;
        }

        let (header, key) =
            tr31::unwrap(&kbpk, block).unwrap_or_else(|error| panic!("{source}: {error}"));
        assert_eq!(hex_of(&key), field(&record, "key"), "{source}");
        assert_eq!(
            key.algorithm(),
            algorithm_of(field(&record, "key_algorithm")),
            "{source}"
        );
        assert_eq!(header.version().code_str(), &block[..1], "{source}");
        let text = header.to_string();
        assert_eq!(&text[5..12], &block[5..12], "{source}");
        assert_eq!(&text[14..16], &block[14..16], "{source}");
        for (name, value) in &record {
            if let Some(id) = name.strip_prefix("block_") {
                assert_eq!(header.optional_block(id), Some(value.as_str()), "{source}");
            }
        }
        for (name, method) in [
            ("kcv_cmac", KcvMethod::Cmac),
            ("kcv_legacy", KcvMethod::Legacy),
        ] {
            if let Some(kcv) = record.get(name) {
                let computed = Kcv::compute_len(&key, method, kcv.len() / 2).unwrap();
                assert_eq!(&computed.to_hex(), kcv, "{source}");
            }
        }
    }
}

/// The X9.143 section 8.6 block carries an extended-length CT block and a PB block.
#[test]
fn tr31_extended_length_header_parses() {
    let record = records("tr31_version_d.txt")
        .into_iter()
        .find(|record| record.contains_key("kbpk_kcv_cmac"))
        .expect("the data file has the X9.143 8.6 block");
    let block = field(&record, "block");
    let header_text = &block[..1552];
    let header: KeyBlockHeader = header_text.parse().unwrap();
    assert_eq!(header.optional_blocks().len(), 3, "PB is not kept");
    assert_eq!(header.optional_block("KP"), Some("012331550BC9"));
    assert_eq!(header.optional_block("TS"), Some("20200818004100Z"));
    assert_eq!(header.optional_block("CT").map(str::len), Some(1484 - 10));
    assert!(header.to_string().contains("CT000205CC0200"));
}

// ---------------------------------------------------------------------------------------------
// TR-31 version D: wrap, field cases and errors

fn aes_b1_header() -> KeyBlockHeader {
    "D0000B1AX00N0000".parse().unwrap()
}

/// Field case K3, version D part: an AES-128 key exports as `D0144` (length obfuscated), an
/// unobfuscated `D0112` block imports, and the MAC is 32 hex digits.
#[test]
fn tr31_field_case_k3_lengths() {
    let kbpk = SecretKey::generate(KeyAlgorithm::Aes256).unwrap();
    let key = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    let header: KeyBlockHeader = "D0000P0AE00E0000".parse().unwrap();

    let masked = tr31::wrap(&kbpk, &header, &key).unwrap();
    assert!(masked.starts_with("D0144P0AE00E0000"), "{masked}");
    assert_eq!(masked.len(), 144);

    let plain = tr31::wrap_with(&kbpk, &header, &key, LengthMasking::Off).unwrap();
    assert!(plain.starts_with("D0112"), "{plain}");
    for block in [&masked, &plain] {
        let (_, unwrapped) = tr31::unwrap(&kbpk, block).unwrap();
        assert!(unwrapped.ct_eq(&key));
    }

    // The MAC is the last 32 hex digits: changing any of them breaks verification.
    let mut tampered = plain.clone().into_bytes();
    let index = tampered.len() - 32;
    tampered[index] = if tampered[index] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        tr31::unwrap(&kbpk, &tampered).unwrap_err(),
        Tr31Error::MacMismatch
    );
}

#[test]
fn tr31_obfuscation_sizes_per_algorithm() {
    let kbpk = SecretKey::generate(KeyAlgorithm::Aes256).unwrap();
    let cases = [
        (KeyAlgorithm::Tdes2, "T", 112),
        (KeyAlgorithm::Tdes3, "T", 112),
        (KeyAlgorithm::Aes128, "A", 144),
        (KeyAlgorithm::Aes192, "A", 144),
        (KeyAlgorithm::Aes256, "A", 144),
    ];
    for (algorithm, code, length) in cases {
        let header: KeyBlockHeader = format!("D0000K0{code}B00E0000").parse().unwrap();
        let key = SecretKey::generate(algorithm).unwrap();
        let block = tr31::wrap(&kbpk, &header, &key).unwrap();
        assert_eq!(block.len(), length, "{algorithm}");
        let (_, unwrapped) = tr31::unwrap(&kbpk, &block).unwrap();
        assert!(unwrapped.ct_eq(&key), "{algorithm}");
    }
}

/// Field case K4: an extended-length optional block round-trips, and a length that points past
/// the header is an error, not a panic.
#[test]
fn tr31_field_case_k4_extended_length() {
    // A certificate block: format `00` (X.509) and 598 characters, 600 in all.
    let body = format!("00{}", "X".repeat(598));
    let mut header = aes_b1_header();
    header.add_optional_block("CT", &body).unwrap();
    let text = header.to_string();
    // 2 (ID) + 2 (`00`) + 2 (length-of-length: 2 bytes) + 4 (length) + 600 = 610 = 0x0262.
    assert!(
        text.starts_with("D0000B1AX00N0100CT0002026200XXX"),
        "{text}"
    );
    let reparsed: KeyBlockHeader = text.parse().unwrap();
    assert_eq!(reparsed.optional_block("CT"), Some(body.as_str()));
    assert_eq!(reparsed.to_string(), text);

    let kbpk = SecretKey::generate(KeyAlgorithm::Aes256).unwrap();
    let key = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    let block = tr31::wrap(&kbpk, &header, &key).unwrap();
    let (unwrapped_header, _) = tr31::unwrap(&kbpk, &block).unwrap();
    assert_eq!(unwrapped_header, header);

    let past_end = "D0000B1AX00N0100CT00020FFFXXXX";
    assert!(matches!(
        past_end.parse::<KeyBlockHeader>(),
        Err(Tr31Error::OptionalBlockTruncated { .. })
    ));
    let short_length = "D0000B1AX00N0100CT000200050";
    assert!(matches!(
        short_length.parse::<KeyBlockHeader>(),
        Err(Tr31Error::InvalidOptionalBlockLength { .. })
    ));
}

/// Field case K5: an AES DUKPT key carries IK, never KS.
#[test]
fn tr31_field_case_k5_ik_not_ks() {
    let kbpk = SecretKey::generate(KeyAlgorithm::Aes256).unwrap();
    let key = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();

    let mut header = aes_b1_header();
    header.add_optional_block("IK", "1234567890123456").unwrap();
    let block = tr31::wrap(&kbpk, &header, &key).unwrap();
    let (unwrapped, _) = tr31::unwrap(&kbpk, &block).unwrap();
    assert_eq!(unwrapped.optional_block("IK"), Some("1234567890123456"));
    assert_eq!(unwrapped.optional_block("KS"), None);

    let mut with_ks = aes_b1_header();
    with_ks
        .add_optional_block("KS", "FFFF9876543210E00000")
        .unwrap();
    let error = tr31::wrap(&kbpk, &with_ks, &key).unwrap_err();
    assert!(matches!(error, Tr31Error::PolicyViolation { .. }));
    assert_eq!(
        error.to_string(),
        "key block breaks the key block policy: an AES B1 key block must identify the key with an IK block, not KS; KS is for TDES DUKPT"
    );

    let mut bad_ik = aes_b1_header();
    let error = bad_ik.add_optional_block("IK", "12345678").unwrap_err();
    assert!(matches!(error, Tr31Error::InvalidOptionalBlockData { .. }));
}

#[test]
fn tr31_header_padding_block_added() {
    let kbpk = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    let key = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    let mut header = aes_b1_header();
    header.add_optional_block("IK", "1234567890123456").unwrap();
    header.add_optional_block("KC", "0112AB34CD").unwrap();
    let block = tr31::wrap(&kbpk, &header, &key).unwrap();
    let (parsed, _) = tr31::unwrap(&kbpk, &block).unwrap();
    assert_eq!(parsed, header);
    // The header with its PB block is a whole number of AES blocks.
    let pb = block.find("PB").expect("a PB block pads the header");
    let pb_len = usize::from_str_radix(&block[pb + 2..pb + 4], 16).unwrap();
    assert_eq!((pb + pb_len) % 16, 0, "{block}");
    assert_eq!(&block[12..14], "03");
}

#[test]
fn tr31_wrap_rejects_mismatches() {
    let aes_kbpk = SecretKey::generate(KeyAlgorithm::Aes256).unwrap();
    let tdes_kbpk = SecretKey::generate(KeyAlgorithm::Tdes3).unwrap();
    let aes_key = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    let tdes_key = SecretKey::generate(KeyAlgorithm::Tdes2).unwrap();

    let error = tr31::wrap(&tdes_kbpk, &aes_b1_header(), &aes_key).unwrap_err();
    assert_eq!(
        error.to_string(),
        "key block version D needs an AES KBPK, but the KBPK is tdes3; use versions A, B or C with TDES and D or E with AES"
    );
    let error = tr31::wrap(&aes_kbpk, &aes_b1_header(), &tdes_key).unwrap_err();
    assert_eq!(
        error,
        Tr31Error::KeyAlgorithmMismatch {
            header: KeyBlockAlgorithm::Aes,
            key: KeyAlgorithm::Tdes2
        }
    );
    let mut header = aes_b1_header();
    assert_eq!(
        header.add_optional_block("PB", "0000"),
        Err(Tr31Error::PaddingBlockNotAllowed)
    );
    assert!(matches!(
        header.add_optional_block("I$", "00"),
        Err(Tr31Error::InvalidOptionalBlockId { .. })
    ));
    header.add_optional_block("TS", "20200818004100Z").unwrap();
    assert_eq!(
        header.add_optional_block("TS", "20200818004100Z"),
        Err(Tr31Error::DuplicateOptionalBlock { id: "TS".into() })
    );
}

/// Each malformation of a valid block gives its own typed error.
#[test]
fn tr31_unwrap_errors_are_typed() {
    let kbpk = aes_key("88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6");
    let valid = "D0112P0AE00E0000B82679114F470F540165EDFBF7E250FCEA43F810D215F8D207E2E417C07156A27E8E31DA05F7425509593D03A457DC34";
    let replace = |index: usize, text: &str| {
        let mut block = valid.to_owned();
        block.replace_range(index..index + text.len(), text);
        block
    };

    let cases: Vec<(String, Tr31Error)> = vec![
        (
            valid[..100].to_owned(),
            Tr31Error::LengthMismatch {
                declared: 112,
                actual: 100,
            },
        ),
        (replace(0, "Z"), Tr31Error::UnknownVersion { found: 'Z' }),
        (
            replace(1, "01A2"),
            Tr31Error::NotDecimal {
                field: "length field",
                text: "01A2".into(),
                position: 1,
            },
        ),
        (
            replace(5, "Q9"),
            Tr31Error::UnknownCode {
                field: "key usage",
                code: "Q9".into(),
            },
        ),
        (
            replace(7, "Z"),
            Tr31Error::UnknownCode {
                field: "algorithm",
                code: "Z".into(),
            },
        ),
        (
            replace(8, "Q"),
            Tr31Error::UnknownCode {
                field: "mode of use",
                code: "Q".into(),
            },
        ),
        (
            replace(9, "0$"),
            Tr31Error::InvalidKeyVersion { text: "0$".into() },
        ),
        (
            replace(11, "Q"),
            Tr31Error::UnknownCode {
                field: "exportability",
                code: "Q".into(),
            },
        ),
        (
            replace(14, "7"),
            Tr31Error::UnknownCode {
                field: "key context",
                code: "7".into(),
            },
        ),
        (replace(15, "1"), Tr31Error::ReservedNotZero { found: '1' }),
        (
            replace(20, "G"),
            Tr31Error::InvalidHex {
                field: "encrypted key data",
                position: 20,
            },
        ),
        (
            replace(100, "x"),
            Tr31Error::InvalidHex {
                field: "MAC",
                position: 100,
            },
        ),
        (
            replace(30, "\u{7}"),
            Tr31Error::NotPrintable { position: 30 },
        ),
        (replace(16, "0"), Tr31Error::MacMismatch),
        (
            replace(1, "0096")[..96].to_owned(),
            Tr31Error::EncryptedDataLength {
                len: 48,
                multiple: 32,
            },
        ),
    ];
    for (block, expected) in cases {
        let error = tr31::unwrap(&kbpk, &block).unwrap_err();
        assert_eq!(error, expected, "{block}");
    }

    let wrong_kbpk = SecretKey::generate(KeyAlgorithm::Aes256).unwrap();
    assert_eq!(
        tr31::unwrap(&wrong_kbpk, valid).unwrap_err(),
        Tr31Error::MacMismatch
    );
    let tdes_kbpk = SecretKey::generate(KeyAlgorithm::Tdes2).unwrap();
    assert!(matches!(
        tr31::unwrap(&tdes_kbpk, valid),
        Err(Tr31Error::KbpkMismatch { version: 'D', .. })
    ));
}

#[test]
fn tr31_unwrap_error_messages() {
    let kbpk = SecretKey::generate(KeyAlgorithm::Aes256).unwrap();
    let error = tr31::unwrap(&kbpk, "D0112P0AE00E0000ABCD").unwrap_err();
    assert_eq!(
        error.to_string(),
        "key block length field says 112 characters but the block has 20; the block was truncated or padded in transit"
    );
    let error = tr31::unwrap(&kbpk, "").unwrap_err();
    assert_eq!(
        error.to_string(),
        "key block header is 0 characters long; it needs at least 16"
    );
    let error = tr31::unwrap(&kbpk, "D0016B1AX00N0000").unwrap_err();
    assert_eq!(
        error.to_string(),
        "key block encrypted key data is 0 hex digits; it must be a non-zero multiple of 32"
    );
}

#[test]
fn tr31_header_accessors() {
    let mut header = KeyBlockHeader::new(
        KeyBlockVersion::D,
        KeyUsage::KeyBlockProtectionKey,
        KeyBlockAlgorithm::Aes,
        ModeOfUse::EncryptDecrypt,
        Exportability::Exportable,
    );
    assert_eq!(header.to_string(), "D0000K1AB00E0000");
    header.set_key_version(tr31::KeyVersionNumber::new("c1").unwrap());
    header.set_key_context(tr31::KeyContext::Storage);
    assert_eq!(header.to_string(), "D0000K1ABc1E0010");
    assert_eq!(header.key_usage(), KeyUsage::KeyBlockProtectionKey);
    assert_eq!(header.algorithm(), KeyBlockAlgorithm::Aes);
    for usage in [
        KeyUsage::Bdk,
        KeyUsage::InitialDukptKey,
        KeyUsage::KeyEncryptionKey,
    ] {
        assert_eq!(KeyUsage::from_code_str(usage.code_str()), Ok(usage));
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests

fn key_algorithm_strategy() -> impl Strategy<Value = KeyAlgorithm> {
    prop_oneof![
        Just(KeyAlgorithm::Tdes2),
        Just(KeyAlgorithm::Tdes3),
        Just(KeyAlgorithm::Aes128),
        Just(KeyAlgorithm::Aes192),
        Just(KeyAlgorithm::Aes256),
    ]
}

/// Security strength in bits, as the key block policy counts it.
fn strength(algorithm: KeyAlgorithm) -> usize {
    match algorithm {
        KeyAlgorithm::Tdes2 => 80,
        KeyAlgorithm::Tdes3 => 112,
        aes => aes.key_len() * 8,
    }
}

fn key_strategy(algorithm: KeyAlgorithm) -> impl Strategy<Value = SecretKey> {
    proptest::collection::vec(any::<u8>(), algorithm.key_len())
        .prop_map(move |bytes| SecretKey::from_slice(algorithm, &bytes).unwrap())
}

/// Key usages of symmetric keys whose algorithm family may be AES or TDES.
fn symmetric_usages() -> Vec<KeyUsage> {
    KeyUsage::ALL
        .iter()
        .copied()
        .filter(|usage| {
            let algorithms = policy::allowed_algorithms(*usage);
            algorithms.contains(&KeyBlockAlgorithm::Aes)
                && algorithms.contains(&KeyBlockAlgorithm::Tdes)
        })
        .collect()
}

prop_compose! {
    fn header_strategy(key_block_version: KeyBlockVersion, algorithm: KeyAlgorithm)(
        (usage, mode) in proptest::sample::select(symmetric_usages()).prop_flat_map(|usage| {
            let mut modes = policy::allowed_modes(usage).to_vec();
            modes.push(ModeOfUse::NoRestrictions);
            (Just(usage), proptest::sample::select(modes))
        }),
        exportability in proptest::sample::select(Exportability::ALL),
        version in "[0-9a-zA-Z]{2}",
        blocks in proptest::collection::vec(("[A-Z][0-9A-Z]", "[ -~]{0,300}"), 0..4),
    ) -> KeyBlockHeader {
        let mut header = KeyBlockHeader::new(
            key_block_version,
            usage,
            KeyBlockAlgorithm::for_key(algorithm),
            mode,
            exportability,
        );
        header.set_key_version(tr31::KeyVersionNumber::new(&version).unwrap());
        for (id, data) in blocks {
            // IDs with a fixed format, the padding block and repeats are covered elsewhere.
            if ["IK", "KS", "KC", "KP", "PB"].contains(&id.as_str()) {
                continue;
            }
            let _ = header.add_optional_block(&id, &data);
        }
        header
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn wrap_then_unwrap_returns_key_and_header(
        (kbpk, key, header, masking) in (
            proptest::sample::select(KeyBlockVersion::ALL),
            key_algorithm_strategy(),
        )
            .prop_flat_map(|(version, key_algorithm)| {
                let aes = matches!(version, KeyBlockVersion::D | KeyBlockVersion::E);
                let kbpks: Vec<KeyAlgorithm> = [
                    KeyAlgorithm::Tdes2,
                    KeyAlgorithm::Tdes3,
                    KeyAlgorithm::Aes128,
                    KeyAlgorithm::Aes192,
                    KeyAlgorithm::Aes256,
                ]
                .into_iter()
                .filter(|kbpk| kbpk.is_aes() == aes && strength(*kbpk) >= strength(key_algorithm))
                .collect();
                // A/B/C cannot carry AES keys (no TDES KBPK is strong enough): wrap under D then.
                let (version, kbpks) = if kbpks.is_empty() {
                    (KeyBlockVersion::D, vec![KeyAlgorithm::Aes256])
                } else {
                    (version, kbpks)
                };
                (proptest::sample::select(kbpks), Just(version), Just(key_algorithm))
            })
            .prop_flat_map(|(kbpk_algorithm, version, key_algorithm)| (
                key_strategy(kbpk_algorithm),
                key_strategy(key_algorithm),
                header_strategy(version, key_algorithm),
                prop_oneof![Just(LengthMasking::MaxForAlgorithm), Just(LengthMasking::Off)],
            ))
    ) {
        let block = tr31::wrap_with(&kbpk, &header, &key, masking).unwrap();
        prop_assert_eq!(block.len(), block[1..5].parse::<usize>().unwrap());
        let (unwrapped_header, unwrapped_key) = tr31::unwrap(&kbpk, &block).unwrap();
        prop_assert!(unwrapped_key.ct_eq(&key));
        prop_assert_eq!(unwrapped_header, header);
    }

    #[test]
    fn unwrap_of_random_text_never_panics(text in "\\PC{0,300}") {
        let kbpk = SecretKey::from_slice(KeyAlgorithm::Aes128, &[7u8; 16]).unwrap();
        let _ = tr31::unwrap(&kbpk, &text);
        let _ = text.parse::<KeyBlockHeader>();
    }

    #[test]
    fn unwrap_of_mutated_block_never_panics_or_verifies(
        index in 0usize..112,
        byte in 0x20u8..0x7F,
        truncate in 0usize..120,
    ) {
        let kbpk = aes_key("88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6");
        let valid = "D0112P0AE00E0000B82679114F470F540165EDFBF7E250FCEA43F810D215F8D207E2E417C07156A27E8E31DA05F7425509593D03A457DC34";
        let mut bytes = valid.as_bytes().to_vec();
        let changed = bytes[index] != byte
            && !(bytes[index].is_ascii_hexdigit()
                && byte.is_ascii_hexdigit()
                && bytes[index].eq_ignore_ascii_case(&byte));
        bytes[index] = byte;
        bytes.truncate(truncate.max(1));
        let text = String::from_utf8(bytes).unwrap();
        let result = tr31::unwrap(&kbpk, &text);
        if changed && truncate >= 112 {
            prop_assert!(result.is_err(), "a changed block verified: {}", text);
        }
    }

    #[test]
    fn header_parse_of_mutated_text_never_panics(
        text in "D[0-9]{4}[A-Z0-9]{2}[A-Z][A-Z][0-9]{2}[A-Z][0-9]{2}[0-9]{2}[ -~]{0,80}"
    ) {
        let _ = text.parse::<KeyBlockHeader>();
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-check with psec

/// Finds the Python that has psec: `STATION_PSEC_PYTHON`, else the repository's `.venv`.
fn psec_python() -> PathBuf {
    if let Some(path) = std::env::var_os("STATION_PSEC_PYTHON") {
        return PathBuf::from(path);
    }
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let path = repository.join(".venv/bin/python");
    assert!(
        path.exists(),
        "psec cross-check needs a Python with psec: {} is missing; run scripts/test, or set STATION_PSEC_PYTHON",
        path.display()
    );
    path
}

struct Psec {
    child: std::process::Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Psec {
    fn start() -> Self {
        let python = psec_python();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/psec/tr31_cross_check.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {}: {error}; run scripts/test",
                    python.display()
                )
            });
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self { child, stdout }
    }

    fn request(&mut self, request: serde_json::Value) -> serde_json::Value {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{request}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(
            !line.is_empty(),
            "psec script exited; is psec installed? run scripts/test"
        );
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Psec {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Headers for the cross-check: usages, modes and optional blocks the station uses.
fn cross_check_header(
    version: KeyBlockVersion,
    case: usize,
    key_algorithm: KeyAlgorithm,
) -> KeyBlockHeader {
    let code = KeyBlockAlgorithm::for_key(key_algorithm).code_str();
    let fixed = [
        "D0000B0{a}X00N0000",
        "D0000B1{a}X00N0000",
        "D0000K0{a}B00E0000",
        "D0000K1{a}B01S0000",
        "D0000P0{a}E12E0000",
        "D0000D0{a}Bc1N0000",
        "D0000M6{a}C00E0000",
    ];
    let text = fixed[case % fixed.len()].replace("{a}", code);
    let mut header: KeyBlockHeader = text.parse().unwrap();
    header.set_version(version);
    match case % 4 {
        1 if key_algorithm.is_aes() => {
            header
                .add_optional_block("IK", &format!("{:016X}", case * 7919))
                .unwrap();
        }
        2 => {
            header.add_optional_block("KC", "01A1B2C3D4E5").unwrap();
            header.add_optional_block("TS", "20261204201500Z").unwrap();
        }
        3 => {
            header
                .add_optional_block("CT", &format!("00{}", "Q".repeat(260 + case)))
                .unwrap();
        }
        _ => {}
    }
    header
}

#[test]
fn tr31_cross_check_with_psec() {
    let mut psec = Psec::start();
    let tdes = [KeyAlgorithm::Tdes2, KeyAlgorithm::Tdes3];
    let aes = [
        KeyAlgorithm::Aes128,
        KeyAlgorithm::Aes192,
        KeyAlgorithm::Aes256,
    ];
    let all = [
        KeyAlgorithm::Aes128,
        KeyAlgorithm::Tdes2,
        KeyAlgorithm::Aes256,
        KeyAlgorithm::Tdes3,
        KeyAlgorithm::Aes192,
    ];
    let versions: [(KeyBlockVersion, &[KeyAlgorithm], &[KeyAlgorithm]); 4] = [
        (KeyBlockVersion::A, &tdes, &tdes),
        (KeyBlockVersion::B, &tdes, &tdes),
        (KeyBlockVersion::C, &tdes, &tdes),
        (KeyBlockVersion::D, &aes, &all),
    ];
    for case in 0..48 {
        let (version, kbpk_algorithms, key_algorithms) = versions[case % 4];
        let key = SecretKey::generate(key_algorithms[(case / 4) % key_algorithms.len()]).unwrap();
        // The policy allows only a KBPK at least as strong as the key.
        let strong_enough: Vec<KeyAlgorithm> = kbpk_algorithms
            .iter()
            .copied()
            .filter(|kbpk| strength(*kbpk) >= strength(key.algorithm()))
            .collect();
        let kbpk = SecretKey::generate(strong_enough[case % strong_enough.len()]).unwrap();
        let header = cross_check_header(version, case / 4, key.algorithm());

        // Blocks we wrap unwrap in psec.
        let masking = if case % 2 == 0 {
            LengthMasking::MaxForAlgorithm
        } else {
            LengthMasking::Off
        };
        let block = tr31::wrap_with(&kbpk, &header, &key, masking).unwrap();
        let reply = psec.request(serde_json::json!({
            "op": "unwrap", "kbpk": hex_of(&kbpk), "block": block,
        }));
        assert_eq!(reply["ok"], true, "psec rejected {block}: {reply}");
        assert_eq!(reply["key"], hex_of(&key), "{block}");
        assert_eq!(
            reply["header"]["key_usage"],
            header.key_usage().code_str(),
            "{block}"
        );
        assert_eq!(
            reply["header"]["algorithm"],
            header.algorithm().code_str(),
            "{block}"
        );
        assert_eq!(
            reply["header"]["mode_of_use"],
            header.mode_of_use().code_str(),
            "{block}"
        );
        assert_eq!(
            reply["header"]["key_version"],
            header.key_version().as_str(),
            "{block}"
        );
        for optional in header.optional_blocks() {
            assert_eq!(
                reply["header"]["blocks"][optional.id()],
                optional.data(),
                "{block}"
            );
        }

        // Blocks psec wraps unwrap in ours.
        let reply = psec.request(serde_json::json!({
            "op": "wrap", "kbpk": hex_of(&kbpk), "header": header.to_string(), "key": hex_of(&key),
        }));
        assert_eq!(
            reply["ok"], true,
            "psec could not wrap under {header}: {reply}"
        );
        let block = reply["block"].as_str().unwrap();
        let (unwrapped_header, unwrapped_key) = tr31::unwrap(&kbpk, block)
            .unwrap_or_else(|error| panic!("psec block {block} did not unwrap: {error}"));
        assert!(unwrapped_key.ct_eq(&key), "{block}");
        assert_eq!(unwrapped_header, header, "{block}");
    }
}

// ---------------------------------------------------------------------------------------------
// TDES DUKPT

#[test]
fn tdes_dukpt_known_answers() {
    for record in records("tdes_dukpt.txt") {
        let source = field(&record, "source");
        let bdk = SecretKey::from_hex(KeyAlgorithm::Tdes2, field(&record, "bdk")).unwrap();
        let ksn = TdesKsn::from_hex(field(&record, "ksn")).unwrap();
        if let Some(expected) = record.get("expect_ipek") {
            let ipek = tdes_dukpt::ipek(&bdk, &ksn.initial()).unwrap();
            assert_eq!(&hex_of(&ipek), expected, "{source}");
            continue;
        }

        let ipek = tdes_dukpt::ipek(&bdk, &ksn.initial()).unwrap();
        let transaction = tdes_dukpt::transaction_key(&ipek, &ksn).unwrap();
        let from_bdk = tdes_dukpt::transaction_key_from_bdk(&bdk, &ksn).unwrap();
        assert!(from_bdk.ct_eq(&transaction), "{source}");
        let key = match field(&record, "variant") {
            "transaction" => transaction,
            "data-one-way" => {
                let variant = tdes_dukpt::variant_key(&transaction, Variant::DataRequest).unwrap();
                tdes_dukpt::data_key_one_way(&variant).unwrap()
            }
            name => {
                let variant = Variant::from_name(name).unwrap();
                tdes_dukpt::variant_key(&transaction, variant).unwrap()
            }
        };
        assert_eq!(hex_of(&key), field(&record, "expect"), "{source}");
    }
}

/// Field case D3: counter advance skips values with more than 10 one-bits, and the counter
/// space holds 1,048,575 usable non-zero counters, the last being 0x1FF800.
#[test]
fn tdes_dukpt_field_case_d3_counters() {
    assert_eq!(tdes_dukpt::next_counter(0x0007FE), Some(0x000800));
    assert_eq!(tdes_dukpt::next_counter(0x1FF800), None);

    let mut counter = 0;
    let mut usable = 0u32;
    let mut last = 0;
    while let Some(next) = tdes_dukpt::next_counter(counter) {
        assert!(next.count_ones() <= 10, "{next:#X}");
        usable += 1;
        last = next;
        counter = next;
    }
    assert_eq!(usable, 1_048_575);
    assert_eq!(last, 0x1FF800);

    let bdk = SecretKey::from_hex(KeyAlgorithm::Tdes2, "0123456789ABCDEFFEDCBA9876543210").unwrap();
    let ksn = TdesKsn::from_hex("FFFF9876543210E007FF").unwrap();
    let error = tdes_dukpt::transaction_key_from_bdk(&bdk, &ksn).unwrap_err();
    assert_eq!(
        error.to_string(),
        "transaction counter 0x0007FF has 11 one-bits; TDES DUKPT allows at most 10"
    );
}

/// Field cases D5 and D6: KSN text rules, the BDK length and the initial KSN's counter.
#[test]
fn tdes_dukpt_field_cases_d5_d6_rejections() {
    for text in [
        "9876543210E0008",
        "FFFF9876543210E0000800",
        "FFFF9876543210E0000G",
        "",
    ] {
        assert!(
            matches!(
                TdesKsn::from_hex(text),
                Err(DukptError::InvalidTdesKsn { .. })
            ),
            "{text}"
        );
    }

    let bdk3 = SecretKey::from_hex(
        KeyAlgorithm::Tdes3,
        "0123456789ABCDEFFEDCBA987654321089ABCDEF01234567",
    )
    .unwrap();
    let ksn = TdesKsn::from_hex("FFFF9876543210E00000").unwrap();
    assert!(matches!(
        tdes_dukpt::ipek(&bdk3, &ksn),
        Err(DukptError::TdesKeyNotDoubleLength { .. })
    ));
    // A single-length DES BDK cannot even be built as a key.
    assert!(SecretKey::from_hex(KeyAlgorithm::Tdes2, "0123456789ABCDEF").is_err());

    let bdk = SecretKey::from_hex(KeyAlgorithm::Tdes2, "0123456789ABCDEFFEDCBA9876543210").unwrap();
    let initial = TdesKsn::from_hex("FFFF9876543210F00000").unwrap();
    let error = tdes_dukpt::ipek(&bdk, &initial).unwrap_err();
    assert_eq!(
        error,
        DukptError::InitialKsnCounterNotZero {
            ksn: "FFFF9876543210F00000".into(),
            counter: 0x100000
        }
    );
}

#[test]
fn tdes_dukpt_variants_differ_by_mask() {
    let bdk = SecretKey::from_hex(KeyAlgorithm::Tdes2, "0123456789ABCDEFFEDCBA9876543210").unwrap();
    let ksn = TdesKsn::from_hex("FFFF9876543210E00001").unwrap();
    let transaction = tdes_dukpt::transaction_key_from_bdk(&bdk, &ksn).unwrap();
    let expected = [
        (Variant::Pin, "042666B49184CF5C68DE9628D0397B36"),
        (Variant::MacRequest, "042666B4918430A368DE9628D03984C9"),
        (Variant::MacResponse, "042666B46E84CFA368DE96282F397BC9"),
        (Variant::DataRequest, "042666B4917BCFA368DE9628D0C67BC9"),
        (Variant::DataResponse, "0426664B9184CFA368DE96D7D0397BC9"),
    ];
    assert_eq!(hex_of(&transaction), "042666B49184CFA368DE9628D0397BC9");
    for (variant, key) in expected {
        let derived = tdes_dukpt::variant_key(&transaction, variant).unwrap();
        assert_eq!(hex_of(&derived), key, "{variant:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// TR-31 versions A, B, C and E: field cases

/// Field case K1: version B with an AES KBPK is a clear error, and so is D with a TDES KBPK.
#[test]
fn tr31_field_case_k1_kbpk_version_mismatch() {
    let aes_kbpk = SecretKey::generate(KeyAlgorithm::Aes256).unwrap();
    let key = SecretKey::generate(KeyAlgorithm::Tdes2).unwrap();
    let header: KeyBlockHeader = "B0000P0TE00E0000".parse().unwrap();
    let error = tr31::wrap(&aes_kbpk, &header, &key).unwrap_err();
    assert_eq!(
        error.to_string(),
        "key block version B needs a TDES KBPK, but the KBPK is aes256; use versions A, B or C with TDES and D or E with AES"
    );

    let tdes_kbpk = SecretKey::generate(KeyAlgorithm::Tdes2).unwrap();
    let block = tr31::wrap(&tdes_kbpk, &header, &key).unwrap();
    assert!(matches!(
        tr31::unwrap(&aes_kbpk, &block),
        Err(Tr31Error::KbpkMismatch { version: 'B', .. })
    ));
}

/// Field cases K2 and K3: TDES keys under version B export as `B0096` (length obfuscated to the
/// 3-key size); the unobfuscated `B0080` form imports; A, B and C MACs are 16 hex digits or less.
#[test]
fn tr31_field_cases_k2_k3_tdes_lengths() {
    let kbpk = SecretKey::generate(KeyAlgorithm::Tdes3).unwrap();
    for algorithm in [KeyAlgorithm::Tdes2, KeyAlgorithm::Tdes3] {
        let key = SecretKey::generate(algorithm).unwrap();
        let header: KeyBlockHeader = "B0000K0TB00E0000".parse().unwrap();
        let masked = tr31::wrap(&kbpk, &header, &key).unwrap();
        assert!(masked.starts_with("B0096"), "{algorithm}: {masked}");
        let (_, unwrapped) = tr31::unwrap(&kbpk, &masked).unwrap();
        assert!(unwrapped.ct_eq(&key), "{algorithm}");
    }

    let key = SecretKey::generate(KeyAlgorithm::Tdes2).unwrap();
    for (version, length, mac_hex) in [('A', 72, 8), ('B', 80, 16), ('C', 72, 8)] {
        let header: KeyBlockHeader = format!("{version}0000P0TE00E0000").parse().unwrap();
        let plain = tr31::wrap_with(&kbpk, &header, &key, LengthMasking::Off).unwrap();
        assert_eq!(plain.len(), length, "{plain}");
        assert_eq!(&plain[1..5], format!("{length:04}"), "{plain}");
        let (_, unwrapped) = tr31::unwrap(&kbpk, &plain).unwrap();
        assert!(unwrapped.ct_eq(&key), "{version}");

        // Changing the last MAC digit breaks verification; the MAC starts `mac_hex` from the end.
        let mut tampered = plain.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            tr31::unwrap(&kbpk, &tampered).unwrap_err(),
            Tr31Error::MacMismatch
        );
        let mut shortened = plain.clone();
        shortened.replace_range(1..5, &format!("{:04}", length - mac_hex));
        shortened.truncate(length - mac_hex);
        assert!(tr31::unwrap(&kbpk, &shortened).is_err(), "{version}");
    }
}

#[test]
fn tr31_version_e_round_trip_without_padding() {
    let kbpk = SecretKey::generate(KeyAlgorithm::Aes192).unwrap();
    let key = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    let mut header: KeyBlockHeader = "E0000K0AB00E0000".parse().unwrap();
    header.add_optional_block("TS", "20261204201500Z").unwrap();
    let plain = tr31::wrap_with(&kbpk, &header, &key, LengthMasking::Off).unwrap();
    // 16 + 19 (TS) header, 2 + 16 payload bytes in hex, 16-byte MAC in hex: no padding block.
    assert_eq!(plain.len(), 16 + 19 + 36 + 32, "{plain}");
    assert!(!plain.contains("PB"), "{plain}");
    let (parsed, unwrapped) = tr31::unwrap(&kbpk, &plain).unwrap();
    assert!(unwrapped.ct_eq(&key));
    assert_eq!(parsed, header);
}

// ---------------------------------------------------------------------------------------------
// Key block policy

#[test]
fn tr31_policy_on_wrap_and_unwrap() {
    let kbpk = SecretKey::generate(KeyAlgorithm::Aes256).unwrap();
    let bdk = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    let header: KeyBlockHeader = "D0000B0AX00N0000".parse().unwrap();
    let block = tr31::wrap(&kbpk, &header, &bdk).unwrap();

    // A BDK block is never taken for a PIN key.
    let error = tr31::unwrap_for_usage(&kbpk, &block, KeyUsage::PinEncryption).unwrap_err();
    assert_eq!(
        error.to_string(),
        "key block has key usage B0, but a P0 key was expected; use a block made for that usage"
    );
    assert!(tr31::unwrap_for_usage(&kbpk, &block, KeyUsage::Bdk).is_ok());

    // A BDK header with a PIN-key mode of use is not written.
    let pin_mode: KeyBlockHeader = "D0000B0AE00N0000".parse().unwrap();
    assert!(matches!(
        tr31::wrap(&kbpk, &pin_mode, &bdk),
        Err(Tr31Error::PolicyViolation { .. })
    ));
    // A MAC key may not be TDES-wrapped as HMAC, nor an HMAC key be AES.
    let hmac_as_aes: KeyBlockHeader = "D0000M7AC00N0000".parse().unwrap();
    assert!(matches!(
        tr31::wrap(&kbpk, &hmac_as_aes, &bdk),
        Err(Tr31Error::PolicyViolation { .. })
    ));

    // A stronger key is not wrapped under a weaker KBPK.
    let weak_kbpk = SecretKey::generate(KeyAlgorithm::Tdes2).unwrap();
    let tdes3 = SecretKey::generate(KeyAlgorithm::Tdes3).unwrap();
    let header: KeyBlockHeader = "B0000K0TB00E0000".parse().unwrap();
    assert_eq!(
        tr31::wrap(&weak_kbpk, &header, &tdes3)
            .unwrap_err()
            .to_string(),
        "a tdes3 key cannot be wrapped under a weaker tdes2 KBPK; use a KBPK at least as strong as the key"
    );
}

#[test]
fn tr31_policy_lists_modes_per_usage() {
    assert_eq!(policy::allowed_modes(KeyUsage::Bdk), &[ModeOfUse::Derive]);
    assert!(policy::allowed_modes(KeyUsage::PinEncryption).contains(&ModeOfUse::EncryptOnly));
    assert!(
        policy::allowed_algorithms(KeyUsage::InitialDukptKey).contains(&KeyBlockAlgorithm::Aes)
    );
    assert!(!policy::allowed_algorithms(KeyUsage::Bdk).contains(&KeyBlockAlgorithm::Rsa));
}

// ---------------------------------------------------------------------------------------------
// `station tools` calculators, compiled here from the binary's source file

#[allow(dead_code, reason = "`run` prints to stdout; the tests call `execute`")]
#[path = "../../src/cli/tools.rs"]
mod tools;

#[derive(clap::Parser)]
struct ToolsCli {
    #[command(subcommand)]
    command: tools::ToolsCommand,
}

/// Parses `arguments` as `station tools ...` would and runs the calculator.
fn tool(arguments: &str) -> Result<String, tools::ToolsError> {
    use clap::Parser;
    let words = std::iter::once("tools").chain(arguments.split_whitespace());
    let cli = ToolsCli::try_parse_from(words).unwrap_or_else(|error| panic!("{error}"));
    tools::execute(cli.command)
}

#[test]
fn tools_kcv_forms() {
    let tdes = "kcv --key E6F1081FEA4C402CC192B65DE367EC3E --algorithm tdes --length 4";
    assert_eq!(tool(tdes).unwrap(), "212CF915");
    let aes = "--key 2B7E151628AED2A6ABF7158809CF4F3C --algorithm aes";
    assert_eq!(tool(&format!("kcv {aes} --method cmac")).unwrap(), "7AD386");
    assert_eq!(
        tool(&format!("kcv {aes} --json")).unwrap(),
        r#"{"kcv":"7DF76B","method":"legacy"}"#
    );
    let error = tool("kcv --key 0123 --algorithm tdes").unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid --key: a TDES key is 32 or 48 hex digits (2-key or 3-key), not 4; single DES keys are not supported"
    );
}

#[test]
fn tools_dukpt_forms() {
    let bdk = "--bdk 0123456789ABCDEFFEDCBA9876543210";
    assert_eq!(
        tool(&format!("dukpt tdes ipek {bdk} --ksn FFFF9876543210E00000")).unwrap(),
        "6AC292FAA1315B4D858AB3A3D7D5933A"
    );
    assert_eq!(
        tool(&format!(
            "dukpt tdes key {bdk} --ksn FFFF9876543210E00008 --variant pin"
        ))
        .unwrap(),
        "27F66D5244FF621EAA6F6120EDEB427F"
    );
    let data = format!("dukpt tdes key {bdk} --ksn FFFF9876543210E0004A --variant data-request");
    assert_eq!(tool(&data).unwrap(), "58D0E9B540AE5ECC8A0307D7D733E05C");
    assert_eq!(
        tool(&format!("{data} --one-way")).unwrap(),
        "6220B23D0B06787F73C17FB6FD9590E0"
    );
    let error = tool(&format!("dukpt tdes ipek {bdk} --ksn FFFF9876543210E00001")).unwrap_err();
    assert_eq!(error.argument, "--ksn");

    let aes_bdk = "--bdk FEDCBA9876543210F1F1F1F1F1F1F1F1";
    assert_eq!(
        tool(&format!(
            "dukpt aes initial-key {aes_bdk} --initial-key-id 1234567890123456"
        ))
        .unwrap(),
        "1273671EA26AC29AFA4D1084127652A1"
    );
    let key = format!(
        "dukpt aes key {aes_bdk} --ksn 123456789012345600000001 --key-type aes128 --usage pin-encryption"
    );
    assert_eq!(tool(&key).unwrap(), "AF8CB133A78F8DC2D1359F18527593FB");
    let error = tool(&format!(
        "dukpt aes key {aes_bdk} --ksn 12345678901234560001FFFF --key-type aes128 --usage pin-encryption"
    ))
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid --ksn: transaction counter 0x0001FFFF has 17 one-bits; AES DUKPT allows at most 16"
    );
}

#[test]
fn tools_tr31_forms() {
    let kbpk = "88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6";
    let block = "D0112P0AE00E0000B82679114F470F540165EDFBF7E250FCEA43F810D215F8D207E2E417C07156A27E8E31DA05F7425509593D03A457DC34";
    let unwrapped = tool(&format!("tr31 unwrap --kbpk {kbpk} --block {block}")).unwrap();
    let mut lines = unwrapped.lines();
    assert_eq!(lines.next(), Some("3F419E1CB7079442AA37474C2EFBF8B8"));
    let header = lines.next().unwrap();
    assert!(header.contains("key_usage=P0"), "{header}");

    let json = tool(&format!("tr31 unwrap --kbpk {kbpk} --block {block} --json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["key"], "3F419E1CB7079442AA37474C2EFBF8B8");
    assert_eq!(value["header"]["mode_of_use"], "E");
    assert_eq!(value["kcv"], "08793E");

    let wrapped = tool(&format!(
        "tr31 wrap --kbpk {kbpk} --header D0000B1AX00N0100IK141234567890123456 --key 1273671EA26AC29AFA4D1084127652A1"
    ))
    .unwrap();
    let kbpk_key = aes_key(kbpk);
    let (header, key) = tr31::unwrap(&kbpk_key, &wrapped).unwrap();
    assert_eq!(hex_of(&key), "1273671EA26AC29AFA4D1084127652A1");
    assert_eq!(header.optional_block("IK"), Some("1234567890123456"));

    let error = tool(&format!(
        "tr31 wrap --kbpk {kbpk} --header B0000P0TE00E0000 --key 0123456789ABCDEFFEDCBA9876543210"
    ))
    .unwrap_err();
    assert_eq!(error.argument, "--kbpk");
}

#[test]
fn tools_components_and_shares() {
    let combined = tool(
        "components combine --algorithm tdes --component 988A59D7273186B8C9C9922B6D40BA75 --component 8936E5269ADFABE7D4829B2EFB3BF5D9 --component 109FF9963445E0B0E397B39DE02F7DBC --json",
    )
    .unwrap();
    let value: serde_json::Value = serde_json::from_str(&combined).unwrap();
    assert_eq!(value["key"], "0123456789ABCDEFFEDCBA9876543210");
    assert_eq!(value["kcv"], "08D7B4");
    assert_eq!(
        value["component_kcvs"],
        serde_json::json!(["024118", "AED093", "665C48"])
    );

    let key = "--key 2B7E151628AED2A6ABF7158809CF4F3C --algorithm aes";
    let split = tool(&format!(
        "shares split {key} --threshold 2 --count 3 --json"
    ))
    .unwrap();
    let value: serde_json::Value = serde_json::from_str(&split).unwrap();
    let shares: Vec<&str> = value["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|share| share.as_str().unwrap())
        .collect();
    assert_eq!(shares.len(), 3);
    let recovered = tool(&format!(
        "shares combine --share {} --share {}",
        shares[2], shares[0]
    ))
    .unwrap();
    assert_eq!(
        recovered.lines().next(),
        Some("2B7E151628AED2A6ABF7158809CF4F3C")
    );

    let parts = tool(&format!("components split {key} --count 3 --json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&parts).unwrap();
    let arguments: Vec<String> = value["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|part| format!("--component {}", part["component"].as_str().unwrap()))
        .collect();
    let combined = tool(&format!(
        "components combine --algorithm aes {}",
        arguments.join(" ")
    ))
    .unwrap();
    assert_eq!(
        combined.lines().next(),
        Some("2B7E151628AED2A6ABF7158809CF4F3C")
    );
}

#[test]
fn tr31_typed_optional_blocks() {
    let valid = [
        ("IK", "1234567890123456"),
        ("KS", "FFFF9876543210E00000"),
        ("BI", "00FFFF987654"),
        ("BI", "0112345678"),
        ("KC", "0108793E25AB"),
        ("KP", "00CB9DEA"),
        ("TS", "20261204201500Z"),
        ("TS", "20200818221218.25Z"),
        ("HM", "21"),
        ("WP", "002"),
        ("CT", "00MIIB"),
        ("99", "any proprietary text"),
    ];
    for (id, data) in valid {
        let mut header = aes_b1_header();
        header.set_version(KeyBlockVersion::D);
        // KS is for TDES DUKPT blocks.
        if id == "KS" {
            header = "D0000B1TX00N0000".parse().unwrap();
        }
        header
            .add_optional_block(id, data)
            .unwrap_or_else(|error| panic!("{id} {data}: {error}"));
        let reparsed: KeyBlockHeader = header.to_string().parse().unwrap();
        assert_eq!(reparsed.optional_block(id), Some(data));
    }

    let invalid = [
        ("IK", "123456789012345"),
        ("KS", "VM9A"),
        ("BI", "02FFFF987654"),
        ("BI", "00FFFF98765"),
        ("KC", "02ABCDEF"),
        ("KP", "01ABC"),
        ("TS", "2018-06-18T20:42:39.22"),
        ("TS", "20261204201500"),
        ("HM", "2"),
        ("WP", "004"),
        ("CT", "05MIIB"),
    ];
    for (id, data) in invalid {
        let mut header = aes_b1_header();
        let error = header.add_optional_block(id, data).unwrap_err();
        assert!(
            matches!(error, Tr31Error::InvalidOptionalBlockData { .. }),
            "{id} {data}: {error}"
        );
    }
}
