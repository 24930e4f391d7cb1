//! Key block protection of every version: how the KBPK yields the encryption key (KBEK) and
//! authentication key (KBAK), how the payload is encrypted and how the MAC binds it to the
//! header. ANSI X9.143 and ISO 20038:2017.
//!
//! The payload is always the key length in bits (2 bytes), the key, and random padding.
//!
//! | version | KBPK | KBEK and KBAK | encryption | MAC |
//! | --- | --- | --- | --- | --- |
//! | A, C | TDES | KBPK XOR `45` / `4D` in every byte | TDES-CBC, IV = first 8 header characters | TDES CBC-MAC over header and ciphertext, 4 bytes |
//! | B | TDES | TDES-CMAC counter-mode KDF | TDES-CBC, IV = MAC | TDES-CMAC over header and clear payload, 8 bytes |
//! | D | AES | AES-CMAC counter-mode KDF | AES-CBC, IV = MAC | AES-CMAC over header and clear payload, 16 bytes |
//! | E | AES | AES-CMAC KDF, KBEK usage `0002` | AES-CTR, initial counter = MAC | as D |
//!
//! The KDF (NIST SP 800-108 counter mode) runs one CMAC per cipher block of key. Its input is 8
//! bytes: counter, key usage (`0000` KBEK for CBC, `0002` KBEK for CTR, `0001` KBAK), separator
//! `00`, algorithm of the KBPK (`0000` 2-key TDES, `0001` 3-key TDES, `0002` AES-128, `0003`
//! AES-192, `0004` AES-256) and its length in bits.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::header::{MAX_KEY_BLOCK_LEN, ParsedHeader};
use super::{KeyBlockHeader, KeyBlockVersion, LengthMasking, Tr31Error, key_algorithm_for};
use crate::crypto::block_cipher::{BlockCipher, CmacKey, MAX_BLOCK_LEN};
use crate::crypto::random;
use crate::crypto::{KeyAlgorithm, SecretKey};

/// The protection parameters of one key block version.
#[derive(Clone, Copy)]
struct Method {
    version: KeyBlockVersion,
    /// True for AES KBPKs (D, E), false for TDES (A, B, C).
    aes: bool,
    /// The payload and header are padded to a multiple of this many bytes.
    block_len: usize,
    mac_len: usize,
    keys: KeyDerivation,
    mode: Mode,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyDerivation {
    /// KBEK = KBPK XOR `45..`, KBAK = KBPK XOR `4D..`.
    Variant,
    /// CMAC counter-mode KDF with the given KBEK usage indicator.
    Cmac { encryption_usage: u16 },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Encrypt, then CBC-MAC the header and hex ciphertext (versions A and C).
    VariantCbc,
    /// CMAC the clear payload, then CBC-encrypt with the MAC as IV (B and D).
    MacThenCbc,
    /// CMAC the clear payload, then CTR-encrypt with the MAC as initial counter (E).
    MacThenCtr,
}

impl Method {
    fn of(version: KeyBlockVersion) -> Self {
        let variant = Self {
            version,
            aes: false,
            block_len: 8,
            mac_len: 4,
            keys: KeyDerivation::Variant,
            mode: Mode::VariantCbc,
        };
        match version {
            KeyBlockVersion::A | KeyBlockVersion::C => variant,
            KeyBlockVersion::B => Self {
                mac_len: 8,
                keys: KeyDerivation::Cmac {
                    encryption_usage: 0x0000,
                },
                mode: Mode::MacThenCbc,
                ..variant
            },
            KeyBlockVersion::D => Self {
                aes: true,
                block_len: 16,
                mac_len: 16,
                keys: KeyDerivation::Cmac {
                    encryption_usage: 0x0000,
                },
                mode: Mode::MacThenCbc,
                ..variant
            },
            // NOTE: ISO 20038 version E is checked against its published example block only.
            // CTR needs no padding, so neither the payload nor the header is padded to blocks.
            KeyBlockVersion::E => Self {
                aes: true,
                block_len: 1,
                mac_len: 16,
                keys: KeyDerivation::Cmac {
                    encryption_usage: 0x0002,
                },
                mode: Mode::MacThenCtr,
                ..variant
            },
        }
    }

