//! Storage of the factory CA in the vault, and the record of every certificate it issues.
//!
//! The CA's private scalar (48 bytes) is wrapped with AES key wrap with padding (AES-KWP, RFC
//! 5649, NIST SP 800-38F) under a 256-bit key derived from the station master key. TR-31 was the
//! other candidate, but this station's TR-31 module wraps only TDES and AES keys, and X9.143
//! defines no mode of use for an ECDSA signing key that its version D binding would check.
//! AES-KWP is the standard wrap for arbitrary-length key material and has an integrity check.
//!
//! The wrapping key is derived, not the master key itself, so the master key keeps one use (the
//! TR-31 binding's own derivation). The derivation is NIST SP 800-108r1 in counter mode with
//! AES-256-CMAC as the PRF: `K(i) = CMAC(SMK, [i]_32 || Label || 0x00 || Context || [256]_32)`
//! for i = 1, 2, with Label `station factory CA key wrap` and Context the CA's label, so a wrapped
//! key copied into another row does not unwrap there. These are the encodings of OpenSSL 3's
//! KBKDF defaults, which the tests use as an independent check. After unwrapping, the scalar must also
//! produce the public key of the stored certificate.
//!
//! NOTE: this works with the software vault only. With a PKCS#11 vault the CA key belongs in the
//! token as a non-extractable object instead.
//!
//! Every action writes its audit event in the caller's transaction, so an action whose event
//! cannot be written does not happen.

use sqlx::{PgConnection, Row};
use zeroize::Zeroizing;

use aes_kw::{KwpAes128, KwpAes192, KwpAes256};
use cipher::KeyInit;

use super::PkiError;
use super::ca::FactoryCa;
use super::certificate::ParsedCertificate;
use super::csr::{CheckedCsr, DeviceIdentity};
use super::key::{P384_SCALAR_LEN, P384PrivateKey, P384PublicKey};
use super::profile::ValidityPeriod;
use crate::audit::{self, AuditEvent, Outcome};
use crate::crypto::{KeyAlgorithm, SecretKey};
use crate::vault::{Vault, VaultError, validate_label};

/// The `wrapping` column's value for the method above.
const WRAPPING_METHOD: &str = "smk-kdf-cmac-aes256-kwp-v1";
/// The SP 800-108 Label of the wrapping key derivation.
const KDF_LABEL: &[u8] = b"station factory CA key wrap";
/// Length of a wrapped scalar: 48 bytes plus the 8-byte integrity block.
pub const WRAPPED_KEY_LEN: usize = P384_SCALAR_LEN + 8;

/// The actor and audit chain of a PKI action.
#[derive(Debug, Clone)]
pub struct AuditActor<'a> {
    /// The station whose audit chain records the action.
    pub station_id: &'a str,
    /// The user or station that acts, such as `ceremony:<id>` or `station:line-1`.
    pub actor: &'a str,
}

/// Stores a new factory CA under `label`: its certificate, and its key wrapped under the vault's
/// master key. Records `pki.ca.created` in the audit trail. `conn` must be in a transaction.
pub async fn save_ca(
    conn: &mut PgConnection,
    vault: &Vault,
    label: &str,
    ca: &FactoryCa,
    ceremony_id: Option<uuid::Uuid>,
    actor: &AuditActor<'_>,
) -> Result<(), PkiError> {
    validate_label(label).map_err(|_| PkiError::InvalidCaLabel(label.to_owned()))?;
    let wrapped = wrap_scalar(vault, label, &ca.private_key().expose_scalar()[..])?;
    let certificate = ca.certificate();

    let inserted = sqlx::query(
        "INSERT INTO factory_ca (label, certificate, fingerprint, wrapped_key, wrapping, ceremony_id)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (label) DO NOTHING",
    )
    .bind(label)
    .bind(certificate.der())
    .bind(certificate.fingerprint())
    .bind(&wrapped)
    .bind(WRAPPING_METHOD)
    .bind(ceremony_id)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(PkiError::CaLabelTaken(label.to_owned()));
    }

    let event = AuditEvent {
        actor: actor.actor.to_owned(),
        action: "pki.ca.created".to_owned(),
        subject: format!("factory-ca:{label}"),
        outcome: Outcome::Success,
        details: serde_json::json!({
            "ca_subject": certificate.subject(),
            "certificate_fingerprint": certificate.fingerprint(),
            "serial_number": certificate.serial_number().to_string(),
            "not_after": certificate.not_after().to_string(),
            "ceremony_id": ceremony_id.map(|id| id.to_string()),
        }),
    };
    audit::append(conn, actor.station_id, &event).await?;
    tracing::info!(label, fingerprint = %certificate.fingerprint(), "factory CA stored");
    Ok(())
}

