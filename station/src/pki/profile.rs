//! The certificate profile of the factory PKI: subjects, validity, serial numbers and extensions
//! of the factory CA's, the station's and devices' certificates (RFC 5280).
//!
//! | certificate | subject | basicConstraints (critical) | keyUsage (critical) |
//! | --- | --- | --- | --- |
//! | factory CA | as given at the ceremony | CA:true, pathLen 0 | keyCertSign, cRLSign |
//! | station | `CN=<station ID>` | CA:false | digitalSignature, keyAgreement |
//! | device | `serialNumber=<serial>` (PrintableString), `OU=<model>` (UTF8String) | CA:false | digitalSignature, keyAgreement |
//!
//! Every certificate carries a subjectKeyIdentifier, and those the CA issues an
//! authorityKeyIdentifier, both by RFC 5280 method 1 (SHA-1 of the subjectPublicKey bits). The
//! CA's path length is 0 because it signs only end-entity certificates. No certificate carries
//! extendedKeyUsage: no registered purpose fits the terminal protocol's key exchange, and the
//! TLS purposes would make the keys usable for TLS elsewhere.
//!
//! The device's model goes in organizationalUnitName because X.520 has no model attribute. The
//! serial number goes in the X.520 serialNumber attribute, which RFC 5280 types as
//! PrintableString of at most 64 characters.

use std::time::SystemTime;

use der::asn1::Any;
use der::{DateTime, Decode, Encode, Header, Length, Tag, Tagged};
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use super::{PkiError, oids};

/// Upper bound of the serialNumber and organizationalUnitName attributes (RFC 5280 appendix A).
pub const MAX_NAME_ATTRIBUTE_LEN: usize = 64;

/// Octets of every serial number this station issues, within RFC 5280's limit of 20. The top bit
/// is cleared, so the INTEGER is positive without a leading zero octet. The next bit is set, so
/// the length never shrinks. That leaves 126 random bits.
pub const SERIAL_NUMBER_LEN: usize = 16;

/// When a certificate stops being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAfter {
    /// At this time, to the second.
    At(SystemTime),
    /// Never: notAfter is 99991231235959Z, RFC 5280's value for "no well-defined expiration".
    NoExpiry,
}

/// The validity period of a certificate to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidityPeriod {
    /// The first second of validity.
    pub not_before: SystemTime,
    /// The end of validity.
    pub not_after: NotAfter,
}

impl ValidityPeriod {
    /// Makes a period that starts now and lasts `duration`. A duration that overflows the clock
    /// ends in the year 10000, which issuance rejects like any end after 9999-12-31T23:59:59Z.
    pub fn from_now(duration: std::time::Duration) -> Self {
        let now = SystemTime::now();
        let year_10000 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_800);
        Self {
            not_before: now,
            not_after: NotAfter::At(now.checked_add(duration).unwrap_or(year_10000)),
        }
    }

    /// Makes a period that starts now and ends at `not_after`.
    pub fn until(not_after: NotAfter) -> Self {
        Self {
            not_before: SystemTime::now(),
            not_after,
        }
    }

    /// Converts to X.509 times: UTCTime through 2049 and GeneralizedTime from 2050, as RFC 5280
    /// section 4.1.2.5 requires.
    pub(crate) fn to_x509(self) -> Result<Validity, PkiError> {
        let not_before = x509_time(self.not_before, "notBefore")?;
        let not_after = match self.not_after {
            NotAfter::At(time) => x509_time(time, "notAfter")?,
            NotAfter::NoExpiry => Time::INFINITY,
        };
        if not_after.to_unix_duration() <= not_before.to_unix_duration() {
            return Err(PkiError::InvalidValidity(format!(
                "notAfter {not_after} is not after notBefore {not_before}"
            )));
        }
        Ok(Validity::new(not_before, not_after))
    }
}

fn x509_time(time: SystemTime, field: &str) -> Result<Time, PkiError> {
    let date_time = DateTime::from_system_time(time).map_err(|_| {
        PkiError::InvalidValidity(format!(
            "{field} must lie between 1970 and 9999-12-31T23:59:59Z"
        ))
    })?;
    // `Time::from` picks UTCTime for years up to 2049 and GeneralizedTime after.
    Ok(Time::from(date_time))
}

/// Generates a random positive serial number of [`SERIAL_NUMBER_LEN`] octets.
pub(crate) fn random_serial_number() -> Result<SerialNumber, PkiError> {
    let mut octets = [0u8; SERIAL_NUMBER_LEN];
    getrandom::fill(&mut octets).map_err(|error| PkiError::Random(error.to_string()))?;
    octets[0] = (octets[0] & 0x7F) | 0x40;
    Ok(SerialNumber::new(&octets)?)
}

/// The purpose of a certificate, which selects its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CertificateRole {
    /// The self-signed factory CA.
    FactoryCa,
    /// The station's own certificate, or a device's: an end entity that signs key exchange
    /// transcripts and agrees keys.
    EndEntity,
}

/// The builder profile of one certificate.
pub(crate) struct IssuanceProfile {
    pub role: CertificateRole,
    pub subject: Name,
    pub issuer: Name,
}

