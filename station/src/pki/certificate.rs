//! A parsed X.509 certificate that keeps the exact bytes it was parsed from.
//!
//! Signatures are checked over the `tbsCertificate` bytes as received, never over a re-encoding,
//! so a certificate whose fields a decoder would "fix" (a negative serial number, say) is judged
//! on what its issuer signed.

use std::fmt;
use std::time::SystemTime;

use der::referenced::OwnedToRef;
use der::{Decode, Header, Reader, SliceReader, Tag};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::time::Time;

use super::key::P384PublicKey;
use super::profile::attribute_values;
use super::{PkiError, oids};

/// A DER certificate with its parsed fields.
#[derive(Clone)]
pub struct ParsedCertificate {
    der: Vec<u8>,
    position: usize,
    tbs_range: std::ops::Range<usize>,
    certificate: Certificate,
}

impl ParsedCertificate {
    /// Parses a DER certificate. `position` (from 1) names it in errors.
    pub fn from_der(der: &[u8], position: usize) -> Result<Self, PkiError> {
        let malformed = |reason: String| PkiError::MalformedCertificate { position, reason };
        let tbs_range = tbs_range(der).map_err(|error| malformed(error.to_string()))?;
        let certificate =
            Certificate::from_der(der).map_err(|error| malformed(error.to_string()))?;
        Ok(Self {
            der: der.to_vec(),
            position,
            tbs_range,
            certificate,
        })
    }

    /// Parses one PEM `CERTIFICATE` block.
    pub fn from_pem(pem: &str, position: usize) -> Result<Self, PkiError> {
        let (label, der) = der::pem::decode_vec(pem.as_bytes()).map_err(|error| {
            PkiError::MalformedCertificate {
                position,
                reason: format!("not a PEM certificate: {error}"),
            }
        })?;
        if label != "CERTIFICATE" {
            return Err(PkiError::MalformedCertificate {
                position,
                reason: format!("the PEM block is a {label:?}, not a CERTIFICATE"),
            });
        }
        Self::from_der(&der, position)
    }

    /// Returns the certificate's DER bytes, as received or issued.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Encodes the certificate as PEM text.
    pub fn to_pem(&self) -> String {
        der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &self.der)
            .expect("PEM encoding of a byte string cannot fail")
    }

    /// SHA-256 over the DER certificate, as uppercase hex, the form `openssl x509 -fingerprint
    /// -sha256` prints without colons.
    pub fn fingerprint(&self) -> String {
        hex::encode_upper(Sha256::digest(&self.der))
    }

    /// Returns the parsed certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// Returns the `tbsCertificate` bytes as received, which are what the issuer signed.
    pub fn tbs_der(&self) -> &[u8] {
        &self.der[self.tbs_range.clone()]
    }

    /// Formats the subject as an RFC 4514 string.
    pub fn subject(&self) -> String {
        self.certificate.tbs_certificate().subject().to_string()
    }

    /// Formats the issuer as an RFC 4514 string.
    pub fn issuer(&self) -> String {
        self.certificate.tbs_certificate().issuer().to_string()
    }

    /// Returns the serial number with its sign.
    pub fn serial_number(&self) -> CertificateSerial {
        CertificateSerial {
            octets: self
                .certificate
                .tbs_certificate()
                .serial_number()
                .as_bytes()
                .to_vec(),
        }
    }

    /// Returns the values of the subject's serialNumber attributes.
    pub fn subject_serial_numbers(&self) -> Vec<Option<String>> {
        attribute_values(
            self.certificate.tbs_certificate().subject(),
            oids::SERIAL_NUMBER,
        )
    }

    /// Returns the values of the subject's organizationalUnitName attributes (the device model in
    /// certificates this station issues).
    pub fn subject_organizational_units(&self) -> Vec<Option<String>> {
        attribute_values(
            self.certificate.tbs_certificate().subject(),
            oids::ORGANIZATIONAL_UNIT,
        )
    }

    /// notBefore.
    pub fn not_before(&self) -> Time {
        self.certificate.tbs_certificate().validity().not_before
    }

    /// notAfter.
    pub fn not_after(&self) -> Time {
        self.certificate.tbs_certificate().validity().not_after
    }

    /// Returns the subject's public key if it is P-384.
    pub fn public_key(&self) -> Result<P384PublicKey, PkiError> {
        let spki = self.certificate.tbs_certificate().subject_public_key_info();
        P384PublicKey::from_spki(
            spki.owned_to_ref(),
            &format!("certificate {:?}", self.subject()),
        )
    }

    /// Decodes the basicConstraints extension, if present.
    pub fn basic_constraints(&self) -> Result<Option<BasicConstraints>, PkiError> {
        self.extension::<BasicConstraints>()
    }

    /// Decodes the keyUsage extension, if present.
    pub fn key_usage(&self) -> Result<Option<KeyUsage>, PkiError> {
        self.extension::<KeyUsage>()
    }

    fn extension<T>(&self) -> Result<Option<T>, PkiError>
    where
        T: for<'a> Decode<'a> + der::oid::AssociatedOid,
    {
        self.certificate
            .tbs_certificate()
            .get_extension::<T>()
            .map(|found| found.map(|(_critical, value)| value))
            .map_err(|error| PkiError::MalformedCertificate {
                position: self.position,
                reason: format!("extension {} of {:?}: {error}", T::OID, self.subject()),
            })
    }

    /// Returns true if `time` lies within notBefore..=notAfter.
    pub fn is_valid_at(&self, time: SystemTime) -> bool {
        let not_before = self.not_before().to_system_time();
        let not_after = self.not_after().to_system_time();
        not_before <= time && time <= not_after
    }
}

