//! One frame of the terminal link: its layout, its CRC, and the exact encoding of one frame.
//!
//! ```text
//! STX 0x02 | LEN u16 big-endian | SEQ u8 | TYPE u8 | PAYLOAD (LEN bytes) | CRC u32 big-endian | ETX 0x03
//! ```
//!
//! The CRC is CRC-32/ISO-HDLC (the CRC-32 of zlib and Ethernet: polynomial 0x04C11DB7, reflected,
//! initial value and final XOR 0xFFFFFFFF, check value 0xCBF43926) over LEN, SEQ, TYPE and
//! PAYLOAD. `docs/protocol.md` describes the same layout for terminal implementers.

use crc::{CRC_32_ISO_HDLC, Crc};

/// First byte of every frame (ASCII STX).
pub const START_BYTE: u8 = 0x02;
/// Last byte of every frame (ASCII ETX).
pub const END_BYTE: u8 = 0x03;
/// Largest payload a frame may carry, in bytes.
///
/// A limit well below the 65,535 that LEN could express lets the reader reject a length read from
/// line noise at once instead of waiting for bytes that never come. A version 1 LOAD_KEY with an
/// AES-256 key block and its optional blocks is a few hundred bytes.
pub const MAX_PAYLOAD_LEN: usize = 4096;
/// Bytes a frame adds around its payload: STX, LEN (2), SEQ, TYPE, CRC (4), ETX.
pub const FRAME_OVERHEAD: usize = 10;
/// Largest encoded frame, in bytes.
pub const MAX_FRAME_LEN: usize = MAX_PAYLOAD_LEN + FRAME_OVERHEAD;

/// Offset of the CRC-covered region (LEN) in an encoded frame.
const COVERED_START: usize = 1;
/// Bytes before the payload: STX, LEN (2), SEQ, TYPE.
const HEADER_LEN: usize = 5;
const CRC_LEN: usize = 4;

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// Computes the frame CRC (CRC-32/ISO-HDLC) over `bytes`.
pub fn frame_crc(bytes: &[u8]) -> u32 {
    CRC32.checksum(bytes)
}

/// One decoded frame: a sequence number, a message type byte and the message payload.
///
/// The link layer does not interpret the type byte, so a frame carrying a message type this
/// station does not know still decodes here and is rejected one layer up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    sequence: u8,
    message_type: u8,
    payload: Vec<u8>,
}

/// Errors in encoding a frame or decoding exactly one frame from a byte slice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A caller built a payload larger than the protocol allows; this is a bug in the caller.
    #[error(
        "frame payload of {len} bytes exceeds the maximum of {max} bytes (a bug in the sender)"
    )]
    PayloadTooLarge {
        /// Payload length that was requested.
        len: usize,
        /// [`MAX_PAYLOAD_LEN`].
        max: usize,
    },
    /// Fewer bytes than the smallest frame, or fewer than the length field announces.
    #[error("frame is truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes that were given.
        available: usize,
    },
    /// The first byte is not [`START_BYTE`].
    #[error("frame starts with 0x{found:02X} instead of the start byte 0x02")]
    MissingStart {
        /// The byte found.
        found: u8,
    },
    /// The length field is larger than [`MAX_PAYLOAD_LEN`].
    #[error("frame length field announces {len} payload bytes, more than the maximum of {max}")]
    Oversized {
        /// Value of the length field.
        len: usize,
        /// [`MAX_PAYLOAD_LEN`].
        max: usize,
    },
    /// The byte after the CRC is not [`END_BYTE`].
    #[error("frame ends with 0x{found:02X} instead of the end byte 0x03")]
    MissingEnd {
        /// The byte found.
        found: u8,
    },
    /// The CRC does not match the frame's contents: the line corrupted the frame.
    #[error("frame CRC is 0x{received:08X} but the contents give 0x{computed:08X}")]
    CrcMismatch {
        /// CRC carried by the frame.
        received: u32,
        /// CRC computed over the received bytes.
        computed: u32,
    },
    /// Bytes follow a complete frame in a slice that should hold exactly one frame.
    #[error("{count} unexpected bytes follow the end of the frame")]
    TrailingBytes {
        /// Number of extra bytes.
        count: usize,
    },
}

impl Frame {
    /// Builds a frame, checking the payload length against [`MAX_PAYLOAD_LEN`].
    pub fn new(sequence: u8, message_type: u8, payload: Vec<u8>) -> Result<Self, FrameError> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(FrameError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        Ok(Self {
            sequence,
            message_type,
            payload,
        })
    }

    /// Sequence number: chosen by the station per request, echoed by the terminal in its response.
    pub fn sequence(&self) -> u8 {
        self.sequence
    }

    /// Message type byte, interpreted by the protocol layer.
    pub fn message_type(&self) -> u8 {
        self.message_type
    }

    /// Message payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Takes the payload out of the frame.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// Length of the encoded frame in bytes.
    pub fn encoded_len(&self) -> usize {
        self.payload.len() + FRAME_OVERHEAD
    }

    /// Encodes the frame for the wire.
    pub fn encode(&self) -> Vec<u8> {
        let len = u16::try_from(self.payload.len())
            .expect("Frame::new limits the payload to MAX_PAYLOAD_LEN, which fits in u16");
        let mut bytes = Vec::with_capacity(self.encoded_len());
        bytes.push(START_BYTE);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.push(self.sequence);
        bytes.push(self.message_type);
        bytes.extend_from_slice(&self.payload);
        let crc = frame_crc(&bytes[COVERED_START..]);
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes.push(END_BYTE);
        bytes
    }

