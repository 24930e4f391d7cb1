//! Integration tests: provisioning simulated terminals on pseudo-terminal serial links, with a
//! real PostgreSQL cluster and the vault loaded by the line ceremony.

use std::path::PathBuf;

use station::crypto::kcv::{Kcv, KcvMethod};
use station::crypto::{KeyAlgorithm, SecretKey};
use station::db::testing::TestDatabase;
use std::sync::Arc;

use station::link::SerialLink;
use station::protocol::{ReferenceDriver, TerminalDriver};
use station::provision::{
    self, DeviceProfiles, INITIAL_KEY_SLOT, LineConfig, ProvisionError, StationPki,
};
use station::terminal::{
    DeviceState, SimulatorConfig, SimulatorHandle, TerminalIdentity, spawn_pty_simulator,
};
use station::vault::{Vault, VaultError};

use crate::ceremony::{Envelopes, line_participants, run_line_ceremony};

struct Line {
    db: TestDatabase,
    envelopes: Envelopes,
    vault: Vault,
    state_dir: tempfile::TempDir,
}

impl Line {
    /// A station whose vault the line ceremony has loaded.
    async fn new() -> Self {
        let db = TestDatabase::new().await;
        let envelopes = Envelopes::new();
        let mut vault = Vault::new(db.pool().clone());
        run_line_ceremony(
            &db,
            &mut vault,
            &envelopes.all_paths(),
            &line_participants(),
        )
        .await
        .unwrap();
        Self {
            db,
            envelopes,
            vault,
            state_dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config() -> LineConfig {
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
        LineConfig {
            station_id: "station-test".to_owned(),
            actor: "operator-1".to_owned(),
            bdk_label: "line-bdk".to_owned(),
            profiles: Arc::new(profiles),
            pki: Some(Arc::new(
                StationPki::create_in_memory("station-test").unwrap(),
            )),
        }
    }

    fn terminal(&self, serial: &str, transport_key: SecretKey) -> (SimulatorHandle, PathBuf) {
        let identity = TerminalIdentity {
            vendor: "Test Vendor".to_owned(),
            model: "TV-1".to_owned(),
            serial_number: serial.to_owned(),
            firmware_version: "0.9".to_owned(),
        };
        let state_path = self.state_dir.path().join(format!("{serial}.json"));
        let config = SimulatorConfig::new(identity, transport_key, state_path.clone());
        (spawn_pty_simulator(config).unwrap(), state_path)
    }

    async fn provision(
        &self,
        simulator: &SimulatorHandle,
    ) -> Result<provision::ProvisionReport, ProvisionError> {
        provision::provision_device(
            self.db.pool(),
            &self.vault,
            &Self::config(),
            driver(simulator.device_path()),
        )
        .await
    }

    async fn injection_states(&self) -> Vec<(i64, String)> {
        sqlx::query_as("SELECT derivation_id, state FROM injection ORDER BY id")
            .fetch_all(self.db.pool())
            .await
            .unwrap()
    }
}

/// The reference protocol's driver on the serial port at `path`.
fn driver(path: &str) -> Box<dyn TerminalDriver> {
    let link = SerialLink::open(path, 115_200).unwrap();
    Box::new(ReferenceDriver::over(Box::new(link)))
}

#[tokio::test]
async fn terminal_gets_the_derived_key() {
    let line = Line::new().await;
    let (simulator, state_path) = line.terminal("SN-0001", line.envelopes.transport.duplicate());

    let report = line.provision(&simulator).await.unwrap();

    assert_eq!(report.device.serial, "SN-0001");
    assert_eq!(report.initial_key_id.to_hex(), "5A1E000100000001");
    // The terminal holds exactly the AES DUKPT initial key of that ID under the ceremony's BDK.
    let expected = station::crypto::dukpt::aes::initial_key(
        &line.envelopes.bdk,
        &report.initial_key_id,
        KeyAlgorithm::Aes128,
    )
    .unwrap();
    let state = DeviceState::load(&state_path).unwrap();
    let stored = state.key_in_slot(INITIAL_KEY_SLOT).unwrap();
    assert!(stored.key.ct_eq(&expected));
    assert!(
        report
            .kcv
            .matches(&Kcv::compute(&expected, KcvMethod::Cmac))
            .unwrap()
    );
    assert_eq!(line.injection_states().await, [(1, "confirmed".to_owned())]);
    simulator.stop().unwrap();
}

#[tokio::test]
async fn wrong_transport_key_burns_identity() {
    let line = Line::new().await;
    let wrong_key = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    let (bad_terminal, bad_state) = line.terminal("SN-BAD", wrong_key);

    let error = line.provision(&bad_terminal).await.unwrap_err();

    assert!(matches!(error, ProvisionError::Session(_)), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("SN-BAD") || message.contains(bad_terminal.device_path()),
        "{message}"
    );
    let state = DeviceState::load(&bad_state).unwrap();
    assert!(state.key_in_slot(INITIAL_KEY_SLOT).is_none());
    bad_terminal.stop().unwrap();

    // The failed injection keeps its identity, burned; the next terminal gets a new one.
    let (good_terminal, _) = line.terminal("SN-GOOD", line.envelopes.transport.duplicate());
    let report = line.provision(&good_terminal).await.unwrap();
    assert_eq!(report.initial_key_id.to_hex(), "5A1E000100000002");
    assert_eq!(
        line.injection_states().await,
        [(1, "failed".to_owned()), (2, "confirmed".to_owned())]
    );
    let error_text: String =
        sqlx::query_scalar("SELECT error FROM injection WHERE derivation_id = 1")
            .fetch_one(line.db.pool())
            .await
            .unwrap();
    assert!(!error_text.is_empty());
    let audit = station::audit::verify(line.db.pool()).await.unwrap();
    assert!(audit.is_intact(), "{audit}");
    good_terminal.stop().unwrap();
}

#[tokio::test]
async fn sealed_vault_refuses_to_provision() {
    let mut line = Line::new().await;
    line.vault.seal();
    let (simulator, _) = line.terminal("SN-SEALED", line.envelopes.transport.duplicate());

    let error = line.provision(&simulator).await.unwrap_err();

    assert!(
        matches!(error, ProvisionError::Vault(VaultError::Sealed)),
        "{error}"
    );
    assert!(error.to_string().contains("unseal"), "{error}");
    assert!(line.injection_states().await.is_empty());
    simulator.stop().unwrap();
}

#[tokio::test]
async fn transport_key_is_not_a_bdk() {
    let line = Line::new().await;
    let (simulator, _) = line.terminal("SN-0002", line.envelopes.transport.duplicate());
    let mut config = Line::config();
    config.bdk_label = "line-transport".to_owned();

    let error = provision::provision_device(
        line.db.pool(),
        &line.vault,
        &config,
        driver(simulator.device_path()),
    )
    .await
    .unwrap_err();

    assert!(matches!(error, ProvisionError::NotABdk(_)), "{error}");
    assert!(line.injection_states().await.is_empty());
    simulator.stop().unwrap();
}

#[tokio::test]
async fn many_terminals_get_distinct_identities() {
    let line = Line::new().await;
    let mut simulators = Vec::new();
    let mut links: Vec<Box<dyn TerminalDriver>> = Vec::new();
    for number in 0..6 {
        let (simulator, _) = line.terminal(
            &format!("SN-{number:04}"),
            line.envelopes.transport.duplicate(),
        );
        links.push(driver(simulator.device_path()));
        simulators.push(simulator);
    }
    let vault = std::sync::Arc::new(line.vault);

    let results = provision::provision_all(line.db.pool(), vault, &Line::config(), links).await;

    let mut ids: Vec<String> = results
        .into_iter()
        .map(|result| result.unwrap().initial_key_id.to_hex())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6);
    for simulator in simulators {
        simulator.stop().unwrap();
    }
}

impl Line {
    /// A version 2 terminal of model TV-2 that generates its key pair on board.
    fn ecc_terminal(
        &self,
        serial: &str,
        configure: impl FnOnce(&mut SimulatorConfig),
    ) -> (SimulatorHandle, PathBuf) {
        let identity = TerminalIdentity {
            vendor: "Test Vendor".to_owned(),
            model: "TV-2".to_owned(),
            serial_number: serial.to_owned(),
            firmware_version: "2.0".to_owned(),
        };
        let state_path = self.state_dir.path().join(format!("{serial}.json"));
        let mut config = SimulatorConfig::with_ecc(identity, state_path.clone());
        configure(&mut config);
        (spawn_pty_simulator(config).unwrap(), state_path)
    }

