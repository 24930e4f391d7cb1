//! The cryptography of the protocol version 2 key exchange: ephemeral ECDH on P-384, the
//! transcript hash both sides sign, the session keys and the key confirmation tags.
//!
//! Session keys come from the one-step key derivation function of NIST SP 800-56C revision 2,
//! section 4.1, with H = SHA-384: `K = H(counter || Z || FixedInfo)` with a 32-bit big-endian
//! counter of 1, because every key here is 256 bits, fewer than one SHA-384 output. FixedInfo
//! follows the concatenation format of NIST SP 800-56A revision 3, section 5.8.2.1.1:
//!
//! ```text
//! FixedInfo = AlgorithmID || PartyUInfo || PartyVInfo || SuppPubInfo
//! AlgorithmID = u8 length || ASCII label           (one label per key, see `KeyPurpose`)
//! PartyUInfo  = u8 length (32) || station nonce
//! PartyVInfo  = u8 length (32) || terminal nonce
//! SuppPubInfo = u32 big-endian L (256) || transcript hash (48 bytes)
//! ```
//!
//! The key confirmation tags follow the bilateral scheme of SP 800-56A revision 3, section
//! 5.9.1, with AES-CMAC under a key of their own: the terminal sends
//! `CMAC(KCK, "KC_2_V" || transcript hash)` and the station `CMAC(KCK, "KC_2_U" || transcript
//! hash)`. `docs/protocol.md` gives the same definitions with a worked example.

use std::fmt;

use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p384::elliptic_curve::Generate;
use sha2::{Digest, Sha384};
use zeroize::Zeroizing;

use crate::crypto::mac::{cmac, verify_cmac};
use crate::crypto::{KeyAlgorithm, SecretKey};

/// Length of each side's nonce in bytes.
pub const NONCE_LEN: usize = 32;
/// Length of an uncompressed SEC1 P-384 point: `04 || x || y`.
pub const EPHEMERAL_KEY_LEN: usize = 97;
/// Length of the transcript hash (SHA-384) in bytes.
pub const TRANSCRIPT_HASH_LEN: usize = 48;
/// Length of a key confirmation tag or a LOAD_RESULT MAC: a full AES-CMAC block.
pub const TAG_LEN: usize = 16;

/// Domain separation prefix of the transcript hash.
const TRANSCRIPT_LABEL: &[u8] = b"KIS-KEX-P384-V2";
/// What the terminal signs before the transcript hash, so a signature cannot be reflected.
const TERMINAL_SIGNATURE_CONTEXT: &[u8] = b"KIS-KEX terminal signature";
/// What the station signs before the transcript hash.
const STATION_SIGNATURE_CONTEXT: &[u8] = b"KIS-KEX station signature";
/// Prefix of the message a LOAD_RESULT MAC covers.
const LOAD_RESULT_MAC_LABEL: &[u8] = b"KIS LOAD_RESULT";
/// Length of every derived key in bits, the L of SP 800-56C.
const DERIVED_KEY_BITS: u32 = 256;

/// Errors of the key exchange cryptography.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer's ephemeral public key is not a valid uncompressed P-384 point.
    #[error(
        "the {side}'s ephemeral public key is not an uncompressed P-384 point on the curve \
         ({len} bytes received, {EPHEMERAL_KEY_LEN} expected)"
    )]
    InvalidEphemeralKey {
        /// `station` or `terminal`.
        side: &'static str,
        /// Length received.
        len: usize,
    },
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
    /// A fixed test scalar is not a valid P-384 private key; a bug in the caller.
    #[error("the bytes are not a valid P-384 private scalar (a bug in the caller)")]
    InvalidScalar,
}

/// An ephemeral P-384 key pair for one key exchange. The scalar zeroizes on drop and is never
/// printed.
pub struct EphemeralKeyPair {
    secret: p384::SecretKey,
}

impl EphemeralKeyPair {
    /// Generates a key pair from the operating system's random number generator.
    pub fn generate() -> Result<Self, HandshakeError> {
        let secret = p384::SecretKey::try_generate()
            .map_err(|error| HandshakeError::Random(error.to_string()))?;
        Ok(Self { secret })
    }

