//! The printable form that shows a custodian their component or share once, at generation.
//!
//! The form is plain text of at most 80 columns (for custodian names of up to 20 characters), so
//! it prints on any printer and fits a blind mailer. It holds the part in groups of four
//! characters, the part's and the whole key's check values with their method, and lines for the
//! custodian's and the witness's signatures.

use zeroize::Zeroizing;

use crate::crypto::KeyAlgorithm;
use crate::crypto::kcv::Kcv;

/// A component or share for one custodian. Holds the part in clear: never store or log it.
pub struct PartForm {
    /// Ceremony identifier.
    pub ceremony: uuid::Uuid,
    /// Script name.
    pub script_name: String,
    /// Label of the key the part belongs to.
    pub key_label: String,
    /// The key's algorithm.
    pub algorithm: KeyAlgorithm,
    /// The custodian the part is for.
    pub custodian: String,
    /// "component" or "share".
    pub part_name: &'static str,
    /// The part's position, from 1, and how many parts exist.
    pub position: (usize, usize),
    /// How many parts form the key.
    pub needed: usize,
    /// The part as text: hex for a component, the share's text form for a share.
    pub part_text: Zeroizing<String>,
    /// The part's check value.
    pub part_kcv: Kcv,
    /// The whole key's check value.
    pub key_kcv: Kcv,
}

impl PartForm {
    /// Renders the form as plain text. The result holds the part: zeroized on drop.
    pub fn render(&self) -> Zeroizing<String> {
        let (position, count) = self.position;
        let mut text = Zeroizing::new(String::new());
        let rule = "=".repeat(72);
        text.push_str(&format!("{rule}\n"));
        text.push_str(&format!(
            "KEY {} FORM - {} {position} OF {count} - CONFIDENTIAL\n",
            self.part_name.to_uppercase(),
            self.part_name.to_uppercase()
        ));
        text.push_str(&format!("{rule}\n"));
        text.push_str(&format!(
            "Ceremony:      {} ({})\n",
            self.script_name, self.ceremony
        ));
        text.push_str(&format!(
            "Key:           {} ({})\n",
            self.key_label, self.algorithm
        ));
        text.push_str(&format!("Custodian:     {}\n", self.custodian));
        text.push_str(&format!(
            "Dual control:  {} of the {count} {}s form the key\n",
            self.needed, self.part_name
        ));
        text.push_str(&format!("\n{}:\n", capitalise(self.part_name)));
        for line in grouped_lines(&self.part_text) {
            text.push_str(&format!("    {}\n", line.as_str()));
        }
        text.push_str(&format!(
            "\n{} check value: {}   ({})\n",
            capitalise(self.part_name),
            self.part_kcv.to_hex(),
            self.part_kcv.method()
        ));
        text.push_str(&format!(
            "Key check value:       {}   ({})\n",
            self.key_kcv.to_hex(),
            self.key_kcv.method()
        ));
        text.push_str("\nSeal this form in a tamper-evident envelope. Never copy it.\n\n");
        text.push_str(&format!(
            "Custodian {:<20} signature: ______________________  date: ________\n",
            self.custodian
        ));
        text.push_str(
            "Witness   ____________________ signature: ______________________  date: ________\n",
        );
        text.push_str("Envelope bag number: ______________\n");
        text.push_str(&format!("{rule}\n"));
        text
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Splits the part's text into lines of eight groups of four characters, for reading aloud and
/// typing back without losing one's place. Share text keeps its dashes in place.
fn grouped_lines(text: &str) -> Vec<Zeroizing<String>> {
    let chars: Zeroizing<Vec<char>> = Zeroizing::new(text.chars().collect());
    let mut lines = Vec::new();
    for line in chars.chunks(32) {
        let mut out = Zeroizing::new(String::new());
        for (index, group) in line.chunks(4).enumerate() {
            if index > 0 {
                out.push(' ');
            }
            out.extend(group.iter());
        }
        lines.push(out);
    }
    lines
}
