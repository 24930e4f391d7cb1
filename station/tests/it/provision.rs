//! Integration tests: provision.
