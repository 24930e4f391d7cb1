//! Errors of the terminal simulator.

use std::path::PathBuf;

use crate::link::LinkError;

/// Errors in starting or running a simulated terminal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimulatorError {
    /// The simulated device's state file cannot be read, parsed or written.
    #[error("simulated terminal state file {path}: {reason}")]
    StateFile {
        /// Path of the state file.
        path: PathBuf,
        /// Failure description, without key material.
        reason: String,
    },
    /// The transport key file given to the simulator is missing or not a hex AES key.
    #[error(
        "transport key file {path}: {reason}; the file must contain one AES key as 32, 48 or 64 \
         hex digits"
    )]
    TransportKeyFile {
        /// Path of the key file.
        path: PathBuf,
        /// Failure description, without key material.
        reason: String,
    },
    /// The simulator's configuration is invalid.
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    /// The operating system could not provide a pseudo-terminal pair.
    #[error("failed to open a pseudo-terminal pair: {0}; check that /dev/ptmx and /dev/pts exist")]
    Pty(String),
    /// The simulator's side of the link failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// Installing the Ctrl-C handler failed.
    #[error("failed to wait for Ctrl-C: {0}")]
    Signal(String),
    /// The simulator thread panicked: a bug in the simulator.
    #[error("the simulator thread panicked (a bug in the simulator): {0}")]
    ThreadPanicked(String),
}
