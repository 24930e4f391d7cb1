//! Integration tests: link.
