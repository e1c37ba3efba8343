//! Critical tasks, supervised: a task whose death would leave the site unsafe or blind stops
//! the process, so that its service manager (systemd `Restart=on-failure`, Docker
//! `restart: unless-stopped`) starts a fresh one, which resumes from the persisted power plan.
//!
//! Every long-lived task of the proxy is spawned through a [`Supervisor`] under a name. When a
//! critical one returns before shutdown was requested, or panics at any time, the supervisor
//! logs the task and why at error level, records it in the audit log (when there is one) and
//! resolves [`Supervisor::failed`]; `hashshift run` then shuts down within a bounded time and
//! exits with [`EXIT_TASK_FAILED`]. Staying up without, say, the power controller would be
//! worse than a restart: the admin socket would answer "shutting down" forever while the GPU
//! budget and the rigs stay wherever they were.
//!
//! Panics are caught with `catch_unwind` around the task's future, which needs the default
//! `panic = "unwind"` strategy (Cargo.toml sets no `panic` in any profile). Under
//! `panic = "abort"` a panic would still stop the process (SIGABRT, also restarted by
//! `Restart=on-failure`), but without the graceful shutdown or the audit line.
//!
//! # Test-only fault hook
//!
//! `HASHSHIFT_TEST_FAULT=<task>[:panic|:exit][@<millis>]` makes the named task panic (the
//! default) or return `millis` (default 0) after it starts. It exists so that the tests in
//! `tests/supervision.rs` can prove, against the real release binary (integration tests run
//! it as a child process, so an environment variable is the one channel they have), that every
//! critical task's death stops the process. It is read once, from the process environment,
//! when the proxy starts, and logged loudly; nothing a miner, pool, firmware, HTTP client or
//! admin client sends can set or change it. Never set it in production.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};

/// Where a task failure is recorded besides the log: the control plane's audit log
/// implements it. Defined here so that the supervisor, which every part uses, names no part.
pub trait FailureSink: Send + Sync {
    /// Records `failure` (called once, for the first failure, before shutdown starts).
    fn task_failed(&self, failure: &TaskFailure);
}

/// The exit status of `hashshift run` when a critical task ended or panicked (sysexits
/// `EX_SOFTWARE`): distinct from 1 (could not start) and 2 (bad configuration).
pub const EXIT_TASK_FAILED: u8 = 70;

/// How long a task's return waits before it is reported as the failure, so that a
/// concurrent panic (its usual cause) is reported instead.
const SETTLE: Duration = Duration::from_millis(100);

/// The environment variable of the test-only fault hook (see the module documentation).
pub const FAULT_ENV: &str = "HASHSHIFT_TEST_FAULT";

/// A critical task that ended when it should not have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFailure {
    /// The task's name (`power-controller`, `listener-0`, ...).
    pub task: String,
    /// Why: `panicked: <message>`, or `returned before shutdown`.
    pub why: String,
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "critical task {} {}", self.task, self.why)
    }
}

/// What the fault hook does to its task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The task panics.
    Panic,
    /// The task returns, as if its loop had ended.
    Exit,
}

/// A fault to inject into one task (test-only; see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The task's name.
    pub task: String,
    /// Panic or return.
    pub kind: FaultKind,
    /// How long after the task starts.
    pub after: Duration,
}

impl Fault {
    /// Parses `<task>[:panic|:exit][@<millis>]`.
    pub fn parse(text: &str) -> Result<Fault, String> {
        let (rest, after) = match text.split_once('@') {
            Some((rest, ms)) => {
                let ms: u64 = ms
                    .parse()
                    .map_err(|_| format!("{FAULT_ENV}: {ms:?} is not a number of milliseconds"))?;
                (rest, Duration::from_millis(ms))
            }
            None => (text, Duration::ZERO),
        };
        let (task, kind) = match rest.split_once(':') {
            Some((task, "panic")) => (task, FaultKind::Panic),
            Some((task, "exit")) => (task, FaultKind::Exit),
            Some((_, other)) => {
                return Err(format!(
                    "{FAULT_ENV}: {other:?} is not a fault (panic or exit)"
                ));
            }
            None => (rest, FaultKind::Panic),
        };
        if task.is_empty() || task.len() > 64 {
            return Err(format!(
                "{FAULT_ENV}: no task name (or too long) in {text:?}"
            ));
        }
        Ok(Fault {
            task: task.to_owned(),
            kind,
            after,
        })
    }

    /// The fault in the environment, if any (read once, when the proxy starts).
    pub fn from_env() -> Result<Option<Fault>, String> {
        match std::env::var(FAULT_ENV) {
            Ok(text) => Fault::parse(&text).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{FAULT_ENV} is not UTF-8")),
        }
    }
}

/// Spawns tasks under names and reports the first critical one to fail. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    /// Set when shutdown starts: from then on a task that returns is doing its job.
    stopping: std::sync::atomic::AtomicBool,
    /// Taken by the first failure.
    claimed: std::sync::atomic::AtomicBool,
    /// The first failure (`None` until then).
    failure: watch::Sender<Option<TaskFailure>>,
    fault: Option<Fault>,
    /// Whether the fault's task was spawned (a fault naming no task is a test bug).
    fault_armed: std::sync::atomic::AtomicBool,
    audit: OnceLock<Arc<dyn FailureSink>>,
}

