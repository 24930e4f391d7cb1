//! `station provision`: unseal the vault, then provision one terminal on a serial port, with the
//! key exchange or the pre-shared transport key that its model's device profile names.

use std::path::PathBuf;

use station::ceremony::{self, CeremonyScript, FileInputs};
use std::sync::Arc;

use station::link::SerialLink;
use station::pki::TrustedRoots;
use station::protocol::ReferenceDriver;
use station::provision::{self, DeviceProfiles, LineConfig, StationPki};
use station::vault::Vault;

use super::Context;
use super::ceremony::{parse_attestations, parse_participants};

/// The shipped unseal ceremony, used when no other script is named.
const UNSEAL_CEREMONY: &str = include_str!("../../../ceremony-scripts/unseal.toml");

#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    /// Serial device of the terminal, such as /dev/ttyACM0 or /dev/pts/3.
    #[arg(long)]
    pub port: String,
    /// Line speed in bits per second.
    #[arg(long, default_value_t = 115_200)]
    pub baud: u32,
    /// Vault label of the BDK to derive the terminal's initial key from.
    #[arg(long)]
    pub bdk: String,
    /// Vault label of the factory CA that certifies terminals; created if no CA has it yet.
    #[arg(long, default_value = "factory-ca")]
    pub factory_ca: String,
    /// Folder of device profiles, one TOML file per terminal model.
    #[arg(long, default_value = "device-profiles")]
    pub profiles: PathBuf,
    /// Unseal ceremony script [default: the shipped ceremony-scripts/unseal.toml].
    #[arg(long)]
    pub unseal_script: Option<PathBuf>,
    /// A participant of the unseal ceremony, as NAME=ROLE; repeat for each person.
    #[arg(long = "participant", value_name = "NAME=ROLE", required = true)]
    pub participants: Vec<String>,
    /// A custodian's master key component file; repeat for each component.
    #[arg(long = "component", value_name = "FILE", required = true)]
    pub components: Vec<PathBuf>,
    /// The participant who attests an attest step of the unseal ceremony, as STEP=NAME.
    #[arg(long = "attest", value_name = "STEP=NAME")]
    pub attestations: Vec<String>,
    /// Operator running the line, recorded in the audit trail.
    #[arg(long, default_value = "station")]
    pub operator: String,
}

pub async fn run(context: &Context, args: ProvisionArgs) -> Result<(), String> {
    let script = match &args.unseal_script {
        Some(path) => CeremonyScript::load(path),
        None => CeremonyScript::parse(UNSEAL_CEREMONY),
    }
    .map_err(|error| error.to_string())?;
    let participants = parse_participants(&args.participants)?;
    let attestations = parse_attestations(&args.attestations)?;
    // Open the port first, so a wrong path fails before anyone enters a component.
    let link = SerialLink::open(&args.port, args.baud).map_err(|error| error.to_string())?;
    let profiles = DeviceProfiles::load_dir(&args.profiles).map_err(|error| error.to_string())?;
    let mut inputs =
        FileInputs::read(&args.components, attestations).map_err(|error| error.to_string())?;

    let database = context.open_database().await?;
    let pool = database.pool.clone();
    let result = async {
        let mut vault =
            Vault::open(pool.clone(), &context.data_dir).map_err(|error| error.to_string())?;
        ceremony::run(
            &pool,
            &mut vault,
            &context.station_id,
            &script,
            &participants,
            &mut inputs,
        )
        .await
        .map_err(|error| error.to_string())?;
        let pki = StationPki::open_or_create(
            &pool,
            &vault,
            &context.station_id,
            &args.factory_ca,
            &args.operator,
            TrustedRoots::new(),
        )
        .await
        .map_err(|error| error.to_string())?;
        let line = LineConfig {
            station_id: context.station_id.clone(),
            actor: args.operator.clone(),
            bdk_label: args.bdk.clone(),
            profiles: Arc::new(profiles),
            pki: Some(Arc::new(pki)),
        };
        let driver = ReferenceDriver::over(Box::new(link));
        provision::provision_device(&pool, &vault, &line, Box::new(driver))
            .await
            .map_err(|error| error.to_string())
    }
    .await;
    database.close().await;
    let report = result?;
    println!(
        "provisioned {} {} serial {} on {}: initial key ID {}, KCV {} in {} ms",
        report.device.vendor,
        report.device.model,
        report.device.serial,
        report.port,
        report.initial_key_id.to_hex(),
        report.kcv,
        report.elapsed.as_millis()
    );
    Ok(())
}
