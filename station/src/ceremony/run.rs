//! The ceremony engine: runs a script's steps in order and records each one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::json;
use sqlx::PgPool;
use tracing::{info, warn};
use uuid::Uuid;

use super::script::{CeremonyScript, MASTER_KEY_LABEL, Role, Step};
use super::{CeremonyError, ComponentFile};
use crate::audit::{self, AuditEvent, Outcome};
use crate::crypto::kcv::Kcv;
use crate::crypto::{KeyAlgorithm, SecretKey, components};
use crate::vault::{StoreOutcome, UnsealOutcome, Vault, parse_bdk_id};

/// A person taking part in a ceremony, in one role.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Participant {
    /// The person's user name.
    pub name: String,
    /// The role the person fills in this ceremony.
    pub role: Role,
}

/// A component as entered by a custodian, with the check values from their form.
pub struct EnteredComponent {
    /// The custodian who entered it.
    pub custodian: String,
    /// Where it came from, for error messages (a file path or "prompt").
    pub source: String,
    /// The component.
    pub component: SecretKey,
    /// The component's check value from the custodian's form.
    pub component_kcv: Kcv,
    /// The whole key's check value from the custodian's form.
    pub key_kcv: Kcv,
}

/// Where a ceremony gets its attestations and components from: files today, prompts and the
/// browser later, with the same engine.
pub trait CeremonyInputs {
    /// Returns the name of the participant who attests `statement` at `step` (1-based).
    fn attestation(
        &mut self,
        step: usize,
        role: Role,
        statement: &str,
    ) -> Result<String, CeremonyError>;

    /// Returns the components entered for `key_label`, as many as the custodians brought.
    fn components(&mut self, key_label: &str) -> Vec<EnteredComponent>;

    /// Checks that every input given was used, once all steps have run.
    fn finish(&mut self) -> Result<(), CeremonyError>;
}

/// Inputs from component files and attestations named on the command line.
pub struct FileInputs {
    components: Vec<ComponentFile>,
    attestations: BTreeMap<usize, String>,
}

impl FileInputs {
    /// Reads each component file; `attestations` maps a step number to the attesting participant.
    pub fn read(
        component_files: &[PathBuf],
        attestations: BTreeMap<usize, String>,
    ) -> Result<Self, CeremonyError> {
        let components = component_files
            .iter()
            .map(|path| ComponentFile::read(path))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            components,
            attestations,
        })
    }
}

impl CeremonyInputs for FileInputs {
    fn attestation(
        &mut self,
        step: usize,
        role: Role,
        _statement: &str,
    ) -> Result<String, CeremonyError> {
        self.attestations
            .remove(&step)
            .ok_or(CeremonyError::MissingAttestation { step, role })
    }

    fn components(&mut self, key_label: &str) -> Vec<EnteredComponent> {
        let (matching, rest) = std::mem::take(&mut self.components)
            .into_iter()
            .partition(|file| file.key_label == key_label);
        self.components = rest;
        matching
            .into_iter()
            .map(|file: ComponentFile| EnteredComponent {
                custodian: file.custodian.clone(),
                source: file.path.display().to_string(),
                component: file.component.duplicate(),
                component_kcv: file.component_kcv.clone(),
                key_kcv: file.key_kcv.clone(),
            })
            .collect()
    }

    fn finish(&mut self) -> Result<(), CeremonyError> {
        if self.components.is_empty() {
            Ok(())
        } else {
            let paths: Vec<String> = self
                .components
                .iter()
                .map(|file| file.path.display().to_string())
                .collect();
            Err(CeremonyError::UnusedComponents(paths.join(", ")))
        }
    }
}

/// A key that a ceremony formed, by label and check value.
#[derive(Debug, Clone)]
pub struct LoadedKey {
    /// Vault label, or the master key's label.
    pub label: String,
    /// Check value of the formed key.
    pub kcv: Kcv,
    /// Whether the vault stored it, found it already present, or (for the master key) unsealed.
    pub outcome: String,
}

