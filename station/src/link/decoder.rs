//! Incremental frame decoding with resynchronisation after line noise.
//!
//! Bytes arrive in arbitrary pieces, and the decoder buffers them until they form a frame. Bytes
//! before a start byte are noise. A candidate frame that fails its length, end byte or CRC check
//! loses only its start byte, so the search resumes at the next byte. A start byte
//! inside noise can announce a length longer than the bytes that follow; the decoder then looks
//! for a complete, valid frame starting later in the buffer and skips to it, so a real frame is
//! never held back behind a false start.

use tracing::{debug, trace};

use super::frame::{FRAME_OVERHEAD, Frame, FrameError, MAX_FRAME_LEN, START_BYTE};

/// A frame that arrived whole but failed its CRC or end byte check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedFrame {
    /// The SEQ byte as read from the damaged frame; the damage may have changed it too.
    pub sequence: u8,
    /// The check that failed: [`FrameError::CrcMismatch`] or [`FrameError::MissingEnd`].
    pub error: FrameError,
}

/// Frame decoder state: received bytes not yet consumed, and counts of what was thrown away.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    discarded_bytes: u64,
    rejected_candidates: u64,
    damaged: Option<DamagedFrame>,
}

impl FrameDecoder {
    /// Creates an empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the line.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// True when bytes are buffered that do not yet form a frame.
    pub fn has_partial(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Bytes buffered that do not yet form a frame.
    pub fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    /// Bytes thrown away as noise or as parts of rejected frames, since creation.
    pub fn discarded_bytes(&self) -> u64 {
        self.discarded_bytes
    }

    /// Candidate frames rejected (bad length, end byte or CRC, or abandoned), since creation.
    pub fn rejected_candidates(&self) -> u64 {
        self.rejected_candidates
    }

    /// Returns the last frame that arrived whole but failed its checks since the previous call,
    /// so the receiver can ask for it again (NAK).
    pub fn take_damaged(&mut self) -> Option<DamagedFrame> {
        self.damaged.take()
    }

    /// Drops everything buffered, for example before sending a new request.
    pub fn clear(&mut self) {
        self.discard(self.buffer.len());
    }

    /// Gives up on the partial frame at the head of the buffer, because the line went quiet
    /// before it completed, and rescans the bytes after its start byte.
    pub fn abandon_partial(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        debug!(
            buffered = self.buffer.len(),
            "line went quiet inside a frame; dropping its start byte and resynchronising"
        );
        self.rejected_candidates += 1;
        self.discard(1);
    }

    /// Returns the next complete, valid frame in the buffer, or `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let Some(start) = self.buffer.iter().position(|&byte| byte == START_BYTE) else {
                if !self.buffer.is_empty() {
                    trace!(
                        bytes = self.buffer.len(),
                        "discarding noise without a start byte"
                    );
                }
                self.discard(self.buffer.len());
                return None;
            };
            if start > 0 {
                trace!(bytes = start, "discarding noise before a start byte");
                self.discard(start);
            }

