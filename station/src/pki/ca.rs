//! The factory CA: a self-signed P-384 CA that certifies the station and the devices it
//! provisions. [`crate::pki::store`] keeps its key in the vault between ceremonies.

use std::str::FromStr;

use der::Encode;
use p384::ecdsa::DerSignature;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::name::Name;

use super::certificate::ParsedCertificate;
use super::csr::CheckedCsr;
use super::key::{P384PrivateKey, P384PublicKey};
use super::profile::{
    CertificateRole, IssuanceProfile, ValidityPeriod, device_subject, random_serial_number,
    station_subject,
};
use super::{PkiError, oids};

/// The factory CA: its certificate and its private key.
#[derive(Debug)]
pub struct FactoryCa {
    certificate: ParsedCertificate,
    key: P384PrivateKey,
}

impl FactoryCa {
    /// Creates a CA: a fresh P-384 key and a self-signed certificate for `subject`, an RFC 4514
    /// name such as `CN=Factory CA,O=Example`.
    pub fn create(subject: &str, validity: ValidityPeriod) -> Result<Self, PkiError> {
        let name = Name::from_str(subject).map_err(|error| PkiError::InvalidSubject {
            subject: subject.to_owned(),
            reason: error.to_string(),
        })?;
        if name.is_empty() {
            return Err(PkiError::InvalidSubject {
                subject: subject.to_owned(),
                reason: "a CA needs a non-empty subject".to_owned(),
            });
        }
        let key = P384PrivateKey::generate()?;
        let profile = IssuanceProfile {
            role: CertificateRole::FactoryCa,
            subject: name.clone(),
            issuer: name,
        };
        let certificate = sign(profile, validity, &key.public_key(), &key)?;
        tracing::info!(
            subject,
            fingerprint = %certificate.fingerprint(),
            "factory CA created"
        );
        Ok(Self { certificate, key })
    }

    /// Rebuilds a CA from its certificate and key, checking that the key belongs to the
    /// certificate and that the certificate is a P-384 ecdsa-with-SHA384 certificate.
    pub fn from_parts(
        certificate: ParsedCertificate,
        key: P384PrivateKey,
    ) -> Result<Self, PkiError> {
        let certified = certificate.public_key()?;
        if certified != key.public_key() {
            return Err(PkiError::Build(format!(
                "the private key does not belong to CA certificate {:?}",
                certificate.subject()
            )));
        }
        let algorithm = &certificate.certificate().signature_algorithm().oid;
        if *algorithm != oids::ECDSA_WITH_SHA384 {
            return Err(PkiError::UnsupportedSignatureAlgorithm {
                owner: format!("CA certificate {:?}", certificate.subject()),
                found: oids::describe(algorithm),
            });
        }
        Ok(Self { certificate, key })
    }

    /// The CA's self-signed certificate.
    pub fn certificate(&self) -> &ParsedCertificate {
        &self.certificate
    }

    /// The CA's private key.
    pub fn private_key(&self) -> &P384PrivateKey {
        &self.key
    }

    /// Splits the CA into its certificate and key.
    pub fn into_parts(self) -> (ParsedCertificate, P384PrivateKey) {
        (self.certificate, self.key)
    }

    /// Issues the station's own certificate for `public_key`, with subject `CN=<station_id>`.
    pub fn issue_station_certificate(
        &self,
        station_id: &str,
        public_key: &P384PublicKey,
        validity: ValidityPeriod,
    ) -> Result<ParsedCertificate, PkiError> {
        let profile = IssuanceProfile {
            role: CertificateRole::EndEntity,
            subject: station_subject(station_id)?,
            issuer: self
                .certificate
                .certificate()
                .tbs_certificate()
                .subject()
                .clone(),
        };
        let certificate = sign(profile, validity, public_key, &self.key)?;
        tracing::info!(
            station_id,
            fingerprint = %certificate.fingerprint(),
            "station certificate issued"
        );
        Ok(certificate)
    }

    /// Issues a device certificate for a CSR that [`crate::pki::check_csr`] accepted, with the
    /// serial number and model the device reported in its subject.
    pub fn issue_device_certificate(
        &self,
        csr: &CheckedCsr,
        validity: ValidityPeriod,
    ) -> Result<ParsedCertificate, PkiError> {
        let identity = csr.identity();
        let profile = IssuanceProfile {
            role: CertificateRole::EndEntity,
            subject: device_subject(&identity.serial_number, &identity.model)?,
            issuer: self
                .certificate
                .certificate()
                .tbs_certificate()
                .subject()
                .clone(),
        };
        let certificate = sign(profile, validity, csr.public_key(), &self.key)?;
        tracing::info!(
            serial_number = %identity.serial_number,
            model = %identity.model,
            fingerprint = %certificate.fingerprint(),
            "device certificate issued"
        );
        Ok(certificate)
    }
}

/// Builds and signs one certificate with a fresh random serial number.
fn sign(
    profile: IssuanceProfile,
    validity: ValidityPeriod,
    subject_key: &P384PublicKey,
    issuer_key: &P384PrivateKey,
) -> Result<ParsedCertificate, PkiError> {
    let spki = SubjectPublicKeyInfoOwned::from_key(subject_key.verifying_key())
        .map_err(|error| PkiError::Build(error.to_string()))?;
    let builder =
        CertificateBuilder::new(profile, random_serial_number()?, validity.to_x509()?, spki)?;
    let certificate = builder.build::<_, DerSignature>(issuer_key.signing_key())?;
    ParsedCertificate::from_der(&certificate.to_der()?, 1)
}
