//! Optional blocks of the key block header (ANSI X9.143): the short and extended length
//! forms, and the formats of well-known IDs.
//!
//! Each optional block is a 2-character ID, a 2-hex-digit length that counts the whole block,
//! and printable data. A length of `00` selects the extended form: 2 hex digits giving the
//! number of bytes of the length, then the length in twice that many hex digits.

use std::fmt::Write as _;

use super::Tr31Error;

/// One optional block: its ID and data, and the length-of-length of the extended form if the
/// block arrived in that form, so that it is written back unchanged.
///
/// ANSI X9.143 counts the length-of-length in bytes: `02` announces a length of 2 bytes, written
/// as 4 hex digits. The X9.143-2021 example block of section 8.6 starts `CT000205CC`, and psec
/// reads it the same way.
///
/// Two blocks are equal when their IDs and data are; the length form is only their encoding.
#[derive(Debug, Clone)]
pub struct OptionalBlock {
    pub(super) id: String,
    pub(super) data: String,
    pub(super) extended_length_bytes: Option<usize>,
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

    /// Appends the block in its wire form. Writing to a `String` cannot fail.
    pub(super) fn encode_into(&self, out: &mut String) {
        out.push_str(&self.id);
        match self.length_form() {
            None => {
                let _ = write!(out, "{:02X}", 4 + self.data.len());
            }
            Some(bytes) => {
                let digits = 2 * bytes;
                let total = 6 + digits + self.data.len();
                let _ = write!(out, "00{bytes:02X}{total:0digits$X}");
            }
        }
        out.push_str(&self.data);
    }

    pub(super) fn encoded_len(&self) -> usize {
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

/// Strictness of the format checks on well-known optional blocks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Strictness {
    /// Blocks the station writes: every known format is enforced.
    Export,
    /// Blocks from other systems: a malformed well-known block other than `IK` is kept as
    /// opaque text with a warning, because some issuers break the formats by habit.
    Import,
}

/// Parses one optional block starting at `start`; returns it and the position after it.
pub(super) fn parse_optional_block(
    text: &str,
    start: usize,
) -> Result<(OptionalBlock, usize), Tr31Error> {
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

pub(super) fn check_block_id(id: &str, position: usize) -> Result<(), Tr31Error> {
    if id.len() != 2 || !id.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
        return Err(Tr31Error::InvalidOptionalBlockId {
            id: id.to_owned(),
            position,
        });
    }
    Ok(())
}

pub(super) fn check_block_data(
    id: &str,
    data: &str,
    strictness: Strictness,
) -> Result<(), Tr31Error> {
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
/// formed or the ID has no fixed format. The formats are those of ANSI X9.143.
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
        "IK" => "IK contains the AES DUKPT initial key ID as 16 hex digits",
        "KS" => "KS contains a TDES DUKPT initial KSN as 16 to 20 hex digits",
        "BI" => "BI contains 00 and a 10-digit TDES key set ID, or 01 and an 8-digit AES BDK ID",
        "KC" | "KP" => {
            "KC and KP contain 00 (legacy) or 01 (CMAC) followed by the check value in hex"
        }
        "TS" => "TS contains a UTC time as YYYYMMDDhhmmss, optional fraction, then Z",
        "HM" => "HM contains the HMAC hash algorithm as 2 hex digits",
        "WP" => "WP contains version 00 and a wrapping pedigree digit 0 to 3",
        _ => {
            "CT contains a certificate format (00 X.509, 01 EMV, 02 chain) followed by the certificate"
        }
    })
}

pub(super) fn is_printable(byte: u8) -> bool {
    (0x20..=0x7E).contains(&byte)
}
