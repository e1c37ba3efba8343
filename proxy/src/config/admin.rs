//! `[admin]` and `[http]`: the operators' ways in (the admin socket and the HTTP API).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The HTTP API.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Address to listen on (keep it on a management network).
    pub listen: SocketAddr,
    /// Environment variable holding the bearer token that changes (`POST`) need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Or a file holding it (e.g. a Docker secret); surrounding whitespace is ignored.
    /// Neither (or an empty token): changes are refused, reads still work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<std::path::PathBuf>,
}

/// The admin socket and where the control plane keeps its durable state.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Path of the Unix socket (created with mode 0660; a stale one is replaced).
    pub socket: std::path::PathBuf,
    /// UIDs besides the proxy's own that may use the socket (the kernel reports each
    /// client's UID; others get one error line).
    #[serde(default)]
    pub allowed_uids: Vec<u32>,
    /// Directory for the audit log and the persisted power state (drained rigs, grants,
    /// curtailment), so a restart never re-energises rigs by itself. Required with `[power]`.
    /// Absent: the audit log is kept in memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<std::path::PathBuf>,
    /// An admin client (a `hashshift ctl` or an automation script) that sends nothing this
    /// long is disconnected, in seconds (1 to 86400; default 600).
    #[serde(default = "default_admin_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
}

/// Default [`Admin::idle_timeout_secs`]: ten minutes, long enough for a script that keeps one
/// connection open between polls.
fn default_admin_idle_timeout_secs() -> u64 {
    600
}

impl Admin {
    /// Range-checks what serde cannot.
    pub(super) fn validate(&self) -> Result<(), super::ConfigError> {
        if !(1..=86_400).contains(&self.idle_timeout_secs) {
            return Err(super::invalid(
                "admin.idle_timeout_secs",
                "must be 1 to 86400 seconds",
            ));
        }
        Ok(())
    }
}
