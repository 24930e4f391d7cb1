//! Allocating AES DUKPT derivation IDs per BDK.

use serde_json::json;
use sqlx::PgPool;

use super::injection::{INJECTION_COLUMNS, InjectionRow, injection_audit_event};
use super::{DeviceInfo, Injection, StoreError, check_device, check_text};
use crate::audit::{self, Outcome};
use crate::db;

/// Largest derivation ID: the field has 4 bytes.
const MAX_DERIVATION_ID: i64 = 0xFFFF_FFFF;

/// Allocates the next derivation ID of the BDK `bdk_label` (BDK ID `bdk_id`) for `device` on
/// `port`, records the injection as allocated and appends its audit event, all in one transaction.
///
/// Derivation IDs of a BDK ID start at 1 and go up by one per allocation, shared by every station
/// using this database. The counter row is locked until commit, so concurrent allocations wait
/// for each other. An allocation that rolls back leaves no gap, and a committed one is never
/// handed out again.
pub async fn allocate_identity(
    pool: &PgPool,
    station_id: &str,
    actor: &str,
    bdk_label: &str,
    bdk_id: [u8; 4],
    device: &DeviceInfo,
    port: &str,
) -> Result<Injection, StoreError> {
    check_text("station ID", station_id, false)?;
    check_text("actor", actor, false)?;
    check_text("BDK label", bdk_label, false)?;
    check_text("port", port, false)?;
    check_device(device)?;

    let mut tx = db::begin(pool).await?;

    let next: Option<i64> = sqlx::query_scalar(
        "INSERT INTO derivation_id_counter AS counter (bdk_id, bdk_label, last_derivation_id) VALUES ($1, $2, 1) \
         ON CONFLICT (bdk_id) DO UPDATE SET last_derivation_id = counter.last_derivation_id + 1 \
         WHERE counter.last_derivation_id < $3 AND counter.bdk_label = EXCLUDED.bdk_label \
         RETURNING last_derivation_id",
    )
    .bind(&bdk_id[..])
    .bind(bdk_label)
    .bind(MAX_DERIVATION_ID)
    .fetch_optional(&mut *tx)
    .await?;

    let derivation_id = match next {
        Some(next) => next,
        None => {
            // The conflicting row exists and is locked by the upsert: find out which rule held it.
            let owner: String =
                sqlx::query_scalar("SELECT bdk_label FROM derivation_id_counter WHERE bdk_id = $1")
                    .bind(&bdk_id[..])
                    .fetch_one(&mut *tx)
                    .await?;
            let err = if owner != bdk_label {
                StoreError::BdkIdTaken {
                    bdk_id,
                    owner,
                    requested: bdk_label.to_owned(),
                }
            } else {
                StoreError::IdentitiesExhausted {
                    bdk_label: bdk_label.to_owned(),
                    bdk_id,
                }
            };
            tracing::error!(error = %err, "derivation ID allocation failed");
            return Err(err);
        }
    };

    let row: InjectionRow = sqlx::query_as(&format!(
        "INSERT INTO injection \
         (station_id, bdk_label, bdk_id, derivation_id, device_vendor, device_model, device_serial, device_firmware, port, state, allocated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'allocated', now()) RETURNING {INJECTION_COLUMNS}"
    ))
    .bind(station_id)
    .bind(bdk_label)
    .bind(&bdk_id[..])
    .bind(derivation_id)
    .bind(&device.vendor)
    .bind(&device.model)
    .bind(&device.serial)
    .bind(&device.firmware)
    .bind(port)
    .fetch_one(&mut *tx)
    .await?;
    let injection = row.into_injection()?;

    let event = injection_audit_event(
        actor,
        "injection.allocated",
        &injection,
        Outcome::Success,
        json!({
            "device_vendor": injection.device.vendor,
            "device_model": injection.device.model,
            "device_firmware": injection.device.firmware,
            "port": injection.port,
        }),
    );
    audit::append(&mut tx, station_id, &event).await?;
    tx.commit().await?;

    tracing::info!(
        injection_id = injection.id,
        bdk_label,
        initial_key_id = %hex::encode_upper(injection.initial_key_id()),
        serial = %injection.device.serial,
        "device identity allocated"
    );
    Ok(injection)
}
