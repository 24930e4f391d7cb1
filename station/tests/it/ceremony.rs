//! Integration tests: key ceremonies and the vault, against a real PostgreSQL cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use station::ceremony::{
    self, CeremonyError, CeremonyScript, ComponentFile, FileInputs, MASTER_KEY_LABEL, Participant,
    Role,
};
use station::crypto::kcv::{Kcv, KcvMethod};
use station::crypto::{KeyAlgorithm, SecretKey, components};
use station::db::testing::TestDatabase;
use station::vault::{KeyUsage, Vault, VaultError};

pub const LINE_SCRIPT: &str = include_str!("../../../ceremony-scripts/load-line-keys.toml");

/// The keys of one ceremony, split into components for alice and bob in a temporary folder.
pub struct Envelopes {
    pub dir: tempfile::TempDir,
    pub master: SecretKey,
    pub bdk: SecretKey,
    pub transport: SecretKey,
}

impl Envelopes {
    pub fn new() -> Self {
        let envelopes = Self {
            dir: tempfile::tempdir().unwrap(),
            master: SecretKey::generate(KeyAlgorithm::Aes256).unwrap(),
            bdk: SecretKey::generate(KeyAlgorithm::Aes128).unwrap(),
            transport: SecretKey::generate(KeyAlgorithm::Aes128).unwrap(),
        };
        envelopes.write(MASTER_KEY_LABEL, &envelopes.master);
        envelopes.write("line-bdk", &envelopes.bdk);
        envelopes.write("line-transport", &envelopes.transport);
        envelopes
    }

    fn write(&self, label: &str, key: &SecretKey) {
        let kcv = Kcv::compute(key, KcvMethod::Cmac);
        let parts = components::split(key, 2).unwrap();
        for (custodian, part) in ["alice", "bob"].iter().zip(&parts) {
            ComponentFile::write(&self.path(custodian, label), label, custodian, part, &kcv)
                .unwrap();
        }
    }

    pub fn path(&self, custodian: &str, label: &str) -> PathBuf {
        self.dir.path().join(format!("{custodian}-{label}.toml"))
    }

    pub fn all_paths(&self) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        for label in [MASTER_KEY_LABEL, "line-bdk", "line-transport"] {
            for custodian in ["alice", "bob"] {
                paths.push(self.path(custodian, label));
            }
        }
        paths
    }
}

pub fn participants(entries: &[(&str, Role)]) -> Vec<Participant> {
    entries
        .iter()
        .map(|(name, role)| Participant {
            name: (*name).to_owned(),
            role: *role,
        })
        .collect()
}

pub fn line_participants() -> Vec<Participant> {
    participants(&[
        ("alice", Role::Custodian),
        ("bob", Role::Custodian),
        ("carol", Role::Witness),
    ])
}

fn witness_attests(steps: &[usize]) -> BTreeMap<usize, String> {
    steps
        .iter()
        .map(|step| (*step, "carol".to_owned()))
        .collect()
}

/// Runs the shipped line ceremony with the given component files.
pub async fn run_line_ceremony(
    db: &TestDatabase,
    vault: &mut Vault,
    paths: &[PathBuf],
    people: &[Participant],
) -> Result<ceremony::CeremonyReport, CeremonyError> {
    let script = CeremonyScript::parse(LINE_SCRIPT).unwrap();
    let mut inputs = FileInputs::read(paths, witness_attests(&[1, 5]))?;
    ceremony::run(
        db.pool(),
        vault,
        "station-test",
        &script,
        people,
        &mut inputs,
    )
    .await
}

