//! The roles a station user can hold.

use std::fmt;

/// A user's role. Each account has exactly one, so one person cannot act as custodian and
/// witness with the same account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UserRole {
    /// Manages user accounts and station settings, with no access to key material.
    Admin,
    /// Holds one component or share of a key and enters it in ceremonies.
    Custodian,
    /// Witnesses ceremonies and attests physical facts (the ceremony role "witness").
    Supervisor,
    /// Runs provisioning lines.
    Operator,
    /// Reads and verifies the audit trail and ceremony records.
    Auditor,
}

impl UserRole {
    /// Every role, in the order the help text lists them.
    pub const ALL: [Self; 5] = [
        Self::Admin,
        Self::Custodian,
        Self::Supervisor,
        Self::Operator,
        Self::Auditor,
    ];

    /// Returns the name used on the command line and in the database.
    pub fn name(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Custodian => "custodian",
            Self::Supervisor => "supervisor",
            Self::Operator => "operator",
            Self::Auditor => "auditor",
        }
    }

    /// Parses a name produced by [`UserRole::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.name() == name)
    }
}

impl fmt::Display for UserRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
