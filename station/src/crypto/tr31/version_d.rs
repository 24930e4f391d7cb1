//! Key block version D, ANSI X9.143-2022 (AES key derivation binding method).
//!
//! - The KBPK is AES. The encryption key (KBEK) and authentication key (KBAK) are derived from
//!   it with CMAC in counter mode (NIST SP 800-108), one CMAC per 128 bits of key.
//! - The derivation data is 8 bytes: counter, key usage (`0000` KBEK, `0001` KBAK), separator
//!   `00`, algorithm (`0002` AES-128, `0003` AES-192, `0004` AES-256) and key length in bits.
//! - The payload is the key length in bits (2 bytes), the key, and random padding to whole AES
//!   blocks.
//! - The MAC is the full 16-byte AES-CMAC under the KBAK over the header text and the clear
//!   payload; the payload is encrypted with AES-CBC under the KBEK with the MAC as IV.
//! - The key block is the header, the encrypted payload in hex and the MAC in hex.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::header::{MAX_BLOCK_LEN, ParsedHeader};
use super::{KeyBlockHeader, LengthMasking, Tr31Error, key_algorithm_for};
use crate::crypto::block_cipher::{BlockCipher, cmac};
use crate::crypto::{KeyAlgorithm, SecretKey};

/// AES block length, which is also the MAC length of version D.
const BLOCK_LEN: usize = 16;
const MAC_LEN: usize = 16;

/// The derived key pair of one key block. Both keys zeroize on drop.
struct BlockKeys {
    encryption: SecretKey,
    authentication: SecretKey,
}

pub(super) fn wrap(
    kbpk: &SecretKey,
    header: &KeyBlockHeader,
    key: &SecretKey,
    masking: LengthMasking,
) -> Result<String, Tr31Error> {
    let key_len = key.expose().len();
    let masked_len = match masking {
        LengthMasking::MaxForAlgorithm if key.algorithm().is_aes() => key_len.max(32),
        LengthMasking::MaxForAlgorithm => key_len.max(24),
        LengthMasking::Off => key_len,
    };
    let payload_len = (2 + masked_len).div_ceil(BLOCK_LEN) * BLOCK_LEN;
    let mut filler = Zeroizing::new(vec![0u8; payload_len - 2 - key_len]);
    getrandom::fill(&mut filler).map_err(|error| Tr31Error::Random(error.to_string()))?;
    let padding = padding_block(header.text_len())?;
    assemble(kbpk, header, key, &filler, padding.as_deref())
}

/// Builds the key block from fixed random parts: `filler` pads the payload after the key and
/// `padding` is the data of the `PB` block, if the header needs one.
fn assemble(
    kbpk: &SecretKey,
    header: &KeyBlockHeader,
    key: &SecretKey,
    filler: &[u8],
    padding: Option<&str>,
) -> Result<String, Tr31Error> {
    let keys = derive_keys(kbpk)?;

    let key_len = key.expose().len();
    let payload_len = 2 + key_len + filler.len();
    debug_assert_eq!(
        payload_len % BLOCK_LEN,
        0,
        "filler completes the last block"
    );
    let mut payload = Zeroizing::new(Vec::with_capacity(payload_len));
    let bits = u16::try_from(key_len * 8).expect("key lengths are at most 256 bits");
    payload.extend_from_slice(&bits.to_be_bytes());
    payload.extend_from_slice(key.expose());
    payload.extend_from_slice(filler);

    let header_len = header.text_len() + padding.map_or(0, |data| 4 + data.len());
    let block_len = header_len + 2 * payload_len + 2 * MAC_LEN;
    if block_len > MAX_BLOCK_LEN {
        return Err(Tr31Error::BlockTooLong { len: block_len });
    }
    let header_text = header.encode(block_len, padding);
    debug_assert_eq!(header_text.len(), header_len);

    let mac = compute_mac(&keys.authentication, header_text.as_bytes(), &payload);
    BlockCipher::new(&keys.encryption).cbc_encrypt(&mac, &mut payload);

    let mut block = header_text;
    block.push_str(&hex::encode_upper(payload.as_slice()));
    block.push_str(&hex::encode_upper(mac.as_slice()));
    Ok(block)
}

