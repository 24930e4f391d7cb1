//! The effect of each step kind. Every step writes at least one audit event, in the transaction of
//! its effect, and marks itself done in that transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::inputs::{EnteredPart, PartRequest, PartValue, StepContext};
use super::run::{LoadedKey, ceremony_event};
use super::script::{CeremonyScript, MASTER_KEY_LABEL, Role, Split, Step};
use super::state;
use super::{CeremonyError, CeremonyInputs, PartForm, Participant};
use crate::audit::{self, Outcome};
use crate::crypto::kcv::{Kcv, KcvMethod};
use crate::crypto::shamir;
use crate::crypto::{KeyAlgorithm, SecretKey, components};
use crate::pki::{self, FactoryCa, ValidityPeriod};
use crate::vault::{KeyUsage, StoreOutcome, UnsealOutcome, Vault, parse_bdk_id};

/// Prompts of an attestation: the attester's name, password and confirmation.
const PROMPTS_PER_ATTESTATION: usize = 3;

/// Prompts of handing out a part: the custodian's password, then confirming the copy.
const PROMPTS_PER_HAND_OUT: usize = 2;

/// Prompts of entering a part: name, password, the part and the two check values on its form.
const PROMPTS_PER_PART: usize = 5;

/// Returns the check value method of part forms: CMAC for AES keys and the legacy method for
/// TDES keys, the same choice `SecretKey`'s `Debug` output makes.
pub fn form_kcv_method(algorithm: KeyAlgorithm) -> KcvMethod {
    if algorithm.is_aes() {
        KcvMethod::Cmac
    } else {
        KcvMethod::Legacy
    }
}

/// One ceremony while it runs: its identity, its participants and the keys formed in memory.
pub(super) struct Ceremony<'a> {
    pool: &'a PgPool,
    station_id: &'a str,
    pub(super) id: Uuid,
    pub(super) script: &'a CeremonyScript,
    participants: &'a [Participant],
    keys: BTreeMap<String, SecretKey>,
    /// Parts entered by `enter-parts` steps and not yet combined, by key name.
    parts: BTreeMap<String, Vec<EnteredPart>>,
}

impl<'a> Ceremony<'a> {
    pub(super) fn new(
        pool: &'a PgPool,
        station_id: &'a str,
        id: Uuid,
        script: &'a CeremonyScript,
        participants: &'a [Participant],
    ) -> Self {
        Self {
            pool,
            station_id,
            id,
            script,
            participants,
            keys: BTreeMap::new(),
            parts: BTreeMap::new(),
        }
    }

    /// Drops every key formed in memory, zeroizing it.
    pub(super) fn forget_keys(&mut self) {
        self.keys.clear();
        self.parts.clear();
    }

    fn context(&self, number: usize) -> StepContext {
        StepContext {
            ceremony: self.id,
            number,
            total: self.script.steps.len(),
            idle_timeout: self.script.idle_timeout,
        }
    }

    fn custodians(&self) -> Vec<String> {
        self.participants
            .iter()
            .filter(|p| p.role == Role::Custodian)
            .map(|p| p.name.clone())
            .collect()
    }

    /// Fails with [`CeremonyError::TimedOut`] when an input call took longer than the idle
    /// timeout allows for `interactions` prompts. The terminal times out each prompt itself, and
    /// this check covers input sources that do not.
    ///
    /// NOTE: `interactions` counts the prompts of a call without retries, so a participant who
    /// retypes a password several times, each time just under the timeout, can exceed it.
    fn check_idle(
        &self,
        number: usize,
        started: Instant,
        interactions: usize,
    ) -> Result<(), CeremonyError> {
        let allowed = self.script.idle_timeout * u32::try_from(interactions.max(1)).unwrap_or(1);
        if started.elapsed() > allowed {
            return Err(CeremonyError::TimedOut {
                step: number,
                idle_seconds: self.script.idle_timeout.as_secs(),
            });
        }
        Ok(())
    }

