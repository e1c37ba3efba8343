//! Miners: listeners and per-connection sessions (SV1 in `sv1`, SV2 in `sv2`). Sessions reach
//! pools only through [`crate::pool_link`]: a place from its `Pools`, work and a share queue in
//! the assignment, commands in the mailbox.

pub mod listener;
pub mod outbox;
pub mod sv1;
pub mod sv2;
pub mod vardiff;

/// Longest worker name accepted from a miner, in bytes: SV2's `user_identity` is a STR0_255,
/// and SV1 miners get the same bound (the name becomes a rig id, a log field and a metric
/// label).
pub const MAX_WORKER_NAME_BYTES: usize = 255;

/// Consecutive errors (bad lines or messages, rejected shares other than stale ones, refused
/// requests) after which a miner of either protocol is dropped: enough that an honest miner
/// never gets there (any accepted share resets the count), few enough that a broken or
/// hostile one cannot keep the proxy busy answering it.
pub const MAX_CONSECUTIVE_ERRORS: u32 = 500;

/// Whether a miner's worker name is usable: 1 to [`MAX_WORKER_NAME_BYTES`] bytes, no control
/// characters (they would forge log lines and break the NOC page and metric labels).
pub fn valid_worker_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_WORKER_NAME_BYTES && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_names_are_bounded_and_printable() {
        assert!(valid_worker_name("farm.s19-017"));
        assert!(valid_worker_name(&"a".repeat(MAX_WORKER_NAME_BYTES)));
        assert!(!valid_worker_name(&"a".repeat(MAX_WORKER_NAME_BYTES + 1)));
        assert!(!valid_worker_name(""));
        assert!(!valid_worker_name("rig\nFAKE LOG LINE"));
        assert!(!valid_worker_name("rig\u{1b}[31m"));
    }
}
