//! The PKCS#11 backend of the key vault: top-level keys as non-extractable, sensitive objects in
//! a hardware token, reached through the vendor's PKCS#11 module with the `cryptoki` crate.
//!
//! A process has one PKCS#11 context per module, because a module's second `C_Initialize`
//! fails. [`context`] keeps that context for the life of the process, and every [`Token`] opened
//! from the same module shares it. A second `C_Login` on a token that this process is already
//! logged in to returns `CKR_USER_ALREADY_LOGGED_IN`, which [`Token::open`] counts as success.
//!
//! Tokens are found by label or serial, never by slot number, because slot numbers change:
//! SoftHSM2 moves a token to a new slot when it is initialised.
//!
//! The station enforces each key's template itself ([`objects`]), because SoftHSM2 and some
//! other tokens let a sensitive key produce an extractable one.

mod config;
mod error;
mod objects;

pub use config::{FirmwareVersion, PinSource, Pkcs11Config, TokenSelector};
pub use error::Pkcs11Error;
pub(crate) use objects::TokenKbpk;
pub use objects::TokenKeyUse;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

/// The process-wide contexts, one per module path.
static CONTEXTS: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());

/// Returns the process-wide context of `module`, loading and initialising the module on first
/// use. A module that another part of the process initialised already is accepted as it is.
pub fn context(module: &Path) -> Result<Pkcs11, Pkcs11Error> {
    let mut contexts = CONTEXTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, context)) = contexts.iter().find(|(path, _)| path == module) {
        return Ok(context.clone());
    }
    let load_error = |reason: String| Pkcs11Error::ModuleLoad {
        path: module.to_owned(),
        reason,
    };
    if !module.exists() {
        return Err(load_error("the file does not exist".to_owned()));
    }
    let context = Pkcs11::new(module).map_err(|error| load_error(error.to_string()))?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(error) => return Err(load_error(error.to_string())),
    }
    tracing::info!(module = %module.display(), "PKCS#11 module initialised");
    contexts.push((module.to_owned(), context.clone()));
    Ok(context)
}

/// Identity and versions of the station's token, as the station shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenReport {
    /// Token label.
    pub label: String,
    /// Token serial number.
    pub serial: String,
    /// Token manufacturer.
    pub manufacturer: String,
    /// Token model.
    pub model: String,
    /// Hardware version.
    pub hardware_version: FirmwareVersion,
    /// Firmware version.
    pub firmware_version: FirmwareVersion,
    /// The configured minimum, when the firmware is older than it.
    pub firmware_below_minimum: Option<FirmwareVersion>,
    /// The slot the token was found in. It can change between runs.
    pub slot_id: u64,
    /// Whether the token offers encrypt-data derivation, so AES DUKPT initial keys are derived
    /// inside it.
    pub derives_in_token: bool,
}

impl std::fmt::Display for TokenReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "token {:?} (serial {}): {} {}, firmware {}, hardware {}",
            self.label,
            self.serial,
            self.manufacturer,
            self.model,
            self.firmware_version,
            self.hardware_version
        )?;
        if let Some(minimum) = self.firmware_below_minimum {
            write!(
                f,
                "; WARNING: firmware is older than the configured minimum {minimum}"
            )?;
        }
        Ok(())
    }
}

/// One logged-in session on the station's token.
///
/// Cryptoki sessions are not `Sync`, so operations take turns through a mutex. Each operation is
/// one or a few short calls, which a provisioning line's handful of ports does not contend on.
pub struct Token {
    session: Mutex<Session>,
    report: TokenReport,
}

impl Token {
    /// Loads the module, finds the token by label or serial, opens a read-write session and logs
    /// in as the user with the configured PIN.
    pub fn open(config: &Pkcs11Config) -> Result<Self, Pkcs11Error> {
        let context = context(&config.module)?;
        let (slot, info) = find_token(&context, &config.token, &config.module)?;
        let label = info.label().trim_end().to_owned();
        let call = |operation: &'static str| {
            let token = label.clone();
            move |source| Pkcs11Error::Call {
                token,
                operation,
                source,
            }
        };

        let pin: AuthPin = config.pin.read()?;
        let session = context
            .open_rw_session(slot)
            .map_err(call("C_OpenSession"))?;
        login(&session, &pin, &label)?;

        let mechanisms = context
            .get_mechanism_list(slot)
            .map_err(call("C_GetMechanismList"))?;
        // Every check value and every key block under a token key needs AES-CMAC, so a token
        // without it cannot serve as the vault. Key wrap is needed only for wrapped imports.
        if !mechanisms.contains(&MechanismType::AES_CMAC) {
            return Err(Pkcs11Error::MechanismMissing {
                token: label,
                mechanism: "CKM_AES_CMAC",
                operation: "every check value and key block",
            });
        }
        if !mechanisms.contains(&MechanismType::AES_KEY_WRAP) {
            tracing::warn!(
                token = %label,
                mechanism = "CKM_AES_KEY_WRAP",
                "the token cannot unwrap imported keys; load keys from components instead"
            );
        }
        let has_derivation = mechanisms.contains(&MechanismType::AES_CBC_ENCRYPT_DATA);
        let version = |version: cryptoki::types::Version| FirmwareVersion {
            major: version.major(),
            minor: version.minor(),
        };
        let firmware_version = version(info.firmware_version());
        let firmware_below_minimum = config
            .minimum_firmware
            .filter(|minimum| firmware_version < *minimum);
        let report = TokenReport {
            label: label.clone(),
            serial: info.serial_number().trim_end().to_owned(),
            manufacturer: info.manufacturer_id().trim_end().to_owned(),
            model: info.model().trim_end().to_owned(),
            hardware_version: version(info.hardware_version()),
            firmware_version,
            firmware_below_minimum,
            slot_id: slot.id(),
            derives_in_token: has_derivation && config.derive_in_token,
        };
        if let Some(minimum) = firmware_below_minimum {
            tracing::warn!(
                token = %report.label,
                model = %report.model,
                firmware = %firmware_version,
                minimum = %minimum,
                "token firmware is older than the configured minimum; update the HSM firmware"
            );
        }
        tracing::info!(
            token = %report.label,
            serial = %report.serial,
            model = %report.model,
            firmware = %report.firmware_version,
            slot = report.slot_id,
            derives_in_token = report.derives_in_token,
            "logged in to PKCS#11 token"
        );
        Ok(Self {
            session: Mutex::new(session),
            report,
        })
    }

    /// Model, versions and capabilities of the token.
    pub fn report(&self) -> &TokenReport {
        &self.report
    }

    fn session(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn call_error(&self, operation: &'static str) -> impl FnOnce(CryptokiError) -> Pkcs11Error {
        let token = self.report.label.clone();
        move |source| Pkcs11Error::Call {
            token,
            operation,
            source,
        }
    }
}

