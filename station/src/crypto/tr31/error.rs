//! Errors in parsing, wrapping and unwrapping key blocks.
//!
//! Header text, lengths and positions are not secret, so the messages show them. No message
//! carries key bytes, decrypted payload or MAC values.

use super::codes::{KeyBlockAlgorithm, KeyUsage};
use crate::crypto::{KeyAlgorithm, KeyError};

/// Errors in key blocks. Positions are 0-based character offsets into the key block.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tr31Error {
    /// The text contains a character outside printable ASCII.
    #[error(
        "key block has a character outside printable ASCII at position {position}; a key block is printable ASCII text"
    )]
    NotPrintable { position: usize },
    /// The text is shorter than the 16-character fixed header.
    #[error("key block header is {len} characters long; it needs at least 16")]
    HeaderTooShort { len: usize },
    /// The version ID is not one of A, B, C, D, E.
    #[error("key block version {found:?} is not supported; use A, B, C, D or E")]
    UnknownVersion { found: char },
    /// A numeric header field contains something other than decimal digits.
    #[error("key block {field} {text:?} at position {position} is not decimal digits")]
    NotDecimal {
        field: &'static str,
        text: String,
        position: usize,
    },
    /// The length field disagrees with the text's length.
    #[error(
        "key block length field says {declared} characters but the block has {actual}; the block was truncated or padded in transit"
    )]
    LengthMismatch { declared: usize, actual: usize },
    /// Header text continues after the last optional block.
    #[error(
        "key block header text continues after its last optional block at position {position}; check the optional block count"
    )]
    TrailingText { position: usize },
    /// A header field contains a code this implementation does not know.
    #[error("key block {field} {code:?} is not a known value; see ANSI X9.143 for valid codes")]
    UnknownCode { field: &'static str, code: String },
    /// The key version number is not two alphanumeric characters.
    #[error("key version number {text:?} is invalid; use two letters or digits, `00` for none")]
    InvalidKeyVersion { text: String },
    /// The reserved last header character is not `0`.
    #[error("key block reserved field is {found:?}; it must be '0'")]
    ReservedNotZero { found: char },
    /// An optional block ends beyond the header or the text.
    #[error(
        "optional block {id:?} at position {position} runs past the end of the key block; check its length field"
    )]
    OptionalBlockTruncated { id: String, position: usize },
    /// An optional block's length field is malformed.
    #[error("optional block {id:?} at position {position} has invalid length field {text:?}")]
    InvalidOptionalBlockLength {
        id: String,
        text: String,
        position: usize,
    },
    /// An optional block ID is not two alphanumeric characters.
    #[error(
        "optional block ID {id:?} at position {position} is invalid; use two letters or digits"
    )]
    InvalidOptionalBlockId { id: String, position: usize },
    /// An optional block ID appears twice.
    #[error("optional block {id:?} appears more than once; each ID may appear once")]
    DuplicateOptionalBlock { id: String },
    /// An optional block's data does not match the format of its ID.
    #[error("optional block {id:?} has invalid data {data:?}: {reason}")]
    InvalidOptionalBlockData {
        id: String,
        data: String,
        reason: &'static str,
    },
    /// The caller tried to add a `PB` block, which `wrap` computes.
    #[error("optional block PB is added by wrap to pad the header; do not add it yourself")]
    PaddingBlockNotAllowed,
    /// The header would exceed the size its fields can encode.
    #[error("key block would be {len} characters long; the length field allows at most 9999")]
    BlockTooLong { len: usize },
    /// There are more optional blocks than the two-digit count allows.
    #[error("a key block contains at most 99 optional blocks; this one would contain {count}")]
    TooManyOptionalBlocks { count: usize },
    /// The header, with its padding block, is not a whole number of cipher blocks.
    #[error(
        "key block header is {len} characters long, not a multiple of {block_len}; a padding block (PB) is missing or has the wrong length"
    )]
    HeaderNotBlockAligned { len: usize, block_len: usize },
    /// The padding block is not the last optional block.
    #[error("optional block PB must be the last optional block")]
    PaddingBlockNotLast,
    /// The encrypted key data or MAC is not hex.
    #[error("key block {field} is not hex at position {position}; it may hold only 0-9 and A-F")]
    InvalidHex {
        field: &'static str,
        position: usize,
    },
    /// The encrypted key data has the wrong length.
    #[error(
        "key block encrypted key data is {len} hex digits; it must be a non-zero multiple of {multiple}"
    )]
    EncryptedDataLength { len: usize, multiple: usize },
    /// The KBPK's algorithm does not fit the key block version.
    #[error(
        "key block version {version} needs {expected} KBPK, but the KBPK is {kbpk}; use versions A, B or C with TDES and D or E with AES"
    )]
    KbpkMismatch {
        version: char,
        expected: &'static str,
        kbpk: KeyAlgorithm,
    },
    /// The key's algorithm does not match the header's algorithm field.
    #[error(
        "header algorithm {header} does not match the {key} key being wrapped; set the header algorithm to match the key"
    )]
    KeyAlgorithmMismatch {
        header: KeyBlockAlgorithm,
        key: KeyAlgorithm,
    },
    /// The MAC does not verify: the block was altered or the KBPK is not the one it was made with.
    #[error("key block MAC does not verify: the block was altered or the KBPK is wrong")]
    MacMismatch,
    /// The decrypted key length field is impossible.
    #[error(
        "key block contains a key length of {bits} bits in a {capacity}-byte payload; the block is malformed"
    )]
    InvalidKeyLength { bits: usize, capacity: usize },
    /// The key length does not correspond to a key of the header's algorithm.
    #[error("a {len}-byte key does not fit header algorithm {algorithm}")]
    UnsupportedKeyLength {
        algorithm: KeyBlockAlgorithm,
        len: usize,
    },
    /// The header breaks a rule of the key block policy.
    #[error("key block breaks the key block policy: {rule}")]
    PolicyViolation { rule: String },
    /// The key is stronger than the KBPK that would protect it.
    #[error(
        "a {key} key cannot be wrapped under a weaker {kbpk} KBPK; use a KBPK at least as strong as the key"
    )]
    KbpkTooWeak {
        key: KeyAlgorithm,
        kbpk: KeyAlgorithm,
    },
    /// The block's key usage is not the one the caller expects.
    #[error(
        "key block has key usage {found}, but a {expected} key was expected; use a block made for that usage"
    )]
    UnexpectedUsage { expected: KeyUsage, found: KeyUsage },
    /// The random number generator failed while padding.
    #[error("random number generator failed: {0}")]
    Random(String),
    /// A KBPK held outside station memory failed to compute a CMAC.
    #[error("the key block protection key failed to compute a CMAC: {0}")]
    ExternalKbpk(String),
    /// A version that derives its keys by XOR was asked to use a KBPK held outside station memory.
    #[error(
        "key block version {version} derives its keys from the clear KBPK, so it cannot use a KBPK held in an HSM; use version B, D or E"
    )]
    ExternalKbpkVariant { version: char },
    /// A key could not be built from the unwrapped bytes.
    #[error(transparent)]
    Key(#[from] KeyError),
}
