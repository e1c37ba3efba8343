//! Miners: listeners and per-connection sessions.

pub mod listener;
pub mod mailbox;
pub mod outbox;
pub mod registry;
pub mod sv1;
pub mod vardiff;
