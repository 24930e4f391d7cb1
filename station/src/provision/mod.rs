//! Provisioning: one terminal at a time on a link, and many ports at once on a line.
//!
//! One injection identifies the terminal (HELLO) and allocates its DUKPT identity in the
//! database. The vault then derives and wraps its initial key, the injection is recorded as
//! sent, the key block is loaded (LOAD_KEY), and the terminal's reported check value is compared
//! with the station's (LOAD_RESULT). Every
//! transition is persisted with its audit event before the next step, so a crash never leaves an
//! identity that could be handed out twice: a failed injection burns its identity.

mod error;

pub use error::ProvisionError;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tracing::{Instrument, info, info_span, warn};

use crate::crypto::dukpt::aes::InitialKeyId;
use crate::crypto::kcv::Kcv;
use crate::link::Link;
use crate::protocol::{Hello, SessionConfig, StationSession};
use crate::store::{self, DeviceInfo};
use crate::vault::{KeyUsage, Vault};

/// The key slot that receives the DUKPT initial key.
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
    /// Vault label of the transport key the terminals share with the station.
    pub transport_label: String,
}

/// The result of provisioning one terminal.
#[derive(Debug, Clone)]
pub struct ProvisionReport {
    /// The terminal's identity from its HELLO.
    pub device: DeviceInfo,
    /// Device path or address the terminal was on.
    pub port: String,
    /// The initial key ID loaded into the terminal.
    pub initial_key_id: InitialKeyId,
    /// Check value of the initial key, as derived by the station and confirmed by the terminal.
    pub kcv: Kcv,
    /// Time from opening the link to the confirmed load.
    pub elapsed: Duration,
}

/// Provisions the terminal on `link` with a fresh initial key from the line's BDK.
///
/// The link is used on a blocking thread; database and vault calls run on the async runtime.
pub async fn provision_device(
    pool: &PgPool,
    vault: &Vault,
    line: &LineConfig,
    link: Box<dyn Link>,
) -> Result<ProvisionReport, ProvisionError> {
    let started = Instant::now();
    let port = link.peer().to_owned();
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

        let (link, hello) = blocking(move || {
            let mut link = link;
            let hello = StationSession::new(link.as_mut(), SessionConfig::default()).hello()?;
            Ok((link, hello))
        })
        .await?;
        let device = device_info(&hello);
        tracing::Span::current().record("serial", device.serial.as_str());
        info!(vendor = %device.vendor, model = %device.model, "terminal identified");

        let injection =
            store::allocate_identity(pool, &line.station_id, &line.actor, &line.bdk_label, bdk_id, &device, &port)
                .await?;
        let outcome = load_initial_key(pool, vault, line, link, &injection).await;
        match outcome {
            Ok((initial_key_id, kcv)) => {
                info!(initial_key_id = %initial_key_id, kcv = %kcv, "initial key loaded and confirmed");
                Ok(ProvisionReport {
                    device,
                    port,
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

/// Runs the steps after allocation: wrap, record as sent, load, and check the reported KCV.
async fn load_initial_key(
    pool: &PgPool,
    vault: &Vault,
    line: &LineConfig,
    link: Box<dyn Link>,
    injection: &store::Injection,
) -> Result<(InitialKeyId, Kcv), ProvisionError> {
    let wrapped = vault
        .wrap_initial_key(
            &line.bdk_label,
            injection.derivation_id,
            &line.transport_label,
        )
        .await?;
    store::mark_sent(pool, &line.station_id, &line.actor, injection.id).await?;

    let key_block = wrapped.key_block.clone();
    let initial_key_id = wrapped.initial_key_id;
    let result = blocking(move || {
        let mut link = link;
        let mut session = StationSession::new(link.as_mut(), SessionConfig::default());
        Ok(session.load_key(&key_block, INITIAL_KEY_SLOT, &initial_key_id)?)
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

/// Provisions every link concurrently and returns one result per link, in the same order.
pub async fn provision_all(
    pool: &PgPool,
    vault: Arc<Vault>,
    line: &LineConfig,
    links: Vec<Box<dyn Link>>,
) -> Vec<Result<ProvisionReport, ProvisionError>> {
    let count = links.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, link) in links.into_iter().enumerate() {
        let pool = pool.clone();
        let vault = Arc::clone(&vault);
        let line = line.clone();
        tasks.spawn(async move { (index, provision_device(&pool, &vault, &line, link).await) });
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
