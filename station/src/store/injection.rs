//! The injection state machine: recording each step with its audit event, and reading injections
//! back for reconciliation.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

use super::{DeviceInfo, Injection, InjectionState, RecordedKcv, StoreError, check_text};
use crate::audit::{self, AuditEvent, Outcome};
use crate::db;

/// Columns read into [`InjectionRow`], in its field order.
pub(super) const INJECTION_COLUMNS: &str = "id, station_id, bdk_label, bdk_id, derivation_id, device_vendor, device_model, \
     device_serial, device_firmware, port, state, kcv_hex, kcv_method, error, allocated_at, sent_at, finished_at";

/// Maximum length of a stored failure reason, in characters. Longer reasons are cut.
const MAX_REASON_CHARS: usize = 2000;

#[derive(sqlx::FromRow)]
pub(super) struct InjectionRow {
    id: i64,
    station_id: String,
    bdk_label: String,
    bdk_id: Vec<u8>,
    derivation_id: i64,
    device_vendor: String,
    device_model: String,
    device_serial: String,
    device_firmware: String,
    port: String,
    state: String,
    kcv_hex: Option<String>,
    kcv_method: Option<String>,
    error: Option<String>,
    allocated_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl InjectionRow {
    pub(super) fn into_injection(self) -> Result<Injection, StoreError> {
        let id = self.id;
        let corrupt =
            |field: &'static str, value: String| StoreError::CorruptRow { id, field, value };
        let bdk_id: [u8; 4] = self
            .bdk_id
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("bdk_id", hex::encode_upper(&self.bdk_id)))?;
        let derivation_id = u32::try_from(self.derivation_id)
            .ok()
            .filter(|value| *value != 0)
            .ok_or_else(|| corrupt("derivation_id", self.derivation_id.to_string()))?;
        let state = InjectionState::parse(&self.state)
            .ok_or_else(|| corrupt("state", self.state.clone()))?;
        let kcv = match (self.kcv_hex, self.kcv_method) {
            (Some(hex), Some(method)) => Some(RecordedKcv { hex, method }),
            _ => None,
        };
        Ok(Injection {
            id,
            station_id: self.station_id,
            bdk_label: self.bdk_label,
            bdk_id,
            derivation_id: derivation_id.to_be_bytes(),
            device: DeviceInfo {
                vendor: self.device_vendor,
                model: self.device_model,
                serial: self.device_serial,
                firmware: self.device_firmware,
            },
            port: self.port,
            state,
            kcv,
            error: self.error,
            allocated_at: self.allocated_at,
            sent_at: self.sent_at,
            finished_at: self.finished_at,
        })
    }
}

/// Builds the audit event of one injection step. Every step's details name the injection and its
/// identity; `extra` adds the step's own fields.
pub(super) fn injection_audit_event(
    actor: &str,
    action: &str,
    injection: &Injection,
    outcome: Outcome,
    extra: Value,
) -> AuditEvent {
    let mut details = json!({
        "injection_id": injection.id,
        "bdk_label": injection.bdk_label,
        "bdk_id": hex::encode_upper(injection.bdk_id),
        "derivation_id": hex::encode_upper(injection.derivation_id),
        "initial_key_id": hex::encode_upper(injection.initial_key_id()),
        "device_serial": injection.device.serial,
    });
    if let (Value::Object(details), Value::Object(extra)) = (&mut details, extra) {
        details.extend(extra);
    }
    AuditEvent {
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: format!("injection:{}", injection.id),
        outcome,
        details,
    }
}

/// Records that the key block of injection `injection_id` was sent to the device.
pub async fn mark_sent(
    pool: &PgPool,
    station_id: &str,
    actor: &str,
    injection_id: i64,
) -> Result<(), StoreError> {
    transition(pool, station_id, actor, injection_id, Step::Sent).await
}

/// Records that the device confirmed the key of injection `injection_id` with KCV `kcv_hex`
/// (2 to 5 bytes as hex, stored upper-case) computed by `kcv_method`.
///
/// The caller has already compared the device's KCV with the expected one.
pub async fn mark_confirmed(
    pool: &PgPool,
    station_id: &str,
    actor: &str,
    injection_id: i64,
    kcv_hex: &str,
    kcv_method: &str,
) -> Result<(), StoreError> {
    let kcv_ok = kcv_hex.len().is_multiple_of(2)
        && (4..=10).contains(&kcv_hex.len())
        && kcv_hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !kcv_ok {
        return Err(StoreError::InvalidInput {
            field: "KCV",
            value: kcv_hex.chars().take(80).collect(),
            reason: "a KCV is 2 to 5 bytes written as 4 to 10 hex digits",
        });
    }
    check_text("KCV method", kcv_method, false)?;
    let kcv = RecordedKcv {
        hex: kcv_hex.to_ascii_uppercase(),
        method: kcv_method.to_owned(),
    };
    transition(pool, station_id, actor, injection_id, Step::Confirmed(kcv)).await
}

