//! Validation of device certificate chains against configured roots (RFC 5280 section 6,
//! restricted to this station's profile).
//!
//! A terminal that arrives with a certificate from its maker's CA sends its chain, device
//! certificate first. The station accepts the chain only if all of these hold:
//!
//! - every certificate is valid at the time of validation, has a P-384 key, is signed with
//!   ecdsa-with-SHA384 and has a positive serial number;
//! - each issuer is a CA: basicConstraints CA:true, keyCertSign if keyUsage is present, and its
//!   path length respected;
//! - a configured root issued the last certificate;
//! - the device certificate is an end entity whose keyUsage allows digitalSignature, which the
//!   key exchange needs.
//!
//! NOTE: revocation (CRLs, OCSP) and name constraints are not checked. A certificate with a
//! critical extension other than basicConstraints or keyUsage is rejected, as RFC 5280 requires
//! of a validator that does not process it.

use std::time::SystemTime;

use chrono::{DateTime, Utc};

use super::certificate::ParsedCertificate;
use super::key::P384PublicKey;
use super::{PkiError, oids};

/// Maximum number of certificates in a chain: the device certificate, up to three intermediates
/// and optionally the root.
pub const MAX_CHAIN_LEN: usize = 5;

/// The roots a station trusts for device certificates: makers' root CAs and its own factory CA.
#[derive(Debug, Clone, Default)]
pub struct TrustedRoots {
    roots: Vec<ParsedCertificate>,
}

impl TrustedRoots {
    /// Creates an empty set, which trusts nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a root certificate, which must be a P-384 CA certificate. Its validity is checked
    /// when a chain is validated.
    pub fn add(&mut self, root: ParsedCertificate) -> Result<(), PkiError> {
        root.public_key()?;
        check_issuer_is_ca(&root, 0)?;
        self.roots.push(root);
        Ok(())
    }

    /// Adds every `CERTIFICATE` block of a PEM bundle.
    pub fn add_pem_bundle(&mut self, pem: &str) -> Result<usize, PkiError> {
        let mut added = 0;
        for (index, block) in pem_blocks(pem).into_iter().enumerate() {
            self.add(ParsedCertificate::from_pem(block, index + 1)?)?;
            added += 1;
        }
        Ok(added)
    }

    /// Returns the roots, in the order added.
    pub fn roots(&self) -> &[ParsedCertificate] {
        &self.roots
    }
}

/// A chain that passed validation.
#[derive(Debug, Clone)]
pub struct ValidatedChain {
    /// The device's certificate.
    pub device_certificate: ParsedCertificate,
    /// The device's certificate key, for verifying its key exchange signatures.
    pub device_key: P384PublicKey,
    /// The root that anchors the chain.
    pub root: ParsedCertificate,
}

impl ValidatedChain {
    /// Checks that the device certificate's subject has exactly one serialNumber attribute and
    /// that it equals the serial number the device reported in HELLO, so a device cannot present
    /// another device's certificate as its own.
    pub fn check_serial_number(&self, reported: &str) -> Result<(), PkiError> {
        let values = self.device_certificate.subject_serial_numbers();
        let mismatch = |in_certificate: String| PkiError::CertificateIdentityMismatch {
            subject: self.device_certificate.subject(),
            reported: reported.to_owned(),
            in_certificate,
        };
        match values.as_slice() {
            [Some(value)] if value == reported => Ok(()),
            [Some(value)] => Err(mismatch(format!("{value:?}"))),
            [] => Err(mismatch("no serialNumber".to_owned())),
            [None] => Err(mismatch("a serialNumber that is not a string".to_owned())),
            several => Err(mismatch(format!("{} serialNumber values", several.len()))),
        }
    }
}

