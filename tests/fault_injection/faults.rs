//! What the suite does to the site: one iteration per fault kind, operator operations, kills
//! and restarts of the proxy, recovery, and absurd admin input.

use super::*;

impl Suite {
    pub(super) async fn apply(&mut self, it: u64, op: &Op) -> Result<()> {
        let name = format!("{op:?}");
        let kind = name.split('(').next().unwrap_or("?").to_owned();
        *self.tally.ops.entry(kind).or_default() += 1;
        let rig = |i: &usize| Target::Rig(format!("farm.rig{i}"));
        let command = match op {
            Op::Drain(i) => Command::Drain {
                target: rig(i),
                reason: Some("fault suite".into()),
            },
            Op::Resume(i) => Command::Resume {
                target: rig(i),
                reason: None,
            },
            Op::ResumeAll => Command::Resume {
                target: Target::All,
                reason: None,
            },
            Op::Gpu(kw) => {
                self.gpu_wanted = *kw;
                Command::GpuRequest {
                    kw: *kw,
                    reason: Some("fault suite job".into()),
                }
            }
            Op::Curtail(kw) => Command::Curtail {
                kw: *kw,
                until_unix: hashshift_proxy::time::unix_secs() + 600,
                reason: Some("fault suite grid event".into()),
            },
            Op::CurtailClear => Command::CurtailClear { reason: None },
        };
        self.last_op_at = Instant::now();
        match ask(&self.socket, command).await {
            // A refusal of an ordinary request (resume of a rig not drained, ...) is fine.
            Ok(_) => {}
            Err(e) => self
                .tally
                .notes
                .push(format!("#{it}: {op:?} got no answer: {e:#}")),
        }
        Ok(())
    }

