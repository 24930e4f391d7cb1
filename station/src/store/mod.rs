//! Device identities and injections in PostgreSQL.
//!
//! An AES DUKPT initial key ID is the BDK ID (4 bytes) followed by a derivation ID (4 bytes), per
//! ANSI X9.24-3-2017. [`allocate_identity`] hands out the next derivation ID of a BDK in the same
//! transaction that records the injection and writes its audit event. So two stations sharing one
//! database never hand out the same identity, and a committed identity is not handed out again,
//! even after a crash.
//!
//! An injection then moves through `allocated → sent → confirmed | failed`, one transaction per
//! step including its audit event. A failed injection burns its identity: its row stays, and its
//! derivation ID is never reused.

mod identity;
mod injection;

use chrono::{DateTime, Utc};

pub use identity::allocate_identity;
pub use injection::{injection, mark_confirmed, mark_failed, mark_sent, unconfirmed_injections};

use crate::audit::AuditError;
use crate::db::DbError;

/// Errors of the identity and injection store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An argument is empty, too long or malformed.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidInput {
        /// Which argument.
        field: &'static str,
        /// The value given, shortened to 80 characters.
        value: String,
        /// The problem and its fix.
        reason: &'static str,
    },

    /// The BDK ID already belongs to another BDK; allocating under it would repeat initial key IDs.
    #[error(
        "BDK ID {} already belongs to BDK {owner:?}, not {requested:?}; every BDK needs its own BDK \
         ID, or devices get the same initial key IDs",
        hex::encode_upper(bdk_id)
    )]
    BdkIdTaken {
        /// The BDK ID.
        bdk_id: [u8; 4],
        /// The label it was first allocated under.
        owner: String,
        /// The label given now.
        requested: String,
    },

    /// Every derivation ID from 1 to 0xFFFFFFFF of this BDK ID has been handed out.
    #[error(
        "BDK {bdk_label:?} (BDK ID {}) has no derivation IDs left: all 4294967295 are used; load a \
         new BDK with another BDK ID",
        hex::encode_upper(bdk_id)
    )]
    IdentitiesExhausted {
        /// The BDK's label.
        bdk_label: String,
        /// Its BDK ID.
        bdk_id: [u8; 4],
    },

    /// No injection has this ID.
    #[error("injection {id} not found")]
    NotFound {
        /// The injection ID.
        id: i64,
    },

    /// The injection was allocated by another station, which alone may move it on.
    #[error(
        "injection {id} belongs to station {owner:?}, not {station_id:?}; reconcile it from that station"
    )]
    WrongStation {
        /// The injection ID.
        id: i64,
        /// The station that allocated it.
        owner: String,
        /// The station that asked.
        station_id: String,
    },

    /// The injection's state does not allow this step, such as confirming a failed injection. This
    /// is a bug in the caller, unless a second caller moved the injection first.
    #[error(
        "injection {id} is {from} and cannot become {to}: an injection goes from allocated to sent \
         to confirmed or failed, and confirmed and failed are final"
    )]
    InvalidTransition {
        /// The injection ID.
        id: i64,
        /// Its current state.
        from: InjectionState,
        /// The state requested.
        to: InjectionState,
    },

    /// A stored row breaks the schema's rules, which only a manual change can cause.
    #[error("injection {id} holds an invalid {field} {value:?} in the database")]
    CorruptRow {
        /// The injection ID.
        id: i64,
        /// The column.
        field: &'static str,
        /// The stored value.
        value: String,
    },

    /// The audit event could not be written, so the step was rolled back.
    #[error(transparent)]
    Audit(#[from] AuditError),

    /// The pool gave no connection, for example because it was busy.
    #[error(transparent)]
    Db(#[from] DbError),

    /// A query failed.
    #[error("injection store query failed: {0}")]
    Query(#[from] sqlx::Error),
}

/// The identity a device reports in its HELLO.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceInfo {
    /// Manufacturer.
    pub vendor: String,
    /// Model.
    pub model: String,
    /// Serial number; must not be empty.
    pub serial: String,
    /// Firmware version.
    pub firmware: String,
}

/// State of an injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InjectionState {
    /// The identity is reserved; nothing was sent to the device yet.
    Allocated,
    /// The key block was sent; the device has not confirmed it.
    Sent,
    /// The device confirmed the key with a matching KCV.
    Confirmed,
    /// The injection failed or was abandoned; its identity is burned.
    Failed,
}

impl InjectionState {
    /// Returns the stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            InjectionState::Allocated => "allocated",
            InjectionState::Sent => "sent",
            InjectionState::Confirmed => "confirmed",
            InjectionState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<InjectionState> {
        match text {
            "allocated" => Some(InjectionState::Allocated),
            "sent" => Some(InjectionState::Sent),
            "confirmed" => Some(InjectionState::Confirmed),
            "failed" => Some(InjectionState::Failed),
            _ => None,
        }
    }

