//! The admin socket's wire format: one JSON object per line each way, in the spirit of the
//! HAProxy runtime API. A request names its command in `cmd`; the answer is
//! `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`, one line, in request order.
//!
//! ```text
//! → {"cmd":"rigs"}
//! ← {"ok":true,"result":[{"id":"farm.s19-017","state":"mining",...}]}
//! → {"cmd":"drain","target":{"group":"hall-a"},"reason":"GPU job 4812","by":"alice"}
//! ← {"ok":true,"result":{"accepted":true,"rigs":["farm.s19-017",...]}}
//! ```
//!
//! Every field is range-checked by [`crate::control::limits`] before anything acts on it (kW
//! within 10× the site cap, a curtailment ending within 7 days, names ≤ 128 bytes, reasons ≤
//! 1024, no control characters); a refusal is an `{"ok":false,"error":...}` line that names
//! the field and the limit.
//!
//! `by` is the operator name the client claims (`hashshift ctl` sends `$USER`); the audit log
//! records it next to the UID the kernel reports for the connection, which is the one that
//! counts.

use serde::{Deserialize, Serialize};

/// Longest request line accepted (bytes); a longer one closes the connection.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Which rigs a drain or resume applies to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// One rig, by id.
    Rig(String),
    /// Every rig of a group.
    Group(String),
    /// Enough rigs to free (drain) or restore (resume) this many kW, least efficient first
    /// for a drain.
    Kw(f64),
    /// Every rig (resume only).
    All,
}

/// A request, tagged by `cmd`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Every rig, with state, power and hashrate.
    Rigs,
    /// One rig in detail.
    Rig {
        /// Rig id.
        id: String,
    },
    /// Pools with their connections and share counts.
    Pools,
    /// Drain rigs: sleep through their firmware, confirm, release their power.
    Drain {
        /// Which rigs.
        target: Target,
        /// Why, for the audit log.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Resume drained rigs (staggered).
    Resume {
        /// Which rigs.
        target: Target,
        /// Why, for the audit log.
        #[serde(default)]
        reason: Option<String>,
    },
    /// The site's power budget: cap, mining, GPU, headroom, pending grants.
    Power,
    /// Grid curtailment: lower the site cap to `kw` until `until_unix` (seconds).
    Curtail {
        /// The cap during the curtailment (kW).
        kw: f64,
        /// When it ends (Unix seconds), within [now, now + 7 days].
        until_unix: u64,
        /// Why, for the audit log.
        #[serde(default)]
        reason: Option<String>,
    },
    /// End a curtailment early.
    CurtailClear {
        /// Why, for the audit log.
        #[serde(default)]
        reason: Option<String>,
    },
    /// The GPU side asks for power (kW it wants in total now; 0 gives it all back).
    GpuRequest {
        /// kW wanted.
        kw: f64,
        /// Why, for the audit log.
        #[serde(default)]
        reason: Option<String>,
    },
    /// The audit log, newest last.
    Events {
        /// At most this many (default 100).
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Disconnect a rig's stratum connection(s) (it reconnects, e.g. to pick up new settings).
    Kick {
        /// Rig id.
        id: String,
    },
    /// Remove a rig an operator knows is gone (decommissioned, renamed): its power no longer
    /// counts. Refused while it is connected.
    Forget {
        /// Rig id.
        id: String,
        /// Why, for the audit log.
        #[serde(default)]
        reason: Option<String>,
    },
    /// The cluster as this instance sees it: instances, the power leader, this instance's
    /// lease, etcd's health (`[cluster]` only; answered by the instance asked, never
    /// forwarded).
    Cluster,
}

impl Command {
    /// Whether the command only reads (`rigs`, `rig`, `pools`, `power`, `events`,
    /// `cluster`): one an instance may answer from its own view when the power leader cannot
    /// be reached, saying so. Every other command changes something and must reach the leader.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Command::Rigs
                | Command::Rig { .. }
                | Command::Pools
                | Command::Power
                | Command::Events { .. }
                | Command::Cluster
        )
    }

    /// Whether the command is about the instance asked, not the site: `pools` (its own pool
    /// connections) and `cluster` (its view of the cluster). These are never forwarded to the
    /// power leader.
    pub fn is_local(&self) -> bool {
        matches!(self, Command::Pools | Command::Cluster)
    }
}

