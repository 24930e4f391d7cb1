//! The terminal simulator: the device side of the protocol, for tests, demos and development.
//!
//! A [`Simulator`] behaves like a payment terminal in loading mode. It reports a configured
//! identity, unwraps each LOAD_KEY block with its transport key, checks the header, stores the
//! key in a JSON file that plays its secure element, and confirms with the key's CMAC check
//! value. [`spawn_pty_simulator`] runs one on a pseudo-terminal pair so the station reaches it
//! through a real serial line discipline, and [`run_terminal_sim_command`] is the
//! `station terminal-sim` command.

mod cli;
mod config;
mod error;
mod handshake;
mod pty;
mod simulator;
mod state;

pub use cli::{TerminalSimArgs, run_terminal_sim_command};
pub use config::{EccSettings, SimulatorConfig, SimulatorFaults, TerminalIdentity};
pub use error::SimulatorError;
pub use pty::{SimulatorHandle, spawn_pty_simulator};
pub use simulator::Simulator;
pub use state::{DeviceState, StoredKey};