impl fmt::Debug for ParsedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedCertificate")
            .field("subject", &self.subject())
            .field("serial_number", &self.serial_number().to_string())
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

/// Finds the `tbsCertificate` TLV inside a DER certificate without decoding it.
fn tbs_range(der: &[u8]) -> der::Result<std::ops::Range<usize>> {
    let mut reader = SliceReader::new(der)?;
    let outer = Header::decode(&mut reader)?;
    if outer.tag() != Tag::Sequence {
        return Err(der::Error::from(der::ErrorKind::TagUnexpected {
            expected: Some(Tag::Sequence),
            actual: outer.tag(),
        }));
    }
    let start = usize::try_from(reader.position())?;
    let tbs = reader.tlv_bytes()?;
    Ok(start..start + tbs.len())
}

/// A certificate serial number as encoded: a two's complement big-endian INTEGER.
///
/// Kept as the octets received. RFC 5280 forbids negative serials, but some CAs issue them, and
/// re-encoding one as positive would break the issuer's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSerial {
    octets: Vec<u8>,
}

impl CertificateSerial {
    /// Returns the INTEGER's content octets as encoded.
    pub fn octets(&self) -> &[u8] {
        &self.octets
    }

    /// Returns true if the INTEGER is negative (its first content octet has the top bit set).
    pub fn is_negative(&self) -> bool {
        self.octets.first().is_some_and(|first| first & 0x80 != 0)
    }

    /// Computes the magnitude as big-endian octets without leading zeros.
    pub fn magnitude(&self) -> Vec<u8> {
        let mut value = self.octets.clone();
        if self.is_negative() {
            // Two's complement negation: invert every bit, then add one.
            for octet in value.iter_mut() {
                *octet = !*octet;
            }
            for octet in value.iter_mut().rev() {
                let (sum, carry) = octet.overflowing_add(1);
                *octet = sum;
                if !carry {
                    break;
                }
            }
        }
        let first_nonzero = value
            .iter()
            .position(|&octet| octet != 0)
            .unwrap_or(value.len());
        value.split_off(first_nonzero)
    }
}

/// Hex with a leading `-` for negative serials, such as `-11D4…3BFF`, or `0` for zero.
impl fmt::Display for CertificateSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let magnitude = self.magnitude();
        if magnitude.is_empty() {
            return f.write_str("0");
        }
        if self.is_negative() {
            f.write_str("-")?;
        }
        f.write_str(&hex::encode_upper(magnitude))
    }
}
