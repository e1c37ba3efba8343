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

/// Upper bound of one whole flow, SRI start-up included.
pub const FLOW: Duration = Duration::from_secs(120);

const BUILD_HINT: &str = "build SRI's binaries first: `scripts/sri-interop.sh` does it, or \
     `cargo install --locked --root DIR pool_sv2 translator_sv2 integration_tests_sv2` \
     (needs Debian packages capnproto libcapnp-dev), then set SRI_BIN=DIR/bin";

/// Where SRI's binary `name` is: `$SRI_BIN/name` (default `/work/sri/bin`).
pub fn sri_bin(name: &str) -> Result<PathBuf> {
    let dir =
        std::env::var_os("SRI_BIN").map_or_else(|| PathBuf::from("/work/sri/bin"), PathBuf::from);
    let path = dir.join(name);
    if !path.is_file() {
        bail!("SRI binary {} not found: {BUILD_HINT}", path.display());
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
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }
}

/// A flow's temporary directory (configs, logs) and its SRI processes.
pub struct Harness {
    pub dir: PathBuf,
    pub procs: Vec<SriProcess>,
}

impl Harness {
    pub fn new(flow: &str) -> Result<Harness> {
        let dir = std::env::temp_dir().join(format!(
            "hashshift-sri-{flow}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Harness {
            dir,
            procs: Vec::new(),
        })
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
        });
        Ok(self.procs.len() - 1)
    }

    fn check_alive(&mut self) -> Result<()> {
        self.procs.iter_mut().try_for_each(SriProcess::check_alive)
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
