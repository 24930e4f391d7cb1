//! Ceremony scripts: the declarative TOML files in `ceremony-scripts/`.
//!
//! A script names the roles a ceremony needs and lists its steps. The station runs the steps in
//! order and enforces the script; see `docs/ceremonies.md` for the format.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha384};

use super::CeremonyError;
use crate::crypto::KeyAlgorithm;
use crate::crypto::kcv::{Kcv, KcvMethod};
use crate::users::UserRole;
use crate::vault::{KeyUsage, parse_bdk_id, validate_label};

/// The label that component files and share forms use for the station master key.
pub const MASTER_KEY_LABEL: &str = "station-master-key";

/// How long a ceremony waits for a participant when the script does not say: 15 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// A role a participant fills in a ceremony.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Holds one component or share of a key; never more than one of the same key.
    Custodian,
    /// Watches the ceremony and attests physical facts; holds no key material.
    #[serde(alias = "supervisor")]
    Witness,
}

impl Role {
    /// The name used in scripts and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Custodian => "custodian",
            Self::Witness => "witness",
        }
    }

    /// Parses a name produced by [`Role::name`]; `supervisor` is accepted for the witness, after
    /// the user role that fills it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "custodian" => Some(Self::Custodian),
            "witness" | "supervisor" => Some(Self::Witness),
            _ => None,
        }
    }

    /// The user role an account needs to fill this ceremony role.
    pub fn user_role(self) -> UserRole {
        match self {
            Self::Custodian => UserRole::Custodian,
            Self::Witness => UserRole::Supervisor,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How custodians hold a key: XOR components, all of which are needed, or Shamir shares, any
/// `threshold` of which recover the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `count` XOR components, all needed.
    Components { count: usize },
    /// `count` shares, any `threshold` of which recover the key.
    Shares { count: usize, threshold: usize },
}

impl Split {
    /// How many parts custodians enter to form the key.
    pub fn needed(self) -> usize {
        match self {
            Self::Components { count } => count,
            Self::Shares { threshold, .. } => threshold,
        }
    }

    /// How many parts exist, one per custodian.
    pub fn count(self) -> usize {
        match self {
            Self::Components { count } | Self::Shares { count, .. } => count,
        }
    }

    /// The word for one part: "component" or "share".
    pub fn part_name(self) -> &'static str {
        match self {
            Self::Components { .. } => "component",
            Self::Shares { .. } => "share",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Components { count } => write!(f, "{count} XOR components"),
            Self::Shares { count, threshold } => {
                write!(
                    f,
                    "{count} Shamir shares, any {threshold} of which form the key"
                )
            }
        }
    }
}

