//! Ceremony scripts: the declarative TOML files in `ceremony-scripts/`.
//!
//! A script names the roles a ceremony needs and lists its steps. The station runs the steps in
//! order and enforces the script; see `docs/ceremonies.md` for the format.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha384};

use super::CeremonyError;
use crate::crypto::KeyAlgorithm;
use crate::vault::{KeyUsage, parse_bdk_id, validate_label};

/// The label that component files use for the station master key.
pub const MASTER_KEY_LABEL: &str = "station-master-key";

/// A role a participant fills in a ceremony.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Holds one component or share of a key; never more than one of the same key.
    Custodian,
    /// Watches the ceremony and attests physical facts; holds no key material.
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

    /// Parses a name produced by [`Role::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Custodian, Self::Witness]
            .into_iter()
            .find(|role| role.name() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One step of a ceremony.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// A participant of `role` confirms a physical fact, such as a tamper-evident bag number.
    Attest { role: Role, statement: String },
    /// Custodians enter components of the station master key; the vault checks the result
    /// against the master key it was initialised with, or is initialised with it.
    Unseal { components: usize },
    /// Custodians enter components of a key, which is checked by KCV and stored in the vault.
    LoadKey {
        label: String,
        usage: KeyUsage,
        algorithm: KeyAlgorithm,
        components: usize,
        /// The 4-byte BDK ID of an AES DUKPT BDK, as 8 hex digits.
        #[serde(default, rename = "bdk-id")]
        bdk_id: Option<String>,
    },
}

impl Step {
    /// A one-line description of the step, for procedures and the record.
    pub fn describe(&self) -> String {
        match self {
            Self::Attest { role, statement } => format!("the {role} attests: {statement}"),
            Self::Unseal { components } => format!(
                "{components} custodians each enter their component of the station master key; the vault is unsealed"
            ),
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
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptFile {
    name: String,
    purpose: String,
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
    /// SHA-384 of the script text, in hex, so the record names the exact script that ran.
    pub sha384: String,
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
        let script = Self {
            name: file.name,
            purpose: file.purpose,
            roles: file.roles,
            steps: file.steps,
            sha384: hex::encode(Sha384::digest(text.as_bytes())),
        };
        script.validate()?;
        Ok(script)
    }

    fn validate(&self) -> Result<(), CeremonyError> {
        let invalid = |reason: String| Err(CeremonyError::InvalidScript(reason));
        let custodians = self.roles.get(&Role::Custodian).copied().unwrap_or(0);
        let witnesses = self.roles.get(&Role::Witness).copied().unwrap_or(0);
        if self.steps.is_empty() {
            return invalid("the script has no steps".to_owned());
        }
        // PCI PIN requires dual control and a witness for every key ceremony.
        if custodians < 2 {
            return invalid(format!(
                "roles.custodian is {custodians}; dual control needs at least 2 custodians"
            ));
        }
        if witnesses < 1 {
            return invalid("roles.witness is missing; every ceremony needs a witness".to_owned());
        }
        let mut labels = Vec::new();
        for (index, step) in self.steps.iter().enumerate() {
            let number = index + 1;
            match step {
                Step::Attest { statement, .. } if statement.trim().is_empty() => {
                    return invalid(format!("step {number}: the attestation has no statement"));
                }
                Step::Attest { .. } => {}
                Step::Unseal { components } | Step::LoadKey { components, .. }
                    if *components < 2 || *components > custodians =>
                {
                    return invalid(format!(
                        "step {number}: {components} components; use at least 2 and at most the {custodians} custodians the script asks for"
                    ));
                }
                Step::Unseal { .. } => {}
                Step::LoadKey {
                    label,
                    usage,
                    algorithm,
                    bdk_id,
                    ..
                } => {
                    validate_label(label).map_err(|error| {
                        CeremonyError::InvalidScript(format!("step {number}: {error}"))
                    })?;
                    usage.check_algorithm(*algorithm).map_err(|error| {
                        CeremonyError::InvalidScript(format!("step {number}: {error}"))
                    })?;
                    match (usage, bdk_id) {
                        (KeyUsage::Bdk, None) => {
                            return invalid(format!(
                                "step {number}: a bdk needs bdk-id (8 hex digits)"
                            ));
                        }
                        (KeyUsage::Bdk, Some(id)) => {
                            parse_bdk_id(id).map_err(|error| {
                                CeremonyError::InvalidScript(format!("step {number}: {error}"))
                            })?;
                        }
                        (_, Some(_)) => {
                            return invalid(format!("step {number}: only a bdk has a bdk-id"));
                        }
                        (_, None) => {}
                    }
                    if labels.contains(label) {
                        return invalid(format!("step {number}: key {label:?} is loaded twice"));
                    }
                    labels.push(label.clone());
                }
            }
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
        text.push_str(&format!("Script SHA-384: {}\n", self.sha384));
        for (index, step) in self.steps.iter().enumerate() {
            text.push_str(&format!("{:>3}. {}\n", index + 1, step.describe()));
        }
        text
    }
}
