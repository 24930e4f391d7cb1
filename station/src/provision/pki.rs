//! What provisioning needs from the factory PKI: the factory CA that certifies terminals, the
//! station's own credentials for the key exchange, and the roots device chains must lead to.
//!
//! A line normally uses the factory CA stored in the vault ([`StationPki::open_or_create`]), so
//! every certificate it issues and every CSR or chain it rejects is recorded by
//! [`crate::pki::store`]. Tests may use a CA that exists only in memory
//! ([`StationPki::create_in_memory`]), whose certificates are not recorded.

use std::time::{Duration, SystemTime};

use sqlx::PgPool;

use super::ProvisionError;
use crate::db;
use crate::pki::store::{self, AuditActor, Rejected};
use crate::pki::{
    DeviceIdentity, FactoryCa, P384PrivateKey, ParsedCertificate, PkiError, TrustedRoots,
    ValidatedChain, ValidityPeriod, check_csr, validate_chain,
};
use crate::protocol::{DeviceCredentials, Hello, StationCredentials};
use crate::vault::Vault;

/// Validity of a device certificate the factory CA issues: 20 years, the service life this
/// station assumes for a payment terminal.
const DEVICE_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Validity of the station certificate, issued for each run to a fresh key: one day.
const STATION_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// Validity of a factory CA that [`StationPki::open_or_create`] creates: 25 years, longer than
/// every device certificate it issues.
const FACTORY_CA_VALIDITY: Duration = Duration::from_secs(25 * 365 * 24 * 3600);

/// The factory CA, the station's credentials and the trusted roots of one line.
#[derive(Debug)]
pub struct StationPki {
    /// The factory CA that issues device certificates from CSRs.
    pub ca: FactoryCa,
    /// The station's certificate key and chain (station certificate, then the CA's).
    pub credentials: StationCredentials,
    /// Roots a device chain must lead to: the factory CA and makers' roots.
    pub roots: TrustedRoots,
    /// Vault label of the stored CA; `None` for a CA in memory only.
    ca_label: Option<String>,
    /// This station's identifier in the audit trail.
    station_id: String,
}

impl StationPki {
    /// Loads the factory CA labelled `ca_label` from the vault, or creates and stores it if no
    /// CA has that label yet, then issues the station a certificate for a fresh key. The vault
    /// must be unsealed. Creating the CA, and issuing the station certificate, are recorded in
    /// the audit trail as `actor`.
    ///
    /// NOTE: creating the CA here, outside a ceremony, suits the demo and a first line. A site
    /// that creates its CA at a ceremony stores it under the label first, and this only loads it.
    pub async fn open_or_create(
        pool: &PgPool,
        vault: &Vault,
        station_id: &str,
        ca_label: &str,
        actor: &str,
        maker_roots: TrustedRoots,
    ) -> Result<Self, ProvisionError> {
        let audit_actor = AuditActor { station_id, actor };
        let mut tx = db::begin(pool).await?;
        let ca = match store::load_ca(&mut tx, vault, ca_label).await {
            Ok(ca) => ca,
            Err(PkiError::CaNotFound(_)) => {
                let ca = FactoryCa::create(
                    &format!("CN=Factory CA {ca_label},O=Key Injection Station"),
                    ValidityPeriod::from_now(FACTORY_CA_VALIDITY),
                )?;
                store::save_ca(&mut tx, vault, ca_label, &ca, None, &audit_actor).await?;
                ca
            }
            Err(error) => return Err(error.into()),
        };
        let key = P384PrivateKey::generate()?;
        let certificate = store::issue_station_certificate(
            &mut tx,
            ca_label,
            &ca,
            station_id,
            &key.public_key(),
            ValidityPeriod::from_now(STATION_CERTIFICATE_VALIDITY),
            &audit_actor,
        )
        .await?;
        tx.commit().await.map_err(PkiError::Database)?;
        Self::assemble(
            ca,
            key,
            certificate,
            station_id,
            Some(ca_label),
            maker_roots,
        )
    }

    /// Creates a factory CA that exists in memory only, for tests: its certificates are not
    /// recorded, and a terminal it certifies does not trust the next one.
    pub fn create_in_memory(station_id: &str) -> Result<Self, ProvisionError> {
        let ca = FactoryCa::create(
            &format!("CN=Factory CA {station_id},O=Key Injection Station"),
            ValidityPeriod::from_now(FACTORY_CA_VALIDITY),
        )?;
        let key = P384PrivateKey::generate()?;
        let certificate = ca.issue_station_certificate(
            station_id,
            &key.public_key(),
            ValidityPeriod::from_now(STATION_CERTIFICATE_VALIDITY),
        )?;
        Self::assemble(ca, key, certificate, station_id, None, TrustedRoots::new())
    }