    async fn append(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        details: serde_json::Value,
        outcome: Outcome,
        complete_step: Option<usize>,
    ) -> Result<(), CeremonyError> {
        let mut tx = self.pool.begin().await?;
        let mut event = ceremony_event(self.id, actor, action, subject, details);
        event.outcome = outcome;
        audit::append(&mut tx, self.station_id, &event).await?;
        if let Some(number) = complete_step {
            state::complete_step(&mut tx, self.id, number).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn finish(
        &mut self,
        state_name: &str,
        outcome: Outcome,
        text: &str,
        actor: &str,
    ) -> Result<(), CeremonyError> {
        let mut tx = self.pool.begin().await?;
        state::finish(&mut tx, self.id, state_name, text).await?;
        let mut event = ceremony_event(
            self.id,
            actor,
            &format!("ceremony.{state_name}"),
            &self.id.to_string(),
            json!({ "outcome": text }),
        );
        event.outcome = outcome;
        audit::append(&mut tx, self.station_id, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Runs one step. `repeat` is set when the step is on record but must run again after a
    /// restart, because a later step needs what it formed in memory.
    pub(super) async fn run_step(
        &mut self,
        vault: &mut Vault,
        number: usize,
        step: &Step,
        inputs: &mut dyn CeremonyInputs,
        repeat: bool,
    ) -> Result<Option<LoadedKey>, CeremonyError> {
        let context = self.context(number);
        match step {
            Step::Attest { role, statement } => {
                let started = Instant::now();
                let name = inputs.attestation(&context, *role, statement)?;
                self.check_idle(number, started, PROMPTS_PER_ATTESTATION)?;
                let holds_role = self
                    .participants
                    .iter()
                    .any(|p| p.name == name && p.role == *role);
                if !holds_role {
                    return Err(CeremonyError::WrongAttester {
                        step: number,
                        name,
                        role: *role,
                    });
                }
                self.append(
                    &name,
                    "ceremony.attested",
                    &format!("step {number}"),
                    json!({ "role": role, "statement": statement }),
                    Outcome::Success,
                    Some(number),
                )
                .await?;
                Ok(None)
            }
            Step::Unseal { .. } => self.enter_and_unseal(vault, &context, step, inputs).await,
            // After a restart, an initialise step on record unseals with the shares it handed out.
            Step::Initialise { .. } if repeat => {
                self.enter_and_unseal(vault, &context, step, inputs).await
            }
            Step::Initialise { shares, threshold } => {
                if vault.is_initialised().await? {
                    return Err(CeremonyError::AlreadyInitialised);
                }
                let split = Split::Shares {
                    count: *shares,
                    threshold: *threshold,
                };
                let master = SecretKey::generate(KeyAlgorithm::Aes256)?;
                let kcv = self
                    .hand_out(&context, MASTER_KEY_LABEL, &master, split, inputs)
                    .await?;
                self.unseal(vault, number, master, kcv, true).await
            }
            Step::GenerateKey { key, algorithm, .. } => {
                let split = step.entry_split().ok_or_else(|| {
                    CeremonyError::InvalidScript(format!("step {number}: no split"))
                })?;
                let (secret, kcv) = if repeat {
                    // The parts were handed out before the restart: custodians enter them.
                    let entry = match split {
                        Split::Shares { threshold, .. } => Split::Shares {
                            count: threshold,
                            threshold,
                        },
                        components => components,
                    };
                    let (secret, kcv) = self
                        .enter_key(&context, key, *algorithm, entry, inputs)
                        .await?;
                    self.check_generated_kcv(number, key, &kcv).await?;
                    (secret, kcv)
                } else {
                    let secret = SecretKey::generate(*algorithm)?;
                    let kcv = self.hand_out(&context, key, &secret, split, inputs).await?;
                    (secret, kcv)
                };
                let action = if repeat {
                    "ceremony.key-combined"
                } else {
                    "ceremony.key-generated"
                };
                self.append(
                    "station",
                    action,
                    key,
                    json!({
                        "algorithm": algorithm,
                        "kcv": kcv.to_hex(),
                        "kcv_method": kcv.method().name(),
                        "split": split.to_string(),
                    }),
                    Outcome::Success,
                    Some(number),
                )
                .await?;
                self.keys.insert(key.clone(), secret);
                Ok(None)
            }
            Step::EnterKey { key, algorithm, .. } => {
                let split = step.entry_split().ok_or_else(|| {
                    CeremonyError::InvalidScript(format!("step {number}: no split"))
                })?;
                let (secret, kcv) = self
                    .enter_key(&context, key, *algorithm, split, inputs)
                    .await?;
                self.append(
                    "station",
                    "ceremony.key-combined",
                    key,
                    json!({
                        "algorithm": algorithm,
                        "kcv": kcv.to_hex(),
                        "kcv_method": kcv.method().name(),
                    }),
                    Outcome::Success,
                    Some(number),
                )
                .await?;
                self.keys.insert(key.clone(), secret);
                Ok(None)
            }
            Step::EnterParts { key, algorithm, .. } => {
                let split = step.entry_split().ok_or_else(|| {
                    CeremonyError::InvalidScript(format!("step {number}: no split"))
                })?;
                let entered = self
                    .enter_parts(&context, key, *algorithm, split, inputs)
                    .await?;
                self.append(
                    "station",
                    "ceremony.parts-entered",
                    key,
                    json!({ "algorithm": algorithm, "count": entered.len() }),
                    Outcome::Success,
                    Some(number),
                )
                .await?;
                self.parts.insert(key.clone(), entered);
                Ok(None)
            }
            Step::Combine { key } => {
                let entered = self.parts.remove(key).ok_or_else(|| {
                    CeremonyError::InvalidScript(format!(
                        "step {number}: no parts of key {key:?} were entered"
                    ))
                })?;
                let (secret, kcv) = self.combine_parts(key, &entered).await?;
                drop(entered);
                self.append(
                    "station",
                    "ceremony.key-combined",
                    key,
                    json!({
                        "algorithm": secret.algorithm(),
                        "kcv": kcv.to_hex(),
                        "kcv_method": kcv.method().name(),
                    }),
                    Outcome::Success,
                    Some(number),
                )
                .await?;
                self.keys.insert(key.clone(), secret);
                Ok(None)
            }
            Step::CompareKcv {
                key,
                label,
                kcv,
                method,
            } => {
                self.compare_kcv(vault, number, key.as_deref(), label.as_deref(), kcv, method)
                    .await?;
                Ok(None)
            }
            Step::StoreKey {
                key,
                label,
                usage,
                bdk_id,
            } => {
                let secret = self.keys.get(key).ok_or_else(|| {
                    CeremonyError::InvalidScript(format!(
                        "step {number}: key {key:?} was not formed"
                    ))
                })?;
                let secret = secret.duplicate();
                self.store(vault, number, label, *usage, &secret, bdk_id.as_deref())
                    .await
                    .map(Some)
            }
            Step::LoadKey {
                label,
                usage,
                algorithm,
                components,
                bdk_id,
            } => {
                let split = Split::Components { count: *components };
                let (secret, _) = self
                    .enter_key(&context, label, *algorithm, split, inputs)
                    .await?;
                self.store(vault, number, label, *usage, &secret, bdk_id.as_deref())
                    .await
                    .map(Some)
            }
            Step::ExportKey { label, kek } => {
                let key_block = vault.export_key(label, kek).await?;
                let info = vault.key_info(label).await?;
                self.append(
                    "station",
                    "vault.key-exported",
                    label,
                    json!({
                        "kek_label": kek,
                        "kcv": info.kcv.to_hex(),
                        "kcv_method": info.kcv.method().name(),
                        "tr31_header": key_block.get(..16).unwrap_or_default(),
                    }),
                    Outcome::Success,
                    Some(number),
                )
                .await?;
                inputs.deliver_key_block(&context, label, kek, &key_block)?;
                Ok(Some(LoadedKey {
                    label: label.clone(),
                    kcv: info.kcv,
                    outcome: "exported".to_owned(),
                }))
            }
            Step::CreateFactoryCa {
                label,
                subject,
                validity_days,
            } => {
                self.create_factory_ca(vault, number, label, subject, *validity_days)
                    .await?;
                Ok(None)
            }
            Step::RetireKey { label } | Step::DestroyKey { label } => {
                let destroy = matches!(step, Step::DestroyKey { .. });
                let mut tx = self.pool.begin().await?;
                let info = if destroy {
                    vault.destroy_key(&mut tx, label, Some(self.id)).await?
                } else {
                    vault.retire_key(&mut tx, label, Some(self.id)).await?
                };
                let action = if destroy {
                    "vault.key-destroyed"
                } else {
                    "vault.key-retired"
                };
                let event = ceremony_event(
                    self.id,
                    "station",
                    action,
                    label,
                    json!({
                        "kcv": info.kcv.to_hex(),
                        "kcv_method": info.kcv.method().name(),
                        "usage": info.usage,
                    }),
                );
                audit::append(&mut tx, self.station_id, &event).await?;
                state::complete_step(&mut tx, self.id, number).await?;
                tx.commit().await?;
                Ok(Some(LoadedKey {
                    label: label.clone(),
                    kcv: info.kcv,
                    outcome: info.status.name().to_owned(),
                }))
            }
        }
    }

    async fn create_factory_ca(
        &mut self,
        vault: &Vault,
        number: usize,
        label: &str,
        subject: &str,
        validity_days: u32,
    ) -> Result<(), CeremonyError> {
        let lifetime = Duration::from_secs(u64::from(validity_days) * 24 * 60 * 60);
        let ca = FactoryCa::create(subject, ValidityPeriod::from_now(lifetime))?;
        let certificate = ca.certificate();
        let actor = format!("ceremony:{}", self.id);
        let mut tx = self.pool.begin().await?;
        pki::store::save_ca(
            &mut tx,
            vault,
            label,
            &ca,
            Some(self.id),
            &pki::store::AuditActor {
                station_id: self.station_id,
                actor: &actor,
            },
        )
        .await?;
        let event = ceremony_event(
            self.id,
            "station",
            "ceremony.factory-ca-created",
            label,
            json!({
                "ca_subject": certificate.subject(),
                "certificate_fingerprint": certificate.fingerprint(),
                "not_after": certificate.not_after().to_string(),
            }),
        );
        audit::append(&mut tx, self.station_id, &event).await?;
        state::complete_step(&mut tx, self.id, number).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn enter_and_unseal(
        &mut self,
        vault: &mut Vault,
        context: &StepContext,
        step: &Step,
        inputs: &mut dyn CeremonyInputs,
    ) -> Result<Option<LoadedKey>, CeremonyError> {
        let number = context.number;
        let split = match step.entry_split() {
            Some(Split::Shares { threshold, .. }) => Split::Shares {
                count: threshold,
                threshold,
            },
            Some(split) => split,
            None => {
                return Err(CeremonyError::InvalidScript(format!(
                    "step {number}: no split"
                )));
            }
        };
        let (master, kcv) = self
            .enter_key(
                context,
                MASTER_KEY_LABEL,
                KeyAlgorithm::Aes256,
                split,
                inputs,
            )
            .await?;
        self.unseal(vault, number, master, kcv, false).await
    }

    async fn unseal(
        &mut self,
        vault: &mut Vault,
        number: usize,
        master: SecretKey,
        kcv: Kcv,
        expect_new: bool,
    ) -> Result<Option<LoadedKey>, CeremonyError> {
        let mut tx = self.pool.begin().await?;
        let outcome = vault.unseal(&mut tx, master, Some(self.id)).await?;
        let action = match outcome {
            UnsealOutcome::Initialised => "vault.initialised",
            UnsealOutcome::Unsealed => "vault.unsealed",
        };
        let event = ceremony_event(
            self.id,
            "station",
            action,
            MASTER_KEY_LABEL,
            json!({ "kcv": kcv.to_hex(), "kcv_method": kcv.method().name() }),
        );
        let written = async {
            if expect_new && outcome != UnsealOutcome::Initialised {
                return Err(CeremonyError::AlreadyInitialised);
            }
            audit::append(&mut tx, self.station_id, &event).await?;
            state::complete_step(&mut tx, self.id, number).await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        if let Err(error) = written {
            // Fail closed: a vault whose unseal is not on record stays sealed.
            vault.seal();
            return Err(error);
        }
        Ok(Some(LoadedKey {
            label: MASTER_KEY_LABEL.to_owned(),
            kcv,
            outcome: action.trim_start_matches("vault.").to_owned(),
        }))
    }

    async fn store(
        &mut self,
        vault: &mut Vault,
        number: usize,
        label: &str,
        usage: KeyUsage,
        key: &SecretKey,
        bdk_id: Option<&str>,
    ) -> Result<LoadedKey, CeremonyError> {
        let bdk_id = bdk_id.map(parse_bdk_id).transpose()?;
        let kcv = Kcv::compute(key, crate::vault::VAULT_KCV_METHOD);
        let mut tx = self.pool.begin().await?;
        let outcome = vault
            .store_key(&mut tx, label, usage, key, bdk_id, Some(self.id))
            .await?;
        let action = match outcome {
            StoreOutcome::Stored => "vault.key-stored",
            StoreOutcome::AlreadyPresent => "vault.key-already-present",
        };
        let event = ceremony_event(
            self.id,
            "station",
            action,
            label,
            json!({
                "usage": usage,
                "algorithm": key.algorithm(),
                "kcv": kcv.to_hex(),
                "kcv_method": kcv.method().name(),
                "bdk_id": bdk_id.map(hex::encode_upper),
            }),
        );
        audit::append(&mut tx, self.station_id, &event).await?;
        state::complete_step(&mut tx, self.id, number).await?;
        tx.commit().await?;
        Ok(LoadedKey {
            label: label.to_owned(),
            kcv,
            outcome: action.trim_start_matches("vault.").to_owned(),
        })
    }

    async fn compare_kcv(
        &mut self,
        vault: &Vault,
        number: usize,
        key: Option<&str>,
        label: Option<&str>,
        expected: &str,
        method: &str,
    ) -> Result<(), CeremonyError> {
        let method = KcvMethod::from_name(method).ok_or_else(|| {
            CeremonyError::InvalidScript(format!("step {number}: unknown method {method:?}"))
        })?;
        let expected = Kcv::from_hex(method, expected)?;
        let (subject, actual) = match (key, label) {
            (Some(key), _) => {
                let secret = self.keys.get(key).ok_or_else(|| {
                    CeremonyError::InvalidScript(format!(
                        "step {number}: key {key:?} was not formed"
                    ))
                })?;
                let len = expected.value().len();
                (key.to_owned(), Kcv::compute_len(secret, method, len)?)
            }
            (None, Some(label)) => (label.to_owned(), vault.key_info(label).await?.kcv),
            (None, None) => {
                return Err(CeremonyError::InvalidScript(format!(
                    "step {number}: give key or label"
                )));
            }
        };
        let same = actual.method() == expected.method() && expected.matches(&actual)?;
        let details = json!({
            "expected_kcv": expected.to_hex(),
            "actual_kcv": actual.to_hex(),
            "kcv_method": actual.method().name(),
        });
        if !same {
            self.append(
                "station",
                "ceremony.kcv-compared",
                &subject,
                details,
                Outcome::Failure,
                None,
            )
            .await?;
            return Err(CeremonyError::KcvCompareMismatch {
                subject,
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        self.append(
            "station",
            "ceremony.kcv-compared",
            &subject,
            details,
            Outcome::Success,
            Some(number),
        )
        .await
    }

    /// Checks that a key re-entered after a restart is the one this ceremony generated, by the
    /// check value its `ceremony.key-generated` event recorded.
    async fn check_generated_kcv(
        &self,
        number: usize,
        key: &str,
        kcv: &Kcv,
    ) -> Result<(), CeremonyError> {
        let recorded: Option<String> = sqlx::query_scalar(
            "SELECT details->>'kcv' FROM audit_event
             WHERE action = 'ceremony.key-generated' AND subject = $1
               AND details->>'ceremony' = $2
             ORDER BY id DESC LIMIT 1",
        )
        .bind(key)
        .bind(self.id.to_string())
        .fetch_optional(self.pool)
        .await?
        .flatten();
        let Some(recorded) = recorded else {
            return Ok(());
        };
        let recorded = Kcv::from_hex(kcv.method(), &recorded)?;
        if !recorded.matches(kcv)? {
            return Err(CeremonyError::KeyKcvMismatch {
                key: format!("{key} (step {number})"),
                expected: recorded.to_hex(),
                actual: kcv.to_hex(),
            });
        }
        Ok(())
    }

    /// Splits `key` and shows each custodian their part once. Returns the key's check value.
    async fn hand_out(
        &mut self,
        context: &StepContext,
        label: &str,
        key: &SecretKey,
        split: Split,
        inputs: &mut dyn CeremonyInputs,
    ) -> Result<Kcv, CeremonyError> {
        let method = form_kcv_method(key.algorithm());
        let key_kcv = Kcv::compute(key, method);
        let custodians = self.custodians();
        let parts: Vec<(Zeroizing<String>, Kcv)> = match split {
            Split::Components { count } => components::split(key, count)?
                .iter()
                .map(|part| {
                    (
                        Zeroizing::new(hex::encode_upper(part.expose())),
                        Kcv::compute(part, method),
                    )
                })
                .collect(),
            Split::Shares { count, threshold } => shamir::split(key, threshold, count)?
                .iter()
                .map(|share| (share.expose_text(), share.kcv(method)))
                .collect(),
        };
        let count = parts.len();
        for (index, ((text, part_kcv), custodian)) in parts.into_iter().zip(&custodians).enumerate()
        {
            let form = PartForm {
                ceremony: self.id,
                script_name: self.script.name.clone(),
                key_label: label.to_owned(),
                algorithm: key.algorithm(),
                custodian: custodian.clone(),
                part_name: split.part_name(),
                position: (index + 1, count),
                needed: split.needed(),
                part_text: text,
                part_kcv: part_kcv.clone(),
                key_kcv: key_kcv.clone(),
            };
            let started = Instant::now();
            inputs.hand_out(context, &form)?;
            self.check_idle(context.number, started, PROMPTS_PER_HAND_OUT)?;
            self.append(
                custodian,
                "ceremony.part-handed-out",
                label,
                json!({
                    "part": split.part_name(),
                    "position": index + 1,
                    "count": count,
                    "part_kcv": part_kcv.to_hex(),
                    "key_kcv": key_kcv.to_hex(),
                    "kcv_method": method.name(),
                }),
                Outcome::Success,
                None,
            )
            .await?;
        }
        Ok(key_kcv)
    }

    /// Takes the parts of one key from distinct custodians, checks each against the check value
    /// on its form, audits each entry, combines them and checks the whole key's value.
    async fn enter_key(
        &mut self,
        context: &StepContext,
        label: &str,
        algorithm: KeyAlgorithm,
        split: Split,
        inputs: &mut dyn CeremonyInputs,
    ) -> Result<(SecretKey, Kcv), CeremonyError> {
        let entered = self
            .enter_parts(context, label, algorithm, split, inputs)
            .await?;
        self.combine_parts(label, &entered).await
    }

    /// Takes the parts of one key from distinct custodians, checks each against the check value
    /// on its form and audits each entry.
    async fn enter_parts(
        &mut self,
        context: &StepContext,
        label: &str,
        algorithm: KeyAlgorithm,
        split: Split,
        inputs: &mut dyn CeremonyInputs,
    ) -> Result<Vec<EnteredPart>, CeremonyError> {
        let number = context.number;
        let request = PartRequest {
            key_label: label.to_owned(),
            algorithm,
            split,
            custodians: self.custodians(),
        };
        let started = Instant::now();
        let entered = inputs.parts(context, &request)?;
        self.check_idle(number, started, PROMPTS_PER_PART * split.needed())?;
        if entered.len() != split.needed() {
            return Err(CeremonyError::MissingComponent {
                step: number,
                key: label.to_owned(),
                needed: split.needed(),
                given: entered.len(),
            });
        }
        let mut custodians = BTreeSet::new();
        for part in &entered {
            self.check_part(label, algorithm, split, part, &mut custodians)?;
            let actual = part_kcv(part)?;
            if !part.part_kcv.matches(&actual)? {
                self.audit_part(label, part, Outcome::Failure).await?;
                return Err(CeremonyError::ComponentKcvMismatch {
                    key: label.to_owned(),
                    custodian: part.custodian.clone(),
                    expected: part.part_kcv.to_hex(),
                    actual: actual.to_hex(),
                });
            }
            self.audit_part(label, part, Outcome::Success).await?;
        }
        Ok(entered)
    }

    /// Combines checked parts and compares the key's check value with the one all their forms
    /// state.
    async fn combine_parts(
        &mut self,
        label: &str,
        entered: &[EnteredPart],
    ) -> Result<(SecretKey, Kcv), CeremonyError> {
        let Some(first) = entered.first() else {
            return Err(CeremonyError::InvalidScript(format!(
                "no parts of key {label:?} were entered"
            )));
        };
        let stated = &first.key_kcv;
        for part in &entered[1..] {
            if part.key_kcv.method() != stated.method() || !part.key_kcv.matches(stated)? {
                return Err(CeremonyError::KeyKcvDisagree {
                    key: label.to_owned(),
                    first: stated.to_string(),
                    second: part.key_kcv.to_string(),
                });
            }
        }
        let key = combine(entered)?;
        let kcv = Kcv::compute_len(&key, stated.method(), stated.value().len())?;
        if !stated.matches(&kcv)? {
            self.append(
                "station",
                "ceremony.kcv-compared",
                label,
                json!({
                    "expected_kcv": stated.to_hex(),
                    "actual_kcv": kcv.to_hex(),
                    "kcv_method": kcv.method().name(),
                }),
                Outcome::Failure,
                None,
            )
            .await?;
            return Err(CeremonyError::KeyKcvMismatch {
                key: label.to_owned(),
                expected: stated.to_hex(),
                actual: kcv.to_hex(),
            });
        }
        Ok((key, kcv))
    }

    fn check_part<'p>(
        &self,
        label: &str,
        algorithm: KeyAlgorithm,
        split: Split,
        part: &'p EnteredPart,
        custodians: &mut BTreeSet<&'p str>,
    ) -> Result<(), CeremonyError> {
        let is_custodian = self
            .participants
            .iter()
            .any(|p| p.name == part.custodian && p.role == Role::Custodian);
        if !is_custodian {
            return Err(CeremonyError::NotACustodian {
                path: part.source.clone(),
                custodian: part.custodian.clone(),
            });
        }
        if !custodians.insert(part.custodian.as_str()) {
            return Err(CeremonyError::DuplicateCustodian {
                key: label.to_owned(),
                custodian: part.custodian.clone(),
            });
        }
        let (actual_algorithm, kind) = match &part.value {
            PartValue::Component(component) => (component.algorithm(), "component"),
            PartValue::Share(share) => (share.algorithm(), "share"),
        };
        if kind != split.part_name() {
            return Err(CeremonyError::PartKind {
                key: label.to_owned(),
                custodian: part.custodian.clone(),
                expected: split.part_name(),
                actual: kind,
            });
        }
        if actual_algorithm != algorithm {
            return Err(CeremonyError::ComponentAlgorithm {
                path: part.source.clone(),
                key: label.to_owned(),
                expected: algorithm.to_string(),
                actual: actual_algorithm.to_string(),
            });
        }
        if let PartValue::Share(share) = &part.value
            && usize::from(share.threshold()) != split.needed()
        {
            return Err(CeremonyError::ShareThreshold {
                key: label.to_owned(),
                custodian: part.custodian.clone(),
                expected: split.needed(),
                actual: share.threshold(),
            });
        }
        Ok(())
    }

    async fn audit_part(
        &self,
        label: &str,
        part: &EnteredPart,
        outcome: Outcome,
    ) -> Result<(), CeremonyError> {
        let kind = match part.value {
            PartValue::Component(_) => "component",
            PartValue::Share(_) => "share",
        };
        self.append(
            &part.custodian,
            "ceremony.component-entered",
            label,
            json!({
                "part": kind,
                "component_kcv": part.part_kcv.to_hex(),
                "kcv_method": part.part_kcv.method().name(),
            }),
            outcome,
            None,
        )
        .await
    }
}

/// Computes the check value of an entered part with the method and length its form states.
fn part_kcv(part: &EnteredPart) -> Result<Kcv, CeremonyError> {
    let method = part.part_kcv.method();
    let len = part.part_kcv.value().len();
    match &part.value {
        PartValue::Component(component) => Ok(Kcv::compute_len(component, method, len)?),
        PartValue::Share(share) => {
            let full = share.kcv(method);
            Ok(Kcv::from_hex(method, &full.to_hex()[..len * 2])?)
        }
    }
}

fn combine(entered: &[EnteredPart]) -> Result<SecretKey, CeremonyError> {
    let mut components_list = Vec::new();
    let mut shares = Vec::new();
    for part in entered {
        match &part.value {
            PartValue::Component(component) => components_list.push(component.duplicate()),
            PartValue::Share(share) => shares.push(share.clone()),
        }
    }
    if shares.is_empty() {
        Ok(components::combine(&components_list)?)
    } else {
        Ok(shamir::combine(&shares)?)
    }
}
