//! Payment-key cryptography: key types, check values, key components, DUKPT derivation and
//! TR-31 / X9.143 key blocks.

mod block_cipher;
pub mod components;
pub mod dukpt;
pub mod kcv;
mod secret;
pub mod tr31;

pub use secret::{KeyAlgorithm, KeyError, SecretKey};
