//! The interactive ceremony: each participant authenticates at the terminal whenever they act,
//! and types components and shares at a prompt that does not echo.

use std::collections::BTreeMap;

use station::ceremony::{
    CeremonyError, CeremonyInputs, EnteredPart, PartForm, PartRequest, PartValue, Participant,
    Role, Split, StepContext, form_kcv_method,
};
use station::crypto::SecretKey;
use station::crypto::kcv::Kcv;
use station::crypto::shamir::KeyShare;
use station::users::{UserError, verify_password};
use zeroize::Zeroizing;

use super::prompt::{PromptError, Terminal};

/// How many times a participant may retype a password or a mistyped part before the step fails.
const ATTEMPTS: usize = 3;

/// The word that aborts the ceremony at any name prompt.
const ABORT: &str = "abort";

/// Ceremony inputs from the terminal.
pub struct TerminalInputs<'a> {
    terminal: &'a Terminal,
    participants: Vec<Participant>,
    /// Password hashes of the participants, by name, read when they logged in.
    password_hashes: BTreeMap<String, String>,
    /// Whether the ceremony's ID was shown, which a resume after a restart needs.
    announced: bool,
}

impl<'a> TerminalInputs<'a> {
    pub fn new(
        terminal: &'a Terminal,
        participants: Vec<Participant>,
        password_hashes: BTreeMap<String, String>,
    ) -> Self {
        Self {
            terminal,
            participants,
            password_hashes,
            announced: false,
        }
    }

    /// Shows the ceremony's ID once, before its first prompt.
    fn announce(&mut self, step: &StepContext) -> Result<(), CeremonyError> {
        if self.announced {
            return Ok(());
        }
        self.announced = true;
        self.say(&format!(
            "Ceremony ID {id}. After a restart, resume it with `station ceremony resume {id}`.\n",
            id = step.ceremony
        ))
    }

    fn prompt_error(step: &StepContext, error: PromptError) -> CeremonyError {
        match error {
            PromptError::TimedOut(_) => CeremonyError::TimedOut {
                step: step.number,
                idle_seconds: step.idle_timeout.as_secs(),
            },
            other => CeremonyError::Terminal(other.to_string()),
        }
    }

    fn line(&self, step: &StepContext, prompt: &str) -> Result<String, CeremonyError> {
        self.terminal
            .line(prompt, step.idle_timeout)
            .map_err(|error| Self::prompt_error(step, error))
    }

    fn secret(&self, step: &StepContext, prompt: &str) -> Result<Zeroizing<String>, CeremonyError> {
        self.terminal
            .secret(prompt, step.idle_timeout)
            .map_err(|error| Self::prompt_error(step, error))
    }

    fn say(&self, text: &str) -> Result<(), CeremonyError> {
        self.terminal
            .print(text)
            .map_err(|error| CeremonyError::Terminal(error.to_string()))
    }

    /// Checks `name`'s password, allowing a few attempts. Only participants can log in.
    fn authenticate(&self, step: &StepContext, name: &str) -> Result<(), CeremonyError> {
        let hash = self.password_hashes.get(name).ok_or_else(|| {
            CeremonyError::Participants(format!("{name:?} is not a participant of this ceremony"))
        })?;
        for attempt in 1..=ATTEMPTS {
            let password = self.secret(step, &format!("Password for {name}: "))?;
            if verify_password(&password, hash)? {
                return Ok(());
            }
            self.say(&format!(
                "Wrong password for {name} (attempt {attempt} of {ATTEMPTS}).\n"
            ))?;
        }
        Err(UserError::AuthenticationFailed(name.to_owned()).into())
    }

    /// Asks for the name of a participant of `role`, who then logs in. Typing `abort` aborts
    /// the ceremony on behalf of the participant who logs in next.
    fn log_in(&self, step: &StepContext, role: Role, what: &str) -> Result<String, CeremonyError> {
        for _ in 0..ATTEMPTS {
            let name = self.line(step, &format!("{what}: {role} user name (or '{ABORT}'): "))?;
            if name == ABORT {
                return Err(self.abort(step)?);
            }
            let holds_role = self
                .participants
                .iter()
                .any(|p| p.name == name && p.role == role);
            if !holds_role {
                self.say(&format!(
                    "{name:?} is not a {role} of this ceremony; the {role}s are {}.\n",
                    self.names(role)
                ))?;
                continue;
            }
            self.authenticate(step, &name)?;
            return Ok(name);
        }
        Err(CeremonyError::Participants(format!(
            "no {role} of this ceremony logged in at step {}",
            step.number
        )))
    }

    fn abort(&self, step: &StepContext) -> Result<CeremonyError, CeremonyError> {
        let name = self.line(step, "Name of the participant who aborts: ")?;
        self.authenticate(step, &name)?;
        Ok(CeremonyError::Aborted {
            by: name,
            step: step.number,
        })
    }

    fn names(&self, role: Role) -> String {
        let names: Vec<&str> = self
            .participants
            .iter()
            .filter(|p| p.role == role)
            .map(|p| p.name.as_str())
            .collect();
        names.join(", ")
    }

