//! The ceremony record: what an assessor asks for after a key ceremony, as a printable plain-text
//! document with signature lines.
//!
//! It is built from the ceremony's row and its audit events, so it states only what the audit
//! trail holds: participants, times, attestations, check values with their methods, and the
//! outcome. It never holds key material, because the audit trail never does.

use std::fmt::Write;

use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::CeremonyError;
use super::state::{self, StoredCeremony};

/// One audit event of a ceremony, as the record shows it.
#[derive(Debug, Clone)]
pub struct RecordEntry {
    /// When it happened, UTC.
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    /// Who acted.
    pub actor: String,
    /// The action, such as `ceremony.attested`.
    pub action: String,
    /// On what.
    pub subject: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// Non-secret details.
    pub details: serde_json::Value,
}

/// A ceremony and its events, ready to print.
#[derive(Debug, Clone)]
pub struct CeremonyRecord {
    /// The ceremony's stored state.
    pub ceremony: StoredCeremony,
    /// Its audit events, in order.
    pub entries: Vec<RecordEntry>,
}

/// Reads the record of ceremony `id`.
pub async fn record(pool: &PgPool, id: Uuid) -> Result<CeremonyRecord, CeremonyError> {
    let ceremony = state::load(pool, id).await?;
    let rows = sqlx::query(
        "SELECT occurred_at, actor, action, subject, outcome, details FROM audit_event
         WHERE details->>'ceremony' = $1 ORDER BY id",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await?;
    let entries = rows
        .iter()
        .map(|row| RecordEntry {
            occurred_at: row.get("occurred_at"),
            actor: row.get("actor"),
            action: row.get("action"),
            subject: row.get("subject"),
            outcome: row.get("outcome"),
            details: row.get("details"),
        })
        .collect();
    Ok(CeremonyRecord { ceremony, entries })
}

impl CeremonyRecord {
    /// Renders the record as plain text of at most about 100 columns, for printing and signing.
    pub fn to_text(&self) -> String {
        let ceremony = &self.ceremony;
        let mut text = String::new();
        let rule = "=".repeat(78);
        let _ = writeln!(text, "{rule}");
        let _ = writeln!(text, "KEY CEREMONY RECORD");
        let _ = writeln!(text, "{rule}");
        let _ = writeln!(text, "Ceremony:   {}", ceremony.id);
        let _ = writeln!(text, "Script:     {}", ceremony.script_name);
        let _ = writeln!(text, "Station:    {}", ceremony.station_id);
        let _ = writeln!(text, "Started:    {}", time(&ceremony.started_at));
        let finished = ceremony
            .finished_at
            .as_ref()
            .map(time)
            .unwrap_or_else(|| "not finished".to_owned());
        let _ = writeln!(text, "Finished:   {finished}");
        let _ = writeln!(text, "State:      {}", ceremony.state);
        let _ = writeln!(
            text,
            "Outcome:    {}",
            ceremony.outcome.as_deref().unwrap_or("none yet")
        );

        let _ = writeln!(text, "\nParticipants");
        for participant in &ceremony.participants {
            let _ = writeln!(text, "  {:<24} {}", participant.name, participant.role);
        }

        let _ = writeln!(text, "\nEvents (times in UTC)");
        for entry in &self.entries {
            let _ = writeln!(
                text,
                "  {}  {:<28} {:<8} by {}{}",
                time(&entry.occurred_at),
                entry.action,
                entry.outcome,
                entry.actor,
                describe(entry)
            );
        }

        let _ = writeln!(text, "\nCheck values (method in brackets)");
        let mut any_kcv = false;
        for entry in &self.entries {
            if let Some(line) = kcv_line(entry) {
                any_kcv = true;
                let _ = writeln!(text, "  {line}");
            }
        }
        if !any_kcv {
            let _ = writeln!(text, "  none");
        }

        let _ = writeln!(
            text,
            "\nEach participant signs to confirm that this record matches what they saw."
        );
        for participant in &ceremony.participants {
            let role = format!("({})", participant.role.name());
            let _ = writeln!(
                text,
                "\n  {:<24} {role:<12} signature: ________________________  date: __________",
                participant.name
            );
        }
        let _ = writeln!(
            text,
            "\n  {:<24} {:<12} signature: ________________________  date: __________",
            "Security officer", ""
        );
        let _ = writeln!(text, "{rule}");
        text
    }
}

fn time(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn detail<'a>(entry: &'a RecordEntry, name: &str) -> Option<&'a str> {
    entry.details.get(name).and_then(|value| value.as_str())
}

fn describe(entry: &RecordEntry) -> String {
    let mut parts = Vec::new();
    // Events about the ceremony itself name it as their subject, which the header shows.
    let ceremony = detail(entry, "ceremony").unwrap_or_default();
    if !entry.subject.is_empty() && entry.subject != ceremony {
        parts.push(format!("on {}", entry.subject));
    }
    if let Some(statement) = detail(entry, "statement") {
        parts.push(format!("attests \"{statement}\""));
    }
    if let Some(outcome) = detail(entry, "outcome") {
        parts.push(outcome.to_owned());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join("; "))
    }
}

fn kcv_line(entry: &RecordEntry) -> Option<String> {
    let method = detail(entry, "kcv_method")?;
    let values: Vec<String> = [
        ("component_kcv", "part"),
        ("part_kcv", "part"),
        ("key_kcv", "key"),
        ("kcv", "key"),
        ("expected_kcv", "expected"),
        ("actual_kcv", "actual"),
    ]
    .iter()
    .filter_map(|(field, name)| detail(entry, field).map(|value| format!("{name} {value}")))
    .collect();
    if values.is_empty() {
        return None;
    }
    Some(format!(
        "{:<28} {:<24} {} ({method}) by {}",
        entry.action,
        entry.subject,
        values.join(", "),
        entry.actor
    ))
}
