//! HELLO_REQUEST (0x01, station to terminal): requests the terminal's identity.
//!
//! Payload: `protocol_version` u8, the highest protocol version the station speaks.

use super::codec::{PayloadReader, PayloadWriter};
use super::{MessageType, ProtocolError};

/// The station's request for the terminal's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloRequest {
    /// Highest protocol version the station speaks.
    pub protocol_version: u8,
}

impl HelloRequest {
    /// Encodes the payload.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut writer = PayloadWriter::new(MessageType::HelloRequest);
        writer.u8(self.protocol_version);
        Ok(writer.finish())
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut reader = PayloadReader::new(MessageType::HelloRequest, payload);
        let protocol_version = reader.u8("protocol_version")?;
        reader.finish()?;
        Ok(Self { protocol_version })
    }
}
