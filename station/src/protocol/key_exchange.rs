//! KEY_EXCHANGE (0x05, station to terminal, and 0x85, terminal to station): the ephemeral
//! P-384 keys, nonces and the terminal's signature and key confirmation.
//!
//! Request payload: `station_nonce` 32 bytes, `station_ephemeral_key` 97 bytes (uncompressed
//! SEC1 point), `station_certificate_chain` (u8 count, then each DER certificate as a u16 length
//! and its bytes: the station's certificate, then the factory CA's).
//!
//! Response payload: `terminal_nonce` 32 bytes, `terminal_ephemeral_key` 97 bytes,
//! `terminal_signature` (u8 length, DER ECDSA signature over the transcript) and
//! `terminal_confirmation` 16 bytes. See [`super::handshake`] for what they cover.

use super::codec::{PayloadReader, PayloadWriter};
use super::handshake::{EPHEMERAL_KEY_LEN, NONCE_LEN, TAG_LEN};
use super::{MessageType, ProtocolError};

/// The station's half of the key exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExchangeRequest {
    /// Fresh random nonce of the station.
    pub station_nonce: [u8; NONCE_LEN],
    /// The station's ephemeral public key.
    pub station_ephemeral_key: [u8; EPHEMERAL_KEY_LEN],
    /// The station's certificate, then the factory CA's certificate, in DER.
    pub station_certificate_chain: Vec<Vec<u8>>,
}

impl KeyExchangeRequest {
    /// Encodes the payload.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut writer = PayloadWriter::new(MessageType::KeyExchange);
        writer.array(&self.station_nonce);
        writer.array(&self.station_ephemeral_key);
        writer.certificate_chain("station_certificate_chain", &self.station_certificate_chain)?;
        Ok(writer.finish())
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut reader = PayloadReader::new(MessageType::KeyExchange, payload);
        let message = Self {
            station_nonce: reader.array("station_nonce")?,
            station_ephemeral_key: reader.array("station_ephemeral_key")?,
            station_certificate_chain: reader.certificate_chain("station_certificate_chain")?,
        };
        reader.finish()?;
        Ok(message)
    }
}

/// The terminal's half of the key exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExchangeResponse {
    /// Fresh random nonce of the terminal.
    pub terminal_nonce: [u8; NONCE_LEN],
    /// The terminal's ephemeral public key.
    pub terminal_ephemeral_key: [u8; EPHEMERAL_KEY_LEN],
    /// DER ECDSA P-384 signature by the terminal's certificate key over the transcript.
    pub terminal_signature: Vec<u8>,
    /// The terminal's key confirmation tag.
    pub terminal_confirmation: [u8; TAG_LEN],
}

impl KeyExchangeResponse {
    /// Encodes the payload.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut writer = PayloadWriter::new(MessageType::KeyExchangeResponse);
        writer.array(&self.terminal_nonce);
        writer.array(&self.terminal_ephemeral_key);
        writer.bytes_u8("terminal_signature", &self.terminal_signature)?;
        writer.array(&self.terminal_confirmation);
        Ok(writer.finish())
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut reader = PayloadReader::new(MessageType::KeyExchangeResponse, payload);
        let message = Self {
            terminal_nonce: reader.array("terminal_nonce")?,
            terminal_ephemeral_key: reader.array("terminal_ephemeral_key")?,
            terminal_signature: reader.bytes_u8("terminal_signature")?.to_vec(),
            terminal_confirmation: reader.array("terminal_confirmation")?,
        };
        reader.finish()?;
        Ok(message)
    }
}
