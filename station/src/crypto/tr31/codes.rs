//! Header field codes of ANSI X9.143: version, key usage, algorithm, mode of use,
//! exportability and key context as enums, and the key version number.

use std::fmt;

use super::Tr31Error;
use crate::crypto::KeyAlgorithm;

macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $field:literal {
            $( $(#[$variant_meta:meta])* $variant:ident = $code:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$variant_meta])* $variant, )*
        }

        impl $name {
            /// Every value, in the order of the standard's table.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// Returns the code as it appears in the header.
            pub fn code_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }

            /// Parses a header code.
            pub fn from_code_str(code: &str) -> Result<Self, Tr31Error> {
                match code {
                    $($code => Ok(Self::$variant),)*
                    _ => Err(Tr31Error::UnknownCode {
                        field: $field,
                        code: code.to_owned(),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.code_str())
            }
        }
    };
}

code_enum! {
    /// Key block version ID, ANSI X9.143 and ISO 20038.
    KeyBlockVersion, "version" {
        /// TDES key variant binding (deprecated).
        A = "A",
        /// TDES key derivation binding.
        B = "B",
        /// TDES key variant binding.
        C = "C",
        /// AES key derivation binding.
        D = "D",
        /// ISO 20038 AES key block.
        E = "E",
    }
}

impl KeyBlockVersion {
    /// The version ID as a character.
    pub fn code(self) -> char {
        self.code_str()
            .chars()
            .next()
            .expect("version codes are one character")
    }
}

code_enum! {
    /// Key usage, ANSI X9.143.
    KeyUsage, "key usage" {
        /// `B0`: base derivation key (BDK).
        Bdk = "B0",
        /// `B1`: initial DUKPT key (IPEK or AES DUKPT initial key).
        InitialDukptKey = "B1",
        /// `B2`: base key variant key.
        BaseKeyVariantKey = "B2",
        /// `B3`: key derivation key (non-X9.24).
        KeyDerivationKey = "B3",
        /// `C0`: card verification key.
        CardVerificationKey = "C0",
        /// `D0`: symmetric key for data encryption.
        DataEncryption = "D0",
        /// `D1`: asymmetric key for data encryption.
        AsymmetricDataEncryption = "D1",
        /// `D2`: data encryption key for decimalization tables.
        DecimalizationTable = "D2",
        /// `D3`: data encryption key for sensitive data.
        SensitiveDataEncryption = "D3",
        /// `E0`: EMV/chip issuer master key for application cryptograms.
        EmvApplicationCryptograms = "E0",
        /// `E1`: EMV/chip issuer master key for secure messaging confidentiality.
        EmvSecureMessagingConfidentiality = "E1",
        /// `E2`: EMV/chip issuer master key for secure messaging integrity.
        EmvSecureMessagingIntegrity = "E2",
        /// `E3`: EMV/chip issuer master key for data authentication codes.
        EmvDataAuthenticationCode = "E3",
        /// `E4`: EMV/chip issuer master key for dynamic numbers.
        EmvDynamicNumbers = "E4",
        /// `E5`: EMV/chip issuer master key for card personalization.
        EmvCardPersonalization = "E5",
        /// `E6`: EMV/chip issuer master key, other.
        EmvOther = "E6",
        /// `I0`: initialization vector.
        InitializationVector = "I0",
        /// `K0`: key encryption or wrapping key (KEK).
        KeyEncryptionKey = "K0",
        /// `K1`: TR-31 key block protection key (KBPK).
        KeyBlockProtectionKey = "K1",
        /// `K2`: TR-34 asymmetric key.
        Tr34AsymmetricKey = "K2",
        /// `K3`: asymmetric key for key agreement or key wrapping.
        AsymmetricKeyAgreement = "K3",
        /// `K4`: ISO 20038 key block protection key.
        Iso20038KeyBlockProtectionKey = "K4",
        /// `M0`: ISO 16609 MAC algorithm 1 (TDES).
        MacIso16609 = "M0",
        /// `M1`: ISO 9797-1 MAC algorithm 1.
        MacIso9797Algorithm1 = "M1",
        /// `M2`: ISO 9797-1 MAC algorithm 2.
        MacIso9797Algorithm2 = "M2",
        /// `M3`: ISO 9797-1 MAC algorithm 3.
        MacIso9797Algorithm3 = "M3",
        /// `M4`: ISO 9797-1 MAC algorithm 4.
        MacIso9797Algorithm4 = "M4",
        /// `M5`: ISO 9797-1:1999 MAC algorithm 5.
        MacIso9797Algorithm5 = "M5",
        /// `M6`: ISO 9797-1:2011 MAC algorithm 5 (CMAC).
        MacCmac = "M6",
        /// `M7`: HMAC.
        MacHmac = "M7",
        /// `M8`: ISO 9797-1:2011 MAC algorithm 6.
        MacIso9797Algorithm6 = "M8",
        /// `P0`: PIN encryption.
        PinEncryption = "P0",
        /// `P1`: PIN generation.
        PinGeneration = "P1",
        /// `S0`: asymmetric key pair for digital signatures.
        Signature = "S0",
        /// `S1`: asymmetric key pair, CA key.
        CertificateAuthority = "S1",
        /// `S2`: asymmetric key pair, non-X9.24 key.
        AsymmetricOther = "S2",
        /// `V0`: PIN verification key, other algorithm.
        PinVerificationOther = "V0",
        /// `V1`: PIN verification key, IBM 3624.
        PinVerificationIbm3624 = "V1",
        /// `V2`: PIN verification key, Visa PVV.
        PinVerificationVisaPvv = "V2",
        /// `V3`: PIN verification key, X9.132 algorithm 1.
        PinVerificationX9132Algorithm1 = "V3",
        /// `V4`: PIN verification key, X9.132 algorithm 2.
        PinVerificationX9132Algorithm2 = "V4",
    }
}

code_enum! {
    /// Algorithm of the wrapped key, ANSI X9.143.
    KeyBlockAlgorithm, "algorithm" {
        /// `A`: AES.
        Aes = "A",
        /// `D`: single DES.
        Des = "D",
        /// `E`: elliptic curve.
        EllipticCurve = "E",
        /// `H`: HMAC.
        Hmac = "H",
        /// `R`: RSA.
        Rsa = "R",
        /// `S`: DSA.
        Dsa = "S",
        /// `T`: triple DES.
        Tdes = "T",
    }
}

impl KeyBlockAlgorithm {
    /// Returns the header algorithm for a symmetric key algorithm.
    pub fn for_key(algorithm: KeyAlgorithm) -> Self {
        if algorithm.is_aes() {
            Self::Aes
        } else {
            Self::Tdes
        }
    }
}

code_enum! {
    /// Mode of use, ANSI X9.143.
    ModeOfUse, "mode of use" {
        /// `B`: encrypt/wrap and decrypt/unwrap.
        EncryptDecrypt = "B",
        /// `C`: generate and verify (MAC).
        GenerateVerify = "C",
        /// `D`: decrypt/unwrap only.
        DecryptOnly = "D",
        /// `E`: encrypt/wrap only.
        EncryptOnly = "E",
        /// `G`: generate only.
        GenerateOnly = "G",
        /// `N`: no special restrictions.
        NoRestrictions = "N",
        /// `S`: signature only.
        SignatureOnly = "S",
        /// `T`: sign and decrypt.
        SignDecrypt = "T",
        /// `V`: verify only.
        VerifyOnly = "V",
        /// `X`: derive other keys.
        Derive = "X",
        /// `Y`: create key variants.
        CreateVariants = "Y",
    }
}

code_enum! {
    /// Exportability, ANSI X9.143.
    Exportability, "exportability" {
        /// `E`: exportable under a KEK in a form meeting X9.24.
        Exportable = "E",
        /// `N`: not exportable.
        NonExportable = "N",
        /// `S`: sensitive; exportable under a KEK in a form not necessarily meeting X9.24.
        Sensitive = "S",
    }
}

code_enum! {
    /// Key context, ANSI X9.143 (the first reserved character in TR-31).
    KeyContext, "key context" {
        /// `0`: determined by the wrapping key.
        Unspecified = "0",
        /// `1`: storage context only.
        Storage = "1",
        /// `2`: key exchange context only.
        Exchange = "2",
    }
}

/// Key version number: two letters or digits; `00` means the key has no version and a leading
/// `c` marks a key component (ANSI X9.143).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyVersionNumber([u8; 2]);

impl KeyVersionNumber {
    /// The version number of a key without a version, `00`.
    pub const NONE: Self = Self(*b"00");

    /// Parses two letters or digits.
    pub fn new(text: &str) -> Result<Self, Tr31Error> {
        let bytes = text.as_bytes();
        if bytes.len() != 2 || !bytes.iter().all(u8::is_ascii_alphanumeric) {
            return Err(Tr31Error::InvalidKeyVersion {
                text: text.to_owned(),
            });
        }
        Ok(Self([bytes[0], bytes[1]]))
    }

    /// Returns the two characters.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("checked to be ASCII when built")
    }
}

impl fmt::Display for KeyVersionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