/// A request line: the command and who claims to send it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The command.
    #[serde(flatten)]
    pub command: Command,
    /// The operator name the client claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// An answer line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the command was carried out (or accepted, for drains and resumes, which
    /// complete in the background: follow them with `rigs` and `events`).
    pub ok: bool,
    /// The result, when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// What went wrong, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set when the instance asked answered a read from its own view because the power leader
    /// could not be reached (why, and that the site's view may differ). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    /// In process only, never on the wire: the answer is not the power leader's but the
    /// forwarder's own refusal (no leader, etcd unreachable, no answer in time). The control
    /// plane may then answer a read itself, marked [`Response::degraded`].
    #[serde(skip)]
    pub unreached: bool,
}

impl Response {
    /// A successful answer.
    pub fn ok(result: serde_json::Value) -> Self {
        Response {
            ok: true,
            result: Some(result),
            error: None,
            degraded: None,
            unreached: false,
        }
    }

    /// A refusal or failure.
    pub fn error(error: impl Into<String>) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(error.into()),
            degraded: None,
            unreached: false,
        }
    }

    /// The forwarder's refusal: no power leader could be reached (see [`Response::unreached`]).
    pub fn unreached(error: impl Into<String>) -> Self {
        Response {
            unreached: true,
            ..Response::error(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_documented() {
        let r: Request = serde_json::from_str(
            r#"{"cmd":"drain","target":{"group":"hall-a"},"reason":"GPU job","by":"alice"}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request {
                command: Command::Drain {
                    target: Target::Group("hall-a".into()),
                    reason: Some("GPU job".into()),
                },
                by: Some("alice".into()),
            }
        );
        let r: Request = serde_json::from_str(r#"{"cmd":"rigs"}"#).unwrap();
        assert_eq!(r.command, Command::Rigs);
        let r: Request = serde_json::from_str(r#"{"cmd":"cluster"}"#).unwrap();
        assert_eq!(r.command, Command::Cluster);
        assert!(r.command.is_local() && r.command.is_read());
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"cmd":"cluster"}"#,
            "as `ctl cluster` sends it"
        );
        let r: Request = serde_json::from_str(r#"{"cmd":"resume","target":"all"}"#).unwrap();
        assert_eq!(
            r.command,
            Command::Resume {
                target: Target::All,
                reason: None
            }
        );
        for bad in [
            r#"{"cmd":"reboot"}"#,
            r#"{"cmd":"rig"}"#,
            r#"{"cmd":"drain","target":{"kw":"lots"}}"#,
            r#"["rigs"]"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses_round_trip() {
        let ok = Response::ok(serde_json::json!({"a": 1}));
        let line = serde_json::to_string(&ok).unwrap();
        assert_eq!(line, r#"{"ok":true,"result":{"a":1}}"#);
        let err = Response::error("no such rig");
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"ok":false,"error":"no such rig"}"#
        );
        // The forwarder's mark never reaches the wire; a degraded read says so.
        let unreached = Response::unreached("no power leader");
        assert!(unreached.unreached);
        assert_eq!(
            serde_json::to_string(&unreached).unwrap(),
            r#"{"ok":false,"error":"no power leader"}"#
        );
        let degraded = Response {
            degraded: Some("no power leader".into()),
            ..Response::ok(serde_json::json!([]))
        };
        assert_eq!(
            serde_json::to_string(&degraded).unwrap(),
            r#"{"ok":true,"result":[],"degraded":"no power leader"}"#
        );
    }
}