/// Records that injection `injection_id` failed or was abandoned, which burns its identity.
///
/// `reason` is stored and audited as given, except that control characters other than newline and
/// tab become U+FFFD and it is cut at 2000 characters, so that an odd error text cannot stop the
/// identity from being burned.
pub async fn mark_failed(
    pool: &PgPool,
    station_id: &str,
    actor: &str,
    injection_id: i64,
    reason: &str,
) -> Result<(), StoreError> {
    if reason.trim().is_empty() {
        return Err(StoreError::InvalidInput {
            field: "failure reason",
            value: reason.to_owned(),
            reason: "say why the injection failed",
        });
    }
    let reason: String = reason
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .take(MAX_REASON_CHARS)
        .collect();
    transition(pool, station_id, actor, injection_id, Step::Failed(reason)).await
}

/// Returns the station's injections that were allocated or sent but never confirmed or failed,
/// oldest first, for reconciliation after a restart.
///
/// An allocated one never reached the device and can be marked failed. A sent one may have reached
/// it: ask the device (or an operator) which key it stores before confirming or failing it. Call this
/// before the station starts new injections, which are unconfirmed while they run.
pub async fn unconfirmed_injections(
    pool: &PgPool,
    station_id: &str,
) -> Result<Vec<Injection>, StoreError> {
    let mut conn = db::acquire(pool).await?;
    let rows: Vec<InjectionRow> = sqlx::query_as(&format!(
        "SELECT {INJECTION_COLUMNS} FROM injection WHERE station_id = $1 AND state IN ('allocated', 'sent') ORDER BY id"
    ))
    .bind(station_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(InjectionRow::into_injection).collect()
}

/// Returns the injection with ID `injection_id`.
pub async fn injection(pool: &PgPool, injection_id: i64) -> Result<Injection, StoreError> {
    let mut conn = db::acquire(pool).await?;
    fetch(&mut conn, injection_id, false).await
}

enum Step {
    Sent,
    Confirmed(RecordedKcv),
    Failed(String),
}

impl Step {
    fn target(&self) -> InjectionState {
        match self {
            Step::Sent => InjectionState::Sent,
            Step::Confirmed(_) => InjectionState::Confirmed,
            Step::Failed(_) => InjectionState::Failed,
        }
    }
}

/// Moves an injection to the step's state and appends the step's audit event, in one transaction.
async fn transition(
    pool: &PgPool,
    station_id: &str,
    actor: &str,
    injection_id: i64,
    step: Step,
) -> Result<(), StoreError> {
    check_text("station ID", station_id, false)?;
    check_text("actor", actor, false)?;
    let to = step.target();

    let mut tx = db::begin(pool).await?;
    let current = fetch(&mut tx, injection_id, true).await?;
    if current.station_id != station_id {
        return Err(StoreError::WrongStation {
            id: injection_id,
            owner: current.station_id,
            station_id: station_id.to_owned(),
        });
    }
    if !current.state.can_become(to) {
        let err = StoreError::InvalidTransition {
            id: injection_id,
            from: current.state,
            to,
        };
        tracing::error!(error = %err, "injection step rejected");
        return Err(err);
    }

    let (action, outcome, extra) = match &step {
        Step::Sent => {
            sqlx::query("UPDATE injection SET state = 'sent', sent_at = now() WHERE id = $1")
                .bind(injection_id)
                .execute(&mut *tx)
                .await?;
            ("injection.sent", Outcome::Success, json!({}))
        }
        Step::Confirmed(kcv) => {
            sqlx::query(
                "UPDATE injection SET state = 'confirmed', kcv_hex = $2, kcv_method = $3, finished_at = now() WHERE id = $1",
            )
            .bind(injection_id)
            .bind(&kcv.hex)
            .bind(&kcv.method)
            .execute(&mut *tx)
            .await?;
            (
                "injection.confirmed",
                Outcome::Success,
                json!({ "kcv": kcv.hex, "kcv_method": kcv.method }),
            )
        }
        Step::Failed(reason) => {
            sqlx::query("UPDATE injection SET state = 'failed', error = $2, finished_at = now() WHERE id = $1")
                .bind(injection_id)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
            (
                "injection.failed",
                Outcome::Failure,
                json!({ "reason": reason, "previous_state": current.state.as_str(), "identity": "burned" }),
            )
        }
    };

    let event = injection_audit_event(actor, action, &current, outcome, extra);
    audit::append(&mut tx, station_id, &event).await?;
    tx.commit().await?;
    tracing::info!(injection_id, state = %to, "injection state recorded");
    Ok(())
}

async fn fetch(
    conn: &mut PgConnection,
    injection_id: i64,
    for_update: bool,
) -> Result<Injection, StoreError> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let row: Option<InjectionRow> = sqlx::query_as(&format!(
        "SELECT {INJECTION_COLUMNS} FROM injection WHERE id = $1{lock}"
    ))
    .bind(injection_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.ok_or(StoreError::NotFound { id: injection_id })?
        .into_injection()
}
