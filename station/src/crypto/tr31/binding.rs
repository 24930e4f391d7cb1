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

use super::header::{MAX_BLOCK_LEN, ParsedHeader};
use super::{KeyBlockHeader, KeyBlockVersion, LengthMasking, Tr31Error, key_algorithm_for};
use crate::crypto::block_cipher::{BlockCipher, CmacKey, cmac};
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

/// The derived key pair of one key block. Both keys zeroize on drop.
struct BlockKeys {
    encryption: SecretKey,
    authentication: SecretKey,
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
    getrandom::fill(&mut filler).map_err(|error| Tr31Error::Random(error.to_string()))?;
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
    let keys = derive_keys(kbpk, method)?;

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
    if block_len > MAX_BLOCK_LEN {
        return Err(Tr31Error::BlockTooLong { len: block_len });
    }
    let header_text = header.encode(block_len, padding);
    debug_assert_eq!(header_text.len(), header_len);

    let encryption = BlockCipher::new(&keys.encryption);
    let (ciphertext_hex, mac) = match method.mode {
        Mode::VariantCbc => {
            encryption.cbc_encrypt(&header_text.as_bytes()[..8], &mut payload);
            let mac = variant_mac(&keys.authentication, &header_text, &payload, method);
            (hex::encode_upper(payload.as_slice()), mac)
        }
        Mode::MacThenCbc | Mode::MacThenCtr => {
            let mac = payload_mac(&keys.authentication, &header_text, &payload);
            if method.mode == Mode::MacThenCbc {
                encryption.cbc_encrypt(&mac, &mut payload);
            } else {
                encryption.ctr_apply(&mac, &mut payload);
            }
            (hex::encode_upper(payload.as_slice()), mac)
        }
    };

    let mut block = header_text;
    block.push_str(&ciphertext_hex);
    block.push_str(&hex::encode_upper(mac.as_slice()));
    Ok(block)
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
    let mut payload = Zeroizing::new(decode_hex(
        data_hex,
        "encrypted key data",
        parsed.header_len,
    )?);
    let mac = decode_hex(mac_hex, "MAC", parsed.header_len + data_hex.len())?;

    let keys = derive_keys(kbpk, method)?;
    let encryption = BlockCipher::new(&keys.encryption);
    let verified = match method.mode {
        Mode::VariantCbc => {
            let expected = variant_mac(&keys.authentication, header_text, &payload, method);
            let verified = bool::from(expected.ct_eq(&mac));
            encryption.cbc_decrypt(&header_text.as_bytes()[..8], &mut payload);
            verified
        }
        Mode::MacThenCbc | Mode::MacThenCtr => {
            if method.mode == Mode::MacThenCbc {
                encryption.cbc_decrypt(&mac, &mut payload);
            } else {
                encryption.ctr_apply(&mac, &mut payload);
            }
            let expected = payload_mac(&keys.authentication, header_text, &payload);
            bool::from(expected.ct_eq(&mac))
        }
    };
    if !verified {
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
    getrandom::fill(&mut random).map_err(|error| Tr31Error::Random(error.to_string()))?;
    // X9.143 requires printable padding characters, and uppercase letters and digits are.
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let data = random
        .iter()
        .map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]))
        .collect();
    Ok(Some(data))
}

fn derive_keys(kbpk: Kbpk<'_>, method: Method) -> Result<BlockKeys, Tr31Error> {
    match method.keys {
        KeyDerivation::Variant => {
            let Kbpk::Clear(kbpk) = kbpk else {
                return Err(Tr31Error::ExternalKbpkVariant {
                    version: method.version.code(),
                });
            };
            let mut encryption = Zeroizing::new(kbpk.expose().to_vec());
            let mut authentication = Zeroizing::new(kbpk.expose().to_vec());
            encryption.iter_mut().for_each(|byte| *byte ^= 0x45);
            authentication.iter_mut().for_each(|byte| *byte ^= 0x4D);
            Ok(BlockKeys {
                encryption: SecretKey::new(kbpk.algorithm(), encryption)?,
                authentication: SecretKey::new(kbpk.algorithm(), authentication)?,
            })
        }
        KeyDerivation::Cmac { encryption_usage } => {
            // The clear KBPK is scheduled once for all CMAC blocks of both keys.
            let scheduled = match kbpk {
                Kbpk::Clear(key) => KdfKey::Clear(Box::new(CmacKey::new(key)), key.algorithm()),
                Kbpk::External(key) => KdfKey::External(key),
            };
            Ok(BlockKeys {
                encryption: derive_one(&scheduled, encryption_usage)?,
                authentication: derive_one(&scheduled, 0x0001)?,
            })
        }
    }
}

