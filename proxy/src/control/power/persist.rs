//! Where the power plan is kept. A single instance writes `power.json` so that a crash at any
//! instant leaves either the old file or the new one, never half of one: write a temporary
//! file beside it, `fsync` it, rename it over the old one, `fsync` the directory. A cluster's
//! leader hands each new plan to a [`PlanSink`] instead (etcd, written in transactions only
//! its lease can pass; see `crate::cluster`).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::rigs::KnownRig;
use crate::control::arbiter::PersistedState;

/// The plan's file name inside the state directory.
pub const FILE_NAME: &str = "power.json";
/// The key under which the registry's [`KnownRig`]s sit beside the arbiter's plan.
pub const REGISTRY_KEY: &str = "registry";

/// What power.json holds: the arbiter's plan, and what the registry knows of each rig (absent
/// in files written before identities were kept: every rig then proves itself again).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanFile {
    /// The arbiter's plan.
    #[serde(flatten)]
    pub plan: PersistedState,
    /// How each rig is known.
    #[serde(default)]
    pub registry: Vec<KnownRig>,
}

/// Where a plan that changed goes, when it is not a local file.
pub trait PlanSink: Send + Sync {
    /// Takes the newest plan (its JSON text). Latest wins: a sink may skip a plan that a newer
    /// one replaced before it was written. An error is logged; the next change tries again.
    fn save(&self, plan: String) -> Result<(), String>;
}

/// Where power control keeps its plan.
pub enum Storage {
    /// `power.json` in `[admin] state_dir` (a single instance); with `reset`, the plan there is
    /// moved aside first (`run --reset-power-state`).
    File {
        /// Start with every rig unknown and GPU grant 0.
        reset: bool,
    },
    /// A plan read by the caller (a cluster leader, from etcd; `None`: there is none yet) and
    /// the sink its changes go to.
    Sink {
        /// The plan to continue from.
        restored: Option<PlanFile>,
        /// Where changes go.
        sink: std::sync::Arc<dyn PlanSink>,
    },
}

/// Where the running controller writes (resolved from [`Storage`] at start).
pub enum PlanTarget {
    /// A local file, replaced atomically.
    File(std::path::PathBuf),
    /// A sink.
    Sink(std::sync::Arc<dyn PlanSink>),
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole() {
        let dir = std::env::temp_dir().join(format!("hashshift-persist-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        write_atomically(&path, b"{\"a\":1}").unwrap();
        write_atomically(&path, b"{\"a\":2}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":2}");
        assert!(!path.with_extension("json.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
