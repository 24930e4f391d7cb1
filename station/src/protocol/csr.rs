//! CSR_REQUEST (0x03, station to terminal) and CSR (0x83, terminal to station): a terminal that
//! generated its P-384 key pair on board sends a PKCS#10 certificate signing request.
//!
//! CSR_REQUEST has an empty payload. CSR's payload is `csr`: a u16 length and the DER
//! PKCS#10 request, whose subject is `serialNumber=<serial>, OU=<model>` as in HELLO.

use super::codec::{PayloadReader, PayloadWriter};
use super::{MessageType, ProtocolError};

/// The station's request for a certificate signing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsrRequest;

impl CsrRequest {
    /// Encodes the (empty) payload.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        Ok(Vec::new())
    }

    /// Decodes the payload, which must be empty.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        PayloadReader::new(MessageType::CsrRequest, payload).finish()?;
        Ok(Self)
    }
}

/// The terminal's certificate signing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr {
    /// DER PKCS#10 request.
    pub der: Vec<u8>,
}

impl Csr {
    /// Encodes the payload.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut writer = PayloadWriter::new(MessageType::Csr);
        writer.bytes_u16("csr", &self.der)?;
        Ok(writer.finish())
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut reader = PayloadReader::new(MessageType::Csr, payload);
        let der = reader.bytes_u16("csr")?.to_vec();
        reader.finish()?;
        Ok(Self { der })
    }
}