/// One step of a ceremony.
///
/// Steps that form a key in memory (`enter-key`, `generate-key`) name it with `key`, and later
/// steps refer to it by that name; the key never leaves the station's memory and is zeroized
/// when the ceremony ends. Steps that act on the vault name a stored key by `label`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// A participant of `role` confirms a physical fact, such as a tamper-evident bag number.
    Attest { role: Role, statement: String },
    /// Custodians enter their components or shares of the station master key; the vault checks
    /// the result against the master key it was initialised with, or is initialised with it.
    Unseal {
        #[serde(default)]
        components: Option<usize>,
        /// How many shares are entered: the threshold of the split made at initialisation.
        #[serde(default)]
        shares: Option<usize>,
    },
    /// Generates a new station master key, hands out one Shamir share to each of `shares`
    /// custodians, and initialises the vault with it. Rejected on a vault that has a master key.
    Initialise { shares: usize, threshold: usize },
    /// Generates a random key of `algorithm` and hands out one component or share to each
    /// custodian, shown once in a printable form.
    GenerateKey {
        key: String,
        algorithm: KeyAlgorithm,
        #[serde(default)]
        components: Option<usize>,
        #[serde(default)]
        shares: Option<usize>,
        #[serde(default)]
        threshold: Option<usize>,
    },
    /// Custodians enter components or shares of a key, each checked against the check value on
    /// its form; the parts are combined and the key's check value compared with the forms.
    EnterKey {
        key: String,
        algorithm: KeyAlgorithm,
        #[serde(default)]
        components: Option<usize>,
        /// How many shares are entered (the split's threshold).
        #[serde(default)]
        shares: Option<usize>,
    },
    /// Custodians enter components or shares of a key, each checked against the check value on
    /// its form. A later `combine` step forms the key from them.
    EnterParts {
        key: String,
        algorithm: KeyAlgorithm,
        #[serde(default)]
        components: Option<usize>,
        /// How many shares are entered (the split's threshold).
        #[serde(default)]
        shares: Option<usize>,
    },
    /// Combines the parts an `enter-parts` step took and compares the key's check value with the
    /// one their forms state.
    Combine { key: String },
    /// Compares the check value of a key formed in this ceremony (`key`) or stored in the vault
    /// (`label`) with a value known in advance, such as the one on the sender's key form.
    CompareKcv {
        #[serde(default)]
        key: Option<String>,
        #[serde(default)]
        label: Option<String>,
        kcv: String,
        method: String,
    },
    /// Stores a key formed in this ceremony in the vault under `label`.
    StoreKey {
        key: String,
        label: String,
        usage: KeyUsage,
        /// The 4-byte BDK ID of an AES DUKPT BDK, as 8 hex digits.
        #[serde(default, rename = "bdk-id")]
        bdk_id: Option<String>,
    },
    /// Shorthand for `enter-key` of components followed by `store-key`.
    LoadKey {
        label: String,
        usage: KeyUsage,
        algorithm: KeyAlgorithm,
        components: usize,
        /// The 4-byte BDK ID of an AES DUKPT BDK, as 8 hex digits.
        #[serde(default, rename = "bdk-id")]
        bdk_id: Option<String>,
    },
    /// Exports vault key `label` as a TR-31 block under key-encryption key `kek`, for the payment
    /// host's HSM.
    ExportKey { label: String, kek: String },
    /// Retires vault key `label`: it stays on record but is no longer used.
    RetireKey { label: String },
    /// Destroys vault key `label`: its key block is erased, its record stays.
    DestroyKey { label: String },
    /// Creates the factory CA `label`: a new P-384 key and a self-signed certificate for
    /// `subject` (an RFC 4514 name), valid for `validity-days`, kept in the vault under the
    /// master key.
    CreateFactoryCa {
        label: String,
        subject: String,
        #[serde(rename = "validity-days")]
        validity_days: u32,
    },
}

