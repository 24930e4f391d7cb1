//! CERTIFICATE (0x04, station to terminal) and CERTIFICATE_STORED (0x84, terminal to station):
//! the certificate the factory CA issued for the terminal's CSR.
//!
//! CERTIFICATE's payload is `certificate_chain`: a u8 count, then each DER certificate as a u16
//! length and its bytes: the terminal's new certificate, then the factory CA's certificate, which
//! the terminal keeps as the root it checks the station's certificate against. The public key
//! of the first certificate must be the terminal's own. CERTIFICATE_STORED has an empty payload.

use super::codec::{PayloadReader, PayloadWriter};
use super::{MessageType, ProtocolError};

/// The terminal's certificate and the factory CA's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInstall {
    /// DER certificates: the terminal's, then the factory CA's.
    pub chain: Vec<Vec<u8>>,
}

impl CertificateInstall {
    /// Encodes the payload.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut writer = PayloadWriter::new(MessageType::Certificate);
        writer.certificate_chain("certificate_chain", &self.chain)?;
        Ok(writer.finish())
    }

    /// Decodes the payload; the chain must hold at least the terminal's certificate.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut reader = PayloadReader::new(MessageType::Certificate, payload);
        let chain = reader.certificate_chain("certificate_chain")?;
        reader.finish()?;
        if chain.is_empty() {
            return Err(ProtocolError::InvalidField {
                message: MessageType::Certificate,
                field: "certificate_chain",
                reason: "the chain is empty".to_owned(),
            });
        }
        Ok(Self { chain })
    }
}

/// The terminal's confirmation that it stored its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificateStored;

impl CertificateStored {
    /// Encodes the (empty) payload.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        Ok(Vec::new())
    }

    /// Decodes the payload, which must be empty.
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        PayloadReader::new(MessageType::CertificateStored, payload).finish()?;
        Ok(Self)
    }
}
