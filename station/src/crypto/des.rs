//! DES (FIPS 46-3) and TDEA with two or three keys in EDE mode (NIST SP 800-67).
//!
//! The round function uses combined S-box and P-permutation tables (SP tables), and the initial
//! and final permutations are sequences of bit swaps between the two 32-bit halves. The key
//! schedule maps key nibbles through PC-1 and 7-bit groups of C and D through PC-2 by table
//! lookup. A TDEA block runs the initial permutation once and the final permutation once,
//! because the final permutation of one DES stage cancels the initial permutation of the next.
//!
//! All tables are computed at compile time from the tables of FIPS 46-3, which are written out
//! below as the standard prints them: bit 1 is the most significant bit. The lookups are not
//! constant time, and the note at [`SP`] gives the reason the station accepts that.

use zeroize::Zeroize;

/// Initial permutation IP, FIPS 46-3: output bit i is input bit `IP[i - 1]`. The code applies it
/// as bit swaps, and the tests check those against this table.
#[cfg(test)]
const IP: [u8; 64] = [
    58, 50, 42, 34, 26, 18, 10, 2, 60, 52, 44, 36, 28, 20, 12, 4, //
    62, 54, 46, 38, 30, 22, 14, 6, 64, 56, 48, 40, 32, 24, 16, 8, //
    57, 49, 41, 33, 25, 17, 9, 1, 59, 51, 43, 35, 27, 19, 11, 3, //
    61, 53, 45, 37, 29, 21, 13, 5, 63, 55, 47, 39, 31, 23, 15, 7,
];

/// Permutation P of the cipher function f, FIPS 46-3.
const P: [u8; 32] = [
    16, 7, 20, 21, 29, 12, 28, 17, 1, 15, 23, 26, 5, 18, 31, 10, //
    2, 8, 24, 14, 32, 27, 3, 9, 19, 13, 30, 6, 22, 11, 4, 25,
];

/// Permuted choice 1, FIPS 46-3: the first 28 entries select C0, the last 28 select D0.
const PC1: [u8; 56] = [
    57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18, //
    10, 2, 59, 51, 43, 35, 27, 19, 11, 3, 60, 52, 44, 36, //
    63, 55, 47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30, 22, //
    14, 6, 61, 53, 45, 37, 29, 21, 13, 5, 28, 20, 12, 4,
];

/// Permuted choice 2, FIPS 46-3: selects the 48 bits of a round key from the 56 bits of C and D.
const PC2: [u8; 48] = [
    14, 17, 11, 24, 1, 5, 3, 28, 15, 6, 21, 10, //
    23, 19, 12, 4, 26, 8, 16, 7, 27, 20, 13, 2, //
    41, 52, 31, 37, 47, 55, 30, 40, 51, 45, 33, 48, //
    44, 49, 39, 56, 34, 53, 46, 42, 50, 36, 29, 32,
];

/// Left shifts of C and D before each of the 16 rounds, FIPS 46-3.
const SHIFTS: [u32; 16] = [1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1];