pub(super) fn unwrap(
    kbpk: &SecretKey,
    block: &str,
    parsed: ParsedHeader,
) -> Result<(KeyBlockHeader, SecretKey), Tr31Error> {
    if !parsed.header_len.is_multiple_of(BLOCK_LEN) {
        return Err(Tr31Error::HeaderNotBlockAligned {
            len: parsed.header_len,
            block_len: BLOCK_LEN,
        });
    }
    let keys = derive_keys(kbpk)?;

    // The parser checked that the whole block is printable ASCII, so these slices are on char
    // boundaries.
    let body = &block[parsed.header_len..];
    let mac_hex_len = 2 * MAC_LEN;
    if body.len() < mac_hex_len + 2 * BLOCK_LEN {
        return Err(Tr31Error::EncryptedDataLength {
            len: body.len().saturating_sub(mac_hex_len),
            multiple: 2 * BLOCK_LEN,
        });
    }
    let (data_hex, mac_hex) = body.split_at(body.len() - mac_hex_len);
    if data_hex.len() % (2 * BLOCK_LEN) != 0 {
        return Err(Tr31Error::EncryptedDataLength {
            len: data_hex.len(),
            multiple: 2 * BLOCK_LEN,
        });
    }
    let mut payload = Zeroizing::new(decode_hex(
        data_hex,
        "encrypted key data",
        parsed.header_len,
    )?);
    let mac = decode_hex(mac_hex, "MAC", parsed.header_len + data_hex.len())?;

    BlockCipher::new(&keys.encryption).cbc_decrypt(&mac, &mut payload);
    let header_text = &block[..parsed.header_len];
    let expected = compute_mac(&keys.authentication, header_text.as_bytes(), &payload);
    if !bool::from(expected.ct_eq(&mac)) {
        return Err(Tr31Error::MacMismatch);
    }

    let bits = usize::from(u16::from_be_bytes([payload[0], payload[1]]));
    let capacity = payload.len() - 2;
    if bits % 8 != 0 || bits / 8 > capacity || bits == 0 {
        return Err(Tr31Error::InvalidKeyLength { bits, capacity });
    }
    let key_len = bits / 8;
    let algorithm = key_algorithm_for(parsed.header.algorithm(), key_len)?;
    let key = SecretKey::from_slice(algorithm, &payload[2..2 + key_len])?;
    Ok((parsed.header, key))
}

/// Chooses the padding block data that brings the header to whole AES blocks, or `None` when
/// the header already is. The padding block is at least 4 characters (ID and length).
fn padding_block(header_len: usize) -> Result<Option<String>, Tr31Error> {
    if header_len.is_multiple_of(BLOCK_LEN) {
        return Ok(None);
    }
    let mut needed = BLOCK_LEN - header_len % BLOCK_LEN;
    if needed < 4 {
        needed += BLOCK_LEN;
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

fn derive_keys(kbpk: &SecretKey) -> Result<BlockKeys, Tr31Error> {
    let algorithm = kbpk.algorithm();
    let indicator: u16 = match algorithm {
        KeyAlgorithm::Aes128 => 0x0002,
        KeyAlgorithm::Aes192 => 0x0003,
        KeyAlgorithm::Aes256 => 0x0004,
        KeyAlgorithm::Tdes2 | KeyAlgorithm::Tdes3 => {
            return Err(Tr31Error::KbpkMismatch {
                version: 'D',
                expected: "an AES",
                kbpk: algorithm,
            });
        }
    };
    let encryption = derive_one(kbpk, 0x0000, indicator)?;
    let authentication = derive_one(kbpk, 0x0001, indicator)?;
    Ok(BlockKeys {
        encryption,
        authentication,
    })
}

/// Derives one key of the KBPK's own algorithm and length.
fn derive_one(kbpk: &SecretKey, usage: u16, indicator: u16) -> Result<SecretKey, Tr31Error> {
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
        output.extend_from_slice(&cmac(kbpk, &data));
        counter += 1;
    }
    output.truncate(len);
    Ok(SecretKey::new(kbpk.algorithm(), output)?)
}

fn compute_mac(kbak: &SecretKey, header: &[u8], payload: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut message = Zeroizing::new(Vec::with_capacity(header.len() + payload.len()));
    message.extend_from_slice(header);
    message.extend_from_slice(payload);
    cmac(kbak, &message)
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

        let block = assemble(&kbpk, &header, &key, &filler, None).unwrap();

        assert_eq!(
            block,
            "D0112P0AE00E0000B82679114F470F540165EDFBF7E250FCEA43F810D215F8D207E2E417C07156A27E8E31DA05F7425509593D03A457DC34"
        );
    }
}
