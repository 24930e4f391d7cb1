//! Integration tests: db.