impl BuilderProfile for IssuanceProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let subject = tbs.subject();
        let (basic_constraints, key_usage) = match self.role {
            CertificateRole::FactoryCa => (
                BasicConstraints {
                    ca: true,
                    path_len_constraint: Some(0),
                },
                KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
            ),
            CertificateRole::EndEntity => (
                BasicConstraints {
                    ca: false,
                    path_len_constraint: None,
                },
                KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyAgreement),
            ),
        };
        let mut extensions = vec![
            (&basic_constraints).to_extension(subject, &[])?,
            (&key_usage).to_extension(subject, &[])?,
            (&SubjectKeyIdentifier::try_from(spk)?).to_extension(subject, &[])?,
        ];
        if self.role == CertificateRole::EndEntity {
            let issuer_key_id = SubjectKeyIdentifier::try_from(issuer_spk)?;
            let authority_key_id = AuthorityKeyIdentifier {
                key_identifier: Some(issuer_key_id.0),
                ..Default::default()
            };
            extensions.push((&authority_key_id).to_extension(subject, &[])?);
        }
        Ok(extensions)
    }
}

/// Builds the subject of a device certificate from the identity the device reported.
pub(crate) fn device_subject(serial_number: &str, model: &str) -> Result<Name, PkiError> {
    check_serial_number(serial_number)?;
    check_model(model)?;
    name_from_attributes(&[
        (oids::ORGANIZATIONAL_UNIT, Tag::Utf8String, model),
        (oids::SERIAL_NUMBER, Tag::PrintableString, serial_number),
    ])
}

/// Builds the subject of the station's certificate.
pub(crate) fn station_subject(station_id: &str) -> Result<Name, PkiError> {
    if station_id.is_empty()
        || station_id.len() > MAX_NAME_ATTRIBUTE_LEN
        || station_id.chars().any(char::is_control)
    {
        return Err(PkiError::InvalidStationId(station_id.to_owned()));
    }
    name_from_attributes(&[(oids::COMMON_NAME, Tag::Utf8String, station_id)])
}

fn check_serial_number(serial_number: &str) -> Result<(), PkiError> {
    let unsupported = |reason| PkiError::UnsupportedIdentity {
        field: "serial number",
        value: serial_number.to_owned(),
        reason,
    };
    if serial_number.is_empty() {
        return Err(unsupported("it is empty"));
    }
    if serial_number.len() > MAX_NAME_ATTRIBUTE_LEN {
        return Err(unsupported(
            "it is longer than the 64 characters RFC 5280 allows in serialNumber",
        ));
    }
    if !serial_number.chars().all(is_printable_string_char) {
        return Err(unsupported(
            "serialNumber is a PrintableString, which allows only letters, digits, space and ' ( ) + , - . / : = ?",
        ));
    }
    Ok(())
}

fn check_model(model: &str) -> Result<(), PkiError> {
    let unsupported = |reason| PkiError::UnsupportedIdentity {
        field: "model",
        value: model.to_owned(),
        reason,
    };
    if model.is_empty() {
        return Err(unsupported("it is empty"));
    }
    if model.chars().count() > MAX_NAME_ATTRIBUTE_LEN {
        return Err(unsupported(
            "it is longer than the 64 characters RFC 5280 allows in organizationalUnitName",
        ));
    }
    if model.chars().any(char::is_control) {
        return Err(unsupported("it contains control characters"));
    }
    Ok(())
}

/// Returns true for characters of the PrintableString set (X.680 section 41.4).
fn is_printable_string_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c)
}

/// Encodes a name with one attribute per RDN, in DER order (most significant first). Building the
/// DER directly, rather than parsing an RFC 4514 string, keeps values with `,`, `+` or `=` intact.
fn name_from_attributes(attributes: &[(ObjectIdentifier, Tag, &str)]) -> Result<Name, PkiError> {
    let mut rdns = Vec::new();
    for (oid, tag, value) in attributes {
        let attribute = AttributeTypeAndValue {
            oid: *oid,
            value: Any::new(*tag, value.as_bytes())?,
        };
        let attribute_der = attribute.to_der()?;
        Header::new(Tag::Set, Length::try_from(attribute_der.len())?).encode_to_vec(&mut rdns)?;
        rdns.extend_from_slice(&attribute_der);
    }
    let mut name_der = Vec::new();
    Header::new(Tag::Sequence, Length::try_from(rdns.len())?).encode_to_vec(&mut name_der)?;
    name_der.extend_from_slice(&rdns);
    Ok(Name::from_der(&name_der)?)
}

/// Returns the values of every attribute `oid` in `name`, as text. Values that are not a string
/// type are returned as `None`.
pub(crate) fn attribute_values(name: &Name, oid: ObjectIdentifier) -> Vec<Option<String>> {
    name.iter()
        .filter(|attribute| attribute.oid == oid)
        .map(|attribute| string_value(&attribute.value))
        .collect()
}

fn string_value(value: &Any) -> Option<String> {
    match value.tag() {
        Tag::PrintableString | Tag::Utf8String | Tag::Ia5String => {
            std::str::from_utf8(value.value()).ok().map(str::to_owned)
        }
        _ => None,
    }
}
