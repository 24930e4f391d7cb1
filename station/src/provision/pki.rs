//! What provisioning needs from the factory PKI: the factory CA that certifies terminals, the
//! station's own credentials for the key exchange, and the roots device chains must lead to.

use std::time::{Duration, SystemTime};

use super::ProvisionError;
use crate::pki::{
    DeviceIdentity, FactoryCa, P384PrivateKey, PkiError, TrustedRoots, ValidatedChain,
    ValidityPeriod, check_csr, validate_chain,
};
use crate::protocol::{DeviceCredentials, Hello, StationCredentials};

/// Validity of a device certificate the factory CA issues: 20 years, the service life this
/// station assumes for a payment terminal.
const DEVICE_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Validity of the station certificate and of a CA made by [`StationPki::create_in_memory`].
const STATION_CERTIFICATE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The factory CA, the station's credentials and the trusted roots of one line.
#[derive(Debug)]
pub struct StationPki {
    /// The factory CA that issues device certificates from CSRs.
    pub ca: FactoryCa,
    /// The station's certificate key and chain (station certificate, then the CA's).
    pub credentials: StationCredentials,
    /// Roots a device chain must lead to: the factory CA and makers' roots.
    pub roots: TrustedRoots,
}

impl StationPki {
    /// Builds the line's PKI from a factory CA: issues the station a certificate for a fresh
    /// key, and trusts the CA and `maker_roots`.
    pub fn new(
        ca: FactoryCa,
        station_id: &str,
        maker_roots: TrustedRoots,
    ) -> Result<Self, PkiError> {
        let key = P384PrivateKey::generate()?;
        let certificate = ca.issue_station_certificate(
            station_id,
            &key.public_key(),
            ValidityPeriod::from_now(STATION_CERTIFICATE_VALIDITY),
        )?;
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
        })
    }

    /// Creates a factory CA in memory and builds the PKI from it.
    ///
    /// NOTE: until the factory CA's key is kept in the vault, the demo and `station provision`
    /// make a new CA for each run, so a terminal certified in one run does not trust the station
    /// of the next.
    pub fn create_in_memory(station_id: &str) -> Result<Self, PkiError> {
        let ca = FactoryCa::create(
            &format!("CN=Factory CA {station_id},O=Key Injection Station"),
            ValidityPeriod::from_now(STATION_CERTIFICATE_VALIDITY),
        )?;
        Self::new(ca, station_id, TrustedRoots::new())
    }

    /// SHA-256 fingerprint of the station's certificate.
    pub fn station_fingerprint(&self) -> String {
        hex::encode_upper(<sha2::Sha256 as sha2::Digest>::digest(
            &self.credentials.certificate_chain[0],
        ))
    }

    /// Checks a terminal's CSR against its HELLO and issues its certificate. Returns the chain
    /// to send in CERTIFICATE (device certificate, then the CA's) and the device's credentials.
    pub fn certify(
        &self,
        hello: &Hello,
        csr: &[u8],
    ) -> Result<(Vec<Vec<u8>>, DeviceCredentials), PkiError> {
        let checked = check_csr(csr, &identity_of(hello))?;
        let certificate = self.ca.issue_device_certificate(
            &checked,
            ValidityPeriod::from_now(DEVICE_CERTIFICATE_VALIDITY),
        )?;
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
    /// the serial number and model the terminal reported.
    pub fn validate_device(&self, hello: &Hello) -> Result<DeviceCredentials, ProvisionError> {
        let ValidatedChain {
            device_certificate,
            device_key,
            ..
        } = validate_chain(&hello.certificate_chain, &self.roots, SystemTime::now()).map_err(
            |source| ProvisionError::Certificate {
                serial_number: hello.serial_number.clone(),
                source,
            },
        )?;
        let serials = device_certificate.subject_serial_numbers();
        let models = device_certificate.subject_organizational_units();
        for (field, values, reported) in [
            ("serial number", serials, &hello.serial_number),
            ("model", models, &hello.model),
        ] {
            if values != [Some(reported.clone())] {
                return Err(ProvisionError::CertificateSubjectMismatch {
                    field,
                    reported: reported.clone(),
                    certified: format!("{values:?}"),
                });
            }
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
