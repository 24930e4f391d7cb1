//! Integration tests of the vault's PKCS#11 backend against SoftHSM2 and PostgreSQL.
//!
//! A process may initialise a PKCS#11 module only once, and SoftHSM2 reads its configuration
//! (`SOFTHSM2_CONF`) at that moment. So each test runs its body in a child process of this test
//! binary, with its own SoftHSM2 configuration and token folder in a temporary directory: the
//! parent starts the child and checks that the child's one test passed.

use std::path::{Path, PathBuf};
use std::process::Command;

use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use secrecy::SecretString;
use station::crypto::dukpt::aes::{InitialKeyId, initial_key};
use station::crypto::kcv::{Kcv, KcvMethod};
use station::crypto::tr31;
use station::crypto::{KeyAlgorithm, SecretKey};
use station::db::testing::TestDatabase;
use station::vault::pkcs11::{
    FirmwareVersion, PinSource, Pkcs11Config, Pkcs11Error, Token, TokenSelector,
};
use station::vault::{
    KeyStatus, KeyStorage, KeyUsage, StoreOutcome, Vault, VaultError, WrappedImport,
};

use crate::ceremony::{Envelopes, line_participants, run_line_ceremony};

/// Set in the child process that runs a test body.
const CHILD_ENV: &str = "STATION_PKCS11_TEST_CHILD";
const USER_PIN: &str = "user-pin-1234";
const SO_PIN: &str = "so-pin-5678";
/// The station master key of these tests.
const MASTER_KEY: &str = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";
/// AES-128 BDK of the ANSI X9.24-3-2017 test vectors.
const BDK_A: &str = "FEDCBA9876543210F1F1F1F1F1F1F1F1";
const TRANSPORT_KEY: &str = "88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6";

/// Runs test `name` of this module in a child process with its own SoftHSM2 token folder and
/// returns false. In the child, returns true, so the caller runs the test body.
fn run_in_child(name: &str) -> bool {
    if std::env::var_os(CHILD_ENV).is_some() {
        return true;
    }

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();

    // `/proc/self/exe` still runs this binary after a rebuild has replaced the file on disk,
    // which happens when several checkouts share one target folder.
    let output = Command::new("/proc/self/exe")
        .args([
            &format!("pkcs11::{name}"),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "child process of {name} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "child process of {name} ran no test:\n{stdout}"
    );
    false
}

fn softhsm_module() -> PathBuf {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|path| path.exists())
    .expect("SoftHSM2 is not installed; scripts/test installs it (Debian package softhsm2)")
}

/// A token initialised for one test, with its PIN in a file.
struct TestToken {
    dir: tempfile::TempDir,
    config: Pkcs11Config,
}

impl TestToken {
    /// Initialises a token labelled `label` in this process.
    fn new(label: &str) -> Self {
        station::vault::pkcs11::initialise_token(
            &softhsm_module(),
            label,
            &SecretString::from(SO_PIN),
            &SecretString::from(USER_PIN),
        )
        .unwrap();
        Self::existing(label)
    }

    /// Configures the existing token labelled `label`.
    fn existing(label: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, format!("{USER_PIN}\n")).unwrap();
        Self {
            dir,
            config: Pkcs11Config {
                module: softhsm_module(),
                token: TokenSelector::Label(label.to_owned()),
                pin: PinSource::File(pin_file),
                minimum_firmware: None,
                derive_in_token: true,
            },
        }
    }

    fn with_pin(&self, pin: &str) -> Pkcs11Config {
        let pin_file = self.dir.path().join("other-pin");
        std::fs::write(&pin_file, pin).unwrap();
        Pkcs11Config {
            pin: PinSource::File(pin_file),
            ..self.config.clone()
        }
    }
}

fn key(algorithm: KeyAlgorithm, hex: &str) -> SecretKey {
    SecretKey::from_hex(algorithm, hex).unwrap()
}

/// Opens a PKCS#11 vault on `token` and unseals it with the test master key.
async fn unsealed_vault(db: &TestDatabase, config: &Pkcs11Config) -> Vault {
    let mut vault = Vault::open_pkcs11(db.pool().clone(), config).unwrap();
    let mut tx = db.pool().begin().await.unwrap();
    vault
        .unseal(&mut tx, key(KeyAlgorithm::Aes256, MASTER_KEY), None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    vault
}

async fn store(vault: &Vault, db: &TestDatabase, label: &str, usage: KeyUsage, key: &SecretKey) {
    let bdk_id = (usage == KeyUsage::Bdk).then_some([0x12, 0x34, 0x56, 0x78]);
    let mut tx = db.pool().begin().await.unwrap();
    let outcome = vault
        .store_key(&mut tx, label, usage, key, bdk_id, None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(outcome, StoreOutcome::Stored, "{label}");
}

/// Reads the `name = value` records of a data file in `station/tests/data/`.
fn records(name: &str) -> Vec<Vec<(String, String)>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let text = std::fs::read_to_string(path).unwrap();
    text.split("\n\n")
        .map(|record| {
            record
                .lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| line.split_once(" = "))
                .map(|(name, value)| (name.to_owned(), value.trim().to_owned()))
                .collect::<Vec<_>>()
        })
        .filter(|record| !record.is_empty())
        .collect()
}

fn field<'a>(record: &'a [(String, String)], name: &str) -> Option<&'a str> {
    record
        .iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| value.as_str())
}