/// Validates a device chain against `roots` at time `now`. The chain is DER certificates, device
/// certificate first, then intermediates. The root may be included or left out.
pub fn validate_chain(
    chain: &[Vec<u8>],
    roots: &TrustedRoots,
    now: SystemTime,
) -> Result<ValidatedChain, PkiError> {
    if chain.is_empty() {
        return Err(PkiError::EmptyChain);
    }
    if chain.len() > MAX_CHAIN_LEN {
        return Err(PkiError::ChainTooLong {
            found: chain.len(),
            max: MAX_CHAIN_LEN,
        });
    }
    let mut certificates = chain
        .iter()
        .enumerate()
        .map(|(index, der)| ParsedCertificate::from_der(der, index + 1))
        .collect::<Result<Vec<_>, _>>()?;
    // A chain that ends with one of the roots itself is validated as if it ended before it.
    if certificates.len() > 1
        && let Some(last) = certificates.last()
        && roots.roots.iter().any(|root| root.der() == last.der())
    {
        certificates.pop();
    }

    for certificate in &certificates {
        check_certificate(certificate, now)?;
    }
    let device_certificate = &certificates[0];
    let device_key = device_certificate.public_key()?;
    check_leaf(device_certificate)?;

    for (index, pair) in certificates.windows(2).enumerate() {
        let (subject, issuer) = (&pair[0], &pair[1]);
        check_issued_by(subject, issuer)?;
        // Certificates 1..=index are CA certificates between the issuer and the device.
        check_issuer_is_ca(issuer, index)?;
    }

    let last = certificates.last().expect("the chain is not empty");
    let root = anchor(last, roots, certificates.len() - 1, now)?;

    tracing::debug!(
        device = %device_certificate.subject(),
        root = %root.subject(),
        length = certificates.len(),
        "device certificate chain validated"
    );
    Ok(ValidatedChain {
        device_certificate: device_certificate.clone(),
        device_key,
        root: root.clone(),
    })
}

/// Finds the root that issued `last`. Several roots may share a name (a maker's key rollover), so
/// each root with the issuer's name is tried, and the first error is returned if none fits.
fn anchor<'a>(
    last: &ParsedCertificate,
    roots: &'a TrustedRoots,
    intermediates_below_root: usize,
    now: SystemTime,
) -> Result<&'a ParsedCertificate, PkiError> {
    let mut first_error = None;
    let candidates = roots.roots.iter().filter(|root| {
        root.certificate().tbs_certificate().subject()
            == last.certificate().tbs_certificate().issuer()
    });
    for root in candidates {
        let checked = check_certificate(root, now)
            .and_then(|()| check_issued_by(last, root))
            .and_then(|()| check_issuer_is_ca(root, intermediates_below_root));
        match checked {
            Ok(()) => return Ok(root),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| PkiError::UntrustedIssuer {
        subject: last.subject(),
        issuer: last.issuer(),
    }))
}

/// Checks what every certificate of the chain must satisfy on its own.
fn check_certificate(certificate: &ParsedCertificate, now: SystemTime) -> Result<(), PkiError> {
    let subject = certificate.subject();
    let serial = certificate.serial_number();
    if serial.is_negative() {
        return Err(PkiError::NegativeSerial {
            subject,
            serial: serial.to_string(),
        });
    }

    let outer_algorithm = &certificate.certificate().signature_algorithm().oid;
    let inner_algorithm = &certificate.certificate().tbs_certificate().signature().oid;
    if *outer_algorithm != oids::ECDSA_WITH_SHA384 || inner_algorithm != outer_algorithm {
        return Err(PkiError::UnsupportedSignatureAlgorithm {
            owner: format!("certificate {subject:?}"),
            found: oids::describe(outer_algorithm),
        });
    }
    certificate.public_key()?;

    let not_before = certificate.not_before().to_system_time();
    let not_after = certificate.not_after().to_system_time();
    if now < not_before {
        return Err(PkiError::NotYetValid {
            subject,
            not_before: rfc3339(not_before),
            now: rfc3339(now),
        });
    }
    if now > not_after {
        return Err(PkiError::Expired {
            subject,
            not_after: rfc3339(not_after),
            now: rfc3339(now),
        });
    }

    // RFC 5280 4.2: a validator must reject a certificate with a critical extension it does not
    // recognise or cannot process.
    let processed = [oids::BASIC_CONSTRAINTS, oids::KEY_USAGE];
    for extension in certificate
        .certificate()
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
    {
        if extension.critical && !processed.contains(&extension.extn_id) {
            return Err(PkiError::UnknownCriticalExtension {
                subject,
                oid: extension.extn_id.to_string(),
            });
        }
    }
    Ok(())
}

