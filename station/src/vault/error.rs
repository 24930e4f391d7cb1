//! Errors of the key vault.

use super::{KeyStatus, KeyUsage};
use crate::crypto::KeyAlgorithm;

/// Errors of the key vault. None of them carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The vault has no master key in memory; an unseal ceremony must run first.
    #[error("the vault is sealed; run the unseal ceremony before using keys")]
    Sealed,
    /// The operator gave a master key of the wrong algorithm.
    #[error("the station master key must be aes256, not {0}")]
    MasterKeyAlgorithm(KeyAlgorithm),
    /// The master key formed at unseal does not match the one the vault was initialised with.
    #[error(
        "the master key formed from these components has check value {actual}, but the vault was initialised with {expected}; check that each custodian entered their own current component"
    )]
    WrongMasterKey { expected: String, actual: String },
    /// A label does not follow the label rules.
    #[error(
        "invalid key label {0:?}; use 1 to 63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    InvalidLabel(String),
    /// A BDK ID is not 8 hex digits.
    #[error("invalid BDK ID {0:?}; give 4 bytes as 8 hex digits")]
    InvalidBdkId(String),
    /// A BDK was stored or used without its BDK ID.
    #[error("BDK {0:?} has no BDK ID; AES DUKPT needs one to form initial key IDs")]
    MissingBdkId(String),
    /// No key has this label.
    #[error("no key labelled {0:?} in the vault; list keys with `station keys list`")]
    KeyNotFound(String),
    /// The label is already used by a different key.
    #[error(
        "label {label:?} is already used by another key (check value {existing_kcv}); choose another label"
    )]
    LabelTaken { label: String, existing_kcv: String },
    /// A key was requested for a use its usage does not allow.
    #[error("key {label:?} is a {actual} key and cannot be used as a {expected} key")]
    WrongUsage {
        label: String,
        actual: KeyUsage,
        expected: KeyUsage,
    },
    /// A retired or destroyed key was requested.
    #[error("key {label:?} is {status} and can no longer be used")]
    NotActive { label: String, status: KeyStatus },
    /// The usage does not allow this algorithm.
    #[error("a {usage} key cannot be {algorithm}; this station uses AES keys for it")]
    UnsupportedAlgorithm {
        usage: KeyUsage,
        algorithm: KeyAlgorithm,
    },
    /// A stored row or key block is damaged or was tampered with.
    #[error("stored key {label:?} is damaged or was altered: {reason}")]
    Corrupt { label: String, reason: String },
    /// Building or opening a key block failed.
    #[error(transparent)]
    KeyBlock(#[from] crate::crypto::tr31::Tr31Error),
    /// A check value could not be computed or compared.
    #[error(transparent)]
    Kcv(#[from] crate::crypto::kcv::KcvError),
    /// DUKPT derivation failed.
    #[error(transparent)]
    Dukpt(#[from] crate::crypto::dukpt::DukptError),
    /// A PKCS#11 token operation failed.
    #[error(transparent)]
    Token(#[from] super::pkcs11::Pkcs11Error),
    /// The operation needs the PKCS#11 backend, or a key that is a token object.
    #[error("{operation} needs a PKCS#11 token key; configure the station with its HSM")]
    NeedsToken { operation: &'static str },
    /// A key's record names another token than the one the station is configured with.
    #[error(
        "key {label:?} is held in token serial {expected:?}, but the station is logged in to token serial {actual:?}; configure the token that holds the key"
    )]
    KeyInOtherToken {
        label: String,
        expected: String,
        actual: String,
    },
    /// A token object does not match the key's record.
    #[error(
        "token key {label:?} does not match the vault record: expected {expected}, the token has {actual}; the token object was replaced outside the station"
    )]
    TokenKeyMismatch {
        label: String,
        expected: String,
        actual: String,
    },
    /// A wrapped key's length does not fit its algorithm.
    #[error(
        "wrapped key for {label:?} is {actual} bytes, but an {algorithm} key wrapped with AES key wrap is {expected} bytes; check the algorithm and the wrapped data"
    )]
    WrappedKeyLength {
        label: String,
        algorithm: KeyAlgorithm,
        expected: usize,
        actual: usize,
    },
    /// An imported key's check value differs from the one its sender gave.
    #[error(
        "imported key {label:?} has check value {actual}, but the sender gave {expected}; the key was not kept, so check the wrapped key and KEK with the sender"
    )]
    ImportKcvMismatch {
        label: String,
        expected: String,
        actual: String,
    },
    /// The database failed.
    #[error("database error in the vault: {0}")]
    Database(#[from] sqlx::Error),
}