async fn audit_actions(db: &TestDatabase) -> Vec<(String, String)> {
    sqlx::query_as("SELECT action, outcome FROM audit_event ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

async fn vault_key_count(db: &TestDatabase) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM vault_keys")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn line_ceremony_loads_keys() {
    let db = TestDatabase::new().await;
    let envelopes = Envelopes::new();
    let mut vault = Vault::new(db.pool().clone());

    let report = run_line_ceremony(
        &db,
        &mut vault,
        &envelopes.all_paths(),
        &line_participants(),
    )
    .await
    .unwrap();

    assert!(!vault.is_sealed());
    let labels: Vec<&str> = report.keys.iter().map(|key| key.label.as_str()).collect();
    assert_eq!(labels, [MASTER_KEY_LABEL, "line-bdk", "line-transport"]);
    let bdk = vault.key_info("line-bdk").await.unwrap();
    assert_eq!(bdk.usage, KeyUsage::Bdk);
    assert_eq!(bdk.bdk_id, Some([0x5A, 0x1E, 0x00, 0x01]));
    assert!(
        bdk.kcv
            .matches(&Kcv::compute(&envelopes.bdk, KcvMethod::Cmac))
            .unwrap()
    );

    let actions = audit_actions(&db).await;
    let names: Vec<&str> = actions.iter().map(|(action, _)| action.as_str()).collect();
    assert_eq!(names.first(), Some(&"ceremony.started"));
    assert_eq!(names.last(), Some(&"ceremony.completed"));
    assert_eq!(
        names
            .iter()
            .filter(|name| **name == "ceremony.component-entered")
            .count(),
        6
    );
    assert_eq!(
        names
            .iter()
            .filter(|name| **name == "ceremony.attested")
            .count(),
        2
    );
    assert!(names.contains(&"vault.initialised"));
    assert_eq!(
        names
            .iter()
            .filter(|name| **name == "vault.key-stored")
            .count(),
        2
    );
    let report = station::audit::verify(db.pool()).await.unwrap();
    assert!(report.is_intact(), "{report}");
}

#[tokio::test]
async fn second_run_unseals_and_finds_keys() {
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
    let mut vault = Vault::new(db.pool().clone());

    let report = run_line_ceremony(
        &db,
        &mut vault,
        &envelopes.all_paths(),
        &line_participants(),
    )
    .await
    .unwrap();

    let outcomes: Vec<&str> = report.keys.iter().map(|key| key.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        ["unsealed", "key-already-present", "key-already-present"]
    );
    assert_eq!(vault_key_count(&db).await, 2);
}

#[tokio::test]
async fn component_with_wrong_kcv_aborts() {
    let db = TestDatabase::new().await;
    let envelopes = Envelopes::new();
    // Bob's BDK form states a check value that does not belong to his component.
    let path = envelopes.path("bob", "line-bdk");
    let text = std::fs::read_to_string(&path).unwrap();
    let stated = text
        .lines()
        .find_map(|line| line.strip_prefix("component-kcv = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    let wrong = if stated == "000000" {
        "000001"
    } else {
        "000000"
    };
    std::fs::write(&path, text.replace(&stated, wrong)).unwrap();
    let mut vault = Vault::new(db.pool().clone());

    let error = run_line_ceremony(
        &db,
        &mut vault,
        &envelopes.all_paths(),
        &line_participants(),
    )
    .await
    .unwrap_err();

    assert!(
        matches!(error, CeremonyError::ComponentKcvMismatch { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("\"line-bdk\""), "{message}");
    assert!(message.contains("\"bob\""), "{message}");
    assert!(message.contains(wrong), "{message}");
    assert_eq!(vault_key_count(&db).await, 0);
    let actions = audit_actions(&db).await;
    assert!(actions.contains(&(
        "ceremony.component-entered".to_owned(),
        "failure".to_owned()
    )));
    assert_eq!(
        actions.last(),
        Some(&("ceremony.aborted".to_owned(), "failure".to_owned()))
    );
    let state: String = sqlx::query_scalar("SELECT state FROM ceremonies")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(state, "aborted");
}

#[tokio::test]
async fn components_of_another_key_abort() {
    let db = TestDatabase::new().await;
    let envelopes = Envelopes::new();
    let other = Envelopes::new();
    let mut paths = envelopes.all_paths();
    // Bob brings the BDK envelope of another ceremony: each component matches its own form, but
    // the forms disagree on the key's check value.
    paths[3] = other.path("bob", "line-bdk");
    let mut vault = Vault::new(db.pool().clone());

    let error = run_line_ceremony(&db, &mut vault, &paths, &line_participants())
        .await
        .unwrap_err();

    assert!(
        matches!(error, CeremonyError::KeyKcvDisagree { .. }),
        "{error}"
    );
    assert_eq!(vault_key_count(&db).await, 0);
}

#[tokio::test]
async fn one_person_in_two_roles_is_rejected() {
    let db = TestDatabase::new().await;
    let envelopes = Envelopes::new();
    let people = participants(&[
        ("alice", Role::Custodian),
        ("bob", Role::Custodian),
        ("alice", Role::Witness),
    ]);
    let mut vault = Vault::new(db.pool().clone());

    let error = run_line_ceremony(&db, &mut vault, &envelopes.all_paths(), &people)
        .await
        .unwrap_err();

    assert!(matches!(error, CeremonyError::Participants(_)), "{error}");
    assert!(
        error.to_string().contains("\"alice\" is named twice"),
        "{error}"
    );
    assert!(audit_actions(&db).await.is_empty());
}

#[tokio::test]
async fn missing_witness_is_rejected() {
    let db = TestDatabase::new().await;
    let envelopes = Envelopes::new();
    let people = participants(&[("alice", Role::Custodian), ("bob", Role::Custodian)]);
    let mut vault = Vault::new(db.pool().clone());

    let error = run_line_ceremony(&db, &mut vault, &envelopes.all_paths(), &people)
        .await
        .unwrap_err();

    assert!(error.to_string().contains("needs 1 witness"), "{error}");
}

#[tokio::test]
async fn one_custodian_cannot_bring_both_components() {
    let db = TestDatabase::new().await;
    let envelopes = Envelopes::new();
    let mut paths = envelopes.all_paths();
    // Alice brings bob's master key component as well, relabelled as hers.
    let stolen = envelopes.dir.path().join("stolen.toml");
    let text = std::fs::read_to_string(envelopes.path("bob", MASTER_KEY_LABEL)).unwrap();
    std::fs::write(
        &stolen,
        text.replace("custodian = \"bob\"", "custodian = \"alice\""),
    )
    .unwrap();
    paths[1] = stolen;
    let mut vault = Vault::new(db.pool().clone());

    let error = run_line_ceremony(&db, &mut vault, &paths, &line_participants())
        .await
        .unwrap_err();

    assert!(
        matches!(error, CeremonyError::DuplicateCustodian { .. }),
        "{error}"
    );
    assert!(vault.is_sealed());
}

#[tokio::test]
async fn wrong_master_key_keeps_vault_sealed() {
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
    let impostor = Envelopes::new();
    let mut vault = Vault::new(db.pool().clone());

    let error = run_line_ceremony(&db, &mut vault, &impostor.all_paths(), &line_participants())
        .await
        .unwrap_err();

    assert!(
        matches!(
            error,
            CeremonyError::Vault(VaultError::WrongMasterKey { .. })
        ),
        "{error}"
    );
    assert!(vault.is_sealed());
}

#[tokio::test]
async fn missing_attestation_aborts() {
    let db = TestDatabase::new().await;
    let envelopes = Envelopes::new();
    let script = CeremonyScript::parse(LINE_SCRIPT).unwrap();
    let mut inputs = FileInputs::read(&envelopes.all_paths(), witness_attests(&[1])).unwrap();
    let mut vault = Vault::new(db.pool().clone());

    let error = ceremony::run(
        db.pool(),
        &mut vault,
        "station-test",
        &script,
        &line_participants(),
        &mut inputs,
    )
    .await
    .unwrap_err();

    assert_eq!(
        error.to_string(),
        "step 5 needs an attestation by a witness; pass --attest 5=NAME"
    );
}

#[test]
fn shipped_scripts_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ceremony-scripts");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            let script = CeremonyScript::load(&path).unwrap();
            assert!(script.procedure().contains(&script.purpose));
            checked += 1;
        }
    }
    assert!(checked >= 2, "found {checked} scripts in {}", dir.display());
}

#[test]
fn script_without_dual_control_is_rejected() {
    let text = LINE_SCRIPT.replace("custodian = 2", "custodian = 1");

    let error = CeremonyScript::parse(&text).unwrap_err();

    assert!(
        error
            .to_string()
            .contains("dual control needs at least 2 custodians"),
        "{error}"
    );
}

#[test]
fn component_file_errors_hide_the_component() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    let secret = "00112233445566778899AABBCCDDEEFF";
    std::fs::write(
        &path,
        format!("key = \"line-bdk\"\ncustodian = \"alice\"\ncomponent = \"{secret}\"\nbroken\n"),
    )
    .unwrap();

    let error = match ComponentFile::read(&path) {
        Err(error) => error,
        Ok(_) => panic!("a broken component file was accepted"),
    };

    let message = error.to_string();
    assert!(message.contains("broken.toml"), "{message}");
    assert!(!message.contains(secret), "{message}");
}