impl Step {
    /// A one-line description of the step, for procedures and the record.
    pub fn describe(&self) -> String {
        match self {
            Self::Attest { role, statement } => format!("the {role} attests: {statement}"),
            Self::Unseal { .. } => {
                let split = self.entry_split().map(|split| split.needed()).unwrap_or(0);
                let part = self.entry_split().map(Split::part_name).unwrap_or("part");
                format!(
                    "{split} custodians each enter their {part} of the station master key; the vault is unsealed"
                )
            }
            Self::Initialise { shares, threshold } => format!(
                "the station generates a new station master key and shows each of {shares} custodians their share once (any {threshold} unseal the vault); the vault is initialised"
            ),
            Self::GenerateKey { key, algorithm, .. } => {
                let split = self.entry_split().map(|split| split.to_string());
                format!(
                    "the station generates {algorithm} key {key:?} and shows each custodian their part once ({})",
                    split.unwrap_or_default()
                )
            }
            Self::EnterKey { key, algorithm, .. } => {
                let split = self.entry_split();
                let needed = split.map(Split::needed).unwrap_or(0);
                let part = split.map(Split::part_name).unwrap_or("part");
                format!(
                    "{needed} custodians each enter their {part} of {algorithm} key {key:?}; each is checked by KCV, then they are combined and the key's KCV is checked"
                )
            }
            Self::EnterParts { key, algorithm, .. } => {
                let split = self.entry_split();
                let needed = split.map(Split::needed).unwrap_or(0);
                let part = split.map(Split::part_name).unwrap_or("part");
                format!(
                    "{needed} custodians each enter their {part} of {algorithm} key {key:?}; each is checked by KCV"
                )
            }
            Self::Combine { key } => format!(
                "the parts of key {key:?} are combined and the key's KCV is checked against the forms"
            ),
            Self::CompareKcv {
                key,
                label,
                kcv,
                method,
            } => {
                let subject = key
                    .as_deref()
                    .map(|key| format!("key {key:?}"))
                    .or_else(|| label.as_deref().map(|label| format!("vault key {label:?}")))
                    .unwrap_or_default();
                format!("the {method} check value of {subject} must be {kcv}")
            }
            Self::StoreKey {
                key,
                label,
                usage,
                bdk_id,
            } => {
                let id = bdk_id
                    .as_deref()
                    .map(|id| format!(", BDK ID {id}"))
                    .unwrap_or_default();
                format!("key {key:?} is stored in the vault as {usage} {label:?}{id}")
            }
            Self::LoadKey {
                label,
                usage,
                algorithm,
                components,
                bdk_id,
            } => {
                let id = bdk_id
                    .as_deref()
                    .map(|id| format!(", BDK ID {id}"))
                    .unwrap_or_default();
                format!(
                    "{components} custodians each enter their component of {usage} {label:?} ({algorithm}{id}); the key is checked by KCV and stored"
                )
            }
            Self::ExportKey { label, kek } => format!(
                "vault key {label:?} is exported as a TR-31 key block under key-encryption key {kek:?} for the host"
            ),
            Self::RetireKey { label } => {
                format!("vault key {label:?} is retired and no longer used")
            }
            Self::DestroyKey { label } => format!(
                "vault key {label:?} is destroyed: its key block is erased, its record stays"
            ),
            Self::CreateFactoryCa {
                label,
                subject,
                validity_days,
            } => format!(
                "the station creates factory CA {label:?} for {subject:?}, valid for {validity_days} days, and keeps its key in the vault"
            ),
        }
    }

    /// How the step's key is split, for steps that enter or hand out parts. `None` for other
    /// steps and for a step whose fields do not describe one split.
    pub fn entry_split(&self) -> Option<Split> {
        match self {
            Self::Unseal { components, shares }
            | Self::EnterKey {
                components, shares, ..
            }
            | Self::EnterParts {
                components, shares, ..
            } => {
                match (components, shares) {
                    (Some(count), None) => Some(Split::Components { count: *count }),
                    // Entering needs only the threshold; the total count does not matter here.
                    (None, Some(threshold)) => Some(Split::Shares {
                        count: *threshold,
                        threshold: *threshold,
                    }),
                    _ => None,
                }
            }
            Self::Initialise { shares, threshold } => Some(Split::Shares {
                count: *shares,
                threshold: *threshold,
            }),
            Self::GenerateKey {
                components,
                shares,
                threshold,
                ..
            } => match (components, shares, threshold) {
                (Some(count), None, None) => Some(Split::Components { count: *count }),
                (None, Some(count), Some(threshold)) => Some(Split::Shares {
                    count: *count,
                    threshold: *threshold,
                }),
                _ => None,
            },
            Self::LoadKey { components, .. } => Some(Split::Components { count: *components }),
            _ => None,
        }
    }

    /// Returns true for steps that need the vault's master key in memory.
    pub fn needs_unsealed_vault(&self) -> bool {
        matches!(
            self,
            Self::StoreKey { .. }
                | Self::LoadKey { .. }
                | Self::ExportKey { .. }
                | Self::CreateFactoryCa { .. }
        )
    }

