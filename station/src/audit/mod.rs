//! The audit trail: an append-only, hash-chained sequence of events per station in PostgreSQL.
//!
//! Every event carries the hash of the station's previous event, and its own hash covers all of
//! its fields ([`encoding`] documents the bytes). The database rejects UPDATE, DELETE and TRUNCATE
//! on the table, and [`verify`] walks every chain and names the first event that does not match,
//! which catches changes made by someone who got past the triggers.
//!
//! Fail closed: [`append`] writes inside the caller's transaction, so an action whose event cannot
//! be written is rolled back with it.
//!
//! Details are non-secret by contract. Callers pass only key check values, labels, KSNs, initial
//! key IDs, certificate fingerprints and record IDs, never key material: no clear keys, components,
//! shares, PINs or key blocks. [`append`] rejects detail fields whose names suggest key material,
//! which catches obvious mistakes but is no proof that a value is harmless.
//!
//! NOTE: a chain shows changed, removed or reordered events, but not events cut off from its end.
//! Signed checkpoints of the chain head will close that gap.

pub mod encoding;
mod verify;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha384};
use sqlx::{PgConnection, PgPool};

pub use encoding::{GENESIS_HASH, HASH_LEN};
pub use verify::{ChainReport, Mismatch, Problem, VerifyReport, verify};

use crate::db::{self, DbError};

/// Errors of the audit trail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A text field of the event is empty, too long or contains control characters, which is a bug
    /// in the caller.
    #[error("invalid audit {field} {value:?}: {reason}")]
    InvalidField {
        /// The field: station ID, actor, action or subject.
        field: &'static str,
        /// The value given, shortened to 80 characters.
        value: String,
        /// The problem with it.
        reason: &'static str,
    },

    /// The details are not a JSON object, which is a bug in the caller.
    #[error(
        "audit details must be a JSON object, not {found}; pass them as json!({{\"name\": value}})"
    )]
    DetailsNotObject {
        /// The JSON type given.
        found: &'static str,
    },

    /// A detail's name suggests key material, which the trail must never contain. This is a bug in
    /// the caller.
    #[error(
        "audit detail {path:?} looks like key material; the audit trail holds only KCVs, labels, \
         KSNs and IDs, so pass a KCV or a label instead"
    )]
    SecretLikeDetail {
        /// Path of the field, as `outer.inner`.
        path: String,
    },

    /// The details contain a NUL character, which PostgreSQL cannot store in text or jsonb.
    #[error(
        "audit detail {path:?} contains a NUL character, which PostgreSQL cannot store; remove it"
    )]
    NulInDetails {
        /// Path of the string, as `outer.inner`.
        path: String,
    },

    /// [`append`] ran outside a transaction, so the chain lock would not last until the event
    /// commits. This is a bug in the caller.
    #[error(
        "audit::append was called outside a transaction, where the chain lock does not last until \
         commit; begin a transaction and append inside it"
    )]
    NotInTransaction,

    /// The pool gave no connection, for example because it was busy.
    #[error(transparent)]
    Db(#[from] DbError),

    /// A query on the audit table failed.
    #[error("audit trail query failed: {0}")]
    Query(#[from] sqlx::Error),
}

/// Whether the action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The action took effect.
    Success,
    /// The action failed or was refused.
    Failure,
}

impl Outcome {
    /// Returns the stored and hashed form: `success` or `failure`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// One action of consequence, before it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// The user (`operator:alice`) or station (`station:line-1`) that acted.
    pub actor: String,
    /// The action, as a dotted name such as `injection.confirmed`.
    pub action: String,
    /// The subject of the action, such as `injection:42` or `bdk:LINE-BDK`, or empty.
    pub subject: String,
    /// Whether it succeeded.
    pub outcome: Outcome,
    /// Non-secret details as a JSON object: KCVs, labels, KSNs, IDs. Never key material.
    pub details: Value,
}

/// An event as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Row ID, unique across stations.
    pub id: i64,
    /// Station whose chain contains the event.
    pub station_id: String,
    /// Position in that chain, from 1.
    pub seq: i64,
    /// The database server's clock when the event was written, at microsecond precision.
    pub occurred_at: DateTime<Utc>,
    /// The hash of the chain's previous event, or [`GENESIS_HASH`].
    pub prev_hash: [u8; HASH_LEN],
    /// This event's hash.
    pub hash: [u8; HASH_LEN],
}