    fn assemble(
        ca: FactoryCa,
        key: P384PrivateKey,
        certificate: ParsedCertificate,
        station_id: &str,
        ca_label: Option<&str>,
        maker_roots: TrustedRoots,
    ) -> Result<Self, ProvisionError> {
        let mut roots = maker_roots;
        roots.add(ca.certificate().clone())?;
        let credentials = StationCredentials {
            key,
            certificate_chain: vec![certificate.der().to_vec(), ca.certificate().der().to_vec()],
        };
        Ok(Self {
            ca,
            credentials,
            roots,
            ca_label: ca_label.map(str::to_owned),
            station_id: station_id.to_owned(),
        })
    }

    /// SHA-256 fingerprint of the station's certificate.
    pub fn station_fingerprint(&self) -> String {
        hex::encode_upper(<sha2::Sha256 as sha2::Digest>::digest(
            &self.credentials.certificate_chain[0],
        ))
    }

    /// Checks a terminal's CSR against its HELLO and issues its certificate, recording both
    /// outcomes when the CA is stored. Returns the chain to send in CERTIFICATE (device
    /// certificate, then the CA's) and the device's credentials.
    pub async fn certify(
        &self,
        pool: &PgPool,
        actor: &str,
        hello: &Hello,
        csr: &[u8],
    ) -> Result<(Vec<Vec<u8>>, DeviceCredentials), ProvisionError> {
        let identity = identity_of(hello);
        let certificate_error = |source| ProvisionError::Certificate {
            serial_number: hello.serial_number.clone(),
            source,
        };
        let audit_actor = AuditActor {
            station_id: &self.station_id,
            actor,
        };
        let checked = match check_csr(csr, &identity) {
            Ok(checked) => checked,
            Err(error) => {
                if self.ca_label.is_some() {
                    let mut tx = db::begin(pool).await?;
                    store::record_rejection(
                        &mut tx,
                        Rejected::Csr,
                        &identity,
                        &error,
                        &audit_actor,
                    )
                    .await?;
                    tx.commit().await.map_err(PkiError::Database)?;
                }
                return Err(certificate_error(error));
            }
        };
        let validity = ValidityPeriod::from_now(DEVICE_CERTIFICATE_VALIDITY);
        let certificate = match &self.ca_label {
            Some(label) => {
                let mut tx = db::begin(pool).await?;
                let certificate = store::issue_device_certificate(
                    &mut tx,
                    label,
                    &self.ca,
                    &checked,
                    validity,
                    &audit_actor,
                )
                .await?;
                tx.commit().await.map_err(PkiError::Database)?;
                certificate
            }
            None => self
                .ca
                .issue_device_certificate(&checked, validity)
                .map_err(certificate_error)?,
        };
        let credentials = DeviceCredentials {
            certificate_der: certificate.der().to_vec(),
            certificate_fingerprint: certificate.fingerprint(),
            public_key: *checked.public_key(),
        };
        let chain = vec![
            certificate.der().to_vec(),
            self.ca.certificate().der().to_vec(),
        ];
        Ok((chain, credentials))
    }

    /// Validates the chain a terminal presented in HELLO and checks that its certificate names
    /// the serial number and model the terminal reported. When the CA is stored, a chain the
    /// PKI rejects is recorded as `pki.chain.rejected`.
    pub async fn validate_device(
        &self,
        pool: &PgPool,
        actor: &str,
        hello: &Hello,
    ) -> Result<DeviceCredentials, ProvisionError> {
        let validated = validate_chain(&hello.certificate_chain, &self.roots, SystemTime::now())
            .and_then(|validated| {
                validated.check_serial_number(&hello.serial_number)?;
                Ok(validated)
            });
        let ValidatedChain {
            device_certificate,
            device_key,
            ..
        } = match validated {
            Ok(validated) => validated,
            Err(error) => {
                if self.ca_label.is_some() {
                    let audit_actor = AuditActor {
                        station_id: &self.station_id,
                        actor,
                    };
                    let mut tx = db::begin(pool).await?;
                    store::record_rejection(
                        &mut tx,
                        Rejected::Chain,
                        &identity_of(hello),
                        &error,
                        &audit_actor,
                    )
                    .await?;
                    tx.commit().await.map_err(PkiError::Database)?;
                }
                return Err(ProvisionError::Certificate {
                    serial_number: hello.serial_number.clone(),
                    source: error,
                });
            }
        };
        let models = device_certificate.subject_organizational_units();
        if models != [Some(hello.model.clone())] {
            return Err(ProvisionError::CertificateSubjectMismatch {
                field: "model",
                reported: hello.model.clone(),
                certified: format!("{models:?}"),
            });
        }
        Ok(DeviceCredentials {
            certificate_der: device_certificate.der().to_vec(),
            certificate_fingerprint: device_certificate.fingerprint(),
            public_key: device_key,
        })
    }
}

fn identity_of(hello: &Hello) -> DeviceIdentity {
    DeviceIdentity {
        serial_number: hello.serial_number.clone(),
        model: hello.model.clone(),
    }
}
