//! The key block header of ANSI X9.143 and TR-31: the fixed 16-character part and the optional
//! blocks.
//!
//! | position | field |
//! | --- | --- |
//! | 0 | version ID |
//! | 1-4 | key block length, 4 decimal digits |
//! | 5-6 | key usage |
//! | 7 | algorithm |
//! | 8 | mode of use |
//! | 9-10 | key version number |
//! | 11 | exportability |
//! | 12-13 | number of optional blocks, 2 decimal digits |
//! | 14 | key context (reserved `0` before X9.143) |
//! | 15 | reserved, `0` |
//!
//! Optional blocks follow the fixed part; [`super::optional`] parses and checks them.

use std::fmt;
use std::str::FromStr;

use super::Tr31Error;
use super::codes::{
    Exportability, KeyBlockAlgorithm, KeyBlockVersion, KeyContext, KeyUsage, KeyVersionNumber,
    ModeOfUse,
};
use super::optional::{
    OptionalBlock, Strictness, check_block_data, check_block_id, is_printable, parse_optional_block,
};
use crate::crypto::KeyAlgorithm;

/// A key block header: the fixed fields and the optional blocks, without the padding block.
///
/// `Display` writes the header text with the length field `0000` and without a `PB` block;
/// `wrap` fills in both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBlockHeader {
    version: KeyBlockVersion,
    key_usage: KeyUsage,
    algorithm: KeyBlockAlgorithm,
    mode_of_use: ModeOfUse,
    key_version: KeyVersionNumber,
    exportability: Exportability,
    key_context: KeyContext,
    optional_blocks: Vec<OptionalBlock>,
}

/// The length of the fixed part of the header.
pub(crate) const FIXED_HEADER_LEN: usize = 16;

/// The largest key block the 4-digit length field can describe.
pub(crate) const MAX_KEY_BLOCK_LEN: usize = 9999;

/// A header parsed from the front of a key block, with the facts `unwrap` checks against.
pub(crate) struct ParsedHeader {
    pub(crate) header: KeyBlockHeader,
    /// Declared length of the whole key block.
    pub(crate) declared_len: usize,
    /// Length of the header text, including any padding block.
    pub(crate) header_len: usize,
}

impl KeyBlockHeader {
    /// Builds a header with no key version (`00`), key context `0` and no optional blocks.
    pub fn new(
        version: KeyBlockVersion,
        key_usage: KeyUsage,
        algorithm: KeyBlockAlgorithm,
        mode_of_use: ModeOfUse,
        exportability: Exportability,
    ) -> Self {
        Self {
            version,
            key_usage,
            algorithm,
            mode_of_use,
            key_version: KeyVersionNumber::NONE,
            exportability,
            key_context: KeyContext::Unspecified,
            optional_blocks: Vec::new(),
        }
    }

    /// Returns the version ID.
    pub fn version(&self) -> KeyBlockVersion {
        self.version
    }

    /// Returns the key usage.
    pub fn key_usage(&self) -> KeyUsage {
        self.key_usage
    }

    /// Returns the algorithm of the wrapped key.
    pub fn algorithm(&self) -> KeyBlockAlgorithm {
        self.algorithm
    }

    /// Returns the mode of use.
    pub fn mode_of_use(&self) -> ModeOfUse {
        self.mode_of_use
    }

    /// Returns the key version number.
    pub fn key_version(&self) -> KeyVersionNumber {
        self.key_version
    }

    /// Returns the exportability.
    pub fn exportability(&self) -> Exportability {
        self.exportability
    }

    /// Returns the key context.
    pub fn key_context(&self) -> KeyContext {
        self.key_context
    }

    /// Sets the version ID.
    pub fn set_version(&mut self, version: KeyBlockVersion) {
        self.version = version;
    }

    /// Sets the key version number.
    pub fn set_key_version(&mut self, key_version: KeyVersionNumber) {
        self.key_version = key_version;
    }

    /// Sets the key context.
    pub fn set_key_context(&mut self, key_context: KeyContext) {
        self.key_context = key_context;
    }

