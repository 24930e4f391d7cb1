//! `station ceremony`: check a script, run it at the terminal or from component files, resume
//! or abort an interrupted one, list ceremonies, and print a ceremony's record.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Subcommand;
use station::ceremony::{
    self, CeremonyError, CeremonyReport, CeremonyScript, FileInputs, Participant, Role,
};
use station::users;
use station::vault::Vault;
use uuid::Uuid;

use super::Context;
use super::ceremony_inputs::TerminalInputs;
use super::prompt::Terminal;

#[derive(Debug, Subcommand)]
pub enum CeremonyCommand {
    /// Validate a ceremony script and print it as a numbered procedure.
    Check {
        /// The ceremony script (TOML).
        script: PathBuf,
    },
    /// Run a ceremony: at the terminal, with each participant logging in, or non-interactively
    /// from component files when --component is given.
    Run(RunArgs),
    /// Resume a ceremony that a restart interrupted; its participants log in again.
    Resume {
        /// The ceremony's ID, as printed when it started or by `station ceremony list`.
        #[arg(value_parser = parse_ceremony_id)]
        id: Uuid,
    },
    /// Abort a ceremony that no station process is running, such as one a restart
    /// interrupted. A participant of the ceremony logs in to abort it.
    Abort {
        /// The ceremony's ID, as printed by `station ceremony list`.
        #[arg(value_parser = parse_ceremony_id)]
        id: Uuid,
        /// The participant who aborts it.
        #[arg(long = "by", value_name = "NAME")]
        by: String,
    },
    /// List ceremonies, newest first.
    List,
    /// Print a ceremony's record as a plain-text document with signature lines.
    Record {
        /// The ceremony's ID, as printed by `station ceremony list`.
        #[arg(value_parser = parse_ceremony_id)]
        id: Uuid,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The ceremony script (TOML).
    pub script: PathBuf,
    /// A participant and their role, as NAME=ROLE (custodian or witness); repeat for each
    /// person. Only for runs from component files: at the terminal, participants log in.
    #[arg(long = "participant", value_name = "NAME=ROLE")]
    pub participants: Vec<String>,
    /// A custodian's component file; repeat for each component. Makes the run non-interactive.
    #[arg(long = "component", value_name = "FILE")]
    pub components: Vec<PathBuf>,
    /// The participant who attests an attest step, as STEP=NAME (steps count from 1). Only for
    /// runs from component files.
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
        CeremonyCommand::Run(args) if args.components.is_empty() => {
            run_interactive(context, args).await
        }
        CeremonyCommand::Run(args) => run_from_files(context, args).await,
        CeremonyCommand::Resume { id } => resume_interactive(context, id).await,
        CeremonyCommand::Abort { id, by } => abort(context, id, &by).await,
        CeremonyCommand::List => list(context).await,
        CeremonyCommand::Record { id } => print_record(context, id).await,
    }
}

async fn run_from_files(context: &Context, args: RunArgs) -> Result<(), String> {
    let script = CeremonyScript::load(&args.script).map_err(|error| error.to_string())?;
    let participants = parse_participants(&args.participants)?;
    let attestations = parse_attestations(&args.attestations)?;
    let mut inputs =
        FileInputs::read(&args.components, attestations).map_err(|error| error.to_string())?;

    let database = context.open_database().await?;
    let mut vault = match Vault::open(database.pool.clone(), &context.data_dir) {
        Ok(vault) => vault,
        Err(error) => {
            database.close().await;
            return Err(error.to_string());
        }
    };
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
    print_report(result.map_err(|error| error.to_string())?)?;
    for (label, key_block) in &inputs.exported {
        println!("key block of {label}: {key_block}");
    }
    Ok(())
}

async fn run_interactive(context: &Context, args: RunArgs) -> Result<(), String> {
    if !args.participants.is_empty() || !args.attestations.is_empty() {
        return Err(
            "--participant and --attest are only for runs from component files; at the terminal, participants log in"
                .to_owned(),
        );
    }
    let script = CeremonyScript::load(&args.script).map_err(|error| error.to_string())?;
    print!("{}", script.procedure());
    let terminal = Terminal::open();
    let database = context.open_database().await?;
    let pool = database.pool.clone();
    let result = async {
        let (participants, hashes) = log_in_all(&pool, &terminal, &script).await?;
        let mut inputs = TerminalInputs::new(&terminal, participants.clone(), hashes);
        let mut vault =
            Vault::open(pool.clone(), &context.data_dir).map_err(|error| error.to_string())?;
        let outcome = ceremony::run(
            &pool,
            &mut vault,
            &context.station_id,
            &script,
            &participants,
            &mut inputs,
        )
        .await;
        vault.seal();
        outcome.map_err(|error| error.to_string())
    }
    .await;
    database.close().await;
    print_report(result?)
}

