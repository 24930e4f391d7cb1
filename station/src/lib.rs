//! Key-injection provisioning station.
//!
//! The library behind the `station` command: payment-key cryptography, the key vault, key
//! ceremonies, the terminal link and protocol, the terminal simulator, provisioning, the audit
//! trail and the private PostgreSQL cluster.

pub mod audit;
pub mod ceremony;
pub mod crypto;
pub mod db;
pub mod link;
pub mod pki;
pub mod protocol;
pub mod provision;
pub mod store;
pub mod terminal;
pub mod users;
pub mod vault;
