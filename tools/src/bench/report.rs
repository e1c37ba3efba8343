//! The figures a bench run produces, printed for people and as one JSON line.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::args::{BenchProtocol, ChannelKind};

/// Latency percentiles in µs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Samples recorded.
    pub count: u64,
    /// Median (50th percentile).
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

impl Percentiles {
    /// Reads the percentiles of a histogram (all zero when empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        write!(
            f,
            "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({} samples)",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            self.count
        )
    }
}

/// Resource use of the proxy process (spawned or given by pid).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProxyFigures {
    /// The proxy's pid.
    pub pid: u32,
    /// VmRSS before any miner connected, KiB.
    pub rss_before_kib: Option<u64>,
    /// VmRSS with all miners connected and idle, KiB.
    pub rss_idle_kib: Option<u64>,
    /// Highest VmRSS seen under load, KiB.
    pub rss_load_kib: Option<u64>,
    /// (idle − before) / connected miners, KiB.
    pub kib_per_idle_miner: Option<f64>,
    /// CPU time (user + system) during the connect phase, µs.
    pub cpu_connect_us: Option<u64>,
    /// CPU µs per miner made ready in the connect phase (SV2: the Noise handshake,
    /// `SetupConnection`, the channel and its first job).
    pub cpu_us_per_connect: Option<f64>,
    /// CPU time (user + system) during the load phase, µs.
    pub cpu_load_us: Option<u64>,
    /// CPU µs per share answered during the load phase.
    pub cpu_us_per_share: Option<f64>,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// `direct`, `spawn` or `proxy`.
    pub mode: String,
    /// The miners' protocol.
    pub protocol: BenchProtocol,
    /// SV2: the kind of channel each miner opened.
    pub channel: Option<ChannelKind>,
    /// Address the miners connected to.
    pub target: String,
    /// Miners asked for.
    pub miners: usize,
    /// Miners that authorized and received a job.
    pub miners_ready: u64,
    /// Seconds from the first connect to the last miner ready.
    pub connect_secs: f64,
    /// Failed connects or handshakes.
    pub connect_errors: u64,
    /// Connections lost before teardown.
    pub disconnects: u64,
    /// Noise handshakes completed (SV2).
    pub handshakes: u64,
    /// Handshakes completed per second of the connect phase (first connect → last handshake).
    pub handshakes_per_sec: Option<f64>,
    /// TCP connect → Noise handshake done, per miner (SV2).
    pub handshake_us: Percentiles,
    /// CPU time of the load generator itself (this process, with the embedded pool) during
    /// the connect phase, µs: the other half of every handshake, on the same cores.
    pub bench_cpu_connect_us: Option<u64>,
    /// Length of the load phase, seconds.
    pub load_secs: f64,
    /// Per-miner submit rate asked for.
    pub share_rate_per_miner: f64,
    /// Submits written (whole run).
    pub shares_submitted: u64,
    /// Answers read during the load phase.
    pub shares_answered: u64,
    /// Answers per second during the load phase.
    pub shares_per_sec: f64,
    /// Answers `true` (whole run).
    pub accepted: u64,
    /// Answers `false` or error (whole run).
    pub rejected: u64,
    /// Rejections by error code (SV1: the Stratum number; SV2: the `error_code` string).
    pub rejected_by_code: BTreeMap<String, u64>,
    /// `SubmitShares.Success` messages read (SV2; each acknowledges one or more shares).
    pub acks: u64,
    /// Submit ticks skipped (no job yet or too many in flight).
    pub skipped_ticks: u64,
    /// Submit written → answer read.
    pub latency_us: Percentiles,
    /// Jobs the pool sent during the load phase.
    pub jobs_sent: u64,
    /// Pool sent a job → a miner read it, over all miners and jobs of the load phase.
    pub fanout_us: Percentiles,
    /// Proxy resource use, when there is a proxy process to look at.
    pub proxy: Option<ProxyFigures>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let protocol = match (self.protocol, self.channel) {
            (BenchProtocol::Sv2, Some(ChannelKind::Extended)) => "SV2, extended channels",
            (BenchProtocol::Sv2, _) => "SV2, standard channels",
            (BenchProtocol::Sv1, _) => "SV1",
        };
        writeln!(
            f,
            "hashshift bench ({} → {}, {protocol})",
            self.mode, self.target
        )?;
        writeln!(
            f,
            "  miners          {} ready of {} in {:.2} s ({} connect errors, {} disconnects)",
            self.miners_ready,
            self.miners,
            self.connect_secs,
            self.connect_errors,
            self.disconnects
        )?;
        if self.handshakes > 0 {
            writeln!(
                f,
                "  handshakes      {} Noise handshakes, {:.0}/s over the connect phase; connect → handshake {}",
                self.handshakes,
                self.handshakes_per_sec.unwrap_or(0.0),
                self.handshake_us
            )?;
            if let Some(us) = self.bench_cpu_connect_us {
                writeln!(
                    f,
                    "                  load generator CPU {:.1} µs per handshake (initiator side, same cores)",
                    us as f64 / self.handshakes as f64
                )?;
            }
        }
        writeln!(
            f,
            "  shares          {:.0}/s answered over {:.1} s ({} answered, {} submitted, {:.2}/s per miner asked)",
            self.shares_per_sec,
            self.load_secs,
            self.shares_answered,
            self.shares_submitted,
            self.share_rate_per_miner
        )?;
        write!(
            f,
            "  results         {} accepted, {} rejected {:?}, {} ticks skipped",
            self.accepted, self.rejected, self.rejected_by_code, self.skipped_ticks
        )?;
        if self.protocol == BenchProtocol::Sv2 {
            let per_ack = self.accepted as f64 / self.acks.max(1) as f64;
            write!(
                f,
                ", {} SubmitShares.Success ({per_ack:.1} shares each)",
                self.acks
            )?;
        }
        writeln!(f)?;
        writeln!(f, "  share latency   {}", self.latency_us)?;
        writeln!(
            f,
            "  job fan-out     {} ({} jobs)",
            self.fanout_us, self.jobs_sent
        )?;
        if let Some(p) = &self.proxy {
            let kib = |v: Option<u64>| v.map_or("n/a".to_owned(), |v| format!("{v} KiB"));
            writeln!(
                f,
                "  proxy pid {}    RSS before {}, idle {}, load {}",
                p.pid,
                kib(p.rss_before_kib),
                kib(p.rss_idle_kib),
                kib(p.rss_load_kib)
            )?;
            let num = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
            writeln!(
                f,
                "  proxy cost      {} KiB per idle miner, {} µs CPU per connect, {} µs CPU per share",
                num(p.kib_per_idle_miner),
                num(p.cpu_us_per_connect),
                num(p.cpu_us_per_share)
            )?;
        }
        Ok(())
    }
}