    /// Returns the optional blocks in header order, without the padding block.
    pub fn optional_blocks(&self) -> &[OptionalBlock] {
        &self.optional_blocks
    }

    /// Returns the data of the optional block with `id`, if present.
    pub fn optional_block(&self, id: &str) -> Option<&str> {
        self.optional_blocks
            .iter()
            .find(|block| block.id == id)
            .map(|block| block.data.as_str())
    }

    /// Appends an optional block after checking its ID and data.
    ///
    /// Well-known IDs (`IK`, `KS`, `BI`, `KC`, `KP`, `TS`, `HM`, `WP`, `CT`) must match their
    /// X9.143 format. Other IDs, including numeric proprietary ones, take any printable data.
    pub fn add_optional_block(&mut self, id: &str, data: &str) -> Result<(), Tr31Error> {
        check_block_id(id, 0)?;
        if id == "PB" {
            return Err(Tr31Error::PaddingBlockNotAllowed);
        }
        if self.optional_block(id).is_some() {
            return Err(Tr31Error::DuplicateOptionalBlock { id: id.to_owned() });
        }
        if let Some(position) = data.bytes().position(|byte| !is_printable(byte)) {
            return Err(Tr31Error::NotPrintable { position });
        }
        check_block_data(id, data, Strictness::Export)?;
        if self.optional_blocks.len() >= 98 {
            return Err(Tr31Error::TooManyOptionalBlocks {
                count: self.optional_blocks.len() + 1,
            });
        }

        let block = OptionalBlock {
            id: id.to_owned(),
            data: data.to_owned(),
            extended_length_bytes: None,
        };
        let len = self.text_len() + block.encoded_len();
        if len > MAX_KEY_BLOCK_LEN {
            return Err(Tr31Error::BlockTooLong { len });
        }
        self.optional_blocks.push(block);
        Ok(())
    }

    /// Removes the optional block with `id`, returning its data.
    pub fn remove_optional_block(&mut self, id: &str) -> Option<String> {
        let index = self
            .optional_blocks
            .iter()
            .position(|block| block.id == id)?;
        Some(self.optional_blocks.remove(index).data)
    }

    /// Checks that the header's algorithm matches the key being wrapped.
    pub(crate) fn check_key(&self, key: KeyAlgorithm) -> Result<(), Tr31Error> {
        if KeyBlockAlgorithm::for_key(key) != self.algorithm {
            return Err(Tr31Error::KeyAlgorithmMismatch {
                header: self.algorithm,
                key,
            });
        }
        Ok(())
    }

    /// Writes the header text with the given length field and optional padding block.
    pub(crate) fn encode(&self, block_len: usize, padding: Option<&str>) -> String {
        let mut out = String::with_capacity(self.text_len() + 8);
        self.encode_into(block_len, padding, &mut out);
        out
    }

    /// Appends the header text with the given length field and optional padding block to `out`.
    pub(crate) fn encode_into(&self, block_len: usize, padding: Option<&str>, out: &mut String) {
        let count = self.optional_blocks.len() + usize::from(padding.is_some());
        out.push(self.version.code());
        push_decimal(out, block_len, 4);
        out.push_str(self.key_usage.code_str());
        out.push_str(self.algorithm.code_str());
        out.push_str(self.mode_of_use.code_str());
        out.push_str(self.key_version.as_str());
        out.push_str(self.exportability.code_str());
        push_decimal(out, count, 2);
        out.push_str(self.key_context.code_str());
        out.push('0');
        for block in &self.optional_blocks {
            block.encode_into(out);
        }
        if let Some(padding) = padding {
            OptionalBlock {
                id: "PB".to_owned(),
                data: padding.to_owned(),
                extended_length_bytes: None,
            }
            .encode_into(out);
        }
    }

    /// Length of the header text without a padding block.
    pub(crate) fn text_len(&self) -> usize {
        FIXED_HEADER_LEN
            + self
                .optional_blocks
                .iter()
                .map(OptionalBlock::encoded_len)
                .sum::<usize>()
    }
}

impl fmt::Display for KeyBlockHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode(0, None))
    }
}

