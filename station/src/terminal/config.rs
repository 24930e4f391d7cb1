//! Configuration of a simulated terminal: identity, keys, storage and faults.

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

/// Faults the simulator injects, for tests. Counters apply to the first N occurrences.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimulatorFaults {
    /// Bytes sent before every response frame, as line noise.
    pub garbage_before_responses: Vec<u8>,
    /// Number of first response transmissions sent with a corrupted CRC, resent ones included.
    /// The station responds to each with NAK and the simulator sends the response again.
    pub corrupt_responses: u32,
    /// Number of response transmissions after those with a noise byte inserted in the middle
    /// of the frame.
    pub noise_inside_responses: u32,
    /// Number of first requests the simulator ignores, as if they were lost on the line.
    pub ignore_requests: u32,
    /// Send every response one byte per write, 2 ms apart, so the station reads it in pieces.
    pub split_responses: bool,
    /// Send half of the first response to a LOAD_KEY, then hang up the line, as a terminal
    /// unplugged mid-frame.
    pub disconnect_mid_load_result: bool,
    /// Present a self-signed certificate in HELLO instead of the factory-issued one.
    pub bad_certificate: bool,
    /// Sign the key exchange transcript with a key other than the certificate's.
    pub wrong_signature: bool,
    /// Respond to every LOAD_KEY with ERROR STORAGE_FULL.
    pub storage_full: bool,
}

/// A version 2 terminal's elliptic-curve settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EccSettings {
    /// The terminal generates its P-384 key pair on board and responds to CSR_REQUEST.
    pub on_board_key_generation: bool,
    /// Fixed ephemeral scalar (48 bytes) and nonce (32 bytes) for the worked example of the
    /// protocol documentation. `None`, the normal case, draws fresh ones per key exchange.
    pub fixed_handshake: Option<([u8; 48], [u8; 32])>,
}

impl Default for EccSettings {
    fn default() -> Self {
        Self {
            on_board_key_generation: true,
            fixed_handshake: None,
        }
    }
}

/// Everything a simulated terminal needs.
#[derive(Debug)]
pub struct SimulatorConfig {
    /// Identity reported in HELLO.
    pub identity: TerminalIdentity,
    /// Pre-shared AES key block protection key (KBPK) for version 1 loads. A version 2 terminal
    /// needs none: it loads under the session KBPK of its key exchange.
    pub transport_key: Option<SecretKey>,
    /// Version 2 settings; `None` makes a version 1 terminal without ECC support.
    pub ecc: Option<EccSettings>,
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
    /// Creates a version 1 terminal with a pre-shared transport key, 8 key slots, no pacing and
    /// no faults.
    pub fn new(identity: TerminalIdentity, transport_key: SecretKey, state_path: PathBuf) -> Self {
        Self {
            identity,
            transport_key: Some(transport_key),
            ecc: None,
            state_path,
            slot_count: 8,
            pace_baud: None,
            faults: SimulatorFaults::default(),
        }
    }

    /// Creates a version 2 terminal that generates its key pair on board, with 8 key slots, no
    /// pacing and no faults.
    pub fn with_ecc(identity: TerminalIdentity, state_path: PathBuf) -> Self {
        Self {
            identity,
            transport_key: None,
            ecc: Some(EccSettings::default()),
            state_path,
            slot_count: 8,
            pace_baud: None,
            faults: SimulatorFaults::default(),
        }
    }
}
