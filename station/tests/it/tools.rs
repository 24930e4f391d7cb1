//! `station tools`: the calculators, run as the built `station` binary with the published test
//! keys. Each form prints uppercase hex (or the key block) on stdout, `--json` prints one object
//! with the named fields, and invalid input exits non-zero with one line naming the argument.

use std::process::{Command, Output};

use serde_json::Value;
use station::crypto::dukpt::aes::{self as aes_dukpt, KeyUsage, Ksn};
use station::crypto::dukpt::tdes::{self as tdes_dukpt, Ksn as TdesKsn, Variant};
use station::crypto::tr31;
use station::crypto::{KeyAlgorithm, SecretKey};

/// Double-length TDES BDK of the ANSI X9.24-1-2009 examples.
const TDES_BDK: &str = "0123456789ABCDEFFEDCBA9876543210";
/// AES-128 BDK of the ANSI X9.24-3-2017 test vectors.
const AES_BDK: &str = "FEDCBA9876543210F1F1F1F1F1F1F1F1";
/// AES-256 KBPK of the TR-31:2018 annex A.7.4 example.
const AES_KBPK: &str = "88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6";
/// The key block of TR-31:2018 annex A.7.4, which wraps `3F419E1CB7079442AA37474C2EFBF8B8`.
const PUBLISHED_BLOCK: &str = "D0112P0AE00E0000B82679114F470F540165EDFBF7E250FCEA43F810D215F8D207E2E417C07156A27E8E31DA05F7425509593D03A457DC34";

fn station(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_station"))
        .arg("tools")
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("the station binary runs")
}

/// Runs a calculator that must succeed and returns its stdout without the final newline.
fn run_ok(args: &[&str]) -> String {
    let output = station(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?} failed: {stderr}");
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    stdout
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("{args:?} output does not end in a newline: {stdout:?}"))
        .to_owned()
}

/// Runs a calculator with `--json` and returns the object it prints.
fn run_json(args: &[&str]) -> serde_json::Map<String, Value> {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let text = run_ok(&with_json);
    assert_eq!(text.lines().count(), 1, "JSON output is one line: {text}");
    match serde_json::from_str(&text).expect("output is JSON") {
        Value::Object(object) => object,
        other => panic!("{args:?} printed {other}, not an object"),
    }
}

/// Runs a calculator that must fail and returns its one-line error message.
fn run_err(args: &[&str]) -> String {
    let output = station(args);
    assert!(!output.status.success(), "{args:?} succeeded");
    assert!(output.stdout.is_empty(), "{args:?} printed on stdout");
    let stderr = String::from_utf8(output.stderr).expect("stderr is UTF-8");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
    stderr.trim_end().to_owned()
}

fn field<'a>(object: &'a serde_json::Map<String, Value>, name: &str) -> &'a str {
    object
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("JSON has no string field {name}: {object:?}"))
}

fn assert_upper_hex(text: &str, digits: usize) {
    assert_eq!(text.len(), digits, "{text}");
    assert!(
        text.bytes()
            .all(|byte| byte.is_ascii_digit() || (b'A'..=b'F').contains(&byte)),
        "{text} is not uppercase hex"
    );
}

fn hex_of(key: &SecretKey) -> String {
    hex::encode_upper(key.expose())
}

#[test]
fn tools_kcv_known_values() {
    let cases = [
        (TDES_BDK, "tdes", "legacy", "08D7B4"),
        (
            "0123456789ABCDEFFEDCBA987654321089ABCDEF01234567",
            "tdes",
            "legacy",
            "3FD539",
        ),
        (
            "2B7E151628AED2A6ABF7158809CF4F3C",
            "aes",
            "legacy",
            "7DF76B",
        ),
        ("2B7E151628AED2A6ABF7158809CF4F3C", "aes", "cmac", "7AD386"),
    ];
    for (key, algorithm, method, expected) in cases {
        let args = [
            "kcv",
            "--key",
            key,
            "--algorithm",
            algorithm,
            "--method",
            method,
        ];
        assert_eq!(run_ok(&args), expected, "{key} {method}");
        let json = run_json(&args);
        assert_eq!(field(&json, "kcv"), expected);
        assert_eq!(field(&json, "method"), method);
    }

    // The legacy method is the default, and lowercase key hex is accepted.
    let lowercase = TDES_BDK.to_lowercase();
    assert_eq!(
        run_ok(&["kcv", "--key", &lowercase, "--algorithm", "tdes"]),
        "08D7B4"
    );
}

