//! `hashshift ctl`: the admin socket's command-line client, in the spirit of `scontrol`.
//! Human tables by default, the server's JSON with `--json` (one line, for scripts).
//! Exit status: 0 when the proxy carried the command out, 1 when it refused, 2 when it could
//! not be reached.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LinesCodec};

use super::protocol::{Command, Request, Response, Target};

/// Where the socket is unless `--socket` or `HASHSHIFT_ADMIN_SOCKET` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/hashshift/admin.sock";
/// Longest answer read (a `rigs` listing of a large site is a few MiB).
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// How long the proxy may take to answer unless `--timeout-secs` says otherwise.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// `hashshift ctl` options.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "ctl")]
pub struct CtlArgs {
    /// The admin socket.
    #[arg(long, env = "HASHSHIFT_ADMIN_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print the proxy's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for the proxy's answer (1 to 3600; a `rigs` listing of a very large
    /// site over a slow link may need more than the default).
    #[arg(long, global = true, default_value_t = DEFAULT_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout_secs: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// Rig selection for drain and resume.
#[derive(Clone, Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Selection {
    /// A rig id.
    pub rig: Option<String>,
    /// Every rig of a group.
    #[arg(long)]
    pub group: Option<String>,
    /// Enough rigs for this many kW (least efficient first when draining).
    #[arg(long)]
    pub kw: Option<f64>,
    /// Every rig (resume only).
    #[arg(long)]
    pub all: bool,
}

impl Selection {
    fn target(&self) -> Result<Target> {
        Ok(match (&self.rig, &self.group, self.kw, self.all) {
            (Some(r), None, None, false) => Target::Rig(r.clone()),
            (None, Some(g), None, false) => Target::Group(g.clone()),
            (None, None, Some(kw), false) if kw.is_finite() && kw > 0.0 => Target::Kw(kw),
            (None, None, None, true) => Target::All,
            _ => bail!("give one of: RIG, --group G, --kw N (> 0), --all"),
        })
    }
}

