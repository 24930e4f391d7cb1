//! Errors of key ceremonies.

use super::Role;

/// Errors of key ceremonies. None of them carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CeremonyError {
    /// The script file could not be read.
    #[error("cannot read ceremony script {path}: {source}")]
    ReadScript {
        path: String,
        source: std::io::Error,
    },
    /// The script breaks the format or the dual-control rules.
    #[error("invalid ceremony script: {0}")]
    InvalidScript(String),
    /// A component file could not be read.
    #[error("cannot read component file {path}: {source}")]
    ReadComponentFile {
        path: String,
        source: std::io::Error,
    },
    /// A component file could not be written.
    #[error("cannot write component file {path}: {source}; it must not exist yet")]
    WriteComponentFile {
        path: String,
        source: std::io::Error,
    },
    /// A component file is malformed.
    #[error("invalid component file {path}: {reason}")]
    InvalidComponentFile { path: String, reason: String },
    /// The participants do not meet the script's roles or the dual-control rules.
    #[error("invalid participants: {0}")]
    Participants(String),
    /// An attest step has no attestation from a participant of its role.
    #[error("step {step} needs an attestation by a {role}; pass --attest {step}=NAME")]
    MissingAttestation { step: usize, role: Role },
    /// A participant attested who does not hold the required role.
    #[error("step {step}: {name:?} cannot attest as a {role}; name a participant with that role")]
    WrongAttester {
        step: usize,
        name: String,
        role: Role,
    },
    /// Fewer components were given for a key than the step needs.
    #[error(
        "step {step}: key {key:?} needs {needed} components, {given} given; each custodian brings their own"
    )]
    MissingComponent {
        step: usize,
        key: String,
        needed: usize,
        given: usize,
    },
    /// A component was brought by someone who is not a custodian of this ceremony.
    #[error(
        "component file {path} belongs to {custodian:?}, who is not a custodian in this ceremony"
    )]
    NotACustodian { path: String, custodian: String },
    /// One custodian brought two components of the same key, which would break dual control.
    #[error(
        "custodian {custodian:?} brought two components of key {key:?}; each component must come from a different custodian"
    )]
    DuplicateCustodian { key: String, custodian: String },
    /// A component's algorithm differs from the key's.
    #[error("component file {path} is {actual}, but key {key:?} is {expected}")]
    ComponentAlgorithm {
        path: String,
        key: String,
        expected: String,
        actual: String,
    },
    /// A component does not match the check value printed with it: a typing error or the wrong envelope.
    #[error(
        "component of key {key:?} from {custodian:?} has check value {actual}, but its form says {expected}; check the component and enter it again"
    )]
    ComponentKcvMismatch {
        key: String,
        custodian: String,
        expected: String,
        actual: String,
    },
    /// The custodians' forms disagree about the whole key's check value.
    #[error(
        "the component forms of key {key:?} disagree on the key's check value ({first} and {second}); they belong to different keys"
    )]
    KeyKcvDisagree {
        key: String,
        first: String,
        second: String,
    },
    /// The combined key does not match the check value on the custodians' forms.
    #[error(
        "the components of key {key:?} combine to check value {actual}, but the forms say {expected}; a component is from another key or was mistyped"
    )]
    KeyKcvMismatch {
        key: String,
        expected: String,
        actual: String,
    },
    /// Component files were given that no step used.
    #[error("component files not used by any step: {0}; check the key labels in them")]
    UnusedComponents(String),
    /// Combining components failed.
    #[error(transparent)]
    Components(#[from] crate::crypto::components::ComponentError),
    /// A key could not be built from a component.
    #[error(transparent)]
    Key(#[from] crate::crypto::KeyError),
    /// A check value could not be computed or compared.
    #[error(transparent)]
    Kcv(#[from] crate::crypto::kcv::KcvError),
    /// The vault rejected the step.
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
    /// Writing the audit event failed, so the step did not happen.
    #[error("audit trail could not be written, so the step was not carried out: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// The database failed.
    #[error("database error in the ceremony: {0}")]
    Database(#[from] sqlx::Error),
}
