//! A private net-snmp agent per test, standing in for an APC switched PDU.
//!
//! [`Snmpd::start`] writes a config into a fresh temp dir and runs Debian's `snmpd` on
//! `127.0.0.1:<free port>` in the foreground (`snmpd -f -Lo -C -c <conf>`), with:
//! - a v2c read-write community ([`COMMUNITY`]) and a read-only one ([`COMMUNITY_RO`]),
//! - two v3 authPriv users: [`V3_USER`] (SHA-256 + AES-128) and [`V3_USER_SHA1`] (SHA-1 +
//!   AES-128), passwords [`V3_AUTH_PASSWORD`] / [`V3_PRIV_PASSWORD`],
//! - the APC rPDU outlet table (the `apc-rpdu` profile's OIDs) served by
//!   `.ci/pdu-outlets.py` through `pass_persist`, over a state file in the temp dir.
//!
//! The test reads and writes that file directly ([`Snmpd::outlet`], [`Snmpd::set_on`],
//! [`Snmpd::set_current`]): the "physical" side of the PDU. The agent is killed on drop (or
//! by [`Snmpd::stop`], for "agent down").
//!
//! Without `snmpd`: with `HASHSHIFT_SNMPD=1` (CI) start fails; otherwise it prints a skip
//! note and returns `None`.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hashshift_proxy::pdu::{AuthProto, PduSettings, PrivProto, Security};

/// The v2c read-write community.
pub const COMMUNITY: &str = "hashshift-lab";
/// A v2c read-only community (a write is refused with `noAccess`).
pub const COMMUNITY_RO: &str = "hashshift-ro";
/// A v3 user with SHA-256 and AES-128.
pub const V3_USER: &str = "hashshift";
/// A v3 user with SHA-1 and AES-128 (older PDUs' only choice).
pub const V3_USER_SHA1: &str = "hashshift-sha1";
/// Both v3 users' authentication password.
pub const V3_AUTH_PASSWORD: &str = "auth-pass-123";
/// Both v3 users' privacy password.
pub const V3_PRIV_PASSWORD: &str = "priv-pass-456";

/// How long the agent may take to come up.
const START_BOUND: Duration = Duration::from_secs(10);

/// Whether the SNMP tests must run (`HASHSHIFT_SNMPD=1`, exported by `.ci/run`).
pub fn required() -> bool {
    std::env::var("HASHSHIFT_SNMPD").is_ok_and(|v| v == "1")
}

/// One outlet as the state file has it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutletState {
    /// Relay closed.
    pub on: bool,
    /// What it draws while on (A; the agent reports 0 while off).
    pub current_a: f64,
}

