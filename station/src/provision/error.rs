//! Errors of provisioning.

/// Errors of provisioning one terminal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// No device profile covers the terminal, or the profiles are invalid.
    #[error(transparent)]
    Profile(#[from] super::profile::ProfileError),
    /// The device profile requires the key exchange but the terminal does not offer it.
    #[error(
        "the device profile of {vendor} {model} requires the ECDH P-384 key exchange, but the \
         terminal does not offer it (protocol version {version}); fix the profile or update the \
         terminal's firmware"
    )]
    KeyExchangeUnsupported {
        /// Vendor.
        vendor: String,
        /// Model.
        model: String,
        /// Protocol version the terminal speaks.
        version: u8,
    },
    /// The terminal has no certificate and cannot request one.
    #[error(
        "terminal {serial_number} presents no certificate and does not generate a key pair on \
         board, so it cannot be authenticated; have the maker certify it"
    )]
    NoDeviceCertificate {
        /// Serial number the terminal reported.
        serial_number: String,
    },
    /// The terminal's certificate, chain or CSR is unacceptable.
    #[error("terminal {serial_number}: {source}")]
    Certificate {
        /// Serial number the terminal reported.
        serial_number: String,
        /// Reason the PKI gave for the rejection.
        #[source]
        source: crate::pki::PkiError,
    },
    /// The terminal's certificate names another device than the one it reported in HELLO.
    #[error(
        "the terminal reported {field} {reported:?} in HELLO, but its certificate names \
         {certified}; the certificate belongs to another device"
    )]
    CertificateSubjectMismatch {
        /// `serial number` or `model`.
        field: &'static str,
        /// Message the terminal reported.
        reported: String,
        /// The values in the certificate's subject.
        certified: String,
    },
    /// The factory PKI failed: the stored CA could not be loaded or stored, or issuing or
    /// recording a certificate failed.
    #[error("factory PKI: {0}")]
    Pki(#[from] crate::pki::PkiError),
    /// The database could not start a transaction.
    #[error(transparent)]
    Database(#[from] crate::db::DbError),
    /// Recording an audit event failed, so the step did not go ahead.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The line uses the key exchange but was given no factory PKI; a bug in the caller.
    #[error("the line has no factory PKI configured, which the ECDH key exchange needs")]
    NoPki,
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
        /// Method of the station's check value.
        expected: &'static str,
        /// Method the terminal used.
        reported: &'static str,
    },
    /// The terminal stored a different key than the station sent.
    #[error(
        "the terminal reports check value {reported} for the loaded key, but the station derived {expected}; the key was not loaded correctly and the identity is burned"
    )]
    KcvMismatch {
        /// Check value the station derived.
        expected: String,
        /// Check value the terminal reported.
        reported: String,
    },
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
