//! Where a ceremony gets what people bring: attestations, key components and shares, and where
//! it sends what people take away: printed part forms and exported key blocks.
//!
//! The engine works the same with every source: component files for a non-interactive run, the
//! terminal prompts of the CLI, and later the browser.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

use super::script::{Role, Split};
use super::{CeremonyError, ComponentFile, PartForm};
use crate::crypto::kcv::Kcv;
use crate::crypto::shamir::KeyShare;
use crate::crypto::{KeyAlgorithm, SecretKey};

/// The step a request belongs to, and how long a participant may stay idle in it.
#[derive(Debug, Clone)]
pub struct StepContext {
    /// The ceremony's identifier.
    pub ceremony: Uuid,
    /// The step's number, from 1.
    pub number: usize,
    /// How many steps the script has.
    pub total: usize,
    /// How long one prompt may wait for a participant before the ceremony times out.
    pub idle_timeout: Duration,
}

/// A component or share as typed or read, before the engine checks it.
pub enum PartValue {
    /// An XOR component, the key's full length.
    Component(SecretKey),
    /// A Shamir share, with its threshold, index and checksum already checked on parsing.
    Share(KeyShare),
}

/// A component or share as entered by a custodian, with the check values from their form.
pub struct EnteredPart {
    /// The custodian who entered it.
    pub custodian: String,
    /// Where it came from, for error messages (a file path, or "prompt").
    pub source: String,
    /// The component or share.
    pub value: PartValue,
    /// The part's check value from the custodian's form.
    pub part_kcv: Kcv,
    /// The whole key's check value from the custodian's form.
    pub key_kcv: Kcv,
}

/// What the engine asks custodians to enter.
#[derive(Debug, Clone)]
pub struct PartRequest {
    /// The key's label (or the master key's label).
    pub key_label: String,
    /// The key's algorithm and length.
    pub algorithm: KeyAlgorithm,
    /// How the key is split; `needed()` parts are entered.
    pub split: Split,
    /// The ceremony's custodians, in the order they were named.
    pub custodians: Vec<String>,
}

/// Where a ceremony gets its inputs from and sends its outputs to.
///
/// Implementations authenticate the person behind each input where they can (the CLI asks for
/// the person's password at every prompt). A participant who wants to stop returns
/// [`CeremonyError::Aborted`] from any method; a prompt left idle for `step.idle_timeout` returns
/// [`CeremonyError::TimedOut`].
pub trait CeremonyInputs {
    /// Returns the name of the participant of `role` who attests `statement`.
    fn attestation(
        &mut self,
        step: &StepContext,
        role: Role,
        statement: &str,
    ) -> Result<String, CeremonyError>;

    /// Returns the parts custodians entered for `request`: `request.split.needed()` of them.
    fn parts(
        &mut self,
        step: &StepContext,
        request: &PartRequest,
    ) -> Result<Vec<EnteredPart>, CeremonyError>;

    /// Shows `form` once to its custodian, in a form they can print or copy into a blind mailer.
    /// Implementations must not store or log it.
    fn hand_out(&mut self, step: &StepContext, form: &PartForm) -> Result<(), CeremonyError>;

    /// Hands the exported key block of `label` under `kek` to the operator for the host.
    fn deliver_key_block(
        &mut self,
        step: &StepContext,
        label: &str,
        kek: &str,
        key_block: &str,
    ) -> Result<(), CeremonyError>;

    /// Checks that every input given was used, once all steps have run.
    fn finish(&mut self) -> Result<(), CeremonyError>;
}

/// Inputs from component files and attestations named on the command line. Cannot hand out
/// parts, because that would put them in a file.
pub struct FileInputs {
    components: Vec<ComponentFile>,
    attestations: BTreeMap<usize, String>,
    /// Key blocks exported during the run, by label, for the caller to pass on.
    pub exported: Vec<(String, String)>,
}

impl FileInputs {
    /// Reads each component file; `attestations` maps a step number to the attesting participant.
    pub fn read(
        component_files: &[PathBuf],
        attestations: BTreeMap<usize, String>,
    ) -> Result<Self, CeremonyError> {
        let components = component_files
            .iter()
            .map(|path| ComponentFile::read(path))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            components,
            attestations,
            exported: Vec::new(),
        })
    }
}

impl CeremonyInputs for FileInputs {
    fn attestation(
        &mut self,
        step: &StepContext,
        role: Role,
        _statement: &str,
    ) -> Result<String, CeremonyError> {
        self.attestations
            .remove(&step.number)
            .ok_or(CeremonyError::MissingAttestation {
                step: step.number,
                role,
            })
    }

    fn parts(
        &mut self,
        _step: &StepContext,
        request: &PartRequest,
    ) -> Result<Vec<EnteredPart>, CeremonyError> {
        if let Split::Shares { .. } = request.split {
            return Err(CeremonyError::NotInteractive(format!(
                "shares of {:?} are entered at the prompt; run the ceremony without --component",
                request.key_label
            )));
        }
        let (matching, rest) = std::mem::take(&mut self.components)
            .into_iter()
            .partition(|file| file.key_label == request.key_label);
        self.components = rest;
        Ok(matching
            .into_iter()
            .map(|file: ComponentFile| EnteredPart {
                custodian: file.custodian.clone(),
                source: file.path.display().to_string(),
                value: PartValue::Component(file.component.duplicate()),
                part_kcv: file.component_kcv.clone(),
                key_kcv: file.key_kcv.clone(),
            })
            .collect())
    }

    fn hand_out(&mut self, step: &StepContext, form: &PartForm) -> Result<(), CeremonyError> {
        Err(CeremonyError::NotInteractive(format!(
            "step {} hands out a {} of {:?}, which is shown only at the prompt; run the ceremony without --component",
            step.number, form.part_name, form.key_label
        )))
    }

    fn deliver_key_block(
        &mut self,
        _step: &StepContext,
        label: &str,
        _kek: &str,
        key_block: &str,
    ) -> Result<(), CeremonyError> {
        self.exported.push((label.to_owned(), key_block.to_owned()));
        Ok(())
    }

    fn finish(&mut self) -> Result<(), CeremonyError> {
        if self.components.is_empty() {
            Ok(())
        } else {
            let paths: Vec<String> = self
                .components
                .iter()
                .map(|file| file.path.display().to_string())
                .collect();
            Err(CeremonyError::UnusedComponents(paths.join(", ")))
        }
    }
}