/// Maximum length of a station ID, actor, action or subject, in bytes.
pub const MAX_FIELD_LEN: usize = 256;

/// First key of the two-key advisory lock that serialises appends to one station's chain. The
/// second key is the first four bytes of SHA-384 over the station ID, read as a big-endian `i32`.
/// Two station IDs that share those bytes only wait for each other.
const CHAIN_LOCK_CLASS: i32 = 0x4155_4454; // "AUDT"

/// Detail names that suggest key material, compared after lower-casing and turning `-` into `_`.
const SECRET_DETAIL_NAMES: &[&str] = &[
    "key",
    "clear_key",
    "plain_key",
    "key_value",
    "key_block",
    "private_key",
    "secret",
    "password",
    "passphrase",
    "pin",
    "component",
    "share",
    "ipek",
    "initial_key",
    "bdk",
    "kek",
    "kbpk",
];

/// Appends `event` to the chain of `station_id`, inside the caller's transaction.
///
/// The append takes a transaction-scoped advisory lock on the chain, so concurrent appends from
/// several tasks or stations wait for each other instead of forking it. The lock is held until the
/// caller commits or rolls back, so commit soon after appending. If the caller rolls back, the
/// event disappears with the action it describes.
///
/// The transaction must use READ COMMITTED, PostgreSQL's default. Under REPEATABLE READ or
/// SERIALIZABLE the snapshot can predate the lock, and a concurrent append then makes this one fail
/// on the unique `(station_id, seq)` key instead of forking the chain.
pub async fn append(
    conn: &mut PgConnection,
    station_id: &str,
    event: &AuditEvent,
) -> Result<AuditRecord, AuditError> {
    check_field("station ID", station_id, false)?;
    check_field("actor", &event.actor, false)?;
    check_field("action", &event.action, false)?;
    check_field("subject", &event.subject, true)?;
    check_details(&event.details)?;
    let details_json = encoding::canonical_json(&event.details);

    let lock_txid: i64 = sqlx::query_scalar(
        "SELECT txid_current() FROM (SELECT pg_advisory_xact_lock($1, $2)) AS chain_lock",
    )
    .bind(CHAIN_LOCK_CLASS)
    .bind(chain_lock_key(station_id))
    .fetch_one(&mut *conn)
    .await?;

    let (head_txid, occurred_at, head_seq, head_hash): (i64, DateTime<Utc>, Option<i64>, Option<Vec<u8>>) = sqlx::query_as(
        "SELECT txid_current(), date_trunc('microseconds', clock_timestamp()), head.seq, head.hash \
         FROM (SELECT 1) AS one \
         LEFT JOIN LATERAL (SELECT seq, hash FROM audit_event WHERE station_id = $1 ORDER BY seq DESC LIMIT 1) AS head ON true",
    )
    .bind(station_id)
    .fetch_one(&mut *conn)
    .await?;
    // Outside a transaction every statement gets its own transaction ID, and the lock taken by the
    // first statement is already released.
    if head_txid != lock_txid {
        return Err(AuditError::NotInTransaction);
    }

    let seq = head_seq.unwrap_or(0) + 1;
    let prev_hash: [u8; HASH_LEN] = match head_hash {
        // `verify` reports a stored hash of the wrong length. Chaining onto a zero hash keeps the
        // trail writable without hiding the damage.
        Some(hash) => hash.try_into().unwrap_or(GENESIS_HASH),
        None => GENESIS_HASH,
    };
    let hash = encoding::event_hash(&encoding::HashInput {
        station_id,
        seq,
        occurred_at,
        actor: &event.actor,
        action: &event.action,
        subject: &event.subject,
        outcome: event.outcome.as_str(),
        details_json: &details_json,
        prev_hash: &prev_hash,
    });

    let id: i64 = sqlx::query_scalar(
        "INSERT INTO audit_event \
         (station_id, seq, occurred_at, actor, action, subject, outcome, details_json, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(station_id)
    .bind(seq)
    .bind(occurred_at)
    .bind(&event.actor)
    .bind(&event.action)
    .bind(&event.subject)
    .bind(event.outcome.as_str())
    .bind(&details_json)
    .bind(&prev_hash[..])
    .bind(&hash[..])
    .fetch_one(&mut *conn)
    .await?;

    tracing::debug!(id, station_id, seq, action = %event.action, "audit event appended");
    Ok(AuditRecord {
        id,
        station_id: station_id.to_owned(),
        seq,
        occurred_at,
        prev_hash,
        hash,
    })
}

/// Appends `event` in a transaction of its own, for actions that write nothing else to the
/// database. The event is committed when this returns `Ok`.
pub async fn record(
    pool: &PgPool,
    station_id: &str,
    event: &AuditEvent,
) -> Result<AuditRecord, AuditError> {
    let mut tx = db::begin(pool).await?;
    let record = append(&mut tx, station_id, event).await?;
    tx.commit().await?;
    Ok(record)
}

fn chain_lock_key(station_id: &str) -> i32 {
    let digest = Sha384::digest(station_id.as_bytes());
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn check_field(field: &'static str, value: &str, may_be_empty: bool) -> Result<(), AuditError> {
    let reason = if value.is_empty() && !may_be_empty {
        Some("it must not be empty")
    } else if value.len() > MAX_FIELD_LEN {
        Some("it is longer than 256 bytes")
    } else if value.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(AuditError::InvalidField {
            field,
            value: value.chars().take(80).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

fn check_details(details: &Value) -> Result<(), AuditError> {
    let found = match details {
        Value::Object(_) => return check_detail_value("", details),
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
    };
    Err(AuditError::DetailsNotObject { found })
}

fn check_detail_value(path: &str, value: &Value) -> Result<(), AuditError> {
    match value {
        Value::Object(map) => {
            for (name, item) in map {
                let item_path = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                let normalised = name.to_lowercase().replace('-', "_");
                if SECRET_DETAIL_NAMES.contains(&normalised.as_str()) {
                    return Err(AuditError::SecretLikeDetail { path: item_path });
                }
                if name.contains('\0') {
                    return Err(AuditError::NulInDetails { path: item_path });
                }
                check_detail_value(&item_path, item)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                check_detail_value(&format!("{path}[{index}]"), item)?;
            }
            Ok(())
        }
        Value::String(text) if text.contains('\0') => Err(AuditError::NulInDetails {
            path: path.to_owned(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_detail_names_rejected_at_any_depth() {
        for details in [
            json!({"key": "00"}),
            json!({"Clear-Key": "00"}),
            json!({"ceremony": {"component": "00"}}),
            json!({"steps": [{"share": 1}]}),
        ] {
            assert!(
                matches!(
                    check_details(&details),
                    Err(AuditError::SecretLikeDetail { .. })
                ),
                "{details} accepted"
            );
        }
    }

    #[test]
    fn secret_detail_error_names_path() {
        let err = check_details(&json!({"steps": [{"share": 1}]})).expect_err("share rejected");
        assert_eq!(
            err.to_string(),
            "audit detail \"steps[0].share\" looks like key material; the audit trail holds only KCVs, \
             labels, KSNs and IDs, so pass a KCV or a label instead"
        );
    }

    #[test]
    fn ordinary_details_accepted() {
        let details = json!({"kcv": "7AD386", "kcv_method": "cmac", "bdk_label": "LINE", "ksn": "FFFF9876543210E00000"});
        assert!(check_details(&details).is_ok());
    }

    #[test]
    fn details_must_be_object() {
        let err = check_details(&json!(["a"])).expect_err("array rejected");
        assert!(err.to_string().contains("not an array"), "{err}");
    }

    #[test]
    fn nul_in_detail_rejected() {
        let err = check_details(&json!({"serial": "A\u{0}B"})).expect_err("NUL rejected");
        assert!(
            matches!(err, AuditError::NulInDetails { ref path } if path == "serial"),
            "{err}"
        );
    }

    #[test]
    fn fields_checked() {
        assert!(check_field("actor", "", false).is_err());
        assert!(check_field("subject", "", true).is_ok());
        assert!(check_field("actor", "a\nb", false).is_err());
        let long = "x".repeat(MAX_FIELD_LEN + 1);
        let err = check_field("action", &long, false).expect_err("long value rejected");
        assert!(
            err.to_string().starts_with("invalid audit action \"xxxx"),
            "{err}"
        );
    }

    #[test]
    fn chain_lock_key_is_stable() {
        assert_eq!(chain_lock_key("line-1"), chain_lock_key("line-1"));
        assert_ne!(chain_lock_key("line-1"), chain_lock_key("line-2"));
    }
}
