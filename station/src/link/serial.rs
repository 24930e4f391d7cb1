//! Serial transport: terminals on RS-232, USB CDC-ACM ports and pseudo-terminals.
//!
//! Exclusive access: Linux lets a process with `CAP_SYS_ADMIN` (root) open a `TIOCEXCL` port
//! again, so the station relies on an exclusive `flock` on the device, which stops every opener
//! that also locks, root included. serialport 4.10's exclusive mode sets `TIOCEXCL` and then takes
//! that `flock` (`TTYPort::open`). The station then checks from a second descriptor that the lock
//! is held, and takes it itself if it is not, so exclusive access does not hang on the serial
//! driver's internals. A port locked by someone else is reported as [`LinkError::PortInUse`].

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use serialport::{ClearBuffer, SerialPort, TTYPort};
use tracing::{debug, info};

use super::error::LinkError;
use super::stream::{ByteStream, FramedLink, LinkTimeouts, ReadOutcome};

/// A framed link over a serial port.
pub type SerialLink = FramedLink<SerialStream>;

/// An open serial port with its device path.
#[derive(Debug)]
pub struct SerialStream {
    port: TTYPort,
    path: String,
    /// The station's own exclusive `flock` on the device, when the serial driver took none.
    _lock: Option<File>,
}

impl SerialStream {
    /// Wraps a port that is already open, such as the device side of a pseudo-terminal pair.
    pub fn from_port(port: TTYPort, path: impl Into<String>) -> Self {
        Self {
            port,
            path: path.into(),
            _lock: None,
        }
    }

    /// Device path.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl FramedLink<SerialStream> {
    /// Opens `path` at `baud` with the default [`LinkTimeouts`]; see [`SerialLink::open_with`].
    pub fn open(path: &str, baud: u32) -> Result<Self, LinkError> {
        Self::open_with(path, baud, LinkTimeouts::default())
    }

    /// Opens the serial port `path` at `baud`, 8 data bits, no parity, one stop bit, no flow
    /// control, in raw mode, with exclusive access.
    ///
    /// DTR and RTS are asserted for terminals that wait for them. A port that has no modem
    /// control lines, such as a pseudo-terminal (the ioctls fail with `ENOTTY`), is used anyway.
    pub fn open_with(path: &str, baud: u32, timeouts: LinkTimeouts) -> Result<Self, LinkError> {
        if baud == 0 {
            // POSIX termios defines speed B0 as "hang up the line" (drop DTR).
            return Err(LinkError::Open {
                path: path.to_owned(),
                baud,
                reason: "the baud rate must be greater than 0".to_owned(),
            });
        }
        match std::fs::metadata(path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(LinkError::PortNotFound {
                    path: path.to_owned(),
                });
            }
            Err(error) if error.kind() == io::ErrorKind::PermissionDenied => {
                return Err(LinkError::PermissionDenied {
                    path: path.to_owned(),
                });
            }
            _ => {}
        }

        let mut port = serialport::new(path, baud)
            .exclusive(true)
            .timeout(timeouts.inter_byte)
            .open_native()
            .map_err(|error| open_error(path, baud, error))?;

        for (line, result) in [
            ("DTR", port.write_data_terminal_ready(true)),
            ("RTS", port.write_request_to_send(true)),
        ] {
            if let Err(error) = result {
                debug!(path, line, %error, "port has no modem control line; continuing without it");
            }
        }
        port.clear(ClearBuffer::Input)
            .map_err(|error| open_error(path, baud, error))?;
        let lock = ensure_exclusive_lock(path)?;

        info!(path, baud, "serial port open");
        let mut stream = SerialStream::from_port(port, path);
        stream._lock = lock;
        Ok(Self::new(stream, timeouts))
    }
}

/// Confirms from a second descriptor that the device is under an exclusive `flock`.
///
/// Returns `None` when the lock is already held, by the serial driver for the open port.
/// Otherwise it returns the second descriptor, now locked, for the caller to keep open.
fn ensure_exclusive_lock(path: &str) -> Result<Option<File>, LinkError> {
    let flags = rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::NONBLOCK;
    let flags = i32::try_from(flags.bits()).expect("open(2) flags fit in a C int");
    let probe = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open(path)
    {
        Ok(probe) => probe,
        // EBUSY: TIOCEXCL, set by the serial driver, stops this non-root second open.
        Err(error) if error.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
            debug!(path, "TIOCEXCL blocks a second open; the port is exclusive");
            return Ok(None);
        }
        Err(error) => {
            return Err(LinkError::Io {
                peer: path.to_owned(),
                source: error,
            });
        }
    };
    match probe.try_lock() {
        Err(TryLockError::WouldBlock) => Ok(None),
        Ok(()) => {
            debug!(
                path,
                "the serial driver took no flock; holding the station's own"
            );
            Ok(Some(probe))
        }
        Err(TryLockError::Error(error)) => Err(LinkError::Io {
            peer: path.to_owned(),
            source: error,
        }),
    }
}