/// Builds a script with 3 custodians, 1 witness and `steps` (TOML `[[steps]]` tables).
fn script_with_steps(steps: &str) -> Result<CeremonyScript, CeremonyError> {
    CeremonyScript::parse(&format!(
        "name = \"test\"\npurpose = \"Test the script rules\"\n\n[roles]\ncustodian = 3\nwitness = 1\n{steps}"
    ))
}

#[test]
fn scripts_breaking_rules_are_rejected() {
    let cases = [
        (
            "[[steps]]\nkind = \"initialise\"\nshares = 4\nthreshold = 2\n",
            "use at least 2 parts and at most the 3 custodians",
        ),
        (
            "[[steps]]\nkind = \"generate-key\"\nkey = \"k\"\nalgorithm = \"aes128\"\nshares = 3\nthreshold = 1\n",
            "use at least 2 parts",
        ),
        (
            "[[steps]]\nkind = \"generate-key\"\nkey = \"k\"\nalgorithm = \"aes128\"\nshares = 2\nthreshold = 3\n",
            "threshold 3 of 2 shares; the threshold must be at most the share count",
        ),
        (
            "[[steps]]\nkind = \"enter-key\"\nkey = \"k\"\nalgorithm = \"aes128\"\ncomponents = 2\n\n[[steps]]\nkind = \"store-key\"\nkey = \"k\"\nlabel = \"k\"\nusage = \"transport-key\"\n",
            "step 2: this step needs the vault's master key, but no earlier step unseals the vault",
        ),
        (
            "[[steps]]\nkind = \"unseal\"\nshares = 2\n\n[[steps]]\nkind = \"store-key\"\nkey = \"missing\"\nlabel = \"k\"\nusage = \"transport-key\"\n",
            "step 2: key \"missing\" is not formed by an earlier generate-key or enter-key step",
        ),
        (
            "[[steps]]\nkind = \"combine\"\nkey = \"k\"\n",
            "step 1: no earlier enter-parts step enters the parts of key \"k\"",
        ),
        (
            "[[steps]]\nkind = \"unseal\"\ncomponents = 2\nshares = 2\n",
            "step 1: give either components = N, or shares = N",
        ),
        (
            "[[steps]]\nkind = \"compare-kcv\"\nlabel = \"line-bdk\"\nkcv = \"ABCDEF\"\nmethod = \"sha1\"\n",
            "step 1: unknown method \"sha1\"; use cmac or legacy",
        ),
        (
            "[[steps]]\nkind = \"unseal\"\nshares = 2\n\n[[steps]]\nkind = \"export-key\"\nlabel = \"host-kek\"\nkek = \"host-kek\"\n",
            "step 2: key \"host-kek\" cannot be exported under itself",
        ),
        (
            "[[steps]]\nkind = \"unseal\"\nshares = 2\n\n[[steps]]\nkind = \"create-factory-ca\"\nlabel = \"ca\"\nsubject = \"CN=CA\"\nvalidity-days = 0\n",
            "step 2: validity-days is 0",
        ),
    ];
    for (steps, expected) in cases {
        let error = script_with_steps(steps).unwrap_err();

        assert!(
            error.to_string().contains(expected),
            "{steps}\nexpected {expected:?} in: {error}"
        );
    }
}

