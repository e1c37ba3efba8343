//! Miners: listeners and per-connection sessions.

pub mod listener;
pub mod vardiff;
