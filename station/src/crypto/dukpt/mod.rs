//! DUKPT (Derived Unique Key Per Transaction) key derivation: AES DUKPT after ANSI X9.24-3-2017
//! and TDES DUKPT after ANSI X9.24-1-2009.

pub mod aes;
pub mod tdes;

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
    /// A TDES DUKPT key serial number was not 16 to 20 hex digits.
    #[error(
        "TDES DUKPT key serial number {text:?} is invalid; give 16 to 20 hex digits (an even count, padded on the left with F)"
    )]
    InvalidTdesKsn { text: String },
    /// A TDES DUKPT counter does not fit the KSN's 21 counter bits.
    #[error(
        "transaction counter 0x{counter:X} does not fit in 21 bits; the largest TDES DUKPT counter is 0x1FFFFF"
    )]
    TdesCounterTooLarge { counter: u32 },
    /// A TDES DUKPT counter has more one-bits than the standard allows.
    #[error(
        "transaction counter 0x{counter:06X} has {ones} one-bits; TDES DUKPT allows at most 10"
    )]
    TdesCounterTooManyOneBits { counter: u32, ones: u32 },
    /// An initial KSN has a non-zero counter.
    #[error(
        "initial KSN {ksn} has counter 0x{counter:06X}; an initial KSN has its 21 counter bits zero, so clear them or derive the transaction key instead"
    )]
    InitialKsnCounterNotZero { ksn: String, counter: u32 },
    /// A TDES DUKPT BDK, IPEK or transaction key is not double-length TDES.
    #[error("TDES DUKPT needs a double-length (2-key) TDES key, but a {algorithm} key was given")]
    TdesKeyNotDoubleLength { algorithm: KeyAlgorithm },
    /// A derived key could not be built; this is a bug in the derivation.
    #[error("derived key is malformed (bug): {0}")]
    Key(#[from] KeyError),
}
