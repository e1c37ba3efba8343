//! A miner's work: jobs from its pool connection, the difficulty it is given (vardiff, capped
//! by the pool's), the version-rolling mask, and extranonce changes when the pool gives the
//! connection a new session or the miner is moved to another connection.

use std::sync::Arc;
use std::time::Instant;

use hashshift_protocol::share::{Job, Target};
use hashshift_protocol::sv1::{ServerMessage, ServerNotification, SetExtranonce};
use tracing::{debug, warn};

use super::{End, Layout, Place, Session};
use crate::downstream::outbox::Outbox;
use crate::pool_link::work::{UpstreamJob, WorkState};

impl Session {
    /// The pool connection published new work (or the miner got a place and this is the
    /// connection's current work).
    pub(in crate::downstream::sv1) fn handle_work(
        &mut self,
        work: Arc<WorkState>,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), End> {
        self.work = Some(work.clone());
        self.on_work(&work, now, out)?;
        self.release_held(now, out)
    }

    /// The connection's work channel closed (the proxy is shutting down): nothing more will
    /// come. A request waiting for that connection's first work cannot be answered.
    pub(in crate::downstream::sv1) fn handle_work_ended(&mut self) -> Result<(), End> {
        self.work = None;
        if self.pool_wait.is_some() && self.place.is_some() {
            return Err(End::NoPool);
        }
        Ok(())
    }

    /// The manager moved this miner to another connection; that connection's work follows
    /// through [`Session::handle_work`].
    pub(in crate::downstream::sv1) fn handle_reassigned(&mut self, place: Place) {
        self.place = Some(place);
        // Force the extranonce path in on_work: the new connection has its own session.
        if let Some(layout) = self.layout.as_mut() {
            layout.session = 0;
        }
    }

    fn on_work(&mut self, work: &WorkState, now: Instant, out: &mut Outbox) -> Result<(), End> {
        if work.session == 0 || work.extranonce2_size == 0 {
            return Ok(()); // not subscribed yet upstream; wait
        }
        // Before any job of this work: the mask applies to it (and, BIP310, at once).
        self.sync_version_mask(work, out)?;
        if let Some(layout) = &self.layout
            && layout.session != work.session
        {
            // The pool gave this connection a new extranonce1 (reconnect or
            // mining.set_extranonce): this miner's extranonce must change too.
            return self.change_extranonce(work, out);
        }
        if !self.is_working() || self.sent_difficulty.is_none() {
            return Ok(());
        }
        let Some(job) = work.job.clone() else {
            return Ok(());
        };
        if self.jobs.back().is_some_and(|(_, j)| Arc::ptr_eq(j, &job)) {
            return Ok(());
        }
        self.send_current_job(out, job.clean)?;
        let fanout = &self.settings.stats.job_fanout;
        fanout.observe_duration(now.saturating_duration_since(job.received_at));
        Ok(())
    }

    /// Starts sending work once subscribed and authorized.
    pub(super) fn maybe_start(&mut self, out: &mut Outbox) -> Result<(), End> {
        if self.is_working() && self.sent_difficulty.is_none() {
            self.send_current_job(out, true)?;
        }
        Ok(())
    }

    fn current_job(&self) -> Option<Arc<UpstreamJob>> {
        self.work.as_ref().and_then(|w| w.job.clone())
    }

    /// Sends difficulty (if changed) then the newest job.
    fn send_current_job(&mut self, out: &mut Outbox, clean: bool) -> Result<(), End> {
        let Some(job) = self.current_job() else {
            return Ok(());
        };
        self.send_difficulty_if_changed(out)?;
        if clean == job.clean && !self.jobs.iter().any(|(id, _)| *id == job.id) {
            self.add_job(job.id, &job, clean);
            Ok(out.push_job(&job.notify_line)?)
        } else {
            let (id, line) = job.reissue(clean);
            self.add_job(id, &job, clean);
            Ok(out.push_job(&line)?)
        }
    }

    /// Registers `job` under downstream `id`. Duplicates are kept per pool job (`job.work`),
    /// so a re-issue after a difficulty change cannot take a share the miner already sent.
    fn add_job(&mut self, id: u32, job: &Arc<UpstreamJob>, clean: bool) {
        if self
            .validator
            .add_job_for_work(id, Job::Extended(job.job.clone()), clean, job.work)
            .is_err()
        {
            warn!(job = id, "pool job has invalid nbits; not sent");
            return;
        }
        if clean {
            self.jobs.clear();
        }
        self.jobs.push_back((id, job.clone()));
        while self.jobs.len() > super::JOBS_KEPT {
            self.jobs.pop_front();
        }
    }

