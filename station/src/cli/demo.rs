//! `station demo`: the whole line in one command.
//!
//! The demo plays every person and device: three people run the shipped key ceremony from
//! component files, and simulated terminals on pseudo-terminal pairs stand in for devices on
//! USB serial ports. Three of every four terminals are the ECC model of the shipped device
//! profiles, which the factory CA certifies from a CSR and which load under an ECDH session
//! key. The fourth is the model without ECC support, which loads under the pre-shared transport
//! key. Everything else is the real station: the private PostgreSQL cluster, the vault, the
//! factory PKI, DUKPT, TR-31 and the audit trail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use station::ceremony::{self, CeremonyScript, ComponentFile, FileInputs, MASTER_KEY_LABEL};
use station::crypto::kcv::{Kcv, KcvMethod};
use station::crypto::{KeyAlgorithm, SecretKey, components};
use station::link::SerialLink;
use station::pki::TrustedRoots;
use station::protocol::{ReferenceDriver, TerminalDriver};
use station::provision::{self, DeviceProfiles, LineConfig, StationPki, TransportMethod};
use station::terminal::{
    DeviceState, SimulatorConfig, SimulatorHandle, TerminalIdentity, spawn_pty_simulator,
};
use station::vault::Vault;

use super::Context;
use super::ceremony::parse_participants;

/// The shipped ceremony that unseals the vault and loads the line's keys.
const LINE_CEREMONY: &str = include_str!("../../../ceremony-scripts/load-line-keys.toml");
const BDK_LABEL: &str = "line-bdk";
const TRANSPORT_LABEL: &str = "line-transport";
/// The shipped device profiles: the ECC model and the pre-shared key model.
const PROFILES: [(&str, &str); 2] = [
    (
        "device-profiles/otw-pp200.toml",
        include_str!("../../../device-profiles/otw-pp200.toml"),
    ),
    (
        "device-profiles/otw-pp100.toml",
        include_str!("../../../device-profiles/otw-pp100.toml"),
    ),
];
const VENDOR: &str = "Open Terminal Works";
/// Vault label of the factory CA; the first run creates it, later runs load it.
const FACTORY_CA_LABEL: &str = "factory-ca";
const ECC_MODEL: &str = "OTW-PP200";
const PRE_SHARED_MODEL: &str = "OTW-PP100";
const CUSTODIANS: [&str; 2] = ["alice", "bob"];
const WITNESS: &str = "carol";

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many simulated terminals to provision at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub terminals: u16,
}

pub async fn run(context: &Context, args: DemoArgs) -> Result<(), String> {
    std::fs::create_dir_all(&context.data_dir).map_err(|error| {
        format!(
            "cannot create data folder {}: {error}",
            context.data_dir.display()
        )
    })?;
    let custodian_dir = context.data_dir.join("demo-custodians");
    let script = CeremonyScript::parse(LINE_CEREMONY).map_err(|error| error.to_string())?;
    ensure_custodian_files(&custodian_dir, &script)?;

    let database = context.open_database().await?;
    let result = run_with_database(context, &database.pool, &custodian_dir, &script, &args).await;
    database.close().await;
    result
}

