//! The SRI side of the interop tests: finding the binaries, spawning them with their output
//! in a log file, waiting on conditions while watching that they stay alive, and printing
//! their logs when a flow fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Upper bound of one whole flow, SRI start-up included (waiting for another flow to finish
/// is not counted: flows run one at a time, see [`Harness::new`]).
const FLOW: Duration = Duration::from_secs(120);

/// The pinned SRI releases: `crate version binary...` per line.
const VERSIONS: &str = include_str!("sri-versions.txt");

const BUILD_HINT: &str = "install the pinned SRI binaries with `scripts/sri-install.sh` \
     (cargo install --locked --version ..., about 25 minutes the first time; needs Debian's \
     capnproto and libcapnp-dev), or point SRI_BIN at a folder made by it";

/// Whether the SRI flows must run (`HASHSHIFT_SRI=1`, exported by `.ci/run`): a missing
/// binary, or one of another version than pinned, then fails the flow instead of skipping it.
pub fn required() -> bool {
    std::env::var("HASHSHIFT_SRI").is_ok_and(|v| v == "1")
}

/// The folder holding SRI's binaries: `$SRI_BIN`, else `bin/` of the cache that
/// `scripts/sri-install.sh` fills (`$HASHSHIFT_SRI_CACHE`, default `~/.cache/hashshift/sri`).
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SRI_BIN") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("HASHSHIFT_SRI_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("hashshift/sri"))
        })
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/hashshift/sri")))
        .unwrap_or_else(|| PathBuf::from("/nonexistent"));
    cache.join("bin")
}

/// The pinned `(crate, version)` that provides binary `name`.
fn pin(name: &str) -> Result<(&'static str, &'static str)> {
    VERSIONS
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|l| {
            let mut words = l.split_whitespace();
            let (krate, version) = (words.next()?, words.next()?);
            words.any(|b| b == name).then_some((krate, version))
        })
        .with_context(|| format!("no SRI binary {name} in sri-versions.txt"))
}

/// Where SRI's binary `name` is, checked to be the pinned release: cargo's install record
/// (`.crates.toml` beside `bin/`) must list its crate at the pinned version.
fn sri_bin(name: &str) -> Result<PathBuf> {
    let (krate, version) = pin(name)?;
    let dir = bin_dir();
    let path = dir.join(name);
    if !path.is_file() {
        bail!("SRI binary {} not found: {BUILD_HINT}", path.display());
    }
    let record = dir.parent().map(|root| root.join(".crates.toml"));
    let text = record
        .as_ref()
        .and_then(|r| std::fs::read_to_string(r).ok())
        .with_context(|| {
            format!(
                "{}: no cargo install record beside it, version unknown: {BUILD_HINT}",
                path.display()
            )
        })?;
    let wanted = format!("\"{krate} {version} (registry+");
    if !text.lines().any(|l| l.starts_with(&wanted)) {
        let found: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("\"{krate} ")))
            .collect();
        bail!(
            "{}: not {krate} {version} as pinned (installed: {found:?}): {BUILD_HINT}",
            path.display()
        );
    }
    Ok(path)
}

/// A free TCP port on 127.0.0.1 for an SRI process whose config wants a fixed port.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One spawned SRI binary; killed on drop.
pub struct SriProcess {
    name: String,
    child: Child,
    log: PathBuf,
    /// Killed by the flow on purpose ([`Harness::kill`]): no longer expected to run.
    killed: bool,
}

impl SriProcess {
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    /// Fails if the process has exited (it should run until the test kills it).
    fn check_alive(&mut self) -> Result<()> {
        if self.killed {
            return Ok(());
        }
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }
}

