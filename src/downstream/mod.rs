//! Miners: listeners and per-connection sessions.

pub mod vardiff;