async fn run_with_database(
    context: &Context,
    pool: &sqlx::PgPool,
    custodian_dir: &Path,
    script: &CeremonyScript,
    args: &DemoArgs,
) -> Result<(), String> {
    println!(
        "== Key ceremony {:?}: custodians {} and {}, witness {WITNESS}",
        script.name, CUSTODIANS[0], CUSTODIANS[1]
    );
    let mut vault = Vault::new(pool.clone());
    let participants = parse_participants(&[
        format!("{}=custodian", CUSTODIANS[0]),
        format!("{}=custodian", CUSTODIANS[1]),
        format!("{WITNESS}=witness"),
    ])?;
    let attestations: BTreeMap<usize, String> = script
        .steps
        .iter()
        .enumerate()
        .filter(|(_, step)| matches!(step, ceremony::Step::Attest { .. }))
        .map(|(index, _)| (index + 1, WITNESS.to_owned()))
        .collect();
    let mut inputs = FileInputs::read(&component_paths(custodian_dir)?, attestations)
        .map_err(|error| error.to_string())?;
    let report = ceremony::run(
        pool,
        &mut vault,
        &context.station_id,
        script,
        &participants,
        &mut inputs,
    )
    .await
    .map_err(|error| error.to_string())?;
    for key in &report.keys {
        println!(
            "   {:<20} {:<16} {}",
            key.label,
            key.kcv.to_string(),
            key.outcome
        );
    }

    let mut profiles = DeviceProfiles::default();
    for (name, text) in PROFILES {
        profiles
            .add(name, text)
            .map_err(|error| error.to_string())?;
    }
    let pki = StationPki::open_or_create(
        pool,
        &vault,
        &context.station_id,
        FACTORY_CA_LABEL,
        "station",
        TrustedRoots::new(),
    )
    .await
    .map_err(|error| error.to_string())?;
    println!(
        "== Factory CA {FACTORY_CA_LABEL} {}, station certificate {}",
        &pki.ca.certificate().fingerprint()[..16],
        &pki.station_fingerprint()[..16]
    );

    println!(
        "== Provisioning {} simulated terminals over pseudo-terminal serial links",
        args.terminals
    );
    let transport_key = combine_demo_key(custodian_dir, TRANSPORT_LABEL)?;
    let run_tag = run_tag()?;
    let state_dir = context.data_dir.join("demo-terminals");
    std::fs::create_dir_all(&state_dir)
        .map_err(|error| format!("cannot create {}: {error}", state_dir.display()))?;
    let mut simulators = Vec::new();
    let mut drivers: Vec<Box<dyn TerminalDriver>> = Vec::new();
    for number in 1..=args.terminals {
        let serial = format!("SIM{run_tag}{number:02}");
        // Every fourth terminal is the model without ECC support.
        let pre_shared = number % 4 == 0;
        let identity = TerminalIdentity {
            vendor: VENDOR.to_owned(),
            model: if pre_shared {
                PRE_SHARED_MODEL
            } else {
                ECC_MODEL
            }
            .to_owned(),
            serial_number: serial.clone(),
            firmware_version: "1.4.2".to_owned(),
        };
        let state_path = state_dir.join(format!("{serial}.json"));
        let config = if pre_shared {
            SimulatorConfig::new(identity, transport_key.duplicate(), state_path.clone())
        } else {
            SimulatorConfig::with_ecc(identity, state_path.clone())
        };
        let simulator = spawn_pty_simulator(config).map_err(|error| error.to_string())?;
        let link = SerialLink::open(simulator.device_path(), 115_200)
            .map_err(|error| error.to_string())?;
        drivers.push(Box::new(ReferenceDriver::over(Box::new(link))));
        simulators.push((simulator, state_path));
    }
    drop(transport_key);

    let vault = Arc::new(vault);
    let line = LineConfig {
        station_id: context.station_id.clone(),
        actor: "station".to_owned(),
        bdk_label: BDK_LABEL.to_owned(),
        profiles: Arc::new(profiles),
        pki: Some(Arc::new(pki)),
    };
    let results = provision::provision_all(pool, Arc::clone(&vault), &line, drivers).await;
    let all_ok = print_results(&results, &simulators);
    for (simulator, _) in simulators {
        if let Err(error) = simulator.stop() {
            eprintln!("warning: a simulated terminal did not stop cleanly: {error}");
        }
    }

    println!("== Audit trail");
    let audit = station::audit::verify(pool)
        .await
        .map_err(|error| error.to_string())?;
    println!("   {audit}");
    if !audit.is_intact() {
        return Err("the audit trail does not verify".to_owned());
    }
    if !all_ok {
        return Err("not every terminal was provisioned; see the table above".to_owned());
    }
    println!(
        "== Demo complete: every terminal holds the key the station derived, and the audit trail verifies"
    );
    Ok(())
}

/// Prints one row per terminal and checks, from each simulator's own storage, that the key the
/// terminal stored has the check value the station derived. Returns true if every row passed.
fn print_results(
    results: &[Result<provision::ProvisionReport, provision::ProvisionError>],
    simulators: &[(SimulatorHandle, PathBuf)],
) -> bool {
    println!(
        "   {:<16} {:<10} {:<26} {:<18} {:<12} {:>8}  TERMINAL CHECK",
        "SERIAL", "MODEL", "TRANSPORT KEY", "INITIAL KEY ID", "KCV (CMAC)", "TIME"
    );
    let mut all_ok = true;
    for (result, (simulator, state_path)) in results.iter().zip(simulators) {
        match result {
            Ok(report) => {
                let check = check_terminal_key(state_path, report);
                all_ok &= check == "key matches";
                let method = match &report.method {
                    TransportMethod::KeyExchange { .. } => "ECDH P-384 session".to_owned(),
                    TransportMethod::PreShared { transport_label } => {
                        format!("pre-shared {transport_label}")
                    }
                };
                println!(
                    "   {:<16} {:<10} {:<26} {:<18} {:<12} {:>6}ms  {check}",
                    report.device.serial,
                    report.device.model,
                    method,
                    report.initial_key_id.to_hex(),
                    report.kcv.to_hex(),
                    report.elapsed.as_millis()
                );
            }
            Err(error) => {
                all_ok = false;
                println!("   {:<16} FAILED: {error}", simulator.device_path());
            }
        }
    }
    all_ok
}

