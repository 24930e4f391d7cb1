//! Errors of the terminal link layer.

use std::io;
use std::time::Duration;

/// Errors in opening a link or moving frames over it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The serial device path does not exist (operator input or an unplugged terminal).
    #[error(
        "serial port {path} does not exist; check that the terminal is plugged in and powered, \
         and that the path is right (see `ls /dev/serial/by-id/` and `dmesg`)"
    )]
    PortNotFound {
        /// Device path as given.
        path: String,
    },
    /// The station's user may not open the device.
    #[error(
        "permission denied opening serial port {path}; add the station's user to the group that \
         owns the device (often `dialout`) or fix the device's permissions"
    )]
    PermissionDenied {
        /// Device path as given.
        path: String,
    },
    /// Another process or job holds the port's exclusive lock (`flock`), which also stops root.
    #[error(
        "serial port {path} is in use by another job or process that holds its exclusive lock; \
         stop the other job or choose another port"
    )]
    PortInUse {
        /// Device path as given.
        path: String,
    },
    /// Opening or configuring the port failed for another reason.
    #[error("failed to open serial port {path} at {baud} baud: {reason}")]
    Open {
        /// Device path as given.
        path: String,
        /// Requested line speed.
        baud: u32,
        /// Description from the operating system or the serial driver.
        reason: String,
    },
    /// A TCP connection to a networked terminal or simulator could not be made.
    #[error(
        "failed to connect to terminal at {address}: {source}; check the address and that the terminal is listening"
    )]
    Connect {
        /// Address as given.
        address: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The far end went away: the device hung up the line, was unplugged, or closed the socket.
    #[error(
        "terminal on {peer} disconnected; check the cable and power, then reconnect the terminal"
    )]
    Disconnected {
        /// Device path or network address.
        peer: String,
    },
    /// The far end went away after sending part of a frame: the terminal was unplugged or
    /// reset while it sent a response.
    #[error(
        "terminal on {peer} disconnected in the middle of a frame ({buffered} bytes of it \
         received); check the cable and power, then reconnect the terminal and start again"
    )]
    DisconnectedMidFrame {
        /// Device path or network address.
        peer: String,
        /// Bytes of the unfinished frame that arrived.
        buffered: usize,
    },
    /// No complete, valid frame arrived before the deadline: the device is silent, too slow, or
    /// its frames were corrupted on the line.
    #[error(
        "no complete frame from the terminal on {peer} within {} ms; the terminal is silent, \
         slower than the deadline allows, or its frames were corrupted on the line",
        waited.as_millis()
    )]
    Timeout {
        /// Device path or network address.
        peer: String,
        /// Time spent waiting.
        waited: Duration,
    },
    /// The line did not accept our bytes in time (flow control held, or a stuck device).
    #[error("writing to the terminal on {peer} timed out after {} ms", waited.as_millis())]
    WriteTimeout {
        /// Device path or network address.
        peer: String,
        /// Write timeout that expired.
        waited: Duration,
    },
    /// Another input/output error from the operating system.
    #[error("i/o error on the terminal link {peer}: {source}")]
    Io {
        /// Device path or network address.
        peer: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}
