//! Frames over any byte stream: the [`Link`] implementation shared by serial and TCP.

use std::time::{Duration, Instant};

use tracing::{debug, trace};

use super::decoder::FrameDecoder;
use super::error::LinkError;
use super::frame::Frame;
use super::{Link, Received};

/// Outcome of one bounded read from a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were read (at least one).
    Data(usize),
    /// No byte arrived within the timeout.
    TimedOut,
}

/// A bidirectional byte stream with bounded reads, such as a serial port or a TCP socket.
///
/// Implementations report a closed or hung-up peer as [`LinkError::Disconnected`].
pub trait ByteStream: Send {
    /// Reads whatever bytes are available into `buffer`, waiting at most `timeout` for the first.
    fn read_some(&mut self, buffer: &mut [u8], timeout: Duration)
    -> Result<ReadOutcome, LinkError>;

    /// Writes all of `bytes`, failing if the line does not accept them within `timeout`.
    fn write_all_within(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), LinkError>;

    /// Device path or network address, for logs and errors.
    fn peer(&self) -> &str;
}

/// Timing of a framed link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTimeouts {
    /// Maximum silence inside a frame before the reader drops the partial frame and
    /// resynchronises. It never extends the deadline of a [`Link::receive`] call.
    pub inter_byte: Duration,
    /// Maximum time the line may take to accept one frame.
    pub write: Duration,
}

impl Default for LinkTimeouts {
    /// 200 ms between bytes is 19 character times at 9600 baud: far beyond any healthy gap
    /// inside a frame, yet short enough to recover from a false start within one request.
    fn default() -> Self {
        Self {
            inter_byte: Duration::from_millis(200),
            write: Duration::from_secs(2),
        }
    }
}

/// A [`Link`] over a [`ByteStream`]: frames are encoded on send and decoded, with
/// resynchronisation, on receive.
#[derive(Debug)]
pub struct FramedLink<S> {
    stream: S,
    decoder: FrameDecoder,
    timeouts: LinkTimeouts,
    /// When the last byte arrived, to tell a pause inside a frame from a dead line.
    last_data: Instant,
}

/// Bytes requested from the stream per read.
const READ_CHUNK: usize = 512;

impl<S: ByteStream> FramedLink<S> {
    /// Wraps a byte stream.
    pub fn new(stream: S, timeouts: LinkTimeouts) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::new(),
            timeouts,
            last_data: Instant::now(),
        }
    }

    /// Returns the underlying byte stream.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Writes `bytes` to the line as they are, bypassing framing.
    ///
    /// The terminal simulator uses this to inject line faults such as noise before a frame.
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.stream.write_all_within(bytes, self.timeouts.write)
    }

    /// Link timing in use.
    pub fn timeouts(&self) -> LinkTimeouts {
        self.timeouts
    }

    /// Counts of bytes and candidate frames the reader discarded while resynchronising.
    pub fn discard_counts(&self) -> (u64, u64) {
        (
            self.decoder.discarded_bytes(),
            self.decoder.rejected_candidates(),
        )
    }
}

impl<S: ByteStream> Link for FramedLink<S> {
    fn peer(&self) -> &str {
        self.stream.peer()
    }

    fn send(&mut self, frame: &Frame) -> Result<(), LinkError> {
        trace!(
            peer = self.stream.peer(),
            sequence = frame.sequence(),
            message_type = frame.message_type(),
            payload_len = frame.payload().len(),
            "sending frame"
        );
        let bytes = frame.encode();
        self.stream.write_all_within(&bytes, self.timeouts.write)
    }

    fn receive(&mut self, deadline: Instant) -> Result<Frame, LinkError> {
        match self.receive_inner(deadline, false)? {
            Received::Frame(frame) => Ok(frame),
            Received::Damaged(_) => unreachable!("damage is reported only when requested"),
        }
    }

    fn receive_or_damaged(&mut self, deadline: Instant) -> Result<Received, LinkError> {
        self.receive_inner(deadline, true)
    }
}

impl<S: ByteStream> FramedLink<S> {
    fn receive_inner(
        &mut self,
        deadline: Instant,
        report_damage: bool,
    ) -> Result<Received, LinkError> {
        let started = Instant::now();
        let mut buffer = [0u8; READ_CHUNK];
        loop {
            if let Some(frame) = self.decoder.next_frame() {
                trace!(
                    peer = self.stream.peer(),
                    sequence = frame.sequence(),
                    message_type = frame.message_type(),
                    payload_len = frame.payload().len(),
                    "received frame"
                );
                return Ok(Received::Frame(frame));
            }
            let damaged = self.decoder.take_damaged();
            if report_damage && let Some(damaged) = damaged {
                debug!(
                    peer = self.stream.peer(),
                    sequence = damaged.sequence,
                    error = %damaged.error,
                    "received a damaged frame"
                );
                return Ok(Received::Damaged(damaged));
            }

            let now = Instant::now();
            let quiet = now.duration_since(self.last_data);
            if self.decoder.has_partial() && quiet >= self.timeouts.inter_byte {
                self.decoder.abandon_partial();
                continue;
            }

            // Each read waits until the deadline at most, so a device that trickles bytes inside
            // the inter-byte timeout cannot stretch the request beyond its deadline.
            let Some(remaining) = deadline
                .checked_duration_since(now)
                .filter(|remaining| !remaining.is_zero())
            else {
                return Err(LinkError::Timeout {
                    peer: self.stream.peer().to_owned(),
                    waited: now.duration_since(started),
                });
            };
            let wait = if self.decoder.has_partial() {
                remaining.min(self.timeouts.inter_byte - quiet)
            } else {
                remaining
            };

            let outcome = match self.stream.read_some(&mut buffer, wait) {
                Err(LinkError::Disconnected { peer }) if self.decoder.has_partial() => {
                    return Err(LinkError::DisconnectedMidFrame {
                        peer,
                        buffered: self.decoder.buffered_len(),
                    });
                }
                other => other?,
            };
            match outcome {
                ReadOutcome::Data(count) => {
                    self.last_data = Instant::now();
                    self.decoder.push(&buffer[..count]);
                }
                ReadOutcome::TimedOut => {}
            }
        }
    }
}