/// The S-boxes S1 to S8, FIPS 46-3: four rows of 16 entries each.
const S_BOXES: [[u8; 64]; 8] = [
    [
        14, 4, 13, 1, 2, 15, 11, 8, 3, 10, 6, 12, 5, 9, 0, 7, //
        0, 15, 7, 4, 14, 2, 13, 1, 10, 6, 12, 11, 9, 5, 3, 8, //
        4, 1, 14, 8, 13, 6, 2, 11, 15, 12, 9, 7, 3, 10, 5, 0, //
        15, 12, 8, 2, 4, 9, 1, 7, 5, 11, 3, 14, 10, 0, 6, 13,
    ],
    [
        15, 1, 8, 14, 6, 11, 3, 4, 9, 7, 2, 13, 12, 0, 5, 10, //
        3, 13, 4, 7, 15, 2, 8, 14, 12, 0, 1, 10, 6, 9, 11, 5, //
        0, 14, 7, 11, 10, 4, 13, 1, 5, 8, 12, 6, 9, 3, 2, 15, //
        13, 8, 10, 1, 3, 15, 4, 2, 11, 6, 7, 12, 0, 5, 14, 9,
    ],
    [
        10, 0, 9, 14, 6, 3, 15, 5, 1, 13, 12, 7, 11, 4, 2, 8, //
        13, 7, 0, 9, 3, 4, 6, 10, 2, 8, 5, 14, 12, 11, 15, 1, //
        13, 6, 4, 9, 8, 15, 3, 0, 11, 1, 2, 12, 5, 10, 14, 7, //
        1, 10, 13, 0, 6, 9, 8, 7, 4, 15, 14, 3, 11, 5, 2, 12,
    ],
    [
        7, 13, 14, 3, 0, 6, 9, 10, 1, 2, 8, 5, 11, 12, 4, 15, //
        13, 8, 11, 5, 6, 15, 0, 3, 4, 7, 2, 12, 1, 10, 14, 9, //
        10, 6, 9, 0, 12, 11, 7, 13, 15, 1, 3, 14, 5, 2, 8, 4, //
        3, 15, 0, 6, 10, 1, 13, 8, 9, 4, 5, 11, 12, 7, 2, 14,
    ],
    [
        2, 12, 4, 1, 7, 10, 11, 6, 8, 5, 3, 15, 13, 0, 14, 9, //
        14, 11, 2, 12, 4, 7, 13, 1, 5, 0, 15, 10, 3, 9, 8, 6, //
        4, 2, 1, 11, 10, 13, 7, 8, 15, 9, 12, 5, 6, 3, 0, 14, //
        11, 8, 12, 7, 1, 14, 2, 13, 6, 15, 0, 9, 10, 4, 5, 3,
    ],
    [
        12, 1, 10, 15, 9, 2, 6, 8, 0, 13, 3, 4, 14, 7, 5, 11, //
        10, 15, 4, 2, 7, 12, 9, 5, 6, 1, 13, 14, 0, 11, 3, 8, //
        9, 14, 15, 5, 2, 8, 12, 3, 7, 0, 4, 10, 1, 13, 11, 6, //
        4, 3, 2, 12, 9, 5, 15, 10, 11, 14, 1, 7, 6, 0, 8, 13,
    ],
    [
        4, 11, 2, 14, 15, 0, 8, 13, 3, 12, 9, 7, 5, 10, 6, 1, //
        13, 0, 11, 7, 4, 9, 1, 10, 14, 3, 5, 12, 2, 15, 8, 6, //
        1, 4, 11, 13, 12, 3, 7, 14, 10, 15, 6, 8, 0, 5, 9, 2, //
        6, 11, 13, 8, 1, 4, 10, 7, 9, 5, 0, 15, 14, 2, 3, 12,
    ],
    [
        13, 2, 8, 4, 6, 15, 11, 1, 10, 9, 3, 14, 5, 0, 12, 7, //
        1, 15, 13, 8, 10, 3, 7, 4, 12, 5, 6, 11, 0, 14, 9, 2, //
        7, 11, 4, 1, 9, 12, 14, 2, 0, 6, 10, 13, 15, 3, 5, 8, //
        2, 1, 14, 7, 4, 10, 8, 13, 15, 12, 9, 0, 3, 5, 6, 11,
    ],
];

/// Returns the bit at 1-based position `position` of a `width`-bit value, counting from the most
/// significant bit as FIPS 46-3 does.
const fn bit(value: u64, width: u32, position: u32) -> u64 {
    (value >> (width - position)) & 1
}

/// SP tables: entry `v` of table `j` is S-box `j + 1` applied to the 6-bit input `v`, placed in
/// its 4 output bits and permuted by P.
///
/// NOTE: Lookups here are indexed by key and data bits, so they leak through the cache timing
/// of the machine that runs them. This is not a constant-time implementation. The station runs
/// DES only locally, on keys it stores, and provisioning gives no remote caller a way to time it.
static SP: [[u32; 64]; 8] = sp_tables();

const fn sp_tables() -> [[u32; 64]; 8] {
    let mut tables = [[0u32; 64]; 8];
    let mut sbox = 0;
    while sbox < 8 {
        let mut input = 0;
        while input < 64 {
            // FIPS 46-3: the outer bits of the 6-bit input select the row, the inner four the
            // column.
            let row = ((input >> 4) & 2) | (input & 1);
            let column = (input >> 1) & 15;
            let output = S_BOXES[sbox][16 * row + column] as u64;
            let unpermuted = output << (28 - 4 * sbox);
            let mut permuted = 0u32;
            let mut position = 0;
            while position < 32 {
                permuted |= (bit(unpermuted, 32, P[position] as u32) as u32) << (31 - position);
                position += 1;
            }
            tables[sbox][input] = permuted;
            input += 1;
        }
        sbox += 1;
    }
    tables
}

