//! Payment-key cryptography: key types, check values, key components and shares, CMAC, DUKPT
//! derivation and TR-31 / X9.143 key blocks.

mod block_cipher;
pub mod components;
mod des;
pub mod dukpt;
pub mod kcv;
pub mod mac;
mod random;
mod secret;
pub mod shamir;
pub mod tr31;

pub use secret::{KeyAlgorithm, KeyError, SecretKey};
