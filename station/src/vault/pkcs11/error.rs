//! Errors of the PKCS#11 backend. None of them carries a PIN or key material.

use std::path::PathBuf;

use super::TokenSelector;

/// Errors of the PKCS#11 backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The operator's configuration is incomplete or malformed.
    #[error("invalid PKCS#11 configuration: {0}")]
    InvalidConfig(String),
    /// The PIN file or variable is missing or unreadable; the text names the source, never the
    /// PIN.
    #[error("the token PIN is unavailable: {0}")]
    PinUnavailable(String),
    /// The PKCS#11 module could not be loaded or initialised.
    #[error(
        "cannot load PKCS#11 module {path}: {reason}; check the module path in the HSM configuration and that the vendor's client is installed"
    )]
    ModuleLoad {
        /// Path of the module.
        path: PathBuf,
        /// Message from the loader or C_Initialize.
        reason: String,
    },
    /// No slot contains a token with the configured label or serial.
    #[error(
        "no token with {selector} is present (tokens found: {found}); check that the HSM is connected and the token label or serial in the configuration"
    )]
    TokenNotFound {
        /// The configured label or serial.
        selector: TokenSelector,
        /// Labels and serials of the tokens that are present, or "none".
        found: String,
    },
    /// Two tokens share the configured label.
    #[error(
        "{count} tokens have {selector}; configure token_serial instead to pick one (serials: {serials})"
    )]
    AmbiguousToken {
        /// The configured label.
        selector: TokenSelector,
        /// How many tokens matched.
        count: usize,
        /// Their serial numbers.
        serials: String,
    },
    /// The token rejected the PIN.
    #[error(
        "the token {token:?} rejected the PIN; check the PIN file or variable (repeated failures lock the token)"
    )]
    WrongPin {
        /// Label of the token.
        token: String,
    },
    /// The token's user PIN is locked after too many failures.
    #[error("the user PIN of token {token:?} is locked; a security officer must unlock it")]
    PinLocked {
        /// Label of the token.
        token: String,
    },
    /// Two token objects have the same label, so the station cannot tell which key is meant.
    #[error(
        "token {token:?} holds {count} secret keys labelled {label:?}; remove the extra objects with the vendor's tool"
    )]
    DuplicateObject {
        /// Label of the token.
        token: String,
        /// Object label.
        label: String,
        /// Number of matching objects.
        count: usize,
    },
    /// A token object's attributes allow more than its usage permits, so someone changed it
    /// outside the station or created it with another tool.
    #[error(
        "token object {label:?} has {attribute} = {actual}, but the station requires {expected}; the object was changed outside the station, so destroy it and import the key again"
    )]
    TemplateViolation {
        /// Object label.
        label: String,
        /// The PKCS#11 attribute name, such as `CKA_EXTRACTABLE`.
        attribute: &'static str,
        /// The value found.
        actual: bool,
        /// The value the station requires.
        expected: bool,
    },
    /// The token does not offer a mechanism the requested operation needs.
    #[error(
        "token {token:?} does not offer {mechanism}, which {operation} needs; see docs/hsm.md for the mechanisms the station uses"
    )]
    MechanismMissing {
        /// Label of the token.
        token: String,
        /// The mechanism name, such as `CKM_AES_CMAC`.
        mechanism: &'static str,
        /// Operation that needed it.
        operation: &'static str,
    },
    /// The token returned a value of an unexpected length or type, which is a token fault.
    #[error("token {token:?} returned an unexpected result for {operation}: {reason}")]
    UnexpectedResult {
        /// Label of the token.
        token: String,
        /// The operation.
        operation: &'static str,
        /// Description of the fault.
        reason: String,
    },
    /// A PKCS#11 call failed.
    #[error("PKCS#11 {operation} on token {token:?} failed: {source}")]
    Call {
        /// Label of the token, or the module path before a token is chosen.
        token: String,
        /// Operation the station was running.
        operation: &'static str,
        /// The error that cryptoki reported.
        source: cryptoki::error::Error,
    },
}
