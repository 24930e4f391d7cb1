//! Errors of the factory PKI: issuing certificates, checking CSRs and validating chains.

use crate::audit::AuditError;

/// Errors of the factory PKI. None of them carries private key material.
///
/// Each message names whose fault it is: the operator gave bad input, the device sent something
/// wrong, a maker's certificate is unacceptable, or the station has a bug.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// The operator gave a CA subject that is not a valid RFC 4514 distinguished name.
    #[error(
        "invalid CA subject {subject:?}: {reason}; give an RFC 4514 name such as \"CN=Factory CA,O=Example\""
    )]
    InvalidSubject {
        /// The subject as given.
        subject: String,
        /// The reason for the rejection.
        reason: String,
    },
    /// The operator gave a CA label that breaks the vault's label rules.
    #[error(
        "invalid factory CA label {0:?}; use 1 to 63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    InvalidCaLabel(String),
    /// The station's configured ID cannot be a certificate's common name.
    #[error(
        "station ID {0:?} cannot be a certificate common name; use 1 to 64 characters without control characters"
    )]
    InvalidStationId(String),
    /// The operator gave a validity period that ends before it starts or that X.509 cannot encode.
    #[error("invalid certificate validity: {0}")]
    InvalidValidity(String),
    /// The terminal reported a serial number or model that cannot be put in a certificate subject.
    #[error("the device reported {field} {value:?}, which a certificate cannot carry: {reason}")]
    UnsupportedIdentity {
        /// `serial number` or `model`.
        field: &'static str,
        /// The value the device reported.
        value: String,
        /// The reason a certificate cannot carry it.
        reason: &'static str,
    },
    /// The device sent a CSR that is not a DER or PEM PKCS#10 certification request.
    #[error("the device sent a malformed certificate signing request: {0}")]
    MalformedCsr(String),
    /// The CSR's self-signature does not verify: it was altered or the device lacks the key.
    #[error(
        "the device's certificate signing request has an invalid signature; the request was altered or the device does not hold the private key"
    )]
    CsrSignatureInvalid,
    /// The CSR (or a certificate) carries a key that is not an EC P-384 key.
    #[error("{owner} has key type {found}; this station accepts only EC P-384 (secp384r1) keys")]
    UnsupportedKey {
        /// The object that carries the key, such as `the CSR` or `certificate "CN=…"`.
        owner: String,
        /// The key type found.
        found: String,
    },
    /// A CSR or certificate is signed with an algorithm other than ecdsa-with-SHA384.
    #[error("{owner} is signed with {found}; this station accepts only ecdsa-with-SHA384")]
    UnsupportedSignatureAlgorithm {
        /// The object that carries the signature.
        owner: String,
        /// The algorithm's OID or name.
        found: String,
    },
    /// The CSR's subject does not name the device that sent it.
    #[error(
        "the device's CSR has {field} {in_csr}, but the device reported {reported:?} in HELLO; the device must request a certificate for its own identity"
    )]
    CsrSubjectMismatch {
        /// `serial number` or `model`.
        field: &'static str,
        /// The value the terminal reported in HELLO.
        reported: String,
        /// The CSR subject's value, quoted, or `none`.
        in_csr: String,
    },
    /// A certificate is not valid DER X.509.
    #[error("certificate {position} of the chain is malformed: {reason}")]
    MalformedCertificate {
        /// Position in the chain, from 1 for the device's own certificate.
        position: usize,
        /// The decoding error.
        reason: String,
    },
    /// A certificate has a negative serial number, which RFC 5280 forbids.
    #[error(
        "certificate {subject:?} has the negative serial number {serial}; RFC 5280 requires a positive serial, so the maker must reissue it"
    )]
    NegativeSerial {
        /// The certificate's subject.
        subject: String,
        /// The serial as a signed hex number.
        serial: String,
    },
    /// A valid device certificate names a device other than the one that sent it.
    #[error(
        "device certificate {subject:?} has {in_certificate}, but the device reported serial number {reported:?} in HELLO; the device presented another device's certificate"
    )]
    CertificateIdentityMismatch {
        /// The certificate's subject.
        subject: String,
        /// The serial number the device reported in HELLO.
        reported: String,
        /// The certificate's serialNumber value, quoted, or a description of what it has instead.
        in_certificate: String,
    },
    /// The device sent no certificate.
    #[error("the device sent an empty certificate chain")]
    EmptyChain,
    /// The chain is longer than this station follows.
    #[error("the certificate chain has {found} certificates; this station follows at most {max}")]
    ChainTooLong {
        /// Certificates in the chain.
        found: usize,
        /// The limit.
        max: usize,
    },
    /// No configured root issued the last certificate of the chain.
    #[error(
        "certificate {subject:?} was issued by {issuer:?}, which is not a configured root; add the maker's root certificate to the trusted roots if it should be trusted"
    )]
    UntrustedIssuer {
        /// The subject of the last certificate that could not be anchored.
        subject: String,
        /// Its issuer name.
        issuer: String,
    },
    /// A certificate's issuer name does not match the subject of the next certificate.
    #[error(
        "certificate {subject:?} names issuer {issuer:?}, but the next certificate in the chain is {next_subject:?}; the chain is out of order or incomplete"
    )]
    IssuerMismatch {
        /// The certificate's subject.
        subject: String,
        /// The issuer it names.
        issuer: String,
        /// The subject of the next certificate in the chain.
        next_subject: String,
    },
    /// A certificate's signature does not verify under its issuer's key.
    #[error("certificate {subject:?} has a signature that does not verify under {issuer:?}'s key")]
    SignatureInvalid {
        /// The certificate's subject.
        subject: String,
        /// The issuer whose key was used.
        issuer: String,
    },
    /// A certificate has expired at the validation time.
    #[error("certificate {subject:?} expired at {not_after}; the time of validation is {now}")]
    Expired {
        /// The certificate's subject.
        subject: String,
        /// Its notAfter, RFC 3339.
        not_after: String,
        /// The validation time, RFC 3339.
        now: String,
    },
    /// A certificate is not valid yet at the validation time.
    #[error(
        "certificate {subject:?} is not valid before {not_before}; the time of validation is {now}; check the station's clock"
    )]
    NotYetValid {
        /// The certificate's subject.
        subject: String,
        /// Its notBefore, RFC 3339.
        not_before: String,
        /// The validation time, RFC 3339.
        now: String,
    },
    /// A certificate that issued another is not a CA certificate.
    #[error("certificate {subject:?} issued another certificate but is not a CA: {reason}")]
    NotACa {
        /// The issuing certificate's subject.
        subject: String,
        /// The missing property: basicConstraints CA:true, keyCertSign or path length.
        reason: String,
    },
    /// An end-entity certificate lacks a key usage the station requires, or is a CA certificate.
    #[error("device certificate {subject:?} is unusable: {reason}")]
    UnusableLeaf {
        /// The certificate's subject.
        subject: String,
        /// The missing key usage, or the CA flag.
        reason: String,
    },
    /// A certificate has a critical extension this station does not process (RFC 5280 4.2).
    #[error(
        "certificate {subject:?} has the critical extension {oid}, which this station does not process"
    )]
    UnknownCriticalExtension {
        /// The certificate's subject.
        subject: String,
        /// The extension's OID.
        oid: String,
    },
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
    /// Encoding or signing a certificate failed, which is a bug in the station.
    #[error("building a certificate failed (a bug in the station): {0}")]
    Build(String),
    /// The vault is sealed, so the factory CA key cannot be stored or loaded.
    #[error("the vault is sealed; run the unseal ceremony before using the factory CA")]
    VaultSealed,
    /// The vault failed to derive the CA key's wrapping key, for example because its token
    /// failed.
    #[error("the vault could not derive the factory CA key wrapping key: {0}")]
    Vault(crate::vault::VaultError),
    /// No factory CA with this label is stored.
    #[error("no factory CA labelled {0:?}; create one at a ceremony first")]
    CaNotFound(String),
    /// A factory CA with this label is already stored.
    #[error("a factory CA labelled {0:?} already exists; choose another label")]
    CaLabelTaken(String),
    /// The stored CA key blob or certificate is damaged or was altered.
    #[error("stored factory CA {label:?} is damaged or was altered: {reason}")]
    CaCorrupt {
        /// The CA's label.
        label: String,
        /// The check that failed.
        reason: String,
    },
    /// The audit event of a PKI action could not be written, so the action did not happen.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The database failed.
    #[error("database error in the factory PKI: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<der::Error> for PkiError {
    fn from(error: der::Error) -> Self {
        Self::Build(error.to_string())
    }
}

impl From<x509_cert::builder::Error> for PkiError {
    fn from(error: x509_cert::builder::Error) -> Self {
        Self::Build(error.to_string())
    }
}
