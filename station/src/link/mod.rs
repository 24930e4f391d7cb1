//! The terminal link: frames over serial ports and TCP.
//!
//! This layer moves [`Frame`]s: it encodes them, finds them again in a noisy byte stream, checks
//! their CRC, and bounds every receive by a deadline. Message types are interpreted one layer up,
//! in [`crate::protocol`]. All I/O here is blocking, so async callers run it with
//! `tokio::task::spawn_blocking` or on their own thread.

mod decoder;
mod error;
mod frame;
mod serial;
mod stream;
mod tcp;

use std::time::Instant;

pub use decoder::FrameDecoder;
pub use error::LinkError;
pub use frame::{
    END_BYTE, FRAME_OVERHEAD, Frame, FrameError, MAX_FRAME_LEN, MAX_PAYLOAD_LEN, START_BYTE,
    frame_crc,
};
pub use serial::{SerialLink, SerialStream};
pub use stream::{ByteStream, FramedLink, LinkTimeouts, ReadOutcome};
pub use tcp::{TcpByteStream, TcpLink};

/// A connection to one terminal that carries frames.
pub trait Link: Send {
    /// Device path or network address, for logs and errors.
    fn peer(&self) -> &str;

    /// Sends one frame.
    fn send(&mut self, frame: &Frame) -> Result<(), LinkError>;

    /// Returns the next valid frame, discarding noise and corrupted frames, or fails with
    /// [`LinkError::Timeout`] once `deadline` passes.
    fn receive(&mut self, deadline: Instant) -> Result<Frame, LinkError>;
}