    /// Takes a fixed 48-byte scalar, for the worked example and known-answer tests only.
    pub fn from_scalar(scalar: &[u8]) -> Result<Self, HandshakeError> {
        let secret =
            p384::SecretKey::from_slice(scalar).map_err(|_| HandshakeError::InvalidScalar)?;
        Ok(Self { secret })
    }

    /// The public key as an uncompressed SEC1 point, 97 bytes.
    pub fn public_key(&self) -> [u8; EPHEMERAL_KEY_LEN] {
        let point = self.secret.public_key().to_sec1_bytes();
        let mut bytes = [0u8; EPHEMERAL_KEY_LEN];
        bytes.copy_from_slice(&point);
        bytes
    }

    /// Computes the ECDH shared secret Z (the x-coordinate, 48 bytes) with the peer's public key.
    pub fn shared_secret(
        &self,
        peer_public: &[u8],
        peer: &'static str,
    ) -> Result<Zeroizing<Vec<u8>>, HandshakeError> {
        let invalid = || HandshakeError::InvalidEphemeralKey {
            side: peer,
            len: peer_public.len(),
        };
        // Only the uncompressed form is allowed, so each side signs the one encoding it received.
        if peer_public.len() != EPHEMERAL_KEY_LEN || peer_public[0] != 0x04 {
            return Err(invalid());
        }
        let public = p384::PublicKey::from_sec1_bytes(peer_public).map_err(|_| invalid())?;
        let shared = p384::elliptic_curve::ecdh::diffie_hellman(
            self.secret.to_nonzero_scalar(),
            public.as_affine(),
        );
        Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
    }
}

impl fmt::Debug for EphemeralKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EphemeralKeyPair(..)")
    }
}

/// Draws a fresh nonce from the operating system's random number generator.
pub fn random_nonce() -> Result<[u8; NONCE_LEN], HandshakeError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|error| HandshakeError::Random(error.to_string()))?;
    Ok(nonce)
}

/// The messages both sides sign, in the order they were exchanged.
///
/// Each item enters the hash as a 32-bit big-endian length followed by its bytes, after the
/// label `KIS-KEX-P384-V2`:
/// the HELLO_REQUEST payload, the HELLO payload, the DER of the terminal's certificate, the
/// KEY_EXCHANGE request payload (station nonce, station ephemeral key and station chain), the
/// terminal nonce and the terminal ephemeral key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript<'a> {
    /// Payload of the station's HELLO_REQUEST.
    pub hello_request: &'a [u8],
    /// Payload of the terminal's HELLO.
    pub hello: &'a [u8],
    /// DER of the terminal's certificate that the station validated.
    pub terminal_certificate: &'a [u8],
    /// Payload of the station's KEY_EXCHANGE request.
    pub key_exchange_request: &'a [u8],
    /// The terminal's nonce.
    pub terminal_nonce: &'a [u8; NONCE_LEN],
    /// The terminal's ephemeral public key.
    pub terminal_ephemeral: &'a [u8; EPHEMERAL_KEY_LEN],
}

impl Transcript<'_> {
    /// Computes SHA-384 over the label and the length-prefixed items.
    pub fn hash(&self) -> [u8; TRANSCRIPT_HASH_LEN] {
        let mut hasher = Sha384::new();
        hasher.update(TRANSCRIPT_LABEL);
        for item in [
            self.hello_request,
            self.hello,
            self.terminal_certificate,
            self.key_exchange_request,
            self.terminal_nonce.as_slice(),
            self.terminal_ephemeral.as_slice(),
        ] {
            let len = u32::try_from(item.len()).expect("protocol items are shorter than 4 GiB");
            hasher.update(len.to_be_bytes());
            hasher.update(item);
        }
        hasher.finalize().into()
    }
}

/// The three keys one key exchange derives, each with its own AlgorithmID label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    /// The AES-256 key block protection key of LOAD_KEY's TR-31 block: `KIS-KBPK-AES256`.
    Kbpk,
    /// The AES-256 key confirmation key: `KIS-KCK-AES256`.
    KeyConfirmation,
    /// The AES-256 key of the LOAD_RESULT MAC: `KIS-RMK-AES256`.
    LoadResultMac,
}

