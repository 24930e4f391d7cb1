//! Integration tests: the key component field cases (C1 to C4) entered through a ceremony, from
//! `tests/data/ceremony_components.toml`.

use std::path::Path;

use serde::Deserialize;
use station::ceremony::{CeremonyError, CeremonyScript};
use station::crypto::kcv::{Kcv, KcvMethod};
use station::crypto::{KeyAlgorithm, SecretKey, components};
use station::db::testing::TestDatabase;
use station::vault::Vault;
use zeroize::Zeroizing;

use crate::ceremony_flow::{custodians_and_carol, run_script};
use crate::ceremony_inputs::{ScriptedInputs, TypedPart};

#[derive(Deserialize)]
struct CaseFile {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    source: String,
    algorithm: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    components: Vec<String>,
    #[serde(default)]
    component_kcvs: Vec<String>,
    accept: Vec<CheckValue>,
    reject: Vec<CheckValue>,
}

#[derive(Deserialize)]
struct CheckValue {
    method: String,
    kcv: String,
    #[serde(default)]
    reason: String,
}

fn cases() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ceremony_components.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    toml::from_str::<CaseFile>(&text).unwrap().case
}

const CUSTODIANS: [&str; 3] = ["alice", "bob", "dave"];

/// Returns the components of a case as typed parts, whose forms state `key_kcv` for the whole key.
fn typed_parts(case: &Case, algorithm: KeyAlgorithm, key_kcv: &Kcv) -> Vec<TypedPart> {
    let parts: Vec<SecretKey> = match &case.key {
        Some(key) => {
            let key = SecretKey::from_hex(algorithm, key).unwrap();
            components::split(&key, 2).unwrap()
        }
        None => case
            .components
            .iter()
            .map(|hex| SecretKey::from_hex(algorithm, hex).unwrap())
            .collect(),
    };
    parts
        .iter()
        .zip(CUSTODIANS)
        .enumerate()
        .map(|(index, (part, custodian))| {
            let part_kcv = Kcv::compute(part, key_kcv.method());
            if let Some(stated) = case.component_kcvs.get(index) {
                assert_eq!(
                    &part_kcv.to_hex(),
                    stated,
                    "{}: component {}",
                    case.name,
                    index + 1
                );
            }
            TypedPart {
                custodian: custodian.to_owned(),
                text: Zeroizing::new(hex::encode_upper(part.expose())),
                part_kcv: part_kcv.to_hex(),
                key_kcv: key_kcv.to_hex(),
                method: key_kcv.method(),
            }
        })
        .collect()
}

/// Builds a script that enters the case's key from `count` components, its forms stating a check
/// value of `method`, and compares the result with `expected`.
fn script(algorithm: &str, count: usize, expected: &CheckValue) -> CeremonyScript {
    CeremonyScript::parse(&format!(
        r#"
name = "field-case"
purpose = "Enter a key from components and compare its check value"

[roles]
custodian = {count}
witness = 1

[[steps]]
kind = "enter-key"
key = "field-case"
algorithm = "{algorithm}"
components = {count}

[[steps]]
kind = "compare-kcv"
key = "field-case"
kcv = "{kcv}"
method = "{method}"
"#,
        kcv = expected.kcv,
        method = expected.method,
    ))
    .unwrap()
}

async fn run_case(
    db: &TestDatabase,
    case: &Case,
    form_kcv: &CheckValue,
    compared: &CheckValue,
) -> Result<(), CeremonyError> {
    let algorithm = KeyAlgorithm::from_name(&case.algorithm).unwrap();
    let method = KcvMethod::from_name(&form_kcv.method).unwrap();
    let key_kcv = Kcv::from_hex(method, &form_kcv.kcv).unwrap();
    let parts = typed_parts(case, algorithm, &key_kcv);
    let count = parts.len();
    let mut inputs = ScriptedInputs::new("carol");
    inputs.give("field-case", parts);
    let mut vault = Vault::new(db.pool().clone());
    run_script(
        db,
        &mut vault,
        &script(&case.algorithm, count, compared),
        &custodians_and_carol(&CUSTODIANS[..count]),
        &mut inputs,
    )
    .await
    .map(|_| ())
}

#[tokio::test]
async fn field_case_kcvs_are_accepted() {
    let db = TestDatabase::new().await;
    for case in cases() {
        for accepted in &case.accept {
            let result = run_case(&db, &case, accepted, accepted).await;

            assert!(
                result.is_ok(),
                "{} ({}), {} {}: {:?}",
                case.name,
                case.source,
                accepted.method,
                accepted.kcv,
                result.err()
            );
        }
    }
}

#[tokio::test]
async fn field_case_wrong_kcvs_are_rejected() {
    let db = TestDatabase::new().await;
    let mut rejected_count = 0;
    for case in cases() {
        let right = &case.accept[0];
        for wrong in &case.reject {
            // The forms state the wrong value: the combined key does not match it.
            let on_forms = run_case(&db, &case, wrong, right).await;
            assert!(
                matches!(on_forms, Err(CeremonyError::KeyKcvMismatch { .. })),
                "{}: forms stating {} ({}) were accepted: {:?}",
                case.name,
                wrong.kcv,
                wrong.reason,
                on_forms.err()
            );

            // The forms are right, but the script expects the wrong value.
            let compared = run_case(&db, &case, right, wrong).await;
            assert!(
                matches!(compared, Err(CeremonyError::KcvCompareMismatch { .. })),
                "{}: comparing with {} ({}) passed: {:?}",
                case.name,
                wrong.kcv,
                wrong.reason,
                compared.err()
            );
            rejected_count += 1;
        }
    }
    assert_eq!(rejected_count, 2);
}

#[tokio::test]
async fn component_kcv_mismatch_names_custodian() {
    let db = TestDatabase::new().await;
    let case = cases().into_iter().find(|case| case.name == "C4").unwrap();
    let key_kcv = Kcv::from_hex(KcvMethod::Legacy, &case.accept[0].kcv).unwrap();
    let mut parts = typed_parts(&case, KeyAlgorithm::Tdes2, &key_kcv);
    // Bob's form states alice's component check value.
    parts[1].part_kcv = case.component_kcvs[0].clone();
    let mut inputs = ScriptedInputs::new("carol");
    inputs.give("field-case", parts);
    let mut vault = Vault::new(db.pool().clone());

    let error = run_script(
        &db,
        &mut vault,
        &script("tdes2", 3, &case.accept[0]),
        &custodians_and_carol(&CUSTODIANS),
        &mut inputs,
    )
    .await
    .unwrap_err();

    assert_eq!(
        error.to_string(),
        "the part of key \"field-case\" from \"bob\" has check value AED093, but its form says 024118; check the component or share and enter it again"
    );
}