#[test]
fn tools_tdes_ipek_known_value() {
    let args = [
        "dukpt",
        "tdes",
        "ipek",
        "--bdk",
        TDES_BDK,
        "--ksn",
        "FFFF9876543210E00000",
    ];
    assert_eq!(run_ok(&args), "6AC292FAA1315B4D858AB3A3D7D5933A");
    let json = run_json(&args);
    assert_eq!(field(&json, "ipek"), "6AC292FAA1315B4D858AB3A3D7D5933A");
    assert_eq!(field(&json, "ksn"), "FFFF9876543210E00000");

    // A KSN of 16 digits is padded on the left with F.
    let short = [
        "dukpt",
        "tdes",
        "ipek",
        "--bdk",
        TDES_BDK,
        "--ksn",
        "9876543210E00000",
    ];
    assert_eq!(run_ok(&short), "6AC292FAA1315B4D858AB3A3D7D5933A");
}

#[test]
fn tools_tdes_key_every_variant() {
    let ksn_text = "FFFF9876543210E00001";
    let pin = [
        "dukpt",
        "tdes",
        "key",
        "--bdk",
        TDES_BDK,
        "--ksn",
        ksn_text,
        "--variant",
        "pin",
    ];
    assert_eq!(run_ok(&pin), "042666B49184CF5C68DE9628D0397B36");

    let bdk = SecretKey::from_hex(KeyAlgorithm::Tdes2, TDES_BDK).unwrap();
    let ksn = TdesKsn::from_hex(ksn_text).unwrap();
    let transaction = tdes_dukpt::transaction_key_from_bdk(&bdk, &ksn).unwrap();
    for variant in Variant::ALL {
        let expected = hex_of(&tdes_dukpt::variant_key(&transaction, variant).unwrap());
        let args = [
            "dukpt",
            "tdes",
            "key",
            "--bdk",
            TDES_BDK,
            "--ksn",
            ksn_text,
            "--variant",
            variant.name(),
        ];
        assert_eq!(run_ok(&args), expected, "{}", variant.name());
        let json = run_json(&args);
        assert_eq!(field(&json, "key"), expected);
        assert_eq!(field(&json, "variant"), variant.name());
    }

    let one_way = [
        "dukpt",
        "tdes",
        "key",
        "--bdk",
        TDES_BDK,
        "--ksn",
        ksn_text,
        "--variant",
        "data-request",
        "--one-way",
    ];
    let data_variant = tdes_dukpt::variant_key(&transaction, Variant::DataRequest).unwrap();
    let expected = hex_of(&tdes_dukpt::data_key_one_way(&data_variant).unwrap());
    assert_eq!(run_ok(&one_way), expected);
}

#[test]
fn tools_aes_initial_key_known_values() {
    let cases = [
        (AES_BDK, "1273671EA26AC29AFA4D1084127652A1"),
        (
            "FEDCBA9876543210F1F1F1F1F1F1F1F1FEDCBA9876543210F1F1F1F1F1F1F1F1",
            "CE9CE0C101D1138F97FB6CAD4DF045A7083D4EAE2D35A31789D01CCF0949550F",
        ),
    ];
    for (bdk, expected) in cases {
        let args = [
            "dukpt",
            "aes",
            "initial-key",
            "--bdk",
            bdk,
            "--initial-key-id",
            "1234567890123456",
        ];
        assert_eq!(run_ok(&args), expected);
        let json = run_json(&args);
        assert_eq!(field(&json, "initial_key"), expected);
        assert_eq!(field(&json, "kcv_method"), "cmac");
    }
}

