//! Errors of user accounts.

/// Errors of user accounts. None of them carries a password or a password hash.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    /// The operator gave a login name that breaks the naming rule.
    #[error(
        "invalid user name {0:?}; use a lowercase letter, then up to 62 lowercase letters, digits, '.', '_' or '-'"
    )]
    InvalidName(String),
    /// The operator gave an unknown role name.
    #[error(
        "invalid role {0:?}; use admin, custodian, supervisor (the ceremony witness), operator or auditor"
    )]
    InvalidRole(String),
    /// The operator chose a password that is too short.
    #[error("the password is too short; use at least {min} characters")]
    PasswordTooShort { min: usize },
    /// The two password entries differ.
    #[error("the two passwords differ; enter the same password twice")]
    PasswordMismatch,
    /// A user with this name exists already.
    #[error("user {0:?} already exists; choose another name")]
    NameTaken(String),
    /// No user has this name.
    #[error("no user named {0:?}; create one with `station user add`")]
    NotFound(String),
    /// The name or password is wrong. The message does not say which.
    #[error("authentication failed for {0:?}: unknown user or wrong password")]
    AuthenticationFailed(String),
    /// Hashing or checking a password failed; the stored hash may be damaged.
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// A stored user row breaks the schema's rules.
    #[error("stored user {name:?} is damaged: {reason}")]
    Corrupt { name: String, reason: String },
    /// Writing the audit event failed, so the change did not happen.
    #[error("audit trail could not be written, so the user was not changed: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// The database failed.
    #[error("database error in user accounts: {0}")]
    Database(#[from] sqlx::Error),
}
