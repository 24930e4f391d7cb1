//! Configuration of the PKCS#11 backend: the module to load, the token to use, where the user
//! PIN comes from, and the oldest firmware the site accepts.
//!
//! The PIN is read from a file or an environment variable, never from the command line, where
//! other users of the machine can read it in the process list. It is held only as a
//! `secrecy::SecretString` and never logged.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use secrecy::SecretString;
use zeroize::Zeroizing;

use super::Pkcs11Error;

/// Selector of the module's token that the station uses. Slot numbers are not stable (SoftHSM2 moves a
/// token to a new slot when it is initialised), so a token is found by its label or serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// The token label (`CKA_LABEL` of the token, without its space padding).
    Label(String),
    /// The token serial number, without its space padding.
    Serial(String),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(label) => write!(f, "label {label:?}"),
            Self::Serial(serial) => write!(f, "serial {serial:?}"),
        }
    }
}

/// Source of the token's user PIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file that contains the PIN; one trailing line break is ignored.
    File(PathBuf),
    /// An environment variable that contains the PIN.
    Env(String),
}

/// A firmware or hardware version as a token reports it: major and minor number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FirmwareVersion {
    /// Major version number.
    pub major: u8,
    /// Minor version number.
    pub minor: u8,
}

impl fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for FirmwareVersion {
    type Err = Pkcs11Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            Pkcs11Error::InvalidConfig(format!(
                "firmware version {text:?} is invalid; write MAJOR.MINOR with numbers from 0 to 255, such as \"2.6\""
            ))
        };
        let (major, minor) = text.trim().split_once('.').ok_or_else(invalid)?;
        Ok(Self {
            major: major.parse().map_err(|_| invalid())?,
            minor: minor.parse().map_err(|_| invalid())?,
        })
    }
}

/// Settings for reaching the station's PKCS#11 token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// Path of the vendor's PKCS#11 module (a shared library).
    pub module: PathBuf,
    /// The token to use.
    pub token: TokenSelector,
    /// Source of the user PIN.
    pub pin: PinSource,
    /// The oldest token firmware the site accepts; older firmware gets a warning.
    pub minimum_firmware: Option<FirmwareVersion>,
    /// Whether to derive AES DUKPT initial keys inside the token when it offers the mechanism.
    /// With `false`, BDKs are stored as key blocks under the token's master key and derivation
    /// runs in station memory, as on a token without the mechanism.
    pub derive_in_token: bool,
}

/// The TOML form of [`Pkcs11Config`].
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    module: PathBuf,
    token_label: Option<String>,
    token_serial: Option<String>,
    pin_file: Option<PathBuf>,
    pin_env: Option<String>,
    minimum_firmware: Option<String>,
    #[serde(default = "derive_in_token_default")]
    derive_in_token: bool,
}

fn derive_in_token_default() -> bool {
    true
}

impl Pkcs11Config {
    /// Parses the TOML configuration, for example:
    ///
    /// ```toml
    /// module = "/usr/lib/softhsm/libsofthsm2.so"
    /// token_label = "station"           # or token_serial = "..."
    /// pin_file = "/etc/station/hsm-pin" # or pin_env = "STATION_HSM_PIN"
    /// minimum_firmware = "2.6"          # optional
    /// derive_in_token = true            # optional, default true
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, Pkcs11Error> {
        let file: ConfigFile = toml::from_str(text)
            .map_err(|error| Pkcs11Error::InvalidConfig(error.message().to_owned()))?;
        let token = match (file.token_label, file.token_serial) {
            (Some(label), None) => TokenSelector::Label(label),
            (None, Some(serial)) => TokenSelector::Serial(serial),
            _ => {
                return Err(Pkcs11Error::InvalidConfig(
                    "give exactly one of token_label and token_serial".to_owned(),
                ));
            }
        };
        let pin = match (file.pin_file, file.pin_env) {
            (Some(path), None) => PinSource::File(path),
            (None, Some(name)) => PinSource::Env(name),
            _ => {
                return Err(Pkcs11Error::InvalidConfig(
                    "give exactly one of pin_file and pin_env; the PIN itself never goes in the configuration".to_owned(),
                ));
            }
        };
        let minimum_firmware = file
            .minimum_firmware
            .as_deref()
            .map(FirmwareVersion::from_str)
            .transpose()?;
        Ok(Self {
            module: file.module,
            token,
            pin,
            minimum_firmware,
            derive_in_token: file.derive_in_token,
        })
    }

    /// Reads and parses a TOML configuration file.
    pub fn load(path: &Path) -> Result<Self, Pkcs11Error> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            Pkcs11Error::InvalidConfig(format!("cannot read {}: {error}", path.display()))
        })?;
        Self::from_toml(&text).map_err(|error| match error {
            Pkcs11Error::InvalidConfig(reason) => {
                Pkcs11Error::InvalidConfig(format!("{}: {reason}", path.display()))
            }
            other => other,
        })
    }
}

impl PinSource {
    /// Reads the PIN. Errors name the file or variable, never the PIN.
    pub(super) fn read(&self) -> Result<SecretString, Pkcs11Error> {
        let text = match self {
            Self::File(path) => {
                warn_if_readable_by_others(path);
                let bytes = Zeroizing::new(std::fs::read(path).map_err(|error| {
                    Pkcs11Error::PinUnavailable(format!(
                        "cannot read PIN file {}: {error}",
                        path.display()
                    ))
                })?);
                let text = std::str::from_utf8(&bytes).map_err(|_| {
                    Pkcs11Error::PinUnavailable(format!(
                        "PIN file {} is not UTF-8 text",
                        path.display()
                    ))
                })?;
                Zeroizing::new(text.to_owned())
            }
            Self::Env(name) => Zeroizing::new(std::env::var(name).map_err(|_| {
                Pkcs11Error::PinUnavailable(format!(
                    "environment variable {name} is not set or not UTF-8"
                ))
            })?),
        };
        let pin = text.strip_suffix('\n').unwrap_or(&text);
        let pin = pin.strip_suffix('\r').unwrap_or(pin);
        if pin.is_empty() {
            return Err(Pkcs11Error::PinUnavailable(format!(
                "the PIN from {} is empty",
                self.describe()
            )));
        }
        Ok(SecretString::from(pin.to_owned()))
    }

    fn describe(&self) -> String {
        match self {
            Self::File(path) => format!("file {}", path.display()),
            Self::Env(name) => format!("environment variable {name}"),
        }
    }
}

/// Logs a warning when other users may read the PIN file, without refusing it: the operator may
/// rely on a group that only the station's service account belongs to.
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;

    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the PIN file is readable by other users; restrict it with chmod 600"
            );
        }
    }
}
