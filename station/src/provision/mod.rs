//! Provisioning: one terminal at a time through a [`TerminalDriver`], and many ports at once on
//! a line.
//!
//! One injection identifies the terminal (HELLO) and looks up its model's [`DeviceProfile`].
//! A terminal whose profile names `ecdh-p384` is authenticated first. The station validates its
//! certificate chain, or has the factory CA certify its on-board key pair from a CSR. Then it
//! runs the key exchange, so the key block is wrapped under the session KBPK. A terminal whose
//! profile names `pre-shared` gets its key block under the pre-shared transport key from the
//! vault. Then the DUKPT identity is allocated in the database, the vault derives and wraps the
//! initial key, the injection is recorded as sent, the key block is loaded (LOAD_KEY), and the
//! terminal's reported check value is compared with the station's (LOAD_RESULT, whose MAC the
//! session checks after a key exchange). Every transition is persisted with its audit event
//! before the next step, so a crash never leaves an identity that could be handed out twice: a
//! failed injection burns its identity.

mod error;
mod pki;
mod profile;

pub use error::ProvisionError;
pub use pki::StationPki;
pub use profile::{DeviceProfile, DeviceProfiles, KeyLoadMethod, ProfileError};

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use tracing::{Instrument, info, info_span, warn};

use crate::audit::{self, AuditEvent, Outcome};
use crate::crypto::dukpt::aes::InitialKeyId;
use crate::crypto::kcv::Kcv;
use crate::protocol::{DeviceCredentials, Hello, TerminalDriver};
use crate::store::{self, DeviceInfo};
use crate::vault::{KeyUsage, Vault, WrappedInitialKey};

/// The key slot of the DUKPT initial key in the shipped device profiles.
pub const INITIAL_KEY_SLOT: u8 = 1;

/// Settings of a provisioning line.
#[derive(Debug, Clone)]
pub struct LineConfig {
    /// This station's identifier in the audit trail.
    pub station_id: String,
    /// User name of the operator running the line, or "station" for an unattended line.
    pub actor: String,
    /// Vault label of the BDK that device keys are derived from.
    pub bdk_label: String,
    /// Profiles of the terminal models the line provisions.
    pub profiles: Arc<DeviceProfiles>,
    /// The factory PKI, needed by every model whose profile uses the key exchange.
    pub pki: Option<Arc<StationPki>>,
}

/// How a terminal's key block was protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportMethod {
    /// Under the session KBPK of an authenticated key exchange.
    KeyExchange {
        /// SHA-256 fingerprint of the terminal's certificate.
        device_certificate: String,
        /// SHA-384 transcript hash that names the session.
        transcript_hash: String,
    },
    /// Under the pre-shared transport key with this vault label.
    PreShared {
        /// Vault label of the transport key.
        transport_label: String,
    },
}

/// The result of provisioning one terminal.
#[derive(Debug, Clone)]
pub struct ProvisionReport {
    /// The terminal's identity from its HELLO.
    pub device: DeviceInfo,
    /// Device path or address the terminal was on.
    pub port: String,
    /// How the key block was protected.
    pub method: TransportMethod,
    /// The initial key ID loaded into the terminal.
    pub initial_key_id: InitialKeyId,
    /// Check value of the initial key, as derived by the station and confirmed by the terminal.
    pub kcv: Kcv,
    /// Time from opening the link to the confirmed load.
    pub elapsed: Duration,
}

/// Provisions the terminal behind `driver` with a fresh initial key from the line's BDK.
///
/// The driver is used on a blocking thread; database and vault calls run on the async runtime.
pub async fn provision_device(
    pool: &PgPool,
    vault: &Vault,
    line: &LineConfig,
    driver: Box<dyn TerminalDriver>,
) -> Result<ProvisionReport, ProvisionError> {
    let started = Instant::now();
    let port = driver.peer().to_owned();
    let span = info_span!("device", %port, serial = tracing::field::Empty);
    async move {
        if vault.is_sealed() {
            return Err(ProvisionError::Vault(crate::vault::VaultError::Sealed));
        }
        let bdk = vault.key_info(&line.bdk_label).await?;
        if bdk.usage != KeyUsage::Bdk {
            return Err(ProvisionError::NotABdk(line.bdk_label.clone()));
        }
        let bdk_id = bdk
            .bdk_id
            .ok_or_else(|| ProvisionError::NotABdk(line.bdk_label.clone()))?;

        let (driver, hello) = blocking(move || {
            let mut driver = driver;
            let hello = driver.identify()?;
            Ok((driver, hello))
        })
        .await?;
        let device = device_info(&hello);
        tracing::Span::current().record("serial", device.serial.as_str());
        info!(vendor = %device.vendor, model = %device.model, "terminal identified");
        let profile = line.profiles.find(&hello.vendor, &hello.model)?.clone();

        let (driver, method) = match &profile.method {
            KeyLoadMethod::EcdhP384 => authenticate(pool, line, driver, &hello).await?,
            KeyLoadMethod::PreShared { transport_label } => (
                driver,
                TransportMethod::PreShared {
                    transport_label: transport_label.clone(),
                },
            ),
        };

        let injection = store::allocate_identity(
            pool,
            &line.station_id,
            &line.actor,
            &line.bdk_label,
            bdk_id,
            &device,
            &port,
        )
        .await?;
        let outcome = load_initial_key(pool, vault, line, driver, &method, profile.slot, &injection).await;
        match outcome {
            Ok((initial_key_id, kcv)) => {
                info!(initial_key_id = %initial_key_id, kcv = %kcv, "initial key loaded and confirmed");
                Ok(ProvisionReport {
                    device,
                    port,
                    method,
                    initial_key_id,
                    kcv,
                    elapsed: started.elapsed(),
                })
            }
            Err(error) => {
                warn!(%error, "injection failed; burning its identity");
                store::mark_failed(pool, &line.station_id, &line.actor, injection.id, &error.to_string())
                    .await?;
                Err(error)
            }
        }
    }
    .instrument(span)
    .await
}