#[test]
fn idle_timeout_of_zero_is_rejected() {
    let text = LINE_SCRIPT.replace(
        "name = \"load-line-keys\"",
        "name = \"load-line-keys\"\nidle-timeout-seconds = 0",
    );

    let error = CeremonyScript::parse(&text).unwrap_err();

    assert!(
        error.to_string().contains("idle-timeout-seconds is 0"),
        "{error}"
    );
}

#[tokio::test]
async fn component_files_cannot_hand_out_parts() {
    let db = TestDatabase::new().await;
    let envelopes = Envelopes::new();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ceremony-scripts/generate-bdk.toml"),
    )
    .unwrap()
    .replace("shares = 2", "components = 2");
    let script = CeremonyScript::parse(&text).unwrap();
    let paths = [
        envelopes.path("alice", MASTER_KEY_LABEL),
        envelopes.path("bob", MASTER_KEY_LABEL),
    ];
    let mut inputs = FileInputs::read(&paths, witness_attests(&[1, 5])).unwrap();
    let mut vault = Vault::new(db.pool().clone());

    let error = ceremony::run(
        db.pool(),
        &mut vault,
        "station-test",
        &script,
        &line_participants(),
        &mut inputs,
    )
    .await
    .unwrap_err();

    assert_eq!(
        error.to_string(),
        "step 3 hands out a component of \"new-bdk\", which is shown only at the prompt; run the ceremony without --component"
    );
    assert!(vault.is_sealed());
    assert!(vault.list_keys().await.unwrap().is_empty());
}
