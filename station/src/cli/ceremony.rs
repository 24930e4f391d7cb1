//! `station ceremony`: check a script, or run it from component files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Subcommand;
use station::ceremony::{self, CeremonyScript, FileInputs, Participant, Role};
use station::vault::Vault;

use super::Context;

#[derive(Debug, Subcommand)]
pub enum CeremonyCommand {
    /// Validate a ceremony script and print it as a numbered procedure.
    Check {
        /// The ceremony script (TOML).
        script: PathBuf,
    },
    /// Run a ceremony non-interactively from the custodians' component files.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The ceremony script (TOML).
    pub script: PathBuf,
    /// A participant and their role, as NAME=ROLE (custodian or witness); repeat for each person.
    #[arg(long = "participant", value_name = "NAME=ROLE", required = true)]
    pub participants: Vec<String>,
    /// A custodian's component file; repeat for each component.
    #[arg(long = "component", value_name = "FILE")]
    pub components: Vec<PathBuf>,
    /// The participant who attests an attest step, as STEP=NAME (steps count from 1).
    #[arg(long = "attest", value_name = "STEP=NAME")]
    pub attestations: Vec<String>,
}

pub async fn run(context: &Context, command: CeremonyCommand) -> Result<(), String> {
    match command {
        CeremonyCommand::Check { script } => {
            let script = CeremonyScript::load(&script).map_err(|error| error.to_string())?;
            print!("{}", script.procedure());
            Ok(())
        }
        CeremonyCommand::Run(args) => run_script(context, args).await,
    }
}

async fn run_script(context: &Context, args: RunArgs) -> Result<(), String> {
    let script = CeremonyScript::load(&args.script).map_err(|error| error.to_string())?;
    let participants = parse_participants(&args.participants)?;
    let attestations = parse_attestations(&args.attestations)?;
    let mut inputs =
        FileInputs::read(&args.components, attestations).map_err(|error| error.to_string())?;

    let database = context.open_database().await?;
    let mut vault = Vault::new(database.pool.clone());
    let result = ceremony::run(
        &database.pool,
        &mut vault,
        &context.station_id,
        &script,
        &participants,
        &mut inputs,
    )
    .await;
    vault.seal();
    database.close().await;
    let report = result.map_err(|error| error.to_string())?;
    println!("ceremony {} completed", report.id);
    for key in report.keys {
        println!(
            "  {:<24} {:<24} {}",
            key.label,
            key.kcv.to_string(),
            key.outcome
        );
    }
    Ok(())
}

/// Parses `NAME=ROLE` arguments.
pub fn parse_participants(arguments: &[String]) -> Result<Vec<Participant>, String> {
    arguments
        .iter()
        .map(|argument| {
            let (name, role) = argument.split_once('=').ok_or_else(|| {
                format!("invalid --participant {argument:?}; write NAME=ROLE, for example alice=custodian")
            })?;
            let role = Role::from_name(role).ok_or_else(|| {
                format!("invalid role {role:?} in --participant {argument:?}; use custodian or witness")
            })?;
            Ok(Participant {
                name: name.to_owned(),
                role,
            })
        })
        .collect()
}

/// Parses `STEP=NAME` arguments.
pub fn parse_attestations(arguments: &[String]) -> Result<BTreeMap<usize, String>, String> {
    let mut attestations = BTreeMap::new();
    for argument in arguments {
        let (step, name) = argument.split_once('=').ok_or_else(|| {
            format!("invalid --attest {argument:?}; write STEP=NAME, for example 1=carol")
        })?;
        let step: usize = step
            .parse()
            .map_err(|_| format!("invalid step number {step:?} in --attest {argument:?}"))?;
        if attestations.insert(step, name.to_owned()).is_some() {
            return Err(format!(
                "step {step} is attested twice; give one --attest per step"
            ));
        }
    }
    Ok(attestations)
}
