//! Errors of provisioning.

/// Errors of provisioning one terminal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The line was configured with a key that is not a BDK.
    #[error(
        "key {0:?} is not an AES DUKPT BDK with a BDK ID; name a bdk key from `station keys list`"
    )]
    NotABdk(String),
    /// The terminal reported a check value of another method than the station computed.
    #[error(
        "the terminal reported a {reported} check value, but the station computes {expected}; the terminal's protocol profile is wrong"
    )]
    KcvMethod {
        expected: &'static str,
        reported: &'static str,
    },
    /// The terminal stored a different key than the station sent.
    #[error(
        "the terminal reports check value {reported} for the loaded key, but the station derived {expected}; the key was not loaded correctly and the identity is burned"
    )]
    KcvMismatch { expected: String, reported: String },
    /// A check value could not be compared.
    #[error(transparent)]
    Kcv(crate::crypto::kcv::KcvError),
    /// The vault failed or is sealed.
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
    /// Recording the injection failed, so it did not go ahead.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The terminal link or protocol failed.
    #[error(transparent)]
    Session(#[from] crate::protocol::SessionError),
    /// A bug in the station.
    #[error("internal error: {0}")]
    Internal(String),
}