#[test]
fn tools_aes_key_every_usage_and_type() {
    let ksn_text = "123456789012345600000001";
    let published = [
        ("pin-encryption", "AF8CB133A78F8DC2D1359F18527593FB"),
        ("mac-generation", "A2DC23DE6FDE0824A2BC321E08E4B8B7"),
        ("data-encryption", "A35C412EFD41FDB98B69797C02DCD08F"),
    ];
    for (usage, expected) in published {
        let args = [
            "dukpt",
            "aes",
            "key",
            "--bdk",
            AES_BDK,
            "--ksn",
            ksn_text,
            "--key-type",
            "aes128",
            "--usage",
            usage,
        ];
        assert_eq!(run_ok(&args), expected, "{usage}");
        assert_eq!(field(&run_json(&args), "key"), expected, "{usage}");
    }

    // Every other usage and key type against the library, which the known-answer tests check.
    let bdk = SecretKey::from_hex(KeyAlgorithm::Aes128, AES_BDK).unwrap();
    let ksn = Ksn::from_hex(ksn_text).unwrap();
    let initial = aes_dukpt::initial_key(&bdk, &ksn.initial_key_id, KeyAlgorithm::Aes128).unwrap();
    let usages = [
        ("key-encryption", KeyUsage::KeyEncryptionKey),
        ("pin-encryption", KeyUsage::PinEncryption),
        ("mac-generation", KeyUsage::MacGeneration),
        ("mac-verification", KeyUsage::MacVerification),
        ("mac-both", KeyUsage::MacBothWays),
        ("data-encryption", KeyUsage::DataEncryptionEncrypt),
        ("data-decryption", KeyUsage::DataEncryptionDecrypt),
        ("data-both", KeyUsage::DataEncryptionBothWays),
        ("key-derivation", KeyUsage::KeyDerivation),
    ];
    let key_types = [
        ("tdes2", KeyAlgorithm::Tdes2),
        ("tdes3", KeyAlgorithm::Tdes3),
        ("aes128", KeyAlgorithm::Aes128),
    ];
    for (usage_name, usage) in usages {
        for (type_name, key_type) in key_types {
            let expected =
                hex_of(&aes_dukpt::working_key(&initial, &ksn, usage, key_type).unwrap());
            let args = [
                "dukpt",
                "aes",
                "key",
                "--bdk",
                AES_BDK,
                "--ksn",
                ksn_text,
                "--key-type",
                type_name,
                "--usage",
                usage_name,
            ];
            let printed = run_ok(&args);
            assert_upper_hex(&printed, 2 * key_type.key_len());
            assert_eq!(printed, expected, "{usage_name} {type_name}");
        }
    }
}

/// The update keys of the ANSI X9.24-3-2017 supplement test vectors, from the BDK.
#[test]
fn tools_aes_update_key_known_values() {
    let cases = [
        (AES_BDK, "aes128", "9A9770AEE1ACD1B13473D0463A1883B9"),
        (AES_BDK, "tdes2", "4744A5ECBC62B5C4BB76FBEAE1E244A3"),
        (
            "FEDCBA9876543210F1F1F1F1F1F1F1F1FEDCBA9876543210F1F1F1F1F1F1F1F1",
            "aes256",
            "AEFB210C136278A1279F7C8815F446DB8EBE2AA910B157AA4E6484D8DE9C4807",
        ),
    ];
    for (bdk, key_type, expected) in cases {
        let args = [
            "dukpt",
            "aes",
            "update-key",
            "--bdk",
            bdk,
            "--initial-key-id",
            "1234567890123456",
            "--key-type",
            key_type,
        ];
        assert_eq!(run_ok(&args), expected, "{key_type}");
        let json = run_json(&args);
        assert_eq!(field(&json, "update_key"), expected, "{key_type}");
        assert_eq!(field(&json, "initial_key_id"), "1234567890123456");
    }
}

#[test]
fn tools_tr31_unwrap_published_block() {
    let args = [
        "tr31",
        "unwrap",
        "--kbpk",
        AES_KBPK,
        "--block",
        PUBLISHED_BLOCK,
    ];
    let plain = run_ok(&args);
    let lines: Vec<&str> = plain.lines().collect();
    assert_eq!(lines[0], "3F419E1CB7079442AA37474C2EFBF8B8");
    assert!(lines[1].contains("key_usage=P0"), "{plain}");

    let json = run_json(&args);
    assert_eq!(field(&json, "key"), "3F419E1CB7079442AA37474C2EFBF8B8");
    let header = json["header"].as_object().expect("header is an object");
    let expected = [
        ("version", "D"),
        ("key_usage", "P0"),
        ("algorithm", "A"),
        ("mode_of_use", "E"),
        ("key_version", "00"),
        ("exportability", "E"),
        ("key_context", "0"),
    ];
    for (name, value) in expected {
        assert_eq!(field(header, name), value, "{name}");
    }
    assert_eq!(header["optional_block_count"], 0);
    assert_eq!(header["optional_blocks"], serde_json::json!({}));
}

