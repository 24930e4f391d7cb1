//! The key block header, ANSI X9.143-2022 section 6.2 (fixed 16-character header) and 6.3
//! (optional blocks).
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
//! Each optional block is a 2-character ID, a 2-hex-digit length that counts the whole block,
//! and printable data. A length of `00` selects the extended form: 2 hex digits giving the
//! number of bytes of the length, then the length in twice that many hex digits.

use std::fmt;
use std::str::FromStr;

use super::Tr31Error;
use crate::crypto::KeyAlgorithm;

macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $field:literal {
            $( $(#[$variant_meta:meta])* $variant:ident = $code:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$variant_meta])* $variant, )*
        }

        impl $name {
            /// Every value, in the order of the standard's table.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// Returns the code as it appears in the header.
            pub fn code_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }

            /// Parses a header code.
            pub fn from_code_str(code: &str) -> Result<Self, Tr31Error> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|value| value.code_str() == code)
                    .ok_or_else(|| Tr31Error::UnknownCode {
                        field: $field,
                        code: code.to_owned(),
                    })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.code_str())
            }
        }
    };
}

code_enum! {
    /// Key block version ID, X9.143-2022 table 1 and ISO 20038.
    KeyBlockVersion, "version" {
        /// TDES key variant binding (deprecated).
        A = "A",
        /// TDES key derivation binding.
        B = "B",
        /// TDES key variant binding.
        C = "C",
        /// AES key derivation binding.
        D = "D",
        /// ISO 20038 AES key block.
        E = "E",
    }
}

impl KeyBlockVersion {
    /// The version ID as a character.
    pub fn code(self) -> char {
        self.code_str()
            .chars()
            .next()
            .expect("version codes are one character")
    }
}

code_enum! {
    /// Key usage, X9.143-2022 table 2.
    KeyUsage, "key usage" {
        /// `B0`: base derivation key (BDK).
        Bdk = "B0",
        /// `B1`: initial DUKPT key (IPEK or AES DUKPT initial key).
        InitialDukptKey = "B1",
        /// `B2`: base key variant key.
        BaseKeyVariantKey = "B2",
        /// `B3`: key derivation key (non-X9.24).
        KeyDerivationKey = "B3",
        /// `C0`: card verification key.
        CardVerificationKey = "C0",
        /// `D0`: symmetric key for data encryption.
        DataEncryption = "D0",
        /// `D1`: asymmetric key for data encryption.
        AsymmetricDataEncryption = "D1",
        /// `D2`: data encryption key for decimalization tables.
        DecimalizationTable = "D2",
        /// `D3`: data encryption key for sensitive data.
        SensitiveDataEncryption = "D3",
        /// `E0`: EMV/chip issuer master key for application cryptograms.
        EmvApplicationCryptograms = "E0",
        /// `E1`: EMV/chip issuer master key for secure messaging confidentiality.
        EmvSecureMessagingConfidentiality = "E1",
        /// `E2`: EMV/chip issuer master key for secure messaging integrity.
        EmvSecureMessagingIntegrity = "E2",
        /// `E3`: EMV/chip issuer master key for data authentication codes.
        EmvDataAuthenticationCode = "E3",
        /// `E4`: EMV/chip issuer master key for dynamic numbers.
        EmvDynamicNumbers = "E4",
        /// `E5`: EMV/chip issuer master key for card personalization.
        EmvCardPersonalization = "E5",
        /// `E6`: EMV/chip issuer master key, other.
        EmvOther = "E6",
        /// `I0`: initialization vector.
        InitializationVector = "I0",
        /// `K0`: key encryption or wrapping key (KEK).
        KeyEncryptionKey = "K0",
        /// `K1`: TR-31 key block protection key (KBPK).
        KeyBlockProtectionKey = "K1",
        /// `K2`: TR-34 asymmetric key.
        Tr34AsymmetricKey = "K2",
        /// `K3`: asymmetric key for key agreement or key wrapping.
        AsymmetricKeyAgreement = "K3",
        /// `K4`: ISO 20038 key block protection key.
        Iso20038KeyBlockProtectionKey = "K4",
        /// `M0`: ISO 16609 MAC algorithm 1 (TDES).
        MacIso16609 = "M0",
        /// `M1`: ISO 9797-1 MAC algorithm 1.
        MacIso9797Algorithm1 = "M1",
        /// `M2`: ISO 9797-1 MAC algorithm 2.
        MacIso9797Algorithm2 = "M2",
        /// `M3`: ISO 9797-1 MAC algorithm 3.
        MacIso9797Algorithm3 = "M3",
        /// `M4`: ISO 9797-1 MAC algorithm 4.
        MacIso9797Algorithm4 = "M4",
        /// `M5`: ISO 9797-1:1999 MAC algorithm 5.
        MacIso9797Algorithm5 = "M5",
        /// `M6`: ISO 9797-1:2011 MAC algorithm 5 (CMAC).
        MacCmac = "M6",
        /// `M7`: HMAC.
        MacHmac = "M7",
        /// `M8`: ISO 9797-1:2011 MAC algorithm 6.
        MacIso9797Algorithm6 = "M8",
        /// `P0`: PIN encryption.
        PinEncryption = "P0",
        /// `P1`: PIN generation.
        PinGeneration = "P1",
        /// `S0`: asymmetric key pair for digital signatures.
        Signature = "S0",
        /// `S1`: asymmetric key pair, CA key.
        CertificateAuthority = "S1",
        /// `S2`: asymmetric key pair, non-X9.24 key.
        AsymmetricOther = "S2",
        /// `V0`: PIN verification key, other algorithm.
        PinVerificationOther = "V0",
        /// `V1`: PIN verification key, IBM 3624.
        PinVerificationIbm3624 = "V1",
        /// `V2`: PIN verification key, Visa PVV.
        PinVerificationVisaPvv = "V2",
        /// `V3`: PIN verification key, X9.132 algorithm 1.
        PinVerificationX9132Algorithm1 = "V3",
        /// `V4`: PIN verification key, X9.132 algorithm 2.
        PinVerificationX9132Algorithm2 = "V4",
    }
}