/// Reads the key a simulated terminal stored and compares its check value with the station's.
fn check_terminal_key(state_path: &Path, report: &provision::ProvisionReport) -> String {
    let state = match DeviceState::load(state_path) {
        Ok(state) => state,
        Err(error) => return format!("cannot read terminal state: {error}"),
    };
    let Some(stored) = state.key_in_slot(provision::INITIAL_KEY_SLOT) else {
        return "MISSING: terminal holds no key".to_owned();
    };
    let held = Kcv::compute(&stored.key, report.kcv.method());
    if stored.initial_key_id != report.initial_key_id {
        format!(
            "MISMATCH: terminal holds initial key ID {}",
            stored.initial_key_id.to_hex()
        )
    } else if report.kcv.matches(&held).unwrap_or(false) {
        "key matches".to_owned()
    } else {
        format!("MISMATCH: terminal holds {held}")
    }
}

/// Writes the custodians' component files on the first run; later runs reuse them, so the
/// vault unseals with the same master key. A real station never has these files: each
/// custodian keeps their component on paper in a tamper-evident envelope.
fn ensure_custodian_files(dir: &Path, script: &CeremonyScript) -> Result<(), String> {
    if dir.exists() {
        return Ok(());
    }
    let staging = dir.with_extension("partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(|error| format!("cannot remove {}: {error}", staging.display()))?;
    }
    create_private_dir(&staging)?;
    for (label, algorithm) in demo_keys(script) {
        let key = SecretKey::generate(algorithm).map_err(|error| error.to_string())?;
        let key_kcv = Kcv::compute(&key, KcvMethod::Cmac);
        let parts = components::split(&key, CUSTODIANS.len()).map_err(|error| error.to_string())?;
        for (custodian, part) in CUSTODIANS.iter().zip(&parts) {
            ComponentFile::write(
                &component_path(&staging, custodian, &label),
                &label,
                custodian,
                part,
                &key_kcv,
            )
            .map_err(|error| error.to_string())?;
        }
    }
    std::fs::rename(&staging, dir).map_err(|error| {
        format!(
            "cannot move {} to {}: {error}",
            staging.display(),
            dir.display()
        )
    })
}

/// Lists the keys the ceremony script forms: the master key and each loaded key.
fn demo_keys(script: &CeremonyScript) -> Vec<(String, KeyAlgorithm)> {
    script
        .steps
        .iter()
        .filter_map(|step| match step {
            ceremony::Step::Unseal { .. } => {
                Some((MASTER_KEY_LABEL.to_owned(), KeyAlgorithm::Aes256))
            }
            ceremony::Step::LoadKey {
                label, algorithm, ..
            } => Some((label.clone(), *algorithm)),
            _ => None,
        })
        .collect()
}

fn component_path(dir: &Path, custodian: &str, label: &str) -> PathBuf {
    dir.join(format!("{custodian}-{label}.toml"))
}

fn component_paths(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|error| format!("cannot read {}: {error}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Combines the custodians' components of one demo key. Only the demo does this outside a
/// ceremony, to give the simulated terminals the transport key their maker would have loaded.
fn combine_demo_key(dir: &Path, label: &str) -> Result<SecretKey, String> {
    let parts = CUSTODIANS
        .iter()
        .map(|custodian| {
            ComponentFile::read(&component_path(dir, custodian, label)).map(|file| file.component)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| error.to_string())?;
    components::combine(&parts).map_err(|error| error.to_string())
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))
}

/// Six hex digits that make this run's terminal serial numbers unique.
fn run_tag() -> Result<String, String> {
    let mut bytes = [0u8; 3];
    getrandom::fill(&mut bytes)
        .map_err(|error| format!("random number generator failed: {error}"))?;
    Ok(hex::encode_upper(bytes))
}
