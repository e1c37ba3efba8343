//! Several hashshift instances serve one site; one of them, elected on an etcd lease, owns
//! the power budget (`[cluster]`, docs/cluster.md).
//!
//! - **Data plane per instance.** Listeners and pool connections are each instance's own;
//!   nothing on the share path waits on etcd.
//! - **One leader** ([`leader`]): each instance holds an etcd lease (its presence); the one
//!   whose lease the `leader` key is attached to runs the power controller, the only task that
//!   talks to firmware, PDUs and the GPU scheduler. Every such command passes the [`fence`]
//!   first, and every plan write is an etcd transaction guarded by the leader key's lease
//!   ([`etcd::Etcd::fenced`]), so a deposed leader (dead, partitioned, frozen) can neither act
//!   nor write. Commands are idempotent: a new leader may repeat its predecessor's last one.
//! - **Inventory** ([`inventory`]): each instance publishes its connected miners under its
//!   own lease; the leader sees the whole site through a `Fleet` that merges them, and sends
//!   kicks for another instance's miners as orders in etcd.
//! - **One site for operators** ([`forward`]): `ctl` and the HTTP API on any instance;
//!   what concerns power is answered by the leader (queued in etcd, audited once, naming the
//!   instance that received it).
//!
//! Power control itself (`crate::control`) never names this module: it sees ports, a plan
//! store and a fleet, whichever instance it runs on.

pub mod fence;
pub mod keys;

#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "etcd")]
pub mod fenced;
#[cfg(feature = "etcd")]
pub mod forward;
#[cfg(feature = "etcd")]
pub mod inventory;
#[cfg(feature = "etcd")]
pub mod leader;
#[cfg(feature = "etcd")]
pub mod node;
#[cfg(all(test, feature = "etcd"))]
pub(crate) mod testing;

use serde::{Deserialize, Serialize};

/// What the `leader` key holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// The leading instance.
    pub instance: String,
    /// Its lease (the key is attached to it).
    pub lease: i64,
    /// When it won (Unix ms).
    pub since_unix_ms: u64,
}

/// What each instance's `instances/<name>` key holds (its presence; under its lease).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Its name.
    pub instance: String,
    /// hashshift's version.
    pub version: String,
    /// When it started (Unix ms).
    pub started_unix_ms: u64,
    /// Its HTTP API address, if it serves one (operators' links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

/// This instance's part in the cluster now.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Role {
    /// Not yet in touch with etcd.
    #[default]
    Starting,
    /// Another instance leads (`None`: no one does, an election is under way).
    Follower {
        /// The leader's record, when one leads.
        leader: Option<LeaderRecord>,
    },
    /// This instance leads.
    Leader {
        /// Its record.
        record: LeaderRecord,
    },
    /// etcd cannot be reached: power control holds, changes are refused.
    Unreachable {
        /// Why.
        error: String,
    },
}

impl Role {
    /// Whether this instance leads.
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader { .. })
    }

    /// The leading instance's name, if known.
    pub fn leader_name(&self) -> Option<&str> {
        match self {
            Role::Leader { record }
            | Role::Follower {
                leader: Some(record),
            } => Some(&record.instance),
            _ => None,
        }
    }
}
