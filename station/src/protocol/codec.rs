//! Field encoding shared by the message types: big-endian integers, length-prefixed text and
//! bytes, and a reader that rejects truncated fields and trailing bytes.

use super::MessageType;
use super::error::ProtocolError;

/// Character set a text field accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextRule {
    /// Printable ASCII, 0x20 to 0x7E: identity fields and key blocks, which end up in logs,
    /// audit events and the database, so a device cannot smuggle control characters into them.
    PrintableAscii,
    /// UTF-8 with control characters replaced by U+FFFD on decoding, so that an ERROR message
    /// with a stray newline still delivers its code.
    LenientUtf8,
}

/// Reads the fields of one message payload in order.
pub(crate) struct PayloadReader<'a> {
    message: MessageType,
    bytes: &'a [u8],
    position: usize,
}

impl<'a> PayloadReader<'a> {
    pub(crate) fn new(message: MessageType, bytes: &'a [u8]) -> Self {
        Self {
            message,
            bytes,
            position: 0,
        }
    }

    fn take(&mut self, field: &'static str, count: usize) -> Result<&'a [u8], ProtocolError> {
        let available = self.bytes.len() - self.position;
        if count > available {
            return Err(ProtocolError::Truncated {
                message: self.message,
                field,
                needed: count,
                available,
            });
        }
        let taken = &self.bytes[self.position..self.position + count];
        self.position += count;
        Ok(taken)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, ProtocolError> {
        Ok(self.take(field, 1)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, ProtocolError> {
        let bytes = self.array::<2>(field)?;
        Ok(u16::from_be_bytes(bytes))
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], ProtocolError> {
        let bytes = self.take(field, N)?;
        Ok(bytes.try_into().expect("take returns exactly N bytes"))
    }

    /// Reads bytes prefixed by a one-byte length.
    pub(crate) fn bytes_u8(&mut self, field: &'static str) -> Result<&'a [u8], ProtocolError> {
        let len = usize::from(self.u8(field)?);
        self.take(field, len)
    }

    /// Reads bytes prefixed by a two-byte length.
    pub(crate) fn bytes_u16(&mut self, field: &'static str) -> Result<&'a [u8], ProtocolError> {
        let len = usize::from(self.u16(field)?);
        self.take(field, len)
    }

    /// Reads a certificate chain: a one-byte count, then each DER certificate prefixed by a
    /// two-byte length. An empty certificate is rejected.
    pub(crate) fn certificate_chain(
        &mut self,
        field: &'static str,
    ) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let count = self.u8(field)?;
        let mut chain = Vec::with_capacity(usize::from(count));
        for index in 0..count {
            let der = self.bytes_u16(field)?;
            if der.is_empty() {
                return Err(ProtocolError::InvalidField {
                    message: self.message,
                    field,
                    reason: format!("certificate {} of the chain is empty", index + 1),
                });
            }
            chain.push(der.to_vec());
        }
        Ok(chain)
    }

    /// True when every byte of the payload has been read.
    pub(crate) fn is_at_end(&self) -> bool {
        self.position == self.bytes.len()
    }

    /// Reads text prefixed by a one-byte length.
    pub(crate) fn text_u8(
        &mut self,
        field: &'static str,
        rule: TextRule,
    ) -> Result<String, ProtocolError> {
        let bytes = self.bytes_u8(field)?;
        decode_text(self.message, field, bytes, rule)
    }

    /// Reads text prefixed by a two-byte length.
    pub(crate) fn text_u16(
        &mut self,
        field: &'static str,
        rule: TextRule,
    ) -> Result<String, ProtocolError> {
        let len = usize::from(self.u16(field)?);
        let bytes = self.take(field, len)?;
        decode_text(self.message, field, bytes, rule)
    }

    /// Ends decoding: every byte of the payload must have been read.
    pub(crate) fn finish(self) -> Result<(), ProtocolError> {
        let count = self.bytes.len() - self.position;
        if count != 0 {
            return Err(ProtocolError::TrailingBytes {
                message: self.message,
                count,
            });
        }
        Ok(())
    }
}

fn decode_text(
    message: MessageType,
    field: &'static str,
    bytes: &[u8],
    rule: TextRule,
) -> Result<String, ProtocolError> {
    match rule {
        TextRule::PrintableAscii => {
            if let Some(position) = bytes.iter().position(|byte| !(0x20..=0x7E).contains(byte)) {
                return Err(ProtocolError::InvalidField {
                    message,
                    field,
                    reason: format!(
                        "byte 0x{:02X} at offset {position} is not printable ASCII",
                        bytes[position]
                    ),
                });
            }
            Ok(bytes.iter().map(|&byte| char::from(byte)).collect())
        }
        TextRule::LenientUtf8 => {
            let text = std::str::from_utf8(bytes).map_err(|error| ProtocolError::InvalidField {
                message,
                field,
                reason: format!("not UTF-8 ({error})"),
            })?;
            Ok(text
                .chars()
                .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
                .collect())
        }
    }
}

/// Builds one message payload field by field.
pub(crate) struct PayloadWriter {
    message: MessageType,
    bytes: Vec<u8>,
}

impl PayloadWriter {
    pub(crate) fn new(message: MessageType) -> Self {
        Self {
            message,
            bytes: Vec::new(),
        }
    }

    pub(crate) fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }

    pub(crate) fn u16(&mut self, value: u16) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn array(&mut self, value: &[u8]) {
        self.bytes.extend_from_slice(value);
    }

    /// Writes bytes prefixed by a one-byte length.
    pub(crate) fn bytes_u8(
        &mut self,
        field: &'static str,
        value: &[u8],
    ) -> Result<(), ProtocolError> {
        let len = u8::try_from(value.len()).map_err(|_| self.too_long(field, value.len(), 255))?;
        self.u8(len);
        self.array(value);
        Ok(())
    }

    /// Writes bytes prefixed by a two-byte length.
    pub(crate) fn bytes_u16(
        &mut self,
        field: &'static str,
        value: &[u8],
    ) -> Result<(), ProtocolError> {
        let len = u16::try_from(value.len())
            .map_err(|_| self.too_long(field, value.len(), usize::from(u16::MAX)))?;
        self.u16(len);
        self.array(value);
        Ok(())
    }

    /// Writes a certificate chain: a one-byte count, then each DER certificate prefixed by a
    /// two-byte length.
    pub(crate) fn certificate_chain(
        &mut self,
        field: &'static str,
        chain: &[Vec<u8>],
    ) -> Result<(), ProtocolError> {
        let count =
            u8::try_from(chain.len()).map_err(|_| self.too_long(field, chain.len(), 255))?;
        self.u8(count);
        for der in chain {
            self.bytes_u16(field, der)?;
        }
        Ok(())
    }

    /// Writes text prefixed by a one-byte length, checking it against `rule`.
    pub(crate) fn text_u8(
        &mut self,
        field: &'static str,
        value: &str,
        rule: TextRule,
    ) -> Result<(), ProtocolError> {
        check_text(self.message, field, value, rule)?;
        self.bytes_u8(field, value.as_bytes())
    }

    /// Writes text prefixed by a two-byte length, checking it against `rule`.
    pub(crate) fn text_u16(
        &mut self,
        field: &'static str,
        value: &str,
        rule: TextRule,
    ) -> Result<(), ProtocolError> {
        check_text(self.message, field, value, rule)?;
        let len = u16::try_from(value.len())
            .map_err(|_| self.too_long(field, value.len(), usize::from(u16::MAX)))?;
        self.u16(len);
        self.array(value.as_bytes());
        Ok(())
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.bytes
    }

    fn too_long(&self, field: &'static str, len: usize, max: usize) -> ProtocolError {
        ProtocolError::FieldTooLong {
            message: self.message,
            field,
            len,
            max,
        }
    }
}

/// Checks text before encoding, so this side never sends what the other side must reject.
fn check_text(
    message: MessageType,
    field: &'static str,
    value: &str,
    rule: TextRule,
) -> Result<(), ProtocolError> {
    let bad = match rule {
        TextRule::PrintableAscii => value
            .bytes()
            .position(|byte| !(0x20..=0x7E).contains(&byte)),
        TextRule::LenientUtf8 => value
            .char_indices()
            .find(|(_, c)| c.is_control())
            .map(|(i, _)| i),
    };
    match bad {
        Some(position) => Err(ProtocolError::InvalidField {
            message,
            field,
            reason: format!("the character at byte offset {position} is not allowed in this field"),
        }),
        None => Ok(()),
    }
}
