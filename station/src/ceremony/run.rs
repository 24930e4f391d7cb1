//! The ceremony engine: runs a script's steps in order and records each one, resumes a ceremony
//! that a restart interrupted, and aborts one on a participant's request.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use sqlx::PgPool;
use tracing::{info, warn};
use uuid::Uuid;

use super::script::{CeremonyScript, Role, Step};
use super::state::{self, CeremonyLock};
use super::steps::Ceremony;
use super::{CeremonyError, CeremonyInputs};
use crate::audit::{self, AuditEvent, Outcome};
use crate::crypto::kcv::Kcv;
use crate::users::User;
use crate::vault::Vault;

/// A person taking part in a ceremony, in one role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Participant {
    /// The person's user name.
    pub name: String,
    /// The role the person fills in this ceremony.
    pub role: Role,
}

impl Participant {
    /// Makes `user` a participant in `role`, if their account's role allows it: a custodian
    /// account for the custodian role, a supervisor account for the witness role.
    pub fn for_user(user: &User, role: Role) -> Result<Self, CeremonyError> {
        if user.role != role.user_role() {
            return Err(CeremonyError::WrongUserRole {
                name: user.name.clone(),
                role,
                actual: user.role,
                needed: role.user_role(),
            });
        }
        Ok(Self {
            name: user.name.clone(),
            role,
        })
    }
}

/// A key that a ceremony formed or changed, by label and check value.
#[derive(Debug, Clone)]
pub struct LoadedKey {
    /// Vault label, or the master key's label.
    pub label: String,
    /// Check value of the key.
    pub kcv: Kcv,
    /// What happened to it: stored, key-already-present, unsealed, initialised, exported,
    /// retired or destroyed.
    pub outcome: String,
}

/// Summary of a completed ceremony.
#[derive(Debug, Clone)]
pub struct CeremonyReport {
    /// The ceremony's identifier in the database and the audit trail.
    pub id: Uuid,
    /// Keys formed or changed, in step order.
    pub keys: Vec<LoadedKey>,
}

/// Runs `script` with `participants`, taking inputs from and giving outputs to `inputs`.
///
/// Each step commits with its audit event, so a step that cannot be audited does not happen. A
/// failing step ends the ceremony (aborted, or timed out), records the reason, and leaves
/// earlier steps as they were. If the process dies instead, the ceremony stays `running` and
/// [`resume`] continues it.
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
    let lock = CeremonyLock::acquire(pool, id).await?;
    let mut tx = pool.begin().await?;
    state::insert(&mut tx, id, station_id, script, participants).await?;
    let event = ceremony_event(
        id,
        "station",
        "ceremony.started",
        &script.name,
        json!({ "participants": participants, "script_sha384": script.sha384 }),
    );
    audit::append(&mut tx, station_id, &event).await?;
    tx.commit().await?;
    info!(ceremony = %id, script = %script.name, "ceremony started");

    let ceremony = Ceremony::new(pool, station_id, id, script, participants);
    execute(ceremony, vault, inputs, BTreeSet::new(), lock).await
}

/// Resumes ceremony `id` after a restart. The same people in the same roles must take part.
///
/// Steps on record are not repeated, except where a later step needs what they formed in
/// memory: custodians then enter their components or shares again (also for keys the ceremony
/// generated, whose parts they were handed), and the vault is unsealed again.
pub async fn resume(
    pool: &PgPool,
    vault: &mut Vault,
    station_id: &str,
    id: Uuid,
    participants: &[Participant],
    inputs: &mut dyn CeremonyInputs,
) -> Result<CeremonyReport, CeremonyError> {
    let stored = state::load(pool, id).await?;
    if stored.state != "running" {
        return Err(CeremonyError::NotResumable {
            id,
            state: stored.state,
        });
    }
    let text = stored
        .script_text
        .clone()
        .ok_or_else(|| CeremonyError::NotResumable {
            id,
            state: "running without a stored script".to_owned(),
        })?;
    let script = CeremonyScript::parse(&text)?;
    check_same_people(id, &stored.participants, participants)?;
    let lock = CeremonyLock::acquire(pool, id).await?;

    let rerun = plan_rerun(&script, &stored.completed_steps);
    let mut tx = pool.begin().await?;
    state::touch(&mut tx, id).await?;
    let event = ceremony_event(
        id,
        "station",
        "ceremony.resumed",
        &script.name,
        json!({
            "completed_steps": stored.completed_steps,
            "repeated_steps": rerun,
        }),
    );
    audit::append(&mut tx, station_id, &event).await?;
    tx.commit().await?;
    info!(ceremony = %id, script = %script.name, "ceremony resumed");

    let ceremony = Ceremony::new(pool, station_id, id, &script, participants);
    execute(ceremony, vault, inputs, stored.completed_steps, lock).await
}

