//! `[[downstream]]` and `[vardiff]`: the listeners miners connect to and the difficulty they
//! are given.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// A listener for miners.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Downstream {
    /// Wire protocol spoken on this listener.
    pub protocol: DownstreamProtocol,
    /// Address to listen on, e.g. `0.0.0.0:3333`.
    pub listen: SocketAddr,
    /// SV2 only, required there: the authority key file (written by `hashshift keygen`) whose
    /// key signs the Noise certificate of the proxy's static key. Miners pin its public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority_key_file: Option<std::path::PathBuf>,
    /// SV2 only: how long each Noise certificate is valid, from the handshake on (seconds,
    /// 60 to 10 years).
    #[serde(default = "default_cert_validity_secs")]
    pub cert_validity_secs: u32,
    /// SV2 only: largest frame payload accepted from a miner, checked before buffering it
    /// (bytes, 1024 to 16 MiB). Miner messages are small: the largest, `SetupConnection`,
    /// is about 1.3 KB.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// SV2 only: most mining channels one connection may open.
    #[serde(default = "default_max_channels")]
    pub max_channels_per_connection: usize,
}

impl Downstream {
    /// Checks listener `i` (`downstream[i]`).
    pub(super) fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let key = |k: &str| format!("downstream[{i}].{k}");
        match self.protocol {
            DownstreamProtocol::Sv1 => {
                if self.authority_key_file.is_some() {
                    return Err(invalid(
                        key("authority_key_file"),
                        "only SV2 listeners use an authority key",
                    ));
                }
            }
            DownstreamProtocol::Sv2 => {
                if self.authority_key_file.is_none() {
                    return Err(invalid(
                        key("authority_key_file"),
                        "required for protocol = \"sv2\" (create one with `hashshift keygen --out FILE`)",
                    ));
                }
            }
        }
        if !(60..=315_360_000).contains(&self.cert_validity_secs) {
            return Err(invalid(
                key("cert_validity_secs"),
                "must be 60 to 315360000 (10 years)",
            ));
        }
        if !(1024..=(1 << 24)).contains(&self.max_frame_bytes) {
            return Err(invalid(key("max_frame_bytes"), "must be 1024 to 16777216"));
        }
        if !(1..=65_536).contains(&self.max_channels_per_connection) {
            return Err(invalid(
                key("max_channels_per_connection"),
                "must be 1 to 65536",
            ));
        }
        Ok(())
    }
}

fn default_cert_validity_secs() -> u32 {
    86_400
}

fn default_max_frame_bytes() -> usize {
    16_384
}

fn default_max_channels() -> usize {
    64
}

/// Wire protocol of a downstream listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DownstreamProtocol {
    /// Stratum V1 (JSON lines).
    Sv1,
    /// Stratum V2 (binary frames inside Noise NX), Mining protocol, standard and extended
    /// channels.
    Sv2,
}

/// Variable difficulty settings. Difficulties are SV1 pool difficulties (1 = 2^32 hashes per
/// share); values below 1 are valid, for lab and test rigs. Every key is optional.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Vardiff {
    /// Difficulty a new miner starts at (before any `suggest_difficulty`).
    pub initial: f64,
    /// Lowest difficulty ever assigned.
    pub min: f64,
    /// Highest difficulty ever assigned.
    pub max: f64,
    /// Share rate vardiff steers each miner toward.
    pub shares_per_minute: f64,
}

impl Default for Vardiff {
    fn default() -> Self {
        Vardiff {
            initial: 1024.0,
            min: 1.0,
            max: 1e12,
            shares_per_minute: 20.0,
        }
    }
}

impl Vardiff {
    /// Checks the difficulties are positive and `initial` lies in `[min, max]`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let v = self;
        for (key, value) in [
            ("initial", v.initial),
            ("min", v.min),
            ("max", v.max),
            ("shares_per_minute", v.shares_per_minute),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid(
                    format!("vardiff.{key}"),
                    format!("must be a positive number, got {value}"),
                ));
            }
        }
        if v.min > v.max {
            return Err(invalid(
                "vardiff.min",
                format!("{} is above vardiff.max {}", v.min, v.max),
            ));
        }
        if !(v.min..=v.max).contains(&v.initial) {
            return Err(invalid(
                "vardiff.initial",
                format!(
                    "{} is outside [min, max] = [{}, {}]",
                    v.initial, v.min, v.max
                ),
            ));
        }
        Ok(())
    }
}