impl Supervisor {
    /// A supervisor with `fault` to inject (`None` in production; see [`Fault::from_env`]).
    pub fn new(fault: Option<Fault>) -> Supervisor {
        if let Some(f) = &fault {
            error!(
                task = %f.task,
                kind = ?f.kind,
                after_ms = f.after.as_millis() as u64,
                "{FAULT_ENV} is set: TEST-ONLY fault injection armed; never use it in production"
            );
        }
        Supervisor {
            inner: Arc::new(Inner {
                stopping: false.into(),
                claimed: false.into(),
                failure: watch::Sender::new(None),
                fault,
                fault_armed: false.into(),
                audit: OnceLock::new(),
            }),
        }
    }

    /// Where failures are recorded besides the log (the first call wins).
    pub fn set_audit(&self, audit: Arc<dyn FailureSink>) {
        let _ = self.inner.audit.set(audit);
    }

    /// Runs the critical task `name` on `tracker`: its panic, or its return before
    /// [`Supervisor::stopping`], is a failure.
    pub fn spawn_critical<F>(&self, tracker: &TaskTracker, name: &str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn(tracker, name, true, task);
    }

    /// Runs the critical task `name` on `tracker` for as long as `scope` lasts (a cluster
    /// leader's term): its panic, or its return before `scope` is cancelled or
    /// [`Supervisor::stopping`], is a failure that stops the process.
    pub fn spawn_critical_scoped<F>(
        &self,
        tracker: &TaskTracker,
        name: &str,
        scope: CancellationToken,
        task: F,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_in(tracker, name, true, Some(scope), task);
    }

    /// [`Supervisor::spawn_watched`] for as long as `scope` lasts (its end with the scope is
    /// not even logged as an early end).
    pub fn spawn_watched_scoped<F>(
        &self,
        tracker: &TaskTracker,
        name: &str,
        scope: CancellationToken,
        task: F,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_in(tracker, name, false, Some(scope), task);
    }

    /// Runs the task `name` on `tracker`; its early end or panic is logged but does not stop
    /// the process (for tasks whose death leaves nothing unsafe, such as the NOC chart).
    pub fn spawn_watched<F>(&self, tracker: &TaskTracker, name: &str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn(tracker, name, false, task);
    }

    fn spawn<F>(&self, tracker: &TaskTracker, name: &str, critical: bool, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_in(tracker, name, critical, None, task);
    }

    fn spawn_in<F>(
        &self,
        tracker: &TaskTracker,
        name: &str,
        critical: bool,
        scope: Option<CancellationToken>,
        task: F,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let fault = self
            .inner
            .fault
            .as_ref()
            .filter(|f| f.task == name)
            .cloned();
        if fault.is_some() {
            self.inner
                .fault_armed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let inner = self.inner.clone();
        let name = name.to_owned();
        tracker.spawn(async move {
            let run = async {
                match fault {
                    None => task.await,
                    Some(fault) => inject(&name, fault, task).await,
                }
            };
            // The task's state is dropped, never reused, after a panic: nothing observes it
            // half-updated, so asserting unwind safety is sound here.
            let outcome = AssertUnwindSafe(run).catch_unwind().await;
            let scope_ended = scope.as_ref().is_some_and(CancellationToken::is_cancelled);
            if outcome.is_ok() && scope_ended {
                debug!(task = name, "task ended with its scope");
                return;
            }
            inner.ended(&name, critical, outcome.err()).await;
        });
    }

    /// Shutdown has started: tasks that return from now on are not failures (panics still
    /// are).
    pub fn stopping(&self) {
        self.inner
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The first failure so far.
    pub fn failure(&self) -> Option<TaskFailure> {
        self.inner.failure.borrow().clone()
    }

    /// Resolves with the first failure (at once if there already is one).
    pub fn failed(&self) -> impl Future<Output = TaskFailure> + Send + 'static {
        let mut rx = self.inner.failure.subscribe();
        // Holding the supervisor keeps the sender, so `wait_for` never sees it closed.
        let keep = self.inner.clone();
        async move {
            let _keep = keep;
            if let Ok(Some(f)) = rx.wait_for(Option::is_some).await.map(|f| f.clone()) {
                return f;
            }
            // Unreachable: the sender outlives this future and the slot is never emptied.
            std::future::pending().await
        }
    }

    /// An error when the fault hook names a task that was never spawned (a typo in a test
    /// would otherwise wait for a fault that never comes).
    pub fn check_fault(&self) -> Result<(), String> {
        match &self.inner.fault {
            Some(f)
                if !self
                    .inner
                    .fault_armed
                    .load(std::sync::atomic::Ordering::Relaxed) =>
            {
                Err(format!("{FAULT_ENV}: no task named {:?} runs here", f.task))
            }
            _ => Ok(()),
        }
    }
}

impl Inner {
    async fn ended(&self, name: &str, critical: bool, panic: Option<Box<dyn Any + Send>>) {
        let stopping = self.stopping.load(std::sync::atomic::Ordering::SeqCst);
        let why = match &panic {
            Some(payload) => format!("panicked: {}", panic_message(payload.as_ref())),
            None if stopping => {
                debug!(task = name, "task ended at shutdown");
                return;
            }
            None => "returned before shutdown".to_owned(),
        };
        if !critical {
            warn!(
                task = name,
                why, "non-critical task ended; carrying on without it"
            );
            return;
        }
        error!(
            task = name,
            why, "critical task ended: the proxy exits so that its service manager restarts it"
        );
        if panic.is_none() {
            // A task often returns because another one died (its channel closed): give a
            // panic at the root of it the chance to be the failure reported.
            tokio::time::sleep(SETTLE).await;
        }
        let failure = TaskFailure {
            task: name.to_owned(),
            why,
        };
        if self.claimed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return; // not the first: logged above, the first one is the failure
        }
        // The audit line first: whoever waits on `failed` starts the shutdown, which ends the
        // audit writer.
        if let Some(audit) = self.audit.get() {
            audit.task_failed(&failure);
        }
        self.failure.send_replace(Some(failure));
    }
}