code_enum! {
    /// Algorithm of the wrapped key, X9.143-2022 table 3.
    KeyBlockAlgorithm, "algorithm" {
        /// `A`: AES.
        Aes = "A",
        /// `D`: single DES.
        Des = "D",
        /// `E`: elliptic curve.
        EllipticCurve = "E",
        /// `H`: HMAC.
        Hmac = "H",
        /// `R`: RSA.
        Rsa = "R",
        /// `S`: DSA.
        Dsa = "S",
        /// `T`: triple DES.
        Tdes = "T",
    }
}

impl KeyBlockAlgorithm {
    /// Returns the header algorithm for a symmetric key algorithm.
    pub fn for_key(algorithm: KeyAlgorithm) -> Self {
        if algorithm.is_aes() {
            Self::Aes
        } else {
            Self::Tdes
        }
    }
}

code_enum! {
    /// Mode of use, X9.143-2022 table 4.
    ModeOfUse, "mode of use" {
        /// `B`: encrypt/wrap and decrypt/unwrap.
        EncryptDecrypt = "B",
        /// `C`: generate and verify (MAC).
        GenerateVerify = "C",
        /// `D`: decrypt/unwrap only.
        DecryptOnly = "D",
        /// `E`: encrypt/wrap only.
        EncryptOnly = "E",
        /// `G`: generate only.
        GenerateOnly = "G",
        /// `N`: no special restrictions.
        NoRestrictions = "N",
        /// `S`: signature only.
        SignatureOnly = "S",
        /// `T`: sign and decrypt.
        SignDecrypt = "T",
        /// `V`: verify only.
        VerifyOnly = "V",
        /// `X`: derive other keys.
        Derive = "X",
        /// `Y`: create key variants.
        CreateVariants = "Y",
    }
}

code_enum! {
    /// Exportability, X9.143-2022 table 6.
    Exportability, "exportability" {
        /// `E`: exportable under a KEK in a form meeting X9.24.
        Exportable = "E",
        /// `N`: not exportable.
        NonExportable = "N",
        /// `S`: sensitive; exportable under a KEK in a form not necessarily meeting X9.24.
        Sensitive = "S",
    }
}

code_enum! {
    /// Key context, X9.143-2022 section 6.2 (the first reserved character in older versions).
    KeyContext, "key context" {
        /// `0`: determined by the wrapping key.
        Unspecified = "0",
        /// `1`: storage context only.
        Storage = "1",
        /// `2`: key exchange context only.
        Exchange = "2",
    }
}

/// Key version number: two letters or digits; `00` means the key has no version and a leading
/// `c` marks a key component (X9.143-2022 table 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyVersionNumber([u8; 2]);

impl KeyVersionNumber {
    /// The version number of a key without a version, `00`.
    pub const NONE: Self = Self(*b"00");

    /// Parses two letters or digits.
    pub fn new(text: &str) -> Result<Self, Tr31Error> {
        let bytes = text.as_bytes();
        if bytes.len() != 2 || !bytes.iter().all(u8::is_ascii_alphanumeric) {
            return Err(Tr31Error::InvalidKeyVersion {
                text: text.to_owned(),
            });
        }
        Ok(Self([bytes[0], bytes[1]]))
    }

