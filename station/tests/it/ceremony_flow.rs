//! Integration tests: every shipped ceremony script end to end, and the ways a ceremony ends
//! early (abort, timeout, a crash and its resume), against a real PostgreSQL cluster.

use std::path::Path;
use std::time::Duration;

use station::ceremony::{
    self, CeremonyError, CeremonyReport, CeremonyScript, MASTER_KEY_LABEL, Participant, Role,
};
use station::crypto::kcv::{Kcv, KcvMethod};
use station::crypto::{KeyAlgorithm, SecretKey, components, tr31};
use station::db::testing::TestDatabase;
use station::users::{User, UserRole};
use station::vault::{KeyStatus, KeyUsage, Vault};

use crate::ceremony::participants;
use crate::ceremony_inputs::{ScriptedInputs, TypedPart, components_for};

pub fn script(name: &str) -> CeremonyScript {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ceremony-scripts")
        .join(format!("{name}.toml"));
    CeremonyScript::load(&path).unwrap()
}

pub fn custodians_and_carol(custodians: &[&str]) -> Vec<Participant> {
    let mut entries: Vec<(&str, Role)> = custodians.iter().map(|c| (*c, Role::Custodian)).collect();
    entries.push(("carol", Role::Witness));
    participants(&entries)
}

pub async fn run_script(
    db: &TestDatabase,
    vault: &mut Vault,
    script: &CeremonyScript,
    people: &[Participant],
    inputs: &mut ScriptedInputs,
) -> Result<CeremonyReport, CeremonyError> {
    ceremony::run(db.pool(), vault, "station-test", script, people, inputs).await
}

/// Runs the initialise ceremony with alice, bob and dave, and returns the inputs holding the
/// three share forms.
pub async fn initialise(db: &TestDatabase) -> ScriptedInputs {
    let mut inputs = ScriptedInputs::new("carol");
    let mut vault = Vault::new(db.pool().clone());
    run_script(
        db,
        &mut vault,
        &script("initialise"),
        &custodians_and_carol(&["alice", "bob", "dave"]),
        &mut inputs,
    )
    .await
    .unwrap();
    inputs
}

