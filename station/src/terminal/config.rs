//! Configuration of a simulated terminal: identity, transport key, storage and faults.

use std::path::PathBuf;

use crate::crypto::SecretKey;

/// Identity the simulated terminal reports in HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalIdentity {
    /// Manufacturer name.
    pub vendor: String,
    /// Model name.
    pub model: String,
    /// Serial number.
    pub serial_number: String,
    /// Firmware version.
    pub firmware_version: String,
}

/// Line faults the simulator injects, for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimulatorFaults {
    /// Bytes sent before every response frame, as line noise.
    pub garbage_before_responses: Vec<u8>,
    /// Number of first responses sent with a corrupted CRC, which the station must drop and
    /// recover from by sending the request again.
    pub corrupt_responses: u32,
}

/// Everything a simulated terminal needs.
#[derive(Debug)]
pub struct SimulatorConfig {
    /// Identity reported in HELLO.
    pub identity: TerminalIdentity,
    /// AES key block protection key (KBPK) the station wraps keys under for this terminal.
    pub transport_key: SecretKey,
    /// The simulated device's secure storage; see [`super::DeviceState`].
    pub state_path: PathBuf,
    /// Number of key slots; LOAD_KEY for a slot at or above it fails with SLOT_INVALID.
    pub slot_count: u8,
    /// Emulated line speed: the simulator sleeps 10 bit times (8N1) after each byte it sends.
    /// `None` sends at pseudo-terminal speed.
    pub pace_baud: Option<u32>,
    /// Faults to inject.
    pub faults: SimulatorFaults,
}

impl SimulatorConfig {
    /// Creates a configuration with 8 key slots, no pacing and no faults.
    pub fn new(identity: TerminalIdentity, transport_key: SecretKey, state_path: PathBuf) -> Self {
        Self {
            identity,
            transport_key,
            state_path,
            slot_count: 8,
            pace_baud: None,
            faults: SimulatorFaults::default(),
        }
    }
}