/// PC-1 tables: entry `v` of table `n` is the nibble `v` at nibble `n` of the key (from the most
/// significant nibble) moved to its C and D bits. C is bits 55 to 28 of the result and D bits 27
/// to 0.
static PC1_TABLES: [[u64; 16]; 16] = pc1_tables();

const fn pc1_tables() -> [[u64; 16]; 16] {
    let mut tables = [[0u64; 16]; 16];
    let mut nibble = 0;
    while nibble < 16 {
        let mut value = 0;
        while value < 16 {
            let key = (value as u64) << (60 - 4 * nibble);
            let mut selected = 0u64;
            let mut position = 0;
            while position < 56 {
                selected |= bit(key, 64, PC1[position] as u32) << (55 - position);
                position += 1;
            }
            tables[nibble][value] = selected;
            value += 1;
        }
        nibble += 1;
    }
    tables
}

/// PC-2 tables: entry `v` of table `g` is the 7-bit group `v` at group `g` of C and D (from the
/// most significant group of C) moved to its round key bits. The result has the layout of
/// [`RoundKey`], with the even word in the upper 32 bits and the odd word in the lower 32.
static PC2_TABLES: [[u64; 128]; 8] = pc2_tables();

const fn pc2_tables() -> [[u64; 128]; 8] {
    let mut tables = [[0u64; 128]; 8];
    let mut group = 0;
    while group < 8 {
        let mut value = 0;
        while value < 128 {
            let cd = (value as u64) << (49 - 7 * group);
            let mut round_key = 0u64;
            let mut position = 0;
            while position < 48 {
                let key_bit = bit(cd, 56, PC2[position] as u32);
                // Round key bits 6j+1 to 6j+6 feed S-box j+1. Their place in the two words
                // matches the rotations of R in `cipher_function`.
                let sbox = position / 6;
                let shift = 26 - 8 * (sbox / 2) + (5 - position % 6);
                let word_shift = if sbox % 2 == 0 { 32 } else { 0 };
                round_key |= key_bit << (shift + word_shift);
                position += 1;
            }
            tables[group][value] = round_key;
            value += 1;
        }
        group += 1;
    }
    tables
}

/// The 16 round keys of one DES key, two words per round. The even word contains the key bits of
/// S-boxes 1, 3, 5 and 7, the odd word those of S-boxes 2, 4, 6 and 8, each 6-bit group at bit
/// 26, 18, 10 or 2. The round keys are zeroized on drop.
struct RoundKeys([u32; 32]);

/// One round key as the PC-2 tables produce it: the even word above the odd word.
type RoundKey = u64;

impl RoundKeys {
    /// Runs the key schedule of FIPS 46-3 on an 8-byte key. The parity bits are ignored.
    fn new(key: [u8; 8]) -> Self {
        let key = u64::from_be_bytes(key);
        let mut cd = 0u64;
        for (nibble, table) in PC1_TABLES.iter().enumerate() {
            cd |= table[((key >> (60 - 4 * nibble)) & 15) as usize];
        }

        const MASK_28: u32 = (1 << 28) - 1;
        let mut c = (cd >> 28) as u32;
        let mut d = (cd as u32) & MASK_28;
        let mut words = [0u32; 32];
        for (round, shift) in SHIFTS.iter().enumerate() {
            c = ((c << shift) | (c >> (28 - shift))) & MASK_28;
            d = ((d << shift) | (d >> (28 - shift))) & MASK_28;
            let round_key: RoundKey = PC2_TABLES[0][(c >> 21) as usize & 127]
                | PC2_TABLES[1][(c >> 14) as usize & 127]
                | PC2_TABLES[2][(c >> 7) as usize & 127]
                | PC2_TABLES[3][c as usize & 127]
                | PC2_TABLES[4][(d >> 21) as usize & 127]
                | PC2_TABLES[5][(d >> 14) as usize & 127]
                | PC2_TABLES[6][(d >> 7) as usize & 127]
                | PC2_TABLES[7][d as usize & 127];
            words[2 * round] = (round_key >> 32) as u32;
            words[2 * round + 1] = round_key as u32;
        }
        c.zeroize();
        d.zeroize();
        cd.zeroize();
        Self(words)
    }