/// Authenticates a terminal whose profile requires the key exchange: validates or issues its
/// certificate, then runs the key exchange. Each outcome is an audit event.
async fn authenticate(
    pool: &PgPool,
    line: &LineConfig,
    driver: Box<dyn TerminalDriver>,
    hello: &Hello,
) -> Result<(Box<dyn TerminalDriver>, TransportMethod), ProvisionError> {
    if !hello.capabilities.key_exchange {
        return Err(ProvisionError::KeyExchangeUnsupported {
            vendor: hello.vendor.clone(),
            model: hello.model.clone(),
            version: hello.protocol_version,
        });
    }
    let pki = line.pki.clone().ok_or(ProvisionError::NoPki)?;
    let subject = format!("terminal:{}", hello.serial_number);

    let (driver, device) = if hello.certificate_chain.is_empty() {
        if !hello.capabilities.csr {
            return Err(ProvisionError::NoDeviceCertificate {
                serial_number: hello.serial_number.clone(),
            });
        }
        let (driver, device) = certify(pool, line, driver, hello, &pki).await?;
        (driver, device)
    } else {
        match pki.validate_device(pool, &line.actor, hello).await {
            Ok(device) => {
                record(
                    pool,
                    line,
                    "terminal.certificate_validated",
                    &subject,
                    Outcome::Success,
                    json!({
                        "certificate_fingerprint": device.certificate_fingerprint,
                    }),
                )
                .await?;
                (driver, device)
            }
            Err(error) => {
                record(
                    pool,
                    line,
                    "terminal.certificate_validated",
                    &subject,
                    Outcome::Failure,
                    json!({
                        "reason": error.to_string(),
                    }),
                )
                .await?;
                return Err(error);
            }
        }
    };

    let station_fingerprint = pki.station_fingerprint();
    let device_for_exchange = device.clone();
    let pki_for_exchange = Arc::clone(&pki);
    let (driver, result) = blocking(move || {
        let mut driver = driver;
        let result = driver.key_exchange(&pki_for_exchange.credentials, &device_for_exchange);
        Ok((driver, result))
    })
    .await?;
    match result {
        Ok(session) => {
            record(
                pool,
                line,
                "terminal.key_exchange",
                &subject,
                Outcome::Success,
                json!({
                    "certificate_fingerprint": device.certificate_fingerprint,
                    "station_certificate_fingerprint": station_fingerprint,
                    "transcript_hash": session.transcript_hash,
                    "kdf": "NIST SP 800-56C rev2 one-step, SHA-384",
                }),
            )
            .await?;
            Ok((
                driver,
                TransportMethod::KeyExchange {
                    device_certificate: device.certificate_fingerprint,
                    transcript_hash: session.transcript_hash,
                },
            ))
        }
        Err(error) => {
            record(
                pool,
                line,
                "terminal.key_exchange",
                &subject,
                Outcome::Failure,
                json!({
                    "certificate_fingerprint": device.certificate_fingerprint,
                    "station_certificate_fingerprint": station_fingerprint,
                    "reason": error.to_string(),
                }),
            )
            .await?;
            Err(error.into())
        }
    }
}

