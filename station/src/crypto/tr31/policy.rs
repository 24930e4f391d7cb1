//! Key block policy: which key usage, algorithm and mode of use go together, how strong the
//! KBPK must be, and how a DUKPT key is identified.
//!
//! `wrap` enforces every rule, so the station never writes a block that breaks one. `unwrap`
//! rejects only a usage with the wrong algorithm family. Blocks from real systems break the
//! mode-of-use and identifier rules (the ISO 20038 example block carries `B0` with mode `V`), so
//! those are logged as warnings there.
//!
//! NOTE: the usage-to-mode table follows the usage descriptions of ANSI X9.143 and is
//! deliberately narrow; it has not been compared entry by entry with the standard's tables.

use super::codes::{KeyBlockAlgorithm, KeyUsage, ModeOfUse};
use super::header::KeyBlockHeader;
use super::{Tr31Error, key_algorithm_for};
use crate::crypto::KeyAlgorithm;

use KeyBlockAlgorithm as Alg;
use ModeOfUse as Mode;

const SYMMETRIC: &[Alg] = &[Alg::Aes, Alg::Tdes, Alg::Des];
const DUKPT: &[Alg] = &[Alg::Aes, Alg::Tdes];
const ASYMMETRIC: &[Alg] = &[Alg::Rsa, Alg::EllipticCurve, Alg::Dsa];
const ENCRYPTION_MODES: &[Mode] = &[Mode::EncryptDecrypt, Mode::DecryptOnly, Mode::EncryptOnly];
const MAC_MODES: &[Mode] = &[Mode::GenerateVerify, Mode::GenerateOnly, Mode::VerifyOnly];
const DERIVATION_MODES: &[Mode] = &[Mode::Derive];
const SIGNATURE_MODES: &[Mode] = &[
    Mode::SignatureOnly,
    Mode::SignDecrypt,
    Mode::VerifyOnly,
    Mode::GenerateVerify,
];

/// Returns the header algorithms a key of `usage` may have.
pub fn allowed_algorithms(usage: KeyUsage) -> &'static [KeyBlockAlgorithm] {
    use KeyUsage as U;
    match usage {
        U::Bdk | U::InitialDukptKey | U::BaseKeyVariantKey | U::KeyDerivationKey => DUKPT,
        U::MacHmac => &[Alg::Hmac],
        U::AsymmetricDataEncryption
        | U::Tr34AsymmetricKey
        | U::AsymmetricKeyAgreement
        | U::Signature
        | U::CertificateAuthority
        | U::AsymmetricOther => ASYMMETRIC,
        _ => SYMMETRIC,
    }
}

/// Returns the modes of use a key of `usage` may have, besides `N` (no special restrictions),
/// which every usage allows.
pub fn allowed_modes(usage: KeyUsage) -> &'static [ModeOfUse] {
    use KeyUsage as U;
    match usage {
        U::Bdk
        | U::InitialDukptKey
        | U::BaseKeyVariantKey
        | U::KeyDerivationKey
        | U::EmvApplicationCryptograms
        | U::EmvSecureMessagingConfidentiality
        | U::EmvSecureMessagingIntegrity
        | U::EmvDataAuthenticationCode
        | U::EmvDynamicNumbers
        | U::EmvCardPersonalization
        | U::EmvOther => DERIVATION_MODES,
        U::DataEncryption
        | U::AsymmetricDataEncryption
        | U::DecimalizationTable
        | U::SensitiveDataEncryption
        | U::KeyEncryptionKey
        | U::KeyBlockProtectionKey
        | U::Tr34AsymmetricKey
        | U::Iso20038KeyBlockProtectionKey
        | U::PinEncryption => ENCRYPTION_MODES,
        U::AsymmetricKeyAgreement => &[
            Mode::EncryptDecrypt,
            Mode::DecryptOnly,
            Mode::EncryptOnly,
            Mode::Derive,
        ],
        U::CardVerificationKey
        | U::MacIso16609
        | U::MacIso9797Algorithm1
        | U::MacIso9797Algorithm2
        | U::MacIso9797Algorithm3
        | U::MacIso9797Algorithm4
        | U::MacIso9797Algorithm5
        | U::MacCmac
        | U::MacHmac
        | U::MacIso9797Algorithm6
        | U::PinGeneration
        | U::PinVerificationOther
        | U::PinVerificationIbm3624
        | U::PinVerificationVisaPvv
        | U::PinVerificationX9132Algorithm1
        | U::PinVerificationX9132Algorithm2 => MAC_MODES,
        U::Signature | U::CertificateAuthority | U::AsymmetricOther => SIGNATURE_MODES,
        U::InitializationVector => &[],
    }
}