/// A flow's temporary directory (configs, logs), its SRI binaries and processes.
pub struct Harness {
    pub dir: PathBuf,
    pub procs: Vec<SriProcess>,
    bins: Vec<(&'static str, PathBuf)>,
    /// Held for the whole flow: one flow at a time (SRI's CPU miner and pool want the cores).
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Harness {
    /// A harness for `flow`, which runs `needs` (SRI binary names). `None` when a binary is
    /// missing and the flows are not [`required`]: the test then passes, having said so.
    async fn new(flow: &str, needs: &[&'static str]) -> Result<Option<Harness>> {
        let mut bins = Vec::new();
        for &name in needs {
            match sri_bin(name) {
                Ok(path) => bins.push((name, path)),
                Err(e) if required() => return Err(e.context("HASHSHIFT_SRI=1")),
                Err(e) => {
                    eprintln!("skipped (set HASHSHIFT_SRI=1 to fail instead): {e:#}");
                    return Ok(None);
                }
            }
        }
        let serial = SERIAL.lock().await;
        let dir = std::env::temp_dir().join(format!(
            "hashshift-sri-{flow}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Some(Harness {
            dir,
            procs: Vec::new(),
            bins,
            _serial: serial,
        }))
    }

    /// The path of binary `name`, one of the flow's `needs`.
    pub fn bin(&self, name: &str) -> Result<PathBuf> {
        self.bins
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.clone())
            .with_context(|| format!("{name} is not among this flow's needs"))
    }

    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Spawns `bin args…` with stdout and stderr into `<dir>/<name>.log`; returns its index.
    pub fn spawn(&mut self, name: &str, bin: &Path, args: &[&str]) -> Result<usize> {
        let log = self.dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(bin)
            .args(args)
            .current_dir(&self.dir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        self.procs.push(SriProcess {
            name: name.into(),
            child,
            log,
            killed: false,
        });
        Ok(self.procs.len() - 1)
    }

    /// Kills process `index` (SIGKILL, as a crash would end it) and waits for it to exit;
    /// from then on [`until`] no longer expects it to run. Its log stays readable.
    pub async fn kill(&mut self, index: usize) -> Result<()> {
        let p = self.procs.get_mut(index).context("no such SRI process")?;
        p.killed = true;
        p.child
            .kill()
            .await
            .with_context(|| format!("killing {}", p.name))
    }

    fn check_alive(&mut self) -> Result<()> {
        self.procs.iter_mut().try_for_each(SriProcess::check_alive)
    }

    /// Fails if an SRI process has exited that the flow did not kill (for waits that
    /// [`until`] cannot express, such as polling an API).
    pub fn ensure_alive(&mut self) -> Result<()> {
        self.check_alive()
    }

    /// The flow's verdict; on failure, the tail of every SRI log goes to stderr.
    pub async fn finish(
        mut self,
        result: Result<Result<()>, tokio::time::error::Elapsed>,
    ) -> Result<()> {
        let result =
            result.unwrap_or_else(|_| Err(anyhow::anyhow!("flow timed out after {FLOW:?}")));
        for p in &mut self.procs {
            let _ = p.child.start_kill();
            let _ = p.child.wait().await;
        }
        if result.is_err() {
            for p in &self.procs {
                let text = p.log_text();
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(60);
                eprintln!("----- {} ({}), last lines -----", p.name, p.log.display());
                for line in &lines[from..] {
                    eprintln!("{line}");
                }
            }
        } else if std::env::var_os("SRI_KEEP_LOGS").is_some() {
            eprintln!("SRI logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        result
    }
}

/// Runs `flow` in a harness of its own ([`Harness::new`]): it passes, saying it skipped, when
/// one of `needs` is missing and the flows are not [`required`]; it is bounded by [`FLOW`];
/// if it fails, the tail of every SRI log is printed.
pub async fn run(
    name: &str,
    needs: &[&'static str],
    flow: impl AsyncFnOnce(&mut Harness) -> Result<()>,
) -> Result<()> {
    let Some(mut h) = Harness::new(name, needs).await? else {
        return Ok(());
    };
    let r = tokio::time::timeout(FLOW, flow(&mut h)).await;
    h.finish(r).await
}

/// Polls `done` every 50 ms until it holds; fails after `limit` or as soon as an SRI child
/// has exited.
pub async fn until(
    h: &mut Harness,
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    while !done() {
        h.check_alive()?;
        if start.elapsed() > limit {
            bail!("timed out after {limit:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Connects to `addr` once an SRI process listens there (retrying; no probe connection,
/// which SRI would log as a failed peer).
pub async fn connect_when_listening(
    h: &mut Harness,
    addr: SocketAddr,
    limit: Duration,
) -> Result<TcpStream> {
    let start = Instant::now();
    loop {
        h.check_alive()?;
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
        {
            return Ok(stream);
        }
        if start.elapsed() > limit {
            bail!("nothing listening on {addr} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
