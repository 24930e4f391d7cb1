//! DUKPT (Derived Unique Key Per Transaction) key derivation: AES DUKPT after ANSI X9.24-3-2017.

pub mod aes;

use super::{KeyAlgorithm, KeyError};

/// Errors in DUKPT derivation. None of them carries key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DukptError {
    /// The base derivation key is not of an algorithm this DUKPT variant accepts.
    #[error(
        "a {algorithm} key cannot be an AES DUKPT base derivation key; use an AES-128, AES-192 or AES-256 BDK"
    )]
    BdkNotAes { algorithm: KeyAlgorithm },
    /// The initial key is not AES; every AES DUKPT derivation step encrypts with it under AES.
    #[error("an AES DUKPT initial key must be AES-128, AES-192 or AES-256, not {algorithm}")]
    InitialKeyNotAes { algorithm: KeyAlgorithm },
    /// An initial key ID was not 16 hex digits.
    #[error(
        "initial key ID {text:?} is invalid; give 16 hex digits (8-digit BDK ID, 8-digit derivation ID)"
    )]
    InvalidInitialKeyId { text: String },
    /// A key serial number was not 24 hex digits.
    #[error(
        "AES DUKPT key serial number {text:?} is invalid; give 24 hex digits (16-digit initial key ID, 8-digit counter)"
    )]
    InvalidKsn { text: String },
    /// A transaction counter has more one-bits than the standard allows.
    #[error("transaction counter 0x{counter:08X} has {ones} one-bits; AES DUKPT allows at most 16")]
    CounterTooManyOneBits { counter: u32, ones: u32 },
    /// A derived key could not be built; this is a bug in the derivation.
    #[error("derived key is malformed (bug): {0}")]
    Key(#[from] KeyError),
}