/// Unwraps an initial key block with the clear transport key, as the terminal does.
fn open_block(block: &str) -> SecretKey {
    let (header, key) = tr31::unwrap(&key(KeyAlgorithm::Aes256, TRANSPORT_KEY), block).unwrap();
    assert_eq!(header.key_usage(), tr31::KeyUsage::InitialDukptKey);
    key
}

#[tokio::test]
async fn absent_token_is_reported() {
    if !run_in_child("absent_token_is_reported") {
        return;
    }
    let token = TestToken::new("present");
    let config = Pkcs11Config {
        token: TokenSelector::Label("absent".to_owned()),
        ..token.config.clone()
    };

    let error = Token::open(&config).err().unwrap();

    assert!(
        matches!(error, Pkcs11Error::TokenNotFound { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("label \"absent\""), "{message}");
    assert!(message.contains("\"present\""), "{message}");
    assert!(
        message.contains("check that the HSM is connected"),
        "{message}"
    );

    let missing_module = Pkcs11Config {
        module: PathBuf::from("/nonexistent/libvendor-pkcs11.so"),
        ..token.config.clone()
    };
    let error = Token::open(&missing_module).err().unwrap();
    assert!(matches!(error, Pkcs11Error::ModuleLoad { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("/nonexistent/libvendor-pkcs11.so"),
        "{error}"
    );
}

#[tokio::test]
async fn wrong_pin_is_rejected() {
    if !run_in_child("wrong_pin_is_rejected") {
        return;
    }
    let token = TestToken::new("pin-test");

    let error = Token::open(&token.with_pin("not-the-pin")).err().unwrap();

    assert!(matches!(error, Pkcs11Error::WrongPin { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("rejected the PIN"), "{message}");
    assert!(!message.contains("not-the-pin"), "{message}");

    let unset = Pkcs11Config {
        pin: PinSource::Env("STATION_TEST_PIN_THAT_IS_NOT_SET".to_owned()),
        ..token.config.clone()
    };
    let error = Token::open(&unset).err().unwrap();
    assert!(matches!(error, Pkcs11Error::PinUnavailable(_)), "{error}");
    assert!(
        error
            .to_string()
            .contains("STATION_TEST_PIN_THAT_IS_NOT_SET"),
        "{error}"
    );

    let empty = token.with_pin("\n");
    let error = Token::open(&empty).err().unwrap();
    assert!(error.to_string().contains("is empty"), "{error}");

    // The right PIN still works: the failures did not lock the token.
    Token::open(&token.config).unwrap();
}

/// Field case from a public bug report: a freshly initialised SoftHSM2 token moves to a new
/// slot, so the station finds it by label or serial. A second login reports
/// CKR_USER_ALREADY_LOGGED_IN, which counts as success.
#[tokio::test]
async fn token_found_after_slot_change() {
    if !run_in_child("token_found_after_slot_change") {
        return;
    }
    // Another process initialises the token before this one loads the module, as an operator's
    // tool would. These PINs belong to a throwaway test token.
    let output = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "line-hsm"])
        .args(["--so-pin", SO_PIN, "--pin", USER_PIN])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let moved_to: u64 = stdout
        .split("reassigned to slot ")
        .nth(1)
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("softhsm2-util did not report the new slot: {stdout}"));
    assert_ne!(moved_to, 0, "the token was initialised in free slot 0");
    let token = TestToken::existing("line-hsm");

    let first = Token::open(&token.config).unwrap();
    assert_eq!(first.report().slot_id, moved_to);
    assert_eq!(first.report().label, "line-hsm");

    // A second session logs in again and gets CKR_USER_ALREADY_LOGGED_IN, which is success.
    let by_serial = Pkcs11Config {
        token: TokenSelector::Serial(first.report().serial.clone()),
        ..token.config.clone()
    };
    let second = Token::open(&by_serial).unwrap();
    assert_eq!(second.report().slot_id, moved_to);

    // A second token does not disturb the first one's slot or login.
    let other = TestToken::new("other-hsm");
    let other_token = Token::open(&other.config).unwrap();
    assert_ne!(other_token.report().slot_id, moved_to);
    let reopened = Token::open(&token.config).unwrap();
    assert_eq!(reopened.report().serial, first.report().serial);
    assert_eq!(reopened.report().slot_id, moved_to);
}

#[tokio::test]
async fn token_model_and_firmware_are_reported() {
    if !run_in_child("token_model_and_firmware_are_reported") {
        return;
    }
    let token = TestToken::new("report");

    let current = Token::open(&Pkcs11Config {
        minimum_firmware: Some("2.0".parse().unwrap()),
        ..token.config.clone()
    })
    .unwrap();
    let report = current.report();
    assert_eq!(report.model, "SoftHSM v2");
    assert_eq!(report.manufacturer, "SoftHSM project");
    assert!(report.firmware_version >= FirmwareVersion { major: 2, minor: 0 });
    assert_eq!(report.firmware_below_minimum, None);
    assert!(report.derives_in_token);

    let too_old = Token::open(&Pkcs11Config {
        minimum_firmware: Some("99.1".parse().unwrap()),
        ..token.config.clone()
    })
    .unwrap();
    assert_eq!(
        too_old.report().firmware_below_minimum,
        Some(FirmwareVersion {
            major: 99,
            minor: 1
        })
    );
}

/// The initial key derived inside the token matches the X9.24-3-2017 vector and the software
/// derivation bit for bit.
#[tokio::test]
async fn derivation_in_token_matches_vectors() {
    if !run_in_child("derivation_in_token_matches_vectors") {
        return;
    }
    let token = TestToken::new("derive");
    let db = TestDatabase::new().await;
    let vault = unsealed_vault(&db, &token.config).await;
    store(
        &vault,
        &db,
        "bdk-a",
        KeyUsage::Bdk,
        &key(KeyAlgorithm::Aes128, BDK_A),
    )
    .await;
    let transport = key(KeyAlgorithm::Aes256, TRANSPORT_KEY);
    store(&vault, &db, "transport", KeyUsage::TransportKey, &transport).await;
    assert_eq!(
        vault.key_info("bdk-a").await.unwrap().storage,
        KeyStorage::TokenObject
    );

    let vector = records("aes_dukpt.txt")
        .into_iter()
        .find(|record| {
            field(record, "source")
                .is_some_and(|source| source.ends_with("AES-128 BDK, initial key"))
        })
        .expect("aes_dukpt.txt has the AES-128 initial key vector");
    assert_eq!(field(&vector, "bdk"), Some(BDK_A));
    let id = InitialKeyId::from_hex(field(&vector, "initial_key_id").unwrap()).unwrap();
    assert_eq!(id.bdk_id, [0x12, 0x34, 0x56, 0x78]);

    let wrapped = vault
        .wrap_initial_key("bdk-a", id.derivation_id, "transport")
        .await
        .unwrap();

    let device_key = open_block(&wrapped.key_block);
    assert_eq!(
        hex::encode_upper(device_key.expose()),
        field(&vector, "expect_initial_key").unwrap()
    );
    assert_eq!(wrapped.initial_key_id, id);
    assert!(
        wrapped
            .kcv
            .matches(&Kcv::compute(&device_key, KcvMethod::Cmac))
            .unwrap()
    );

    // Many derivation IDs, compared with the software derivation.
    let bdk = key(KeyAlgorithm::Aes128, BDK_A);
    for derivation_id in [
        [0, 0, 0, 0],
        [0, 0, 0, 1],
        [0xFF, 0xFF, 0xFF, 0xFF],
        [0x80, 1, 2, 3],
    ] {
        let wrapped = vault
            .wrap_initial_key("bdk-a", derivation_id, "transport")
            .await
            .unwrap();
        let expected = initial_key(&bdk, &wrapped.initial_key_id, KeyAlgorithm::Aes128).unwrap();
        assert!(
            open_block(&wrapped.key_block).ct_eq(&expected),
            "{derivation_id:?}"
        );
    }
}

/// An AES-256 BDK in the token derives AES-128 initial keys equal to the software derivation.
#[tokio::test]
async fn aes256_bdk_derives_in_token() {
    if !run_in_child("aes256_bdk_derives_in_token") {
        return;
    }
    let token = TestToken::new("derive-256");
    let db = TestDatabase::new().await;
    let vault = unsealed_vault(&db, &token.config).await;
    let bdk_hex = "FEDCBA9876543210F1F1F1F1F1F1F1F1FEDCBA9876543210F1F1F1F1F1F1F1F1";
    let bdk = key(KeyAlgorithm::Aes256, bdk_hex);
    store(&vault, &db, "bdk-256", KeyUsage::Bdk, &bdk).await;
    let transport = key(KeyAlgorithm::Aes256, TRANSPORT_KEY);
    store(&vault, &db, "transport", KeyUsage::TransportKey, &transport).await;

    let wrapped = vault
        .wrap_initial_key("bdk-256", [0x90, 0x12, 0x34, 0x56], "transport")
        .await
        .unwrap();

    let expected = initial_key(&bdk, &wrapped.initial_key_id, KeyAlgorithm::Aes128).unwrap();
    assert!(open_block(&wrapped.key_block).ct_eq(&expected));
}

/// Without in-token derivation the BDK is a key block under the token's master key, and the
/// station derives in memory; the result is the same.
#[tokio::test]
async fn fallback_derives_in_station_memory() {
    if !run_in_child("fallback_derives_in_station_memory") {
        return;
    }
    let token = TestToken::new("fallback");
    let config = Pkcs11Config {
        derive_in_token: false,
        ..token.config.clone()
    };
    let db = TestDatabase::new().await;
    let vault = unsealed_vault(&db, &config).await;
    assert!(!vault.token_report().unwrap().derives_in_token);
    let bdk = key(KeyAlgorithm::Aes128, BDK_A);
    store(&vault, &db, "bdk-a", KeyUsage::Bdk, &bdk).await;
    let transport = key(KeyAlgorithm::Aes256, TRANSPORT_KEY);
    store(&vault, &db, "transport", KeyUsage::TransportKey, &transport).await;

    let bdk_info = vault.key_info("bdk-a").await.unwrap();
    assert_eq!(bdk_info.storage, KeyStorage::KeyBlock);
    assert_eq!(bdk_info.token_serial, None);
    assert_eq!(
        vault.key_info("transport").await.unwrap().storage,
        KeyStorage::TokenObject
    );
    let probe = Token::open(&config).unwrap();
    assert!(probe.find_key("bdk-a").unwrap().is_none());

    let wrapped = vault
        .wrap_initial_key("bdk-a", [0x90, 0x12, 0x34, 0x56], "transport")
        .await
        .unwrap();

    assert_eq!(
        hex::encode_upper(open_block(&wrapped.key_block).expose()),
        "1273671EA26AC29AFA4D1084127652A1"
    );
}

/// Field case from a public bug report: the token returns no check value for an unwrapped key,
/// so the station computes it through the token and never shows an empty one.
#[tokio::test]
async fn unwrapped_key_gets_kcv_from_token() {
    if !run_in_child("unwrapped_key_gets_kcv_from_token") {
        return;
    }
    let token = TestToken::new("import");
    let db = TestDatabase::new().await;
    let vault = unsealed_vault(&db, &token.config).await;
    let kek_hex = "000102030405060708090A0B0C0D0E0F";
    store(
        &vault,
        &db,
        "host-kek",
        KeyUsage::Kek,
        &key(KeyAlgorithm::Aes128, kek_hex),
    )
    .await;

    // This AES key (the NIST SP 800-38B example key) has CMAC check value 7AD386. OpenSSL wraps
    // it with RFC 3394 AES key wrap.
    let clear = "2B7E151628AED2A6ABF7158809CF4F3C";
    let wrapped = openssl_key_wrap(kek_hex, clear);

    let mut tx = db.pool().begin().await.unwrap();
    let (outcome, kcv) = vault
        .import_wrapped_key(
            &mut tx,
            WrappedImport {
                label: "host-transport",
                usage: KeyUsage::TransportKey,
                algorithm: KeyAlgorithm::Aes128,
                bdk_id: None,
                kek_label: "host-kek",
                wrapped: &wrapped,
                expected_kcv: Some(Kcv::from_hex(KcvMethod::Cmac, "7AD386").unwrap()),
                ceremony_id: None,
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(outcome, StoreOutcome::Stored);
    assert_eq!(kcv.to_string(), "7AD386 (cmac)");
    let info = vault.key_info("host-transport").await.unwrap();
    assert_eq!(info.kcv.to_string(), "7AD386 (cmac)");
    assert_eq!(info.storage, KeyStorage::TokenObject);

    // The token itself has no check value for the unwrapped key.
    let probe = Token::open(&token.config).unwrap();
    let handle = probe.find_key("host-transport").unwrap().unwrap();
    assert_eq!(probe.kcv(handle).unwrap().to_hex(), "7AD386");
    let context = station::vault::pkcs11::context(&token.config.module).unwrap();
    let session = context
        .open_ro_session(slot_of(&context, "import"))
        .unwrap();
    session
        .login(UserType::User, Some(&SecretString::from(USER_PIN)))
        .or_else(|error| match error {
            cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _) => {
                Ok(())
            }
            other => Err(other),
        })
        .unwrap();
    let check_value = session
        .get_attributes(handle, &[cryptoki::object::AttributeType::CheckValue])
        .unwrap();
    assert!(
        check_value
            .iter()
            .all(|attribute| matches!(attribute, Attribute::CheckValue(value) if value.is_empty())),
        "SoftHSM2 unexpectedly returned a check value"
    );

    // A wrong expected check value rejects the import and leaves no object behind.
    let mut tx = db.pool().begin().await.unwrap();
    let error = vault
        .import_wrapped_key(
            &mut tx,
            WrappedImport {
                label: "bad-import",
                usage: KeyUsage::TransportKey,
                algorithm: KeyAlgorithm::Aes128,
                bdk_id: None,
                kek_label: "host-kek",
                wrapped: &wrapped,
                expected_kcv: Some(Kcv::from_hex(KcvMethod::Cmac, "000000").unwrap()),
                ceremony_id: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, VaultError::ImportKcvMismatch { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("7AD386 (cmac)"), "{error}");
    assert!(probe.find_key("bad-import").unwrap().is_none());
}

fn slot_of(context: &cryptoki::context::Pkcs11, label: &str) -> cryptoki::slot::Slot {
    context
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|slot| context.get_token_info(*slot).unwrap().label().trim_end() == label)
        .unwrap()
}

/// Wraps `key_hex` under `kek_hex` with `openssl enc -id-aes128-wrap` (RFC 3394).
fn openssl_key_wrap(kek_hex: &str, key_hex: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("key.bin");
    std::fs::write(&input, hex::decode(key_hex).unwrap()).unwrap();
    let output = Command::new("openssl")
        .args([
            "enc",
            "-id-aes128-wrap",
            "-e",
            "-K",
            kek_hex,
            "-iv",
            "A6A6A6A6A6A6A6A6",
            "-in",
        ])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout.len(), 24);
    output.stdout
}

#[tokio::test]
async fn sealed_token_vault_refuses_keys() {
    if !run_in_child("sealed_token_vault_refuses_keys") {
        return;
    }
    let token = TestToken::new("sealed");
    let db = TestDatabase::new().await;
    let mut vault = unsealed_vault(&db, &token.config).await;
    store(
        &vault,
        &db,
        "bdk-a",
        KeyUsage::Bdk,
        &key(KeyAlgorithm::Aes128, BDK_A),
    )
    .await;
    let transport = key(KeyAlgorithm::Aes256, TRANSPORT_KEY);
    store(&vault, &db, "transport", KeyUsage::TransportKey, &transport).await;

    vault.seal();

    assert!(vault.is_sealed());
    let error = vault
        .wrap_initial_key("bdk-a", [0, 0, 0, 1], "transport")
        .await
        .err()
        .unwrap();
    assert!(matches!(error, VaultError::Sealed), "{error}");
    assert!(error.to_string().contains("unseal"), "{error}");

    // A new process's vault starts sealed, and a wrong master key does not unseal it.
    let mut reopened = Vault::open_pkcs11(db.pool().clone(), &token.config).unwrap();
    assert!(reopened.is_sealed());
    let mut tx = db.pool().begin().await.unwrap();
    let error = reopened
        .unseal(&mut tx, key(KeyAlgorithm::Aes256, &"11".repeat(32)), None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, VaultError::WrongMasterKey { .. }),
        "{error}"
    );
    assert!(reopened.is_sealed());
    reopened
        .unseal(&mut tx, key(KeyAlgorithm::Aes256, MASTER_KEY), None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    reopened
        .wrap_initial_key("bdk-a", [0, 0, 0, 1], "transport")
        .await
        .unwrap();
}

/// A BDK derives device keys, a transport key wraps them, a KEK unwraps imports, and nothing
/// else. A token object whose template was changed outside the station is rejected too.
#[tokio::test]
async fn token_key_usage_is_enforced() {
    if !run_in_child("token_key_usage_is_enforced") {
        return;
    }
    let token = TestToken::new("usage");
    let db = TestDatabase::new().await;
    let vault = unsealed_vault(&db, &token.config).await;
    store(
        &vault,
        &db,
        "bdk-a",
        KeyUsage::Bdk,
        &key(KeyAlgorithm::Aes128, BDK_A),
    )
    .await;
    let transport = key(KeyAlgorithm::Aes256, TRANSPORT_KEY);
    store(&vault, &db, "transport", KeyUsage::TransportKey, &transport).await;

    let swapped = vault
        .wrap_initial_key("transport", [0, 0, 0, 1], "bdk-a")
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            swapped,
            VaultError::WrongUsage {
                expected: KeyUsage::Bdk,
                ..
            }
        ),
        "{swapped}"
    );
    assert!(swapped.to_string().contains("transport-key"), "{swapped}");

    let bdk_as_transport = vault
        .wrap_initial_key("bdk-a", [0, 0, 0, 1], "bdk-a")
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            bdk_as_transport,
            VaultError::WrongUsage {
                expected: KeyUsage::TransportKey,
                ..
            }
        ),
        "{bdk_as_transport}"
    );

    let mut tx = db.pool().begin().await.unwrap();
    let unwrap_under_bdk = vault
        .import_wrapped_key(
            &mut tx,
            WrappedImport {
                label: "imported",
                usage: KeyUsage::TransportKey,
                algorithm: KeyAlgorithm::Aes128,
                bdk_id: None,
                kek_label: "bdk-a",
                wrapped: &[0u8; 24],
                expected_kcv: None,
                ceremony_id: None,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            unwrap_under_bdk,
            VaultError::WrongUsage {
                expected: KeyUsage::Kek,
                ..
            }
        ),
        "{unwrap_under_bdk}"
    );
    drop(tx);

    // The token grants the BDK only derivation (and CMAC for its check value).
    let probe = Token::open(&token.config).unwrap();
    let bdk_handle = probe.find_key("bdk-a").unwrap().unwrap();
    let attributes = session_attributes(&token, bdk_handle);
    assert!(attributes.contains(&Attribute::Derive(true)));
    assert!(attributes.contains(&Attribute::Encrypt(false)));
    assert!(attributes.contains(&Attribute::Extractable(false)));
    assert!(attributes.contains(&Attribute::Sensitive(true)));

    // A key made outside the station with a looser template is refused before use.
    let context = station::vault::pkcs11::context(&token.config.module).unwrap();
    let session = context.open_rw_session(slot_of(&context, "usage")).unwrap();
    let loose = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(b"loose-bdk".to_vec()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::Sign(true),
            Attribute::Derive(true),
            Attribute::Value(hex::decode(BDK_A).unwrap()),
        ])
        .unwrap();
    let error = probe
        .check_template(
            "loose-bdk",
            loose,
            station::vault::pkcs11::TokenKeyUse::Derive,
        )
        .unwrap_err();
    assert!(
        matches!(
            error,
            Pkcs11Error::TemplateViolation {
                attribute: "CKA_EXTRACTABLE",
                ..
            }
        ),
        "{error}"
    );
    let mut tx = db.pool().begin().await.unwrap();
    let adopt = vault
        .store_key(
            &mut tx,
            "loose-bdk",
            KeyUsage::Bdk,
            &key(KeyAlgorithm::Aes128, BDK_A),
            Some([9, 9, 9, 9]),
            None,
        )
        .await
        .unwrap_err();
    assert!(adopt.to_string().contains("CKA_EXTRACTABLE"), "{adopt}");
}

