//! `station terminal-sim`: a simulated terminal on a pseudo-terminal, for manual tests and demos.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use tracing::info;
use zeroize::Zeroizing;

use super::config::{SimulatorConfig, SimulatorFaults, TerminalIdentity};
use super::error::SimulatorError;
use super::pty::spawn_pty_simulator;
use crate::crypto::{KeyAlgorithm, SecretKey};

/// Options of `station terminal-sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct TerminalSimArgs {
    /// Vendor name the terminal reports in HELLO.
    #[arg(long, default_value = "Open Terminal Works")]
    pub vendor: String,
    /// Model name the terminal reports in HELLO.
    #[arg(long, default_value = "OTW-PP200")]
    pub model: String,
    /// Serial number the terminal reports in HELLO.
    #[arg(long, default_value = "SIM000001")]
    pub serial: String,
    /// Firmware version the terminal reports in HELLO.
    #[arg(long, default_value = "1.0.0")]
    pub firmware: String,
    /// File containing the terminal's pre-shared AES transport key (KBPK) as 32, 48 or 64 hex
    /// digits. Required unless `--ecc` is given.
    #[arg(long, required_unless_present = "ecc")]
    pub transport_key_file: Option<PathBuf>,
    /// Speak protocol version 2: generate a P-384 key pair on board, request a certificate with
    /// a CSR, and load keys under the session KBPK of the ECDH key exchange.
    #[arg(long)]
    pub ecc: bool,
    /// JSON file that plays the terminal's secure storage; created if missing. It contains clear
    /// keys, so use it only on test machines.
    #[arg(long)]
    pub state: PathBuf,
    /// Emulated line speed in baud: the simulator paces its output to it. Without this option
    /// bytes go at pseudo-terminal speed.
    #[arg(long)]
    pub baud: Option<u32>,
    /// Keep running when stdin is closed; stop only on Ctrl-C or SIGTERM.
    #[arg(long)]
    pub ignore_stdin: bool,
    /// Fault: bytes (in hex) sent as line noise before every response.
    #[arg(long, value_name = "HEX")]
    pub noise_before_responses: Option<String>,
    /// Fault: number of first response transmissions sent with a corrupted CRC.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub corrupt_responses: u32,
    /// Fault: number of response transmissions after those with a noise byte inside the frame.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub noise_inside_responses: u32,
    /// Fault: number of first requests ignored, as if lost on the line.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub ignore_requests: u32,
    /// Fault: send responses one byte per write, 2 ms apart.
    #[arg(long)]
    pub split_responses: bool,
    /// Fault: hang up the line halfway through the response to LOAD_KEY.
    #[arg(long)]
    pub disconnect_mid_load_result: bool,
    /// Fault: present a certificate from an impostor CA in HELLO.
    #[arg(long)]
    pub bad_certificate: bool,
    /// Fault: sign the key exchange with a key other than the certificate's.
    #[arg(long)]
    pub wrong_signature: bool,
    /// Fault: respond to every LOAD_KEY with ERROR STORAGE_FULL.
    #[arg(long)]
    pub storage_full: bool,
}

/// Reason the command stopped.
#[derive(Debug)]
enum StopReason {
    StdinClosed,
    Signal,
}

