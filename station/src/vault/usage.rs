//! Usage and life-cycle status of vault keys.

use std::fmt;

use super::VaultError;
use crate::crypto::KeyAlgorithm;

/// Permitted use of a key in the vault. The vault enforces it: a BDK only derives device
/// keys, a transport key only wraps keys sent to terminals, and a KEK only wraps keys exchanged
/// with other HSMs (imports into the token, exports to the payment host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyUsage {
    /// Base derivation key for DUKPT.
    Bdk,
    /// Key block protection key shared with terminals that do not agree a session key.
    TransportKey,
    /// Key-encryption key shared with the payment host's HSM; it only wraps key exports.
    Kek,
}

impl KeyUsage {
    /// Returns the name used in ceremony scripts, the database and audit events.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bdk => "bdk",
            Self::TransportKey => "transport-key",
            Self::Kek => "kek",
        }
    }

    /// Parses a name produced by [`KeyUsage::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Bdk, Self::TransportKey, Self::Kek]
            .into_iter()
            .find(|usage| usage.name() == name)
    }

    /// Rejects algorithms this station cannot use for the usage yet: AES DUKPT BDKs must be AES,
    /// and transport keys and KEKs wrap version D key blocks, which need an AES key.
    pub fn check_algorithm(self, algorithm: KeyAlgorithm) -> Result<(), VaultError> {
        if algorithm.is_aes() {
            Ok(())
        } else {
            Err(VaultError::UnsupportedAlgorithm {
                usage: self,
                algorithm,
            })
        }
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Life-cycle status of a vault key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// In use.
    Active,
    /// Kept for the record, no longer used for new devices.
    Retired,
    /// Key block erased by a destroy ceremony.
    Destroyed,
}

impl KeyStatus {
    /// Returns the name stored in the database.
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Destroyed => "destroyed",
        }
    }

    /// Parses a name produced by [`KeyStatus::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Active, Self::Retired, Self::Destroyed]
            .into_iter()
            .find(|status| status.name() == name)
    }
}

impl fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