/// Runs `task` until the fault fires, then panics or returns (dropping the task's future, as
/// a real panic or return would leave it).
async fn inject<F: Future<Output = ()>>(name: &str, fault: Fault, task: F) {
    tokio::select! {
        () = task => {}
        () = tokio::time::sleep(fault.after) => {
            error!(task = name, kind = ?fault.kind, "{FAULT_ENV}: injecting the test fault");
            match fault.kind {
                FaultKind::Panic => panic!("test fault injected into {name} ({FAULT_ENV})"),
                FaultKind::Exit => {}
            }
        }
    }
}

/// A panic payload's message (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)")
}

/// Sends every panic, in any thread, through the log (with its thread and location, and a
/// backtrace when `RUST_BACKTRACE` asks for one) instead of a bare line on stderr, so it sits
/// with the events around it. The supervisor still reports which task it ended.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let message = panic_message(info.payload());
        error!(thread, location, message, "panic");
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            // Many lines: after the log line rather than inside one of its fields.
            eprintln!("{backtrace}");
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs_parse_and_typos_are_refused() {
        assert_eq!(
            Fault::parse("power-controller").unwrap(),
            Fault {
                task: "power-controller".into(),
                kind: FaultKind::Panic,
                after: Duration::ZERO
            }
        );
        assert_eq!(
            Fault::parse("listener-0:exit@1500").unwrap(),
            Fault {
                task: "listener-0".into(),
                kind: FaultKind::Exit,
                after: Duration::from_millis(1500)
            }
        );
        assert!(Fault::parse("pool-manager:crash").is_err());
        assert!(Fault::parse("pool-manager@soon").is_err());
        assert!(Fault::parse(":panic").is_err());
    }

    async fn first_failure(s: &Supervisor) -> TaskFailure {
        tokio::time::timeout(Duration::from_secs(5), s.failed())
            .await
            .expect("a failure within 5 s")
    }

    #[tokio::test]
    async fn a_panic_or_an_early_return_is_a_failure_a_return_at_shutdown_is_not() {
        let tracker = TaskTracker::new();
        let s = Supervisor::new(None);
        s.spawn_critical(&tracker, "boom", async { panic!("the reason") });
        let f = first_failure(&s).await;
        assert_eq!(f.task, "boom");
        assert_eq!(f.why, "panicked: the reason");

        let s = Supervisor::new(None);
        s.spawn_critical(&tracker, "quitter", async {});
        assert_eq!(first_failure(&s).await.why, "returned before shutdown");

        // A scoped task may end with its scope (a leader's term), not before it.
        let s = Supervisor::new(None);
        let scope = CancellationToken::new();
        scope.cancel();
        s.spawn_critical_scoped(&tracker, "term", scope, async {});
        let early = CancellationToken::new();
        s.spawn_critical_scoped(&tracker, "term-quitter", early, async {});
        assert_eq!(first_failure(&s).await.task, "term-quitter");

        let s = Supervisor::new(None);
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        s.spawn_critical(&tracker, "loop", async move { token.cancelled().await });
        s.spawn_watched(&tracker, "chart", async {});
        s.stopping();
        stop.cancel();
        tracker.close();
        tracker.wait().await;
        assert_eq!(s.failure(), None);
    }

    #[tokio::test]
    async fn the_fault_hook_hits_only_its_task_and_a_typo_is_reported() {
        let tracker = TaskTracker::new();
        let s = Supervisor::new(Some(Fault::parse("b:exit@10").unwrap()));
        assert!(s.check_fault().is_err());
        s.spawn_critical(&tracker, "a", std::future::pending());
        s.spawn_critical(&tracker, "b", std::future::pending());
        assert!(s.check_fault().is_ok());
        let f = first_failure(&s).await;
        assert_eq!(
            (f.task.as_str(), f.why.as_str()),
            ("b", "returned before shutdown")
        );
    }
}