    /// Checks that the KBPK's family fits the version.
    fn check_kbpk(&self, kbpk: Kbpk<'_>) -> Result<(), Tr31Error> {
        check_kbpk_algorithm(self.version, kbpk.algorithm())
    }
}

/// Checks that a KBPK of `algorithm` fits `version`: TDES for A, B and C, AES for D and E.
pub(super) fn check_kbpk_algorithm(
    version: KeyBlockVersion,
    algorithm: KeyAlgorithm,
) -> Result<(), Tr31Error> {
    let aes = Method::of(version).aes;
    if algorithm.is_aes() == aes {
        return Ok(());
    }
    Err(Tr31Error::KbpkMismatch {
        version: version.code(),
        expected: if aes { "an AES" } else { "a TDES" },
        kbpk: algorithm,
    })
}

/// The key block protection key: clear in station memory, or kept elsewhere (for example in an HSM)
/// with only its CMAC available. The second form supports the CMAC-derived versions B, D and E.
#[derive(Clone, Copy)]
pub(super) enum Kbpk<'a> {
    Clear(&'a SecretKey),
    External(&'a dyn super::ExternalKbpk),
}

impl Kbpk<'_> {
    fn algorithm(&self) -> KeyAlgorithm {
        match self {
            Self::Clear(key) => key.algorithm(),
            Self::External(key) => key.algorithm(),
        }
    }
}

/// The derived keys of one key block, scheduled: the encryption key (KBEK) and the
/// authentication key (KBAK). Both zeroize on drop.
struct BlockKeys {
    encryption: BlockCipher,
    authentication: Authentication,
}

/// The KBAK, scheduled for the MAC of its version.
enum Authentication {
    /// TDES CBC-MAC (versions A and C).
    CbcMac(BlockCipher),
    /// CMAC (versions B, D and E).
    Cmac(CmacKey),
}

/// What the KBEK will be used for, so that an AES KBEK is scheduled for decryption only when
/// a CBC block is unwrapped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Wrap,
    Unwrap,
}

pub(super) fn wrap(
    kbpk: Kbpk<'_>,
    header: &KeyBlockHeader,
    key: &SecretKey,
    masking: LengthMasking,
) -> Result<String, Tr31Error> {
    let method = Method::of(header.version());
    method.check_kbpk(kbpk)?;

    let key_len = key.expose().len();
    let masked_len = match masking {
        LengthMasking::MaxForAlgorithm if key.algorithm().is_aes() => key_len.max(32),
        LengthMasking::MaxForAlgorithm => key_len.max(24),
        LengthMasking::Off => key_len,
    };
    let payload_len = (2 + masked_len).div_ceil(method.block_len) * method.block_len;
    let mut filler = Zeroizing::new(vec![0u8; payload_len - 2 - key_len]);
    random::fill_padding(&mut filler).map_err(|error| Tr31Error::Random(error.to_string()))?;
    let padding = padding_block(header.text_len(), method.block_len)?;
    assemble(kbpk, header, key, &filler, padding.as_deref())
}