    async fn provision_with(
        &self,
        config: &LineConfig,
        simulator: &SimulatorHandle,
    ) -> Result<provision::ProvisionReport, ProvisionError> {
        provision::provision_device(
            self.db.pool(),
            &self.vault,
            config,
            driver(simulator.device_path()),
        )
        .await
    }

    /// Outcome and details of the audit events with `action`, in order.
    async fn audit_events(&self, action: &str) -> Vec<(String, serde_json::Value)> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT outcome, details_json FROM audit_event WHERE action = $1 ORDER BY seq",
        )
        .bind(action)
        .fetch_all(self.db.pool())
        .await
        .unwrap();
        rows.into_iter()
            .map(|(outcome, details)| (outcome, serde_json::from_str(&details).unwrap()))
            .collect()
    }
}

#[tokio::test]
async fn ecc_terminal_is_certified_and_loaded() {
    let line = Line::new().await;
    let config = Line::config();
    let (simulator, state_path) = line.ecc_terminal("SN-ECC1", |_| {});

    let report = line.provision_with(&config, &simulator).await.unwrap();

    let provision::TransportMethod::KeyExchange {
        device_certificate,
        transcript_hash,
    } = &report.method
    else {
        panic!("loaded without the key exchange: {:?}", report.method);
    };
    let expected = station::crypto::dukpt::aes::initial_key(
        &line.envelopes.bdk,
        &report.initial_key_id,
        KeyAlgorithm::Aes128,
    )
    .unwrap();
    let state = DeviceState::load(&state_path).unwrap();
    assert!(
        state
            .key_in_slot(INITIAL_KEY_SLOT)
            .unwrap()
            .key
            .ct_eq(&expected)
    );

    // The certificate the terminal stored is the one the audit trail names.
    let certificate = &state.certificate_chain[0];
    let fingerprint = hex::encode_upper(<sha2::Sha256 as sha2::Digest>::digest(certificate));
    assert_eq!(*device_certificate, fingerprint);
    let issued = line.audit_events("terminal.certificate_issued").await;
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].0, "success");
    assert_eq!(issued[0].1["certificate_fingerprint"], fingerprint);
    assert_eq!(issued[0].1["serial_number"], "SN-ECC1");
    let exchanges = line.audit_events("terminal.key_exchange").await;
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].0, "success");
    assert_eq!(exchanges[0].1["transcript_hash"], transcript_hash.as_str());
    assert_eq!(
        exchanges[0].1["station_certificate_fingerprint"],
        config.pki.as_ref().unwrap().station_fingerprint()
    );
    assert_eq!(line.injection_states().await, [(1, "confirmed".to_owned())]);

    // OpenSSL, an independent implementation, accepts the issued certificate under the CA.
    let directory = tempfile::tempdir().unwrap();
    let ca_path = directory.path().join("ca.pem");
    let device_path = directory.path().join("device.pem");
    std::fs::write(
        &ca_path,
        config.pki.as_ref().unwrap().ca.certificate().to_pem(),
    )
    .unwrap();
    std::fs::write(
        &device_path,
        station::pki::ParsedCertificate::from_der(certificate, 1)
            .unwrap()
            .to_pem(),
    )
    .unwrap();
    let output = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&ca_path)
        .arg(&device_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    simulator.stop().unwrap();
}