    /// Samples for `d`, killing the proxy `kill_at` into it if asked.
    pub(super) async fn observe(
        &mut self,
        it: u64,
        d: Duration,
        kill_at: Option<Duration>,
    ) -> Result<()> {
        let t0 = Instant::now();
        let mut kill_at = kill_at;
        while t0.elapsed() < d {
            if kill_at.is_some_and(|k| t0.elapsed() >= k) {
                kill_at = None;
                self.kill_and_restart(it).await?;
            }
            self.check(it).await?;
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
        Ok(())
    }

    pub(super) async fn kill_and_restart(&mut self, it: u64) -> Result<()> {
        // What the plan says before the kill: pins and curtailment as the proxy shows them.
        let before = self.plan_view().await;
        let op_age = self.last_op_at.elapsed();
        let proc = self.proc.take().context("no proxy to kill")?;
        let signal = proc.kill9()?;
        // A command the proxy wrote just before it died still reaches its rig: let it land.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.baseline_at_kill();
        if signal == Some(9) {
            *self.tally.verified.entry("Kill9".into()).or_default() += 1;
        } else {
            self.tally.violation(
                it,
                format!("[item 4] proxy was already dead before kill -9 ({signal:?})"),
            );
        }
        // Down for a random moment, as a supervisor's restart delay.
        let down = Duration::from_millis(self.rng.random_range(100..1500));
        let t0 = Instant::now();
        while t0.elapsed() < down {
            self.check_truth_only(it);
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
        self.watch = Watch::default();
        self.launch().await?;
        let after = self.plan_view().await;
        // The plan is persisted within 200 ms of a change; an op newer than 1 s may be lost.
        if let (Some(b), Some(a)) = (before, after) {
            if b != a && op_age > Duration::from_secs(1) {
                self.tally.violation(
                    it,
                    format!("[item 4/5] plan not resumed after kill -9: before {b:?}, after {a:?}"),
                );
            }
        }
        Ok(())
    }

    /// After a violation that leaves power control dead: kill, move the plan aside, restart
    /// (what `hashshift run --reset-power-state` will do once item 5 is in).
    pub(super) async fn recover(&mut self, it: u64, why: &str) -> Result<()> {
        self.tally.recoveries += 1;
        self.tally.recovered_in = Some(it);
        self.tally
            .recovered_at
            .push(humantime::format_rfc3339_millis(SystemTime::now()).to_string());
        self.tally.notes.push(format!(
            "#{it}: recovered (kill, plan moved aside, restart): {why}"
        ));
        if let Some(p) = self.proc.take() {
            let _ = p.kill9();
        }
        let plan = self.dir.join("state/power.json");
        let _ = std::fs::rename(&plan, self.dir.join(format!("state/power.json.bad{it}")));
        self.watch = Watch::default();
        self.launch().await?;
        // A fresh plan knows no rig that does not connect: an operator walks the floor and
        // wakes the sleeping ones by hand, so the run goes on with a whole site.
        let asleep: Vec<_> = self
            .rigs
            .iter()
            .filter(|r| r.phase() == FakePhase::Sleeping)
            .map(|r| (r.worker.clone(), r.firmware.addr()))
            .collect();
        for (worker, addr) in asleep {
            if let Err(e) = wake_by_hand(addr).await {
                self.tally
                    .notes
                    .push(format!("#{it}: could not wake {worker} by hand: {e:#}"));
            }
        }
        Ok(())
    }

    /// Runs one iteration with `fault`.
    pub(super) async fn iteration(&mut self, it: u64, fault: Fault) -> Result<()> {
        self.tally.iterations += 1;
        *self.tally.injected.entry(format!("{fault:?}")).or_default() += 1;
        let window = Duration::from_millis(self.rng.random_range(2500..4000));
        // Firmware faults on a rig that is up, when there is one (its status polls hit them).
        let mut up: Vec<usize> = (0..RIGS)
            .filter(|i| self.rigs[*i].phase() == FakePhase::Mining)
            .collect();
        if up.is_empty() {
            up = (0..RIGS)
                .filter(|i| self.rigs[*i].phase() != FakePhase::Sleeping)
                .collect();
        }
        let victim = if up.is_empty() {
            self.rng.random_range(0..RIGS)
        } else {
            up[self.rng.random_range(0..up.len())]
        };
        let fw = self.rigs[victim].firmware.clone();
        let hits0 = fw.fault_hits();
        let calls0 = hook_calls(&self.dir);
        let warns0 = count_in(&self.log, "cannot persist the power plan");
        let mut op = self.pick_op();
        let mut kill_at = None;
        match fault {
            Fault::Kill9 => kill_at = Some(Duration::from_millis(self.rng.random_range(0..2000))),
            Fault::FirmwareStall => fw.set_silent(true),
            Fault::FirmwareReset => fw.set_reset(true),
            Fault::FirmwareGarbage => fw.set_malformed(true),
            Fault::FirmwareLiesAsleep => {
                // The rig acknowledges sleep, keeps hashing, and its status says asleep: only
                // its shares tell the truth (quiet_secs).
                fw.set_lie_asleep(true);
                fw.set_stuck(true);
                op = Op::Drain(victim);
            }
            Fault::FirmwareReports1W => {
                fw.set_lie_watts(Some(1));
                // Ask for GPU power: a rig counted at 1 W makes room that is not there.
                op = Op::Gpu(self.rng.random_range(6..=10) as f64);
            }
            Fault::SlurmHookHangs | Fault::SlurmHookFails => {
                let mode = if fault == Fault::SlurmHookHangs {
                    "hang"
                } else {
                    "fail"
                };
                std::fs::write(self.dir.join("gpu_mode"), mode)?;
                // A budget change, so the hook runs.
                let kw = if self.gpu_wanted > 0.0 { 0.0 } else { 4.0 };
                op = Op::Gpu(kw);
            }
            Fault::StateUnwritable => {
                // Root ignores permissions: a directory where the temp file goes makes every
                // atomic write of the plan fail (File::create on a directory).
                std::fs::create_dir_all(self.dir.join("state/power.json.tmp"))?;
                op = Op::Drain(victim);
                // Undo a previous drain of it so the plan surely changes.
                self.apply(it, &Op::Resume(victim)).await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Fault::AbsurdInput => {}
        }
        if fault == Fault::AbsurdInput {
            self.absurd(it).await?;
        } else {
            self.apply(it, &op).await?;
        }
        self.observe(it, window, kill_at).await?;

        // Clear the fault and prove it happened.
        let verified = match fault {
            Fault::Kill9 => false, // counted in kill_and_restart
            Fault::FirmwareStall
            | Fault::FirmwareReset
            | Fault::FirmwareGarbage
            | Fault::FirmwareLiesAsleep
            | Fault::FirmwareReports1W => {
                fw.set_silent(false);
                fw.set_reset(false);
                fw.set_malformed(false);
                fw.set_lie_asleep(false);
                fw.set_stuck(false);
                fw.set_lie_watts(None);
                fw.fault_hits() > hits0
            }
            Fault::SlurmHookHangs | Fault::SlurmHookFails => {
                let _ = std::fs::remove_file(self.dir.join("gpu_mode"));
                let mode = if fault == Fault::SlurmHookHangs {
                    "mode=hang"
                } else {
                    "mode=fail"
                };
                hook_calls(&self.dir)
                    .iter()
                    .skip(calls0.len())
                    .any(|l| l.ends_with(mode))
            }
            Fault::StateUnwritable => {
                let hit = count_in(&self.log, "cannot persist the power plan") > warns0;
                std::fs::remove_dir(self.dir.join("state/power.json.tmp"))?;
                hit
            }
            Fault::AbsurdInput => true,
        };
        if fault != Fault::Kill9 {
            if verified {
                *self.tally.verified.entry(format!("{fault:?}")).or_default() += 1;
            } else {
                self.tally.notes.push(format!(
                    "#{it}: {fault:?} on rig{victim} did not visibly happen (op {op:?})"
                ));
            }
        }
        if fault == Fault::StateUnwritable {
            // Writable again: the plan that failed to save must reach the disk.
            let file = self.dir.join("state/power.json");
            let t0 = Instant::now();
            let mut saved = false;
            while t0.elapsed() < Duration::from_secs(3) {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                if text.contains(&format!("farm.rig{victim}")) && text.contains("fault suite") {
                    saved = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !saved {
                self.tally.notes.push(format!(
                    "#{it}: after the state dir was writable again, power.json does not show the drain of rig{victim}"
                ));
            }
        }
        // The process must still be up.
        if let Some(status) = self.proc.as_mut().and_then(Proc::exited) {
            self.tally
                .violation(it, format!("[item 4] hashshift exited: {status}"));
            self.proc = None;
            self.recover(it, "process exited").await?;
        }
        self.observe(it, Duration::from_millis(800), None).await
    }

    /// One absurd request on the admin socket; it must be refused with an error, and power
    /// control must keep answering.
    pub(super) async fn absurd(&mut self, it: u64) -> Result<()> {
        let huge = "x".repeat(60_000);
        let far = hashshift_proxy::time::unix_secs() + 30 * 86_400;
        let cases: Vec<(&str, String)> = vec![
            (
                "curtail until u64::MAX",
                r#"{"cmd":"curtail","kw":5,"until_unix":18446744073709551615}"#.into(),
            ),
            (
                "curtail 30 days ahead",
                format!(r#"{{"cmd":"curtail","kw":5,"until_unix":{far}}}"#),
            ),
            (
                "curtail negative kW",
                format!(
                    r#"{{"cmd":"curtail","kw":-1,"until_unix":{}}}"#,
                    hashshift_proxy::time::unix_secs() + 60
                ),
            ),
            (
                "curtail 1e308 kW",
                format!(
                    r#"{{"cmd":"curtail","kw":1e308,"until_unix":{}}}"#,
                    hashshift_proxy::time::unix_secs() + 60
                ),
            ),
            ("gpu 1e300 kW", r#"{"cmd":"gpu_request","kw":1e300}"#.into()),
            ("gpu -5 kW", r#"{"cmd":"gpu_request","kw":-5}"#.into()),
            ("gpu NaN kW", r#"{"cmd":"gpu_request","kw":NaN}"#.into()),
            (
                "drain 1e308 kW",
                r#"{"cmd":"drain","target":{"kw":1e308}}"#.into(),
            ),
            (
                "drain -3 kW",
                r#"{"cmd":"drain","target":{"kw":-3}}"#.into(),
            ),
            (
                "60 KB rig name",
                format!(r#"{{"cmd":"drain","target":{{"rig":"{huge}"}}}}"#),
            ),
            (
                "60 KB reason",
                format!(r#"{{"cmd":"gpu_request","kw":0,"reason":"{huge}"}}"#),
            ),
        ];
        let mut cases = cases;
        cases.shuffle(&mut self.rng);
        for (what, line) in cases {
            *self.tally.absurd.entry(what.to_owned()).or_default() += 1;
            self.absurd_one(it, what, &line).await?;
        }
        Ok(())
    }

    pub(super) async fn absurd_one(&mut self, it: u64, what: &str, line: &str) -> Result<()> {
        self.last_op_at = Instant::now();
        *self.tally.ops.entry(format!("absurd: {what}")).or_default() += 1;
        let answer = raw(&self.socket, line).await;
        let accepted = answer.as_ref().is_ok_and(|a| a.contains("\"ok\":true"));
        // A 60 KB reason may be accepted if it is cut to length (item 3: "length-capped").
        let reason_ok = what == "60 KB reason" && {
            let events = ask_ok(&self.socket, Command::Events { limit: Some(20) })
                .await
                .unwrap_or_default();
            events
                .as_array()
                .into_iter()
                .flatten()
                .all(|e| e.to_string().len() < 8_192)
        };
        if accepted && !reason_ok {
            self.tally.violation(
                it,
                format!(
                    "[item 3] absurd input accepted: {what}: {}",
                    clip(answer.as_deref().unwrap_or(""))
                ),
            );
        }
        // Past the controller's next 1 s tick, where a bad deadline would blow up.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        match ask(&self.socket, Command::Power).await {
            Ok(r) if r.ok => {}
            other => {
                self.tally.violation(
                    it,
                    format!(
                        "[item 3/4] after absurd input ({what}) power control is down: {other:?}"
                    ),
                );
                self.recover(it, &format!("absurd input {what}")).await?;
            }
        }
        if accepted {
            // Undo whatever it did, so the next iterations start sane.
            let _ = ask(&self.socket, Command::CurtailClear { reason: None }).await;
            let _ = ask(
                &self.socket,
                Command::GpuRequest {
                    kw: self.gpu_wanted,
                    reason: None,
                },
            )
            .await;
        }
        Ok(())
    }
}