/// Has the factory CA certify a terminal's on-board key pair from its CSR, and installs the
/// certificate on the terminal.
async fn certify(
    pool: &PgPool,
    line: &LineConfig,
    driver: Box<dyn TerminalDriver>,
    hello: &Hello,
    pki: &Arc<StationPki>,
) -> Result<(Box<dyn TerminalDriver>, DeviceCredentials), ProvisionError> {
    let subject = format!("terminal:{}", hello.serial_number);
    let (driver, csr) = blocking(move || {
        let mut driver = driver;
        let csr = driver.request_csr()?;
        Ok((driver, csr))
    })
    .await?;
    let (chain, device) = match pki.certify(pool, &line.actor, hello, &csr).await {
        Ok(issued) => issued,
        Err(error) => {
            record(
                pool,
                line,
                "terminal.certificate_issued",
                &subject,
                Outcome::Failure,
                json!({ "reason": error.to_string() }),
            )
            .await?;
            return Err(error);
        }
    };
    record(
        pool,
        line,
        "terminal.certificate_issued",
        &subject,
        Outcome::Success,
        json!({
            "certificate_fingerprint": device.certificate_fingerprint,
            "issuer_fingerprint": pki.ca.certificate().fingerprint(),
            "serial_number": hello.serial_number,
            "model": hello.model,
        }),
    )
    .await?;
    let driver = blocking(move || {
        let mut driver = driver;
        driver.install_certificate(&chain)?;
        Ok(driver)
    })
    .await?;
    info!(fingerprint = %device.certificate_fingerprint, "terminal certified and stored its certificate");
    Ok((driver, device))
}

/// Runs the steps after allocation: wrap, record as sent, load, and check the reported KCV.
async fn load_initial_key(
    pool: &PgPool,
    vault: &Vault,
    line: &LineConfig,
    driver: Box<dyn TerminalDriver>,
    method: &TransportMethod,
    slot: u8,
    injection: &store::Injection,
) -> Result<(InitialKeyId, Kcv), ProvisionError> {
    let wrapped: WrappedInitialKey = match method {
        TransportMethod::PreShared { transport_label } => {
            vault
                .wrap_initial_key(&line.bdk_label, injection.derivation_id, transport_label)
                .await?
        }
        TransportMethod::KeyExchange { .. } => {
            let kbpk = driver.session_kbpk().ok_or_else(|| {
                ProvisionError::Internal("the key exchange left no session KBPK".to_owned())
            })?;
            vault
                .wrap_initial_key_for_session(&line.bdk_label, injection.derivation_id, kbpk)
                .await?
        }
    };
    store::mark_sent(pool, &line.station_id, &line.actor, injection.id).await?;

    let key_block = wrapped.key_block.clone();
    let initial_key_id = wrapped.initial_key_id;
    let result = blocking(move || {
        let mut driver = driver;
        Ok(driver.load_key(&key_block, slot, &initial_key_id)?)
    })
    .await?;

    let reported = result.kcv;
    if reported.method() != wrapped.kcv.method() {
        return Err(ProvisionError::KcvMethod {
            expected: wrapped.kcv.method().name(),
            reported: reported.method().name(),
        });
    }
    if !wrapped
        .kcv
        .matches(&reported)
        .map_err(ProvisionError::Kcv)?
    {
        return Err(ProvisionError::KcvMismatch {
            expected: wrapped.kcv.to_string(),
            reported: reported.to_string(),
        });
    }
    store::mark_confirmed(
        pool,
        &line.station_id,
        &line.actor,
        injection.id,
        &wrapped.kcv.to_hex(),
        wrapped.kcv.method().name(),
    )
    .await?;
    Ok((wrapped.initial_key_id, wrapped.kcv))
}

/// Appends one audit event in its own transaction; an error stops the step (fail closed).
async fn record(
    pool: &PgPool,
    line: &LineConfig,
    action: &str,
    subject: &str,
    outcome: Outcome,
    details: serde_json::Value,
) -> Result<(), ProvisionError> {
    audit::record(
        pool,
        &line.station_id,
        &AuditEvent {
            actor: line.actor.clone(),
            action: action.to_owned(),
            subject: subject.to_owned(),
            outcome,
            details,
        },
    )
    .await?;
    Ok(())
}

fn device_info(hello: &Hello) -> DeviceInfo {
    DeviceInfo {
        vendor: hello.vendor.clone(),
        model: hello.model.clone(),
        serial: hello.serial_number.clone(),
        firmware: hello.firmware_version.clone(),
    }
}

/// Runs blocking link I/O on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ProvisionError> + Send + 'static,
) -> Result<T, ProvisionError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ProvisionError::Internal(format!("link task failed: {error}")))?
}

/// Provisions every terminal concurrently and returns one result per driver, in the same order.
pub async fn provision_all(
    pool: &PgPool,
    vault: Arc<Vault>,
    line: &LineConfig,
    drivers: Vec<Box<dyn TerminalDriver>>,
) -> Vec<Result<ProvisionReport, ProvisionError>> {
    let count = drivers.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, driver) in drivers.into_iter().enumerate() {
        let pool = pool.clone();
        let vault = Arc::clone(&vault);
        let line = line.clone();
        tasks.spawn(async move { (index, provision_device(&pool, &vault, &line, driver).await) });
    }
    let mut results: Vec<Option<Result<ProvisionReport, ProvisionError>>> =
        std::iter::repeat_with(|| None).take(count).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, result)) => results[index] = Some(result),
            Err(error) => warn!(%error, "provisioning task panicked"),
        }
    }
    results
        .into_iter()
        .map(|result| {
            result.unwrap_or_else(|| {
                Err(ProvisionError::Internal(
                    "provisioning task panicked".to_owned(),
                ))
            })
        })
        .collect()
}
