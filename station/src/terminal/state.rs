//! The simulated terminal's secure storage, kept in a JSON file.
//!
//! A real terminal keeps loaded keys inside its secure element and never lets them out. The
//! simulator has no secure element, so this file plays its part: it contains the clear keys the
//! simulated device stored, with their slot and initial key ID. For a version 2 terminal it also
//! contains the certificate key pair (the private scalar in the clear), the certificate and the
//! factory CA root the terminal trusts. It is the simulated device, not
//! part of the station, and belongs only on test and demonstration machines. It is written with
//! mode 0600 and replaced atomically (write a temporary file, then rename).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::error::SimulatorError;
use crate::crypto::dukpt::aes::InitialKeyId;
use crate::crypto::{KeyAlgorithm, SecretKey};
use crate::pki::P384PrivateKey;

/// One key in the simulated device's storage.
#[derive(Debug)]
pub struct StoredKey {
    /// Key slot.
    pub slot: u8,
    /// Initial key ID the key was loaded with.
    pub initial_key_id: InitialKeyId,
    /// The clear key.
    pub key: SecretKey,
}

/// The simulated device's storage: its loaded keys by slot, and its certificate material.
#[derive(Debug, Default)]
pub struct DeviceState {
    keys: Vec<StoredKey>,
    /// Serial number of the device that wrote the file, so a file is not used for another.
    pub serial_number: Option<String>,
    /// The terminal's P-384 certificate key, generated on board.
    pub certificate_key: Option<P384PrivateKey>,
    /// The terminal's certificate chain in DER, its own certificate first.
    pub certificate_chain: Vec<Vec<u8>>,
    /// The factory CA certificate the terminal checks the station's certificate against.
    pub trusted_root: Option<Vec<u8>>,
}

/// On-disk form of one key. The clear key hex is zeroized when the record is dropped.
#[derive(Serialize, Deserialize)]
struct KeyRecord {
    slot: u8,
    initial_key_id: String,
    algorithm: KeyAlgorithm,
    key_hex: String,
}

impl Drop for KeyRecord {
    fn drop(&mut self) {
        self.key_hex.zeroize();
    }
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    /// Warning for people who open the file.
    note: String,
    keys: Vec<KeyRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    serial_number: Option<String>,
    /// Hex of the P-384 private scalar; zeroized when the record is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate_key_hex: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    certificate_chain_hex: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trusted_root_hex: Option<String>,
}

impl Drop for StateFile {
    fn drop(&mut self) {
        if let Some(key) = &mut self.certificate_key_hex {
            key.zeroize();
        }
    }
}

const NOTE: &str = "Simulated terminal storage: a real terminal keeps these keys in its secure \
                    element. Test and demonstration use only.";

impl DeviceState {
    /// Loads the state file at `path`; a file that does not exist yet is an empty device.
    pub fn load(path: &Path) -> Result<Self, SimulatorError> {
        let error = |reason: String| SimulatorError::StateFile {
            path: path.to_owned(),
            reason,
        };
        let mut text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(io) if io.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(io) => return Err(error(format!("failed to read: {io}"))),
        };
        let parsed: Result<StateFile, _> = serde_json::from_str(&text);
        text.zeroize();
        // serde_json's messages give line and column only, never the text, so no key leaks.
        let file = parsed.map_err(|parse| error(format!("invalid JSON: {parse}")))?;