fn session_attributes(token: &TestToken, handle: cryptoki::object::ObjectHandle) -> Vec<Attribute> {
    use cryptoki::object::AttributeType as T;
    let context = station::vault::pkcs11::context(&token.config.module).unwrap();
    let label = match &token.config.token {
        TokenSelector::Label(label) => label.clone(),
        TokenSelector::Serial(_) => unreachable!("test tokens are selected by label"),
    };
    let session = context.open_ro_session(slot_of(&context, &label)).unwrap();
    session
        .get_attributes(
            handle,
            &[T::Derive, T::Encrypt, T::Extractable, T::Sensitive],
        )
        .unwrap()
}

#[tokio::test]
async fn token_inventory_lists_keys() {
    if !run_in_child("token_inventory_lists_keys") {
        return;
    }
    let token = TestToken::new("inventory");
    let db = TestDatabase::new().await;
    let vault = unsealed_vault(&db, &token.config).await;
    store(
        &vault,
        &db,
        "bdk-a",
        KeyUsage::Bdk,
        &key(KeyAlgorithm::Aes128, BDK_A),
    )
    .await;
    let transport = key(KeyAlgorithm::Aes256, TRANSPORT_KEY);
    store(&vault, &db, "transport", KeyUsage::TransportKey, &transport).await;
    let mut tx = db.pool().begin().await.unwrap();
    station::audit::append(
        &mut tx,
        "station-test",
        &station::audit::AuditEvent {
            actor: "station".to_owned(),
            action: "vault.key-stored".to_owned(),
            subject: "bdk-a".to_owned(),
            outcome: station::audit::Outcome::Success,
            details: serde_json::json!({ "kcv": "E3A2B1" }),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let inventory = vault.inventory().await.unwrap();

    let labels: Vec<&str> = inventory
        .iter()
        .map(|entry| entry.key.label.as_str())
        .collect();
    assert_eq!(labels, ["bdk-a", "transport"]);
    let bdk = &inventory[0];
    assert_eq!(bdk.key.algorithm, KeyAlgorithm::Aes128);
    assert_eq!(bdk.key.usage, KeyUsage::Bdk);
    assert_eq!(bdk.key.status, KeyStatus::Active);
    assert_eq!(bdk.key.storage, KeyStorage::TokenObject);
    assert_eq!(
        bdk.key.kcv.to_string(),
        Kcv::compute(&key(KeyAlgorithm::Aes128, BDK_A), KcvMethod::Cmac).to_string()
    );
    assert_eq!(
        bdk.key.token_serial.as_deref(),
        Some(vault.token_report().unwrap().serial.as_str())
    );
    assert_eq!(bdk.creation_ceremony, None);
    assert_eq!(bdk.history.len(), 1);
    assert_eq!(bdk.history[0].action, "vault.key-stored");
    assert_eq!(bdk.history[0].outcome, "success");
    assert!(inventory[1].history.is_empty());
}

#[test]
fn config_file_is_validated() {
    let config = Pkcs11Config::from_toml(
        r#"
        module = "/usr/lib/softhsm/libsofthsm2.so"
        token_serial = "766bea21c18440b8"
        pin_env = "STATION_HSM_PIN"
        minimum_firmware = "2.6"
        "#,
    )
    .unwrap();
    assert_eq!(
        config.token,
        TokenSelector::Serial("766bea21c18440b8".to_owned())
    );
    assert_eq!(config.pin, PinSource::Env("STATION_HSM_PIN".to_owned()));
    assert_eq!(
        config.minimum_firmware,
        Some(FirmwareVersion { major: 2, minor: 6 })
    );
    assert!(config.derive_in_token);

    let cases = [
        (
            "module = \"m.so\"\npin_env = \"P\"\n",
            "give exactly one of token_label and token_serial",
        ),
        (
            "module = \"m.so\"\ntoken_label = \"a\"\ntoken_serial = \"b\"\npin_env = \"P\"\n",
            "give exactly one of token_label and token_serial",
        ),
        (
            "module = \"m.so\"\ntoken_label = \"a\"\n",
            "give exactly one of pin_file and pin_env",
        ),
        (
            "module = \"m.so\"\ntoken_label = \"a\"\npin_env = \"P\"\nminimum_firmware = \"two\"\n",
            "firmware version \"two\" is invalid",
        ),
        (
            "module = \"m.so\"\ntoken_label = \"a\"\npin_env = \"P\"\npin = \"1234\"\n",
            "unknown field `pin`",
        ),
    ];
    for (text, expected) in cases {
        let error = Pkcs11Config::from_toml(text).unwrap_err();
        assert!(error.to_string().contains(expected), "{text}: {error}");
    }
}

/// A data folder with `hsm.toml` opens the PKCS#11 vault, and `station keys list` shows the
/// token's model and firmware.
#[tokio::test]
async fn data_dir_config_selects_token() {
    if !run_in_child("data_dir_config_selects_token") {
        return;
    }
    let token = TestToken::new("station");
    let data_dir = tempfile::tempdir().unwrap();
    let PinSource::File(pin_file) = &token.config.pin else {
        unreachable!("test tokens use a PIN file");
    };
    std::fs::write(
        data_dir.path().join(station::vault::HSM_CONFIG_FILE),
        format!(
            "module = {:?}\ntoken_label = \"station\"\npin_file = {:?}\nminimum_firmware = \"99.0\"\n",
            token.config.module, pin_file
        ),
    )
    .unwrap();
    let db = TestDatabase::new().await;

    let vault = Vault::open(db.pool().clone(), data_dir.path()).unwrap();
    let report = vault.token_report().unwrap();
    assert_eq!(report.label, "station");
    assert!(vault.is_sealed());
    let software = Vault::open(db.pool().clone(), Path::new("/nonexistent")).unwrap();
    assert!(software.token_report().is_none());

    // `keys list` reads an existing station database only, so create the data folder's cluster.
    station::db::Database::open(data_dir.path(), None)
        .await
        .unwrap()
        .close()
        .await;
    let output = Command::new(env!("CARGO_BIN_EXE_station"))
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(["keys", "list"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("SoftHSM project SoftHSM v2"), "{stdout}");
    assert!(stdout.contains("firmware 2."), "{stdout}");
    assert!(
        stdout.contains("WARNING: firmware is older than the configured minimum 99.0"),
        "{stdout}"
    );
    assert!(!stdout.contains(USER_PIN), "{stdout}");
    assert!(!stderr.contains(USER_PIN), "the PIN appears in the log");
}

/// The shipped line ceremony loads its keys into the token with `C_CreateObject`. The inventory
/// names the ceremony and its audit events, and the loaded keys derive and wrap a device key.
#[tokio::test]
async fn line_ceremony_loads_token_keys() {
    if !run_in_child("line_ceremony_loads_token_keys") {
        return;
    }
    let token = TestToken::new("line");
    let db = TestDatabase::new().await;
    let envelopes = Envelopes::new();
    let mut vault = Vault::open_pkcs11(db.pool().clone(), &token.config).unwrap();

    run_line_ceremony(
        &db,
        &mut vault,
        &envelopes.all_paths(),
        &line_participants(),
    )
    .await
    .unwrap();

    let probe = Token::open(&token.config).unwrap();
    for label in ["station-master-key", "line-bdk", "line-transport"] {
        assert!(probe.find_key(label).unwrap().is_some(), "{label}");
    }
    let inventory = vault.inventory().await.unwrap();
    assert_eq!(inventory.len(), 2);
    for entry in &inventory {
        let label = &entry.key.label;
        assert_eq!(entry.key.storage, KeyStorage::TokenObject, "{label}");
        let ceremony = entry.creation_ceremony.as_ref().expect("creation ceremony");
        assert!(!ceremony.script_name.is_empty(), "{label}");
        let actions: Vec<&str> = entry
            .history
            .iter()
            .map(|event| event.action.as_str())
            .collect();
        assert!(
            actions.contains(&"vault.key-stored"),
            "{label}: {actions:?}"
        );
    }

    if vault.is_sealed() {
        let mut tx = db.pool().begin().await.unwrap();
        vault
            .unseal(&mut tx, envelopes.master.duplicate(), None)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let wrapped = vault
        .wrap_initial_key("line-bdk", [0, 0, 0, 7], "line-transport")
        .await
        .unwrap();
    let (_, device_key) = tr31::unwrap(&envelopes.transport, &wrapped.key_block).unwrap();
    let expected = initial_key(
        &envelopes.bdk,
        &wrapped.initial_key_id,
        KeyAlgorithm::Aes128,
    )
    .unwrap();
    assert!(device_key.ct_eq(&expected));
    assert_eq!(wrapped.initial_key_id.to_hex(), "5A1E000100000007");
}

/// `station ceremony run` with `hsm.toml` in the data folder loads the line keys into the token,
/// and `station keys list` shows them as token objects.
#[tokio::test]
async fn cli_ceremony_loads_token_keys() {
    if !run_in_child("cli_ceremony_loads_token_keys") {
        return;
    }
    let token = TestToken::new("cli");
    let data_dir = tempfile::tempdir().unwrap();
    let PinSource::File(pin_file) = &token.config.pin else {
        unreachable!("test tokens use a PIN file");
    };
    std::fs::write(
        data_dir.path().join(station::vault::HSM_CONFIG_FILE),
        format!(
            "module = {:?}\ntoken_label = \"cli\"\npin_file = {:?}\n",
            token.config.module, pin_file
        ),
    )
    .unwrap();
    let envelopes = Envelopes::new();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ceremony-scripts/load-line-keys.toml");
    let station = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_station"))
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(args)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    };
    let mut args = vec![
        "ceremony".to_owned(),
        "run".to_owned(),
        script.display().to_string(),
    ];
    for participant in ["alice=custodian", "bob=custodian", "carol=witness"] {
        args.extend(["--participant".to_owned(), participant.to_owned()]);
    }
    for path in envelopes.all_paths() {
        args.extend(["--component".to_owned(), path.display().to_string()]);
    }
    for step in ["1=carol", "5=carol"] {
        args.extend(["--attest".to_owned(), step.to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let output = station(&args);

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let output = station(&["keys", "list"]);
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{listing}");
    assert!(listing.contains("SoftHSM v2"), "{listing}");
    for label in ["line-bdk", "line-transport"] {
        let line = listing
            .lines()
            .find(|line| line.starts_with(label))
            .unwrap_or_else(|| panic!("{label} is not listed:\n{listing}"));
        assert!(line.ends_with("token-object"), "{line}");
    }
    let probe = Token::open(&token.config).unwrap();
    assert!(probe.find_key("line-bdk").unwrap().is_some());
    assert!(probe.find_key("station-master-key").unwrap().is_some());
}

/// Terminals provisioned from a token vault, over a pre-shared transport key and over an ECDH
/// session, store the initial key that the software derivation gives. A sealed token vault
/// provisions nothing.
#[tokio::test]
async fn token_vault_provisions_terminal() {
    use std::sync::Arc;

    use station::crypto::kcv::Kcv;
    use station::link::SerialLink;
    use station::protocol::{ReferenceDriver, TerminalDriver};
    use station::provision::{
        DeviceProfiles, INITIAL_KEY_SLOT, LineConfig, ProvisionError, StationPki, provision_device,
    };
    use station::terminal::{DeviceState, SimulatorConfig, TerminalIdentity, spawn_pty_simulator};

    if !run_in_child("token_vault_provisions_terminal") {
        return;
    }
    let token = TestToken::new("provision");
    let db = TestDatabase::new().await;
    let envelopes = Envelopes::new();
    let mut vault = Vault::open_pkcs11(db.pool().clone(), &token.config).unwrap();
    run_line_ceremony(
        &db,
        &mut vault,
        &envelopes.all_paths(),
        &line_participants(),
    )
    .await
    .unwrap();
    if vault.is_sealed() {
        let mut tx = db.pool().begin().await.unwrap();
        vault
            .unseal(&mut tx, envelopes.master.duplicate(), None)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let mut profiles = DeviceProfiles::default();
    profiles
        .add(
            "tv-1.toml",
            "vendor = \"Test Vendor\"\nmodel = \"TV-1\"\nkey_exchange = \"pre-shared\"\n\
             transport_key = \"line-transport\"\nslot = 1\nbaud = 115200\n",
        )
        .unwrap();
    profiles
        .add(
            "tv-2.toml",
            "vendor = \"Test Vendor\"\nmodel = \"TV-2\"\nkey_exchange = \"ecdh-p384\"\n\
             slot = 1\nbaud = 115200\n",
        )
        .unwrap();
    let line = LineConfig {
        station_id: "station-test".to_owned(),
        actor: "operator-1".to_owned(),
        bdk_label: "line-bdk".to_owned(),
        profiles: Arc::new(profiles),
        pki: Some(Arc::new(
            StationPki::create_in_memory("station-test").unwrap(),
        )),
    };
    let state_dir = tempfile::tempdir().unwrap();
    let terminal = |serial: &str| {
        let identity = TerminalIdentity {
            vendor: "Test Vendor".to_owned(),
            model: "TV-1".to_owned(),
            serial_number: serial.to_owned(),
            firmware_version: "0.9".to_owned(),
        };
        let state_path = state_dir.path().join(format!("{serial}.json"));
        let config = SimulatorConfig::new(
            identity,
            envelopes.transport.duplicate(),
            state_path.clone(),
        );
        (spawn_pty_simulator(config).unwrap(), state_path)
    };
    let driver = |path: &str| -> Box<dyn TerminalDriver> {
        let link = SerialLink::open(path, 115_200).unwrap();
        Box::new(ReferenceDriver::over(Box::new(link)))
    };

    let (simulator, state_path) = terminal("SN-HSM-1");
    let report = provision_device(db.pool(), &vault, &line, driver(simulator.device_path()))
        .await
        .unwrap();
    simulator.stop().unwrap();

    let expected =
        initial_key(&envelopes.bdk, &report.initial_key_id, KeyAlgorithm::Aes128).unwrap();
    let state = DeviceState::load(&state_path).unwrap();
    let stored = state.key_in_slot(INITIAL_KEY_SLOT).unwrap();
    assert!(stored.key.ct_eq(&expected));
    assert!(
        report
            .kcv
            .matches(&Kcv::compute(&expected, KcvMethod::Cmac))
            .unwrap()
    );

    // The ECDH session path derives in the token too, and wraps under the session's KBPK.
    let identity = TerminalIdentity {
        vendor: "Test Vendor".to_owned(),
        model: "TV-2".to_owned(),
        serial_number: "SN-HSM-ECC".to_owned(),
        firmware_version: "2.0".to_owned(),
    };
    let ecc_state_path = state_dir.path().join("SN-HSM-ECC.json");
    let ecc_simulator =
        spawn_pty_simulator(SimulatorConfig::with_ecc(identity, ecc_state_path.clone())).unwrap();
    let report = provision_device(
        db.pool(),
        &vault,
        &line,
        driver(ecc_simulator.device_path()),
    )
    .await
    .unwrap();
    ecc_simulator.stop().unwrap();
    let expected =
        initial_key(&envelopes.bdk, &report.initial_key_id, KeyAlgorithm::Aes128).unwrap();
    let state = DeviceState::load(&ecc_state_path).unwrap();
    assert!(
        state
            .key_in_slot(INITIAL_KEY_SLOT)
            .unwrap()
            .key
            .ct_eq(&expected)
    );

    vault.seal();
    let (sealed_terminal, sealed_state) = terminal("SN-HSM-SEALED");
    let error = provision_device(
        db.pool(),
        &vault,
        &line,
        driver(sealed_terminal.device_path()),
    )
    .await
    .unwrap_err();
    sealed_terminal.stop().unwrap();
    assert!(
        matches!(error, ProvisionError::Vault(VaultError::Sealed)),
        "{error}"
    );
    assert!(error.to_string().contains("unseal"), "{error}");
    let state = DeviceState::load(&sealed_state).unwrap();
    assert!(state.key_in_slot(INITIAL_KEY_SLOT).is_none());
}

/// The token computes CMACs under the master key that match the software CMAC, so the factory
/// CA's key wrap works with the master key kept in the token.
#[tokio::test]
async fn factory_ca_key_wraps_under_token_master() {
    use station::pki::store::{self, AuditActor};
    use station::pki::{FactoryCa, ValidityPeriod};

    if !run_in_child("factory_ca_key_wraps_under_token_master") {
        return;
    }
    let token = TestToken::new("pki");
    let db = TestDatabase::new().await;
    let vault = unsealed_vault(&db, &token.config).await;

    let input = b"station factory CA key wrap test input";
    let from_token = vault.master_cmac(input).unwrap();
    let in_memory = station::crypto::mac::cmac(&key(KeyAlgorithm::Aes256, MASTER_KEY), input);
    assert_eq!(from_token.as_slice(), in_memory.as_slice());

    let ca = FactoryCa::create(
        "CN=Token Factory CA,O=Example Devices",
        ValidityPeriod::from_now(std::time::Duration::from_secs(3600 * 24 * 365)),
    )
    .unwrap();
    let actor = AuditActor {
        station_id: "station-test",
        actor: "operator:test",
    };
    let mut tx = db.pool().begin().await.unwrap();
    store::save_ca(&mut tx, &vault, "factory-ca", &ca, None, &actor)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut conn = db.pool().acquire().await.unwrap();
    let loaded = store::load_ca(&mut conn, &vault, "factory-ca")
        .await
        .unwrap();
    assert_eq!(loaded.certificate().der(), ca.certificate().der());
    assert_eq!(
        loaded.private_key().public_key(),
        ca.private_key().public_key()
    );
}