impl FromStr for KeyBlockHeader {
    type Err = Tr31Error;

    /// Parses header text such as `D0000B1AX00N0000`, with its optional blocks and nothing
    /// after them. The length field is not checked against anything; a `PB` block is dropped.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parsed = parse_header(text, Strictness::Export)?;
        if parsed.header_len != text.len() {
            return Err(Tr31Error::TrailingText {
                position: parsed.header_len,
            });
        }
        Ok(parsed.header)
    }
}

/// Parses the header at the front of a whole key block, checking everything that does not need
/// the KBPK.
pub(crate) fn parse_block_header(block: &str) -> Result<ParsedHeader, Tr31Error> {
    let parsed = parse_header(block, Strictness::Import)?;
    if parsed.declared_len != block.len() {
        return Err(Tr31Error::LengthMismatch {
            declared: parsed.declared_len,
            actual: block.len(),
        });
    }
    Ok(parsed)
}

fn parse_header(text: &str, strictness: Strictness) -> Result<ParsedHeader, Tr31Error> {
    // The check without an early exit runs over whole vectors; the position is searched only
    // when the check fails.
    if !text
        .bytes()
        .fold(true, |all, byte| all & is_printable(byte))
    {
        let position = text.bytes().position(|byte| !is_printable(byte));
        return Err(Tr31Error::NotPrintable {
            position: position.expect("a byte failed the check"),
        });
    }
    if text.len() < FIXED_HEADER_LEN {
        return Err(Tr31Error::HeaderTooShort { len: text.len() });
    }
    // Every byte is printable ASCII from here on, so slicing at any index is a char boundary.
    let version = match KeyBlockVersion::from_code_str(&text[0..1]) {
        Ok(version) => version,
        Err(_) => {
            return Err(Tr31Error::UnknownVersion {
                found: char::from(text.as_bytes()[0]),
            });
        }
    };
    let declared_len = parse_decimal(text, 1, 4, "length field")?;
    let key_usage = KeyUsage::from_code_str(&text[5..7])?;
    let algorithm = KeyBlockAlgorithm::from_code_str(&text[7..8])?;
    let mode_of_use = ModeOfUse::from_code_str(&text[8..9])?;
    let key_version = KeyVersionNumber::new(&text[9..11])?;
    let exportability = Exportability::from_code_str(&text[11..12])?;
    let block_count = parse_decimal(text, 12, 2, "optional block count")?;
    let key_context = KeyContext::from_code_str(&text[14..15])?;
    let reserved = char::from(text.as_bytes()[15]);
    if reserved != '0' {
        return Err(Tr31Error::ReservedNotZero { found: reserved });
    }

    let mut header = KeyBlockHeader {
        version,
        key_usage,
        algorithm,
        mode_of_use,
        key_version,
        exportability,
        key_context,
        optional_blocks: Vec::with_capacity(block_count),
    };
    let mut position = FIXED_HEADER_LEN;
    let mut seen_padding = false;
    for _ in 0..block_count {
        if seen_padding {
            return Err(Tr31Error::PaddingBlockNotLast);
        }
        let (block, end) = parse_optional_block(text, position)?;
        if block.id == "PB" {
            seen_padding = true;
        } else {
            if header.optional_block(&block.id).is_some() {
                return Err(Tr31Error::DuplicateOptionalBlock { id: block.id });
            }
            check_block_data(&block.id, &block.data, strictness)?;
            header.optional_blocks.push(block);
        }
        position = end;
    }

    Ok(ParsedHeader {
        header,
        declared_len,
        header_len: position,
    })
}

