//! A simulated terminal on a pseudo-terminal pair, served from a thread.
//!
//! The simulator owns the master side. The station opens the slave side by its path (for
//! example `/dev/pts/3`), as it would open a USB serial port. The handle keeps one slave
//! descriptor open for its whole life: while no slave descriptor is open, Linux makes reads on
//! the master fail with `EIO`, and the simulator would see every station disconnect and
//! reconnect as a hang-up.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serialport::{SerialPort, TTYPort};
use tracing::{error, info};

use super::config::SimulatorConfig;
use super::error::SimulatorError;
use super::simulator::Simulator;
use super::state::DeviceState;
use crate::crypto::kcv::{Kcv, KcvMethod};
use crate::link::{ByteStream, FramedLink, LinkError, LinkTimeouts, ReadOutcome, SerialStream};

/// A running simulated terminal. Dropping the handle stops the simulator and closes the
/// pseudo-terminal.
pub struct SimulatorHandle {
    device_path: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), SimulatorError>>>,
    state_path: PathBuf,
    /// Slave descriptor kept open so the path stays valid; never read.
    _station_side: TTYPort,
}

impl SimulatorHandle {
    /// Path of the station's side, to open with [`crate::link::SerialLink::open`].
    pub fn device_path(&self) -> &str {
        &self.device_path
    }

    /// Computes the check value of the key the simulated terminal stored in `slot`, read from
    /// its state file, or returns `None` if the slot is empty.
    ///
    /// This looks inside the simulated secure storage, which no real terminal allows. Demos and
    /// tests use it to check a terminal's LOAD_RESULT independently.
    pub fn stored_key_kcv(
        &self,
        slot: u8,
        method: KcvMethod,
    ) -> Result<Option<Kcv>, SimulatorError> {
        let state = DeviceState::load(&self.state_path)?;
        Ok(state
            .key_in_slot(slot)
            .map(|stored| Kcv::compute(&stored.key, method)))
    }

    /// True while the simulator thread runs.
    pub fn is_running(&self) -> bool {
        self.thread
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
    }

    /// Stops the simulator, waits for its thread, and returns how the thread ended.
    pub fn stop(mut self) -> Result<(), SimulatorError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), SimulatorError> {
        self.stop.store(true, Ordering::Relaxed);
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        match thread.join() {
            Ok(result) => result,
            Err(panic) => {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(SimulatorError::ThreadPanicked(text))
            }
        }
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        if let Err(error) = self.stop_and_join() {
            error!(%error, path = %self.device_path, "simulated terminal ended with an error");
        }
    }
}

/// Starts a simulated terminal on a new pseudo-terminal pair in raw mode (no echo, no line
/// editing, no flow control characters) and returns once it is ready for the station.
pub fn spawn_pty_simulator(config: SimulatorConfig) -> Result<SimulatorHandle, SimulatorError> {
    if config.pace_baud == Some(0) {
        return Err(SimulatorError::Config(
            "pace_baud must be greater than 0".to_owned(),
        ));
    }
    let pace_baud = config.pace_baud;
    let serial_number = config.identity.serial_number.clone();
    let state_path = config.state_path.clone();
    let mut simulator = Simulator::new(config)?;

    // TTYPort::pair puts the slave side in raw mode with cfmakeraw.
    let (master, station_side) =
        TTYPort::pair().map_err(|error| SimulatorError::Pty(error.to_string()))?;
    let device_path = station_side
        .name()
        .ok_or_else(|| SimulatorError::Pty("the slave side has no path".to_owned()))?;

    let stream = PacedStream {
        inner: SerialStream::from_port(master, format!("{device_path} (device side)")),
        byte_time: pace_baud.map(byte_time),
    };
    let mut link = FramedLink::new(stream, LinkTimeouts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = Arc::clone(&stop);
    let thread = thread::Builder::new()
        .name(format!("terminal-sim-{serial_number}"))
        .spawn(move || simulator.serve(&mut link, &thread_stop))
        .map_err(|error| SimulatorError::Pty(format!("failed to start its thread: {error}")))?;

    info!(path = %device_path, serial_number = %serial_number, ?pace_baud, "simulated terminal started");
    Ok(SimulatorHandle {
        device_path,
        stop,
        thread: Some(thread),
        state_path,
        _station_side: station_side,
    })
}

/// Time to send one byte at `baud` with 8N1 framing: a start bit, 8 data bits, a stop bit.
fn byte_time(baud: u32) -> Duration {
    Duration::from_secs(10) / baud
}

/// A byte stream that sends one byte per `byte_time`, emulating a UART's line speed, because
/// a pseudo-terminal accepts a baud rate but does not apply it.
struct PacedStream<S> {
    inner: S,
    byte_time: Option<Duration>,
}

impl<S: ByteStream> ByteStream for PacedStream<S> {
    fn read_some(
        &mut self,
        buffer: &mut [u8],
        timeout: Duration,
    ) -> Result<ReadOutcome, LinkError> {
        self.inner.read_some(buffer, timeout)
    }

    fn write_all_within(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), LinkError> {
        let Some(byte_time) = self.byte_time else {
            return self.inner.write_all_within(bytes, timeout);
        };
        for byte in bytes {
            self.inner
                .write_all_within(std::slice::from_ref(byte), timeout)?;
            thread::sleep(byte_time);
        }
        Ok(())
    }

    fn peer(&self) -> &str {
        self.inner.peer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_time_counts_ten_bits() {
        assert_eq!(byte_time(9600), Duration::from_nanos(1_041_666));
        assert_eq!(byte_time(10), Duration::from_secs(1));
    }
}
