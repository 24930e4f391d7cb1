//! ERROR (0xFF, terminal to station): the terminal could not carry out a request.
//!
//! Payload: `code` u16 big-endian, then `text`: a u16 big-endian length followed by that many
//! bytes of UTF-8. Control characters in the text are replaced by U+FFFD when decoded, so that
//! the code always reaches the station.

use std::fmt;

use super::codec::{PayloadReader, PayloadWriter, TextRule};
use super::{MessageType, ProtocolError};

/// Error codes a terminal reports. Codes this station does not know are kept as
/// [`ErrorCode::Other`], so the operator still sees the number the device sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `0x0001`: a request frame arrived whole but its payload does not decode.
    MalformedMessage,
    /// `0x0002`: the terminal does not implement the request's message type.
    UnsupportedMessageType,
    /// `0x0003`: the terminal does not speak the protocol version the station offered.
    UnsupportedProtocolVersion,
    /// `0x0100`: the key block's syntax is invalid.
    KeyBlockInvalid,
    /// `0x0101`: the key block's MAC does not verify under the terminal's transport key. Either
    /// the block was altered or the station wrapped it under another transport key.
    KeyBlockMacInvalid,
    /// `0x0102`: the key block's usage is not `B1` (initial DUKPT key).
    KeyUsageNotAllowed,
    /// `0x0103`: the key block has no `IK` optional block, or its value differs from the
    /// message's initial key ID.
    InitialKeyIdMismatch,
    /// `0x0104`: the key's algorithm or length is not one the terminal supports.
    KeyAlgorithmUnsupported,
    /// `0x0105`: the slot number is beyond the terminal's key slots.
    SlotInvalid,
    /// `0x0106`: the terminal failed to write its secure storage.
    StorageFailed,
    /// `0x0107`: every key slot's storage is full; the terminal can store no more keys.
    StorageFull,
    /// `0x0200`: the station's certificate chain does not validate against the terminal's root.
    CertificateInvalid,
    /// `0x0201`: the station's transcript signature does not verify.
    SignatureInvalid,
    /// `0x0202`: the station's key confirmation tag does not verify.
    KeyConfirmationFailed,
    /// `0x0203`: the request needs a completed key exchange, and there is none.
    NoSession,
    /// `0x0204`: the terminal has no on-board key pair to certify.
    KeyPairUnavailable,
    /// `0x0205`: the certificate sent in CERTIFICATE does not certify the terminal's own key.
    CertificateMismatch,
    /// `0x0FFF`: the terminal failed internally while handling the request.
    InternalError,
    /// A code that protocol version 1 does not define.
    Other(u16),
}

impl ErrorCode {
    /// Wire code.
    pub fn code(self) -> u16 {
        match self {
            Self::MalformedMessage => 0x0001,
            Self::UnsupportedMessageType => 0x0002,
            Self::UnsupportedProtocolVersion => 0x0003,
            Self::KeyBlockInvalid => 0x0100,
            Self::KeyBlockMacInvalid => 0x0101,
            Self::KeyUsageNotAllowed => 0x0102,
            Self::InitialKeyIdMismatch => 0x0103,
            Self::KeyAlgorithmUnsupported => 0x0104,
            Self::SlotInvalid => 0x0105,
            Self::StorageFailed => 0x0106,
            Self::StorageFull => 0x0107,
            Self::CertificateInvalid => 0x0200,
            Self::SignatureInvalid => 0x0201,
            Self::KeyConfirmationFailed => 0x0202,
            Self::NoSession => 0x0203,
            Self::KeyPairUnavailable => 0x0204,
            Self::CertificateMismatch => 0x0205,
            Self::InternalError => 0x0FFF,
            Self::Other(code) => code,
        }
    }

