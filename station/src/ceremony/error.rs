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
        "step {step}: key {key:?} needs {needed} components, {given} given; each custodian brings their own component of this key, so check the key label in each component file"
    )]
    MissingComponent {
        step: usize,
        key: String,
        needed: usize,
        given: usize,
    },
    /// A component was brought by someone who is not a custodian of this ceremony.
    #[error(
        "the part from {path} belongs to {custodian:?}, who is not a custodian in this ceremony"
    )]
    NotACustodian { path: String, custodian: String },
    /// One custodian brought two parts of the same key, which would break dual control.
    #[error(
        "custodian {custodian:?} brought two parts of key {key:?}; each component or share must come from a different custodian"
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
    /// A part does not match the check value printed with it: a typing error or the wrong envelope.
    #[error(
        "the part of key {key:?} from {custodian:?} has check value {actual}, but its form says {expected}; check the component or share and enter it again"
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
    /// A check value differs from the one the script states.
    #[error(
        "the check value of {subject:?} is {actual}, but the script expects {expected}; the key is not the one the form describes"
    )]
    KcvCompareMismatch {
        subject: String,
        expected: String,
        actual: String,
    },
    /// Component files were given that no step used.
    #[error("component files not used by any step: {0}; check the key labels in them")]
    UnusedComponents(String),
    /// A share's threshold differs from the one the step expects.
    #[error(
        "the share of key {key:?} from {custodian:?} belongs to a split with threshold {actual}, but this step enters {expected} shares; bring a share of the current split"
    )]
    ShareThreshold {
        key: String,
        custodian: String,
        expected: usize,
        actual: u8,
    },
    /// A component was given where a share was expected, or the other way round.
    #[error("key {key:?} is entered as {expected}s, but {custodian:?} gave a {actual}")]
    PartKind {
        key: String,
        custodian: String,
        expected: &'static str,
        actual: &'static str,
    },
    /// A participant aborted the ceremony.
    #[error("the ceremony was aborted by {by:?} at step {step}")]
    Aborted { by: String, step: usize },
    /// No participant answered a prompt within the script's idle timeout.
    #[error(
        "the ceremony timed out at step {step}: no input for {idle_seconds} seconds; start it again"
    )]
    TimedOut { step: usize, idle_seconds: u64 },
    /// The input source cannot do what the step needs.
    #[error("{0}")]
    NotInteractive(String),
    /// Reading from or writing to a participant's terminal failed.
    #[error("terminal input failed: {0}")]
    Terminal(String),
    /// A user account does not hold the user role that the ceremony role needs.
    #[error(
        "user {name:?} is a {actual} and cannot take part as a {role}; a {role} must be a {needed} user"
    )]
    WrongUserRole {
        name: String,
        role: Role,
        actual: crate::users::UserRole,
        needed: crate::users::UserRole,
    },
    /// The vault has a master key already, so the initialise step would replace it.
    #[error(
        "the vault already has a station master key; run the unseal ceremony instead of initialising again"
    )]
    AlreadyInitialised,
    /// No ceremony has this identifier.
    #[error("no ceremony with ID {0}; list ceremonies with `station ceremony list`")]
    NotFound(uuid::Uuid),
    /// The ceremony cannot be resumed or aborted in its state.
    #[error("ceremony {id} is {state} and cannot be resumed or aborted; start a new one")]
    NotResumable { id: uuid::Uuid, state: String },
    /// Another process is running the ceremony now.
    #[error("ceremony {0} is running in another station process; wait for it or abort it there")]
    RunningElsewhere(uuid::Uuid),
    /// The participants of a resumed ceremony differ from those who started it.
    #[error(
        "ceremony {id} was started by {started}; the same people, in the same roles, must resume it"
    )]
    ParticipantsChanged { id: uuid::Uuid, started: String },
    /// Combining components failed.
    #[error(transparent)]
    Components(#[from] crate::crypto::components::ComponentError),
    /// Parsing, splitting or combining shares failed.
    #[error(transparent)]
    Shares(#[from] crate::crypto::shamir::ShareError),
    /// Creating or storing the factory CA failed.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// A user account could not be read or checked.
    #[error(transparent)]
    User(#[from] crate::users::UserError),
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