impl KeyPurpose {
    /// The AlgorithmID label of the key.
    pub fn label(self) -> &'static [u8] {
        match self {
            Self::Kbpk => b"KIS-KBPK-AES256",
            Self::KeyConfirmation => b"KIS-KCK-AES256",
            Self::LoadResultMac => b"KIS-RMK-AES256",
        }
    }
}

/// Builds the FixedInfo of one derived key; see the module documentation.
pub fn fixed_info(
    purpose: KeyPurpose,
    station_nonce: &[u8; NONCE_LEN],
    terminal_nonce: &[u8; NONCE_LEN],
    transcript_hash: &[u8; TRANSCRIPT_HASH_LEN],
) -> Vec<u8> {
    let label = purpose.label();
    let mut info = Vec::with_capacity(1 + label.len() + 2 * (1 + NONCE_LEN) + 4 + 48);
    info.push(u8::try_from(label.len()).expect("labels are short"));
    info.extend_from_slice(label);
    info.push(NONCE_LEN as u8);
    info.extend_from_slice(station_nonce);
    info.push(NONCE_LEN as u8);
    info.extend_from_slice(terminal_nonce);
    info.extend_from_slice(&DERIVED_KEY_BITS.to_be_bytes());
    info.extend_from_slice(transcript_hash);
    info
}

/// Derives a 256-bit key with the SP 800-56C revision 2 one-step KDF over SHA-384: the leftmost
/// 32 bytes of `SHA-384(00000001 || Z || FixedInfo)`.
pub fn one_step_kdf_sha384(shared_secret: &[u8], fixed_info: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut hasher = Sha384::new();
    hasher.update(1u32.to_be_bytes());
    hasher.update(shared_secret);
    hasher.update(fixed_info);
    let mut block = Zeroizing::new([0u8; 48]);
    block.copy_from_slice(&hasher.finalize());
    Zeroizing::new(block[..32].to_vec())
}

/// The keys of one authenticated session. No `Debug` output shows them.
pub struct SessionKeys {
    transcript_hash: [u8; TRANSCRIPT_HASH_LEN],
    kbpk: SecretKey,
    confirmation: SecretKey,
    result_mac: SecretKey,
}

impl SessionKeys {
    /// Derives the session keys from the shared secret, both nonces and the transcript hash.
    pub fn derive(
        shared_secret: &[u8],
        station_nonce: &[u8; NONCE_LEN],
        terminal_nonce: &[u8; NONCE_LEN],
        transcript_hash: [u8; TRANSCRIPT_HASH_LEN],
    ) -> Self {
        let derive = |purpose| {
            let info = fixed_info(purpose, station_nonce, terminal_nonce, &transcript_hash);
            let bytes = one_step_kdf_sha384(shared_secret, &info);
            SecretKey::new(KeyAlgorithm::Aes256, bytes)
                .expect("the KDF returns 32 bytes, the length of an AES-256 key")
        };
        Self {
            transcript_hash,
            kbpk: derive(KeyPurpose::Kbpk),
            confirmation: derive(KeyPurpose::KeyConfirmation),
            result_mac: derive(KeyPurpose::LoadResultMac),
        }
    }

    /// The transcript hash the keys were derived from.
    pub fn transcript_hash(&self) -> &[u8; TRANSCRIPT_HASH_LEN] {
        &self.transcript_hash
    }

    /// The session's key block protection key, for LOAD_KEY's TR-31 version D block.
    pub fn kbpk(&self) -> &SecretKey {
        &self.kbpk
    }

    /// The terminal's key confirmation tag: `CMAC(KCK, "KC_2_V" || transcript hash)`.
    pub fn terminal_confirmation(&self) -> [u8; TAG_LEN] {
        self.confirmation_tag(b"KC_2_V")
    }

    /// The station's key confirmation tag: `CMAC(KCK, "KC_2_U" || transcript hash)`.
    pub fn station_confirmation(&self) -> [u8; TAG_LEN] {
        self.confirmation_tag(b"KC_2_U")
    }

    /// Checks the terminal's key confirmation tag in constant time.
    pub fn verify_terminal_confirmation(&self, tag: &[u8]) -> bool {
        tag.len() == TAG_LEN
            && verify_cmac(&self.confirmation, &self.confirmation_input(b"KC_2_V"), tag)
    }