async fn resume_interactive(context: &Context, id: Uuid) -> Result<(), String> {
    let terminal = Terminal::open();
    let database = context.open_database().await?;
    let pool = database.pool.clone();
    let result = async {
        let stored = ceremony::list(&pool)
            .await
            .map_err(|error| error.to_string())?
            .into_iter()
            .find(|stored| stored.id == id)
            .ok_or_else(|| CeremonyError::NotFound(id).to_string())?;
        println!(
            "Resuming ceremony {id} ({}); steps on record: {}",
            stored.script_name,
            step_list(&stored.completed_steps)
        );
        let mut hashes = BTreeMap::new();
        for participant in &stored.participants {
            let hash = log_in(&pool, &terminal, participant).await?;
            hashes.insert(participant.name.clone(), hash);
        }
        let mut inputs = TerminalInputs::new(&terminal, stored.participants.clone(), hashes);
        let mut vault =
            Vault::open(pool.clone(), &context.data_dir).map_err(|error| error.to_string())?;
        let outcome = ceremony::resume(
            &pool,
            &mut vault,
            &context.station_id,
            id,
            &stored.participants,
            &mut inputs,
        )
        .await;
        vault.seal();
        outcome.map_err(|error| error.to_string())
    }
    .await;
    database.close().await;
    print_report(result?)
}

async fn abort(context: &Context, id: Uuid, by: &str) -> Result<(), String> {
    let terminal = Terminal::open();
    let database = context.open_database().await?;
    let pool = database.pool.clone();
    let result = async {
        let password = terminal
            .secret(
                &format!("Password for {by}: "),
                ceremony::DEFAULT_IDLE_TIMEOUT,
            )
            .map_err(|error| error.to_string())?;
        users::authenticate(&pool, by, password)
            .await
            .map_err(|error| error.to_string())?;
        ceremony::abort(&pool, &context.station_id, id, by)
            .await
            .map_err(|error| error.to_string())
    }
    .await;
    database.close().await;
    result?;
    println!("ceremony {id} aborted by {by}");
    Ok(())
}

async fn list(context: &Context) -> Result<(), String> {
    let database = context.open_database().await?;
    let result = ceremony::list(&database.pool).await;
    database.close().await;
    let ceremonies = result.map_err(|error| error.to_string())?;
    println!(
        "{:<36}  {:<24} {:<10} {:<20} STEPS DONE",
        "ID", "SCRIPT", "STATE", "STARTED (UTC)"
    );
    for stored in ceremonies {
        let steps_done = step_list(&stored.completed_steps);
        println!(
            "{:<36}  {:<24} {:<10} {:<20} {}",
            stored.id,
            stored.script_name,
            stored.state,
            stored.started_at.format("%Y-%m-%d %H:%M:%S"),
            steps_done
        );
    }
    Ok(())
}

async fn print_record(context: &Context, id: Uuid) -> Result<(), String> {
    let database = context.open_database().await?;
    let result = ceremony::record(&database.pool, id).await;
    database.close().await;
    let record = result.map_err(|error| error.to_string())?;
    print!("{}", record.to_text());
    Ok(())
}

/// Logs in the participants the script needs, role by role. Returns them with their password
/// hashes, which the prompts use to authenticate each person again whenever they act.
async fn log_in_all(
    pool: &sqlx::PgPool,
    terminal: &Terminal,
    script: &CeremonyScript,
) -> Result<(Vec<Participant>, BTreeMap<String, String>), String> {
    let mut participants: Vec<Participant> = Vec::new();
    let mut hashes = BTreeMap::new();
    for (role, count) in &script.roles {
        for position in 1..=*count {
            let name = terminal
                .line(
                    &format!("{role} {position} of {count}, user name: "),
                    script.idle_timeout,
                )
                .map_err(|error| error.to_string())?;
            if participants.iter().any(|p| p.name == name) {
                return Err(format!(
                    "{name:?} has already logged in to this ceremony; one person cannot fill two roles or two places"
                ));
            }
            let user = users::find_user(pool, &name)
                .await
                .map_err(|error| error.to_string())?;
            let participant =
                Participant::for_user(&user, *role).map_err(|error| error.to_string())?;
            let hash = log_in(pool, terminal, &participant).await?;
            hashes.insert(name.clone(), hash);
            participants.push(participant);
        }
    }
    Ok((participants, hashes))
}

/// Authenticates one participant at the terminal and returns their password hash.
async fn log_in(
    pool: &sqlx::PgPool,
    terminal: &Terminal,
    participant: &Participant,
) -> Result<String, String> {
    let password = terminal
        .secret(
            &format!("Password for {} ({}): ", participant.name, participant.role),
            ceremony::DEFAULT_IDLE_TIMEOUT,
        )
        .map_err(|error| error.to_string())?;
    let user = users::authenticate(pool, &participant.name, password)
        .await
        .map_err(|error| error.to_string())?;
    Participant::for_user(&user, participant.role).map_err(|error| error.to_string())?;
    let (_, hash) = users::find_with_hash(pool, &participant.name)
        .await
        .map_err(|error| error.to_string())?;
    Ok(hash)
}

fn print_report(report: CeremonyReport) -> Result<(), String> {
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

/// Parses a ceremony ID, with an error that says where to find one.
fn parse_ceremony_id(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text).map_err(|_| {
        format!(
            "invalid ceremony ID {text:?}; give the ID that `station ceremony list` shows, such as 67e55044-10b1-426f-9247-bb680e5fe0c8"
        )
    })
}

/// Formats step numbers as "1, 2, 3", or "none".
fn step_list<'a>(steps: impl IntoIterator<Item = &'a usize>) -> String {
    let steps: Vec<String> = steps.into_iter().map(|step| step.to_string()).collect();
    if steps.is_empty() {
        "none".to_owned()
    } else {
        steps.join(", ")
    }
}
