//! A private etcd per test, for the cluster tests (tests/cluster.rs): one member, or three
//! (a real Raft group) on loopback ports, each a child process killed on drop.
//!
//! [`Etcd::start`] runs Debian's `etcd` (3.4) in a fresh temp dir on `127.0.0.1:<free port>`
//! and waits until it serves. The test can then take it down and bring it back on the same
//! ports and data ([`Etcd::kill`], [`Etcd::restart`]), freeze it ([`Etcd::pause`],
//! [`Etcd::resume`]), and read keys as stored, with their revisions, through `etcdctl`
//! ([`Etcd::get`]): the store's own word, not the proxy's reading of it.
//!
//! Without `etcd`: with `HASHSHIFT_ETCD=1` (CI) start fails; otherwise it prints a skip note
//! and returns `None`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use serde_json::Value;

/// How long a fresh (or restarted) etcd may take to serve.
const START_BOUND: Duration = Duration::from_secs(20);
/// How long one `etcdctl` call may take.
const CALL_TIMEOUT: &str = "2s";

/// Whether the etcd tests must run (`HASHSHIFT_ETCD=1`, exported by `.ci/run`).
pub fn required() -> bool {
    std::env::var("HASHSHIFT_ETCD").is_ok_and(|v| v == "1")
}

/// Where a binary is, if on one of the usual paths.
fn binary(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/local/bin", "/usr/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// A free port on 127.0.0.1 (bound and released: etcd takes it a moment later).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// One key as etcd stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Kv {
    /// The value (UTF-8; the proxy stores JSON).
    pub value: String,
    /// The revision of its last write.
    pub mod_revision: i64,
    /// How many times it was written since created.
    pub version: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

impl Kv {
    /// The value as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.value).with_context(|| format!("not JSON: {}", self.value))
    }
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A running private etcd (1 or 3 members).
pub struct Etcd {
    etcd: PathBuf,
    etcdctl: PathBuf,
    dir: PathBuf,
    token: String,
    members: Vec<Member>,
}

impl Etcd {
    /// Starts `members` members (1 or 3) and waits until they serve. `None` (after a skip
    /// note) when etcd is not installed and [`required`] is off.
    pub fn start(members: usize) -> Result<Option<Etcd>> {
        ensure!(members == 1 || members == 3, "1 or 3 members");
        let (Some(etcd), Some(etcdctl)) = (binary("etcd"), binary("etcdctl")) else {
            if required() {
                bail!(
                    "HASHSHIFT_ETCD=1 but etcd/etcdctl are not installed (apt install etcd-server etcd-client)"
                );
            }
            eprintln!("skipped: etcd is not installed (HASHSHIFT_ETCD=1 makes this a failure)");
            return Ok(None);
        };
        let id = rand::random::<u64>();
        let dir = std::env::temp_dir().join(format!("hashshift-etcd-{id}"));
        std::fs::create_dir_all(&dir)?;
        let mut all = Vec::new();
        for i in 0..members {
            all.push(Member {
                name: format!("m{i}"),
                client: free_port()?,
                peer: free_port()?,
                child: None,
            });
        }
        let mut e = Etcd {
            etcd,
            etcdctl,
            dir,
            token: format!("hashshift-test-{id}"),
            members: all,
        };
        for i in 0..members {
            e.spawn(i)?;
        }
        e.wait_serving(START_BOUND)?;
        Ok(Some(e))
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let m = &self.members[i];
        let data = self.dir.join(&m.name);
        // A restart finds its data and rejoins; "new" is only read on the first start.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))?;
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new(&self.etcd)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            // Loopback only, quick elections: a member lost is noticed in half a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd")?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// The client URLs, for `[cluster] etcd`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    /// `[cluster] etcd = [...]` as TOML.
    pub fn toml_endpoints(&self) -> String {
        let quoted: Vec<String> = self.endpoints().iter().map(|e| format!("{e:?}")).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// Waits until a read goes through (a quorum serves).
    pub fn wait_serving(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            match self.ctl(&["get", "/hashshift-probe"]) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    bail!("etcd not serving after {within:?}: {e:#}\n{}", self.logs())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// `etcdctl ARGS` against every member; its stdout.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.etcdctl)
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoints().join(","))
            .arg(format!("--command-timeout={CALL_TIMEOUT}"))
            .arg("--dial-timeout=1s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running etcdctl")?;
        ensure!(
            out.status.success(),
            "etcdctl {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `key` as stored, or `None` when absent.
    pub fn get(&self, key: &str) -> Result<Option<Kv>> {
        let out = self.ctl(&["get", key, "-w", "json"])?;
        let v: Value = serde_json::from_str(&out).context("etcdctl's JSON")?;
        let Some(kv) = v["kvs"].as_array().and_then(|a| a.first()) else {
            return Ok(None);
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let value = b64
            .decode(kv["value"].as_str().unwrap_or_default())
            .context("base64 value")?;
        let int = |k: &str| kv[k].as_i64().unwrap_or(0);
        Ok(Some(Kv {
            value: String::from_utf8(value).context("UTF-8 value")?,
            mod_revision: int("mod_revision"),
            version: int("version"),
            lease: int("lease"),
        }))
    }

    /// The store's current revision (it grows by one per write transaction).
    pub fn revision(&self) -> Result<i64> {
        let out = self.ctl(&["get", "/hashshift-probe", "-w", "json"])?;
        let v: Value = serde_json::from_str(&out).context("etcdctl's JSON")?;
        v["header"]["revision"]
            .as_i64()
            .context("no revision in the header")
    }

    /// `kill -9` every member (data and ports kept for [`Etcd::restart`]).
    pub fn kill(&mut self) -> Result<()> {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                c.kill()?;
                c.wait()?;
            }
        }
        Ok(())
    }

    /// `kill -9` member `i` alone (of three: the other two keep a quorum).
    pub fn kill_member(&mut self, i: usize) -> Result<()> {
        let m = self.members.get_mut(i).context("no such member")?;
        if let Some(mut c) = m.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// The member Raft elected to lead, by index (`etcdctl endpoint status`).
    pub fn raft_leader(&self) -> Result<usize> {
        let out = self.ctl(&["endpoint", "status", "-w", "json"])?;
        let v: Value = serde_json::from_str(&out).context("etcdctl's JSON")?;
        for (i, m) in self.members.iter().enumerate() {
            let mine = v.as_array().into_iter().flatten().find(|s| {
                s["Endpoint"].as_str() == Some(&format!("http://127.0.0.1:{}", m.client))
            });
            if let Some(s) = mine {
                if s["Status"]["leader"] == s["Status"]["header"]["member_id"] {
                    return Ok(i);
                }
            }
        }
        bail!("no member says it leads: {out}")
    }

    /// Starts every member again on its data and ports, and waits until it serves.
    pub fn restart(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.spawn(i)?;
            }
        }
        self.wait_serving(START_BOUND)
    }

    /// `kill -STOP` every member: connections stay open, nothing answers.
    pub fn pause(&self) -> Result<()> {
        self.signal("STOP")
    }

    /// `kill -CONT` every member.
    pub fn resume(&self) -> Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, signal: &str) -> Result<()> {
        for m in &self.members {
            if let Some(c) = &m.child {
                let status = Command::new("kill")
                    .arg(format!("-{signal}"))
                    .arg(c.id().to_string())
                    .status()?;
                ensure!(status.success(), "kill -{signal}: {status}");
            }
        }
        Ok(())
    }

    /// The last lines of every member's log (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(self.dir.join(format!("{}.log", m.name)))
                .unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            out += &format!("--- etcd {} ---\n{}\n", m.name, tail.join("\n"));
        }
        out
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.resume();
        let _ = self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