/// Loads factory CA `label` and unwraps its key under the vault's master key.
pub async fn load_ca(
    conn: &mut PgConnection,
    vault: &Vault,
    label: &str,
) -> Result<FactoryCa, PkiError> {
    if vault.is_sealed() {
        return Err(PkiError::VaultSealed);
    }
    let row = sqlx::query(
        "SELECT certificate, fingerprint, wrapped_key, wrapping FROM factory_ca WHERE label = $1",
    )
    .bind(label)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| PkiError::CaNotFound(label.to_owned()))?;
    let corrupt = |reason: String| PkiError::CaCorrupt {
        label: label.to_owned(),
        reason,
    };

    let wrapping: String = row.get("wrapping");
    if wrapping != WRAPPING_METHOD {
        return Err(corrupt(format!("unknown key wrapping {wrapping:?}")));
    }
    let certificate_der: Vec<u8> = row.get("certificate");
    let certificate = ParsedCertificate::from_der(&certificate_der, 1)
        .map_err(|error| corrupt(error.to_string()))?;
    let fingerprint: String = row.get("fingerprint");
    if certificate.fingerprint() != fingerprint {
        return Err(corrupt(
            "the certificate does not match its stored fingerprint".to_owned(),
        ));
    }
    let wrapped: Vec<u8> = row.get("wrapped_key");
    let wrapping_key = wrapping_key(vault, label)?;
    let scalar = kwp_unwrap(&wrapping_key, &wrapped).map_err(|_| {
        corrupt(
            "the wrapped key fails its integrity check under this master key and label".to_owned(),
        )
    })?;
    let key =
        P384PrivateKey::from_scalar(&scalar[..]).map_err(|error| corrupt(error.to_string()))?;
    FactoryCa::from_parts(certificate, key).map_err(|error| corrupt(error.to_string()))
}

/// Issues the station's own certificate from CA `ca_label`, records it and its audit event
/// `pki.certificate.issued`. `conn` must be in a transaction.
pub async fn issue_station_certificate(
    conn: &mut PgConnection,
    ca_label: &str,
    ca: &FactoryCa,
    station_id: &str,
    public_key: &P384PublicKey,
    validity: ValidityPeriod,
    actor: &AuditActor<'_>,
) -> Result<ParsedCertificate, PkiError> {
    let certificate = ca.issue_station_certificate(station_id, public_key, validity)?;
    record_certificate(conn, ca_label, &certificate, None, actor).await?;
    Ok(certificate)
}

/// Issues a device certificate for a checked CSR from CA `ca_label`, records it and its audit
/// event `pki.certificate.issued`. `conn` must be in a transaction.
pub async fn issue_device_certificate(
    conn: &mut PgConnection,
    ca_label: &str,
    ca: &FactoryCa,
    csr: &CheckedCsr,
    validity: ValidityPeriod,
    actor: &AuditActor<'_>,
) -> Result<ParsedCertificate, PkiError> {
    let certificate = ca.issue_device_certificate(csr, validity)?;
    record_certificate(conn, ca_label, &certificate, Some(csr), actor).await?;
    Ok(certificate)
}

/// The kind of object a device presented and the station rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// A certificate signing request ([`crate::pki::check_csr`] failed).
    Csr,
    /// A certificate chain ([`crate::pki::validate_chain`] or the identity check failed).
    Chain,
}

/// Records in the audit trail that a device's CSR or certificate chain was rejected, with the
/// identity the device reported and the reason, as `pki.csr.rejected` or `pki.chain.rejected`
/// with outcome failure. `conn` must be in a transaction.
pub async fn record_rejection(
    conn: &mut PgConnection,
    rejected: Rejected,
    reported: &DeviceIdentity,
    error: &PkiError,
    actor: &AuditActor<'_>,
) -> Result<(), PkiError> {
    let action = match rejected {
        Rejected::Csr => "pki.csr.rejected",
        Rejected::Chain => "pki.chain.rejected",
    };
    let event = AuditEvent {
        actor: actor.actor.to_owned(),
        action: action.to_owned(),
        subject: format!("device:{}", reported.serial_number),
        outcome: Outcome::Failure,
        details: serde_json::json!({
            "device_serial": reported.serial_number,
            "device_model": reported.model,
            "reason": error.to_string(),
        }),
    };
    audit::append(conn, actor.station_id, &event).await?;
    tracing::warn!(
        serial_number = %reported.serial_number,
        model = %reported.model,
        %error,
        "{action}"
    );
    Ok(())
}

