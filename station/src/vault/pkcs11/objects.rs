//! Secret keys as token objects: creating and unwrapping them with the station's template,
//! checking that template on every use, check values computed by the token, encrypt-data
//! derivation, and CMAC for the TR-31 key derivation.
//!
//! Every key the station puts in a token is a private, sensitive, non-extractable,
//! non-copyable AES token object, non-modifiable where the token allows it. Its use flags allow only what its vault usage
//! needs, plus `CKA_SIGN` for the CMAC that computes its check value, because a token returns no
//! check value of its own for an unwrapped key.

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::ekdf::AesCbcDeriveParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use zeroize::{Zeroize, Zeroizing};

use super::{Pkcs11Error, Token};
use crate::crypto::kcv::{Kcv, KcvMethod};
use crate::crypto::{KeyAlgorithm, SecretKey};

/// Permitted use of a token key, which sets its PKCS#11 use flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKeyUse {
    /// Derives device keys: `CKA_DERIVE`.
    Derive,
    /// Protects key blocks, whose key derivation is a CMAC: only `CKA_SIGN`.
    ProtectKeyBlocks,
    /// Unwraps keys imported at a ceremony: `CKA_UNWRAP`.
    Unwrap,
}

/// Returns the boolean attributes the station sets and checks, with their required values.
/// `CKA_MODIFIABLE` is set false on created keys but not checked, because SoftHSM2 cannot
/// unwrap a key with it false (see [`Token::unwrap_key`]).
fn template_flags(key_use: TokenKeyUse) -> [(AttributeType, &'static str, bool); 11] {
    [
        (AttributeType::Token, "CKA_TOKEN", true),
        (AttributeType::Private, "CKA_PRIVATE", true),
        (AttributeType::Sensitive, "CKA_SENSITIVE", true),
        (AttributeType::Extractable, "CKA_EXTRACTABLE", false),
        (AttributeType::Sign, "CKA_SIGN", true),
        (AttributeType::Verify, "CKA_VERIFY", false),
        (AttributeType::Encrypt, "CKA_ENCRYPT", false),
        (AttributeType::Decrypt, "CKA_DECRYPT", false),
        (AttributeType::Wrap, "CKA_WRAP", false),
        (
            AttributeType::Unwrap,
            "CKA_UNWRAP",
            key_use == TokenKeyUse::Unwrap,
        ),
        (
            AttributeType::Derive,
            "CKA_DERIVE",
            key_use == TokenKeyUse::Derive,
        ),
    ]
}

fn flag_attribute(attribute: AttributeType, value: bool) -> Attribute {
    match attribute {
        AttributeType::Token => Attribute::Token(value),
        AttributeType::Private => Attribute::Private(value),
        AttributeType::Sensitive => Attribute::Sensitive(value),
        AttributeType::Extractable => Attribute::Extractable(value),
        AttributeType::Sign => Attribute::Sign(value),
        AttributeType::Verify => Attribute::Verify(value),
        AttributeType::Encrypt => Attribute::Encrypt(value),
        AttributeType::Decrypt => Attribute::Decrypt(value),
        AttributeType::Wrap => Attribute::Wrap(value),
        AttributeType::Unwrap => Attribute::Unwrap(value),
        AttributeType::Derive => Attribute::Derive(value),
        other => unreachable!("template_flags lists only boolean attributes, not {other}"),
    }
}

/// Builds the full template of a new token key, without its value.
fn key_template(label: &str, key_use: TokenKeyUse) -> Vec<Attribute> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(label.as_bytes().to_vec()),
        Attribute::Copyable(false),
        Attribute::Modifiable(false),
    ];
    for (attribute, _, value) in template_flags(key_use) {
        template.push(flag_attribute(attribute, value));
    }
    template
}

/// The AES-CMAC of `data` under a token key, which a TR-31 key block uses as its protection key.
pub struct TokenKbpk<'a> {
    /// The token that contains the key.
    pub token: &'a Token,
    /// The key's handle.
    pub handle: ObjectHandle,
    /// The key's algorithm.
    pub algorithm: KeyAlgorithm,
}

impl crate::crypto::tr31::ExternalKbpk for TokenKbpk<'_> {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn cmac(&self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
        self.token
            .cmac(self.handle, data)
            .map_err(|error| error.to_string())
    }
}