            match Frame::decode_prefix(&self.buffer) {
                Ok((frame, used)) => {
                    self.buffer.drain(..used);
                    return Some(frame);
                }
                Err(FrameError::Truncated { .. }) => {
                    let later = self.find_complete_frame_after_start()?;
                    debug!(
                        skipped = later,
                        "a complete frame follows an unfinished one; skipping the false start"
                    );
                    self.rejected_candidates += 1;
                    self.discard(later);
                }
                Err(error) => {
                    debug!(%error, "rejecting candidate frame; resynchronising");
                    if matches!(
                        error,
                        FrameError::CrcMismatch { .. } | FrameError::MissingEnd { .. }
                    ) {
                        self.damaged = Some(DamagedFrame {
                            sequence: self.buffer[3],
                            error,
                        });
                    }
                    self.rejected_candidates += 1;
                    self.discard(1);
                }
            }
        }
    }

    /// Finds the offset of the first start byte after offset 0 that begins a complete, valid
    /// frame, if any.
    fn find_complete_frame_after_start(&self) -> Option<usize> {
        if self.buffer.len() < FRAME_OVERHEAD + 1 {
            return None;
        }
        let search_end = self.buffer.len().min(MAX_FRAME_LEN);
        (1..search_end)
            .filter(|&offset| self.buffer[offset] == START_BYTE)
            .find(|&offset| Frame::decode_prefix(&self.buffer[offset..]).is_ok())
    }

    fn discard(&mut self, count: usize) {
        self.buffer.drain(..count);
        self.discarded_bytes += u64::try_from(count).unwrap_or(u64::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(sequence: u8, payload: &[u8]) -> Vec<u8> {
        Frame::new(sequence, 0x02, payload.to_vec())
            .expect("small payload")
            .encode()
    }

    #[test]
    fn frame_split_into_single_bytes_decodes() {
        let bytes = encoded(7, b"split");
        let mut decoder = FrameDecoder::new();
        for (index, byte) in bytes.iter().enumerate() {
            assert_eq!(
                decoder.next_frame(),
                None,
                "frame complete early at byte {index}"
            );
            decoder.push(&[*byte]);
        }
        let frame = decoder
            .next_frame()
            .expect("frame complete after its last byte");
        assert_eq!(frame.payload(), b"split");
        assert!(!decoder.has_partial());
    }

    #[test]
    fn noise_before_frame_is_discarded() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&[0xFF, 0x00, 0x55, 0x03]);
        decoder.push(&encoded(1, b"x"));
        assert_eq!(decoder.next_frame().map(|f| f.sequence()), Some(1));
        assert_eq!(decoder.discarded_bytes(), 4);
    }

    #[test]
    fn corrupted_frame_then_good_frame_yields_good_one() {
        let mut corrupted = encoded(1, b"first");
        corrupted[7] ^= 0x80;
        let mut decoder = FrameDecoder::new();
        decoder.push(&corrupted);
        decoder.push(&encoded(2, b"second"));
        let frame = decoder.next_frame().expect("the second frame is intact");
        assert_eq!(frame.sequence(), 2);
        assert_eq!(frame.payload(), b"second");
        assert_eq!(decoder.next_frame(), None);
        let damaged = decoder
            .take_damaged()
            .expect("the damaged frame is reported");
        assert_eq!(damaged.sequence, 1);
        assert!(matches!(damaged.error, FrameError::CrcMismatch { .. }));
        assert_eq!(decoder.take_damaged(), None);
    }

    #[test]
    fn false_start_does_not_hide_frame() {
        let mut decoder = FrameDecoder::new();
        // A start byte in noise announcing 0x0800 payload bytes, then a real frame.
        decoder.push(&[START_BYTE, 0x08, 0x00, 0x11]);
        decoder.push(&encoded(3, b"real"));
        let frame = decoder.next_frame().expect("the real frame is found");
        assert_eq!(frame.sequence(), 3);
        assert_eq!(decoder.rejected_candidates(), 1);
    }

    #[test]
    fn oversized_length_is_rejected_at_once() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&[START_BYTE, 0xFF, 0xFF]);
        assert_eq!(decoder.next_frame(), None);
        assert_eq!(decoder.rejected_candidates(), 1);
        decoder.push(&encoded(4, b"ok"));
        assert_eq!(decoder.next_frame().map(|f| f.sequence()), Some(4));
    }

    #[test]
    fn abandoned_partial_frame_rescans_its_tail() {
        let mut decoder = FrameDecoder::new();
        // A false start announcing 3 payload bytes swallows the head of the real frame.
        let real = encoded(5, b"");
        decoder.push(&[START_BYTE, 0x00, 0x03]);
        decoder.push(&real[..4]);
        assert_eq!(decoder.next_frame(), None);
        decoder.abandon_partial();
        decoder.push(&real[4..]);
        assert_eq!(decoder.next_frame().map(|f| f.sequence()), Some(5));
    }

    #[test]
    fn two_frames_in_one_read_both_decode() {
        let mut decoder = FrameDecoder::new();
        let mut bytes = encoded(1, b"a");
        bytes.extend(encoded(2, b"b"));
        decoder.push(&bytes);
        assert_eq!(decoder.next_frame().map(|f| f.sequence()), Some(1));
        assert_eq!(decoder.next_frame().map(|f| f.sequence()), Some(2));
        assert_eq!(decoder.next_frame(), None);
    }
}