    /// Runs the 16 rounds forward (encryption) on the halves after IP, and returns the halves
    /// swapped, ready for IP^-1 or the next DES stage.
    #[inline(always)]
    fn encrypt(&self, (mut left, mut right): (u32, u32)) -> (u32, u32) {
        for words in self.0.chunks_exact(4) {
            left ^= cipher_function(right, words[0], words[1]);
            right ^= cipher_function(left, words[2], words[3]);
        }
        (right, left)
    }

    /// Runs the 16 rounds with the round keys in reverse order (decryption).
    #[inline(always)]
    fn decrypt(&self, (mut left, mut right): (u32, u32)) -> (u32, u32) {
        for words in self.0.rchunks_exact(4) {
            left ^= cipher_function(right, words[2], words[3]);
            right ^= cipher_function(left, words[0], words[1]);
        }
        (right, left)
    }
}

impl Drop for RoundKeys {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The cipher function f of FIPS 46-3 on the right half `right` under one round key.
///
/// The expansion E gives S-box j+1 the bits 4j to 4j+5 of R, counted cyclically from bit 1.
/// Rotating R right by 1 puts the inputs of S-boxes 1, 3, 5 and 7 at bits 26, 18, 10 and 2, and
/// rotating it left by 3 does the same for S-boxes 2, 4, 6 and 8.
#[inline(always)]
fn cipher_function(right: u32, even_key: u32, odd_key: u32) -> u32 {
    let even = (right.rotate_right(1) ^ even_key) as usize;
    let odd = (right.rotate_left(3) ^ odd_key) as usize;
    SP[0][(even >> 26) & 63]
        | SP[2][(even >> 18) & 63]
        | SP[4][(even >> 10) & 63]
        | SP[6][(even >> 2) & 63]
        | SP[1][(odd >> 26) & 63]
        | SP[3][(odd >> 18) & 63]
        | SP[5][(odd >> 10) & 63]
        | SP[7][(odd >> 2) & 63]
}

/// Exchanges the bits of `a >> shift` selected by `mask` with the same bits of `b`.
#[inline(always)]
fn swap_bits(a: &mut u32, b: &mut u32, shift: u32, mask: u32) {
    let differing = ((*a >> shift) ^ *b) & mask;
    *b ^= differing;
    *a ^= differing << shift;
}

/// Applies the initial permutation IP and splits the block into L0 and R0.
#[inline(always)]
fn initial_permutation(block: &[u8; 8]) -> (u32, u32) {
    let mut left = u32::from_be_bytes([block[0], block[1], block[2], block[3]]);
    let mut right = u32::from_be_bytes([block[4], block[5], block[6], block[7]]);
    swap_bits(&mut left, &mut right, 4, 0x0F0F_0F0F);
    swap_bits(&mut left, &mut right, 16, 0x0000_FFFF);
    swap_bits(&mut right, &mut left, 2, 0x3333_3333);
    swap_bits(&mut right, &mut left, 8, 0x00FF_00FF);
    swap_bits(&mut left, &mut right, 1, 0x5555_5555);
    (left, right)
}

/// Applies the final permutation IP^-1 to the halves and writes the block. Each bit swap is its
/// own inverse, so this is the swaps of [`initial_permutation`] in reverse order.
#[inline(always)]
fn final_permutation((mut left, mut right): (u32, u32), block: &mut [u8; 8]) {
    swap_bits(&mut left, &mut right, 1, 0x5555_5555);
    swap_bits(&mut right, &mut left, 8, 0x00FF_00FF);
    swap_bits(&mut right, &mut left, 2, 0x3333_3333);
    swap_bits(&mut left, &mut right, 16, 0x0000_FFFF);
    swap_bits(&mut left, &mut right, 4, 0x0F0F_0F0F);
    block[..4].copy_from_slice(&left.to_be_bytes());
    block[4..].copy_from_slice(&right.to_be_bytes());
}

fn key_part(key: &[u8], index: usize) -> [u8; 8] {
    key[8 * index..8 * index + 8]
        .try_into()
        .expect("bug: a DES key part is 8 bytes")
}

/// Single DES under one 8-byte key.
pub(crate) struct Des {
    keys: RoundKeys,
}

impl Des {
    /// Schedules an 8-byte key.
    pub(crate) fn new(key: &[u8; 8]) -> Self {
        Self {
            keys: RoundKeys::new(*key),
        }
    }