async fn state_of(db: &TestDatabase, id: uuid::Uuid) -> String {
    sqlx::query_scalar("SELECT state FROM ceremonies WHERE id = $1")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

async fn only_ceremony_state(db: &TestDatabase, script_name: &str) -> (uuid::Uuid, String) {
    sqlx::query_as("SELECT id, state FROM ceremonies WHERE script_name = $1")
        .bind(script_name)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

fn kcv_hex(key: &SecretKey) -> String {
    Kcv::compute(key, KcvMethod::Cmac).to_hex()
}

fn combine_forms(parts: &[TypedPart], algorithm: KeyAlgorithm) -> SecretKey {
    let keys: Vec<SecretKey> = parts
        .iter()
        .map(|part| SecretKey::from_hex(algorithm, &part.text).unwrap())
        .collect();
    components::combine(&keys).unwrap()
}

#[tokio::test]
async fn shipped_scripts_run_end_to_end() {
    let db = TestDatabase::new().await;

    // Initialise: three share forms, one per custodian.
    let shares = initialise(&db).await;
    let forms = shares.forms();
    assert_eq!(forms.len(), 3);
    let holders: Vec<&str> = forms
        .iter()
        .map(|form| form.part.custodian.as_str())
        .collect();
    assert_eq!(holders, ["alice", "bob", "dave"]);
    assert!(
        forms[0].rendered.contains("SHARE 1 OF 3"),
        "{}",
        forms[0].rendered.as_str()
    );
    assert!(forms[0].rendered.contains("signature"));

    // Unseal with any two of the three shares.
    let mut inputs = ScriptedInputs::new("carol");
    inputs.give(
        MASTER_KEY_LABEL,
        shares.forms_of(MASTER_KEY_LABEL, &["bob", "dave"]),
    );
    let mut vault = Vault::new(db.pool().clone());
    let report = run_script(
        &db,
        &mut vault,
        &script("unseal-shares"),
        &custodians_and_carol(&["bob", "dave"]),
        &mut inputs,
    )
    .await
    .unwrap();
    assert_eq!(report.keys[0].outcome, "unsealed");
    assert!(!vault.is_sealed());

    // Generate the line BDK: two component forms, whose XOR is the stored key.
    let people = custodians_and_carol(&["alice", "bob"]);
    let mut generate = ScriptedInputs::new("carol");
    generate.give(
        MASTER_KEY_LABEL,
        shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob"]),
    );
    let mut vault = Vault::new(db.pool().clone());
    run_script(
        &db,
        &mut vault,
        &script("generate-bdk"),
        &people,
        &mut generate,
    )
    .await
    .unwrap();
    let bdk_forms = generate.forms_of("new-bdk", &["alice", "bob"]);
    let generated = combine_forms(&bdk_forms, KeyAlgorithm::Aes128);
    let line_bdk = vault.key_info("line-bdk").await.unwrap();
    assert_eq!(line_bdk.usage, KeyUsage::Bdk);
    assert_eq!(line_bdk.kcv.to_hex(), kcv_hex(&generated));
    assert_eq!(bdk_forms[0].key_kcv, kcv_hex(&generated));

    // Load the host's BDK and the transport key from known components.
    let host_bdk = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    let mut load = ScriptedInputs::new("carol");
    load.give(
        MASTER_KEY_LABEL,
        shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob"]),
    );
    load.give("host-bdk", components_for(&host_bdk, &["alice", "bob"]));
    let mut vault = Vault::new(db.pool().clone());
    run_script(&db, &mut vault, &script("load-bdk"), &people, &mut load)
        .await
        .unwrap();
    assert_eq!(
        vault.key_info("host-bdk").await.unwrap().kcv.to_hex(),
        kcv_hex(&host_bdk)
    );
    let transport = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    let mut load = ScriptedInputs::new("carol");
    load.give(
        MASTER_KEY_LABEL,
        shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob"]),
    );
    load.give("transport", components_for(&transport, &["alice", "bob"]));
    let mut vault = Vault::new(db.pool().clone());
    run_script(
        &db,
        &mut vault,
        &script("load-transport-key"),
        &people,
        &mut load,
    )
    .await
    .unwrap();
    let stored = vault.key_info("line-transport").await.unwrap();
    assert_eq!(stored.usage, KeyUsage::TransportKey);
    assert_eq!(stored.kcv.to_hex(), kcv_hex(&transport));

    // Rotate: line-bdk-2 is generated and stored, line-bdk is retired.
    let mut rotate = ScriptedInputs::new("carol");
    rotate.give(
        MASTER_KEY_LABEL,
        shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob"]),
    );
    let mut vault = Vault::new(db.pool().clone());
    run_script(&db, &mut vault, &script("rotate-bdk"), &people, &mut rotate)
        .await
        .unwrap();
    let next = combine_forms(
        &rotate.forms_of("next-bdk", &["alice", "bob"]),
        KeyAlgorithm::Aes128,
    );
    assert_eq!(
        vault.key_info("line-bdk-2").await.unwrap().kcv.to_hex(),
        kcv_hex(&next)
    );
    assert_eq!(
        vault.key_info("line-bdk").await.unwrap().status,
        KeyStatus::Retired
    );

    // Export line-bdk-2 under the host's KEK: the host opens the block with the KEK.
    let kek = SecretKey::generate(KeyAlgorithm::Aes256).unwrap();
    let mut export = ScriptedInputs::new("carol");
    export.give(
        MASTER_KEY_LABEL,
        shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob"]),
    );
    export.give("host-kek", components_for(&kek, &["alice", "bob"]));
    let mut vault = Vault::new(db.pool().clone());
    let report = run_script(&db, &mut vault, &script("export-bdk"), &people, &mut export)
        .await
        .unwrap();
    assert_eq!(report.keys.last().unwrap().outcome, "exported");
    let (label, kek_label, key_block) = export.exported.first().unwrap().clone();
    assert_eq!(
        (label.as_str(), kek_label.as_str()),
        ("line-bdk-2", "host-kek")
    );
    assert!(key_block.starts_with('D'), "{key_block}");
    let (header, exported) = tr31::unwrap(&kek, &key_block).unwrap();
    assert!(exported.ct_eq(&next));
    assert_eq!(&header.to_string()[5..7], "B0");
    assert_eq!(&header.to_string()[11..12], "N");

    // Destroy the retired BDK: its record stays, its key block is gone.
    let mut destroy = ScriptedInputs::new("carol");
    let mut vault = Vault::new(db.pool().clone());
    run_script(
        &db,
        &mut vault,
        &script("destroy-key"),
        &people,
        &mut destroy,
    )
    .await
    .unwrap();
    let destroyed = vault.key_info("line-bdk").await.unwrap();
    assert_eq!(destroyed.status, KeyStatus::Destroyed);
    let block: Option<String> =
        sqlx::query_scalar("SELECT key_block FROM vault_keys WHERE label = 'line-bdk'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(block.as_deref(), Some(""));

    // Create the factory CA: its key is kept in the vault and loads back under the master key.
    let mut create_ca = ScriptedInputs::new("carol");
    create_ca.give(
        MASTER_KEY_LABEL,
        shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob"]),
    );
    let mut vault = Vault::new(db.pool().clone());
    run_script(
        &db,
        &mut vault,
        &script("create-factory-ca"),
        &people,
        &mut create_ca,
    )
    .await
    .unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    let ca = station::pki::store::load_ca(&mut conn, &vault, "factory-ca")
        .await
        .unwrap();
    drop(conn);
    assert_eq!(
        ca.certificate().subject(),
        "CN=Factory CA,O=Key Injection Station"
    );
    let recorded: String = sqlx::query_scalar(
        "SELECT details->>'certificate_fingerprint' FROM audit_event
         WHERE action = 'ceremony.factory-ca-created'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(recorded, ca.certificate().fingerprint());

    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM ceremonies")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(states.len(), 9);
    assert!(
        states.iter().all(|state| state == "completed"),
        "{states:?}"
    );
    let report = station::audit::verify(db.pool()).await.unwrap();
    assert!(report.is_intact(), "{report}");
}

#[tokio::test]
async fn initialise_twice_is_rejected() {
    let db = TestDatabase::new().await;
    initialise(&db).await;
    let mut inputs = ScriptedInputs::new("carol");
    let mut vault = Vault::new(db.pool().clone());

    let error = run_script(
        &db,
        &mut vault,
        &script("initialise"),
        &custodians_and_carol(&["alice", "bob", "dave"]),
        &mut inputs,
    )
    .await
    .unwrap_err();

    assert!(
        matches!(error, CeremonyError::AlreadyInitialised),
        "{error}"
    );
    assert!(inputs.forms().is_empty(), "shares were handed out");
}

#[tokio::test]
async fn unseal_with_one_share_fails() {
    let db = TestDatabase::new().await;
    let shares = initialise(&db).await;
    let mut inputs = ScriptedInputs::new("carol");
    inputs.give(
        MASTER_KEY_LABEL,
        shares.forms_of(MASTER_KEY_LABEL, &["bob"]),
    );
    let mut vault = Vault::new(db.pool().clone());

    let error = run_script(
        &db,
        &mut vault,
        &script("unseal-shares"),
        &custodians_and_carol(&["bob", "dave"]),
        &mut inputs,
    )
    .await
    .unwrap_err();

    assert!(
        matches!(
            error,
            CeremonyError::MissingComponent {
                needed: 2,
                given: 1,
                ..
            }
        ),
        "{error}"
    );
    assert!(vault.is_sealed());
    let (_, state) = only_ceremony_state(&db, "unseal-shares").await;
    assert_eq!(state, "aborted");
}

#[tokio::test]
async fn one_custodian_cannot_enter_two_shares() {
    let db = TestDatabase::new().await;
    let shares = initialise(&db).await;
    // Bob holds alice's share as well and enters both: he alone would reach the threshold.
    let mut parts = shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob"]);
    parts[0].custodian = "bob".to_owned();
    let mut inputs = ScriptedInputs::new("carol");
    inputs.give(MASTER_KEY_LABEL, parts);
    let mut vault = Vault::new(db.pool().clone());

    let error = run_script(
        &db,
        &mut vault,
        &script("unseal-shares"),
        &custodians_and_carol(&["alice", "bob"]),
        &mut inputs,
    )
    .await
    .unwrap_err();

    assert!(
        matches!(error, CeremonyError::DuplicateCustodian { .. }),
        "{error}"
    );
    assert!(vault.is_sealed());
}

#[tokio::test]
async fn share_with_wrong_kcv_aborts() {
    let db = TestDatabase::new().await;
    let shares = initialise(&db).await;
    let mut parts = shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob"]);
    parts[1].part_kcv = if parts[1].part_kcv == "000000" {
        "000001".to_owned()
    } else {
        "000000".to_owned()
    };
    let mut inputs = ScriptedInputs::new("carol");
    inputs.give(MASTER_KEY_LABEL, parts);
    let mut vault = Vault::new(db.pool().clone());

    let error = run_script(
        &db,
        &mut vault,
        &script("unseal-shares"),
        &custodians_and_carol(&["alice", "bob"]),
        &mut inputs,
    )
    .await
    .unwrap_err();

    assert!(
        matches!(error, CeremonyError::ComponentKcvMismatch { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("\"bob\""), "{error}");
    assert!(vault.is_sealed());
}

#[tokio::test]
async fn abort_by_participant_ends_ceremony() {
    let db = TestDatabase::new().await;
    let shares = initialise(&db).await;
    let mut inputs = ScriptedInputs::new("carol");
    inputs.give(
        MASTER_KEY_LABEL,
        shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob"]),
    );
    // Bob aborts when the BDK would be generated (step 3): no form is handed out.
    inputs.abort_at = Some((3, "bob".to_owned()));
    let mut vault = Vault::new(db.pool().clone());

    let error = run_script(
        &db,
        &mut vault,
        &script("generate-bdk"),
        &custodians_and_carol(&["alice", "bob"]),
        &mut inputs,
    )
    .await
    .unwrap_err();

    assert_eq!(
        error.to_string(),
        "the ceremony was aborted by \"bob\" at step 3"
    );
    assert!(inputs.forms().is_empty());
    assert!(vault.is_sealed());
    assert!(vault.list_keys().await.unwrap().is_empty());
    let (id, state) = only_ceremony_state(&db, "generate-bdk").await;
    assert_eq!(state, "aborted");
    let (actor, outcome): (String, String) = sqlx::query_as(
        "SELECT actor, outcome FROM audit_event WHERE action = 'ceremony.aborted'
         AND details->>'ceremony' = $1",
    )
    .bind(id.to_string())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!((actor.as_str(), outcome.as_str()), ("bob", "failure"));
}

#[tokio::test]
async fn idle_ceremony_times_out() {
    let db = TestDatabase::new().await;
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ceremony-scripts/destroy-key.toml"),
    )
    .unwrap()
    .replace(
        "name = \"destroy-key\"",
        "name = \"destroy-key\"\nidle-timeout-seconds = 1",
    );
    let script = CeremonyScript::parse(&text).unwrap();
    assert_eq!(script.idle_timeout, Duration::from_secs(1));
    let mut inputs = ScriptedInputs::new("carol");
    // An attestation is three prompts (name, password, confirmation), so an input source that
    // does not time out its own prompts gets three idle timeouts for it.
    inputs.delay = Some(Duration::from_millis(3300));
    let mut vault = Vault::new(db.pool().clone());

    let error = run_script(
        &db,
        &mut vault,
        &script,
        &custodians_and_carol(&["alice", "bob"]),
        &mut inputs,
    )
    .await
    .unwrap_err();

    assert!(
        matches!(
            error,
            CeremonyError::TimedOut {
                step: 1,
                idle_seconds: 1
            }
        ),
        "{error}"
    );
    let (id, state) = only_ceremony_state(&db, "destroy-key").await;
    assert_eq!(state, "timed-out");
    let attested: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_event WHERE action = 'ceremony.attested'
         AND details->>'ceremony' = $1",
    )
    .bind(id.to_string())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(attested, 0, "a late attestation was recorded");
}

/// A script whose key is generated in one step and stored two steps later, so a crash between
/// them leaves a generated key that exists only on the custodians' forms.
const CRASH_SCRIPT: &str = r#"
name = "generate-then-store"
purpose = "Generate a transport key, attest, then store it"

[roles]
custodian = 2
witness = 1

[[steps]]
kind = "unseal"
shares = 2

[[steps]]
kind = "generate-key"
key = "spare"
algorithm = "aes128"
components = 2

[[steps]]
kind = "attest"
role = "witness"
statement = "Both component forms are sealed in their envelopes."

[[steps]]
kind = "store-key"
key = "spare"
label = "spare-transport"
usage = "transport-key"
"#;

#[tokio::test]
async fn crashed_ceremony_resumes_without_secrets() {
    let db = TestDatabase::new().await;
    let shares = initialise(&db).await;
    let script = CeremonyScript::parse(CRASH_SCRIPT).unwrap();
    let people = custodians_and_carol(&["alice", "bob"]);

    // The station dies at step 3, after the forms were handed out.
    let sink = ScriptedInputs::new("carol").forms;
    let pool = db.pool().clone();
    let master_parts = shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob"]);
    let (crashed_script, crashed_people, crashed_master, crashed_sink) = (
        script.clone(),
        people.clone(),
        master_parts.clone(),
        sink.clone(),
    );
    let task = spawn_crashing(async move {
        let mut inputs = ScriptedInputs::new("carol");
        inputs.forms = crashed_sink;
        inputs.give(MASTER_KEY_LABEL, crashed_master);
        inputs.crash_at = Some(3);
        let mut vault = Vault::new(pool.clone());
        ceremony::run(
            &pool,
            &mut vault,
            "station-test",
            &crashed_script,
            &crashed_people,
            &mut inputs,
        )
        .await
        .map(|report| report.id)
    });
    let panic = task.await.map(|_| ()).unwrap_err();
    assert!(panic.is_panic());
    let (id, state) = only_ceremony_state(&db, "generate-then-store").await;
    assert_eq!(state, "running");
    let done: Vec<i32> = sqlx::query_scalar("SELECT completed_steps FROM ceremonies WHERE id = $1")
        .bind(id)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(done, [1, 2]);
    let mut crashed = ScriptedInputs::new("carol");
    crashed.forms = sink;
    let spare_forms = crashed.forms_of("spare", &["alice", "bob"]);

    // Someone else cannot resume it.
    let strangers = custodians_and_carol(&["alice", "eve"]);
    let mut vault = Vault::new(db.pool().clone());
    let mut inputs = ScriptedInputs::new("carol");
    let error = resume_when_free(&db, &mut vault, id, &strangers, &mut inputs).await;
    assert!(
        matches!(error, Err(CeremonyError::ParticipantsChanged { .. })),
        "{error:?}"
    );

    // After the restart, the vault is sealed and the generated key is gone. So the custodians
    // unseal again and enter the components they were handed: steps 1 and 2 repeat, and steps
    // 3 and 4 run.
    let mut inputs = ScriptedInputs::new("carol");
    inputs.give(MASTER_KEY_LABEL, master_parts);
    inputs.give("spare", spare_forms.clone());
    let mut vault = Vault::new(db.pool().clone());
    let report = resume_when_free(&db, &mut vault, id, &people, &mut inputs)
        .await
        .unwrap();

    assert_eq!(report.id, id);
    assert_eq!(state_of(&db, id).await, "completed");
    let stored = vault.key_info("spare-transport").await.unwrap();
    assert_eq!(stored.kcv.to_hex(), spare_forms[0].key_kcv);
    let repeated: serde_json::Value = sqlx::query_scalar(
        "SELECT details->'repeated_steps' FROM audit_event WHERE action = 'ceremony.resumed'
         AND details->>'ceremony' = $1",
    )
    .bind(id.to_string())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(repeated, serde_json::json!([1, 2]));
    assert!(inputs.forms().is_empty(), "the resume generated a new key");
}

#[tokio::test]
async fn resume_rejects_wrong_components() {
    let db = TestDatabase::new().await;
    let shares = initialise(&db).await;
    let script = CeremonyScript::parse(CRASH_SCRIPT).unwrap();
    let people = custodians_and_carol(&["alice", "bob"]);
    let pool = db.pool().clone();
    let master_parts = shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob"]);
    let (crashed_script, crashed_people, crashed_master) =
        (script.clone(), people.clone(), master_parts.clone());
    let task = spawn_crashing(async move {
        let mut inputs = ScriptedInputs::new("carol");
        inputs.give(MASTER_KEY_LABEL, crashed_master);
        inputs.crash_at = Some(3);
        let mut vault = Vault::new(pool.clone());
        let _ = ceremony::run(
            &pool,
            &mut vault,
            "station-test",
            &crashed_script,
            &crashed_people,
            &mut inputs,
        )
        .await;
    });
    assert!(task.await.unwrap_err().is_panic());
    let (id, _) = only_ceremony_state(&db, "generate-then-store").await;

    // The custodians bring components of another key, consistent with each other.
    let other = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    let mut inputs = ScriptedInputs::new("carol");
    inputs.give(MASTER_KEY_LABEL, master_parts);
    inputs.give("spare", components_for(&other, &["alice", "bob"]));
    let mut vault = Vault::new(db.pool().clone());
    let error = resume_when_free(&db, &mut vault, id, &people, &mut inputs)
        .await
        .unwrap_err();

    assert!(
        matches!(error, CeremonyError::KeyKcvMismatch { .. }),
        "{error}"
    );
    assert_eq!(state_of(&db, id).await, "aborted");
    assert!(vault.list_keys().await.unwrap().is_empty());
}

#[tokio::test]
async fn crashed_ceremony_can_be_aborted() {
    let db = TestDatabase::new().await;
    let shares = initialise(&db).await;
    let script = CeremonyScript::parse(CRASH_SCRIPT).unwrap();
    let people = custodians_and_carol(&["alice", "bob"]);
    let pool = db.pool().clone();
    let master_parts = shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob"]);
    let task = spawn_crashing(async move {
        let mut inputs = ScriptedInputs::new("carol");
        inputs.give(MASTER_KEY_LABEL, master_parts);
        inputs.crash_at = Some(3);
        let mut vault = Vault::new(pool.clone());
        let _ = ceremony::run(
            &pool,
            &mut vault,
            "station-test",
            &script,
            &people,
            &mut inputs,
        )
        .await;
    });
    assert!(task.await.unwrap_err().is_panic());
    let (id, _) = only_ceremony_state(&db, "generate-then-store").await;

    let error = ceremony::abort(db.pool(), "station-test", id, "eve")
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("only a participant can abort"),
        "{error}"
    );
    let mut result = ceremony::abort(db.pool(), "station-test", id, "carol").await;
    for _ in 0..50 {
        if !matches!(result, Err(CeremonyError::RunningElsewhere(_))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        result = ceremony::abort(db.pool(), "station-test", id, "carol").await;
    }
    result.unwrap();

    assert_eq!(state_of(&db, id).await, "aborted");
    let error = ceremony::abort(db.pool(), "station-test", id, "carol")
        .await
        .unwrap_err();
    assert!(
        matches!(error, CeremonyError::NotResumable { .. }),
        "{error}"
    );
}

#[test]
fn witness_needs_supervisor_account() {
    let operator = User {
        name: "olga".to_owned(),
        role: UserRole::Operator,
    };
    let supervisor = User {
        name: "carol".to_owned(),
        role: UserRole::Supervisor,
    };

    let error = Participant::for_user(&operator, Role::Witness).unwrap_err();

    assert_eq!(
        error.to_string(),
        "user \"olga\" is a operator and cannot take part as a witness; a witness must be a supervisor user"
    );
    assert_eq!(
        Participant::for_user(&supervisor, Role::Witness)
            .unwrap()
            .role,
        Role::Witness
    );
    assert!(Participant::for_user(&supervisor, Role::Custodian).is_err());
}

/// Resumes ceremony `id`, waiting while the server still holds the crashed task's lock: the
/// server frees a session lock only once it notices that the connection closed.
async fn resume_when_free(
    db: &TestDatabase,
    vault: &mut Vault,
    id: uuid::Uuid,
    people: &[Participant],
    inputs: &mut ScriptedInputs,
) -> Result<CeremonyReport, CeremonyError> {
    for _ in 0..50 {
        match ceremony::resume(db.pool(), vault, "station-test", id, people, inputs).await {
            Err(CeremonyError::RunningElsewhere(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
    ceremony::resume(db.pool(), vault, "station-test", id, people, inputs).await
}

/// Runs a ceremony that is expected to panic, as a crash would stop it, on this thread: the
/// engine's inputs are not `Send`.
async fn spawn_crashing<F>(future: F) -> Result<F::Output, tokio::task::JoinError>
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move { tokio::task::spawn_local(future).await })
        .await
}

#[tokio::test]
async fn stored_key_kcv_is_compared() {
    let db = TestDatabase::new().await;
    let shares = initialise(&db).await;
    let people = custodians_and_carol(&["alice", "bob"]);
    let host_bdk = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    let mut load = ScriptedInputs::new("carol");
    load.give(
        MASTER_KEY_LABEL,
        shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob"]),
    );
    load.give("host-bdk", components_for(&host_bdk, &["alice", "bob"]));
    let mut vault = Vault::new(db.pool().clone());
    run_script(&db, &mut vault, &script("load-bdk"), &people, &mut load)
        .await
        .unwrap();
    let compare = |kcv: &str, method: &str| {
        CeremonyScript::parse(&format!(
            "name = \"compare\"\npurpose = \"Compare the host BDK's check value with the host's\"\n\n\
             [roles]\ncustodian = 2\nwitness = 1\n\n\
             [[steps]]\nkind = \"compare-kcv\"\nlabel = \"host-bdk\"\nkcv = \"{kcv}\"\nmethod = \"{method}\"\n"
        ))
        .unwrap()
    };
    let cmac = kcv_hex(&host_bdk);
    let legacy = Kcv::compute(&host_bdk, KcvMethod::Legacy).to_hex();

    let mut inputs = ScriptedInputs::new("carol");
    let mut vault = Vault::new(db.pool().clone());
    run_script(
        &db,
        &mut vault,
        &compare(&cmac, "cmac"),
        &people,
        &mut inputs,
    )
    .await
    .unwrap();
    // The vault keeps CMAC check values, so a legacy value is never taken as matching.
    let error = run_script(
        &db,
        &mut vault,
        &compare(&legacy, "legacy"),
        &people,
        &mut inputs,
    )
    .await
    .unwrap_err();

    assert!(
        matches!(error, CeremonyError::KcvCompareMismatch { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("\"host-bdk\""), "{error}");
}

#[tokio::test]
async fn record_shows_participants_and_outcome() {
    let db = TestDatabase::new().await;
    let shares = initialise(&db).await;
    let mut inputs = ScriptedInputs::new("carol");
    inputs.give(
        MASTER_KEY_LABEL,
        shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob"]),
    );
    inputs.abort_at = Some((3, "bob".to_owned()));
    let mut vault = Vault::new(db.pool().clone());
    run_script(
        &db,
        &mut vault,
        &script("generate-bdk"),
        &custodians_and_carol(&["alice", "bob"]),
        &mut inputs,
    )
    .await
    .unwrap_err();
    let (id, _) = only_ceremony_state(&db, "generate-bdk").await;

    let text = ceremony::record(db.pool(), id).await.unwrap().to_text();

    assert!(text.contains("Script:     generate-bdk"), "{text}");
    assert!(text.contains("State:      aborted"), "{text}");
    assert!(
        text.contains("the ceremony was aborted by \"bob\" at step 3"),
        "{text}"
    );
    for (name, role) in [
        ("alice", "custodian"),
        ("bob", "custodian"),
        ("carol", "witness"),
    ] {
        assert!(
            text.lines()
                .any(|line| line.contains(name) && line.contains(role)),
            "{name} {role}: {text}"
        );
    }
    assert!(
        text.contains("attests \"Two new tamper-evident envelopes are on the table"),
        "{text}"
    );
    assert!(text.contains("vault.unsealed"), "{text}");
    assert_eq!(
        text.lines()
            .filter(|line| line.contains("ceremony.component-entered") && line.contains("(cmac)"))
            .count(),
        2,
        "{text}"
    );
    assert_eq!(text.matches("signature: ____").count(), 4, "{text}");
}

/// A script that enters the parts of a key, has the witness attest, and only then combines and
/// stores them.
const PARTS_SCRIPT: &str = r#"
name = "enter-then-combine"
purpose = "Enter a transport key's components, attest, then combine and store it"

[roles]
custodian = 2
witness = 1

[[steps]]
kind = "unseal"
shares = 2

[[steps]]
kind = "enter-parts"
key = "transport"
algorithm = "aes128"
components = 2

[[steps]]
kind = "attest"
role = "witness"
statement = "Both components were entered from sealed envelopes."

[[steps]]
kind = "combine"
key = "transport"

[[steps]]
kind = "store-key"
key = "transport"
label = "line-transport"
usage = "transport-key"
"#;

#[tokio::test]
async fn parts_combine_in_a_later_step() {
    let db = TestDatabase::new().await;
    let shares = initialise(&db).await;
    let script = CeremonyScript::parse(PARTS_SCRIPT).unwrap();
    let people = custodians_and_carol(&["alice", "bob"]);
    let master_parts = shares.forms_of(MASTER_KEY_LABEL, &["alice", "bob"]);
    let transport = SecretKey::generate(KeyAlgorithm::Aes128).unwrap();
    let transport_parts = components_for(&transport, &["alice", "bob"]);

    // The station dies at the attestation, after the parts were entered but before they were
    // combined.
    let pool = db.pool().clone();
    let (crashed_script, crashed_people, crashed_master, crashed_parts) = (
        script.clone(),
        people.clone(),
        master_parts.clone(),
        transport_parts.clone(),
    );
    let task = spawn_crashing(async move {
        let mut inputs = ScriptedInputs::new("carol");
        inputs.give(MASTER_KEY_LABEL, crashed_master);
        inputs.give("transport", crashed_parts);
        inputs.crash_at = Some(3);
        let mut vault = Vault::new(pool.clone());
        let _ = ceremony::run(
            &pool,
            &mut vault,
            "station-test",
            &crashed_script,
            &crashed_people,
            &mut inputs,
        )
        .await;
    });
    assert!(task.await.unwrap_err().is_panic());
    let (id, _) = only_ceremony_state(&db, "enter-then-combine").await;

    // The resume repeats the unseal (the store needs it) and the entry (the combine needs it).
    let mut inputs = ScriptedInputs::new("carol");
    inputs.give(MASTER_KEY_LABEL, master_parts);
    inputs.give("transport", transport_parts);
    let mut vault = Vault::new(db.pool().clone());
    resume_when_free(&db, &mut vault, id, &people, &mut inputs)
        .await
        .unwrap();

    let stored = vault.key_info("line-transport").await.unwrap();
    assert_eq!(stored.kcv.to_hex(), kcv_hex(&transport));
    let repeated: serde_json::Value = sqlx::query_scalar(
        "SELECT details->'repeated_steps' FROM audit_event WHERE action = 'ceremony.resumed'
         AND details->>'ceremony' = $1",
    )
    .bind(id.to_string())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(repeated, serde_json::json!([1, 2]));
    let combined: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_event WHERE action = 'ceremony.key-combined'
         AND details->>'ceremony' = $1",
    )
    .bind(id.to_string())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(combined, 1);
}