/// Builds the key block from fixed random parts: `filler` pads the payload after the key and
/// `padding` is the data of the `PB` block, if the header needs one.
fn assemble(
    kbpk: Kbpk<'_>,
    header: &KeyBlockHeader,
    key: &SecretKey,
    filler: &[u8],
    padding: Option<&str>,
) -> Result<String, Tr31Error> {
    let method = Method::of(header.version());
    method.check_kbpk(kbpk)?;
    let keys = derive_keys(kbpk, method, Direction::Wrap)?;

    let key_len = key.expose().len();
    let payload_len = 2 + key_len + filler.len();
    debug_assert_eq!(
        payload_len % method.block_len,
        0,
        "filler completes the last block"
    );
    let mut payload = Zeroizing::new(Vec::with_capacity(payload_len));
    let bits = u16::try_from(key_len * 8).expect("key lengths are at most 256 bits");
    payload.extend_from_slice(&bits.to_be_bytes());
    payload.extend_from_slice(key.expose());
    payload.extend_from_slice(filler);

    let header_len = header.text_len() + padding.map_or(0, |data| 4 + data.len());
    let block_len = header_len + 2 * payload_len + 2 * method.mac_len;
    if block_len > MAX_KEY_BLOCK_LEN {
        return Err(Tr31Error::BlockTooLong { len: block_len });
    }
    // The block is written once into a string of its final length.
    let mut block = String::with_capacity(block_len);
    header.encode_into(block_len, padding, &mut block);
    debug_assert_eq!(block.len(), header_len);

    let mut mac = [0u8; MAX_BLOCK_LEN];
    let mac = &mut mac[..method.mac_len];
    match method.mode {
        Mode::VariantCbc => {
            keys.encryption
                .cbc_encrypt(&block.as_bytes()[..8], &mut payload);
            keys.mac(&block, &payload, mac);
        }
        Mode::MacThenCbc => {
            keys.mac(&block, &payload, mac);
            keys.encryption.cbc_encrypt(mac, &mut payload);
        }
        Mode::MacThenCtr => {
            keys.mac(&block, &payload, mac);
            keys.encryption.ctr_apply(mac, &mut payload);
        }
    }

    // The hex digits are appended as bytes, which skips the per-character UTF-8 encoding of
    // `String::push`, and the whole block is ASCII.
    let mut block = block.into_bytes();
    push_hex_upper(&mut block, &payload);
    push_hex_upper(&mut block, mac);
    debug_assert_eq!(block.len(), block_len);
    Ok(String::from_utf8(block).expect("a key block is ASCII"))
}

pub(super) fn unwrap(
    kbpk: Kbpk<'_>,
    block: &str,
    parsed: ParsedHeader,
) -> Result<(KeyBlockHeader, SecretKey), Tr31Error> {
    let method = Method::of(parsed.header.version());
    method.check_kbpk(kbpk)?;
    if !parsed.header_len.is_multiple_of(method.block_len) {
        return Err(Tr31Error::HeaderNotBlockAligned {
            len: parsed.header_len,
            block_len: method.block_len,
        });
    }

    // The parser checked that the whole block is printable ASCII, so these slices are on char
    // boundaries.
    let header_text = &block[..parsed.header_len];
    let body = &block[parsed.header_len..];
    let mac_hex_len = 2 * method.mac_len;
    // The smallest payload holds the 2-byte length field, padded to whole blocks.
    let min_data_hex = 2 * 2usize.div_ceil(method.block_len) * method.block_len;
    let data_hex_len = body.len().saturating_sub(mac_hex_len);
    if body.len() < mac_hex_len + min_data_hex || !data_hex_len.is_multiple_of(2 * method.block_len)
    {
        return Err(Tr31Error::EncryptedDataLength {
            len: data_hex_len,
            multiple: 2 * method.block_len,
        });
    }
    let (data_hex, mac_hex) = body.split_at(data_hex_len);
    let mut payload = Zeroizing::new(vec![0u8; data_hex.len() / 2]);
    decode_hex(
        data_hex,
        "encrypted key data",
        parsed.header_len,
        &mut payload,
    )?;
    let mut mac = [0u8; MAX_BLOCK_LEN];
    let mac = &mut mac[..method.mac_len];
    decode_hex(mac_hex, "MAC", parsed.header_len + data_hex.len(), mac)?;

    let keys = derive_keys(kbpk, method, Direction::Unwrap)?;
    let mut expected = [0u8; MAX_BLOCK_LEN];
    let expected = &mut expected[..method.mac_len];
    match method.mode {
        Mode::VariantCbc => {
            keys.mac(header_text, &payload, expected);
            keys.encryption
                .cbc_decrypt(&header_text.as_bytes()[..8], &mut payload);
        }
        Mode::MacThenCbc => {
            keys.encryption.cbc_decrypt(mac, &mut payload);
            keys.mac(header_text, &payload, expected);
        }
        Mode::MacThenCtr => {
            keys.encryption.ctr_apply(mac, &mut payload);
            keys.mac(header_text, &payload, expected);
        }
    }
    if !bool::from(expected.ct_eq(mac)) {
        return Err(Tr31Error::MacMismatch);
    }

    let bits = usize::from(u16::from_be_bytes([payload[0], payload[1]]));
    let capacity = payload.len() - 2;
    if !bits.is_multiple_of(8) || bits / 8 > capacity || bits == 0 {
        return Err(Tr31Error::InvalidKeyLength { bits, capacity });
    }
    let key_len = bits / 8;
    let algorithm = key_algorithm_for(parsed.header.algorithm(), key_len)?;
    let key = SecretKey::from_slice(algorithm, &payload[2..2 + key_len])?;
    Ok((parsed.header, key))
}