    /// Encrypts one block in place.
    pub(crate) fn encrypt_block(&self, block: &mut [u8; 8]) {
        final_permutation(self.keys.encrypt(initial_permutation(block)), block);
    }

    /// Decrypts one block in place. The station only encrypts with single DES (in the TDES
    /// DUKPT non-reversible step), so only the tests decrypt.
    #[cfg(test)]
    pub(crate) fn decrypt_block(&self, block: &mut [u8; 8]) {
        final_permutation(self.keys.decrypt(initial_permutation(block)), block);
    }
}

/// TDEA in EDE mode with keys K1, K2 and K3, SP 800-67: encryption is E(K3, D(K2, E(K1, P))).
/// The 2-key form uses K1 as K3.
pub(crate) struct Tdes {
    k1: RoundKeys,
    k2: RoundKeys,
    /// `None` in the 2-key form.
    k3: Option<RoundKeys>,
}

impl Tdes {
    /// Schedules a 16-byte key (K1 then K2) or a 24-byte key (K1, K2, then K3).
    ///
    /// # Panics
    ///
    /// Panics on any other length, because callers pass bytes already checked against their
    /// algorithm.
    pub(crate) fn new(key: &[u8]) -> Self {
        assert!(
            key.len() == 16 || key.len() == 24,
            "bug: a TDES key is 16 or 24 bytes, not {}",
            key.len()
        );
        Self {
            k1: RoundKeys::new(key_part(key, 0)),
            k2: RoundKeys::new(key_part(key, 1)),
            k3: (key.len() == 24).then(|| RoundKeys::new(key_part(key, 2))),
        }
    }

    /// Encrypts one block in place.
    pub(crate) fn encrypt_block(&self, block: &mut [u8; 8]) {
        let k3 = self.k3.as_ref().unwrap_or(&self.k1);
        let halves = self.k1.encrypt(initial_permutation(block));
        let halves = self.k2.decrypt(halves);
        final_permutation(k3.encrypt(halves), block);
    }

    /// Decrypts one block in place: D(K1, E(K2, D(K3, C))).
    pub(crate) fn decrypt_block(&self, block: &mut [u8; 8]) {
        let k3 = self.k3.as_ref().unwrap_or(&self.k1);
        let halves = k3.decrypt(initial_permutation(block));
        let halves = self.k2.encrypt(halves);
        final_permutation(self.k1.decrypt(halves), block);
    }
}

#[cfg(test)]
mod tests {
    use cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
    use hex_literal::hex;
    use proptest::prelude::*;

    use super::*;

    /// Applies a FIPS 46-3 permutation table bit by bit.
    fn permute(input: u64, width: u32, table: &[u8]) -> u64 {
        table.iter().fold(0, |output, &position| {
            (output << 1) | bit(input, width, position as u32)
        })
    }

    #[test]
    fn s_box_rows_are_permutations() {
        for (index, sbox) in S_BOXES.iter().enumerate() {
            for row in sbox.chunks_exact(16) {
                let mut sorted = row.to_vec();
                sorted.sort_unstable();
                assert_eq!(sorted, (0..16).collect::<Vec<u8>>(), "S{}", index + 1);
            }
        }
    }

    #[test]
    fn bit_swaps_match_ip_table() {
        let inverse: Vec<u8> = (1..=64)
            .map(|position| IP.iter().position(|&p| p == position).unwrap() as u8 + 1)
            .collect();
        let mut state = 0x0123_4567_89AB_CDEFu64;
        for _ in 0..1000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let block = state.to_be_bytes();
            let (left, right) = initial_permutation(&block);
            let expected = permute(state, 64, &IP);
            assert_eq!((u64::from(left) << 32) | u64::from(right), expected);

            let mut output = [0u8; 8];
            final_permutation((left, right), &mut output);
            assert_eq!(u64::from_be_bytes(output), permute(expected, 64, &inverse));
            assert_eq!(output, block);
        }
    }

