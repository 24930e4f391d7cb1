//! Walking every station's chain and naming the first event that does not match.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use super::AuditError;
use super::encoding::{self, GENESIS_HASH, HASH_LEN};
use crate::db;

/// Rows read per query while walking the table.
const PAGE_SIZE: i64 = 1000;

/// The result of [`verify`]: one report per station, ordered by station ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// One entry per station that has events.
    pub chains: Vec<ChainReport>,
}

impl VerifyReport {
    /// True when every chain matched to its last event.
    pub fn is_intact(&self) -> bool {
        self.chains
            .iter()
            .all(|chain| chain.first_mismatch.is_none())
    }

    /// Returns the first mismatch, taking stations in order.
    pub fn first_mismatch(&self) -> Option<&Mismatch> {
        self.chains
            .iter()
            .find_map(|chain| chain.first_mismatch.as_ref())
    }

    /// Total events that matched.
    pub fn events_checked(&self) -> u64 {
        self.chains.iter().map(|chain| chain.events_checked).sum()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.chains.is_empty() {
            return write!(f, "the audit trail is empty");
        }
        for (index, chain) in self.chains.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{chain}")?;
        }
        Ok(())
    }
}

/// The result for one station's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// The station.
    pub station_id: String,
    /// Events that matched, from the start of the chain up to the first mismatch or the end.
    pub events_checked: u64,
    /// The first event that does not match; events after it are not checked.
    pub first_mismatch: Option<Mismatch>,
}

impl fmt::Display for ChainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.first_mismatch {
            None => write!(
                f,
                "station {}: {} events verified",
                self.station_id, self.events_checked
            ),
            Some(mismatch) => write!(
                f,
                "station {}: {} events verified, then {mismatch}",
                self.station_id, self.events_checked
            ),
        }
    }
}

/// An event that does not match its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Row ID of the event.
    pub id: i64,
    /// Its station.
    pub station_id: String,
    /// Its sequence number as stored.
    pub seq: i64,
    /// The reason it does not match.
    pub problem: Problem,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event {} (station {}, seq {}) does not match: {}",
            self.id, self.station_id, self.seq, self.problem
        )
    }
}

/// Reason an event does not match its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The sequence number is not the next one: events before it were removed or reordered.
    SeqGap {
        /// The sequence number the chain needed here.
        expected: i64,
    },
    /// The stored previous hash is not the hash of the event before it.
    PrevHash,
    /// The stored hash is not the hash of the stored fields: the event was changed.
    Hash,
    /// The `details` column does not hold the same JSON as the hashed `details_json` text.
    Details,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::SeqGap { expected } => {
                write!(
                    f,
                    "expected seq {expected}, so events before it were removed or reordered"
                )
            }
            Problem::PrevHash => write!(
                f,
                "its previous hash is not the hash of the event before it"
            ),
            Problem::Hash => write!(
                f,
                "its hash does not cover its stored fields, so it was changed after it was written"
            ),
            Problem::Details => {
                write!(f, "its details column differs from the hashed details text")
            }
        }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    station_id: String,
    seq: i64,
    occurred_at: DateTime<Utc>,
    actor: String,
    action: String,
    subject: String,
    outcome: String,
    details_json: String,
    details: Option<Value>,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

/// Walks every station's chain in sequence order and reports, per station, how many events
/// matched and the first that does not.
///
/// Reads in pages of 1000 rows, so memory use does not grow with the trail.
pub async fn verify(pool: &PgPool) -> Result<VerifyReport, AuditError> {
    let mut conn = db::acquire(pool).await?;
    let mut chains: Vec<ChainReport> = Vec::new();
    let mut prev_hash = GENESIS_HASH.to_vec();
    let mut cursor: Option<(String, i64, i64)> = None;

    loop {
        let rows: Vec<Row> = match &cursor {
            None => sqlx::query_as(
                "SELECT id, station_id, seq, occurred_at, actor, action, subject, outcome, details_json, details, prev_hash, hash \
                 FROM audit_event ORDER BY station_id, seq, id LIMIT $1",
            )
            .bind(PAGE_SIZE)
            .fetch_all(&mut *conn)
            .await?,
            Some((station_id, seq, id)) => sqlx::query_as(
                "SELECT id, station_id, seq, occurred_at, actor, action, subject, outcome, details_json, details, prev_hash, hash \
                 FROM audit_event WHERE (station_id, seq, id) > ($1, $2, $3) ORDER BY station_id, seq, id LIMIT $4",
            )
            .bind(station_id)
            .bind(seq)
            .bind(id)
            .bind(PAGE_SIZE)
            .fetch_all(&mut *conn)
            .await?,
        };
        let Some(last) = rows.last() else { break };
        cursor = Some((last.station_id.clone(), last.seq, last.id));

        for row in &rows {
            let starts_chain = chains
                .last()
                .is_none_or(|chain| chain.station_id != row.station_id);
            if starts_chain {
                chains.push(ChainReport {
                    station_id: row.station_id.clone(),
                    events_checked: 0,
                    first_mismatch: None,
                });
                prev_hash = GENESIS_HASH.to_vec();
            }
            let chain = chains.last_mut().expect("a chain was pushed for this row");
            if chain.first_mismatch.is_some() {
                continue;
            }
            let expected_seq = i64::try_from(chain.events_checked)
                .unwrap_or(i64::MAX)
                .saturating_add(1);
            match check_row(row, expected_seq, &prev_hash) {
                Some(problem) => {
                    tracing::warn!(id = row.id, station_id = %row.station_id, seq = row.seq, %problem, "audit event does not match its chain");
                    chain.first_mismatch = Some(Mismatch {
                        id: row.id,
                        station_id: row.station_id.clone(),
                        seq: row.seq,
                        problem,
                    });
                }
                None => {
                    chain.events_checked += 1;
                    prev_hash.clone_from(&row.hash);
                }
            }
        }
    }

    let report = VerifyReport { chains };
    tracing::info!(
        stations = report.chains.len(),
        events_checked = report.events_checked(),
        intact = report.is_intact(),
        "audit trail verified"
    );
    Ok(report)
}

fn check_row(row: &Row, expected_seq: i64, prev_hash: &[u8]) -> Option<Problem> {
    if row.seq != expected_seq {
        return Some(Problem::SeqGap {
            expected: expected_seq,
        });
    }
    if row.prev_hash != prev_hash {
        return Some(Problem::PrevHash);
    }
    let computed = encoding::event_hash(&encoding::HashInput {
        station_id: &row.station_id,
        seq: row.seq,
        occurred_at: row.occurred_at,
        actor: &row.actor,
        action: &row.action,
        subject: &row.subject,
        outcome: &row.outcome,
        details_json: &row.details_json,
        prev_hash: &row.prev_hash,
    });
    if row.hash.len() != HASH_LEN || computed[..] != row.hash[..] {
        return Some(Problem::Hash);
    }
    let hashed_details: Option<Value> = serde_json::from_str(&row.details_json).ok();
    if hashed_details.is_none() || hashed_details != row.details {
        return Some(Problem::Details);
    }
    None
}
