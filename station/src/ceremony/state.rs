//! A ceremony's progress in PostgreSQL: which steps are on record, who takes part, and the
//! script text. Nothing here is secret, so an interrupted ceremony can resume from it.
//!
//! While a process runs a ceremony, it holds a session-level advisory lock on the ceremony on a
//! connection of its own. A crash closes the connection and frees the lock, so the ceremony can
//! be resumed, while a second process trying to run the same ceremony is rejected.

use std::collections::BTreeSet;

use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool, Row};
use uuid::Uuid;

use super::script::CeremonyScript;
use super::{CeremonyError, Participant};

/// First key of the advisory locks on running ceremonies ("CRMN").
const CEREMONY_LOCK_CLASS: i32 = 0x4352_4D4E;

/// A ceremony's stored state.
#[derive(Debug, Clone)]
pub struct StoredCeremony {
    /// Identifier.
    pub id: Uuid,
    /// Station that started it.
    pub station_id: String,
    /// Script name.
    pub script_name: String,
    /// Script text, if the ceremony was started by a station that stores it.
    pub script_text: Option<String>,
    /// The participants and their roles.
    pub participants: Vec<Participant>,
    /// `running`, `completed`, `aborted` or `timed-out`.
    pub state: String,
    /// Numbers of the steps whose effect is on record.
    pub completed_steps: BTreeSet<usize>,
    /// When it started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// When it ended, if it did.
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Last step or resume.
    pub last_activity_at: chrono::DateTime<chrono::Utc>,
    /// How it ended, in words.
    pub outcome: Option<String>,
}

/// The lock that marks a ceremony as running in this process; released by [`CeremonyLock::release`]
/// or by the connection closing when the process dies.
pub struct CeremonyLock {
    conn: PgConnection,
}

impl CeremonyLock {
    /// Takes the lock on ceremony `id`, or fails with [`CeremonyError::RunningElsewhere`].
    pub async fn acquire(pool: &PgPool, id: Uuid) -> Result<Self, CeremonyError> {
        // A connection of its own, detached from the pool, so that the session lock ends with
        // the connection and never stays behind on a pooled connection.
        let mut conn = pool.acquire().await?.detach();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(CEREMONY_LOCK_CLASS)
            .bind(lock_key(id))
            .fetch_one(&mut conn)
            .await?;
        if !locked {
            let _ = conn.close().await;
            return Err(CeremonyError::RunningElsewhere(id));
        }
        Ok(Self { conn })
    }

    /// Releases the lock by closing its connection.
    pub async fn release(self) {
        if let Err(error) = self.conn.close().await {
            tracing::warn!(%error, "closing the ceremony lock connection failed; the server frees the lock when the connection drops");
        }
    }
}

fn lock_key(id: Uuid) -> i32 {
    let bytes = id.as_bytes();
    i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Inserts a running ceremony.
pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    station_id: &str,
    script: &CeremonyScript,
    participants: &[Participant],
) -> Result<(), CeremonyError> {
    let idle_seconds = i32::try_from(script.idle_timeout.as_secs()).unwrap_or(i32::MAX);
    sqlx::query(
        "INSERT INTO ceremonies (id, station_id, script_name, script_sha384, purpose, participants,
             state, script_text, idle_timeout_seconds)
         VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $8)",
    )
    .bind(id)
    .bind(station_id)
    .bind(&script.name)
    .bind(&script.sha384)
    .bind(&script.purpose)
    .bind(json!(participants))
    .bind(&script.text)
    .bind(idle_seconds)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records step `number` as done, in the transaction of its audit event.
pub async fn complete_step(
    conn: &mut PgConnection,
    id: Uuid,
    number: usize,
) -> Result<(), CeremonyError> {
    let number = i32::try_from(number).unwrap_or(i32::MAX);
    sqlx::query(
        "UPDATE ceremonies SET completed_steps = array_append(completed_steps, $2),
             last_activity_at = now()
         WHERE id = $1 AND NOT ($2 = ANY (completed_steps))",
    )
    .bind(id)
    .bind(number)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records that the ceremony is active again, after a resume.
pub async fn touch(conn: &mut PgConnection, id: Uuid) -> Result<(), CeremonyError> {
    sqlx::query("UPDATE ceremonies SET last_activity_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Ends a running ceremony with `state` (`completed`, `aborted` or `timed-out`).
pub async fn finish(
    conn: &mut PgConnection,
    id: Uuid,
    state: &str,
    outcome: &str,
) -> Result<(), CeremonyError> {
    sqlx::query(
        "UPDATE ceremonies SET state = $2, outcome = $3, finished_at = now(), last_activity_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(state)
    .bind(outcome)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Reads one ceremony.
pub async fn load(pool: &PgPool, id: Uuid) -> Result<StoredCeremony, CeremonyError> {
    let row = sqlx::query(&format!("{SELECT_CEREMONY} WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(CeremonyError::NotFound(id))?;
    from_row(&row)
}

/// Lists ceremonies, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<StoredCeremony>, CeremonyError> {
    let rows = sqlx::query(&format!("{SELECT_CEREMONY} ORDER BY started_at DESC"))
        .fetch_all(pool)
        .await?;
    rows.iter().map(from_row).collect()
}

const SELECT_CEREMONY: &str =
    "SELECT id, station_id, script_name, script_text, participants, state,
    completed_steps, started_at, finished_at, last_activity_at, outcome FROM ceremonies";

fn from_row(row: &sqlx::postgres::PgRow) -> Result<StoredCeremony, CeremonyError> {
    let id: Uuid = row.get("id");
    let participants: serde_json::Value = row.get("participants");
    let participants: Vec<Participant> = serde_json::from_value(participants).map_err(|error| {
        CeremonyError::InvalidScript(format!(
            "stored participants of ceremony {id} are unreadable: {error}"
        ))
    })?;
    let steps: Vec<i32> = row.get("completed_steps");
    Ok(StoredCeremony {
        id,
        station_id: row.get("station_id"),
        script_name: row.get("script_name"),
        script_text: row.get("script_text"),
        participants,
        state: row.get("state"),
        completed_steps: steps
            .into_iter()
            .filter_map(|step| usize::try_from(step).ok())
            .collect(),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        last_activity_at: row.get("last_activity_at"),
        outcome: row.get("outcome"),
    })
}