    /// Known-answer tests of NIST SP 800-20 (the variable plaintext and variable key tests,
    /// run as TDEA with K1 = K2 = K3, which is single DES).
    #[test]
    fn des_matches_sp800_20_known_answers() {
        let variable_plaintext = [
            (hex!("8000000000000000"), hex!("95F8A5E5DD31D900")),
            (hex!("4000000000000000"), hex!("DD7F121CA5015619")),
            (hex!("2000000000000000"), hex!("2E8653104F3834EA")),
            (hex!("0000000000000001"), hex!("166B40B44ABA4BD6")),
        ];
        let des = Des::new(&hex!("0101010101010101"));
        for (plaintext, ciphertext) in variable_plaintext {
            let mut block = plaintext;
            des.encrypt_block(&mut block);
            assert_eq!(
                block,
                ciphertext,
                "plaintext {}",
                hex::encode_upper(plaintext)
            );
            des.decrypt_block(&mut block);
            assert_eq!(block, plaintext);
        }

        let variable_key = [
            (hex!("8001010101010101"), hex!("95A8D72813DAA94D")),
            (hex!("4001010101010101"), hex!("0EEC1487DD8C26D5")),
        ];
        for (key, ciphertext) in variable_key {
            let mut block = [0u8; 8];
            Des::new(&key).encrypt_block(&mut block);
            assert_eq!(block, ciphertext, "key {}", hex::encode_upper(key));
        }
    }

    /// The TDEA ECB example of NIST SP 800-67 Rev. 2, appendix B.
    #[test]
    fn tdes3_matches_sp800_67_example() {
        let tdes = Tdes::new(&hex!("0123456789ABCDEF 23456789ABCDEF01 456789ABCDEF0123"));
        let plaintext = *b"The qufck brown fox jump";
        let expected = hex!("A826FD8CE53B855F CCE21C8112256FE6 68D5C05DD9B6B900");
        let mut data = plaintext;
        for block in data.chunks_exact_mut(8) {
            tdes.encrypt_block(block.try_into().unwrap());
        }
        assert_eq!(data, expected);
        for block in data.chunks_exact_mut(8) {
            tdes.decrypt_block(block.try_into().unwrap());
        }
        assert_eq!(data, plaintext);
    }

    proptest! {
        #[test]
        fn des_matches_des_crate(key: [u8; 8], block: [u8; 8]) {
            let reference = des::Des::new_from_slice(&key).unwrap();
            let ours = Des::new(&key);
            let mut expected = block.into();
            reference.encrypt_block(&mut expected);
            let mut actual = block;
            ours.encrypt_block(&mut actual);
            prop_assert_eq!(actual.as_slice(), expected.as_slice());

            let mut expected = block.into();
            reference.decrypt_block(&mut expected);
            let mut actual = block;
            ours.decrypt_block(&mut actual);
            prop_assert_eq!(actual.as_slice(), expected.as_slice());
        }

        #[test]
        fn tdes2_matches_des_crate(key: [u8; 16], block: [u8; 8]) {
            let reference = des::TdesEde2::new_from_slice(&key).unwrap();
            let ours = Tdes::new(&key);
            let mut expected = block.into();
            reference.encrypt_block(&mut expected);
            let mut actual = block;
            ours.encrypt_block(&mut actual);
            prop_assert_eq!(actual.as_slice(), expected.as_slice());

            let mut expected = block.into();
            reference.decrypt_block(&mut expected);
            let mut actual = block;
            ours.decrypt_block(&mut actual);
            prop_assert_eq!(actual.as_slice(), expected.as_slice());
        }

        #[test]
        fn tdes3_matches_des_crate(key: [u8; 24], block: [u8; 8]) {
            let reference = des::TdesEde3::new_from_slice(&key).unwrap();
            let ours = Tdes::new(&key);
            let mut expected = block.into();
            reference.encrypt_block(&mut expected);
            let mut actual = block;
            ours.encrypt_block(&mut actual);
            prop_assert_eq!(actual.as_slice(), expected.as_slice());

            let mut expected = block.into();
            reference.decrypt_block(&mut expected);
            let mut actual = block;
            ours.decrypt_block(&mut actual);
            prop_assert_eq!(actual.as_slice(), expected.as_slice());
        }
    }
}
