//! Dual-control key ceremonies.
//!
//! A ceremony runs a [`CeremonyScript`] step by step. The station generates keys and hands out
//! components or shares. Custodians enter them, each checked by KCV, and the station combines
//! them. The witness attests physical facts. Keys go into the vault, out to the host under a
//! KEK, into retirement or to destruction. Every step is an audit event written in the same transaction as its effect.
//! A ceremony ends completed, aborted by a participant, or timed out; one interrupted by a
//! restart resumes from its record, which holds no secret. Components and shares are never
//! stored or logged.

mod component_file;
mod error;
mod form;
mod inputs;
mod record;
mod run;
mod script;
mod state;
mod steps;

pub use component_file::ComponentFile;
pub use error::CeremonyError;
pub use form::PartForm;
pub use inputs::{CeremonyInputs, EnteredPart, FileInputs, PartRequest, PartValue, StepContext};
pub use record::{CeremonyRecord, record};
pub use run::{CeremonyReport, LoadedKey, Participant, abort, resume, run};
pub use script::{CeremonyScript, DEFAULT_IDLE_TIMEOUT, MASTER_KEY_LABEL, Role, Split, Step};
pub use state::{StoredCeremony, list};
pub use steps::form_kcv_method;
