//! The factory PKI: the factory CA, the station's certificate, device certificates from CSRs and
//! validation of device chains from makers' CAs. Every key and signature is EC P-384 with
//! ECDSA over SHA-384.
//!
//! [`profile`] documents what the issued certificates contain; [`store`] keeps the CA's key in
//! the vault under the station master key.

mod ca;
mod certificate;
mod chain;
mod csr;
mod error;
mod key;
mod oids;
pub mod profile;
pub mod store;

pub use ca::FactoryCa;
pub use certificate::{CertificateSerial, ParsedCertificate};
pub use chain::{MAX_CHAIN_LEN, TrustedRoots, ValidatedChain, validate_chain};
pub use csr::{CheckedCsr, DeviceIdentity, build_csr, check_csr};
pub use error::PkiError;
pub use key::{P384_SCALAR_LEN, P384PrivateKey, P384PublicKey};
pub use profile::{NotAfter, SERIAL_NUMBER_LEN, ValidityPeriod};