    /// Decodes exactly one frame: `bytes` must hold one whole frame and nothing else.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let (frame, used) = Self::decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(FrameError::TrailingBytes {
                count: bytes.len() - used,
            });
        }
        Ok(frame)
    }

    /// Decodes the frame at the start of `bytes`, returning it and the number of bytes it used.
    pub(crate) fn decode_prefix(bytes: &[u8]) -> Result<(Self, usize), FrameError> {
        let total = Self::announced_len(bytes)?;
        if bytes.len() < total {
            return Err(FrameError::Truncated {
                needed: total,
                available: bytes.len(),
            });
        }

        let end = bytes[total - 1];
        if end != END_BYTE {
            return Err(FrameError::MissingEnd { found: end });
        }

        let crc_start = total - 1 - CRC_LEN;
        let crc_bytes: [u8; CRC_LEN] = bytes[crc_start..crc_start + CRC_LEN]
            .try_into()
            .expect("the slice is CRC_LEN bytes long by construction");
        let received = u32::from_be_bytes(crc_bytes);
        let computed = frame_crc(&bytes[COVERED_START..crc_start]);
        if received != computed {
            return Err(FrameError::CrcMismatch { received, computed });
        }

        let frame = Self {
            sequence: bytes[3],
            message_type: bytes[4],
            payload: bytes[HEADER_LEN..crc_start].to_vec(),
        };
        Ok((frame, total))
    }

    /// Reads STX and LEN and returns the total encoded length the frame announces.
    ///
    /// Needs only the first three bytes, so the reader can reject an impossible length early.
    pub(crate) fn announced_len(bytes: &[u8]) -> Result<usize, FrameError> {
        let Some(&first) = bytes.first() else {
            return Err(FrameError::Truncated {
                needed: FRAME_OVERHEAD,
                available: 0,
            });
        };
        if first != START_BYTE {
            return Err(FrameError::MissingStart { found: first });
        }
        let [_, high, low, ..] = *bytes else {
            return Err(FrameError::Truncated {
                needed: FRAME_OVERHEAD,
                available: bytes.len(),
            });
        };
        let len = usize::from(u16::from_be_bytes([high, low]));
        if len > MAX_PAYLOAD_LEN {
            return Err(FrameError::Oversized {
                len,
                max: MAX_PAYLOAD_LEN,
            });
        }
        Ok(len + FRAME_OVERHEAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_catalogue_check_value() {
        assert_eq!(frame_crc(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn hello_request_frame_encodes_byte_by_byte() {
        let frame = Frame::new(0x01, 0x01, vec![0x01]).expect("small payload");
        let bytes = frame.encode();
        let crc = frame_crc(&[0x00, 0x01, 0x01, 0x01, 0x01]).to_be_bytes();
        let mut expected = vec![0x02, 0x00, 0x01, 0x01, 0x01, 0x01];
        expected.extend_from_slice(&crc);
        expected.push(0x03);
        assert_eq!(bytes, expected);
        assert_eq!(Frame::decode(&bytes), Ok(frame));
    }

    #[test]
    fn decode_round_trips_largest_payload() {
        let frame = Frame::new(0xFF, 0x7F, vec![0xA5; MAX_PAYLOAD_LEN]).expect("at the limit");
        assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
    }

    #[test]
    fn oversized_payload_is_rejected_on_encode() {
        let error = Frame::new(1, 1, vec![0; MAX_PAYLOAD_LEN + 1]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "frame payload of 4097 bytes exceeds the maximum of 4096 bytes (a bug in the sender)"
        );
    }

    #[test]
    fn oversized_length_field_is_rejected_before_the_body() {
        let error = Frame::decode(&[START_BYTE, 0x10, 0x01]).unwrap_err();
        assert_eq!(
            error,
            FrameError::Oversized {
                len: 4097,
                max: 4096
            }
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = Frame::new(1, 2, vec![9]).unwrap().encode();
        bytes.push(0x00);
        assert_eq!(
            Frame::decode(&bytes),
            Err(FrameError::TrailingBytes { count: 1 })
        );
    }

    #[test]
    fn flipped_payload_bit_fails_the_crc() {
        let mut bytes = Frame::new(1, 2, vec![9, 9, 9]).unwrap().encode();
        bytes[6] ^= 0x01;
        assert!(matches!(
            Frame::decode(&bytes),
            Err(FrameError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn missing_end_byte_is_rejected() {
        let mut bytes = Frame::new(1, 2, vec![]).unwrap().encode();
        let last = bytes.len() - 1;
        bytes[last] = 0x04;
        assert_eq!(
            Frame::decode(&bytes),
            Err(FrameError::MissingEnd { found: 0x04 })
        );
    }

    #[test]
    fn truncated_frame_reports_needed_bytes() {
        let bytes = Frame::new(1, 2, vec![1, 2, 3]).unwrap().encode();
        assert_eq!(
            Frame::decode(&bytes[..8]),
            Err(FrameError::Truncated {
                needed: 13,
                available: 8
            })
        );
    }
}
