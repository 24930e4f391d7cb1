//! ceremony