/// Logs in as the user. `CKR_USER_ALREADY_LOGGED_IN` counts as success: PKCS#11 login state
/// belongs to the application, so a second session of this process on the same token is
/// logged in already.
fn login(session: &Session, pin: &AuthPin, token: &str) -> Result<(), Pkcs11Error> {
    match session.login(UserType::User, Some(pin)) {
        Ok(()) => Ok(()),
        Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
            tracing::debug!(token, "already logged in to the token");
            Ok(())
        }
        Err(CryptokiError::Pkcs11(RvError::PinIncorrect, _)) => Err(Pkcs11Error::WrongPin {
            token: token.to_owned(),
        }),
        Err(CryptokiError::Pkcs11(RvError::PinLocked, _)) => Err(Pkcs11Error::PinLocked {
            token: token.to_owned(),
        }),
        Err(source) => Err(Pkcs11Error::Call {
            token: token.to_owned(),
            operation: "C_Login",
            source,
        }),
    }
}

/// Finds the one slot whose token matches `selector`.
fn find_token(
    context: &Pkcs11,
    selector: &TokenSelector,
    module: &Path,
) -> Result<(Slot, cryptoki::slot::TokenInfo), Pkcs11Error> {
    let call = |operation: &'static str| {
        move |source| Pkcs11Error::Call {
            token: module.display().to_string(),
            operation,
            source,
        }
    };
    let mut present = Vec::new();
    let mut matches = Vec::new();
    for slot in context
        .get_slots_with_initialized_token()
        .map_err(call("C_GetSlotList"))?
    {
        let info = context
            .get_token_info(slot)
            .map_err(call("C_GetTokenInfo"))?;
        let label = info.label().trim_end().to_owned();
        let serial = info.serial_number().trim_end().to_owned();
        let matched = match selector {
            TokenSelector::Label(wanted) => *wanted == label,
            TokenSelector::Serial(wanted) => *wanted == serial,
        };
        present.push(format!("{label:?} serial {serial}"));
        if matched {
            matches.push((slot, info));
        }
    }
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(Pkcs11Error::TokenNotFound {
            selector: selector.clone(),
            found: if present.is_empty() {
                "none".to_owned()
            } else {
                present.join(", ")
            },
        }),
        count => Err(Pkcs11Error::AmbiguousToken {
            selector: selector.clone(),
            count,
            serials: matches
                .iter()
                .map(|(_, info)| info.serial_number().trim_end().to_owned())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Initialises a token in the first free slot of `module` with `label`, a security officer PIN
/// and a user PIN, and returns the slot it was initialised in. For development tokens such as
/// SoftHSM2's; production HSMs are initialised with the vendor's tools.
///
/// NOTE: SoftHSM2 (2.6) keeps the token in this slot for the rest of this process, but the next
/// process that loads the module finds it in a new slot whose ID comes from the token's serial.
pub fn initialise_token(
    module: &Path,
    label: &str,
    so_pin: &AuthPin,
    user_pin: &AuthPin,
) -> Result<u64, Pkcs11Error> {
    let context = context(module)?;
    let call = |operation: &'static str| {
        let token = label.to_owned();
        move |source| Pkcs11Error::Call {
            token,
            operation,
            source,
        }
    };
    // Two callers in one process must not pick the same free slot.
    static INITIALISING: Mutex<()> = Mutex::new(());
    let _guard = INITIALISING.lock().unwrap_or_else(PoisonError::into_inner);

    let free = context
        .get_slots_with_token()
        .map_err(call("C_GetSlotList"))?
        .into_iter()
        .find(|slot| {
            context
                .get_token_info(*slot)
                .is_ok_and(|info| !info.token_initialized())
        })
        .ok_or_else(|| {
            Pkcs11Error::InvalidConfig(format!(
                "module {} has no free slot for a new token",
                module.display()
            ))
        })?;
    context
        .init_token(free, so_pin, label)
        .map_err(call("C_InitToken"))?;

    let (slot, _) = find_token(&context, &TokenSelector::Label(label.to_owned()), module)?;
    let session = context
        .open_rw_session(slot)
        .map_err(call("C_OpenSession"))?;
    session
        .login(UserType::So, Some(so_pin))
        .map_err(call("C_Login"))?;
    session.init_pin(user_pin).map_err(call("C_InitPIN"))?;
    session.logout().map_err(call("C_Logout"))?;
    Ok(slot.id())
}
