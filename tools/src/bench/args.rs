//! The options of `hashshift bench` and their checks.

use std::net::SocketAddr;

use anyhow::{Result, bail};
use serde::Serialize;

use hashshift_protocol::noise::AuthorityPublicKey;

/// Difficulty that clamps the share target to its maximum: every random share passes.
pub(crate) const TINY_DIFFICULTY: f64 = 1e-12;

/// The protocol the load miners speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchProtocol {
    /// Stratum V1 (JSON lines, plaintext).
    #[default]
    Sv1,
    /// Stratum V2 over Noise: handshake, `SetupConnection`, one mining channel per miner.
    Sv2,
}

/// The kind of SV2 channel each miner opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// Header-only mining with `REQUIRES_STANDARD_JOBS`, as SV2 ASIC firmware does.
    #[default]
    Standard,
    /// An extended channel: the miner rolls an extranonce (what SV2 proxies open).
    Extended,
}

/// Options of `hashshift bench`.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "bench")]
pub struct BenchArgs {
    /// Start an embedded test pool and a `hashshift run` child between it and the miners
    /// (the default).
    #[arg(long, conflicts_with_all = ["direct", "proxy"])]
    pub spawn: bool,
    /// Connect the miners straight to the embedded test pool: the baseline.
    #[arg(long, conflicts_with = "proxy")]
    pub direct: bool,
    /// Target an already running proxy at this loopback address.
    #[arg(long, value_name = "ADDR")]
    pub proxy: Option<SocketAddr>,
    /// Pid of the proxy given with `--proxy`, for memory and CPU figures.
    #[arg(long, value_name = "PID", requires = "proxy")]
    pub proxy_pid: Option<u32>,
    /// Protocol of the miners. `sv2`: the spawned proxy gets an SV2 listener and a fresh
    /// authority key; with `--proxy`, give the listener's key with `--authority-pubkey`;
    /// `--direct` starts the test pool in SV2 mode (extended channels only).
    #[arg(long, value_enum, default_value_t = BenchProtocol::Sv1)]
    pub protocol: BenchProtocol,
    /// SV2 channel kind.
    #[arg(long, value_enum, default_value_t = ChannelKind::Standard)]
    pub channel: ChannelKind,
    /// The authority public key (base58check) the `--proxy` SV2 listener's certificate must be
    /// signed by.
    #[arg(long, value_name = "KEY", requires = "proxy")]
    pub authority_pubkey: Option<AuthorityPublicKey>,
    /// Number of miners.
    #[arg(long, default_value_t = 1000)]
    pub miners: usize,
    /// Length of the load phase in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Shares per second each miner submits.
    #[arg(long, default_value_t = 1.0)]
    pub share_rate: f64,
    /// New connections per second.
    #[arg(long, default_value_t = 500.0)]
    pub connect_rate: f64,
    /// Seconds between new jobs from the embedded pool (0: none during the run).
    #[arg(long, default_value_t = 5.0)]
    pub jobs_every: f64,
    /// Fraction of shares that also meet the pool's target and go upstream (spawn mode; the
    /// pool difficulty is set so random shares meet it with this probability). 1: every
    /// share is forwarded, the worst case; a real farm forwards roughly 1 in N for N miners
    /// per upstream connection.
    #[arg(long, default_value_t = 1.0)]
    pub upstream_fraction: f64,
    /// Print the report as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

impl BenchArgs {
    /// Defaults, as the command line would give them: spawn mode, SV1, 1,000 miners.
    pub fn new() -> Self {
        use clap::Parser;
        BenchArgs::parse_from(["bench"])
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.miners == 0 {
            bail!("--miners must be at least 1");
        }
        for (name, v) in [
            ("--duration", self.duration),
            ("--share-rate", self.share_rate),
            ("--connect-rate", self.connect_rate),
        ] {
            if !(v.is_finite() && v > 0.0) {
                bail!("{name} must be a positive number");
            }
        }
        if !(self.upstream_fraction > 0.0 && self.upstream_fraction <= 1.0) {
            bail!("--upstream-fraction must be in (0, 1]");
        }
        if self.upstream_fraction < 1.0 && (self.direct || self.proxy.is_some()) {
            bail!("--upstream-fraction applies to the default spawn mode only");
        }
        if self.protocol == BenchProtocol::Sv2 {
            if self.proxy.is_some() && self.authority_pubkey.is_none() {
                bail!("--protocol sv2 with --proxy needs the listener's --authority-pubkey");
            }
            if self.direct && self.channel == ChannelKind::Standard {
                bail!(
                    "--direct --protocol sv2: the test pool opens extended channels only; \
                     add --channel extended"
                );
            }
        } else if self.authority_pubkey.is_some() || self.channel != ChannelKind::Standard {
            bail!("--authority-pubkey and --channel apply to --protocol sv2");
        }
        if !(self.jobs_every.is_finite() && self.jobs_every >= 0.0) {
            bail!("--jobs-every must be zero or positive");
        }
        if let Some(addr) = self.proxy
            && !addr.ip().is_loopback()
        {
            bail!(
                "--proxy {addr}: the bench only connects to loopback addresses (127.0.0.0/8, ::1); \
                 run it on the proxy's host"
            );
        }
        Ok(())
    }
}

/// The pool difficulty that a uniformly random hash meets with probability `fraction`:
/// P(hash ≤ diff1 / d) = 0xffff·2^208 / (d·2^256), so d = 0xffff / (2^48 · fraction).
pub(crate) fn pool_difficulty(fraction: f64) -> f64 {
    if fraction >= 1.0 {
        TINY_DIFFICULTY
    } else {
        65_535.0 / (2f64.powi(48) * fraction)
    }
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs::new()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<BenchArgs> {
        let args = BenchArgs::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        args.validate()?;
        Ok(args)
    }

    #[test]
    fn sv2_options_are_checked() {
        let key = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";
        assert_eq!(BenchArgs::new().protocol, BenchProtocol::Sv1);
        assert!(parse(&["--protocol", "sv2"]).is_ok());
        assert!(parse(&["--protocol", "sv2", "--channel", "extended"]).is_ok());
        assert!(parse(&["--protocol", "sv2", "--proxy", "127.0.0.1:1"]).is_err());
        let with_key = parse(&[
            "--protocol",
            "sv2",
            "--proxy",
            "127.0.0.1:1",
            "--authority-pubkey",
            key,
        ])
        .unwrap();
        assert!(with_key.authority_pubkey.is_some());
        assert!(
            parse(&["--authority-pubkey", key]).is_err(),
            "needs --proxy"
        );
        assert!(
            parse(&["--protocol", "sv2", "--direct"]).is_err(),
            "standard"
        );
        assert!(parse(&["--protocol", "sv2", "--direct", "--channel", "extended"]).is_ok());
        assert!(
            parse(&["--channel", "extended"]).is_err(),
            "SV1 has no channels"
        );
    }

    #[test]
    fn pool_difficulty_meets_the_fraction() {
        assert_eq!(pool_difficulty(1.0), TINY_DIFFICULTY);
        let d = pool_difficulty(0.001);
        assert!((d * 2f64.powi(48) * 0.001 - 65_535.0).abs() < 1e-6);
    }
}
