//! P-384 key pairs of the factory PKI: the CA's, the station's and devices' certificate keys.
//!
//! [`P384PrivateKey`] is the only type here that contains a private scalar. It zeroizes on drop,
//! has no `Clone` or `Display`, and its `Debug` shows only the public key's fingerprint. The
//! scalar leaves it only through [`P384PrivateKey::expose_scalar`], for wrapping under the vault's
//! master key.

use std::fmt;

use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p384::elliptic_curve::Generate;
use sha2::{Digest, Sha256};
use spki::{EncodePublicKey, SubjectPublicKeyInfoRef};
use zeroize::{Zeroize, Zeroizing};

use super::PkiError;
use super::oids;

/// Length of a P-384 private scalar in bytes.
pub const P384_SCALAR_LEN: usize = 48;

/// A P-384 private key (ECDSA signing with SHA-384, and the static key of ECDH).
pub struct P384PrivateKey {
    signing_key: SigningKey,
}

impl P384PrivateKey {
    /// Generates a key pair from the operating system's random number generator.
    pub fn generate() -> Result<Self, PkiError> {
        let signing_key =
            SigningKey::try_generate().map_err(|error| PkiError::Random(error.to_string()))?;
        Ok(Self { signing_key })
    }

    /// Takes a private scalar of 48 big-endian bytes. Zero and values not below the group order
    /// are rejected. The error never repeats the bytes.
    pub fn from_scalar(scalar: &[u8]) -> Result<Self, PkiError> {
        if scalar.len() != P384_SCALAR_LEN {
            return Err(PkiError::Build(format!(
                "a P-384 private scalar is {P384_SCALAR_LEN} bytes, not {}",
                scalar.len()
            )));
        }
        let signing_key = SigningKey::from_slice(scalar).map_err(|_| {
            PkiError::Build("the bytes are not a valid P-384 private scalar".to_owned())
        })?;
        Ok(Self { signing_key })
    }

    /// Returns the private scalar, 48 big-endian bytes. Every caller is a place where the clear private
    /// key is used.
    pub fn expose_scalar(&self) -> Zeroizing<[u8; P384_SCALAR_LEN]> {
        let mut scalar = Zeroizing::new([0u8; P384_SCALAR_LEN]);
        let mut field_bytes = self.signing_key.to_bytes();
        scalar.copy_from_slice(&field_bytes);
        field_bytes.zeroize();
        scalar
    }

    /// Returns the public key of the pair.
    pub fn public_key(&self) -> P384PublicKey {
        P384PublicKey {
            verifying_key: *self.signing_key.verifying_key(),
        }
    }

    /// Signs `message` with ECDSA over SHA-384 (RFC 6979 deterministic nonces) and returns the
    /// DER `Ecdsa-Sig-Value`, the form X.509 and the terminal protocol carry.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: DerSignature = self.signing_key.sign(message);
        signature.as_bytes().to_vec()
    }

    /// The key for the certificate builder.
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }
}

impl fmt::Debug for P384PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "P384PrivateKey(public key {})",
            self.public_key().fingerprint()
        )
    }
}

/// A P-384 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct P384PublicKey {
    verifying_key: VerifyingKey,
}

impl P384PublicKey {
    /// Parses a SubjectPublicKeyInfo, accepting only id-ecPublicKey on secp384r1. `owner` names
    /// the object that carries the key, for the error.
    pub fn from_spki(spki: SubjectPublicKeyInfoRef<'_>, owner: &str) -> Result<Self, PkiError> {
        let unsupported = |found: String| PkiError::UnsupportedKey {
            owner: owner.to_owned(),
            found,
        };
        if spki.algorithm.oid != oids::EC_PUBLIC_KEY {
            return Err(unsupported(oids::describe(&spki.algorithm.oid)));
        }
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|parameters| parameters.decode_as::<spki::ObjectIdentifier>().ok())
            .ok_or_else(|| unsupported("EC key without a named curve".to_owned()))?;
        if curve != oids::SECP384R1 {
            return Err(unsupported(format!("EC {}", oids::describe(&curve))));
        }
        let point = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| unsupported("EC key with a malformed public point".to_owned()))?;
        let verifying_key = VerifyingKey::from_sec1_bytes(point)
            .map_err(|_| unsupported("P-384 key whose point is not on the curve".to_owned()))?;
        Ok(Self { verifying_key })
    }

    /// Parses a SEC1 encoded point (uncompressed `04 || x || y` or compressed).
    pub fn from_sec1(point: &[u8]) -> Result<Self, PkiError> {
        let verifying_key =
            VerifyingKey::from_sec1_bytes(point).map_err(|_| PkiError::UnsupportedKey {
                owner: "the public key".to_owned(),
                found: "malformed or off-curve P-384 point".to_owned(),
            })?;
        Ok(Self { verifying_key })
    }

    /// Encodes the key as an uncompressed SEC1 point, 97 bytes.
    pub fn to_sec1(&self) -> Vec<u8> {
        self.verifying_key.to_sec1_bytes().to_vec()
    }

    /// Encodes the key as a DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Result<Vec<u8>, PkiError> {
        Ok(self
            .verifying_key
            .to_public_key_der()
            .map_err(|error| PkiError::Build(error.to_string()))?
            .into_vec())
    }

    /// SHA-256 over the DER SubjectPublicKeyInfo, as uppercase hex: the key's name in logs and
    /// audit events.
    pub fn fingerprint(&self) -> String {
        match self.to_spki_der() {
            Ok(der) => hex::encode_upper(Sha256::digest(der)),
            Err(_) => "unencodable".to_owned(),
        }
    }

    /// Verifies a DER ECDSA signature over `message` with SHA-384. Returns false for a signature
    /// that is malformed or does not match.
    pub fn verify(&self, message: &[u8], signature_der: &[u8]) -> bool {
        match DerSignature::from_bytes(signature_der) {
            Ok(signature) => self.verifying_key.verify(message, &signature).is_ok(),
            Err(_) => false,
        }
    }

    /// The key for the certificate builder.
    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying_key
    }
}

impl fmt::Debug for P384PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P384PublicKey({})", self.fingerprint())
    }
}
