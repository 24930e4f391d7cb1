//! LOAD_KEY (0x02, station to terminal): a key to store, in a TR-31 key block.
//!
//! Payload: `slot` u8, `initial_key_id` 8 bytes (AES DUKPT BDK ID then derivation ID), then
//! `key_block`: a u16 big-endian length followed by that many printable ASCII bytes.

use std::fmt;

use super::codec::{PayloadReader, PayloadWriter, TextRule};
use super::{MessageType, ProtocolError};
use crate::crypto::dukpt::aes::InitialKeyId;

/// A request to store a key in one of the terminal's key slots.
#[derive(Clone, PartialEq, Eq)]
pub struct LoadKey {
    /// Key slot on the terminal, counted from 0.
    pub slot: u8,
    /// AES DUKPT initial key ID of the key; the key block's `IK` optional block must equal it.
    pub initial_key_id: InitialKeyId,
    /// TR-31 / X9.143 key block, wrapped under the transport key the terminal shares.
    pub key_block: String,
}

impl LoadKey {
    /// Encodes the payload. The key block must be printable ASCII.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut writer = PayloadWriter::new(MessageType::LoadKey);
        writer.u8(self.slot);
        writer.array(&self.initial_key_id.to_bytes());
        writer.text_u16("key_block", &self.key_block, TextRule::PrintableAscii)?;
        Ok(writer.finish())
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut reader = PayloadReader::new(MessageType::LoadKey, payload);
        let message = Self {
            slot: reader.u8("slot")?,
            initial_key_id: InitialKeyId::from_bytes(reader.array("initial_key_id")?),
            key_block: reader.text_u16("key_block", TextRule::PrintableAscii)?,
        };
        reader.finish()?;
        Ok(message)
    }
}

// The key block is encrypted, but it is long and of no use in a log line; its 16-character
// fixed header says what it holds.
impl fmt::Debug for LoadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = self.key_block.get(..16).unwrap_or(&self.key_block);
        f.debug_struct("LoadKey")
            .field("slot", &self.slot)
            .field("initial_key_id", &self.initial_key_id.to_hex())
            .field("key_block_header", &header)
            .field("key_block_len", &self.key_block.len())
            .finish()
    }
}
