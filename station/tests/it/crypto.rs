//! Integration tests: crypto.
