//! HELLO (0x81, terminal to station): the terminal's identity.
//!
//! Payload: `protocol_version` u8, then `vendor`, `model`, `serial_number` and
//! `firmware_version`, each a u8 length followed by that many printable ASCII bytes.

use super::codec::{PayloadReader, PayloadWriter, TextRule};
use super::{MessageType, ProtocolError};

/// The identity a terminal reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the terminal will speak in this session.
    pub protocol_version: u8,
    /// Manufacturer name.
    pub vendor: String,
    /// Model name.
    pub model: String,
    /// Serial number, unique per vendor and model.
    pub serial_number: String,
    /// Firmware version.
    pub firmware_version: String,
}

impl Hello {
    /// Encodes the payload. Each text field must be printable ASCII of at most 255 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut writer = PayloadWriter::new(MessageType::Hello);
        writer.u8(self.protocol_version);
        writer.text_u8("vendor", &self.vendor, TextRule::PrintableAscii)?;
        writer.text_u8("model", &self.model, TextRule::PrintableAscii)?;
        writer.text_u8(
            "serial_number",
            &self.serial_number,
            TextRule::PrintableAscii,
        )?;
        writer.text_u8(
            "firmware_version",
            &self.firmware_version,
            TextRule::PrintableAscii,
        )?;
        Ok(writer.finish())
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut reader = PayloadReader::new(MessageType::Hello, payload);
        let hello = Self {
            protocol_version: reader.u8("protocol_version")?,
            vendor: reader.text_u8("vendor", TextRule::PrintableAscii)?,
            model: reader.text_u8("model", TextRule::PrintableAscii)?,
            serial_number: reader.text_u8("serial_number", TextRule::PrintableAscii)?,
            firmware_version: reader.text_u8("firmware_version", TextRule::PrintableAscii)?,
        };
        reader.finish()?;
        Ok(hello)
    }
}