    /// Returns the two characters.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("checked to be ASCII when built")
    }
}

impl fmt::Display for KeyVersionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One optional block: its ID and data, and the length-of-length of the extended form if the
/// block arrived in that form, so that it is written back unchanged.
///
/// ANSI X9.143-2022 counts the length-of-length in bytes: `02` announces a length of 2 bytes,
/// written as 4 hex digits (its worked example in section 8.6 has `CT000205CC`).
///
/// Two blocks are equal when their IDs and data are; the length form is only their encoding.
#[derive(Debug, Clone)]
pub struct OptionalBlock {
    id: String,
    data: String,
    extended_length_bytes: Option<usize>,
}

impl OptionalBlock {
    /// Returns the 2-character ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Returns the data, without ID and length.
    pub fn data(&self) -> &str {
        &self.data
    }

    /// Appends the block in its wire form.
    fn encode_into(&self, out: &mut String) {
        out.push_str(&self.id);
        match self.length_form() {
            None => out.push_str(&format!("{:02X}", 4 + self.data.len())),
            Some(bytes) => {
                let digits = 2 * bytes;
                let total = 6 + digits + self.data.len();
                out.push_str(&format!("00{bytes:02X}{total:0digits$X}"));
            }
        }
        out.push_str(&self.data);
    }

    fn encoded_len(&self) -> usize {
        match self.length_form() {
            None => 4 + self.data.len(),
            Some(bytes) => 6 + 2 * bytes + self.data.len(),
        }
    }

    /// `None` for the short form, or the number of length bytes of the extended form: the
    /// form the block arrived in, else the short form when the length fits in one byte.
    fn length_form(&self) -> Option<usize> {
        match self.extended_length_bytes {
            Some(bytes) => Some(bytes),
            None if 4 + self.data.len() <= 0xFF => None,
            None => Some(2),
        }
    }
}

impl PartialEq for OptionalBlock {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.data == other.data
    }
}

