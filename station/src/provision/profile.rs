//! Device profiles: one small TOML file per terminal model that names how the station loads it.
//!
//! ```toml
//! vendor = "Open Terminal Works"
//! model = "OTW-PP200"
//! key_exchange = "ecdh-p384"        # or "pre-shared"
//! transport_key = "line-transport"  # vault label; required for "pre-shared" only
//! slot = 1                          # key slot of the DUKPT initial key
//! baud = 115200                     # serial line speed
//! ```
//!
//! Files live in one folder (`device-profiles/` in the repository), so a line supervisor
//! reviews and versions them like ceremony scripts. Unknown fields are rejected, so a typo
//! never silently falls back to a default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// How the station gets a transport key to a terminal model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLoadMethod {
    /// Authenticated ECDH P-384 key exchange (protocol version 2); the key block is wrapped under
    /// the session's KBPK.
    EcdhP384,
    /// The key block is wrapped under a transport key that a ceremony loaded into the vault and
    /// the maker into the terminal.
    PreShared {
        /// Vault label of the transport key.
        transport_label: String,
    },
}

/// One terminal model's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceProfile {
    /// Vendor name as the terminal reports it in HELLO.
    pub vendor: String,
    /// Model name as the terminal reports it in HELLO.
    pub model: String,
    /// How the transport key is established.
    pub method: KeyLoadMethod,
    /// Key slot of the DUKPT initial key.
    pub slot: u8,
    /// Serial line speed in baud.
    pub baud: u32,
}

/// Errors in reading device profiles: the operator's files are wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// A profile file or the folder cannot be read.
    #[error(
        "failed to read device profile {path}: {reason}; a relative path is read from the current folder, so pass --profiles with the folder of profile files"
    )]
    Read {
        /// File or folder.
        path: PathBuf,
        /// The operating system's error.
        reason: String,
    },
    /// A profile is not valid TOML of the expected shape.
    #[error("device profile {source_name} is invalid: {reason}")]
    Invalid {
        /// File name, or `built-in`.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// Two profiles name the same vendor and model.
    #[error("device profiles {first} and {second} both describe {vendor} {model}; remove one")]
    Duplicate {
        /// Vendor.
        vendor: String,
        /// Model.
        model: String,
        /// First file.
        first: String,
        /// Second file.
        second: String,
    },
    /// No profile describes the model a terminal reported.
    #[error(
        "no device profile describes {vendor} {model}; add a profile for the model to the \
         device profiles folder before provisioning it"
    )]
    UnknownModel {
        /// Vendor the terminal reported.
        vendor: String,
        /// Model the terminal reported.
        model: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    vendor: String,
    model: String,
    key_exchange: String,
    transport_key: Option<String>,
    slot: u8,
    baud: u32,
}

/// The profiles of every model a line may meet.
#[derive(Debug, Clone, Default)]
pub struct DeviceProfiles {
    profiles: Vec<(String, DeviceProfile)>,
}