/// What a completed ceremony did.
#[derive(Debug, Clone)]
pub struct CeremonyReport {
    /// The ceremony's identifier in the database and the audit trail.
    pub id: Uuid,
    /// Keys formed, in step order.
    pub keys: Vec<LoadedKey>,
}

/// Runs `script` with `participants`, taking components and attestations from `inputs`.
///
/// Each step commits with its audit event, so a step that cannot be audited does not happen. A
/// failing step aborts the ceremony, records the reason, and leaves earlier steps as they were.
pub async fn run(
    pool: &PgPool,
    vault: &mut Vault,
    station_id: &str,
    script: &CeremonyScript,
    participants: &[Participant],
    inputs: &mut dyn CeremonyInputs,
) -> Result<CeremonyReport, CeremonyError> {
    check_participants(script, participants)?;
    let id = Uuid::new_v4();
    let mut ceremony = Ceremony {
        pool,
        station_id,
        id,
    };
    ceremony.start(script, participants).await?;
    info!(ceremony = %id, script = %script.name, "ceremony started");

    let mut keys = Vec::new();
    let mut outcome = Ok(());
    for (index, step) in script.steps.iter().enumerate() {
        let result = ceremony
            .run_step(vault, index + 1, step, participants, inputs)
            .await;
        match result {
            Ok(Some(key)) => keys.push(key),
            Ok(None) => {}
            Err(error) => {
                outcome = Err(error);
                break;
            }
        }
    }
    if outcome.is_ok() {
        outcome = inputs.finish();
    }

    match outcome {
        Ok(()) => {
            ceremony.finish(Outcome::Success, "completed").await?;
            info!(ceremony = %id, "ceremony completed");
            Ok(CeremonyReport { id, keys })
        }
        Err(error) => {
            warn!(ceremony = %id, %error, "ceremony aborted");
            ceremony
                .finish(Outcome::Failure, &error.to_string())
                .await?;
            Err(error)
        }
    }
}

/// Checks the dual-control rules on the participants: each person fills one role, and each role
/// of the script has enough people.
fn check_participants(
    script: &CeremonyScript,
    participants: &[Participant],
) -> Result<(), CeremonyError> {
    let mut names = BTreeSet::new();
    for participant in participants {
        if participant.name.trim().is_empty() {
            return Err(CeremonyError::Participants(
                "a participant has an empty name".to_owned(),
            ));
        }
        if !names.insert(participant.name.as_str()) {
            return Err(CeremonyError::Participants(format!(
                "{:?} is named twice; one person cannot fill two roles or two places in one ceremony",
                participant.name
            )));
        }
    }
    for (role, needed) in &script.roles {
        let present = participants.iter().filter(|p| p.role == *role).count();
        if present < *needed {
            return Err(CeremonyError::Participants(format!(
                "the script needs {needed} {role}(s), {present} given"
            )));
        }
    }
    Ok(())
}

struct Ceremony<'a> {
    pool: &'a PgPool,
    station_id: &'a str,
    id: Uuid,
}