/// The KBPK as the CMAC KDF uses it: scheduled in station memory, or held outside.
enum KdfKey<'a> {
    Clear(Box<CmacKey>, KeyAlgorithm),
    External(&'a dyn super::ExternalKbpk),
}

impl KdfKey<'_> {
    fn algorithm(&self) -> KeyAlgorithm {
        match self {
            Self::Clear(_, algorithm) => *algorithm,
            Self::External(key) => key.algorithm(),
        }
    }

    fn cmac(&self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Tr31Error> {
        match self {
            Self::Clear(key, _) => Ok(key.compute(data)),
            Self::External(key) => key.cmac(data).map_err(Tr31Error::ExternalKbpk),
        }
    }
}

/// Derives one key of the KBPK's own algorithm and length with the CMAC counter-mode KDF.
fn derive_one(kbpk: &KdfKey<'_>, usage: u16) -> Result<SecretKey, Tr31Error> {
    let indicator: u16 = match kbpk.algorithm() {
        KeyAlgorithm::Tdes2 => 0x0000,
        KeyAlgorithm::Tdes3 => 0x0001,
        KeyAlgorithm::Aes128 => 0x0002,
        KeyAlgorithm::Aes192 => 0x0003,
        KeyAlgorithm::Aes256 => 0x0004,
    };
    let len = kbpk.algorithm().key_len();
    let bits = u16::try_from(len * 8).expect("key lengths are at most 256 bits");
    let mut output = Zeroizing::new(Vec::with_capacity(32));
    let mut counter = 1u8;
    while output.len() < len {
        let mut data = [0u8; 8];
        data[0] = counter;
        data[1..3].copy_from_slice(&usage.to_be_bytes());
        data[3] = 0x00;
        data[4..6].copy_from_slice(&indicator.to_be_bytes());
        data[6..8].copy_from_slice(&bits.to_be_bytes());
        output.extend_from_slice(&kbpk.cmac(&data)?);
        counter += 1;
    }
    output.truncate(len);
    Ok(SecretKey::new(kbpk.algorithm(), output)?)
}

/// CMAC over the header text and the clear payload (versions B, D, E).
fn payload_mac(kbak: &SecretKey, header: &str, payload: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut message = Zeroizing::new(Vec::with_capacity(header.len() + payload.len()));
    message.extend_from_slice(header.as_bytes());
    message.extend_from_slice(payload);
    cmac(kbak, &message)
}

/// TDES CBC-MAC over the header text and the binary ciphertext, truncated to the MAC length
/// (versions A and C). Both parts are whole 8-byte blocks.
fn variant_mac(
    kbak: &SecretKey,
    header: &str,
    ciphertext: &[u8],
    method: Method,
) -> Zeroizing<Vec<u8>> {
    let mut message = Vec::with_capacity(header.len() + ciphertext.len());
    message.extend_from_slice(header.as_bytes());
    message.extend_from_slice(ciphertext);
    let mut mac = BlockCipher::new(kbak).cbc_mac(&message);
    mac.truncate(method.mac_len);
    mac
}

fn decode_hex(text: &str, field: &'static str, offset: usize) -> Result<Vec<u8>, Tr31Error> {
    if let Some(index) = text.bytes().position(|byte| !byte.is_ascii_hexdigit()) {
        return Err(Tr31Error::InvalidHex {
            field,
            position: offset + index,
        });
    }
    let decoded = hex::decode(text).map_err(|_| Tr31Error::InvalidHex {
        field,
        position: offset,
    })?;
    Ok(decoded)
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

    #[test]
    fn padding_block_reaches_alignment() {
        for (header_len, alignment) in [(16, 16), (20, 16), (30, 16), (18, 8), (21, 8), (17, 1)] {
            let padding = padding_block(header_len, alignment).unwrap();
            let total = header_len + padding.as_ref().map_or(0, |data| 4 + data.len());
            assert_eq!(total % alignment, 0, "{header_len} {alignment}");
        }
    }
}