impl DeviceProfiles {
    /// Reads every `*.toml` file in `folder`.
    pub fn load_dir(folder: &Path) -> Result<Self, ProfileError> {
        let read_error = |path: &Path, error: std::io::Error| ProfileError::Read {
            path: path.to_owned(),
            reason: error.to_string(),
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(folder)
            .map_err(|error| read_error(folder, error))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| {
                path.extension()
                    .is_some_and(|extension| extension == "toml")
            })
            .collect();
        paths.sort();
        let mut profiles = Self::default();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|error| read_error(&path, error))?;
            profiles.add(&path.display().to_string(), &text)?;
        }
        Ok(profiles)
    }

    /// Parses one profile's TOML text and adds it; `source_name` names it in errors.
    pub fn add(&mut self, source_name: &str, text: &str) -> Result<(), ProfileError> {
        let invalid = |reason: String| ProfileError::Invalid {
            source_name: source_name.to_owned(),
            reason,
        };
        let file: ProfileFile = toml::from_str(text).map_err(|error| invalid(error.to_string()))?;
        let method = match (file.key_exchange.as_str(), file.transport_key) {
            ("ecdh-p384", None) => KeyLoadMethod::EcdhP384,
            ("ecdh-p384", Some(_)) => {
                return Err(invalid(
                    "transport_key is only for key_exchange = \"pre-shared\"".to_owned(),
                ));
            }
            ("pre-shared", Some(transport_label)) => KeyLoadMethod::PreShared { transport_label },
            ("pre-shared", None) => {
                return Err(invalid(
                    "key_exchange = \"pre-shared\" needs transport_key, the vault label of the \
                     transport key"
                        .to_owned(),
                ));
            }
            (other, _) => {
                return Err(invalid(format!(
                    "key_exchange is {other:?}; use \"ecdh-p384\" or \"pre-shared\""
                )));
            }
        };
        if file.baud == 0 {
            return Err(invalid("baud must be greater than 0".to_owned()));
        }
        let profile = DeviceProfile {
            vendor: file.vendor,
            model: file.model,
            method,
            slot: file.slot,
            baud: file.baud,
        };
        if let Some((first, _)) = self.profiles.iter().find(|(_, existing)| {
            existing.vendor == profile.vendor && existing.model == profile.model
        }) {
            return Err(ProfileError::Duplicate {
                vendor: profile.vendor,
                model: profile.model,
                first: first.clone(),
                second: source_name.to_owned(),
            });
        }
        self.profiles.push((source_name.to_owned(), profile));
        Ok(())
    }

    /// Returns the profile of `vendor` `model`.
    pub fn find(&self, vendor: &str, model: &str) -> Result<&DeviceProfile, ProfileError> {
        self.profiles
            .iter()
            .map(|(_, profile)| profile)
            .find(|profile| profile.vendor == vendor && profile.model == model)
            .ok_or_else(|| ProfileError::UnknownModel {
                vendor: vendor.to_owned(),
                model: model.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECC: &str =
        "vendor = \"V\"\nmodel = \"M\"\nkey_exchange = \"ecdh-p384\"\nslot = 1\nbaud = 9600\n";

    #[test]
    fn ecc_profile_parses() {
        let mut profiles = DeviceProfiles::default();
        profiles.add("m.toml", ECC).expect("valid profile");
        let profile = profiles.find("V", "M").expect("found");
        assert_eq!(profile.method, KeyLoadMethod::EcdhP384);
        assert_eq!(profile.baud, 9600);
    }

    #[test]
    fn pre_shared_without_label_is_rejected() {
        let text = ECC.replace("ecdh-p384", "pre-shared");
        let error = DeviceProfiles::default().add("m.toml", &text).unwrap_err();
        assert!(error.to_string().contains("needs transport_key"), "{error}");
    }

    #[test]
    fn unknown_method_names_value() {
        let text = ECC.replace("ecdh-p384", "rsa");
        let error = DeviceProfiles::default().add("m.toml", &text).unwrap_err();
        assert!(error.to_string().contains("\"rsa\""), "{error}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let error = DeviceProfiles::default()
            .add("m.toml", &format!("{ECC}speed = 1\n"))
            .unwrap_err();
        assert!(error.to_string().contains("speed"), "{error}");
    }

    #[test]
    fn duplicate_model_is_rejected() {
        let mut profiles = DeviceProfiles::default();
        profiles.add("a.toml", ECC).expect("first");
        let error = profiles.add("b.toml", ECC).unwrap_err();
        assert!(matches!(error, ProfileError::Duplicate { .. }), "{error}");
    }

    #[test]
    fn unknown_model_names_it() {
        let error = DeviceProfiles::default().find("V", "X").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("no device profile describes V X"),
            "{error}"
        );
    }

    #[test]
    fn shipped_profiles_parse() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-profiles");
        let profiles = DeviceProfiles::load_dir(&folder).expect("shipped profiles");
        assert_eq!(
            profiles
                .find("Open Terminal Works", "OTW-PP200")
                .expect("PP200")
                .method,
            KeyLoadMethod::EcdhP384
        );
        assert!(matches!(
            profiles
                .find("Open Terminal Works", "OTW-PP100")
                .expect("PP100")
                .method,
            KeyLoadMethod::PreShared { .. }
        ));
    }
}