impl Token {
    /// Finds the secret key labelled `label`, if the token has one.
    pub fn find_key(&self, label: &str) -> Result<Option<ObjectHandle>, Pkcs11Error> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let mut found = self
            .session()
            .find_objects(&template)
            .map_err(self.call_error("C_FindObjects"))?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            count => Err(Pkcs11Error::DuplicateObject {
                token: self.report.label.clone(),
                label: label.to_owned(),
                count,
            }),
        }
    }

    /// Creates a token key from a clear key formed in a ceremony (`C_CreateObject`). The copy of
    /// the key in the template is zeroized after the call.
    pub fn create_key(
        &self,
        label: &str,
        key_use: TokenKeyUse,
        key: &SecretKey,
    ) -> Result<ObjectHandle, Pkcs11Error> {
        self.require_aes(key.algorithm(), "C_CreateObject")?;
        let mut template = key_template(label, key_use);
        template.push(Attribute::Value(key.expose().to_vec()));
        let result = self.session().create_object(&template);
        for attribute in &mut template {
            if let Attribute::Value(bytes) = attribute {
                bytes.zeroize();
            }
        }
        let handle = result.map_err(self.call_error("C_CreateObject"))?;
        tracing::info!(token = %self.report.label, label, ?key_use, "created token key");
        Ok(handle)
    }

    /// Unwraps a key wrapped with AES key wrap (RFC 3394, `CKM_AES_KEY_WRAP`) under the token key
    /// `unwrapping_key` into a new token key. The caller checks the new key's length with
    /// [`Token::check_template`] and destroys it if the length is not `algorithm`'s.
    ///
    /// NOTE: SoftHSM2 2.6 fails `C_UnwrapKey` with `CKR_ATTRIBUTE_READ_ONLY` when the template
    /// sets `CKA_MODIFIABLE` false, and it allows neither `C_SetAttributeValue` nor
    /// `C_CopyObject` to clear it later. So an unwrapped key stays modifiable. The station's
    /// template check before every use catches any change to its use flags, and PKCS#11 lets
    /// `CKA_SENSITIVE` and `CKA_EXTRACTABLE` change only towards the safer value.
    pub fn unwrap_key(
        &self,
        label: &str,
        key_use: TokenKeyUse,
        algorithm: KeyAlgorithm,
        unwrapping_key: ObjectHandle,
        wrapped: &[u8],
    ) -> Result<ObjectHandle, Pkcs11Error> {
        self.require_aes(algorithm, "C_UnwrapKey")?;
        // CKA_VALUE_LEN is left out too, because SoftHSM2 rejects it as read-only on unwrap.
        let template: Vec<Attribute> = key_template(label, key_use)
            .into_iter()
            .map(|attribute| match attribute {
                Attribute::Modifiable(_) => Attribute::Modifiable(true),
                other => other,
            })
            .collect();
        let handle = self
            .session()
            .unwrap_key(&Mechanism::AesKeyWrap, unwrapping_key, wrapped, &template)
            .map_err(self.call_error("C_UnwrapKey"))?;
        tracing::info!(token = %self.report.label, label, ?key_use, "unwrapped key into the token");
        Ok(handle)
    }

    /// Checks that the key's attributes are exactly the station's template for `key_use`, and
    /// returns its algorithm if the token reports the key's length. Tokens such as SoftHSM2 let these attributes be set differently by
    /// other tools, so the station checks them before every use.
    pub fn check_template(
        &self,
        label: &str,
        handle: ObjectHandle,
        key_use: TokenKeyUse,
    ) -> Result<Option<KeyAlgorithm>, Pkcs11Error> {
        let flags = template_flags(key_use);
        let mut types: Vec<AttributeType> = flags.iter().map(|(kind, _, _)| *kind).collect();
        types.push(AttributeType::KeyType);
        types.push(AttributeType::ValueLen);
        let attributes = self
            .session()
            .get_attributes(handle, &types)
            .map_err(self.call_error("C_GetAttributeValue"))?;

        let mut key_type = None;
        let mut value_len = None;
        for attribute in &attributes {
            match attribute {
                Attribute::KeyType(kind) => key_type = Some(*kind),
                Attribute::ValueLen(len) => value_len = Some(usize::from(*len)),
                _ => {}
            }
        }
        for (kind, name, expected) in flags {
            let actual = attributes.iter().find_map(|attribute| match attribute {
                Attribute::Token(value)
                | Attribute::Private(value)
                | Attribute::Sensitive(value)
                | Attribute::Extractable(value)
                | Attribute::Sign(value)
                | Attribute::Verify(value)
                | Attribute::Encrypt(value)
                | Attribute::Decrypt(value)
                | Attribute::Wrap(value)
                | Attribute::Unwrap(value)
                | Attribute::Derive(value)
                    if attribute.attribute_type() == kind =>
                {
                    Some(*value)
                }
                _ => None,
            });
            // A token that does not report an attribute is treated as having it false, which is
            // the PKCS#11 default for every flag here.
            let actual = actual.unwrap_or(false);
            if actual != expected {
                return Err(Pkcs11Error::TemplateViolation {
                    label: label.to_owned(),
                    attribute: name,
                    actual,
                    expected,
                });
            }
        }

        // SoftHSM2 2.6 reports CKA_VALUE_LEN 0 for an unwrapped key, so a missing length is
        // left to the caller, whose check value comparison covers the key's length too.
        let algorithm = match (key_type, value_len) {
            (Some(KeyType::AES), Some(16)) => Some(KeyAlgorithm::Aes128),
            (Some(KeyType::AES), Some(24)) => Some(KeyAlgorithm::Aes192),
            (Some(KeyType::AES), Some(32)) => Some(KeyAlgorithm::Aes256),
            (Some(KeyType::AES), None | Some(0)) => None,
            (kind, len) => {
                return Err(Pkcs11Error::UnexpectedResult {
                    token: self.report.label.clone(),
                    operation: "C_GetAttributeValue",
                    reason: format!(
                        "object {label:?} has key type {kind:?} and length {len:?}; the station keeps only AES keys in the token"
                    ),
                });
            }
        };
        Ok(algorithm)
    }

    /// Computes a token key's 3-byte check value through the token: the CMAC of a zero block
    /// (`C_Sign` with `CKM_AES_CMAC`). The legacy method would need `CKA_ENCRYPT`, which the
    /// station's template does not grant.
    pub fn kcv(&self, handle: ObjectHandle) -> Result<Kcv, Pkcs11Error> {
        let mac = self.cmac(handle, &[0u8; 16])?;
        if mac.len() < 3 {
            return Err(Pkcs11Error::UnexpectedResult {
                token: self.report.label.clone(),
                operation: "C_Sign",
                reason: format!("the CMAC is {} bytes long", mac.len()),
            });
        }
        Kcv::from_hex(KcvMethod::Cmac, &hex::encode_upper(&mac[..3])).map_err(|error| {
            Pkcs11Error::UnexpectedResult {
                token: self.report.label.clone(),
                operation: "C_Sign",
                reason: error.to_string(),
            }
        })
    }

    /// Computes the AES-CMAC of `data` under a token key.
    pub fn cmac(
        &self,
        handle: ObjectHandle,
        data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Pkcs11Error> {
        let mac = self
            .session()
            .sign(&Mechanism::AesCMac, handle, data)
            .map_err(self.call_error("C_Sign"))?;
        Ok(Zeroizing::new(mac))
    }

    /// Derives an AES-128 key inside the token by encrypting one 16-byte block of derivation
    /// data under the base key, and returns the derived key in station memory.
    ///
    /// The mechanism is `CKM_AES_CBC_ENCRYPT_DATA` with a zero IV, which for one block is the
    /// same computation as `CKM_AES_ECB_ENCRYPT_DATA`. The ECB form cannot be named through
    /// cryptoki 0.12, whose escape hatch for unlisted mechanisms accepts only vendor-defined
    /// numbers (0x80000000 and above).
    ///
    /// The derived key exists in the token only as a session object, which is destroyed before
    /// this returns, also on error. It must be extractable, because a TR-31 key block's MAC
    /// covers the clear key and no PKCS#11 mechanism computes that MAC over a key object.
    pub fn derive_aes128(
        &self,
        base: ObjectHandle,
        data: &[u8; 16],
    ) -> Result<SecretKey, Pkcs11Error> {
        if !self.report.derives_in_token {
            return Err(Pkcs11Error::MechanismMissing {
                token: self.report.label.clone(),
                mechanism: "CKM_AES_CBC_ENCRYPT_DATA",
                operation: "deriving a key inside the token",
            });
        }
        let params = AesCbcDeriveParams::new([0u8; 16], data);
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(16.into()),
            Attribute::Token(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ];
        let session = self.session();
        let derived = session
            .derive_key(&Mechanism::AesCbcEncryptData(params), base, &template)
            .map_err(self.call_error("C_DeriveKey"))?;
        let value = session.get_attributes(derived, &[AttributeType::Value]);
        let destroyed = session.destroy_object(derived);
        let mut value = value.map_err(self.call_error("C_GetAttributeValue"))?;
        destroyed.map_err(self.call_error("C_DestroyObject"))?;

        let bytes = match value.pop() {
            Some(Attribute::Value(bytes)) => Zeroizing::new(bytes),
            _ => {
                return Err(Pkcs11Error::UnexpectedResult {
                    token: self.report.label.clone(),
                    operation: "C_GetAttributeValue",
                    reason: "the derived key's value is missing".to_owned(),
                });
            }
        };
        SecretKey::new(KeyAlgorithm::Aes128, bytes).map_err(|error| Pkcs11Error::UnexpectedResult {
            token: self.report.label.clone(),
            operation: "C_DeriveKey",
            reason: error.to_string(),
        })
    }

    /// Destroys a token object, for a key whose import failed its checks.
    pub fn destroy(&self, handle: ObjectHandle) -> Result<(), Pkcs11Error> {
        self.session()
            .destroy_object(handle)
            .map_err(self.call_error("C_DestroyObject"))
    }

    fn require_aes(
        &self,
        algorithm: KeyAlgorithm,
        operation: &'static str,
    ) -> Result<(), Pkcs11Error> {
        if algorithm.is_aes() {
            Ok(())
        } else {
            Err(Pkcs11Error::UnexpectedResult {
                token: self.report.label.clone(),
                operation,
                reason: format!(
                    "a {algorithm} key cannot be a token key; the station keeps only AES keys in the token"
                ),
            })
        }
    }
}