/// The commands.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Every rig: state, power (and where the figure comes from), hashrate.
    Rigs,
    /// One rig in detail.
    Rig {
        /// Rig id.
        id: String,
    },
    /// Pools, their connections and share counts.
    Pools,
    /// Drain rigs: sleep through their firmware, confirm, release their power.
    Drain {
        /// Which rigs: one, a group, or an amount of power.
        #[command(flatten)]
        which: Selection,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume drained rigs, staggered.
    Resume {
        /// Which rigs: one, a group, or every drained rig.
        #[command(flatten)]
        which: Selection,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// The site's power: cap, mining, GPU, headroom, pending grants.
    Power,
    /// Grid curtailment: lower the site cap until a time (`--clear` ends it).
    Curtail {
        /// The cap during the curtailment (kW).
        #[arg(long, required_unless_present = "clear")]
        kw: Option<f64>,
        /// When it ends: a duration from now (`45m`, `2h`) or an RFC 3339 time.
        #[arg(long, required_unless_present = "clear")]
        until: Option<String>,
        /// End the current curtailment now.
        #[arg(long, conflicts_with_all = ["kw", "until"])]
        clear: bool,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Ask for GPU power through the socket (for GPU schedulers without an adapter).
    GpuRequest {
        /// kW the GPU side wants in total now (0 gives it back).
        #[arg(long)]
        kw: f64,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// The audit log, newest last.
    Events {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Disconnect a rig's stratum connection(s).
    Kick {
        /// Rig id.
        id: String,
    },
    /// Remove a rig you know is gone (its power stops counting). Refused while it is
    /// connected.
    Forget {
        /// Rig id.
        id: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// The cluster as this instance sees it: instances, the power leader, lease age, etcd
    /// health (`[cluster]` only).
    Cluster,
}

/// A time given as a duration from now or an RFC 3339 timestamp, in Unix seconds.
pub fn parse_until(text: &str, now: SystemTime) -> Result<u64> {
    let at = match humantime::parse_duration(text) {
        // Checked: `SystemTime + Duration` panics on overflow (`--until 500000000000y`); the
        // proxy refuses anything past 7 days with the limit in its answer.
        Ok(d) => now
            .checked_add(d)
            .with_context(|| format!("--until {text:?}: too far ahead"))?,
        Err(_) => humantime::parse_rfc3339_weak(text)
            .with_context(|| format!("--until {text:?}: neither a duration (2h) nor a time"))?,
    };
    Ok(crate::time::since_epoch_at(at).as_secs())
}

fn request(command: &CtlCommand) -> Result<Command> {
    Ok(match command {
        CtlCommand::Rigs => Command::Rigs,
        CtlCommand::Rig { id } => Command::Rig { id: id.clone() },
        CtlCommand::Pools => Command::Pools,
        CtlCommand::Drain { which, reason } => {
            let target = which.target()?;
            if target == Target::All {
                bail!("draining every rig takes --kw or --group; --all is for resume");
            }
            Command::Drain {
                target,
                reason: reason.clone(),
            }
        }
        CtlCommand::Resume { which, reason } => Command::Resume {
            target: which.target()?,
            reason: reason.clone(),
        },
        CtlCommand::Power => Command::Power,
        CtlCommand::Curtail {
            kw,
            until,
            clear,
            reason,
        } => match (kw, until, clear) {
            (_, _, true) => Command::CurtailClear {
                reason: reason.clone(),
            },
            (Some(kw), Some(until), false) => Command::Curtail {
                kw: *kw,
                until_unix: parse_until(until, SystemTime::now())?,
                reason: reason.clone(),
            },
            _ => bail!("curtail takes --kw and --until, or --clear"),
        },
        CtlCommand::GpuRequest { kw, reason } => Command::GpuRequest {
            kw: *kw,
            reason: reason.clone(),
        },
        CtlCommand::Events { limit } => Command::Events {
            limit: Some(*limit),
        },
        CtlCommand::Kick { id } => Command::Kick { id: id.clone() },
        CtlCommand::Forget { id, reason } => Command::Forget {
            id: id.clone(),
            reason: reason.clone(),
        },
        CtlCommand::Cluster => Command::Cluster,
    })
}

/// Sends one request and returns the answer, waiting at most [`DEFAULT_TIMEOUT_SECS`].
pub async fn call(socket: &std::path::Path, request: &Request) -> Result<Response> {
    call_within(socket, request, Duration::from_secs(DEFAULT_TIMEOUT_SECS)).await
}

/// Sends one request and returns the answer, waiting at most `timeout` for it.
pub async fn call_within(
    socket: &std::path::Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot reach the proxy at {}", socket.display()))?;
    let mut lines = Framed::new(stream, LinesCodec::new_with_max_length(MAX_RESPONSE_BYTES));
    let line = serde_json::to_string(request)?;
    let answer = tokio::time::timeout(timeout, async {
        lines.send(line).await?;
        lines.next().await.transpose()
    })
    .await
    .context("the proxy did not answer in time")??
    .context("the proxy closed the socket without answering")?;
    serde_json::from_str(&answer).context("the proxy's answer is not JSON")
}

/// `hashshift ctl`.
pub fn main(args: CtlArgs) -> ExitCode {
    let result = (|| -> Result<Response> {
        let command = request(&args.command)?;
        let request = Request {
            command,
            by: std::env::var("USER").ok(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(call_within(
            &args.socket,
            &request,
            Duration::from_secs(args.timeout_secs),
        ))
    })();
    match result {
        Err(e) => {
            eprintln!("hashshift ctl: {e:#}");
            ExitCode::from(2)
        }
        Ok(response) if args.json => {
            println!("{}", serde_json::to_string(&response).unwrap_or_default());
            if response.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Ok(Response {
            ok: false, error, ..
        }) => {
            eprintln!("hashshift ctl: {}", error.unwrap_or_default());
            ExitCode::from(1)
        }
        Ok(Response {
            result, degraded, ..
        }) => {
            if let Some(why) = degraded {
                eprintln!("hashshift ctl: degraded: {why}");
            }
            print!("{}", render(&args.command, &result.unwrap_or(Value::Null)));
            ExitCode::SUCCESS
        }
    }
}

/// The human form of an answer.
pub fn render(command: &CtlCommand, result: &Value) -> String {
    match command {
        CtlCommand::Rigs => table(
            result,
            &[
                ("ID", "id"),
                ("STATE", "state"),
                ("CONTROL", "control"),
                ("GROUP", "group"),
                ("MODEL", "model"),
                ("TH/S", "hashrate_ths"),
                ("POWER W", "power_w"),
                ("SOURCE", "power_source"),
                ("AGE S", "power_age_secs"),
                ("IDENTITY", "identity"),
                ("CONFLICTS", "identity_conflicts"),
                ("ADDRESS", "address"),
                ("POOL", "pool"),
            ],
        ),
        CtlCommand::Pools => table(
            result,
            &[
                ("POOL", "pool"),
                ("URL", "url"),
                ("PRIO", "priority"),
                ("WEIGHT", "weight"),
                ("ACTIVE", "active"),
                ("UP", "up"),
                ("CONNS", "connections"),
                ("MINERS", "miners"),
                ("ACCEPTED", "accepted"),
                ("REJECTED", "rejected"),
            ],
        ),
        CtlCommand::Events { .. } => table(
            result,
            &[
                ("TIME", "time"),
                ("WHO", "who"),
                ("WHAT", "what"),
                ("DETAIL", "detail"),
                ("WHY", "why"),
            ],
        ),
        CtlCommand::Cluster => cluster(result),
        _ => fields(result, ""),
    }
}

/// `ctl cluster`: who leads, this instance's lease, etcd, then the instances.
fn cluster(v: &Value) -> String {
    let s = |k: &str| cell(v.get(k));
    let mut out = format!(
        "site: {}  instance: {}  role: {}\n",
        s("site"),
        s("instance"),
        s("role")
    );
    let leader = v.get("leader").filter(|l| !l.is_null());
    match leader {
        Some(l) => out.push_str(&format!(
            "leader: {} (lease {}, since {})\n",
            cell(l.get("instance")),
            cell(l.get("lease")),
            l.get("since_unix_ms")
                .and_then(Value::as_u64)
                .map_or_else(|| "-".to_owned(), unix_ms_text)
        )),
        None => out.push_str("leader: none (election under way, or etcd unreachable)\n"),
    }
    let age = v.get("lease_age_ms").and_then(Value::as_u64).map_or_else(
        || "-".to_owned(),
        |ms| format!("{:.1} s", ms as f64 / 1000.0),
    );
    let fence = v
        .get("fence_remaining_ms")
        .and_then(Value::as_u64)
        .map_or_else(
            || "-".to_owned(),
            |ms| format!("{:.1} s", ms as f64 / 1000.0),
        );
    out.push_str(&format!(
        "lease: {}  age: {age}  fence open for: {fence}\n",
        s("lease")
    ));
    let etcd = v.get("etcd").cloned().unwrap_or(Value::Null);
    let e = |k: &str| cell(etcd.get(k));
    let endpoints = etcd
        .get("endpoints")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| cell(Some(x)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    if etcd.get("healthy").and_then(Value::as_bool) == Some(true) {
        out.push_str(&format!(
            "etcd: healthy, version {}, db {} bytes ({endpoints})\n",
            e("version"),
            e("db_size")
        ));
    } else {
        out.push_str(&format!("etcd: UNHEALTHY: {} ({endpoints})\n", e("error")));
    }
    out.push_str(&format!(
        "etcd writes by this instance: {}\n\n",
        s("etcd_writes")
    ));
    let instances: Vec<Value> = v
        .get("instances")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|i| {
                    let mut i = i.clone();
                    if let Some(map) = i.as_object_mut() {
                        let started = map
                            .get("started_unix_ms")
                            .and_then(Value::as_u64)
                            .map(unix_ms_text);
                        map.insert("started".to_owned(), json!(started));
                        let leads = map.get("leader").and_then(Value::as_bool) == Some(true);
                        map.insert("leads".to_owned(), json!(if leads { "*" } else { "" }));
                    }
                    i
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&table(
        &Value::Array(instances),
        &[
            ("INSTANCE", "instance"),
            ("LEADER", "leads"),
            ("VERSION", "version"),
            ("STARTED", "started"),
            ("HTTP", "http"),
        ],
    ));
    out
}

/// A Unix time in ms as RFC 3339 (UTC, seconds).
fn unix_ms_text(ms: u64) -> String {
    std::time::UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .map_or_else(
            || ms.to_string(),
            |t| humantime::format_rfc3339_seconds(t).to_string(),
        )
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.1}"),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

/// Rows of objects as aligned columns.
fn table(rows: &Value, columns: &[(&str, &str)]) -> String {
    let rows = rows.as_array().map(Vec::as_slice).unwrap_or_default();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|(_, k)| cell(r.get(k))).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, items: &mut dyn Iterator<Item = &str>| {
        let mut first = true;
        for (item, w) in items.zip(&widths) {
            if !first {
                out.push_str("  ");
            }
            first = false;
            out.push_str(&format!("{item:<w$}"));
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    };
    line(&mut out, &mut columns.iter().map(|(h, _)| *h));
    for r in &cells {
        line(&mut out, &mut r.iter().map(String::as_str));
    }
    out
}

/// An object as `key: value` lines (nested objects indented).
fn fields(v: &Value, indent: &str) -> String {
    match v {
        Value::Object(map) => {
            let mut out = String::new();
            for (k, v) in map {
                match v {
                    Value::Object(_) => {
                        out.push_str(&format!("{indent}{k}:\n"));
                        out.push_str(&fields(v, &format!("{indent}  ")));
                    }
                    _ => out.push_str(&format!("{indent}{k}: {}\n", cell(Some(v)))),
                }
            }
            out
        }
        other => format!("{indent}{}\n", cell(Some(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn until_takes_durations_and_times() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_until("2h", now).unwrap(), 1_800_007_200);
        assert_eq!(parse_until("45m", now).unwrap(), 1_800_002_700);
        assert_eq!(
            parse_until("2027-01-15T18:00:00Z", now).unwrap(),
            1_800_036_000
        );
        assert!(parse_until("tomorrow-ish", now).is_err());
        assert!(
            parse_until("500000000000y", now).is_err(),
            "no overflow panic"
        );
    }

    #[test]
    fn cluster_status_reads_as_a_summary_and_a_table() {
        let status = serde_json::json!({
            "site": "hall-a", "instance": "p2", "role": "follower",
            "leader": {"instance": "p1", "lease": 7, "since_unix_ms": 1_800_000_000_000u64},
            "lease": 9, "lease_age_ms": 1500, "fence_remaining_ms": 0,
            "etcd": {"endpoints": ["http://127.0.0.1:2379"], "healthy": true,
                     "version": "3.4.23", "db_size": 20480, "error": null},
            "instances": [
                {"instance": "p1", "version": "0.1.0", "started_unix_ms": 1_800_000_000_000u64,
                 "http": null, "leader": true},
                {"instance": "p2", "version": "0.1.0", "started_unix_ms": 1_800_000_000_000u64,
                 "http": "127.0.0.1:8080", "leader": false}
            ],
            "etcd_writes": 12
        });
        let text = render(&CtlCommand::Cluster, &status);
        assert!(
            text.starts_with(
                "site: hall-a  instance: p2  role: follower\n\
                 leader: p1 (lease 7, since 2027-01-15T08:00:00Z)\n\
                 lease: 9  age: 1.5 s  fence open for: 0.0 s\n\
                 etcd: healthy, version 3.4.23, db 20480 bytes (http://127.0.0.1:2379)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("p1        *       0.1.0    2027-01-15T08:00:00Z  -\n"),
            "{text}"
        );
        // Whatever the proxy sends, the rendering does not panic.
        for odd in [Value::Null, serde_json::json!({"etcd": 1, "instances": {}})] {
            let _ = render(&CtlCommand::Cluster, &odd);
        }
    }

    #[test]
    fn tables_align_and_show_missing_values_as_dashes() {
        let rows = serde_json::json!([
            {"id": "rig-1", "state": "mining", "power_w": 3250.0},
            {"id": "a-much-longer-rig", "state": "asleep"}
        ]);
        let t = table(
            &rows,
            &[("ID", "id"), ("STATE", "state"), ("POWER W", "power_w")],
        );
        assert_eq!(
            t,
            "ID                 STATE   POWER W\n\
             rig-1              mining  3250.0\n\
             a-much-longer-rig  asleep  -\n"
        );
    }
}