impl Ceremony<'_> {
    fn event(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        details: serde_json::Value,
    ) -> AuditEvent {
        let mut details = details;
        details["ceremony"] = json!(self.id.to_string());
        AuditEvent {
            actor: actor.to_owned(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            outcome: Outcome::Success,
            details,
        }
    }

    async fn start(
        &mut self,
        script: &CeremonyScript,
        participants: &[Participant],
    ) -> Result<(), CeremonyError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO ceremonies (id, station_id, script_name, script_sha384, purpose, participants, state)
             VALUES ($1, $2, $3, $4, $5, $6, 'running')",
        )
        .bind(self.id)
        .bind(self.station_id)
        .bind(&script.name)
        .bind(&script.sha384)
        .bind(&script.purpose)
        .bind(json!(participants))
        .execute(&mut *tx)
        .await?;
        let event = self.event(
            "station",
            "ceremony.started",
            &script.name,
            json!({ "participants": participants, "script_sha384": script.sha384 }),
        );
        audit::append(&mut tx, self.station_id, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish(&mut self, outcome: Outcome, text: &str) -> Result<(), CeremonyError> {
        let mut tx = self.pool.begin().await?;
        let state = if outcome == Outcome::Success {
            "completed"
        } else {
            "aborted"
        };
        sqlx::query(
            "UPDATE ceremonies SET state = $2, outcome = $3, finished_at = now() WHERE id = $1",
        )
        .bind(self.id)
        .bind(state)
        .bind(text)
        .execute(&mut *tx)
        .await?;
        let mut event = self.event(
            "station",
            &format!("ceremony.{state}"),
            &self.id.to_string(),
            json!({ "outcome": text }),
        );
        event.outcome = outcome;
        audit::append(&mut tx, self.station_id, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn run_step(
        &mut self,
        vault: &mut Vault,
        number: usize,
        step: &Step,
        participants: &[Participant],
        inputs: &mut dyn CeremonyInputs,
    ) -> Result<Option<LoadedKey>, CeremonyError> {
        match step {
            Step::Attest { role, statement } => {
                let name = inputs.attestation(number, *role, statement)?;
                let holds_role = participants
                    .iter()
                    .any(|p| p.name == name && p.role == *role);
                if !holds_role {
                    return Err(CeremonyError::WrongAttester {
                        step: number,
                        name,
                        role: *role,
                    });
                }
                let mut tx = self.pool.begin().await?;
                let event = self.event(
                    &name,
                    "ceremony.attested",
                    &format!("step {number}"),
                    json!({ "role": role, "statement": statement }),
                );
                audit::append(&mut tx, self.station_id, &event).await?;
                tx.commit().await?;
                Ok(None)
            }
            Step::Unseal { components } => {
                let (master, kcv) = self
                    .enter_key(
                        number,
                        MASTER_KEY_LABEL,
                        KeyAlgorithm::Aes256,
                        *components,
                        participants,
                        inputs,
                    )
                    .await?;
                let mut tx = self.pool.begin().await?;
                let outcome = vault.unseal(&mut tx, master, Some(self.id)).await?;
                let action = match outcome {
                    UnsealOutcome::Initialised => "vault.initialised",
                    UnsealOutcome::Unsealed => "vault.unsealed",
                };
                let event = self.event(
                    "station",
                    action,
                    MASTER_KEY_LABEL,
                    json!({ "kcv": kcv.to_hex(), "kcv_method": kcv.method().name() }),
                );
                if let Err(error) = audit::append(&mut tx, self.station_id, &event).await {
                    // Fail closed: a vault whose unseal is not on record stays sealed.
                    vault.seal();
                    return Err(error.into());
                }
                if let Err(error) = tx.commit().await {
                    vault.seal();
                    return Err(error.into());
                }
                Ok(Some(LoadedKey {
                    label: MASTER_KEY_LABEL.to_owned(),
                    kcv,
                    outcome: action.trim_start_matches("vault.").to_owned(),
                }))
            }
            Step::LoadKey {
                label,
                usage,
                algorithm,
                components,
                bdk_id,
            } => {
                let (key, kcv) = self
                    .enter_key(number, label, *algorithm, *components, participants, inputs)
                    .await?;
                let bdk_id = bdk_id.as_deref().map(parse_bdk_id).transpose()?;
                let mut tx = self.pool.begin().await?;
                let outcome = vault
                    .store_key(&mut tx, label, *usage, &key, bdk_id, Some(self.id))
                    .await?;
                let action = match outcome {
                    StoreOutcome::Stored => "vault.key-stored",
                    StoreOutcome::AlreadyPresent => "vault.key-already-present",
                };
                let event = self.event(
                    "station",
                    action,
                    label,
                    json!({
                        "usage": usage,
                        "algorithm": algorithm,
                        "kcv": kcv.to_hex(),
                        "kcv_method": kcv.method().name(),
                        "bdk_id": bdk_id.map(hex::encode_upper),
                    }),
                );
                audit::append(&mut tx, self.station_id, &event).await?;
                tx.commit().await?;
                Ok(Some(LoadedKey {
                    label: label.clone(),
                    kcv,
                    outcome: action.trim_start_matches("vault.").to_owned(),
                }))
            }
        }
    }

    /// Takes the components of one key from distinct custodians, checks each against the check
    /// value on its form, audits each entry, combines them and checks the whole key's value.
    async fn enter_key(
        &mut self,
        number: usize,
        label: &str,
        algorithm: KeyAlgorithm,
        needed: usize,
        participants: &[Participant],
        inputs: &mut dyn CeremonyInputs,
    ) -> Result<(SecretKey, Kcv), CeremonyError> {
        let entered = inputs.components(label);
        if entered.len() != needed {
            return Err(CeremonyError::MissingComponent {
                step: number,
                key: label.to_owned(),
                needed,
                given: entered.len(),
            });
        }
        let mut custodians = BTreeSet::new();
        for component in &entered {
            let is_custodian = participants
                .iter()
                .any(|p| p.name == component.custodian && p.role == Role::Custodian);
            if !is_custodian {
                return Err(CeremonyError::NotACustodian {
                    path: component.source.clone(),
                    custodian: component.custodian.clone(),
                });
            }
            if !custodians.insert(component.custodian.as_str()) {
                return Err(CeremonyError::DuplicateCustodian {
                    key: label.to_owned(),
                    custodian: component.custodian.clone(),
                });
            }
            if component.component.algorithm() != algorithm {
                return Err(CeremonyError::ComponentAlgorithm {
                    path: component.source.clone(),
                    key: label.to_owned(),
                    expected: algorithm.to_string(),
                    actual: component.component.algorithm().to_string(),
                });
            }
            let actual = Kcv::compute(&component.component, component.component_kcv.method());
            if !component.component_kcv.matches(&actual)? {
                self.audit_component(label, component, Outcome::Failure)
                    .await?;
                return Err(CeremonyError::ComponentKcvMismatch {
                    key: label.to_owned(),
                    custodian: component.custodian.clone(),
                    expected: component.component_kcv.to_hex(),
                    actual: actual.to_hex(),
                });
            }
            self.audit_component(label, component, Outcome::Success)
                .await?;
        }

        let stated = &entered[0].key_kcv;
        for component in &entered[1..] {
            if component.key_kcv.method() != stated.method()
                || !component.key_kcv.matches(stated)?
            {
                return Err(CeremonyError::KeyKcvDisagree {
                    key: label.to_owned(),
                    first: stated.to_string(),
                    second: component.key_kcv.to_string(),
                });
            }
        }
        let parts: Vec<SecretKey> = entered.iter().map(|c| c.component.duplicate()).collect();
        let key = components::combine(&parts)?;
        let kcv = Kcv::compute(&key, stated.method());
        if !stated.matches(&kcv)? {
            return Err(CeremonyError::KeyKcvMismatch {
                key: label.to_owned(),
                expected: stated.to_hex(),
                actual: kcv.to_hex(),
            });
        }
        Ok((key, kcv))
    }

    async fn audit_component(
        &mut self,
        label: &str,
        component: &EnteredComponent,
        outcome: Outcome,
    ) -> Result<(), CeremonyError> {
        let mut tx = self.pool.begin().await?;
        let mut event = self.event(
            &component.custodian,
            "ceremony.component-entered",
            label,
            json!({
                "component_kcv": component.component_kcv.to_hex(),
                "kcv_method": component.component_kcv.method().name(),
            }),
        );
        event.outcome = outcome;
        audit::append(&mut tx, self.station_id, &event).await?;
        tx.commit().await?;
        Ok(())
    }
}