/// Checks a header and key before `wrap`: every rule is an error.
pub(super) fn check_wrap(
    header: &KeyBlockHeader,
    key: KeyAlgorithm,
    kbpk: KeyAlgorithm,
) -> Result<(), Tr31Error> {
    check_algorithm(header)?;
    if let Some(rule) = mode_violation(header) {
        return Err(Tr31Error::PolicyViolation { rule });
    }
    if let Some(rule) = identifier_violation(header) {
        return Err(Tr31Error::PolicyViolation { rule });
    }
    // X9.24-1 requires the protecting key to be at least as strong as the key it protects.
    if strength_bits(key) > strength_bits(kbpk) {
        return Err(Tr31Error::KbpkTooWeak { key, kbpk });
    }
    Ok(())
}

/// Checks the header of an unwrapped block: a wrong algorithm family is an error, the other
/// rules are warnings because real HSMs break them.
pub(super) fn check_unwrap(header: &KeyBlockHeader, key_len: usize) -> Result<(), Tr31Error> {
    check_algorithm(header)?;
    key_algorithm_for(header.algorithm(), key_len)?;
    for rule in [mode_violation(header), identifier_violation(header)]
        .into_iter()
        .flatten()
    {
        tracing::warn!(header = %header, rule, "key block breaks the key block policy; accepted");
    }
    Ok(())
}

fn check_algorithm(header: &KeyBlockHeader) -> Result<(), Tr31Error> {
    let usage = header.key_usage();
    if allowed_algorithms(usage).contains(&header.algorithm()) {
        return Ok(());
    }
    Err(Tr31Error::PolicyViolation {
        rule: format!(
            "key usage {usage} does not allow algorithm {}",
            header.algorithm()
        ),
    })
}

fn mode_violation(header: &KeyBlockHeader) -> Option<String> {
    let usage = header.key_usage();
    let mode = header.mode_of_use();
    if mode == Mode::NoRestrictions || allowed_modes(usage).contains(&mode) {
        return None;
    }
    let allowed: String = allowed_modes(usage)
        .iter()
        .map(|mode| mode.code_str())
        .chain(["N"])
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "key usage {usage} does not allow mode of use {mode}; use one of {allowed}"
    ))
}

/// ANSI X9.143 identifies an AES DUKPT key with `IK` and reserves `KS` for TDES DUKPT.
fn identifier_violation(header: &KeyBlockHeader) -> Option<String> {
    let dukpt = matches!(
        header.key_usage(),
        KeyUsage::Bdk | KeyUsage::InitialDukptKey
    );
    if dukpt && header.algorithm() == Alg::Aes && header.optional_block("KS").is_some() {
        return Some(format!(
            "an AES {} key block must identify the key with an IK block, not KS; KS is for TDES DUKPT",
            header.key_usage()
        ));
    }
    None
}

/// Returns the security strength of a key in bits, after NIST SP 800-57 part 1 table 2: 2-key
/// TDES 80, 3-key TDES 112, AES its key length.
fn strength_bits(algorithm: KeyAlgorithm) -> usize {
    match algorithm {
        KeyAlgorithm::Tdes2 => 80,
        KeyAlgorithm::Tdes3 => 112,
        aes => aes.key_len() * 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_usage_allows_some_algorithm() {
        for usage in KeyUsage::ALL {
            assert!(!allowed_algorithms(*usage).is_empty(), "{usage}");
        }
    }

    #[test]
    fn bdk_cannot_be_a_pin_key() {
        let header: KeyBlockHeader = "D0000B0AE00E0000".parse().unwrap();
        let error = check_wrap(&header, KeyAlgorithm::Aes128, KeyAlgorithm::Aes256).unwrap_err();
        assert_eq!(
            error.to_string(),
            "key block breaks the key block policy: key usage B0 does not allow mode of use E; use one of X, N"
        );
    }

    #[test]
    fn stronger_key_under_weaker_kbpk_is_rejected() {
        let header: KeyBlockHeader = "D0000K0AB00E0000".parse().unwrap();
        assert!(check_wrap(&header, KeyAlgorithm::Aes128, KeyAlgorithm::Aes128).is_ok());
        assert_eq!(
            check_wrap(&header, KeyAlgorithm::Aes256, KeyAlgorithm::Aes128).unwrap_err(),
            Tr31Error::KbpkTooWeak {
                key: KeyAlgorithm::Aes256,
                kbpk: KeyAlgorithm::Aes128
            }
        );
    }
}
