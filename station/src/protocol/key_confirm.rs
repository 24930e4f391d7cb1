//! KEY_CONFIRM (0x06, station to terminal) and KEY_CONFIRMED (0x86, terminal to station): the
//! station's signature and key confirmation, and the terminal's acceptance.
//!
//! KEY_CONFIRM payload: `station_signature` (u8 length, DER ECDSA signature over the transcript)
//! and `station_confirmation` 16 bytes. KEY_CONFIRMED has an empty payload: the terminal checked
//! both and will accept LOAD_KEY under the session's KBPK.

use super::codec::{PayloadReader, PayloadWriter};
use super::handshake::TAG_LEN;
use super::{MessageType, ProtocolError};

/// The station's signature and key confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConfirm {
    /// DER ECDSA P-384 signature by the station's certificate key over the transcript.
    pub station_signature: Vec<u8>,
    /// The station's key confirmation tag.
    pub station_confirmation: [u8; TAG_LEN],
}

impl KeyConfirm {
    /// Encodes the payload.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut writer = PayloadWriter::new(MessageType::KeyConfirm);
        writer.bytes_u8("station_signature", &self.station_signature)?;
        writer.array(&self.station_confirmation);
        Ok(writer.finish())
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut reader = PayloadReader::new(MessageType::KeyConfirm, payload);
        let message = Self {
            station_signature: reader.bytes_u8("station_signature")?.to_vec(),
            station_confirmation: reader.array("station_confirmation")?,
        };
        reader.finish()?;
        Ok(message)
    }
}

/// The terminal's acceptance of the station's signature and key confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyConfirmed;

impl KeyConfirmed {
    /// Encodes the (empty) payload.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        Ok(Vec::new())
    }

    /// Decodes the payload, which must be empty.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        PayloadReader::new(MessageType::KeyConfirmed, payload).finish()?;
        Ok(Self)
    }
}