async fn record_certificate(
    conn: &mut PgConnection,
    ca_label: &str,
    certificate: &ParsedCertificate,
    device: Option<&CheckedCsr>,
    actor: &AuditActor<'_>,
) -> Result<(), PkiError> {
    let serial = certificate.serial_number().to_string();
    let role = if device.is_some() {
        "device"
    } else {
        "station"
    };
    let not_before =
        chrono::DateTime::<chrono::Utc>::from(certificate.not_before().to_system_time());
    let not_after = chrono::DateTime::<chrono::Utc>::from(certificate.not_after().to_system_time());
    let identity = device.map(CheckedCsr::identity);
    sqlx::query(
        "INSERT INTO issued_certificate
             (ca_label, serial_number, role, subject, device_serial, device_model, fingerprint,
              certificate, not_before, not_after)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(ca_label)
    .bind(&serial)
    .bind(role)
    .bind(certificate.subject())
    .bind(identity.map(|identity| identity.serial_number.as_str()))
    .bind(identity.map(|identity| identity.model.as_str()))
    .bind(certificate.fingerprint())
    .bind(certificate.der())
    .bind(not_before)
    .bind(not_after)
    .execute(&mut *conn)
    .await?;

    let event = AuditEvent {
        actor: actor.actor.to_owned(),
        action: "pki.certificate.issued".to_owned(),
        subject: format!("certificate:{}", certificate.fingerprint()),
        outcome: Outcome::Success,
        details: serde_json::json!({
            "ca_label": ca_label,
            "role": role,
            "certificate_subject": certificate.subject(),
            "serial_number": serial,
            "not_after": certificate.not_after().to_string(),
            "device_serial": identity.map(|identity| identity.serial_number.clone()),
            "device_model": identity.map(|identity| identity.model.clone()),
        }),
    };
    audit::append(conn, actor.station_id, &event).await?;
    Ok(())
}

/// Derives the 256-bit wrapping key of CA `label` from the master key (SP 800-108r1 counter
/// mode, AES-CMAC PRF).
fn wrapping_key(vault: &Vault, label: &str) -> Result<SecretKey, PkiError> {
    derive_wrapping_key(label, |input| {
        vault.master_cmac(input).map_err(|error| match error {
            VaultError::Sealed => PkiError::VaultSealed,
            other => PkiError::Vault(other),
        })
    })
}

/// Derives the wrapping key with `master_cmac`, the AES-CMAC under the AES-256 master key that
/// the unseal ceremony checked.
fn derive_wrapping_key(
    label: &str,
    master_cmac: impl Fn(&[u8]) -> Result<Zeroizing<Vec<u8>>, PkiError>,
) -> Result<SecretKey, PkiError> {
    let mut derived = Zeroizing::new(Vec::with_capacity(32));
    for counter in 1u32..=2 {
        let mut input = Vec::with_capacity(4 + KDF_LABEL.len() + 1 + label.len() + 4);
        input.extend_from_slice(&counter.to_be_bytes());
        input.extend_from_slice(KDF_LABEL);
        input.push(0x00);
        input.extend_from_slice(label.as_bytes());
        input.extend_from_slice(&256u32.to_be_bytes());
        let block = master_cmac(&input)?;
        derived.extend_from_slice(&block);
    }
    SecretKey::new(KeyAlgorithm::Aes256, derived)
        .map_err(|error| PkiError::Build(error.to_string()))
}

fn wrap_scalar(vault: &Vault, label: &str, scalar: &[u8]) -> Result<Vec<u8>, PkiError> {
    let key = wrapping_key(vault, label)?;
    kwp_wrap(&key, scalar)
}

/// AES key wrap with padding (RFC 5649) under an AES key of any length.
pub(crate) fn kwp_wrap(kek: &SecretKey, plaintext: &[u8]) -> Result<Vec<u8>, PkiError> {
    let mut buffer = vec![0u8; plaintext.len().div_ceil(8) * 8 + 8];
    let wrapped = match KwpCipher::new(kek)? {
        KwpCipher::Aes128(cipher) => cipher.wrap_key(plaintext, &mut buffer),
        KwpCipher::Aes192(cipher) => cipher.wrap_key(plaintext, &mut buffer),
        KwpCipher::Aes256(cipher) => cipher.wrap_key(plaintext, &mut buffer),
    }
    .map_err(|error| PkiError::Build(format!("AES key wrap failed: {error}")))?;
    Ok(wrapped.to_vec())
}

/// Unwraps AES-KWP (RFC 5649) ciphertext, checking its integrity block.
pub(crate) fn kwp_unwrap(kek: &SecretKey, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    let mut buffer = Zeroizing::new(vec![0u8; wrapped.len()]);
    let length = match KwpCipher::new(kek)? {
        KwpCipher::Aes128(cipher) => cipher.unwrap_key(wrapped, &mut buffer),
        KwpCipher::Aes192(cipher) => cipher.unwrap_key(wrapped, &mut buffer),
        KwpCipher::Aes256(cipher) => cipher.unwrap_key(wrapped, &mut buffer),
    }
    .map_err(|error| PkiError::Build(format!("AES key unwrap failed: {error}")))?
    .len();
    buffer.truncate(length);
    Ok(buffer)
}

enum KwpCipher {
    Aes128(KwpAes128),
    Aes192(KwpAes192),
    Aes256(KwpAes256),
}

impl KwpCipher {
    fn new(kek: &SecretKey) -> Result<Self, PkiError> {
        let invalid = |error: cipher::InvalidLength| PkiError::Build(error.to_string());
        let key = kek.expose();
        match kek.algorithm() {
            KeyAlgorithm::Aes128 => KwpAes128::new_from_slice(key)
                .map(Self::Aes128)
                .map_err(invalid),
            KeyAlgorithm::Aes192 => KwpAes192::new_from_slice(key)
                .map(Self::Aes192)
                .map_err(invalid),
            KeyAlgorithm::Aes256 => KwpAes256::new_from_slice(key)
                .map(Self::Aes256)
                .map_err(invalid),
            other => Err(PkiError::Build(format!(
                "AES key wrap needs an AES key, not {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::mac::cmac;

    /// RFC 5649 section 6 vectors, as `KEK;key;wrapped` lines.
    const RFC5649_VECTORS: &str = include_str!("../../tests/data/pki/rfc5649_kwp.txt");

    #[test]
    fn kwp_matches_rfc5649_vectors() {
        let mut checked = 0;
        for line in RFC5649_VECTORS
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
        {
            let fields: Vec<&str> = line.split(';').collect();
            let kek = SecretKey::from_hex(KeyAlgorithm::Aes192, fields[0]).expect("valid KEK");
            let key = hex::decode(fields[1]).expect("valid key hex");
            let expected = hex::decode(fields[2]).expect("valid wrapped hex");
            assert_eq!(
                kwp_wrap(&kek, &key).expect("wrap"),
                expected,
                "wrap of {}",
                fields[1]
            );
            assert_eq!(&kwp_unwrap(&kek, &expected).expect("unwrap")[..], &key[..]);
            checked += 1;
        }
        assert_eq!(checked, 2);
    }

    #[test]
    fn kwp_rejects_altered_ciphertext() {
        let kek = SecretKey::from_slice(KeyAlgorithm::Aes256, &[7u8; 32]).expect("valid key");
        let mut wrapped = kwp_wrap(&kek, &[1u8; 48]).expect("wrap");
        wrapped[20] ^= 0x01;
        assert!(kwp_unwrap(&kek, &wrapped).is_err());
    }

    #[test]
    fn wrapping_key_depends_on_label() {
        let master = SecretKey::from_slice(KeyAlgorithm::Aes256, &[9u8; 32]).expect("valid key");
        let master_cmac = |input: &[u8]| Ok(Zeroizing::new(cmac(&master, input)));
        let first = derive_wrapping_key("factory-ca", master_cmac).expect("derive");
        let second = derive_wrapping_key("factory-ca-2", master_cmac).expect("derive");
        assert!(!first.ct_eq(&second));
    }
}