/// Runs `station terminal-sim`: prints the device path on stdout, then serves the terminal
/// until stdin closes (unless `--ignore-stdin`), Ctrl-C or SIGTERM.
///
/// This function blocks. Call it outside an async runtime, or from `spawn_blocking`.
pub fn run_terminal_sim_command(args: TerminalSimArgs) -> Result<(), SimulatorError> {
    let transport_key = args
        .transport_key_file
        .as_deref()
        .map(read_transport_key)
        .transpose()?;
    let identity = TerminalIdentity {
        vendor: args.vendor,
        model: args.model,
        serial_number: args.serial,
        firmware_version: args.firmware,
    };
    let mut config = SimulatorConfig::with_ecc(identity, args.state);
    if !args.ecc {
        config.ecc = None;
    }
    config.transport_key = transport_key;
    config.pace_baud = args.baud;
    config.faults = SimulatorFaults {
        garbage_before_responses: match &args.noise_before_responses {
            Some(text) => hex::decode(text).map_err(|error| {
                SimulatorError::Config(format!(
                    "--noise-before-responses {text:?} is not hex: {error}"
                ))
            })?,
            None => Vec::new(),
        },
        corrupt_responses: args.corrupt_responses,
        noise_inside_responses: args.noise_inside_responses,
        ignore_requests: args.ignore_requests,
        split_responses: args.split_responses,
        disconnect_mid_load_result: args.disconnect_mid_load_result,
        bad_certificate: args.bad_certificate,
        wrong_signature: args.wrong_signature,
        storage_full: args.storage_full,
    };
    let handle = spawn_pty_simulator(config)?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", handle.device_path())
        .and_then(|()| stdout.flush())
        .map_err(|error| SimulatorError::Config(format!("failed to write to stdout: {error}")))?;
    drop(stdout);

    let (sender, receiver) = mpsc::channel();
    spawn_signal_watcher(sender.clone())?;
    if !args.ignore_stdin {
        spawn_stdin_watcher(sender);
    }

    // NOTE: the watcher threads stay blocked on stdin or on the signal after this returns. They
    // end with the process, because this command is meant to be the whole process.
    loop {
        match receiver.recv_timeout(Duration::from_millis(200)) {
            Ok(reason) => {
                info!(?reason, "stopping the simulated terminal");
                return handle.stop();
            }
            Err(mpsc::RecvTimeoutError::Timeout) if handle.is_running() => {}
            Err(_) => return handle.stop(),
        }
    }
}

/// Reads a hex AES key from `path`, choosing AES-128, -192 or -256 by its length.
fn read_transport_key(path: &Path) -> Result<SecretKey, SimulatorError> {
    let error = |reason: String| SimulatorError::TransportKeyFile {
        path: path.to_owned(),
        reason,
    };
    let mut text = Zeroizing::new(String::new());
    std::fs::File::open(path)
        .and_then(|mut file| file.read_to_string(&mut text))
        .map_err(|io| error(format!("failed to read: {io}")))?;
    let digits = text.trim();
    let algorithm = match digits.len() {
        32 => KeyAlgorithm::Aes128,
        48 => KeyAlgorithm::Aes192,
        64 => KeyAlgorithm::Aes256,
        other => return Err(error(format!("found {other} characters"))),
    };
    SecretKey::from_hex(algorithm, digits).map_err(|key_error| error(key_error.to_string()))
}

fn spawn_signal_watcher(sender: mpsc::Sender<StopReason>) -> Result<(), SimulatorError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|error| SimulatorError::Signal(error.to_string()))?;
    let mut terminate = runtime
        .block_on(async {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        })
        .map_err(|error| SimulatorError::Signal(error.to_string()))?;
    thread::Builder::new()
        .name("terminal-sim-signals".to_owned())
        .spawn(move || {
            runtime.block_on(async {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            });
            let _ = sender.send(StopReason::Signal);
        })
        .map_err(|error| SimulatorError::Signal(error.to_string()))?;
    Ok(())
}

fn spawn_stdin_watcher(sender: mpsc::Sender<StopReason>) {
    thread::spawn(move || {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(count) if count > 0) {}
        let _ = sender.send(StopReason::StdinClosed);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(contents: &str) -> (tempfile::TempDir, PathBuf) {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("transport.hex");
        std::fs::write(&path, contents).expect("write key file");
        (directory, path)
    }

    #[test]
    fn transport_key_length_selects_algorithm() {
        for (digits, algorithm) in [
            (32, KeyAlgorithm::Aes128),
            (48, KeyAlgorithm::Aes192),
            (64, KeyAlgorithm::Aes256),
        ] {
            let (_directory, path) = key_file(&format!("{}\n", "A".repeat(digits)));
            let key = read_transport_key(&path).expect("valid key file");
            assert_eq!(key.algorithm(), algorithm);
        }
    }

    #[test]
    fn transport_key_of_wrong_length_is_rejected() {
        let (_directory, path) = key_file("0123456789ABCDEF");
        let error = read_transport_key(&path).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "transport key file {}: found 16 characters; the file must contain one AES key \
                 as 32, 48 or 64 hex digits",
                path.display()
            )
        );
    }

    #[test]
    fn transport_key_error_hides_the_text() {
        let (_directory, path) = key_file(&format!("{}ZZ", "1".repeat(30)));
        let error = read_transport_key(&path).unwrap_err().to_string();
        assert!(!error.contains("111111"), "{error}");
    }

    #[test]
    fn missing_transport_key_file_names_path() {
        let error = read_transport_key(Path::new("/nonexistent/transport.hex")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("transport key file /nonexistent/transport.hex: failed to read: "),
            "{error}"
        );
    }
}