    /// The difficulty to give the miner: vardiff's, but never above the pool's. Above it,
    /// every share would meet the pool target and the pool would credit each at its own
    /// (lower) difficulty, under-counting the miner's work.
    fn effective_difficulty(&self) -> f64 {
        let d = self.vardiff.difficulty();
        match self.work.as_ref().map(|w| w.difficulty) {
            Some(pool) if pool.is_finite() && pool > 0.0 => d.min(pool),
            _ => d,
        }
    }

    fn send_difficulty_if_changed(&mut self, out: &mut Outbox) -> Result<(), End> {
        let d = self.effective_difficulty();
        if self.sent_difficulty != Some(d) {
            self.validator
                .set_miner_target(Target::from_difficulty(d).unwrap_or(Target::DIFF1));
            self.shared.difficulty.set(d);
            self.sent_difficulty = Some(d);
            self.send(
                out,
                &ServerMessage::notification(ServerNotification::SetDifficulty(d)),
            )?;
        }
        Ok(())
    }

    /// A new difficulty: announce it and re-issue the current job under a new id, so the
    /// miner's next shares are judged at the new target and older ones at the old one.
    pub(super) fn retarget(&mut self, out: &mut Outbox) -> Result<(), End> {
        // Vardiff may want more than the pool's difficulty allows: then nothing changes.
        if !self.is_working() || self.sent_difficulty == Some(self.effective_difficulty()) {
            return Ok(());
        }
        self.send_difficulty_if_changed(out)?;
        let Some(job) = self.current_job() else {
            return Ok(());
        };
        let (id, line) = job.reissue(false);
        self.add_job(id, &job, false);
        Ok(out.push_job(&line)?)
    }

    /// Follows the pool's version-rolling mask (`mining.set_version_mask` upstream, or a move
    /// to another pool): a miner that was granted rolling gets `mining.set_version_mask` with
    /// `requested & pool mask` whenever that changes, narrower or wider, and its validator
    /// judges the next share by it (BIP310: the new mask is valid immediately).
    fn sync_version_mask(&mut self, work: &WorkState, out: &mut Outbox) -> Result<(), End> {
        let Some(requested) = self.requested_mask else {
            return Ok(());
        };
        let granted = requested & work.version_mask;
        if granted == self.granted_mask {
            return Ok(());
        }
        debug!(
            from = format_args!("{:08x}", self.granted_mask),
            to = format_args!("{granted:08x}"),
            "version-rolling mask changed"
        );
        self.granted_mask = granted;
        self.validator.set_version_rolling_mask(granted);
        self.send(
            out,
            &ServerMessage::notification(ServerNotification::SetVersionMask(granted)),
        )
    }

    /// Applies a new extranonce: `mining.set_extranonce` for miners that subscribed to it,
    /// `client.reconnect` (back to this proxy) for the rest.
    fn change_extranonce(&mut self, work: &WorkState, out: &mut Outbox) -> Result<(), End> {
        let Some(place) = self.place else {
            return Ok(());
        };
        let Some(layout) = Layout::new(work, place) else {
            return Err(End::NoPool);
        };
        if !self.subscribed {
            self.layout = Some(layout);
            return Ok(());
        }
        if !self.extranonce_subscribed {
            self.send(
                out,
                &ServerMessage::notification(ServerNotification::Reconnect(Default::default())),
            )?;
            return Err(End::Reconnected);
        }
        self.validator
            .set_extranonce_prefix(layout.extranonce.extranonce1.to_vec());
        self.validator
            .set_extranonce_size(layout.extranonce.extranonce2_size);
        self.validator.retire_all();
        self.jobs.clear();
        let set = SetExtranonce {
            extranonce1: layout.extranonce.extranonce1.to_vec(),
            extranonce2_size: layout.extranonce.extranonce2_size,
        };
        self.layout = Some(layout);
        self.send(
            out,
            &ServerMessage::notification(ServerNotification::SetExtranonce(set)),
        )?;
        // Re-send difficulty with the first job of the new session, as firmware expects.
        self.sent_difficulty = None;
        if self.is_working() {
            self.send_current_job(out, true)
        } else {
            Ok(())
        }
    }

    /// Periodic (and per-share) vardiff check.
    pub(super) fn on_tick(&mut self, now: Instant, out: &mut Outbox) -> Result<(), End> {
        if self.sent_difficulty.is_some() && self.vardiff.poll(now).is_some() {
            self.retarget(out)?;
        }
        Ok(())
    }
}
