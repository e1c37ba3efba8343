//! Targets, difficulty and share validation.
