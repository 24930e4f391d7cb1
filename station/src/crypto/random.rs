//! Random padding for key blocks, drawn from the operating system's random number generator in
//! batches.
//!
//! A key block needs a few dozen random bytes of padding. One `getrandom` system call per block
//! was about a seventh of the time of a TR-31 version D wrap (0.42 s of system time in 2.96 s
//! of the `tr31_d_wrap` benchmark on a 2-core Xeon virtual machine). Each thread keeps a batch
//! of random bytes instead, hands out every byte once and zeroizes it as it goes.
//!
//! NOTE: a process that forks would copy the batch into the child, and both would hand out the
//! same padding. The station never forks without an immediate exec. Keys never come from here:
//! `SecretKey::generate` reads the operating system's generator directly.

use std::cell::RefCell;

use zeroize::{Zeroize, Zeroizing};

/// Bytes fetched per system call: the padding of about 16 key blocks.
const BATCH_LEN: usize = 512;

struct Batch {
    bytes: Zeroizing<[u8; BATCH_LEN]>,
    /// Index of the first byte not yet handed out.
    next: usize,
}

thread_local! {
    static BATCH: RefCell<Batch> = RefCell::new(Batch {
        bytes: Zeroizing::new([0u8; BATCH_LEN]),
        next: BATCH_LEN,
    });
}

/// Fills `output` with random bytes for padding. Requests longer than a batch go to the
/// operating system directly.
pub(crate) fn fill_padding(output: &mut [u8]) -> Result<(), getrandom::Error> {
    if output.len() > BATCH_LEN {
        return getrandom::fill(output);
    }
    BATCH.with(|batch| {
        let mut batch = batch.borrow_mut();
        if BATCH_LEN - batch.next < output.len() {
            getrandom::fill(batch.bytes.as_mut_slice())?;
            batch.next = 0;
        }
        let start = batch.next;
        let end = start + output.len();
        output.copy_from_slice(&batch.bytes[start..end]);
        batch.bytes[start..end].zeroize();
        batch.next = end;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_bytes_are_never_repeated() {
        // A draw that repeated the bytes of an earlier one would return an equal value. Two
        // random 16-byte values are equal with odds of 2^-128.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..4 * BATCH_LEN / 16 {
            let mut value = [0u8; 16];
            fill_padding(&mut value).unwrap();
            assert!(seen.insert(value), "a padding value came out twice");
        }
    }

    #[test]
    fn consumed_bytes_are_zeroized() {
        let mut value = [0u8; 32];
        fill_padding(&mut value).unwrap();
        BATCH.with(|batch| {
            let batch = batch.borrow();
            assert!(batch.bytes[..batch.next].iter().all(|byte| *byte == 0));
        });
    }

    #[test]
    fn long_request_bypasses_batch() {
        let mut value = vec![0u8; BATCH_LEN + 1];
        fill_padding(&mut value).unwrap();
        assert!(value.iter().any(|byte| *byte != 0));
    }
}