#[test]
fn tools_tr31_wrap_computes_length_field() {
    let key = "1273671EA26AC29AFA4D1084127652A1";
    let header = "D0000B1AX00N0100IK141234567890123456";
    let block = run_ok(&[
        "tr31", "wrap", "--kbpk", AES_KBPK, "--header", header, "--key", key,
    ]);
    assert_eq!(block.lines().count(), 1);
    let declared: usize = block[1..5].parse().expect("length field is decimal");
    assert_eq!(declared, block.len(), "{block}");
    assert!(block.starts_with("D"), "{block}");

    let json = run_json(&["tr31", "unwrap", "--kbpk", AES_KBPK, "--block", &block]);
    assert_eq!(field(&json, "key"), key);
    let header_json = json["header"].as_object().unwrap();
    assert_eq!(field(header_json, "key_usage"), "B1");
    assert_eq!(header_json["optional_block_count"], 1);
    assert_eq!(header_json["optional_blocks"]["IK"], "1234567890123456");

    // The library reads the calculator's block too.
    let kbpk = SecretKey::from_hex(KeyAlgorithm::Aes256, AES_KBPK).unwrap();
    let (parsed, unwrapped) = tr31::unwrap(&kbpk, &block).unwrap();
    assert_eq!(parsed.optional_block("IK"), Some("1234567890123456"));
    assert_eq!(hex_of(&unwrapped), key);

    let json = run_json(&[
        "tr31", "wrap", "--kbpk", AES_KBPK, "--header", header, "--key", key,
    ]);
    assert!(field(&json, "key_block").starts_with("D0"), "{json:?}");
}

#[test]
fn tools_tr31_tdes_versions_round_trip() {
    let kbpk = "89E88CF7931444F334BD7547FC3F380C";
    let key = "F039121BEC83D26B169BDCD5B22AAF8F";
    for version in ["A", "B", "C"] {
        let header = format!("{version}0000P0TE00E0000");
        let block = run_ok(&[
            "tr31", "wrap", "--kbpk", kbpk, "--header", &header, "--key", key,
        ]);
        assert!(block.starts_with(version), "{block}");
        let unwrapped = run_ok(&["tr31", "unwrap", "--kbpk", kbpk, "--block", &block]);
        assert_eq!(unwrapped.lines().next(), Some(key), "{version}");
    }
}

#[test]
fn tools_components_split_then_combine() {
    let key = TDES_BDK;
    let split = run_json(&[
        "components",
        "split",
        "--key",
        key,
        "--algorithm",
        "tdes",
        "--count",
        "3",
    ]);
    assert_eq!(field(&split, "kcv"), "08D7B4");
    let components: Vec<&str> = split["components"]
        .as_array()
        .expect("components is a list")
        .iter()
        .map(|item| item["component"].as_str().expect("component is hex"))
        .collect();
    assert_eq!(components.len(), 3);

    let mut args = vec!["components", "combine", "--algorithm", "tdes"];
    for component in &components {
        assert_upper_hex(component, 32);
        args.extend(["--component", component]);
    }
    let plain = run_ok(&args);
    assert_eq!(plain, format!("{key}\n08D7B4"));
    let combined = run_json(&args);
    assert_eq!(field(&combined, "key"), key);
    assert_eq!(field(&combined, "kcv"), "08D7B4");
    assert_eq!(combined["component_kcvs"].as_array().unwrap().len(), 3);
}

#[test]
fn tools_shares_split_then_combine() {
    let key = "2B7E151628AED2A6ABF7158809CF4F3C";
    let split = run_json(&[
        "shares",
        "split",
        "--key",
        key,
        "--algorithm",
        "aes",
        "--threshold",
        "2",
        "--count",
        "3",
    ]);
    let shares: Vec<&str> = split["shares"]
        .as_array()
        .expect("shares is a list")
        .iter()
        .map(|share| share.as_str().expect("share is text"))
        .collect();
    assert_eq!(shares.len(), 3);

    for pair in [[0, 1], [0, 2], [1, 2]] {
        let combined = run_json(&[
            "shares",
            "combine",
            "--share",
            shares[pair[0]],
            "--share",
            shares[pair[1]],
        ]);
        assert_eq!(field(&combined, "key"), key, "{pair:?}");
        assert_eq!(field(&combined, "kcv"), field(&split, "kcv"));
    }
}