/// Chooses the padding block data that brings the header to a multiple of `alignment`, or
/// `None` when it already is. The padding block is at least 4 characters (ID and length).
fn padding_block(header_len: usize, alignment: usize) -> Result<Option<String>, Tr31Error> {
    if header_len.is_multiple_of(alignment) {
        return Ok(None);
    }
    let mut needed = alignment - header_len % alignment;
    while needed < 4 {
        needed += alignment;
    }
    let mut random = vec![0u8; needed - 4];
    random::fill_padding(&mut random).map_err(|error| Tr31Error::Random(error.to_string()))?;
    // X9.143 requires printable padding characters, and uppercase letters and digits are.
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let data = random
        .iter()
        .map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]))
        .collect();
    Ok(Some(data))
}

fn derive_keys(
    kbpk: Kbpk<'_>,
    method: Method,
    direction: Direction,
) -> Result<BlockKeys, Tr31Error> {
    // Only CBC unwrapping decrypts under the KBEK: CTR and CBC wrapping only encrypt.
    let decrypt = direction == Direction::Unwrap && method.mode != Mode::MacThenCtr;
    match method.keys {
        KeyDerivation::Variant => {
            let Kbpk::Clear(kbpk) = kbpk else {
                return Err(Tr31Error::ExternalKbpkVariant {
                    version: method.version.code(),
                });
            };
            let algorithm = kbpk.algorithm();
            let len = algorithm.key_len();
            let mut variant = Zeroizing::new([0u8; 32]);
            let variant = &mut variant[..len];
            variant.copy_from_slice(kbpk.expose());
            variant.iter_mut().for_each(|byte| *byte ^= 0x45);
            let encryption = BlockCipher::from_bytes(algorithm, variant, true);
            // 0x45 ^ 0x08 = 0x4D: the authentication variant from the encryption variant.
            variant.iter_mut().for_each(|byte| *byte ^= 0x08);
            let authentication = BlockCipher::from_bytes(algorithm, variant, false);
            Ok(BlockKeys {
                encryption,
                authentication: Authentication::CbcMac(authentication),
            })
        }
        KeyDerivation::Cmac { encryption_usage } => {
            // The clear KBPK is scheduled once for all CMAC blocks of both keys.
            let scheduled;
            let kdf_key = match kbpk {
                Kbpk::Clear(key) => {
                    scheduled = CmacKey::new(key);
                    KdfKey::Clear(&scheduled, key.algorithm())
                }
                Kbpk::External(key) => KdfKey::External(key),
            };
            let algorithm = kdf_key.algorithm();
            let len = algorithm.key_len();
            let mut derived = Zeroizing::new([0u8; 32]);
            let derived = &mut derived[..len];

            derive_one(&kdf_key, encryption_usage, derived)?;
            let encryption = BlockCipher::from_bytes(algorithm, derived, decrypt);
            derive_one(&kdf_key, 0x0001, derived)?;
            let authentication = CmacKey::from_bytes(algorithm, derived);
            Ok(BlockKeys {
                encryption,
                authentication: Authentication::Cmac(authentication),
            })
        }
    }
}