    /// Checks whether the state machine allows moving from `self` to `to`: allocated to sent or
    /// failed, sent to confirmed or failed. Confirmed and failed are final.
    pub fn can_become(self, to: InjectionState) -> bool {
        matches!(
            (self, to),
            (InjectionState::Allocated, InjectionState::Sent)
                | (InjectionState::Allocated, InjectionState::Failed)
                | (InjectionState::Sent, InjectionState::Confirmed)
                | (InjectionState::Sent, InjectionState::Failed)
        )
    }
}

impl std::fmt::Display for InjectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The key check value a device reported for the key it stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedKcv {
    /// Upper-case hex, 2 to 5 bytes.
    pub hex: String,
    /// The method that computed it, such as `cmac` or `legacy`.
    pub method: String,
}

/// One injection of a device's initial key, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// Row ID.
    pub id: i64,
    /// The station that allocated it.
    pub station_id: String,
    /// Label of the BDK the initial key derives from.
    pub bdk_label: String,
    /// The BDK ID, the first half of the initial key ID.
    pub bdk_id: [u8; 4],
    /// The derivation ID, big-endian, the second half of the initial key ID; never zero.
    pub derivation_id: [u8; 4],
    /// The device.
    pub device: DeviceInfo,
    /// The port the device is attached to.
    pub port: String,
    /// Current state.
    pub state: InjectionState,
    /// The KCV the device confirmed, once confirmed.
    pub kcv: Option<RecordedKcv>,
    /// The failure reason, once failed.
    pub error: Option<String>,
    /// When the identity was allocated.
    pub allocated_at: DateTime<Utc>,
    /// When the key block was recorded as sent.
    pub sent_at: Option<DateTime<Utc>>,
    /// When it was confirmed or failed.
    pub finished_at: Option<DateTime<Utc>>,
}

impl Injection {
    /// Returns the AES DUKPT initial key ID: BDK ID followed by derivation ID.
    pub fn initial_key_id(&self) -> [u8; 8] {
        let mut id = [0u8; 8];
        id[..4].copy_from_slice(&self.bdk_id);
        id[4..].copy_from_slice(&self.derivation_id);
        id
    }

    /// Checks whether the identity is burned: the injection failed and its derivation ID is spent.
    pub fn is_burned(&self) -> bool {
        self.state == InjectionState::Failed
    }
}

/// Maximum length of a station ID, actor, label, device field or port, in bytes.
const MAX_TEXT_LEN: usize = 256;

/// Checks a text argument: not empty unless allowed, at most 256 bytes, no control characters.
fn check_text(field: &'static str, value: &str, may_be_empty: bool) -> Result<(), StoreError> {
    let reason = if value.is_empty() && !may_be_empty {
        Some("it must not be empty")
    } else if value.len() > MAX_TEXT_LEN {
        Some("it is longer than 256 bytes")
    } else if value.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::InvalidInput {
            field,
            value: value.chars().take(80).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

fn check_device(device: &DeviceInfo) -> Result<(), StoreError> {
    check_text("device vendor", &device.vendor, true)?;
    check_text("device model", &device.model, true)?;
    check_text("device serial number", &device.serial, false)?;
    check_text("device firmware", &device.firmware, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine_transitions() {
        use InjectionState::*;
        let allowed = [
            (Allocated, Sent),
            (Allocated, Failed),
            (Sent, Confirmed),
            (Sent, Failed),
        ];
        for from in [Allocated, Sent, Confirmed, Failed] {
            for to in [Allocated, Sent, Confirmed, Failed] {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn state_text_round_trips() {
        for state in [
            InjectionState::Allocated,
            InjectionState::Sent,
            InjectionState::Confirmed,
            InjectionState::Failed,
        ] {
            assert_eq!(InjectionState::parse(state.as_str()), Some(state));
        }
        assert_eq!(InjectionState::parse("burned"), None);
    }

    #[test]
    fn device_serial_required() {
        let err = check_device(&DeviceInfo::default()).expect_err("empty serial rejected");
        assert_eq!(
            err.to_string(),
            "invalid device serial number \"\": it must not be empty"
        );
    }

    #[test]
    fn device_control_character_rejected() {
        let device = DeviceInfo {
            serial: "SN\u{7}1".to_owned(),
            ..DeviceInfo::default()
        };
        let err = check_device(&device).expect_err("bell rejected");
        assert!(err.to_string().contains("control character"), "{err}");
    }
}