    /// Maps a wire code to its meaning; undefined codes become [`ErrorCode::Other`].
    pub fn from_code(code: u16) -> Self {
        match code {
            0x0001 => Self::MalformedMessage,
            0x0002 => Self::UnsupportedMessageType,
            0x0003 => Self::UnsupportedProtocolVersion,
            0x0100 => Self::KeyBlockInvalid,
            0x0101 => Self::KeyBlockMacInvalid,
            0x0102 => Self::KeyUsageNotAllowed,
            0x0103 => Self::InitialKeyIdMismatch,
            0x0104 => Self::KeyAlgorithmUnsupported,
            0x0105 => Self::SlotInvalid,
            0x0106 => Self::StorageFailed,
            0x0107 => Self::StorageFull,
            0x0200 => Self::CertificateInvalid,
            0x0201 => Self::SignatureInvalid,
            0x0202 => Self::KeyConfirmationFailed,
            0x0203 => Self::NoSession,
            0x0204 => Self::KeyPairUnavailable,
            0x0205 => Self::CertificateMismatch,
            0x0FFF => Self::InternalError,
            other => Self::Other(other),
        }
    }

    /// Short name for logs and audit events.
    pub fn name(self) -> &'static str {
        match self {
            Self::MalformedMessage => "malformed message",
            Self::UnsupportedMessageType => "unsupported message type",
            Self::UnsupportedProtocolVersion => "unsupported protocol version",
            Self::KeyBlockInvalid => "key block invalid",
            Self::KeyBlockMacInvalid => "key block MAC invalid",
            Self::KeyUsageNotAllowed => "key usage not allowed",
            Self::InitialKeyIdMismatch => "initial key ID mismatch",
            Self::KeyAlgorithmUnsupported => "key algorithm unsupported",
            Self::SlotInvalid => "slot invalid",
            Self::StorageFailed => "storage failed",
            Self::StorageFull => "storage full",
            Self::CertificateInvalid => "station certificate invalid",
            Self::SignatureInvalid => "station signature invalid",
            Self::KeyConfirmationFailed => "key confirmation failed",
            Self::NoSession => "no key exchange session",
            Self::KeyPairUnavailable => "key pair unavailable",
            Self::CertificateMismatch => "certificate does not match the key pair",
            Self::InternalError => "internal error",
            Self::Other(_) => "undefined error code",
        }
    }

    /// Returns the operator's next step for this error.
    pub fn remedy(self) -> &'static str {
        match self {
            Self::KeyBlockMacInvalid => {
                "the terminal's transport key differs from the one the station wrapped under; \
                 load the matching transport key into the station or the terminal"
            }
            Self::StorageFull => {
                "the terminal's key storage is full; erase it by the maker's procedure before \
                 loading it again"
            }
            Self::CertificateInvalid | Self::SignatureInvalid => {
                "the terminal does not trust this station's certificate; check that the terminal \
                 holds this factory's CA certificate and that the station certificate is current"
            }
            Self::KeyConfirmationFailed => {
                "the key exchange was altered on the line or one side is faulty; retry, and set \
                 the terminal aside if it fails again"
            }
            Self::StorageFailed | Self::InternalError | Self::Other(_) => {
                "the terminal is faulty or runs unknown firmware; set it aside for service"
            }
            Self::SlotInvalid | Self::KeyAlgorithmUnsupported => {
                "the station's profile for this terminal model does not match the terminal; \
                 check the slot and key type configured for the model"
            }
            _ => "the station and the terminal disagree on the protocol; report it with the log",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04X} ({})", self.code(), self.name())
    }
}

/// The terminal's report that a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMessage {
    /// Error code.
    pub code: ErrorCode,
    /// The terminal's description, for people.
    pub text: String,
}

impl ErrorMessage {
    /// Encodes the payload. The text must contain no control characters.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut writer = PayloadWriter::new(MessageType::Error);
        writer.u16(self.code.code());
        writer.text_u16("text", &self.text, TextRule::LenientUtf8)?;
        Ok(writer.finish())
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut reader = PayloadReader::new(MessageType::Error, payload);
        let message = Self {
            code: ErrorCode::from_code(reader.u16("code")?),
            text: reader.text_u16("text", TextRule::LenientUtf8)?,
        };
        reader.finish()?;
        Ok(message)
    }
}
