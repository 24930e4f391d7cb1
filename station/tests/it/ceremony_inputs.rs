//! Ceremony inputs for tests: parts typed from prepared values or from the forms a previous
//! ceremony handed out, attestations by a fixed witness, and switches that abort, stall or
//! crash a ceremony at a chosen step.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use station::ceremony::{
    CeremonyError, CeremonyInputs, EnteredPart, PartForm, PartRequest, PartValue, Role, Split,
    StepContext,
};
use station::crypto::kcv::{Kcv, KcvMethod};
use station::crypto::shamir::KeyShare;
use station::crypto::{SecretKey, components};
use zeroize::Zeroizing;

/// A part as a custodian would type it, with the check values from their form.
#[derive(Clone)]
pub struct TypedPart {
    pub custodian: String,
    pub text: Zeroizing<String>,
    pub part_kcv: String,
    pub key_kcv: String,
    pub method: KcvMethod,
}

/// A form handed out during a ceremony, as the custodian copied it.
#[derive(Clone)]
pub struct CapturedForm {
    pub key_label: String,
    pub part: TypedPart,
    pub rendered: Zeroizing<String>,
}

#[derive(Default)]
pub struct ScriptedInputs {
    pub witness: String,
    pub parts: BTreeMap<String, VecDeque<TypedPart>>,
    /// Forms handed out, shared so that they outlive a crashed ceremony's inputs.
    pub forms: Arc<Mutex<Vec<CapturedForm>>>,
    pub exported: Vec<(String, String, String)>,
    /// Abort at this step, by this participant.
    pub abort_at: Option<(usize, String)>,
    /// Panic at this step, as a process crash would stop the ceremony.
    pub crash_at: Option<usize>,
    /// Wait this long before answering any request.
    pub delay: Option<Duration>,
}

impl ScriptedInputs {
    pub fn new(witness: &str) -> Self {
        Self {
            witness: witness.to_owned(),
            ..Self::default()
        }
    }

    /// Queues parts for key `label`, in entry order.
    pub fn give(&mut self, label: &str, parts: impl IntoIterator<Item = TypedPart>) {
        self.parts
            .entry(label.to_owned())
            .or_default()
            .extend(parts);
    }

    /// Returns a copy of every form handed out so far.
    pub fn forms(&self) -> Vec<CapturedForm> {
        self.forms.lock().unwrap().clone()
    }

    /// Returns the forms handed out for `label` to `custodians`, as typed parts.
    pub fn forms_of(&self, label: &str, custodians: &[&str]) -> Vec<TypedPart> {
        let forms = self.forms();
        custodians
            .iter()
            .map(|custodian| {
                forms
                    .iter()
                    .find(|form| form.key_label == label && form.part.custodian == *custodian)
                    .unwrap_or_else(|| panic!("no form of {label} for {custodian}"))
                    .part
                    .clone()
            })
            .collect()
    }

    fn interrupt(&self, step: &StepContext) -> Result<(), CeremonyError> {
        if let Some(delay) = self.delay {
            std::thread::sleep(delay);
        }
        if self.crash_at == Some(step.number) {
            panic!("simulated crash at step {}", step.number);
        }
        if let Some((number, by)) = &self.abort_at
            && *number == step.number
        {
            return Err(CeremonyError::Aborted {
                by: by.clone(),
                step: step.number,
            });
        }
        Ok(())
    }
}

impl CeremonyInputs for ScriptedInputs {
    fn attestation(
        &mut self,
        step: &StepContext,
        _role: Role,
        _statement: &str,
    ) -> Result<String, CeremonyError> {
        self.interrupt(step)?;
        Ok(self.witness.clone())
    }

    fn parts(
        &mut self,
        step: &StepContext,
        request: &PartRequest,
    ) -> Result<Vec<EnteredPart>, CeremonyError> {
        self.interrupt(step)?;
        let queue = self.parts.entry(request.key_label.clone()).or_default();
        let mut entered = Vec::new();
        for _ in 0..request.split.needed() {
            let Some(part) = queue.pop_front() else {
                break;
            };
            let value = match request.split {
                Split::Components { .. } => {
                    PartValue::Component(SecretKey::from_hex(request.algorithm, &part.text)?)
                }
                Split::Shares { .. } => PartValue::Share(KeyShare::from_text(&part.text, 1)?),
            };
            entered.push(EnteredPart {
                custodian: part.custodian.clone(),
                source: "test".to_owned(),
                value,
                part_kcv: Kcv::from_hex(part.method, &part.part_kcv)?,
                key_kcv: Kcv::from_hex(part.method, &part.key_kcv)?,
            });
        }
        Ok(entered)
    }

    fn hand_out(&mut self, step: &StepContext, form: &PartForm) -> Result<(), CeremonyError> {
        self.interrupt(step)?;
        self.forms.lock().unwrap().push(CapturedForm {
            key_label: form.key_label.clone(),
            part: TypedPart {
                custodian: form.custodian.clone(),
                text: form.part_text.clone(),
                part_kcv: form.part_kcv.to_hex(),
                key_kcv: form.key_kcv.to_hex(),
                method: form.key_kcv.method(),
            },
            rendered: form.render(),
        });
        Ok(())
    }

    fn deliver_key_block(
        &mut self,
        _step: &StepContext,
        label: &str,
        kek: &str,
        key_block: &str,
    ) -> Result<(), CeremonyError> {
        self.exported
            .push((label.to_owned(), kek.to_owned(), key_block.to_owned()));
        Ok(())
    }

    fn finish(&mut self) -> Result<(), CeremonyError> {
        Ok(())
    }
}

/// Splits `key` into components for `custodians`, as typed parts with CMAC (AES) or legacy
/// (TDES) check values.
pub fn components_for(key: &SecretKey, custodians: &[&str]) -> Vec<TypedPart> {
    let method = if key.algorithm().is_aes() {
        KcvMethod::Cmac
    } else {
        KcvMethod::Legacy
    };
    let key_kcv = Kcv::compute(key, method).to_hex();
    components::split(key, custodians.len())
        .unwrap()
        .iter()
        .zip(custodians)
        .map(|(part, custodian)| TypedPart {
            custodian: (*custodian).to_owned(),
            text: Zeroizing::new(hex::encode_upper(part.expose())),
            part_kcv: Kcv::compute(part, method).to_hex(),
            key_kcv: key_kcv.clone(),
            method,
        })
        .collect()
}