impl Eq for OptionalBlock {}

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
pub(crate) const MAX_BLOCK_LEN: usize = 9999;

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
        if len > MAX_BLOCK_LEN {
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
        let count = self.optional_blocks.len() + usize::from(padding.is_some());
        let mut out = String::with_capacity(self.text_len() + 8);
        out.push(self.version.code());
        out.push_str(&format!("{block_len:04}"));
        out.push_str(self.key_usage.code_str());
        out.push_str(self.algorithm.code_str());
        out.push_str(self.mode_of_use.code_str());
        out.push_str(self.key_version.as_str());
        out.push_str(self.exportability.code_str());
        out.push_str(&format!("{count:02}"));
        out.push_str(self.key_context.code_str());
        out.push('0');
        for block in &self.optional_blocks {
            block.encode_into(&mut out);
        }
        if let Some(padding) = padding {
            OptionalBlock {
                id: "PB".to_owned(),
                data: padding.to_owned(),
                extended_length_bytes: None,
            }
            .encode_into(&mut out);
        }
        out
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

/// Strictness of the format checks on well-known optional blocks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// Blocks the station writes: every known format is enforced.
    Export,
    /// Blocks from other systems: a malformed well-known block other than `IK` is kept as
    /// opaque text with a warning, because some issuers break the formats by habit.
    Import,
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
    if let Some(position) = text.bytes().position(|byte| !is_printable(byte)) {
        return Err(Tr31Error::NotPrintable { position });
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

/// Parses one optional block starting at `start`; returns it and the position after it.
fn parse_optional_block(text: &str, start: usize) -> Result<(OptionalBlock, usize), Tr31Error> {
    let truncated = |id: &str| Tr31Error::OptionalBlockTruncated {
        id: id.to_owned(),
        position: start,
    };
    let id = text.get(start..start + 2).ok_or_else(|| truncated(""))?;
    check_block_id(id, start)?;
    let short = text
        .get(start + 2..start + 4)
        .ok_or_else(|| truncated(id))?;
    let short_len = parse_hex_len(id, short, start + 2)?;

    let (total_len, data_start, extended_length_bytes) = if short_len != 0 {
        (short_len, start + 4, None)
    } else {
        // Extended form: `00`, the number of length bytes, then the length in hex digits.
        let bytes_text = text
            .get(start + 4..start + 6)
            .ok_or_else(|| truncated(id))?;
        let bytes = parse_hex_len(id, bytes_text, start + 4)?;
        if bytes == 0 || bytes > 4 {
            return Err(Tr31Error::InvalidOptionalBlockLength {
                id: id.to_owned(),
                text: bytes_text.to_owned(),
                position: start + 4,
            });
        }
        let digits = 2 * bytes;
        let len_text = text
            .get(start + 6..start + 6 + digits)
            .ok_or_else(|| truncated(id))?;
        let total_len = parse_hex_len(id, len_text, start + 6)?;
        (total_len, start + 6 + digits, Some(bytes))
    };

    let data_len = total_len.checked_sub(data_start - start).ok_or_else(|| {
        Tr31Error::InvalidOptionalBlockLength {
            id: id.to_owned(),
            text: format!("{total_len:X}"),
            position: start + 2,
        }
    })?;
    let end = data_start + data_len;
    let data = text.get(data_start..end).ok_or_else(|| truncated(id))?;
    Ok((
        OptionalBlock {
            id: id.to_owned(),
            data: data.to_owned(),
            extended_length_bytes,
        },
        end,
    ))
}

fn parse_hex_len(id: &str, text: &str, position: usize) -> Result<usize, Tr31Error> {
    let invalid = || Tr31Error::InvalidOptionalBlockLength {
        id: id.to_owned(),
        text: text.to_owned(),
        position,
    };
    if !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    usize::from_str_radix(text, 16).map_err(|_| invalid())
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

fn check_block_id(id: &str, position: usize) -> Result<(), Tr31Error> {
    if id.len() != 2 || !id.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
        return Err(Tr31Error::InvalidOptionalBlockId {
            id: id.to_owned(),
            position,
        });
    }
    Ok(())
}

fn check_block_data(id: &str, data: &str, strictness: Strictness) -> Result<(), Tr31Error> {
    let Some(reason) = block_format_problem(id, data) else {
        return Ok(());
    };
    // The station needs a well-formed IK to derive keys, so it is strict on import too.
    if strictness == Strictness::Export || id == "IK" {
        return Err(Tr31Error::InvalidOptionalBlockData {
            id: id.to_owned(),
            data: data.to_owned(),
            reason,
        });
    }
    tracing::warn!(
        id,
        data,
        reason,
        "optional block breaks its format; kept as opaque text"
    );
    Ok(())
}

/// Returns what is wrong with the data of a well-known optional block, or `None` if it is well
/// formed or the ID has no fixed format. The formats are those of ANSI X9.143-2022.
fn block_format_problem(id: &str, data: &str) -> Option<&'static str> {
    let is_hex = |text: &str| text.bytes().all(|byte| byte.is_ascii_hexdigit());
    let is_digits = |text: &str| text.bytes().all(|byte| byte.is_ascii_digit());
    let valid = match id {
        "IK" => data.len() == 16 && is_hex(data),
        "KS" => (16..=20).contains(&data.len()) && is_hex(data),
        "BI" => match data.get(..2) {
            Some("00") => data.len() == 12 && is_hex(&data[2..]),
            Some("01") => data.len() == 10 && is_hex(&data[2..]),
            _ => false,
        },
        "KC" | "KP" => {
            data.len() >= 4
                && data.len().is_multiple_of(2)
                && matches!(data.get(..2), Some("00" | "01"))
                && is_hex(&data[2..])
        }
        "TS" => {
            let body = data.strip_suffix('Z').unwrap_or("");
            let (seconds, fraction) = body.split_once('.').unwrap_or((body, "0"));
            seconds.len() == 14 && is_digits(seconds) && !fraction.is_empty() && is_digits(fraction)
        }
        "HM" => data.len() == 2 && is_hex(data),
        "WP" => {
            data.len() == 3 && data.starts_with("00") && matches!(&data[2..], "0" | "1" | "2" | "3")
        }
        "CT" => data.len() > 2 && matches!(data.get(..2), Some("00" | "01" | "02")),
        _ => true,
    };
    if valid {
        return None;
    }
    Some(match id {
        "IK" => "IK holds the AES DUKPT initial key ID as 16 hex digits",
        "KS" => "KS holds a TDES DUKPT initial KSN as 16 to 20 hex digits",
        "BI" => "BI holds 00 and a 10-digit TDES key set ID, or 01 and an 8-digit AES BDK ID",
        "KC" | "KP" => "KC and KP hold 00 (legacy) or 01 (CMAC) followed by the check value in hex",
        "TS" => "TS holds a UTC time as YYYYMMDDhhmmss, optional fraction, then Z",
        "HM" => "HM holds the HMAC hash algorithm as 2 hex digits",
        "WP" => "WP holds version 00 and a wrapping pedigree digit 0 to 3",
        _ => {
            "CT holds a certificate format (00 X.509, 01 EMV, 02 chain) followed by the certificate"
        }
    })
}

fn is_printable(byte: u8) -> bool {
    (0x20..=0x7E).contains(&byte)
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