    /// Checks the station's key confirmation tag in constant time.
    pub fn verify_station_confirmation(&self, tag: &[u8]) -> bool {
        tag.len() == TAG_LEN
            && verify_cmac(&self.confirmation, &self.confirmation_input(b"KC_2_U"), tag)
    }

    /// Computes the MAC of a LOAD_RESULT: AES-CMAC under the result MAC key over
    /// `"KIS LOAD_RESULT" || transcript hash || SHA-384(LOAD_KEY payload) || LOAD_RESULT payload
    /// before its mac field`.
    pub fn load_result_mac(&self, load_key_payload: &[u8], result_fields: &[u8]) -> [u8; TAG_LEN] {
        let tag = cmac(
            &self.result_mac,
            &self.load_result_input(load_key_payload, result_fields),
        );
        tag.try_into().expect("AES-CMAC tags are 16 bytes")
    }

    /// Checks a LOAD_RESULT MAC in constant time.
    pub fn verify_load_result_mac(
        &self,
        load_key_payload: &[u8],
        result_fields: &[u8],
        tag: &[u8],
    ) -> bool {
        tag.len() == TAG_LEN
            && verify_cmac(
                &self.result_mac,
                &self.load_result_input(load_key_payload, result_fields),
                tag,
            )
    }

    fn confirmation_tag(&self, label: &[u8]) -> [u8; TAG_LEN] {
        cmac(&self.confirmation, &self.confirmation_input(label))
            .try_into()
            .expect("AES-CMAC tags are 16 bytes")
    }

    fn confirmation_input(&self, label: &[u8]) -> Vec<u8> {
        let mut input = label.to_vec();
        input.extend_from_slice(&self.transcript_hash);
        input
    }

    fn load_result_input(&self, load_key_payload: &[u8], result_fields: &[u8]) -> Vec<u8> {
        let mut input = LOAD_RESULT_MAC_LABEL.to_vec();
        input.extend_from_slice(&self.transcript_hash);
        input.extend_from_slice(&Sha384::digest(load_key_payload));
        input.extend_from_slice(result_fields);
        input
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SessionKeys(transcript {})",
            hex::encode_upper(&self.transcript_hash[..8])
        )
    }
}

/// Signs the transcript hash as the terminal: ECDSA P-384 with SHA-384 over
/// `"KIS-KEX terminal signature" || transcript hash`, DER encoded.
pub fn sign_as_terminal(key: &SigningKey, transcript_hash: &[u8; TRANSCRIPT_HASH_LEN]) -> Vec<u8> {
    sign(key, TERMINAL_SIGNATURE_CONTEXT, transcript_hash)
}

/// Signs the transcript hash as the station: ECDSA P-384 with SHA-384 over
/// `"KIS-KEX station signature" || transcript hash`, DER encoded.
pub fn sign_as_station(key: &SigningKey, transcript_hash: &[u8; TRANSCRIPT_HASH_LEN]) -> Vec<u8> {
    sign(key, STATION_SIGNATURE_CONTEXT, transcript_hash)
}

/// Verifies the terminal's transcript signature.
pub fn verify_terminal_signature(
    key: &VerifyingKey,
    transcript_hash: &[u8; TRANSCRIPT_HASH_LEN],
    signature: &[u8],
) -> bool {
    verify(key, TERMINAL_SIGNATURE_CONTEXT, transcript_hash, signature)
}

/// Verifies the station's transcript signature.
pub fn verify_station_signature(
    key: &VerifyingKey,
    transcript_hash: &[u8; TRANSCRIPT_HASH_LEN],
    signature: &[u8],
) -> bool {
    verify(key, STATION_SIGNATURE_CONTEXT, transcript_hash, signature)
}

fn sign(key: &SigningKey, context: &[u8], transcript_hash: &[u8]) -> Vec<u8> {
    let mut message = context.to_vec();
    message.extend_from_slice(transcript_hash);
    let signature: DerSignature = key.sign(&message);
    signature.as_bytes().to_vec()
}

