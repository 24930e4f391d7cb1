//! Integration tests of the station library, compiled into one binary.

mod audit;
mod ceremony;
mod crypto;
mod db;
mod demo;
mod link;
mod pki;
mod provision;
