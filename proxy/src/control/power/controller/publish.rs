//! What leaves the controller's loop: the plan written to disk (only when it changed, at
//! most every [`PERSIST_EVERY`]), the operator view published (at most every
//! [`PUBLISH_EVERY`]), arbiter events as audit entries, and the plan read back at start.

use std::sync::Arc;
use std::time::Instant;

use tracing::warn;

use super::{Controller, PERSIST_EVERY, PUBLISH_EVERY};
use crate::control::arbiter::ControlPath;
use crate::control::power::persist;
use crate::control::power::{PowerView, RigPower};

impl Controller {
    /// Writes the plan if it changed and `PERSIST_EVERY` passed since the last write (at once
    /// with `force`).
    pub(super) fn persist(&mut self, force: bool) {
        if self.plan_target.is_none() {
            return;
        }
        let now = Instant::now();
        if !force
            && self
                .last_persist_at
                .is_some_and(|t| now.saturating_duration_since(t) < PERSIST_EVERY)
        {
            self.persist_held = true;
            return;
        }
        self.persist_held = false;
        let Ok(mut plan) = serde_json::to_value(self.arbiter.persist()) else {
            return;
        };
        // What the registry knows of each rig (how it proved itself, its address) travels
        // with the plan: a restart must not forget which names are machines.
        if let (Some(map), Ok(known)) = (
            plan.as_object_mut(),
            serde_json::to_value(self.registry.known()),
        ) {
            map.insert(persist::REGISTRY_KEY.to_owned(), known);
        }
        // The plan changes only when something but its `saved_at` stamp does: compare without
        // it, or an idle site would rewrite (and fsync) the file every second.
        let stamp = plan.as_object_mut().and_then(|m| m.remove("saved_at"));
        if self.last_persisted.as_ref() == Some(&plan) {
            return;
        }
        let mut stamped = plan.clone();
        if let (Some(m), Some(stamp)) = (stamped.as_object_mut(), stamp) {
            m.insert("saved_at".to_owned(), stamp);
        }
        self.last_persist_at = Some(now);
        // The entries that explain this plan reach the disk first (see `AuditLog::flush`).
        if let Err(e) = self.audit.flush() {
            warn!(error = %e, "audit log write failed before persisting the power plan");
        }
        let written = match self.plan_target.as_ref() {
            Some(persist::PlanTarget::File(path)) => {
                persist::write_atomically(path, stamped.to_string().as_bytes())
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
            Some(persist::PlanTarget::Sink(sink)) => sink.save(stamped.to_string()),
            None => return,
        };
        match written {
            Ok(()) => self.last_persisted = Some(plan),
            Err(e) => warn!(error = %e, "cannot persist the power plan"),
        }
    }

    /// Publishes a fresh operator view if `PUBLISH_EVERY` passed (at once with `force`).
    pub(super) fn publish(&mut self, force: bool) {
        let now = Instant::now();
        if !force
            && self
                .last_publish_at
                .is_some_and(|t| now.saturating_duration_since(t) < PUBLISH_EVERY)
        {
            return;
        }
        self.last_publish_at = Some(now);
        self.view_tx.send_replace(self.build_view());
    }

    /// The operator view of the plan, the registry and the shed now.
    pub(super) fn build_view(&self) -> Arc<PowerView> {
        let now = Instant::now();
        let rigs = self
            .arbiter
            .rigs()
            .map(|v| {
                let entry = self.registry.rigs.get(&v.info.id);
                let (power_w, source, age) = match entry {
                    Some(e) => {
                        let (w, s, a) = self.registry.power(e, now);
                        (w, Some(s), a)
                    }
                    None => (v.info.power.0 as f64, None, None),
                };
                let group = entry
                    .and_then(|e| e.group)
                    .and_then(|g| self.registry.groups().get(g));
                let identity = entry.map(|e| e.identity);
                (
                    v.info.id.clone(),
                    RigPower {
                        state: v.state,
                        group: v.info.group.0.clone(),
                        model: group.map(|g| g.model.clone()).filter(|m| !m.is_empty()),
                        power_w,
                        power_source: source,
                        power_age_secs: age.map(|a| a.as_secs_f64()),
                        pinned: v.pinned.map(|p| format!("{}: {}", p.who, p.why)),
                        escalated: v.escalated,
                        management: entry.and_then(|e| e.control.as_ref()).map(|c| c.describe()),
                        control: control_label(group, entry),
                        identity,
                        identity_conflicts: entry.map_or(0, |e| e.conflicts),
                        last_conflict: entry.and_then(|e| e.last_conflict),
                    },
                )
            })
            .collect();
        let conn_rigs = self
            .registry
            .rigs
            .values()
            .flat_map(|e| e.conns.iter().map(|c| (*c, e.id.clone())))
            .collect();
        Arc::new(PowerView {
            snapshot: self.arbiter.snapshot(),
            rigs,
            conn_rigs,
            gpu_shed: self.shed.status(),
            pdu_cuts: self.pdu_cuts,
        })
    }
}

/// How a rig is slept, for operators: `luxos`, `antminer+pdu`, `pdu`, `none`, and
/// `pdu-cut` while its outlet is off because we cut it.
fn control_label(
    group: Option<&crate::config::RigGroup>,
    entry: Option<&crate::control::power::rigs::RigEntry>,
) -> String {
    if entry.is_some_and(|e| e.cut_at.is_some()) {
        return "pdu-cut".to_owned();
    }
    let kind = group
        .and_then(|g| g.firmware)
        .and_then(|c| c.firmware())
        .map_or("firmware", |k| k.as_str());
    match entry.and_then(|e| e.control.as_ref()).map(|c| c.path()) {
        None | Some(ControlPath::None) => "none".to_owned(),
        Some(ControlPath::Firmware) => kind.to_owned(),
        Some(ControlPath::FirmwareAndPdu) => format!("{kind}+pdu"),
        Some(ControlPath::Pdu) => "pdu".to_owned(),
    }
}

/// An arbiter event as an audit verb and detail.
pub(super) fn describe(event: &crate::control::arbiter::Event) -> (String, String) {
    let json = serde_json::to_value(event).unwrap_or_default();
    let what = json
        .get("event")
        .and_then(|v| v.as_str())
        .unwrap_or("event")
        .replace('_', "-");
    let mut detail = json;
    if let Some(map) = detail.as_object_mut() {
        map.remove("event");
    }
    (what, detail.to_string())
}

/// The persisted plan and what the registry kept: `Ok(None)` if there is no file (first run),
/// an error naming the problem if it exists but cannot be read or parsed. Never touches the
/// file.
pub(in crate::control::power) fn restore_state(
    path: &std::path::Path,
) -> Result<Option<persist::PlanFile>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("cannot parse it: {e}"))
}