fn verify(key: &VerifyingKey, context: &[u8], transcript_hash: &[u8], signature: &[u8]) -> bool {
    let Ok(signature) = DerSignature::from_bytes(signature) else {
        return false;
    };
    let mut message = context.to_vec();
    message.extend_from_slice(transcript_hash);
    key.verify(&message, &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(byte: u8) -> EphemeralKeyPair {
        EphemeralKeyPair::from_scalar(&[byte; 48]).expect("valid scalar")
    }

    #[test]
    fn both_sides_compute_the_same_secret() {
        let station = pair(0x11);
        let terminal = pair(0x22);
        let station_z = station
            .shared_secret(&terminal.public_key(), "terminal")
            .expect("valid point");
        let terminal_z = terminal
            .shared_secret(&station.public_key(), "station")
            .expect("valid point");
        assert_eq!(station_z.as_slice(), terminal_z.as_slice());
        assert_eq!(station_z.len(), 48);
    }

    #[test]
    fn compressed_point_is_rejected() {
        let station = pair(0x11);
        let compressed = p384::SecretKey::from_slice(&[0x22; 48])
            .expect("valid scalar")
            .public_key()
            .to_sec1_bytes();
        let mut point = [0u8; 49];
        point.copy_from_slice(
            &p384::PublicKey::from_sec1_bytes(&compressed)
                .expect("point")
                .to_sec1_bytes()[..49],
        );
        point[0] = 0x02;
        let error = station.shared_secret(&point, "terminal").unwrap_err();
        assert_eq!(
            error,
            HandshakeError::InvalidEphemeralKey {
                side: "terminal",
                len: 49
            }
        );
    }

    #[test]
    fn off_curve_point_is_rejected() {
        let station = pair(0x11);
        let mut point = pair(0x22).public_key();
        point[96] ^= 0x01;
        assert!(station.shared_secret(&point, "terminal").is_err());
    }

    #[test]
    fn fixed_info_layout() {
        let info = fixed_info(KeyPurpose::Kbpk, &[0xAA; 32], &[0xBB; 32], &[0xCC; 48]);
        assert_eq!(info[0], 15);
        assert_eq!(&info[1..16], b"KIS-KBPK-AES256");
        assert_eq!(info[16], 32);
        assert_eq!(info[49], 32);
        assert_eq!(&info[82..86], &[0, 0, 1, 0]);
        assert_eq!(info.len(), 86 + 48);
    }

    #[test]
    fn session_keys_are_distinct() {
        let keys = SessionKeys::derive(&[7; 48], &[1; 32], &[2; 32], [3; 48]);
        assert!(!keys.kbpk.ct_eq(&keys.confirmation));
        assert!(!keys.kbpk.ct_eq(&keys.result_mac));
        assert!(!keys.confirmation.ct_eq(&keys.result_mac));
        assert_ne!(keys.terminal_confirmation(), keys.station_confirmation());
    }

    #[test]
    fn confirmation_tags_verify_only_their_side() {
        let keys = SessionKeys::derive(&[7; 48], &[1; 32], &[2; 32], [3; 48]);
        assert!(keys.verify_terminal_confirmation(&keys.terminal_confirmation()));
        assert!(keys.verify_station_confirmation(&keys.station_confirmation()));
        assert!(!keys.verify_terminal_confirmation(&keys.station_confirmation()));
        assert!(!keys.verify_terminal_confirmation(&keys.terminal_confirmation()[..8]));
    }

    #[test]
    fn signatures_do_not_reflect() {
        let key = SigningKey::from_slice(&[0x33; 48]).expect("valid scalar");
        let hash = [9u8; 48];
        let terminal_signature = sign_as_terminal(&key, &hash);
        assert!(verify_terminal_signature(
            key.verifying_key(),
            &hash,
            &terminal_signature
        ));
        assert!(!verify_station_signature(
            key.verifying_key(),
            &hash,
            &terminal_signature
        ));
        let mut other = hash;
        other[0] ^= 1;
        assert!(!verify_terminal_signature(
            key.verifying_key(),
            &other,
            &terminal_signature
        ));
    }

    #[test]
    fn debug_hides_keys() {
        let keys = SessionKeys::derive(&[7; 48], &[1; 32], &[2; 32], [3; 48]);
        assert_eq!(
            format!("{keys:?}"),
            "SessionKeys(transcript 0303030303030303)"
        );
        assert_eq!(format!("{:?}", pair(1)), "EphemeralKeyPair(..)");
    }
}
