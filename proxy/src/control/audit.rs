//! The audit log: every operator action and every automatic power decision, with who, what,
//! why and when. Appended as JSON lines to `<state_dir>/audit.jsonl` and kept in memory (the
//! newest [`RECENT`]) for `hashshift ctl events`.
//!
//! Writes go through one writer task that batches events and `fsync`s each batch, so a burst
//! (a thousand rigs confirming sleep) costs one disk sync, not a thousand, and an event is on
//! disk within [`SYNC_EVERY`] even if the host loses power. [`AuditLog::record`] never blocks
//! and never drops an event; the pending batch is bounded by how fast the site can act. A
//! persisted power plan is never ahead of its audit entries: the controller [`flush`]es the
//! log before it writes the plan.
//!
//! [`flush`]: AuditLog::flush

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Events kept in memory for `ctl events`.
pub const RECENT: usize = 10_000;
/// Longest time an event waits before it is written and synced.
pub const SYNC_EVERY: Duration = Duration::from_millis(200);
/// The log's file name inside the state directory.
pub const FILE_NAME: &str = "audit.jsonl";

/// One entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// Who: an operator (`alice (uid 1000)`), or the proxy itself (`arbiter`, `drain`, ...).
    pub who: String,
    /// What happened, a short verb (`drain`, `sleep-confirmed`, `gpu-budget`, ...).
    pub what: String,
    /// Details: the rigs, the kW, the target.
    pub detail: String,
    /// Why, when someone or something said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl AuditEvent {
    /// An event stamped now.
    pub fn now(
        who: impl Into<String>,
        what: impl Into<String>,
        detail: impl Into<String>,
        why: Option<String>,
    ) -> Self {
        AuditEvent {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            who: who.into(),
            what: what.into(),
            detail: detail.into(),
            why,
        }
    }
}

#[derive(Default)]
struct Inner {
    recent: VecDeque<AuditEvent>,
    unwritten: Vec<AuditEvent>,
}

/// The log. Cheap to share (`Arc`).
pub struct AuditLog {
    inner: Mutex<Inner>,
    wake: Notify,
    path: Option<PathBuf>,
    /// Held while a batch is taken and appended (by the writer task or [`AuditLog::flush`]),
    /// so two appends never interleave and lines stay in the order they were recorded.
    appending: Mutex<()>,
}

/// A critical task's death, recorded before the proxy exits for a restart.
impl crate::supervisor::FailureSink for AuditLog {
    fn task_failed(&self, failure: &crate::supervisor::TaskFailure) {
        self.record(AuditEvent::now(
            "proxy",
            "task-failed",
            format!("{}: {}", failure.task, failure.why),
            Some("exiting so that the service manager restarts the proxy".into()),
        ));
    }
}

impl AuditLog {
    /// A log that only keeps events in memory (no state directory configured).
    pub fn in_memory() -> Arc<AuditLog> {
        Arc::new(AuditLog {
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            path: None,
            appending: Mutex::new(()),
        })
    }

