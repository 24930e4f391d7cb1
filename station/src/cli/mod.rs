//! Command-line interface: argument parsing and one module per command group.

mod ceremony;
mod ceremony_inputs;
mod context;
mod demo;
mod prompt;
mod provision;
mod tools;
mod user;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use context::Context;

/// Key-injection provisioning station: key ceremonies, the key vault, and provisioning of
/// terminals with DUKPT keys in TR-31 key blocks.
#[derive(Debug, Parser)]
#[command(name = "station", version, about)]
pub struct Cli {
    /// Folder of the station's private PostgreSQL cluster and demo files.
    #[arg(
        long,
        global = true,
        env = "STATION_DATA_DIR",
        default_value = "station-data"
    )]
    pub data_dir: PathBuf,

    /// PostgreSQL server to use instead of the private cluster (postgres://...).
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Identifier of this station in the audit trail [default: the host name].
    #[arg(long, global = true, env = "STATION_ID")]
    pub station_id: Option<String>,

    /// Log more: -v for progress, -vv for decisions, -vvv for every frame.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the end-to-end demo: ceremony, four simulated terminals, audit check.
    Demo(demo::DemoArgs),
    /// Check or run key ceremonies.
    #[command(subcommand)]
    Ceremony(ceremony::CeremonyCommand),
    /// Provision one terminal on a serial port.
    Provision(provision::ProvisionArgs),
    /// Inspect and verify the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// List the keys in the vault.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Add and list user accounts.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Payment-key calculators: KCV, DUKPT, TR-31, components and shares.
    #[command(subcommand)]
    Tools(tools::ToolsCommand),
    /// Run a simulated terminal on a new pseudo-terminal and print its device path.
    TerminalSim(station::terminal::TerminalSimArgs),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain of every station and name the first event that does not match.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List every key with its label, algorithm, usage, check value and status.
    List,
    /// Show every key's full record: creation ceremony, custodians and history.
    Inventory,
}

/// Sets up logging to stderr. `RUST_LOG` overrides the level given by `-v`.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour codes only help a person at a terminal; in a log file they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs the parsed command. Errors are already worded for the operator.
pub fn run(cli: Cli) -> Result<(), String> {
    let context = Context::new(&cli);
    // The simulator and the calculators block and need no database, so they run without the
    // async runtime.
    let command = match cli.command {
        Command::TerminalSim(args) => {
            return station::terminal::run_terminal_sim_command(args)
                .map_err(|error| error.to_string());
        }
        Command::Tools(command) => return tools::run(command).map_err(|error| error.to_string()),
        command => command,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the async runtime: {error}"))?;
    runtime.block_on(async move {
        match command {
            Command::Demo(args) => demo::run(&context, args).await,
            Command::Ceremony(command) => ceremony::run(&context, command).await,
            Command::Provision(args) => provision::run(&context, args).await,
            Command::Audit(AuditCommand::Verify) => context.audit_verify().await,
            Command::Keys(KeysCommand::List) => context.list_keys().await,
            Command::Keys(KeysCommand::Inventory) => context.key_inventory().await,
            Command::User(command) => user::run(&context, command).await,
            Command::TerminalSim(_) | Command::Tools(_) => {
                unreachable!("handled before the runtime starts")
            }
        }
    })
}