        let mut keys = Vec::with_capacity(file.keys.len());
        for record in &file.keys {
            let initial_key_id = InitialKeyId::from_hex(&record.initial_key_id).map_err(|_| {
                error(format!(
                    "slot {}: initial_key_id is not 16 hex digits",
                    record.slot
                ))
            })?;
            let key = SecretKey::from_hex(record.algorithm, &record.key_hex)
                .map_err(|key_error| error(format!("slot {}: {key_error}", record.slot)))?;
            keys.push(StoredKey {
                slot: record.slot,
                initial_key_id,
                key,
            });
        }
        let certificate_key = match &file.certificate_key_hex {
            None => None,
            Some(text) => {
                let scalar = Zeroizing::new(
                    hex::decode(text)
                        .map_err(|_| error("certificate_key_hex is not hex".to_owned()))?,
                );
                Some(P384PrivateKey::from_scalar(&scalar).map_err(|_| {
                    error("certificate_key_hex is not a P-384 private scalar".to_owned())
                })?)
            }
        };
        let decode = |field: &str, text: &str| {
            hex::decode(text).map_err(|_| error(format!("{field} is not hex")))
        };
        let certificate_chain = file
            .certificate_chain_hex
            .iter()
            .map(|text| decode("certificate_chain_hex", text))
            .collect::<Result<Vec<_>, _>>()?;
        let trusted_root = file
            .trusted_root_hex
            .as_deref()
            .map(|text| decode("trusted_root_hex", text))
            .transpose()?;
        Ok(Self {
            keys,
            serial_number: file.serial_number.clone(),
            certificate_key,
            certificate_chain,
            trusted_root,
        })
    }

    /// Writes the state to `path` atomically, with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), SimulatorError> {
        let error = |reason: String| SimulatorError::StateFile {
            path: path.to_owned(),
            reason,
        };
        let file = StateFile {
            note: NOTE.to_owned(),
            keys: self
                .keys
                .iter()
                .map(|stored| KeyRecord {
                    slot: stored.slot,
                    initial_key_id: stored.initial_key_id.to_hex(),
                    algorithm: stored.key.algorithm(),
                    key_hex: hex::encode_upper(stored.key.expose()),
                })
                .collect(),
            serial_number: self.serial_number.clone(),
            certificate_key_hex: self
                .certificate_key
                .as_ref()
                .map(|key| hex::encode_upper(key.expose_scalar().as_slice())),
            certificate_chain_hex: self
                .certificate_chain
                .iter()
                .map(hex::encode_upper)
                .collect(),
            trusted_root_hex: self.trusted_root.as_ref().map(hex::encode_upper),
        };
        let mut text = serde_json::to_string_pretty(&file)
            .map_err(|serialize| error(format!("failed to serialize: {serialize}")))?;
        drop(file);

        let temporary = temporary_path(path);
        let written = write_private(&temporary, text.as_bytes());
        text.zeroize();
        written.map_err(|io| error(format!("failed to write {}: {io}", temporary.display())))?;
        fs::rename(&temporary, path).map_err(|io| error(format!("failed to replace: {io}")))
    }

    /// Number of keys stored.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Keys stored, in slot order.
    pub fn keys(&self) -> &[StoredKey] {
        &self.keys
    }

    /// Returns the key in `slot`, if any.
    pub fn key_in_slot(&self, slot: u8) -> Option<&StoredKey> {
        self.keys.iter().find(|stored| stored.slot == slot)
    }

    /// Puts `stored` in its slot and returns the key it replaced, if the slot was in use.
    pub fn insert(&mut self, stored: StoredKey) -> Option<StoredKey> {
        let replaced = match self
            .keys
            .iter()
            .position(|existing| existing.slot == stored.slot)
        {
            Some(index) => Some(self.keys.remove(index)),
            None => None,
        };
        let position = self
            .keys
            .partition_point(|existing| existing.slot < stored.slot);
        self.keys.insert(position, stored);
        replaced
    }

    /// Removes the key in `slot` and returns it.
    pub fn remove(&mut self, slot: u8) -> Option<StoredKey> {
        let index = self
            .keys
            .iter()
            .position(|existing| existing.slot == slot)?;
        Some(self.keys.remove(index))
    }
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_file() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("terminal.json");
        let mut state = DeviceState::default();
        let key = SecretKey::from_hex(KeyAlgorithm::Aes128, "2B7E151628AED2A6ABF7158809CF4F3C")
            .expect("valid key");
        let initial_key_id = InitialKeyId::from_hex("0123456789ABCDEF").expect("valid ID");
        state.insert(StoredKey {
            slot: 2,
            initial_key_id,
            key,
        });
        state.save(&path).expect("save");

        let loaded = DeviceState::load(&path).expect("load");
        let stored = loaded.key_in_slot(2).expect("slot 2 is filled");
        assert_eq!(stored.initial_key_id, initial_key_id);
        assert_eq!(
            hex::encode_upper(stored.key.expose()),
            "2B7E151628AED2A6ABF7158809CF4F3C"
        );
        let mode = fs::metadata(&path).expect("metadata").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn certificate_material_round_trips() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("terminal.json");
        let key = P384PrivateKey::from_scalar(&[0x42; 48]).expect("valid scalar");
        let public_key = key.public_key();
        let state = DeviceState {
            serial_number: Some("SN-1".to_owned()),
            certificate_key: Some(key),
            certificate_chain: vec![vec![0x30, 0x00]],
            trusted_root: Some(vec![0x30, 0x01, 0x00]),
            ..DeviceState::default()
        };
        state.save(&path).expect("save");

        let loaded = DeviceState::load(&path).expect("load");
        assert_eq!(loaded.serial_number.as_deref(), Some("SN-1"));
        assert_eq!(
            loaded.certificate_key.expect("key").public_key(),
            public_key
        );
        assert_eq!(loaded.certificate_chain, [vec![0x30, 0x00]]);
        assert_eq!(loaded.trusted_root, Some(vec![0x30, 0x01, 0x00]));
    }

    #[test]
    fn invalid_certificate_key_names_field() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("terminal.json");
        fs::write(
            &path,
            r#"{"note": "", "keys": [], "certificate_key_hex": "00"}"#,
        )
        .expect("write");
        let error = DeviceState::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("certificate_key_hex is not a P-384 private scalar"),
            "{error}"
        );
    }

    #[test]
    fn missing_state_file_is_empty_device() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let state = DeviceState::load(&directory.path().join("absent.json")).expect("load");
        assert!(state.keys().is_empty());
    }

    #[test]
    fn corrupt_state_file_names_path() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("terminal.json");
        fs::write(&path, "{ not json").expect("write");
        let error = DeviceState::load(&path).unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("simulated terminal state file {}", path.display())),
            "{text}"
        );
        assert!(text.contains("invalid JSON"), "{text}");
    }

    #[test]
    fn insert_replaces_key_in_same_slot() {
        let mut state = DeviceState::default();
        let id = InitialKeyId::from_hex("0000000100000001").expect("valid ID");
        for byte in [1u8, 2] {
            let key = SecretKey::from_slice(KeyAlgorithm::Aes128, &[byte; 16]).expect("key");
            let replaced = state.insert(StoredKey {
                slot: 0,
                initial_key_id: id,
                key,
            });
            assert_eq!(replaced.is_some(), byte == 2);
        }
        assert_eq!(state.keys().len(), 1);
        assert_eq!(state.keys()[0].key.expose(), &[2u8; 16]);
    }
}
