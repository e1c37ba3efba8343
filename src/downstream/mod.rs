//! Miners: listeners and per-connection sessions (SV1 in `sv1`, SV2 in `sv2`).

pub mod listener;
pub mod mailbox;
pub mod outbox;
pub mod registry;
pub mod sv1;
pub mod sv2;
pub mod vardiff;