#[tokio::test]
async fn certified_terminal_is_validated_next_time() {
    let line = Line::new().await;
    let config = Line::config();
    let (simulator, _) = line.ecc_terminal("SN-ECC2", |_| {});
    line.provision_with(&config, &simulator).await.unwrap();

    let report = line.provision_with(&config, &simulator).await.unwrap();

    assert!(matches!(
        report.method,
        provision::TransportMethod::KeyExchange { .. }
    ));
    assert_eq!(
        line.audit_events("terminal.certificate_issued").await.len(),
        1
    );
    let validated = line.audit_events("terminal.certificate_validated").await;
    assert_eq!(validated.len(), 1);
    assert_eq!(validated[0].0, "success");
    simulator.stop().unwrap();
}

#[tokio::test]
async fn bad_certificate_is_rejected_before_allocation() {
    let line = Line::new().await;
    let config = Line::config();
    let (simulator, state_path) = line.ecc_terminal("SN-ECC3", |_| {});
    line.provision_with(&config, &simulator).await.unwrap();
    simulator.stop().unwrap();
    let (impostor, _) = line.ecc_terminal("SN-ECC3", |config| {
        config.faults.bad_certificate = true;
    });

    let error = line.provision_with(&config, &impostor).await.unwrap_err();

    assert!(
        matches!(
            error,
            ProvisionError::Certificate {
                source: station::pki::PkiError::UntrustedIssuer { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("not a configured root"),
        "{error}"
    );
    let validated = line.audit_events("terminal.certificate_validated").await;
    assert_eq!(validated.len(), 1);
    assert_eq!(validated[0].0, "failure");
    // Only the first, successful provisioning allocated an identity.
    assert_eq!(line.injection_states().await, [(1, "confirmed".to_owned())]);
    assert!(
        DeviceState::load(&state_path)
            .unwrap()
            .key_in_slot(INITIAL_KEY_SLOT)
            .is_some()
    );
    impostor.stop().unwrap();
}

#[tokio::test]
async fn wrong_signature_stops_before_allocation() {
    let line = Line::new().await;
    let config = Line::config();
    let (simulator, state_path) = line.ecc_terminal("SN-ECC4", |config| {
        config.faults.wrong_signature = true;
    });

    let error = line.provision_with(&config, &simulator).await.unwrap_err();

    assert!(
        matches!(
            error,
            ProvisionError::Session(
                station::protocol::SessionError::TerminalSignatureInvalid { .. }
            )
        ),
        "{error}"
    );
    let exchanges = line.audit_events("terminal.key_exchange").await;
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].0, "failure");
    assert!(line.injection_states().await.is_empty());
    assert!(
        DeviceState::load(&state_path)
            .unwrap()
            .key_in_slot(INITIAL_KEY_SLOT)
            .is_none()
    );
    simulator.stop().unwrap();
}

#[tokio::test]
async fn model_without_profile_is_rejected() {
    let line = Line::new().await;
    let identity = TerminalIdentity {
        vendor: "Test Vendor".to_owned(),
        model: "TV-9".to_owned(),
        serial_number: "SN-0009".to_owned(),
        firmware_version: "1".to_owned(),
    };
    let config = SimulatorConfig::new(
        identity,
        line.envelopes.transport.duplicate(),
        line.state_dir.path().join("tv9.json"),
    );
    let simulator = spawn_pty_simulator(config).unwrap();

    let error = line.provision(&simulator).await.unwrap_err();

    assert_eq!(
        error.to_string(),
        "no device profile describes Test Vendor TV-9; add a profile for the model to the device \
         profiles folder before provisioning it"
    );
    assert!(line.injection_states().await.is_empty());
    simulator.stop().unwrap();
}

#[tokio::test]
async fn ecc_profile_rejects_version_1_terminal() {
    let line = Line::new().await;
    let identity = TerminalIdentity {
        vendor: "Test Vendor".to_owned(),
        model: "TV-2".to_owned(),
        serial_number: "SN-0010".to_owned(),
        firmware_version: "1".to_owned(),
    };
    let config = SimulatorConfig::new(
        identity,
        line.envelopes.transport.duplicate(),
        line.state_dir.path().join("old.json"),
    );
    let simulator = spawn_pty_simulator(config).unwrap();

    let error = line.provision(&simulator).await.unwrap_err();

    assert!(
        matches!(
            error,
            ProvisionError::KeyExchangeUnsupported { version: 1, .. }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("update the terminal's firmware"),
        "{error}"
    );
    simulator.stop().unwrap();
}

#[tokio::test]
async fn stored_factory_ca_survives_restart() {
    let line = Line::new().await;
    let open = || async {
        let mut config = Line::config();
        config.pki = Some(Arc::new(
            StationPki::open_or_create(
                line.db.pool(),
                &line.vault,
                "station-test",
                "factory-ca",
                "operator-1",
                station::pki::TrustedRoots::new(),
            )
            .await
            .unwrap(),
        ));
        config
    };
    let (simulator, _) = line.ecc_terminal("SN-ECC5", |_| {});
    let first = open().await;
    line.provision_with(&first, &simulator).await.unwrap();

    // A restarted station loads the same CA, so the terminal's certificate still validates.
    let second = open().await;
    let report = line.provision_with(&second, &simulator).await.unwrap();

    assert_eq!(
        first.pki.as_ref().unwrap().ca.certificate().fingerprint(),
        second.pki.as_ref().unwrap().ca.certificate().fingerprint()
    );
    assert!(matches!(
        report.method,
        provision::TransportMethod::KeyExchange { .. }
    ));
    let roles: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT role, device_serial FROM issued_certificate ORDER BY issued_at, role",
    )
    .fetch_all(line.db.pool())
    .await
    .unwrap();
    assert_eq!(
        roles.iter().filter(|(role, _)| role == "station").count(),
        2,
        "{roles:?}"
    );
    assert!(
        roles.contains(&("device".to_owned(), Some("SN-ECC5".to_owned()))),
        "{roles:?}"
    );
    assert_eq!(line.audit_events("pki.ca.created").await.len(), 1);
    simulator.stop().unwrap();
}

#[tokio::test]
async fn unplug_mid_load_burns_identity_and_replug_works() {
    let line = Line::new().await;
    let config = Line::config();
    // A stable name for the port, as /dev/serial/by-id gives a USB serial terminal.
    let port = line.state_dir.path().join("line-port-1");
    let (first, first_state) = line.ecc_terminal("SN-UNPLUG", |config| {
        config.faults.disconnect_mid_load_result = true;
    });
    std::os::unix::fs::symlink(first.device_path(), &port).unwrap();
    let port_name = port.to_str().unwrap().to_owned();

    let error =
        provision::provision_device(line.db.pool(), &line.vault, &config, driver(&port_name))
            .await
            .unwrap_err();

    assert!(error.to_string().contains("disconnected"), "{error}");
    assert_eq!(line.injection_states().await, [(1, "failed".to_owned())]);
    // The terminal stored the key before it was unplugged; its identity is burned, never reused.
    assert!(
        DeviceState::load(&first_state)
            .unwrap()
            .key_in_slot(INITIAL_KEY_SLOT)
            .is_some()
    );
    first.stop().unwrap();

    let (second, _) = line.ecc_terminal("SN-REPLUG", |_| {});
    std::fs::remove_file(&port).unwrap();
    std::os::unix::fs::symlink(second.device_path(), &port).unwrap();
    let report =
        provision::provision_device(line.db.pool(), &line.vault, &config, driver(&port_name))
            .await
            .unwrap();

    assert_eq!(report.device.serial, "SN-REPLUG");
    assert_eq!(report.initial_key_id.to_hex(), "5A1E000100000002");
    assert_eq!(
        line.injection_states().await,
        [(1, "failed".to_owned()), (2, "confirmed".to_owned())]
    );
    second.stop().unwrap();
}