impl BlockKeys {
    /// Computes the MAC of the header text and `data` into `mac`, truncated to its length:
    /// the CMAC of the clear payload (versions B, D, E) or the CBC-MAC of the binary ciphertext
    /// (versions A and C). Both parts are whole blocks for CBC-MAC.
    fn mac(&self, header: &str, data: &[u8], mac: &mut [u8]) {
        let mut full = Zeroizing::new([0u8; MAX_BLOCK_LEN]);
        let full = match &self.authentication {
            Authentication::CbcMac(cipher) => {
                let full = &mut full[..cipher.block_len()];
                cipher.cbc_mac(&[header.as_bytes(), data], full);
                full
            }
            Authentication::Cmac(key) => {
                let full = &mut full[..key.block_len()];
                key.compute(&[header.as_bytes(), data], full);
                full
            }
        };
        mac.copy_from_slice(&full[..mac.len()]);
    }
}

/// The KBPK as the CMAC KDF uses it: scheduled in station memory, or held outside.
enum KdfKey<'a> {
    Clear(&'a CmacKey, KeyAlgorithm),
    External(&'a dyn super::ExternalKbpk),
}

impl KdfKey<'_> {
    fn algorithm(&self) -> KeyAlgorithm {
        match self {
            Self::Clear(_, algorithm) => *algorithm,
            Self::External(key) => key.algorithm(),
        }
    }

    /// Computes the CMAC of `data` into `tag`, one block long.
    fn cmac(&self, data: &[u8], tag: &mut [u8]) -> Result<(), Tr31Error> {
        match self {
            Self::Clear(key, _) => key.compute(&[data], tag),
            Self::External(key) => {
                let computed = key.cmac(data).map_err(Tr31Error::ExternalKbpk)?;
                if computed.len() != tag.len() {
                    return Err(Tr31Error::ExternalKbpk(format!(
                        "the external KBPK returned a {}-byte CMAC; a {} CMAC is {} bytes",
                        computed.len(),
                        key.algorithm(),
                        tag.len()
                    )));
                }
                tag.copy_from_slice(&computed);
            }
        }
        Ok(())
    }
}