#[test]
fn tools_invalid_input_names_argument() {
    let odd_key = "0123456789ABCDEFFEDCBA987654321";
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["kcv", "--key", odd_key, "--algorithm", "tdes"],
            "invalid --key:",
            "odd number of hex digits (31)",
        ),
        (
            vec!["kcv", "--key", "0123456789ABCDEF0123", "--algorithm", "aes"],
            "invalid --key:",
            "an AES key is 32, 48 or 64 hex digits, not 20",
        ),
        (
            vec![
                "kcv",
                "--key",
                "0123456789ABCDEFFEDCBA98765432XY",
                "--algorithm",
                "tdes",
            ],
            "invalid --key:",
            "not valid hex",
        ),
        (
            vec![
                "dukpt",
                "tdes",
                "ipek",
                "--bdk",
                TDES_BDK,
                "--ksn",
                "FFFF9876543210E0000G",
            ],
            "invalid --ksn:",
            "give 16 to 20 hex digits",
        ),
        (
            vec![
                "dukpt",
                "tdes",
                "ipek",
                "--bdk",
                TDES_BDK,
                "--ksn",
                "FFFF9876543210E00001",
            ],
            "invalid --ksn:",
            "an initial KSN has its 21 counter bits zero",
        ),
        (
            vec![
                "dukpt",
                "aes",
                "key",
                "--bdk",
                AES_BDK,
                "--ksn",
                "12345678901234560001FFFF",
                "--key-type",
                "aes128",
                "--usage",
                "pin-encryption",
            ],
            "invalid --ksn:",
            "has 17 one-bits; AES DUKPT allows at most 16",
        ),
        (
            vec![
                "dukpt",
                "aes",
                "initial-key",
                "--bdk",
                AES_BDK,
                "--initial-key-id",
                "12345678",
            ],
            "invalid --initial-key-id:",
            "give 16 hex digits",
        ),
        (
            vec![
                "tr31",
                "wrap",
                "--kbpk",
                AES_KBPK,
                "--header",
                "X0000B1AX00N0000",
                "--key",
                "1273671EA26AC29AFA4D1084127652A1",
            ],
            "invalid --header:",
            "key block version 'X' is not supported",
        ),
        (
            vec![
                "tr31",
                "wrap",
                "--kbpk",
                "0123456789ABCDEF0123",
                "--header",
                "D0000B1AX00N0000",
                "--key",
                "1273671EA26AC29AFA4D1084127652A1",
            ],
            "invalid --kbpk:",
            "not 20",
        ),
    ];
    for (args, argument, problem) in cases {
        let message = run_err(&args);
        assert!(message.contains(argument), "{args:?}: {message}");
        assert!(message.contains(problem), "{args:?}: {message}");
    }

    // The odd-length key is a secret, so its error does not repeat it.
    let message = run_err(&["kcv", "--key", odd_key, "--algorithm", "tdes"]);
    assert!(!message.contains(odd_key), "{message}");
}

#[test]
fn tools_unwrap_with_bad_mac_fails() {
    let mut altered = PUBLISHED_BLOCK.to_owned();
    let last = altered.pop().expect("block is not empty");
    altered.push(if last == '4' { '5' } else { '4' });
    let message = run_err(&["tr31", "unwrap", "--kbpk", AES_KBPK, "--block", &altered]);
    assert_eq!(
        message,
        "error: invalid --block: key block MAC does not verify: the block was altered or the KBPK is wrong"
    );

    // A block under another KBPK fails the same way.
    let other_kbpk = "00".repeat(32);
    let message = run_err(&[
        "tr31",
        "unwrap",
        "--kbpk",
        &other_kbpk,
        "--block",
        PUBLISHED_BLOCK,
    ]);
    assert!(message.contains("MAC does not verify"), "{message}");
}
