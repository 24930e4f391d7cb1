//! Payment-key cryptography: key types, check values, DUKPT derivation and TR-31 key blocks.

mod secret;

pub use secret::{KeyAlgorithm, KeyError, SecretKey};
