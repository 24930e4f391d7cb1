//! Integration tests: provisioning simulated terminals on pseudo-terminal serial links, with a
//! real PostgreSQL cluster and the vault loaded by the line ceremony.

use std::path::PathBuf;

use station::crypto::kcv::{Kcv, KcvMethod};
use station::crypto::{KeyAlgorithm, SecretKey};
use station::db::testing::TestDatabase;
use station::link::SerialLink;
use station::provision::{self, INITIAL_KEY_SLOT, LineConfig, ProvisionError};
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
        LineConfig {
            station_id: "station-test".to_owned(),
            actor: "operator-1".to_owned(),
            bdk_label: "line-bdk".to_owned(),
            transport_label: "line-transport".to_owned(),
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
        let link = SerialLink::open(simulator.device_path(), 115_200).unwrap();
        provision::provision_device(self.db.pool(), &self.vault, &Self::config(), Box::new(link))
            .await
    }

    async fn injection_states(&self) -> Vec<(i64, String)> {
        sqlx::query_as("SELECT derivation_id, state FROM injection ORDER BY id")
            .fetch_all(self.db.pool())
            .await
            .unwrap()
    }
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
    let link = SerialLink::open(simulator.device_path(), 115_200).unwrap();
    let mut config = Line::config();
    config.bdk_label = "line-transport".to_owned();

    let error = provision::provision_device(line.db.pool(), &line.vault, &config, Box::new(link))
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
    let mut links: Vec<Box<dyn station::link::Link>> = Vec::new();
    for number in 0..6 {
        let (simulator, _) = line.terminal(
            &format!("SN-{number:04}"),
            line.envelopes.transport.duplicate(),
        );
        links.push(Box::new(
            SerialLink::open(simulator.device_path(), 115_200).unwrap(),
        ));
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