/// Checks that `subject` names `issuer` as its issuer and that `issuer`'s key signed it.
fn check_issued_by(
    subject: &ParsedCertificate,
    issuer: &ParsedCertificate,
) -> Result<(), PkiError> {
    if subject.certificate().tbs_certificate().issuer()
        != issuer.certificate().tbs_certificate().subject()
    {
        return Err(PkiError::IssuerMismatch {
            subject: subject.subject(),
            issuer: subject.issuer(),
            next_subject: issuer.subject(),
        });
    }
    let issuer_key = issuer.public_key()?;
    let signature = subject
        .certificate()
        .signature()
        .as_bytes()
        .unwrap_or_default();
    if !issuer_key.verify(subject.tbs_der(), signature) {
        return Err(PkiError::SignatureInvalid {
            subject: subject.subject(),
            issuer: issuer.subject(),
        });
    }
    Ok(())
}

/// Checks that `issuer` may issue certificates with `intermediates_below` CA certificates
/// between it and the device (RFC 5280 4.2.1.3 and 4.2.1.9).
fn check_issuer_is_ca(
    issuer: &ParsedCertificate,
    intermediates_below: usize,
) -> Result<(), PkiError> {
    let not_a_ca = |reason: String| PkiError::NotACa {
        subject: issuer.subject(),
        reason,
    };
    let constraints = issuer
        .basic_constraints()?
        .ok_or_else(|| not_a_ca("it has no basicConstraints extension".to_owned()))?;
    if !constraints.ca {
        return Err(not_a_ca("its basicConstraints has CA:false".to_owned()));
    }
    if let Some(path_len) = constraints.path_len_constraint
        && intermediates_below > usize::from(path_len)
    {
        return Err(not_a_ca(format!(
            "its pathLenConstraint allows {path_len} CA certificates below it, but the chain has {intermediates_below}"
        )));
    }
    if let Some(key_usage) = issuer.key_usage()?
        && !key_usage.key_cert_sign()
    {
        return Err(not_a_ca("its keyUsage lacks keyCertSign".to_owned()));
    }
    Ok(())
}

/// Checks that the device certificate is an end entity allowed to sign key exchanges.
fn check_leaf(leaf: &ParsedCertificate) -> Result<(), PkiError> {
    let unusable = |reason: &str| PkiError::UnusableLeaf {
        subject: leaf.subject(),
        reason: reason.to_owned(),
    };
    if leaf
        .basic_constraints()?
        .is_some_and(|constraints| constraints.ca)
    {
        return Err(unusable(
            "it is a CA certificate (basicConstraints CA:true)",
        ));
    }
    match leaf.key_usage()? {
        Some(key_usage) if key_usage.digital_signature() => Ok(()),
        Some(_) => Err(unusable(
            "its keyUsage lacks digitalSignature, which the key exchange needs",
        )),
        None => Err(unusable(
            "it has no keyUsage extension; the station requires digitalSignature",
        )),
    }
}

fn rfc3339(time: SystemTime) -> String {
    DateTime::<Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Splits a PEM bundle into its blocks, each from `-----BEGIN` through its `-----END …-----`
/// line.
fn pem_blocks(pem: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after_begin = &rest[start..];
        let Some(end_marker) = after_begin.find("-----END ") else {
            blocks.push(after_begin);
            break;
        };
        let after_end = &after_begin[end_marker + "-----END ".len()..];
        let close = after_end
            .find("-----")
            .map_or(after_end.len(), |i| i + "-----".len());
        let block_len = end_marker + "-----END ".len() + close;
        blocks.push(&after_begin[..block_len]);
        rest = &after_begin[block_len..];
    }
    blocks
}