/// Appends `value` as exactly `digits` decimal digits. Callers check the range: a key block
/// length is at most 9999 and an optional block count at most 99.
fn push_decimal(out: &mut String, value: usize, digits: u32) {
    debug_assert!(
        value < 10usize.pow(digits),
        "bug: {value} has more than {digits} digits"
    );
    for position in (0..digits).rev() {
        let digit = (value / 10usize.pow(position)) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

fn parse_decimal(
    text: &str,
    start: usize,
    len: usize,
    field: &'static str,
) -> Result<usize, Tr31Error> {
    let digits = &text[start..start + len];
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(Tr31Error::NotDecimal {
            field,
            text: digits.to_owned(),
            position: start,
        });
    }
    Ok(digits.parse().expect("checked to be decimal digits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_round_trips() {
        let header: KeyBlockHeader = "D0000B1AX00N0000".parse().expect("valid header");
        assert_eq!(header.version(), KeyBlockVersion::D);
        assert_eq!(header.key_usage(), KeyUsage::InitialDukptKey);
        assert_eq!(header.algorithm(), KeyBlockAlgorithm::Aes);
        assert_eq!(header.mode_of_use(), ModeOfUse::Derive);
        assert_eq!(header.exportability(), Exportability::NonExportable);
        assert_eq!(header.to_string(), "D0000B1AX00N0000");
    }

    #[test]
    fn optional_blocks_parse_and_encode() {
        let text = "D0000B1AX00N0100IK141234567890123456XYZ";
        let error = text.parse::<KeyBlockHeader>().unwrap_err();
        assert_eq!(error, Tr31Error::TrailingText { position: 36 });

        let mut header: KeyBlockHeader = "D0000B1AX00N0000".parse().unwrap();
        header.add_optional_block("IK", "1234567890123456").unwrap();
        header.add_optional_block("KC", "01ABCDEF").unwrap();
        assert_eq!(
            header.to_string(),
            "D0000B1AX00N0200IK141234567890123456KC0C01ABCDEF"
        );
        let reparsed: KeyBlockHeader = header.to_string().parse().unwrap();
        assert_eq!(reparsed, header);
        assert_eq!(reparsed.optional_block("IK"), Some("1234567890123456"));
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                "X0000B1AX00N0000",
                "key block version 'X' is not supported; use A, B, C, D or E",
            ),
            (
                "D00A0B1AX00N0000",
                "key block length field \"00A0\" at position 1 is not decimal digits",
            ),
            (
                "D0000Z9AX00N0000",
                "key block key usage \"Z9\" is not a known value; see ANSI X9.143 for valid codes",
            ),
            (
                "D0000B1AX00N0001",
                "key block reserved field is '1'; it must be '0'",
            ),
            (
                "D0000B1AX00N01",
                "key block header is 14 characters long; it needs at least 16",
            ),
        ];
        for (text, message) in cases {
            let error = text.parse::<KeyBlockHeader>().unwrap_err();
            assert_eq!(error.to_string(), message, "{text}");
        }
    }

    #[test]
    fn malformed_optional_blocks_are_named() {
        let cases = [
            (
                "D0000B1AX00N0200PB0800001000ABCD",
                Tr31Error::PaddingBlockNotLast,
            ),
            (
                "D0000B1AX00N0200TS1320261204201510ZTS13",
                Tr31Error::OptionalBlockTruncated {
                    id: "TS".into(),
                    position: 35,
                },
            ),
            (
                "D0000B1AX00N02001006ab1004",
                Tr31Error::DuplicateOptionalBlock { id: "10".into() },
            ),
            (
                "D0000B1AX00N0100CT0000",
                Tr31Error::InvalidOptionalBlockLength {
                    id: "CT".into(),
                    text: "00".into(),
                    position: 20,
                },
            ),
            (
                "D0000B1AX00N0100CT03",
                Tr31Error::InvalidOptionalBlockLength {
                    id: "CT".into(),
                    text: "3".into(),
                    position: 18,
                },
            ),
            (
                "D0000B1AX00N01001",
                Tr31Error::OptionalBlockTruncated {
                    id: "".into(),
                    position: 16,
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<KeyBlockHeader>(), Err(expected), "{text}");
        }
    }

    #[test]
    fn proprietary_and_lowercase_lengths_parse() {
        let header: KeyBlockHeader = "D0000B1AX00N010010 0aabcdef"
            .replace(' ', "")
            .parse()
            .unwrap();
        assert_eq!(header.optional_block("10"), Some("abcdef"));
        // The length is written back in uppercase hex.
        assert_eq!(header.to_string(), "D0000B1AX00N0100100Aabcdef");
    }
}
