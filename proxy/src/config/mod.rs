//! The proxy's configuration: `config.example.toml` mapped onto typed structs.
//!
//! Every struct denies unknown keys, so a typo is an error that names the key instead of a
//! silently ignored setting. [`Config::from_toml`] parses and then [`Config::validate`]s once;
//! the rest of the proxy can rely on the invariants listed on each field.

mod admin;
pub mod cluster;
mod limits;
mod metrics;
mod miners;
mod pdu;
mod pools;
pub mod ranges;
mod site;
mod url;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use admin::{Admin, Http};
pub use cluster::Cluster;
pub use limits::Limits;
pub use metrics::Metrics;
pub use miners::{Downstream, DownstreamProtocol, Vardiff};
pub use pdu::Pdu;
pub use pools::{Aggregation, Failover, Upstream, WorkerIdentity};
pub use site::{Cidr, GroupControl, Power, Rig, RigGroup, glob_match};
pub use url::{PoolUrl, UpstreamProtocol};

/// Why a configuration could not be used. The message always names the offending key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, or a value of the wrong type.
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// A value of the right type that makes no sense.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted path of the key, e.g. `upstream[1].weight`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What [`Config::redacted`] puts in place of a secret.
pub const REDACTED: &str = "<redacted>";

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners miners connect to. At least one.
    pub downstream: Vec<Downstream>,
    /// Pools, in failover order by `priority`, split by `weight`. At least one.
    pub upstream: Vec<Upstream>,
    /// Per-miner variable difficulty.
    #[serde(default)]
    pub vardiff: Vardiff,
    /// How miners are packed onto upstream connections.
    #[serde(default)]
    pub aggregation: Aggregation,
    /// Limits that protect the proxy from misbehaving peers.
    #[serde(default)]
    pub limits: Limits,
    /// Pool health and failover timing.
    #[serde(default)]
    pub failover: Failover,
    /// The admin socket (`hashshift ctl`). Absent: no control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
    /// The HTTP API (grid curtailment signal, GPU requests, status). Needs `[admin]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Http>,
    /// The Prometheus endpoint. Absent: no metrics listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// The site's power budget. Absent: no power control (rigs are only listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<Power>,
    /// Groups of rigs: model, efficiency, management API, membership.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rig_group: Vec<RigGroup>,
    /// Per-rig overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rig: Vec<Rig>,
    /// Switched PDUs (`[[pdu]]`): the escalation when a rig does not confirm sleep, and the
    /// only control of rigs whose group says `firmware = "pdu"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pdu: Vec<Pdu>,
    /// The GPU scheduler power is handed to (`kind = "slurm" | "webhook" | "command"`).
    /// Absent: GPU demand arrives through the admin socket (`ctl gpu-request`) and grants are
    /// only recorded in the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_scheduler: Option<crate::gpu::GpuSchedulerConfig>,
    /// Several instances serve this site, with one power leader elected on etcd
    /// (docs/cluster.md). Absent: one instance, its plan in `[admin] state_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text)
    }

    /// Parses and validates configuration text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// This configuration with every secret replaced by [`REDACTED`], for printing
    /// (`check-config`) and logs: pool passwords other than the conventional `x`, the
    /// webhook's `authorization` header, and the command scheduler's environment values.
    /// Secrets that are read from the environment or files (firmware passwords, the HTTP
    /// token) are not in the config at all; their variable and file names are kept.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        for up in &mut c.upstream {
            if !up.password.is_empty() && up.password != pools::default_password() {
                up.password = REDACTED.to_owned();
            }
        }
        if let Some(g) = &mut c.gpu_scheduler {
            g.redact_secrets(REDACTED);
        }
        c
    }

    /// Checks the invariants the rest of the proxy relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.downstream.is_empty() {
            return Err(invalid(
                "downstream",
                "at least one [[downstream]] listener is required",
            ));
        }
        if self.upstream.is_empty() {
            return Err(invalid(
                "upstream",
                "at least one [[upstream]] pool is required",
            ));
        }
        for (i, d) in self.downstream.iter().enumerate() {
            d.validate(i)?;
        }
        for (i, up) in self.upstream.iter().enumerate() {
            up.validate(i)?;
        }
        self.vardiff.validate()?;
        self.aggregation.validate()?;
        self.failover.validate()?;
        self.limits.validate()?;
        pdu::validate(&self.pdu)?;
        site::validate(self.power.as_ref(), &self.rig_group, &self.rig, &self.pdu)?;
        if let Some(g) = &self.gpu_scheduler {
            g.validate()
                .map_err(|e| invalid("gpu_scheduler", e.to_string()))?;
        }
        if let Some(m) = &self.metrics {
            m.validate()?;
        }
        if let Some(a) = &self.admin {
            a.validate()?;
        }
        if self.http.is_some() && self.admin.is_none() {
            return Err(invalid(
                "http",
                "needs [admin] (the control plane it serves)",
            ));
        }
        if let Some(c) = &self.cluster {
            c.validate()?;
            // The leader keeps its audit log in the state directory, like a single instance.
            if self.power.is_none() || self.admin.is_none() {
                return Err(invalid(
                    "cluster",
                    "needs [power] and [admin] (the cluster elects the site's power leader)",
                ));
            }
        }
        // Fail closed: without a state directory a restart would forget which rigs were put
        // to sleep, the curtailment and the GPU grant.
        if self.power.is_some() && self.admin.as_ref().is_none_or(|a| a.state_dir.is_none()) {
            return Err(invalid(
                "admin.state_dir",
                "required with [power] (it keeps drained rigs, the curtailment and the GPU grant across restarts)",
            ));
        }
        Ok(())
    }
}
