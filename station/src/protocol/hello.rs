//! HELLO (0x81, terminal to station): the terminal's identity.
//!
//! Version 1 payload: `protocol_version` u8, then `vendor`, `model`, `serial_number` and
//! `firmware_version`, each a u8 length followed by that many printable ASCII bytes.
//!
//! Version 2 appends `capabilities` u8 (bit 0: ECDH P-384 key exchange, bit 1: on-board key
//! generation with CSR, other bits zero). Then comes `certificate_chain`: a u8 count, then each
//! DER certificate as a u16 length and its bytes, the terminal's own certificate first. A terminal
//! that has no certificate yet sends a count of 0.

use super::codec::{PayloadReader, PayloadWriter, TextRule};
use super::{MessageType, ProtocolError};

/// What a version 2 terminal can do, from the `capabilities` byte of its HELLO.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Bit 0: the terminal runs the KEY_EXCHANGE and KEY_CONFIRM handshake.
    pub key_exchange: bool,
    /// Bit 1: the terminal generates its key pair on board and responds to CSR_REQUEST.
    pub csr: bool,
}

impl Capabilities {
    const KEY_EXCHANGE_BIT: u8 = 0x01;
    const CSR_BIT: u8 = 0x02;

    /// The byte on the wire.
    pub fn to_byte(self) -> u8 {
        let mut byte = 0;
        if self.key_exchange {
            byte |= Self::KEY_EXCHANGE_BIT;
        }
        if self.csr {
            byte |= Self::CSR_BIT;
        }
        byte
    }

    /// Parses the byte; bits this version does not define are an error.
    pub fn from_byte(byte: u8) -> Result<Self, ProtocolError> {
        if byte & !(Self::KEY_EXCHANGE_BIT | Self::CSR_BIT) != 0 {
            return Err(ProtocolError::UndefinedValue {
                message: MessageType::Hello,
                field: "capabilities",
                value: u16::from(byte),
            });
        }
        Ok(Self {
            key_exchange: byte & Self::KEY_EXCHANGE_BIT != 0,
            csr: byte & Self::CSR_BIT != 0,
        })
    }
}

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
    /// Capabilities; all false in version 1.
    pub capabilities: Capabilities,
    /// DER certificates, the terminal's own first; empty in version 1 and before a terminal
    /// has a certificate.
    pub certificate_chain: Vec<Vec<u8>>,
}

impl Hello {
    /// A version 1 HELLO, which carries no capabilities and no certificates.
    pub fn version_1(
        vendor: &str,
        model: &str,
        serial_number: &str,
        firmware_version: &str,
    ) -> Self {
        Self {
            protocol_version: 1,
            vendor: vendor.to_owned(),
            model: model.to_owned(),
            serial_number: serial_number.to_owned(),
            firmware_version: firmware_version.to_owned(),
            capabilities: Capabilities::default(),
            certificate_chain: Vec::new(),
        }
    }

    /// Encodes the payload. Each text field must be printable ASCII of at most 255 bytes. The
    /// version 2 fields are written only when `protocol_version` is 2 or more.
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
        if self.protocol_version >= 2 {
            writer.u8(self.capabilities.to_byte());
            writer.certificate_chain("certificate_chain", &self.certificate_chain)?;
        }
        Ok(writer.finish())
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut reader = PayloadReader::new(MessageType::Hello, payload);
        let protocol_version = reader.u8("protocol_version")?;
        let vendor = reader.text_u8("vendor", TextRule::PrintableAscii)?;
        let model = reader.text_u8("model", TextRule::PrintableAscii)?;
        let serial_number = reader.text_u8("serial_number", TextRule::PrintableAscii)?;
        let firmware_version = reader.text_u8("firmware_version", TextRule::PrintableAscii)?;
        let (capabilities, certificate_chain) = if protocol_version >= 2 {
            (
                Capabilities::from_byte(reader.u8("capabilities")?)?,
                reader.certificate_chain("certificate_chain")?,
            )
        } else {
            (Capabilities::default(), Vec::new())
        };
        reader.finish()?;
        Ok(Self {
            protocol_version,
            vendor,
            model,
            serial_number,
            firmware_version,
            capabilities,
            certificate_chain,
        })
    }
}
