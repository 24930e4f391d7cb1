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

pub use decoder::{DamagedFrame, FrameDecoder};
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

    /// Like [`Link::receive`], but returns [`Received::Damaged`] when a frame arrived whole
    /// and failed its CRC or end byte check and no valid frame follows it in the bytes
    /// received, so the caller can send NAK.
    fn receive_or_damaged(&mut self, deadline: Instant) -> Result<Received, LinkError>;
}

/// What [`Link::receive_or_damaged`] found on the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A valid frame.
    Frame(Frame),
    /// A frame that failed its checks.
    Damaged(DamagedFrame),
}
