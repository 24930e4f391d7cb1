//! The canonical encoding of an audit event and its SHA-384 hash.
//!
//! An event's hash is SHA-384 over these items, in this order, each written as a 4-byte
//! big-endian length followed by that many bytes:
//!
//! | # | item | bytes |
//! | --- | --- | --- |
//! | 1 | format tag | ASCII `station-audit-event-v1` |
//! | 2 | station ID | UTF-8 |
//! | 3 | sequence number | 8 bytes, big-endian signed |
//! | 4 | time | microseconds since 1970-01-01T00:00:00Z, 8 bytes, big-endian signed |
//! | 5 | actor | UTF-8 |
//! | 6 | action | UTF-8 |
//! | 7 | subject | UTF-8 |
//! | 8 | outcome | ASCII `success` or `failure` |
//! | 9 | details | UTF-8 canonical JSON, see [`canonical_json`] |
//! | 10 | previous hash | 48 bytes: the previous event's hash, or 48 zero bytes for the first event |
//!
//! The length prefixes make the encoding unambiguous: no two different events encode to the same
//! bytes. PostgreSQL stores `timestamptz` at microsecond precision, so a time read back hashes the
//! same as the time written.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha384};

/// Length of an event hash in bytes (SHA-384).
pub const HASH_LEN: usize = 48;

/// The previous hash of a station's first event.
pub const GENESIS_HASH: [u8; HASH_LEN] = [0; HASH_LEN];

const FORMAT_TAG: &[u8] = b"station-audit-event-v1";

/// The fields of one event, as stored, that its hash covers.
#[derive(Debug, Clone, Copy)]
pub struct HashInput<'a> {
    /// Station whose chain the event belongs to.
    pub station_id: &'a str,
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When the event was written, at microsecond precision.
    pub occurred_at: DateTime<Utc>,
    /// The user or station that acted.
    pub actor: &'a str,
    /// The action.
    pub action: &'a str,
    /// The subject of the action.
    pub subject: &'a str,
    /// `success` or `failure`.
    pub outcome: &'a str,
    /// The details as canonical JSON text.
    pub details_json: &'a str,
    /// The previous event's hash.
    pub prev_hash: &'a [u8],
}

/// Computes the hash of an event from its stored fields.
pub fn event_hash(input: &HashInput<'_>) -> [u8; HASH_LEN] {
    let mut hasher = Sha384::new();
    let mut item = |bytes: &[u8]| {
        let len = u32::try_from(bytes.len())
            .expect("audit fields are checked to be far shorter than 4 GiB");
        hasher.update(len.to_be_bytes());
        hasher.update(bytes);
    };
    item(FORMAT_TAG);
    item(input.station_id.as_bytes());
    item(&input.seq.to_be_bytes());
    item(&input.occurred_at.timestamp_micros().to_be_bytes());
    item(input.actor.as_bytes());
    item(input.action.as_bytes());
    item(input.subject.as_bytes());
    item(input.outcome.as_bytes());
    item(input.details_json.as_bytes());
    item(input.prev_hash);
    hasher.finalize().into()
}

/// Writes `value` as canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace, and
/// strings and numbers as serde_json 1 writes them.
///
/// The text, not the `jsonb` value, is what the hash covers, because PostgreSQL reorders the keys
/// of `jsonb` and may rewrite its numbers. Verification hashes the stored text, so a later change
/// to this function cannot break the verification of events already written.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => out.push_str(&value.to_string()),
        Value::String(text) => push_json_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Sorted here rather than relying on the map's order, which serde_json's
            // `preserve_order` feature changes for the whole build.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                push_json_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

fn push_json_string(text: &str, out: &mut String) {
    out.push_str(&Value::String(text.to_owned()).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value = json!({"b": 1, "a": {"z": [true, null], "y": "x"}, "A": -2.5});
        assert_eq!(
            canonical_json(&value),
            r#"{"A":-2.5,"a":{"y":"x","z":[true,null]},"b":1}"#
        );
    }

    #[test]
    fn canonical_json_escapes_strings() {
        let value = json!({"quote\"": "line\nbreak\u{1}é"});
        assert_eq!(
            canonical_json(&value),
            "{\"quote\\\"\":\"line\\nbreak\\u0001é\"}"
        );
    }

    #[test]
    fn canonical_json_round_trips() {
        let value = json!({"kcv": "7AD386", "n": [1, 2.0, -3], "nested": {"k": {}}});
        let text = canonical_json(&value);
        let parsed: Value = serde_json::from_str(&text).expect("canonical JSON parses");
        assert_eq!(parsed, value);
        assert_eq!(canonical_json(&parsed), text);
    }

    fn sample<'a>(details_json: &'a str, prev_hash: &'a [u8]) -> HashInput<'a> {
        HashInput {
            station_id: "line-1",
            seq: 1,
            occurred_at: DateTime::from_timestamp_micros(1_733_340_000_123_456)
                .expect("valid time"),
            actor: "operator:alice",
            action: "injection.allocated",
            subject: "injection:1",
            outcome: "success",
            details_json,
            prev_hash,
        }
    }

    #[test]
    fn event_hash_known_answer() {
        // Computed independently with Python's hashlib over the documented encoding.
        let hash = event_hash(&sample("{}", &GENESIS_HASH));
        assert_eq!(hex::encode(hash), EXPECTED_SAMPLE_HASH);
    }

    #[test]
    fn event_hash_depends_on_every_item() {
        let base = event_hash(&sample("{}", &GENESIS_HASH));
        let mut changed = Vec::new();
        let other_prev = [1u8; HASH_LEN];
        changed.push(event_hash(&sample("{\"a\":1}", &GENESIS_HASH)));
        changed.push(event_hash(&sample("{}", &other_prev)));
        for edit in 0..7 {
            let mut input = sample("{}", &GENESIS_HASH);
            match edit {
                0 => input.station_id = "line-2",
                1 => input.seq = 2,
                2 => input.occurred_at += chrono::Duration::microseconds(1),
                3 => input.actor = "operator:bob",
                4 => input.action = "injection.sent",
                5 => input.subject = "injection:2",
                _ => input.outcome = "failure",
            }
            changed.push(event_hash(&input));
        }
        for hash in changed {
            assert_ne!(hash, base);
        }
    }

    #[test]
    fn length_prefix_separates_adjacent_fields() {
        let mut left = sample("{}", &GENESIS_HASH);
        left.actor = "ab";
        left.action = "c";
        let mut right = sample("{}", &GENESIS_HASH);
        right.actor = "a";
        right.action = "bc";
        assert_ne!(event_hash(&left), event_hash(&right));
    }

    const EXPECTED_SAMPLE_HASH: &str = "cfdc4a680aa35042fa32b4914b86eceaafd11bf2e83fd349ac57e14905a75045e31cce50c5204a77640f90d2dbb46759";
}