    /// Returns true for steps after which the vault is unsealed.
    pub fn unseals_vault(&self) -> bool {
        matches!(self, Self::Unseal { .. } | Self::Initialise { .. })
    }

    /// The name of the in-memory key the step forms, if any.
    pub fn forms_key(&self) -> Option<&str> {
        match self {
            Self::GenerateKey { key, .. } | Self::EnterKey { key, .. } | Self::Combine { key } => {
                Some(key)
            }
            _ => None,
        }
    }

    /// The name of the in-memory key the step uses, if any.
    pub fn uses_key(&self) -> Option<&str> {
        match self {
            Self::StoreKey { key, .. } => Some(key),
            Self::CompareKcv { key, .. } => key.as_deref(),
            _ => None,
        }
    }

    /// The name of the key whose entered parts the step forms, if any.
    pub fn forms_parts(&self) -> Option<&str> {
        match self {
            Self::EnterParts { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The name of the key whose entered parts the step uses, if any.
    pub fn uses_parts(&self) -> Option<&str> {
        match self {
            Self::Combine { key } => Some(key),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ScriptFile {
    name: String,
    purpose: String,
    #[serde(default)]
    idle_timeout_seconds: Option<u64>,
    roles: BTreeMap<Role, usize>,
    steps: Vec<Step>,
}

/// A parsed and validated ceremony script.
#[derive(Debug, Clone)]
pub struct CeremonyScript {
    /// Short name, used in audit events.
    pub name: String,
    /// Why the ceremony is run, in one sentence.
    pub purpose: String,
    /// How many participants of each role the ceremony needs at least.
    pub roles: BTreeMap<Role, usize>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// How long the ceremony waits for a participant before it times out.
    pub idle_timeout: Duration,
    /// SHA-384 of the script text, in hex, so the record names the exact script that ran.
    pub sha384: String,
    /// The script text, kept so an interrupted ceremony resumes with exactly this script.
    pub text: String,
}

impl CeremonyScript {
    /// Reads and validates a script file.
    pub fn load(path: &Path) -> Result<Self, CeremonyError> {
        let text = std::fs::read_to_string(path).map_err(|source| CeremonyError::ReadScript {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|error| match error {
            CeremonyError::InvalidScript(reason) => {
                CeremonyError::InvalidScript(format!("{}: {reason}", path.display()))
            }
            other => other,
        })
    }

    /// Parses and validates script text.
    pub fn parse(text: &str) -> Result<Self, CeremonyError> {
        let file: ScriptFile = toml::from_str(text)
            .map_err(|error| CeremonyError::InvalidScript(error.to_string()))?;
        let idle_timeout = match file.idle_timeout_seconds {
            None => DEFAULT_IDLE_TIMEOUT,
            Some(0) => {
                return Err(CeremonyError::InvalidScript(
                    "idle-timeout-seconds is 0; give the seconds a ceremony waits for a participant"
                        .to_owned(),
                ));
            }
            Some(seconds) => Duration::from_secs(seconds),
        };
        let script = Self {
            name: file.name,
            purpose: file.purpose,
            roles: file.roles,
            steps: file.steps,
            idle_timeout,
            sha384: hex::encode(Sha384::digest(text.as_bytes())),
            text: text.to_owned(),
        };
        script.validate()?;
        Ok(script)
    }

    fn validate(&self) -> Result<(), CeremonyError> {
        let custodians = self.roles.get(&Role::Custodian).copied().unwrap_or(0);
        let witnesses = self.roles.get(&Role::Witness).copied().unwrap_or(0);
        if self.steps.is_empty() {
            return Err(invalid("the script has no steps".to_owned()));
        }
        // PCI PIN requires dual control and a witness for every key ceremony.
        if custodians < 2 {
            return Err(invalid(format!(
                "roles.custodian is {custodians}; dual control needs at least 2 custodians"
            )));
        }
        if witnesses < 1 {
            return Err(invalid(
                "roles.witness is missing; every ceremony needs a witness".to_owned(),
            ));
        }
        let mut checker = StepChecker {
            custodians,
            formed: BTreeMap::new(),
            entered: BTreeMap::new(),
            stored_labels: BTreeSet::new(),
            unsealed: false,
        };
        for (index, step) in self.steps.iter().enumerate() {
            checker
                .check(step)
                .map_err(|reason| invalid(format!("step {}: {reason}", index + 1)))?;
        }
        Ok(())
    }

    /// Renders the script as a numbered procedure for people to read before the ceremony.
    pub fn procedure(&self) -> String {
        let mut text = format!("Ceremony {:?}: {}\n", self.name, self.purpose);
        let roles: Vec<String> = self
            .roles
            .iter()
            .map(|(role, count)| format!("{count} {role}{}", if *count == 1 { "" } else { "s" }))
            .collect();
        text.push_str(&format!(
            "Participants: {}, each a different person.\n",
            roles.join(", ")
        ));
        text.push_str(&format!(
            "The ceremony times out after {} seconds without input; any participant can abort it.\n",
            self.idle_timeout.as_secs()
        ));
        text.push_str(&format!("Script SHA-384: {}\n", self.sha384));
        for (index, step) in self.steps.iter().enumerate() {
            text.push_str(&format!("{:>3}. {}\n", index + 1, step.describe()));
        }
        text
    }
}

fn invalid(reason: String) -> CeremonyError {
    CeremonyError::InvalidScript(reason)
}

/// Walks the steps in order, tracking which keys exist in memory and whether the vault is
/// unsealed, so that a script that could never run is rejected before anyone takes part.
struct StepChecker {
    custodians: usize,
    formed: BTreeMap<String, KeyAlgorithm>,
    /// Keys whose parts an `enter-parts` step took and no `combine` step has used yet.
    entered: BTreeMap<String, KeyAlgorithm>,
    stored_labels: BTreeSet<String>,
    unsealed: bool,
}

impl StepChecker {
    fn check(&mut self, step: &Step) -> Result<(), String> {
        if step.needs_unsealed_vault() && !self.unsealed {
            return Err(
                "this step needs the vault's master key, but no earlier step unseals the vault; add an unseal step before it"
                    .to_owned(),
            );
        }
        match step {
            Step::Attest { statement, .. } => {
                if statement.trim().is_empty() {
                    return Err("the attestation has no statement".to_owned());
                }
            }
            Step::Unseal { .. } | Step::Initialise { .. } => {
                self.check_split(step)?;
                self.unsealed = true;
            }
            Step::GenerateKey { key, algorithm, .. } | Step::EnterKey { key, algorithm, .. } => {
                self.check_split(step)?;
                validate_label(key).map_err(|error| format!("key name: {error}"))?;
                if self.formed.insert(key.clone(), *algorithm).is_some() {
                    return Err(format!(
                        "key {key:?} is formed twice; give each key its own name"
                    ));
                }
            }
            Step::EnterParts { key, algorithm, .. } => {
                self.check_split(step)?;
                validate_label(key).map_err(|error| format!("key name: {error}"))?;
                let taken = self.formed.contains_key(key)
                    || self.entered.insert(key.clone(), *algorithm).is_some();
                if taken {
                    return Err(format!(
                        "key {key:?} is formed twice; give each key its own name"
                    ));
                }
            }
            Step::Combine { key } => {
                let algorithm = self.entered.remove(key).ok_or_else(|| {
                    format!("no earlier enter-parts step enters the parts of key {key:?}")
                })?;
                self.formed.insert(key.clone(), algorithm);
            }
            Step::CompareKcv {
                key,
                label,
                kcv,
                method,
            } => {
                let method = KcvMethod::from_name(method)
                    .ok_or_else(|| format!("unknown method {method:?}; use cmac or legacy"))?;
                Kcv::from_hex(method, kcv).map_err(|error| format!("kcv: {error}"))?;
                match (key, label) {
                    (Some(key), None) => {
                        self.algorithm_of(key)?;
                    }
                    (None, Some(label)) => {
                        validate_label(label).map_err(|error| error.to_string())?;
                    }
                    _ => return Err("give exactly one of key and label".to_owned()),
                }
            }
            Step::StoreKey {
                key,
                label,
                usage,
                bdk_id,
            } => {
                let algorithm = self.algorithm_of(key)?;
                self.check_stored(label, *usage, algorithm, bdk_id.as_deref())?;
            }
            Step::LoadKey {
                label,
                usage,
                algorithm,
                bdk_id,
                ..
            } => {
                self.check_split(step)?;
                self.check_stored(label, *usage, *algorithm, bdk_id.as_deref())?;
            }
            Step::ExportKey { label, kek } => {
                validate_label(label).map_err(|error| error.to_string())?;
                validate_label(kek).map_err(|error| error.to_string())?;
                if label == kek {
                    return Err(format!("key {label:?} cannot be exported under itself"));
                }
            }
            Step::RetireKey { label } | Step::DestroyKey { label } => {
                validate_label(label).map_err(|error| error.to_string())?;
            }
            Step::CreateFactoryCa {
                label,
                subject,
                validity_days,
            } => {
                validate_label(label).map_err(|error| error.to_string())?;
                if subject.trim().is_empty() {
                    return Err(
                        "the factory CA needs a subject, such as \"CN=Factory CA,O=Example\""
                            .to_owned(),
                    );
                }
                if *validity_days == 0 {
                    return Err("validity-days is 0; give the CA's lifetime in days".to_owned());
                }
            }
        }
        Ok(())
    }

    /// Checks a step's split against the dual-control rules: at least two parts are needed to
    /// form the key, and each custodian holds at most one part, so no custodian reaches the
    /// threshold alone.
    fn check_split(&self, step: &Step) -> Result<(), String> {
        let split = step.entry_split().ok_or_else(|| {
            "give either components = N, or shares = N (with threshold = M when generating)"
                .to_owned()
        })?;
        let custodians = self.custodians;
        if split.needed() < 2 || split.count() > custodians {
            return Err(format!(
                "{split}; use at least 2 parts and at most the {custodians} custodians the script asks for, one part each"
            ));
        }
        if let Split::Shares { count, threshold } = split
            && (threshold > count || count > 255)
        {
            return Err(format!(
                "threshold {threshold} of {count} shares; the threshold must be at most the share count, and there are at most 255 shares"
            ));
        }
        Ok(())
    }

    fn algorithm_of(&self, key: &str) -> Result<KeyAlgorithm, String> {
        self.formed.get(key).copied().ok_or_else(|| {
            format!("key {key:?} is not formed by an earlier generate-key or enter-key step")
        })
    }

    fn check_stored(
        &mut self,
        label: &str,
        usage: KeyUsage,
        algorithm: KeyAlgorithm,
        bdk_id: Option<&str>,
    ) -> Result<(), String> {
        validate_label(label).map_err(|error| error.to_string())?;
        usage
            .check_algorithm(algorithm)
            .map_err(|error| error.to_string())?;
        match (usage, bdk_id) {
            (KeyUsage::Bdk, None) => return Err("a bdk needs bdk-id (8 hex digits)".to_owned()),
            (KeyUsage::Bdk, Some(id)) => {
                parse_bdk_id(id).map_err(|error| error.to_string())?;
            }
            (_, Some(_)) => return Err("only a bdk has a bdk-id".to_owned()),
            (_, None) => {}
        }
        if !self.stored_labels.insert(label.to_owned()) {
            return Err(format!("key {label:?} is loaded twice"));
        }
        Ok(())
    }
}
