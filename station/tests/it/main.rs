//! Integration tests of the station library, compiled into one binary.

mod audit;
mod crypto;
mod db;
mod link;
mod provision;
