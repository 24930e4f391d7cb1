//! Certificate signing requests from devices that generated their key pair on board (PKCS#10,
//! RFC 2986): the station's checks before its factory CA certifies the key, and the device side
//! that builds a request.

use der::referenced::OwnedToRef;
use der::{Decode, Encode, Header, Reader, SliceReader};
use p384::ecdsa::DerSignature;
use x509_cert::builder::Builder;
use x509_cert::request::{CertReq, RequestBuilder, Version};

use super::key::{P384PrivateKey, P384PublicKey};
use super::profile::{attribute_values, device_subject};
use super::{PkiError, oids};

/// The identity a device reported in HELLO, which its certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// The device's serial number.
    pub serial_number: String,
    /// The device's model.
    pub model: String,
}

/// A CSR that passed every check: its key is P-384, its self-signature verifies and its subject
/// names the device that sent it. The factory CA issues certificates only for these.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    identity: DeviceIdentity,
    public_key: P384PublicKey,
}

impl CheckedCsr {
    /// Returns the identity the device reported and the CSR confirmed.
    pub fn identity(&self) -> &DeviceIdentity {
        &self.identity
    }

    /// Returns the device's certificate key.
    pub fn public_key(&self) -> &P384PublicKey {
        &self.public_key
    }
}

/// Checks a CSR (DER, or PEM `CERTIFICATE REQUEST`) from the device that reported `reported` in
/// HELLO.
///
/// The checks, in order: the request parses as PKCS#10 version 1; its key is EC P-384; it is
/// signed with ecdsa-with-SHA384 and the signature verifies over the request info as received
/// (proof that the device has the private key); its subject has exactly one serialNumber equal
/// to the reported serial number and exactly one organizationalUnitName equal to the reported
/// model. Other subject attributes and requested extensions are ignored: the certificate's
/// subject and extensions come from the station's profile, never from the request.
pub fn check_csr(csr: &[u8], reported: &DeviceIdentity) -> Result<CheckedCsr, PkiError> {
    let der = csr_der(csr)?;
    let info_der =
        request_info_der(&der).map_err(|error| PkiError::MalformedCsr(error.to_string()))?;
    let request =
        CertReq::from_der(&der).map_err(|error| PkiError::MalformedCsr(error.to_string()))?;
    if request.info.version != Version::V1 {
        return Err(PkiError::MalformedCsr(
            "the request version is not v1 (0)".to_owned(),
        ));
    }

    let public_key = P384PublicKey::from_spki(request.info.public_key.owned_to_ref(), "the CSR")?;
    if request.algorithm.oid != oids::ECDSA_WITH_SHA384 {
        return Err(PkiError::UnsupportedSignatureAlgorithm {
            owner: "the CSR".to_owned(),
            found: oids::describe(&request.algorithm.oid),
        });
    }
    let signature = request
        .signature
        .as_bytes()
        .ok_or(PkiError::CsrSignatureInvalid)?;
    if !public_key.verify(info_der, signature) {
        return Err(PkiError::CsrSignatureInvalid);
    }

    let subject = &request.info.subject;
    check_single_attribute(
        "serial number",
        attribute_values(subject, oids::SERIAL_NUMBER),
        &reported.serial_number,
    )?;
    check_single_attribute(
        "model",
        attribute_values(subject, oids::ORGANIZATIONAL_UNIT),
        &reported.model,
    )?;
    // Rejects identities that the certificate profile cannot carry before the CA is involved.
    device_subject(&reported.serial_number, &reported.model)?;

    Ok(CheckedCsr {
        identity: reported.clone(),
        public_key,
    })
}

/// Builds a DER CSR for a device's certificate key, with the subject the station expects:
/// `serialNumber=<serial>` and `OU=<model>`. This is the device side, used by the terminal
/// simulator.
pub fn build_csr(key: &P384PrivateKey, identity: &DeviceIdentity) -> Result<Vec<u8>, PkiError> {
    let subject = device_subject(&identity.serial_number, &identity.model)?;
    let builder = RequestBuilder::new(subject)?;
    let request = builder.build::<_, DerSignature>(key.signing_key())?;
    Ok(request.to_der()?)
}

fn csr_der(csr: &[u8]) -> Result<Vec<u8>, PkiError> {
    if !csr.trim_ascii_start().starts_with(b"-----BEGIN") {
        return Ok(csr.to_vec());
    }
    let (label, der) = der::pem::decode_vec(csr)
        .map_err(|error| PkiError::MalformedCsr(format!("invalid PEM: {error}")))?;
    if label != "CERTIFICATE REQUEST" {
        return Err(PkiError::MalformedCsr(format!(
            "the PEM block is a {label:?}, not a CERTIFICATE REQUEST"
        )));
    }
    Ok(der)
}

/// Finds the `certificationRequestInfo` TLV, the signed part, without re-encoding it.
fn request_info_der(der: &[u8]) -> der::Result<&[u8]> {
    let mut reader = SliceReader::new(der)?;
    Header::decode(&mut reader)?;
    reader.tlv_bytes()
}

fn check_single_attribute(
    field: &'static str,
    values: Vec<Option<String>>,
    reported: &str,
) -> Result<(), PkiError> {
    let mismatch = |in_csr: String| PkiError::CsrSubjectMismatch {
        field,
        reported: reported.to_owned(),
        in_csr,
    };
    match values.as_slice() {
        [] => Err(mismatch("none".to_owned())),
        [Some(value)] if value == reported => Ok(()),
        [Some(value)] => Err(mismatch(format!("{value:?}"))),
        [None] => Err(mismatch("a value that is not a string".to_owned())),
        several => Err(mismatch(format!("{} values", several.len()))),
    }
}
