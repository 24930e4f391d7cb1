//! Dual-control key ceremonies.
//!
//! A ceremony runs a [`CeremonyScript`] step by step: custodians enter key components, which are
//! checked by KCV and combined; the witness attests physical facts; keys go into the vault. Every
//! step is an audit event written in the same transaction as its effect, and an aborted ceremony
//! records why. Components are never stored or logged.

mod component_file;
mod error;
mod run;
mod script;

pub use component_file::ComponentFile;
pub use error::CeremonyError;
pub use run::{
    CeremonyInputs, CeremonyReport, EnteredComponent, FileInputs, LoadedKey, Participant, run,
};
pub use script::{CeremonyScript, MASTER_KEY_LABEL, Role, Step};