/// A running private snmpd.
pub struct Snmpd {
    child: Option<Child>,
    dir: PathBuf,
    addr: SocketAddr,
    outlets: u16,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where `snmpd` is, if anywhere.
fn snmpd_binary() -> Option<PathBuf> {
    ["/usr/sbin/snmpd", "/usr/local/sbin/snmpd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Snmpd {
    /// Starts an agent with `outlets` outlets, all on, drawing 0 A. `None` (after a skip
    /// note) when snmpd is missing and `HASHSHIFT_SNMPD` is not `1`.
    pub fn start(outlets: u16) -> Result<Option<Snmpd>> {
        let Some(bin) = snmpd_binary() else {
            if required() {
                bail!("HASHSHIFT_SNMPD=1 but snmpd is not installed (.ci/snmpd-up.sh installs it)");
            }
            eprintln!(
                "skipped: snmpd not installed (apt-get install snmpd snmp; CI sets HASHSHIFT_SNMPD=1)"
            );
            return Ok(None);
        };
        let dir = std::env::temp_dir().join(format!(
            "hashshift-snmpd-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("mibs")).context("temp dir")?;
        let mut agent = Snmpd {
            child: None,
            dir,
            addr: "127.0.0.1:0".parse()?,
            outlets,
        };
        for n in 1..=outlets {
            agent.write(
                n,
                OutletState {
                    on: true,
                    current_a: 0.0,
                },
            )?;
        }
        // A port that was free a moment ago; a clash shows as a start failure, retried.
        let mut last = None;
        for _ in 0..3 {
            let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
            agent.addr = SocketAddr::from(([127, 0, 0, 1], port));
            match agent.spawn(&bin) {
                Ok(()) => return Ok(Some(agent)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("snmpd did not start")))
    }

    fn spawn(&mut self, bin: &Path) -> Result<()> {
        let script = repo_root().join(".ci/pdu-outlets.py");
        let conf = self.dir.join("snmpd.conf");
        std::fs::write(
            &conf,
            format!(
                "rwcommunity {COMMUNITY} 127.0.0.1\n\
                 rocommunity {COMMUNITY_RO} 127.0.0.1\n\
                 createUser {V3_USER} SHA-256 \"{V3_AUTH_PASSWORD}\" AES \"{V3_PRIV_PASSWORD}\"\n\
                 createUser {V3_USER_SHA1} SHA \"{V3_AUTH_PASSWORD}\" AES \"{V3_PRIV_PASSWORD}\"\n\
                 rwuser {V3_USER} priv\n\
                 rwuser {V3_USER_SHA1} priv\n\
                 pass_persist .1.3.6.1.4.1.318.1.1.12.3 {} {}\n",
                script.display(),
                self.state_file().display()
            ),
        )?;
        let log = self.dir.join("snmpd.log");
        let child = Command::new(bin)
            .args(["-f", "-Lo", "-C", "-c"])
            .arg(&conf)
            .arg(format!("udp:{}", self.addr))
            .env("SNMP_PERSISTENT_DIR", self.dir.join("persist"))
            .env("MIBDIRS", self.dir.join("mibs"))
            .env("MIBS", "")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log)?,
            ))
            .spawn()
            .context("cannot run snmpd")?;
        self.child = Some(child);
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("NET-SNMP version") {
                return self.warm_up(start);
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || start.elapsed() > START_BOUND {
                self.stop();
                bail!("snmpd did not come up on {}: {}", self.addr, tail(&text));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the outlet table answers: snmpd starts the pass_persist script on the
    /// first request, and a cold python3 on a busy machine can take longer than a test's
    /// request timeout. Uses `snmpget` (Debian's `snmp`) when it is there.
    fn warm_up(&mut self, start: Instant) -> Result<()> {
        let Some(snmpget) = ["/usr/bin/snmpget", "/usr/local/bin/snmpget"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
        else {
            std::thread::sleep(Duration::from_millis(500));
            return Ok(());
        };
        loop {
            let out = Command::new(&snmpget)
                .args(["-On", "-r", "0", "-t", "1", "-v2c", "-c", COMMUNITY])
                .arg(self.addr.to_string())
                .arg(".1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.1")
                .env("MIBDIRS", self.dir.join("mibs"))
                .env("MIBS", "")
                .env("SNMP_PERSISTENT_DIR", self.dir.join("persist-client"))
                .stdin(Stdio::null())
                .output()
                .context("cannot run snmpget")?;
            if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("INTEGER") {
                return Ok(());
            }
            if start.elapsed() > START_BOUND {
                let log = self.log();
                self.stop();
                bail!(
                    "snmpd on {} never served the outlet table: {}{}",
                    self.addr,
                    String::from_utf8_lossy(&out.stderr),
                    tail(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Outlets it has.
    pub fn outlets(&self) -> u16 {
        self.outlets
    }

    /// Kills the agent (an "agent down" test); the state file stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("outlets")
    }

    fn read_all(&self) -> Result<Vec<(u16, OutletState)>> {
        let text = std::fs::read_to_string(self.state_file())?;
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let [n, state, tenths] = f.as_slice() else {
                    bail!("bad state line {l:?}");
                };
                Ok((
                    n.parse()?,
                    OutletState {
                        on: *state == "on",
                        current_a: tenths.parse::<u32>()? as f64 / 10.0,
                    },
                ))
            })
            .collect()
    }

    fn write(&self, n: u16, s: OutletState) -> Result<()> {
        let mut all = if self.state_file().exists() {
            self.read_all()?
        } else {
            Vec::new()
        };
        match all.iter_mut().find(|(k, _)| *k == n) {
            Some((_, old)) => *old = s,
            None => all.push((n, s)),
        }
        all.sort_by_key(|(k, _)| *k);
        let text: String = all
            .iter()
            .map(|(k, s)| {
                format!(
                    "{k} {} {}\n",
                    if s.on { "on" } else { "off" },
                    (s.current_a * 10.0).round() as u32
                )
            })
            .collect();
        let tmp = self.dir.join("outlets.harness");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.state_file())?;
        Ok(())
    }

    /// Outlet `n` as the "hardware" has it.
    pub fn outlet(&self, n: u16) -> Result<OutletState> {
        self.read_all()?
            .into_iter()
            .find(|(k, _)| *k == n)
            .map(|(_, s)| s)
            .with_context(|| format!("no outlet {n}"))
    }

    /// Switches outlet `n` behind SNMP's back (someone at the PDU's front panel).
    pub fn set_on(&self, n: u16, on: bool) -> Result<()> {
        let s = self.outlet(n)?;
        self.write(n, OutletState { on, ..s })
    }

    /// Sets what outlet `n` draws while on (A, in tenths as the APC MIB reports).
    pub fn set_current(&self, n: u16, current_a: f64) -> Result<()> {
        let s = self.outlet(n)?;
        self.write(n, OutletState { current_a, ..s })
    }

    /// Client settings for the v2c community (profile `apc-rpdu`).
    pub fn settings_v2c(&self) -> PduSettings {
        self.settings(Security::V2c {
            community: COMMUNITY.into(),
        })
    }

    /// Client settings for [`V3_USER`] (SHA-256, AES-128).
    pub fn settings_v3(&self) -> PduSettings {
        self.settings(Security::V3 {
            user: V3_USER.into(),
            auth: AuthProto::Sha256,
            auth_password: V3_AUTH_PASSWORD.into(),
            privacy: PrivProto::Aes,
            priv_password: V3_PRIV_PASSWORD.into(),
        })
    }

    /// Client settings with this login, 1 s timeouts with 2 retries (a loaded CI machine)
    /// and 230 V.
    pub fn settings(&self, security: Security) -> PduSettings {
        PduSettings {
            name: "pdu-test".into(),
            addr: self.addr,
            security,
            profile: hashshift_proxy::pdu::profile::find("apc-rpdu").expect("built in"),
            outlets: self.outlets,
            voltage_v: Some(230.0),
            timeout: Duration::from_millis(1000),
            retries: 2,
        }
    }

    /// A `[[pdu]]` entry for this agent (v3, [`V3_USER`]), its secrets in the environment
    /// variables `<env_prefix>_AUTH` and `<env_prefix>_PRIV`.
    pub fn config_v3(&self, name: &str, env_prefix: &str) -> String {
        format!(
            "[[pdu]]\nname = \"{name}\"\naddress = \"{}\"\nprofile = \"apc-rpdu\"\noutlets = {}\n\
             version = \"3\"\nuser = \"{V3_USER}\"\nauth = \"sha256\"\n\
             auth_password_env = \"{env_prefix}_AUTH\"\nprivacy = \"aes\"\n\
             priv_password_env = \"{env_prefix}_PRIV\"\nvoltage_v = 230\ntimeout_ms = 1000\nretries = 2\n",
            self.addr, self.outlets
        )
    }

    /// The environment [`Snmpd::config_v3`] expects, as a reader for
    /// `pdu_adapter::outlet_factory_with_env`.
    pub fn env_v3(env_prefix: &str) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
        let auth = format!("{env_prefix}_AUTH");
        let privacy = format!("{env_prefix}_PRIV");
        move |k: &str| {
            if k == auth {
                Some(V3_AUTH_PASSWORD.to_string())
            } else if k == privacy {
                Some(V3_PRIV_PASSWORD.to_string())
            } else {
                None
            }
        }
    }

    /// The agent's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("snmpd.log")).unwrap_or_default()
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
