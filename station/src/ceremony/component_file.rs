//! Key component files: how custodians bring components to a non-interactive ceremony.
//!
//! A component file is what a custodian's sealed envelope holds: which key the component belongs
//! to, whose it is, the component in hex, its check value, and the check value of the whole key
//! (printed on every custodian's form when the key was generated). The station checks both check
//! values when the component is entered. Files are written with mode 0600 and never overwritten.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::CeremonyError;
use crate::crypto::kcv::{Kcv, KcvMethod};
use crate::crypto::{KeyAlgorithm, SecretKey};

#[derive(Deserialize, Serialize, Zeroize, ZeroizeOnDrop)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ComponentText {
    key: String,
    custodian: String,
    algorithm: String,
    kcv_method: String,
    component: String,
    component_kcv: String,
    key_kcv: String,
}

/// A component read from a file, with the check values stated in it.
pub struct ComponentFile {
    /// Where the component was read from, for error messages.
    pub path: PathBuf,
    /// Label of the key the component belongs to.
    pub key_label: String,
    /// The custodian the component was issued to.
    pub custodian: String,
    /// The component itself.
    pub component: SecretKey,
    /// The component's check value as printed on the custodian's form.
    pub component_kcv: Kcv,
    /// The whole key's check value as printed on the custodian's form.
    pub key_kcv: Kcv,
}

impl ComponentFile {
    /// Reads a component file. Errors name the file and the field, never the component.
    pub fn read(path: &Path) -> Result<Self, CeremonyError> {
        let invalid = |reason: String| CeremonyError::InvalidComponentFile {
            path: path.display().to_string(),
            reason,
        };
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            CeremonyError::ReadComponentFile {
                path: path.display().to_string(),
                source,
            }
        })?);
        // The TOML error would quote the offending line, which may be the component: drop it.
        let parsed: ComponentText = toml::from_str(&text)
            .map_err(|error| invalid(format!("not a component file ({})", error.message())))?;
        let algorithm = KeyAlgorithm::from_name(&parsed.algorithm)
            .ok_or_else(|| invalid(format!("unknown algorithm {:?}", parsed.algorithm)))?;
        let method = KcvMethod::from_name(&parsed.kcv_method)
            .ok_or_else(|| invalid(format!("unknown kcv-method {:?}", parsed.kcv_method)))?;
        let component = SecretKey::from_hex(algorithm, &parsed.component)
            .map_err(|error| invalid(format!("component: {error}")))?;
        let component_kcv = Kcv::from_hex(method, &parsed.component_kcv)
            .map_err(|error| invalid(format!("component-kcv: {error}")))?;
        let key_kcv = Kcv::from_hex(method, &parsed.key_kcv)
            .map_err(|error| invalid(format!("key-kcv: {error}")))?;
        Ok(Self {
            path: path.to_owned(),
            key_label: parsed.key.clone(),
            custodian: parsed.custodian.clone(),
            component,
            component_kcv,
            key_kcv,
        })
    }

    /// Writes a new component file with mode 0600. An existing file is never overwritten.
    pub fn write(
        path: &Path,
        key_label: &str,
        custodian: &str,
        component: &SecretKey,
        key_kcv: &Kcv,
    ) -> Result<(), CeremonyError> {
        let method = key_kcv.method();
        let text = ComponentText {
            key: key_label.to_owned(),
            custodian: custodian.to_owned(),
            algorithm: component.algorithm().name().to_owned(),
            kcv_method: method.name().to_owned(),
            component: hex::encode_upper(component.expose()),
            component_kcv: Kcv::compute(component, method).to_hex(),
            key_kcv: key_kcv.to_hex(),
        };
        let body = Zeroizing::new(toml::to_string(&text).map_err(|error| {
            CeremonyError::InvalidComponentFile {
                path: path.display().to_string(),
                reason: error.to_string(),
            }
        })?);
        let header =
            "# Key component for a dual-control ceremony. Keep it sealed; never copy it.\n";
        let write_error = |source| CeremonyError::WriteComponentFile {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write_error)?;
        file.write_all(header.as_bytes()).map_err(write_error)?;
        file.write_all(body.as_bytes()).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        Ok(())
    }
}