/// Derives one key of the KBPK's own algorithm and length into `output` with the CMAC
/// counter-mode KDF.
fn derive_one(kbpk: &KdfKey<'_>, usage: u16, output: &mut [u8]) -> Result<(), Tr31Error> {
    let algorithm = kbpk.algorithm();
    let indicator: u16 = match algorithm {
        KeyAlgorithm::Tdes2 => 0x0000,
        KeyAlgorithm::Tdes3 => 0x0001,
        KeyAlgorithm::Aes128 => 0x0002,
        KeyAlgorithm::Aes192 => 0x0003,
        KeyAlgorithm::Aes256 => 0x0004,
    };
    let bits = u16::try_from(output.len() * 8).expect("key lengths are at most 256 bits");
    let mut data = [0u8; 8];
    data[1..3].copy_from_slice(&usage.to_be_bytes());
    data[3] = 0x00;
    data[4..6].copy_from_slice(&indicator.to_be_bytes());
    data[6..8].copy_from_slice(&bits.to_be_bytes());

    let block_len = algorithm.block_len();
    let mut block = Zeroizing::new([0u8; MAX_BLOCK_LEN]);
    let block = &mut block[..block_len];
    for (counter, chunk) in (1u8..).zip(output.chunks_mut(block_len)) {
        data[0] = counter;
        kbpk.cmac(&data, block)?;
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    Ok(())
}

/// Appends `bytes` to `out` as uppercase hex digits.
fn push_hex_upper(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for byte in bytes {
        out.extend_from_slice(&[
            DIGITS[usize::from(byte >> 4)],
            DIGITS[usize::from(byte & 0x0F)],
        ]);
    }
}

/// Decodes hex `text` (either case) into `output`, which is half its length, naming the field
/// and the position in the block of the first character that is not a hex digit.
fn decode_hex(
    text: &str,
    field: &'static str,
    offset: usize,
    output: &mut [u8],
) -> Result<(), Tr31Error> {
    debug_assert_eq!(
        text.len(),
        2 * output.len(),
        "bug: hex text is two digits a byte"
    );
    let digit = |index: usize| {
        let byte = text.as_bytes()[index];
        match byte {
            b'0'..=b'9' => Ok(byte - b'0'),
            b'A'..=b'F' => Ok(byte - b'A' + 10),
            b'a'..=b'f' => Ok(byte - b'a' + 10),
            _ => Err(Tr31Error::InvalidHex {
                field,
                position: offset + index,
            }),
        }
    };
    for (index, byte) in output.iter_mut().enumerate() {
        *byte = (digit(2 * index)? << 4) | digit(2 * index + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TR-31:2018 annex A.7.4: the published block, rebuilt from the published random padding.
    #[test]
    fn wrap_matches_tr31_2018_a_7_4() {
        let kbpk = SecretKey::from_hex(
            KeyAlgorithm::Aes256,
            "88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6",
        )
        .unwrap();
        let key =
            SecretKey::from_hex(KeyAlgorithm::Aes128, "3F419E1CB7079442AA37474C2EFBF8B8").unwrap();
        let header: KeyBlockHeader = "D0000P0AE00E0000".parse().unwrap();
        let filler = hex::decode("1C2965473CE206BB855B01533782").unwrap();

        let block = assemble(Kbpk::Clear(&kbpk), &header, &key, &filler, None).unwrap();

        assert_eq!(
            block,
            "D0112P0AE00E0000B82679114F470F540165EDFBF7E250FCEA43F810D215F8D207E2E417C07156A27E8E31DA05F7425509593D03A457DC34"
        );
    }

    /// Builds a version D block under `kbpk` around a payload given byte for byte, so that a bad
    /// key length field carries a valid MAC, as a faulty HSM or device would send it.
    fn block_with_payload(kbpk: &SecretKey, header: &KeyBlockHeader, payload: &[u8]) -> String {
        let method = Method::of(header.version());
        let keys = derive_keys(Kbpk::Clear(kbpk), method, Direction::Wrap).unwrap();
        let block_len = header.text_len() + 2 * payload.len() + 2 * method.mac_len;
        let mut header_text = String::new();
        header.encode_into(block_len, None, &mut header_text);

        let mut data = payload.to_vec();
        let mut mac = [0u8; 16];
        keys.mac(&header_text, &data, &mut mac);
        keys.encryption.cbc_encrypt(&mac, &mut data);
        let mut block = header_text.into_bytes();
        push_hex_upper(&mut block, &data);
        push_hex_upper(&mut block, &mac);
        String::from_utf8(block).unwrap()
    }

    #[test]
    fn authentic_block_with_bad_key_length_is_rejected() {
        let kbpk = SecretKey::from_hex(
            KeyAlgorithm::Aes256,
            "88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6",
        )
        .unwrap();
        let header: KeyBlockHeader = "D0000B1AX00N0000".parse().unwrap();
        let cases = [
            (
                0u16,
                Err(Tr31Error::InvalidKeyLength {
                    bits: 0,
                    capacity: 46,
                }),
            ),
            (
                129,
                Err(Tr31Error::InvalidKeyLength {
                    bits: 129,
                    capacity: 46,
                }),
            ),
            (
                376,
                Err(Tr31Error::InvalidKeyLength {
                    bits: 376,
                    capacity: 46,
                }),
            ),
            (
                160,
                Err(Tr31Error::UnsupportedKeyLength {
                    algorithm: super::super::KeyBlockAlgorithm::Aes,
                    len: 20,
                }),
            ),
            (128, Ok(16)),
        ];
        for (bits, expected) in cases {
            let mut payload = [0x5Au8; 48];
            payload[..2].copy_from_slice(&bits.to_be_bytes());
            let block = block_with_payload(&kbpk, &header, &payload);
            let result = super::super::unwrap(&kbpk, &block).map(|(_, key)| key.expose().len());
            assert_eq!(result, expected, "{bits} bits");
        }
    }

    #[test]
    fn padding_block_reaches_alignment() {
        for (header_len, alignment) in [(16, 16), (20, 16), (30, 16), (18, 8), (21, 8), (17, 1)] {
            let padding = padding_block(header_len, alignment).unwrap();
            let total = header_len + padding.as_ref().map_or(0, |data| 4 + data.len());
            assert_eq!(total % alignment, 0, "{header_len} {alignment}");
        }
    }
}
