//! Errors in encoding and decoding protocol messages.

use super::MessageType;
use crate::link::FrameError;

/// A message that could not be encoded or decoded.
///
/// When the station decodes, the terminal sent the bad bytes; when the simulator decodes, the
/// station did. Encoding errors are bugs in the sender, because every message type checks its
/// fields before they reach the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame's message type byte is not one protocol versions 1 and 2 define.
    #[error("message type 0x{type_byte:02X} is not defined by protocol versions 1 and 2")]
    UnknownMessageType {
        /// The type byte received.
        type_byte: u8,
    },
    /// The payload ends inside a field.
    #[error(
        "{message} message is truncated: field {field} needs {needed} bytes but only {available} remain"
    )]
    Truncated {
        /// Message being decoded.
        message: MessageType,
        /// Field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the payload.
        available: usize,
    },
    /// Bytes follow the last field of the message.
    #[error("{message} message has {count} unexpected bytes after its last field")]
    TrailingBytes {
        /// Message being decoded.
        message: MessageType,
        /// Number of extra bytes.
        count: usize,
    },
    /// A field contains a value its rules do not allow.
    #[error("{message} message field {field} is invalid: {reason}")]
    InvalidField {
        /// Message being encoded or decoded.
        message: MessageType,
        /// Field at fault.
        field: &'static str,
        /// Reason, without repeating the text.
        reason: String,
    },
    /// A field contains a code that the protocol does not define.
    #[error("{message} message field {field} has undefined value 0x{value:02X}")]
    UndefinedValue {
        /// Message being decoded.
        message: MessageType,
        /// Field at fault.
        field: &'static str,
        /// Value received.
        value: u16,
    },
    /// A field is longer than its length prefix can express.
    #[error("{message} message field {field} is {len} bytes long; the maximum is {max}")]
    FieldTooLong {
        /// Message being encoded.
        message: MessageType,
        /// Field at fault.
        field: &'static str,
        /// Actual length.
        len: usize,
        /// Maximum length.
        max: usize,
    },
    /// The encoded message does not fit in one frame.
    #[error("{message} message does not fit in a frame: {source}")]
    Frame {
        /// Message being encoded.
        message: MessageType,
        /// The framing error.
        #[source]
        source: FrameError,
    },
}
