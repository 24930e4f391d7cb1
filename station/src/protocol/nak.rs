//! NAK (0x15, either direction): the receiver got a damaged frame and requests it again.
//!
//! Payload: `reason` u8. The frame's SEQ is the SEQ byte read from the damaged frame, which may
//! itself be damaged. A station that receives NAK sends its outstanding request again; a terminal
//! that receives NAK sends its last response again if that response has the NAK's SEQ, and
//! ignores the NAK otherwise. NAK is never answered with NAK.

use super::codec::{PayloadReader, PayloadWriter};
use super::{MessageType, ProtocolError};

/// Why the receiver rejected a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NakReason {
    /// `0x01`: the CRC did not match the frame's contents.
    CrcMismatch,
    /// `0x02`: the byte after the CRC was not ETX.
    MissingEnd,
}

impl NakReason {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            Self::CrcMismatch => 0x01,
            Self::MissingEnd => 0x02,
        }
    }

    /// Name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::CrcMismatch => "CRC mismatch",
            Self::MissingEnd => "missing end byte",
        }
    }
}

/// A request to send the last frame again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nak {
    /// Why the frame was rejected.
    pub reason: NakReason,
}

impl Nak {
    /// Encodes the payload.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut writer = PayloadWriter::new(MessageType::Nak);
        writer.u8(self.reason.code());
        Ok(writer.finish())
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut reader = PayloadReader::new(MessageType::Nak, payload);
        let code = reader.u8("reason")?;
        let reason = match code {
            0x01 => NakReason::CrcMismatch,
            0x02 => NakReason::MissingEnd,
            other => {
                return Err(ProtocolError::UndefinedValue {
                    message: MessageType::Nak,
                    field: "reason",
                    value: u16::from(other),
                });
            }
        };
        reader.finish()?;
        Ok(Self { reason })
    }
}
