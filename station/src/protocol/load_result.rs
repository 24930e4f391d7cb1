//! LOAD_RESULT (0x82, terminal to station): the terminal stored the key, and its check value.
//!
//! Payload: `status` u8, `kcv_method` u8, then `kcv`: a u8 length followed by the check value
//! bytes of the key as the terminal stored it. In a session authenticated by KEY_EXCHANGE the
//! terminal appends `mac`: a u8 length of 16 and the AES-CMAC that
//! [`super::handshake::SessionKeys::load_result_mac`] defines over the bytes before it.

use super::codec::{PayloadReader, PayloadWriter};
use super::handshake::TAG_LEN;
use super::{MessageType, ProtocolError};
use crate::crypto::kcv::{Kcv, KcvMethod};

/// Outcome of storing the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadStatus {
    /// `0x00`: the slot was empty and now contains the key.
    Stored,
    /// `0x01`: the slot held a key, which the new key replaced.
    Replaced,
}

impl LoadStatus {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            Self::Stored => 0x00,
            Self::Replaced => 0x01,
        }
    }

    /// Parses a wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0x00 => Some(Self::Stored),
            0x01 => Some(Self::Replaced),
            _ => None,
        }
    }

    /// Name for logs and audit events.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Replaced => "replaced",
        }
    }
}

/// Wire code of a check value method: `0x01` legacy (encrypt zeros), `0x02` CMAC.
pub fn kcv_method_code(method: KcvMethod) -> u8 {
    match method {
        KcvMethod::Legacy => 0x01,
        KcvMethod::Cmac => 0x02,
    }
}

/// Parses a check value method's wire code.
pub fn kcv_method_from_code(code: u8) -> Option<KcvMethod> {
    match code {
        0x01 => Some(KcvMethod::Legacy),
        0x02 => Some(KcvMethod::Cmac),
        _ => None,
    }
}

/// The terminal's confirmation of a LOAD_KEY.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Whether the slot was empty.
    pub status: LoadStatus,
    /// Check value of the key the terminal stored, with its method.
    pub kcv: Kcv,
    /// MAC under the session's result MAC key; present only in an authenticated session.
    pub mac: Option<[u8; TAG_LEN]>,
}

impl LoadResult {
    /// Encodes the payload.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut payload = self.authenticated_fields()?;
        if let Some(mac) = &self.mac {
            payload.push(TAG_LEN as u8);
            payload.extend_from_slice(mac);
        }
        Ok(payload)
    }

    /// Encodes the fields the MAC covers: the payload up to, not including, `mac`.
    pub fn authenticated_fields(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut writer = PayloadWriter::new(MessageType::LoadResult);
        writer.u8(self.status.code());
        writer.u8(kcv_method_code(self.kcv.method()));
        writer.bytes_u8("kcv", self.kcv.value())?;
        Ok(writer.finish())
    }

    /// Decodes the payload. The check value's length must be valid for its method.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let message = MessageType::LoadResult;
        let mut reader = PayloadReader::new(message, payload);

        let status_code = reader.u8("status")?;
        let status = LoadStatus::from_code(status_code).ok_or(ProtocolError::UndefinedValue {
            message,
            field: "status",
            value: u16::from(status_code),
        })?;

        let method_code = reader.u8("kcv_method")?;
        let method = kcv_method_from_code(method_code).ok_or(ProtocolError::UndefinedValue {
            message,
            field: "kcv_method",
            value: u16::from(method_code),
        })?;

        let value = reader.bytes_u8("kcv")?;
        let kcv = Kcv::from_hex(method, &hex::encode(value)).map_err(|error| {
            ProtocolError::InvalidField {
                message,
                field: "kcv",
                reason: error.to_string(),
            }
        })?;
        let mac = if reader.is_at_end() {
            None
        } else {
            let tag = reader.bytes_u8("mac")?;
            let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| ProtocolError::InvalidField {
                message,
                field: "mac",
                reason: format!("the MAC is {} bytes; it must be {TAG_LEN}", tag.len()),
            })?;
            Some(tag)
        };
        reader.finish()?;
        Ok(Self { status, kcv, mac })
    }
}
