//! Integration tests of the station library, compiled into one binary.

mod audit;
mod ceremony;
mod ceremony_cli;
mod ceremony_field_cases;
mod ceremony_flow;
mod ceremony_inputs;
mod ceremony_secrets;
mod crypto;
mod db;
mod demo;
mod link;
mod pkcs11;
mod pki;
mod provision;
mod tools;
mod vault;