    /// Opens (or creates) the log in `dir`, loading its newest events.
    pub fn open(dir: &Path) -> std::io::Result<Arc<AuditLog>> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let mut recent = VecDeque::new();
        match std::fs::File::open(&path) {
            Ok(f) => {
                for line in std::io::BufReader::new(f).lines() {
                    // A torn last line (crash mid-write) is skipped, not fatal.
                    if let Ok(event) = serde_json::from_str::<AuditEvent>(&line?) {
                        if recent.len() == RECENT {
                            recent.pop_front();
                        }
                        recent.push_back(event);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(Arc::new(AuditLog {
            inner: Mutex::new(Inner {
                recent,
                unwritten: Vec::new(),
            }),
            wake: Notify::new(),
            path: Some(path),
            appending: Mutex::new(()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an event (also to the tracing log).
    pub fn record(&self, event: AuditEvent) {
        info!(who = %event.who, what = %event.what, detail = %event.detail, why = event.why.as_deref().unwrap_or(""), "audit");
        let mut inner = self.lock();
        if inner.recent.len() == RECENT {
            inner.recent.pop_front();
        }
        inner.recent.push_back(event.clone());
        if self.path.is_some() {
            inner.unwritten.push(event);
            drop(inner);
            self.wake.notify_one();
        }
    }

    /// The newest `limit` events, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<AuditEvent> {
        let inner = self.lock();
        let skip = inner.recent.len().saturating_sub(limit);
        inner.recent.iter().skip(skip).cloned().collect()
    }

    /// Writes and syncs every event recorded so far, now, on this thread (it blocks on the
    /// disk). The power controller calls it before it persists a plan, so a plan on disk is
    /// never ahead of the audit entries that explain it: a crash between the two (the writer
    /// task batches for up to [`SYNC_EVERY`]) could otherwise leave a rig asleep on disk with
    /// no record of why. A failed write drops the batch with the error, as the writer does.
    pub fn flush(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let _appending = self.appending.lock().unwrap_or_else(|p| p.into_inner());
        let batch = std::mem::take(&mut self.lock().unwritten);
        if batch.is_empty() {
            return Ok(());
        }
        append(path, &batch)
    }

    /// Writes events to disk until `shutdown`, then writes what is left. Run it on a task.
    pub async fn run_writer(self: Arc<Self>, shutdown: CancellationToken) {
        if self.path.is_none() {
            return;
        }
        loop {
            let stop = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = self.wake.notified() => false,
            };
            if !stop {
                // Let a burst gather into one batch.
                tokio::time::sleep(SYNC_EVERY).await;
            }
            let log = self.clone();
            let written = tokio::task::spawn_blocking(move || log.flush()).await;
            if let Ok(Err(e)) | Err(e) = written.map_err(std::io::Error::other) {
                warn!(error = %e, "audit log write failed");
            }
            if stop {
                break;
            }
        }
    }
}

fn append(path: &Path, batch: &[AuditEvent]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut buf = Vec::new();
    for e in batch {
        serde_json::to_writer(&mut buf, e)?;
        buf.push(b'\n');
    }
    file.write_all(&buf)?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_survive_a_restart_and_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("hashshift-audit-{}", rand::random::<u64>()));
        let log = AuditLog::open(&dir).unwrap();
        let stop = CancellationToken::new();
        let writer = tokio::spawn(log.clone().run_writer(stop.clone()));
        for i in 0..3 {
            log.record(AuditEvent::now(
                "alice (uid 1000)",
                "drain",
                format!("rig-{i}"),
                Some("GPU job".into()),
            ));
        }
        stop.cancel();
        writer.await.unwrap();
        // A crash mid-write leaves half a line.
        append(&dir.join(FILE_NAME), &[]).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(FILE_NAME))
            .unwrap()
            .write_all(b"{\"time\":\"2026-")
            .unwrap();
        let again = AuditLog::open(&dir).unwrap();
        let events = again.recent(10);
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].detail, "rig-2");
        assert_eq!(events[0].why.as_deref(), Some("GPU job"));
        assert_eq!(again.recent(2).len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What the power controller relies on before it persists a plan: `flush` puts every
    /// recorded event on disk at once, with no writer task running (a kill -9 right after
    /// loses nothing recorded before the flush), in record order with the writer's batches.
    #[tokio::test]
    async fn flush_writes_what_was_recorded_without_the_writer() {
        let dir = std::env::temp_dir().join(format!("hashshift-audit-{}", rand::random::<u64>()));
        let log = AuditLog::open(&dir).unwrap();
        let event = |d: &str| AuditEvent::now("arbiter", "confirmed", d.to_owned(), None);
        log.record(event("rig-0 asleep"));
        log.record(event("rig-1 asleep"));
        log.flush().unwrap();
        let on_disk = AuditLog::open(&dir).unwrap().recent(10);
        assert_eq!(on_disk.len(), 2);
        assert_eq!(on_disk[1].detail, "rig-1 asleep");
        // Nothing pending: a second flush writes nothing, and the writer finds nothing.
        log.flush().unwrap();
        log.record(event("rig-2 asleep"));
        let stop = CancellationToken::new();
        stop.cancel();
        log.clone().run_writer(stop).await;
        let details: Vec<String> = AuditLog::open(&dir)
            .unwrap()
            .recent(10)
            .into_iter()
            .map(|e| e.detail)
            .collect();
        assert_eq!(details, ["rig-0 asleep", "rig-1 asleep", "rig-2 asleep"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
