//! The suite's checks: the cap and budget samples, the fakes' truth, the persisted plan and
//! the exact replay of the audit log.

use super::*;

impl Suite {
    /// One sample of every invariant.
    pub(super) async fn check(&mut self, it: u64) -> Result<()> {
        self.tally.samples += 1;
        let now = Instant::now();
        // B: the truth, from the fakes and the hook's applied budget.
        let up = self
            .rigs
            .iter()
            .filter(|r| r.phase() != FakePhase::Sleeping)
            .count();
        let applied = std::fs::read_to_string(self.dir.join("gpu_applied"))
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        let budget = self.budget_now().await;
        if let Some(budget) = budget {
            let truth = up as f64 * RIG_KW + applied;
            let over = truth > budget + TOL_KW;
            let raised = self.watch.true_up.is_some_and(|u| up > u)
                || self.watch.applied_kw.is_some_and(|a| applied > a + TOL_KW);
            if over && raised {
                self.tally.violation(
                    it,
                    format!(
                        "[B truth] raised over budget by own action: {up} rigs up ({:.2} kW) + GPU applied {applied:.2} kW > budget {budget:.2} kW",
                        up as f64 * RIG_KW
                    ),
                );
            }
            match (over, self.watch.true_over_since) {
                (true, None) => self.watch.true_over_since = Some(now),
                (true, Some(t)) if now - t > SHED_LIMIT => {
                    self.tally.violation(
                        it,
                        format!(
                            "[B truth] over budget for more than {} s: {up} rigs up + GPU applied {applied:.2} kW > {budget:.2} kW",
                            SHED_LIMIT.as_secs()
                        ),
                    );
                    self.watch.true_over_since = Some(now);
                }
                (false, _) => self.watch.true_over_since = None,
                _ => {}
            }
        }
        self.watch.true_up = Some(up);
        self.watch.applied_kw = Some(applied);

        // A: what the proxy says.
        let power = match ask(&self.socket, Command::Power).await {
            Ok(r) if r.ok => r.result.unwrap_or_default(),
            Ok(r) => {
                self.tally
                    .violation(it, format!("[item 3/4] `power` refused: {:?}", r.error));
                return self.recover(it, "power control refused `power`").await;
            }
            Err(e) => {
                // The process is down (a kill in progress is handled by the caller).
                self.tally.notes.push(format!("#{it}: power: {e:#}"));
                return Ok(());
            }
        };
        let f = |k: &str| power[k].as_f64().unwrap_or(f64::NAN);
        let (mining, grant, budget_kw) = (f("mining_kw"), f("gpu_granted_kw"), f("budget_kw"));
        let counts = &power["rigs"];
        let total: u64 = ["mining", "draining", "asleep", "waking", "fault", "unknown"]
            .iter()
            .map(|k| counts[k].as_u64().unwrap_or(0))
            .sum();
        let not_asleep = total.saturating_sub(counts["asleep"].as_u64().unwrap_or(0));
        // NaN (a missing figure) counts as over.
        let over = (mining + grant)
            .partial_cmp(&(budget_kw + TOL_KW))
            .is_none_or(|o| o.is_gt());
        let steady = self
            .watch
            .budget_kw
            .is_some_and(|b| budget_kw + TOL_KW >= b)
            && self.watch.total == Some(total);
        let grant_raised = self.watch.grant_kw.is_some_and(|g| grant > g + TOL_KW)
            && self
                .watch
                .mining_kw
                .is_none_or(|m| m + grant > budget_kw + TOL_KW);
        let raised =
            grant_raised || (steady && self.watch.not_asleep.is_some_and(|n| not_asleep > n));
        if over && raised {
            self.tally.violation(
                it,
                format!(
                    "[A ctl power] raised over budget by own action: mining {mining:.3} + grant {grant:.3} > budget {budget_kw:.3} (rigs {counts})"
                ),
            );
        }
        match (over, self.watch.over_since) {
            (true, None) => self.watch.over_since = Some(now),
            (true, Some(t)) if now - t > SHED_LIMIT => {
                self.tally.violation(
                    it,
                    format!(
                        "[A ctl power] over budget for more than {} s: mining {mining:.3} + grant {grant:.3} > budget {budget_kw:.3}",
                        SHED_LIMIT.as_secs()
                    ),
                );
                self.watch.over_since = Some(now);
            }
            (false, _) => self.watch.over_since = None,
            _ => {}
        }
        self.watch.grant_kw = Some(grant);
        self.watch.not_asleep = Some(not_asleep);
        self.watch.budget_kw = Some(budget_kw);
        self.watch.total = Some(total);
        self.watch.mining_kw = Some(mining);

        // C: per rig, against the fakes.
        let Ok(rigs) = ask_ok(&self.socket, Command::Rigs).await else {
            return Ok(());
        };
        for view in rigs.as_array().into_iter().flatten() {
            let id = view["id"].as_str().unwrap_or("?").to_owned();
            // A connection that has not authorized yet (a rig reconnecting) is listed as
            // `conn-N` with no power state: not a rig, nothing to check.
            if id.starts_with("conn-") && view["state"].is_null() {
                continue;
            }
            let Some(rig) = self.rigs.iter().find(|r| r.worker == id) else {
                self.tally
                    .violation(it, format!("[C] unknown rig {id:?} in `ctl rigs`"));
                continue;
            };
            let phase = rig.phase();
            let accepted = rig.accepted.load(Ordering::Relaxed);
            if view["state"] == "asleep" {
                if phase != FakePhase::Sleeping {
                    self.tally.violation(
                        it,
                        format!("[C truth] {id} counted asleep (0 kW) but its boards are {phase:?} (really drawing)"),
                    );
                }
                if let Some(before) = self.watch.asleep_accepted.get(&id) {
                    if accepted > *before {
                        self.tally.violation(
                            it,
                            format!(
                                "[C shares] {id} got {} share(s) accepted while counted asleep",
                                accepted - before
                            ),
                        );
                    }
                }
                self.watch.asleep_accepted.insert(id, accepted);
            } else {
                self.watch.asleep_accepted.remove(&id);
                let w = view["power_w"].as_f64().unwrap_or(f64::NAN);
                let undercounted = w
                    .partial_cmp(&(RIG_KW * 1000.0 * 0.5))
                    .is_none_or(|o| o.is_lt());
                if phase == FakePhase::Mining && undercounted {
                    self.tally.violation(
                        it,
                        format!(
                            "[C truth] {id} really mines at {:.0} W but is counted at {w} W",
                            RIG_KW * 1000.0
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// `budget_kw` now, from `ctl power` (None while the proxy is down).
    pub(super) async fn budget_now(&self) -> Option<f64> {
        match ask(&self.socket, Command::Power).await {
            Ok(r) if r.ok => r.result?["budget_kw"].as_f64(),
            _ => None,
        }
    }

    /// The truth at the moment the proxy died: what a live proxy commanded up to its last
    /// instant (a wake acknowledged between the last sample and the kill) is its own doing;
    /// only a rig that wakes after this, with nothing left to command it, is a violation.
    pub(super) fn baseline_at_kill(&mut self) {
        let up = self
            .rigs
            .iter()
            .filter(|r| r.phase() != FakePhase::Sleeping)
            .count();
        self.watch.true_up = Some(up);
    }

    /// While the proxy is down only the truth can be checked: nothing may wake.
    pub(super) fn check_truth_only(&mut self, it: u64) {
        let up = self
            .rigs
            .iter()
            .filter(|r| r.phase() != FakePhase::Sleeping)
            .count();
        if self.watch.true_up.is_some_and(|u| up > u) {
            self.tally.violation(
                it,
                format!("[B truth] a rig woke while the proxy was down ({up} up)"),
            );
        }
        self.watch.true_up = Some(up);
    }

    /// Operator pins and the curtailment, as the proxy shows them.
    pub(super) async fn plan_view(&self) -> Option<(Vec<String>, Value)> {
        let rigs = ask_ok(&self.socket, Command::Rigs).await.ok()?;
        let power = ask_ok(&self.socket, Command::Power).await.ok()?;
        let mut pinned: Vec<String> = rigs
            .as_array()?
            .iter()
            .filter(|r| r["pinned"].is_string())
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect();
        pinned.sort();
        let c = &power["curtailment"];
        Some((pinned, serde_json::json!([c["cap_kw"], c["until_unix"]])))
    }

    /// D: replays the audit log; every wake and GPU budget increase must have fit.
    pub(super) fn replay_audit(&mut self) -> Result<u64> {
        let text = std::fs::read_to_string(self.dir.join("state/audit.jsonl"))?;
        let headroom = HEADROOM_KW * 1000.0;
        let mut drawing: BTreeMap<String, (f64, bool)> = BTreeMap::new();
        let mut grant = 0.0f64;
        let mut curtail: Option<f64> = None;
        let mut checked = 0u64;
        let mut recoveries = self.tally.recovered_at.clone().into_iter().peekable();
        for line in text.lines() {
            let Ok(e) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            // The suite moved the plan aside here: no curtailment, no grant, and every rig
            // up (the suite wakes them by hand).
            let time = e["time"].as_str().unwrap_or("").to_owned();
            while recoveries.next_if(|r| *r <= time).is_some() {
                curtail = None;
                grant = 0.0;
                for r in drawing.values_mut() {
                    r.1 = true;
                }
            }
            if e["who"] != "arbiter" {
                continue;
            }
            let detail: Value = e["detail"]
                .as_str()
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or_default();
            let budget = curtail
                .unwrap_or(SITE_CAP_KW * 1000.0)
                .min(SITE_CAP_KW * 1000.0)
                - headroom;
            let load = |drawing: &BTreeMap<String, (f64, bool)>, grant: f64| {
                drawing
                    .values()
                    .filter(|(_, d)| *d)
                    .map(|(w, _)| w)
                    .sum::<f64>()
                    + grant
            };
            match e["what"].as_str().unwrap_or("") {
                "rig-added" => {
                    let id = detail["info"]["id"].as_str().unwrap_or("?").to_owned();
                    let w = detail["info"]["power"].as_f64().unwrap_or(RIG_KW * 1000.0);
                    drawing.insert(id, (w, detail["state"] != "asleep"));
                }
                "rig-removed" => {
                    drawing.remove(detail["rig"].as_str().unwrap_or(""));
                }
                "confirmed" => {
                    let id = detail["rig"].as_str().unwrap_or("?");
                    if let Some(r) = drawing.get_mut(id) {
                        r.1 = detail["to"] != "asleep";
                    }
                }
                "curtailment-set" => curtail = detail["curtailment"]["cap"].as_f64(),
                "curtailment-ended" => curtail = None,
                "restored" => grant = detail["granted"].as_f64().unwrap_or(grant),
                "action" => {
                    // Internally tagged: {"action":"wake","rig":..} / {"action":"set_gpu_budget","budget":..}.
                    let a = &detail["action"];
                    if a["action"] == "wake" {
                        let id = a["rig"].as_str().unwrap_or("?");
                        if let Some(r) = drawing.get_mut(id) {
                            r.1 = true;
                        }
                        checked += 1;
                        let l = load(&drawing, grant);
                        if l > budget + 10.0 {
                            self.tally.violation(
                                0,
                                format!("[D audit] wake of {id} at {} made the load {:.2} kW > budget {:.2} kW", e["time"], l / 1000.0, budget / 1000.0),
                            );
                        }
                    }
                    if a["action"] == "set_gpu_budget" {
                        let new = a["budget"].as_f64().unwrap_or(0.0);
                        let grew = new > grant;
                        grant = new;
                        if grew {
                            checked += 1;
                            let l = load(&drawing, grant);
                            if l > budget + 10.0 {
                                self.tally.violation(
                                    0,
                                    format!("[D audit] GPU budget raised to {:.2} kW at {} with load {:.2} kW > budget {:.2} kW", new / 1000.0, e["time"], l / 1000.0, budget / 1000.0),
                                );
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(checked)
    }
}