fn open_error(path: &str, baud: u32, error: serialport::Error) -> LinkError {
    let path = path.to_owned();
    match error.kind() {
        // serialport reports both a failed flock and EBUSY from TIOCEXCL as NoDevice.
        serialport::ErrorKind::NoDevice => LinkError::PortInUse { path },
        serialport::ErrorKind::Io(io::ErrorKind::NotFound) => LinkError::PortNotFound { path },
        serialport::ErrorKind::Io(io::ErrorKind::PermissionDenied) => {
            LinkError::PermissionDenied { path }
        }
        // ENOTTY: the path exists but rejects terminal settings, so it is no serial device.
        _ if error.description.contains("Not a typewriter") => LinkError::Open {
            path,
            baud,
            reason: "the device is not a serial port (it rejects terminal settings); \
                     check the path, for example in /dev/serial/by-id/"
                .to_owned(),
        },
        _ => LinkError::Open {
            path,
            baud,
            reason: error.to_string(),
        },
    }
}

/// Tells whether a read or write error means the far side is gone.
///
/// On Linux a pseudo-terminal whose other side closed returns `EIO` from `read`, and `poll`
/// reports `POLLHUP`, which serialport 4.10 turns into `BrokenPipe`. serialport also turns
/// `EIO` into an error of kind `Other` that keeps only the text "I/O error", so the text is
/// checked as well.
pub(crate) fn is_disconnect(error: &io::Error) -> bool {
    const EIO: i32 = 5;
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
    ) || error.raw_os_error() == Some(EIO)
        || (error.kind() == io::ErrorKind::Other && error.to_string() == "I/O error")
}

impl ByteStream for SerialStream {
    fn read_some(
        &mut self,
        buffer: &mut [u8],
        timeout: Duration,
    ) -> Result<ReadOutcome, LinkError> {
        self.port
            .set_timeout(timeout)
            .map_err(|error| LinkError::Io {
                peer: self.path.clone(),
                source: error.into(),
            })?;
        loop {
            return match self.port.read(buffer) {
                Ok(0) => Err(LinkError::Disconnected {
                    peer: self.path.clone(),
                }),
                Ok(count) => Ok(ReadOutcome::Data(count)),
                Err(error) if error.kind() == io::ErrorKind::TimedOut => Ok(ReadOutcome::TimedOut),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => Err(stream_error(&self.path, error)),
            };
        }
    }

    fn write_all_within(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), LinkError> {
        self.port
            .set_timeout(timeout)
            .map_err(|error| LinkError::Io {
                peer: self.path.clone(),
                source: error.into(),
            })?;
        self.port.write_all(bytes).map_err(|error| {
            if error.kind() == io::ErrorKind::TimedOut {
                LinkError::WriteTimeout {
                    peer: self.path.clone(),
                    waited: timeout,
                }
            } else {
                stream_error(&self.path, error)
            }
        })
    }

    fn peer(&self) -> &str {
        &self.path
    }
}

fn stream_error(path: &str, error: io::Error) -> LinkError {
    if is_disconnect(&error) {
        LinkError::Disconnected {
            peer: path.to_owned(),
        }
    } else {
        LinkError::Io {
            peer: path.to_owned(),
            source: error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_lock_is_taken_when_none_is_held() {
        let (_master, slave) = TTYPort::pair().expect("pseudo-terminal pair");
        let path = slave.name().expect("slave path");

        let guard = ensure_exclusive_lock(&path).expect("lock check");
        assert!(
            guard.is_some(),
            "nobody held the lock, so the station must take it"
        );

        let again = ensure_exclusive_lock(&path).expect("lock check");
        assert!(again.is_none(), "the station's own lock was not seen");

        let error = SerialLink::open(&path, 9600).unwrap_err();
        assert!(matches!(error, LinkError::PortInUse { .. }), "{error:?}");
    }

    #[test]
    fn zero_baud_is_rejected() {
        let error = SerialLink::open("/dev/null", 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "failed to open serial port /dev/null at 0 baud: the baud rate must be greater than 0"
        );
    }

    #[test]
    fn eio_text_from_serialport_counts_as_disconnect() {
        let error = io::Error::other("I/O error");
        assert!(is_disconnect(&error));
        assert!(is_disconnect(&io::Error::from_raw_os_error(5)));
        assert!(!is_disconnect(&io::Error::other("Operation not permitted")));
    }
}