    fn read_part(
        &self,
        step: &StepContext,
        request: &PartRequest,
        custodian: &str,
    ) -> Result<EnteredPart, CeremonyError> {
        let part_name = request.split.part_name();
        let method = form_kcv_method(request.algorithm);
        for attempt in 1..=ATTEMPTS {
            let text = self.secret(
                step,
                &format!(
                    "{custodian}, type your {part_name} of {:?} (not shown; spaces are ignored): ",
                    request.key_label
                ),
            )?;
            let compact: Zeroizing<String> =
                Zeroizing::new(text.chars().filter(|c| !c.is_whitespace()).collect());
            let value = match request.split {
                Split::Components { .. } => SecretKey::from_hex(request.algorithm, &compact)
                    .map(PartValue::Component)
                    .map_err(|error| error.to_string()),
                Split::Shares { .. } => KeyShare::from_text(&compact, 1)
                    .map(PartValue::Share)
                    .map_err(|error| error.to_string()),
            };
            let value = match value {
                Ok(value) => value,
                Err(reason) => {
                    self.say(&format!(
                        "That {part_name} is not valid ({reason}); attempt {attempt} of {ATTEMPTS}.\n"
                    ))?;
                    continue;
                }
            };
            let part_kcv = self.read_kcv(
                step,
                method,
                &format!("{part_name} check value on your form ({method}): "),
            )?;
            let key_kcv = self.read_kcv(
                step,
                method,
                &format!("key check value on your form ({method}): "),
            )?;
            return Ok(EnteredPart {
                custodian: custodian.to_owned(),
                source: "prompt".to_owned(),
                value,
                part_kcv,
                key_kcv,
            });
        }
        Err(CeremonyError::Terminal(format!(
            "{custodian} gave no valid {part_name} in {ATTEMPTS} attempts"
        )))
    }

    fn read_kcv(
        &self,
        step: &StepContext,
        method: station::crypto::kcv::KcvMethod,
        prompt: &str,
    ) -> Result<Kcv, CeremonyError> {
        for _ in 0..ATTEMPTS {
            let text = self.line(step, prompt)?;
            let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            match Kcv::from_hex(method, &compact) {
                Ok(kcv) => return Ok(kcv),
                Err(error) => self.say(&format!("Invalid check value {text:?}: {error}.\n"))?,
            }
        }
        Err(CeremonyError::Terminal(format!(
            "no valid check value in {ATTEMPTS} attempts"
        )))
    }
}

impl CeremonyInputs for TerminalInputs<'_> {
    fn attestation(
        &mut self,
        step: &StepContext,
        role: Role,
        statement: &str,
    ) -> Result<String, CeremonyError> {
        self.announce(step)?;
        self.say(&format!(
            "\nStep {} of {}: the {role} attests:\n  {statement}\n",
            step.number, step.total
        ))?;
        let name = self.log_in(step, role, "Attesting")?;
        loop {
            let answer = self.line(step, "Type 'yes' to attest, or 'abort': ")?;
            match answer.as_str() {
                "yes" => return Ok(name),
                ABORT => return Err(self.abort(step)?),
                _ => self.say("Type 'yes' or 'abort'.\n")?,
            }
        }
    }

    fn parts(
        &mut self,
        step: &StepContext,
        request: &PartRequest,
    ) -> Result<Vec<EnteredPart>, CeremonyError> {
        self.announce(step)?;
        let needed = request.split.needed();
        self.say(&format!(
            "\nStep {} of {}: {needed} custodians enter their {} of {:?} ({}).\n",
            step.number,
            step.total,
            request.split.part_name(),
            request.key_label,
            request.algorithm
        ))?;
        let mut parts = Vec::with_capacity(needed);
        for position in 1..=needed {
            let custodian = self.log_in(
                step,
                Role::Custodian,
                &format!("{} {position} of {needed}", request.split.part_name()),
            )?;
            parts.push(self.read_part(step, request, &custodian)?);
        }
        Ok(parts)
    }

    fn hand_out(&mut self, step: &StepContext, form: &PartForm) -> Result<(), CeremonyError> {
        self.announce(step)?;
        self.say(&format!(
            "\nStep {} of {}: {} {} of {} of {:?} for custodian {}; everyone else looks away.\n",
            step.number,
            step.total,
            form.part_name,
            form.position.0,
            form.position.1,
            form.key_label,
            form.custodian
        ))?;
        self.authenticate(step, &form.custodian)?;
        let text = form.render();
        self.say(&text)?;
        self.line(
            step,
            "Copy the form, seal it in its envelope, then press Enter to clear the screen: ",
        )?;
        self.terminal
            .clear_screen()
            .map_err(|error| CeremonyError::Terminal(error.to_string()))
    }

    fn deliver_key_block(
        &mut self,
        step: &StepContext,
        label: &str,
        kek: &str,
        key_block: &str,
    ) -> Result<(), CeremonyError> {
        self.say(&format!(
            "\nStep {} of {}: key {label:?} as a TR-31 key block under KEK {kek:?}, for the host:\n{key_block}\n",
            step.number, step.total
        ))
    }

    fn finish(&mut self) -> Result<(), CeremonyError> {
        Ok(())
    }
}