/// Aborts ceremony `id`, which is not running in any process now (for example after a crash),
/// at the request of participant `by`.
pub async fn abort(
    pool: &PgPool,
    station_id: &str,
    id: Uuid,
    by: &str,
) -> Result<(), CeremonyError> {
    let stored = state::load(pool, id).await?;
    if stored.state != "running" {
        return Err(CeremonyError::NotResumable {
            id,
            state: stored.state,
        });
    }
    if !stored.participants.iter().any(|p| p.name == by) {
        return Err(CeremonyError::Participants(format!(
            "{by:?} is not a participant of ceremony {id}; only a participant can abort it"
        )));
    }
    let lock = CeremonyLock::acquire(pool, id).await?;
    let outcome = format!("aborted by {by:?}");
    let mut tx = pool.begin().await?;
    state::finish(&mut tx, id, "aborted", &outcome).await?;
    let mut event = ceremony_event(
        id,
        by,
        "ceremony.aborted",
        &id.to_string(),
        json!({ "outcome": outcome }),
    );
    event.outcome = Outcome::Failure;
    audit::append(&mut tx, station_id, &event).await?;
    tx.commit().await?;
    lock.release().await;
    warn!(ceremony = %id, by, "ceremony aborted");
    Ok(())
}

/// Builds an audit event that names its ceremony.
pub(super) fn ceremony_event(
    id: Uuid,
    actor: &str,
    action: &str,
    subject: &str,
    details: serde_json::Value,
) -> AuditEvent {
    let mut details = details;
    details["ceremony"] = json!(id.to_string());
    AuditEvent {
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        outcome: Outcome::Success,
        details,
    }
}

async fn execute(
    mut ceremony: Ceremony<'_>,
    vault: &mut Vault,
    inputs: &mut dyn CeremonyInputs,
    completed: BTreeSet<usize>,
    lock: CeremonyLock,
) -> Result<CeremonyReport, CeremonyError> {
    let script = ceremony.script;
    let rerun = plan_rerun(script, &completed);
    let mut keys = Vec::new();
    let mut outcome = Ok(());
    for (index, step) in script.steps.iter().enumerate() {
        let number = index + 1;
        let done = completed.contains(&number);
        if done && !rerun.contains(&number) {
            continue;
        }
        match ceremony.run_step(vault, number, step, inputs, done).await {
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
    // Keys formed in memory are zeroized here, whatever the outcome.
    ceremony.forget_keys();

    let id = ceremony.id;
    let result = match outcome {
        Ok(()) => {
            ceremony
                .finish("completed", Outcome::Success, "completed", "station")
                .await?;
            info!(ceremony = %id, "ceremony completed");
            Ok(CeremonyReport { id, keys })
        }
        Err(error) => {
            vault.seal();
            let (state, actor) = match &error {
                CeremonyError::Aborted { by, .. } => ("aborted", by.clone()),
                CeremonyError::TimedOut { .. } => ("timed-out", "station".to_owned()),
                _ => ("aborted", "station".to_owned()),
            };
            warn!(ceremony = %id, %error, state, "ceremony ended without completing");
            ceremony
                .finish(state, Outcome::Failure, &error.to_string(), &actor)
                .await?;
            Err(error)
        }
    };
    lock.release().await;
    result
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

fn check_same_people(
    id: Uuid,
    started: &[Participant],
    resuming: &[Participant],
) -> Result<(), CeremonyError> {
    let started_set: BTreeSet<&Participant> = started.iter().collect();
    let resuming_set: BTreeSet<&Participant> = resuming.iter().collect();
    if started_set == resuming_set && started.len() == resuming.len() {
        return Ok(());
    }
    let names: Vec<String> = started
        .iter()
        .map(|p| format!("{}={}", p.name, p.role))
        .collect();
    Err(CeremonyError::ParticipantsChanged {
        id,
        started: names.join(", "),
    })
}

/// Chooses which steps on record must run again after a restart, because a step still to run
/// needs what they formed in memory: a key (`generate-key`, `enter-key`, `combine`), entered
/// parts (`enter-parts`) or the unsealed vault (`unseal`, `initialise`). A step chosen this way
/// may itself need an earlier step again, as `combine` needs its `enter-parts`. Nothing formed in
/// memory survives a restart.
pub(super) fn plan_rerun(script: &CeremonyScript, completed: &BTreeSet<usize>) -> BTreeSet<usize> {
    let steps = &script.steps;
    let key_producers: BTreeMap<&str, usize> = steps
        .iter()
        .enumerate()
        .filter_map(|(index, step)| step.forms_key().map(|key| (key, index + 1)))
        .collect();
    let part_producers: BTreeMap<&str, usize> = steps
        .iter()
        .enumerate()
        .filter_map(|(index, step)| step.forms_parts().map(|key| (key, index + 1)))
        .collect();

    let mut rerun = BTreeSet::new();
    let mut pending: Vec<usize> = (1..=steps.len())
        .filter(|number| !completed.contains(number))
        .collect();
    while let Some(number) = pending.pop() {
        let step = &steps[number - 1];
        let mut needed = Vec::new();
        if let Some(producer) = step.uses_key().and_then(|key| key_producers.get(key)) {
            needed.push(*producer);
        }
        if let Some(producer) = step.uses_parts().and_then(|key| part_producers.get(key)) {
            needed.push(*producer);
        }
        if step.needs_unsealed_vault()
            && let Some(position) = steps[..number - 1].iter().rposition(Step::unseals_vault)
        {
            needed.push(position + 1);
        }
        for producer in needed {
            if completed.contains(&producer) && rerun.insert(producer) {
                pending.push(producer);
            }
        }
    }
    rerun
}
