//! One site for operators: `ctl` and the HTTP API on any instance reach the power leader
//! through etcd, so a change is carried out, and audited, once, by the one instance that
//! owns the power budget.
//!
//! - **Follower** ([`Forwarder`], the control plane's [`ClusterLink`]): puts the request at
//!   `requests/<id>` under its own lease (it vanishes if this instance dies), polls
//!   `replies/<id>` until [`DEADLINE`], deletes the reply and returns the leader's answer.
//!   It records nothing itself: the leader's audit entry names the operator and this instance
//!   (`alice (uid 1000) via p2`). No leader, no lease, or etcd unreachable: the request is
//!   refused at once with the reason, and nothing moves.
//! - **Leader** ([`serve`], on every instance, active only while it leads): reads
//!   `requests/` every [`SERVE_POLL`], answers each through the control plane without
//!   forwarding it again ([`ControlPlane::answer_here`]), then writes the reply and deletes
//!   the request in *one* fenced transaction: the request is answered exactly once, and a
//!   deposed leader writes nothing. Answers are remembered by id (bounded) so a transaction
//!   that failed is retried with the same answer, never by carrying the command out again.
//!
//! Requests past their deadline are deleted unanswered; the deadline is wall-clock, so the
//! instances' clocks must agree to well within [`DEADLINE`] (NTP). Replies a follower gave up
//! on are swept after [`REPLY_KEEP`]. Every message is capped at [`MAX_MESSAGE_BYTES`] and
//! read as hostile: malformed ones are deleted, never panicked on.
//!
//! Latency is two polls and four etcd round trips (put, the leader's read and transaction,
//! the reply's read): about 50 ms on one host, see the test below.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::etcd::{EtcdError, Write};
use super::keys::Keys;
use super::node::Node;
use super::{InstanceRecord, Role};
use crate::config::cluster::valid_name;
use crate::control::admin::protocol::{Request, Response};
use crate::control::admin::server::{Caller, Origin};
use crate::control::cluster_link::{BoxFuture, ClusterGauges, ClusterLink};
use crate::control::plane::ControlPlane;
use crate::time::unix_ms;

/// Largest forwarded request or reply (etcd refuses requests above 1.5 MiB by default; a
/// `rigs` listing larger than this is refused with a hint to ask the leader directly).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// How long a follower waits for the leader's answer.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader reads the queued requests.
pub const SERVE_POLL: Duration = Duration::from_millis(50);
/// How often a waiting follower looks for its reply (reads only, and only while waiting).
const WAIT_POLL: Duration = Duration::from_millis(20);
/// Longest caller text (`alice (uid 1000)`, `noc (http 10.0.0.5)`).
pub const MAX_CALLER_BYTES: usize = 512;
/// Longest request id (`<16 hex digits>-<instance>`: at most 80).
const MAX_ID_BYTES: usize = 128;
/// Requests answered per read of the queue (the rest wait one poll).
const MAX_PER_ROUND: usize = 64;
/// Answers remembered, by count and by bytes.
const REMEMBER_IDS: usize = 1024;
const REMEMBER_BYTES: usize = 16 << 20;
/// A reply no follower collected within this is deleted.
pub const REPLY_KEEP: Duration = Duration::from_secs(60);
/// How often the leader sweeps replies.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Longest version or HTTP address an instance record may show (`ctl cluster`).
const MAX_RECORD_FIELD_BYTES: usize = 256;

/// A request queued for the leader at `requests/<id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Its id (also its key's last segment): random hex, then the sending instance.
    pub id: String,
    /// The instance that received it.
    pub from_instance: String,
    /// Who sent it there (`alice (uid 1000)`).
    pub caller: String,
    /// The admin request.
    pub request: Request,
    /// When the sender stops waiting (Unix ms).
    pub deadline_unix_ms: u64,
}

/// The leader's answer at `replies/<id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// The request's id.
    pub id: String,
    /// The leader that answered.
    pub leader: String,
    /// When it wrote the reply (Unix ms; replies no one collects are swept).
    pub written_unix_ms: u64,
    /// Its answer.
    pub response: Response,
}

/// A forwarded message that cannot be sent or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("{what} is {len} bytes (at most {MAX_MESSAGE_BYTES})")]
    TooLarge {
        /// Request or reply.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// Not the JSON described, or a field out of range.
    #[error("{what} is malformed: {detail}")]
    Malformed {
        /// Request or reply.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
}

fn malformed(what: &'static str, detail: impl Into<String>) -> MessageError {
    MessageError::Malformed {
        what,
        detail: detail.into(),
    }
}

/// Whether `id` is a request id: 1 to 128 of `[A-Za-z0-9._-]` (a key segment).
fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_BYTES).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Whether `caller` may go into the audit log: at most [`MAX_CALLER_BYTES`], no control
/// characters.
fn valid_caller(caller: &str) -> bool {
    caller.len() <= MAX_CALLER_BYTES && !caller.chars().any(char::is_control)
}

/// `caller` made fit for [`valid_caller`]: control characters replaced, cut at the limit.
fn clean_caller(caller: &str) -> String {
    let mut out = String::new();
    for c in caller.chars() {
        let c = if c.is_control() { '?' } else { c };
        if out.len() + c.len_utf8() > MAX_CALLER_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

/// A fresh request id for `instance`.
fn new_id(instance: &str) -> String {
    format!("{:016x}-{instance}", rand::random::<u64>())
}

fn check_len(what: &'static str, len: usize) -> Result<(), MessageError> {
    if len > MAX_MESSAGE_BYTES {
        return Err(MessageError::TooLarge { what, len });
    }
    Ok(())
}

/// `value` as JSON, refused past [`MAX_MESSAGE_BYTES`].
fn to_json<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, MessageError> {
    let bytes = serde_json::to_vec(value).map_err(|e| malformed(what, e.to_string()))?;
    check_len(what, bytes.len())?;
    Ok(bytes)
}

/// `bytes` as JSON, refused unread past [`MAX_MESSAGE_BYTES`].
fn from_json<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, MessageError> {
    check_len(what, bytes.len())?;
    serde_json::from_slice(bytes).map_err(|e| malformed(what, e.to_string()))
}

/// The bytes of `envelope` (checked as [`decode_request`] checks them).
pub fn encode_request(envelope: &Envelope) -> Result<Vec<u8>, MessageError> {
    to_json("request", envelope)
}

/// Reads a queued request: at most [`MAX_MESSAGE_BYTES`], its id a key segment, its instance
/// a valid name, its caller fit for the audit log.
pub fn decode_request(bytes: &[u8]) -> Result<Envelope, MessageError> {
    let e: Envelope = from_json("request", bytes)?;
    if !valid_id(&e.id) {
        return Err(malformed("request", "bad id"));
    }
    if !valid_name(&e.from_instance) {
        return Err(malformed("request", "bad from_instance"));
    }
    if !valid_caller(&e.caller) {
        return Err(malformed(
            "request",
            format!("caller longer than {MAX_CALLER_BYTES} bytes or with control characters"),
        ));
    }
    Ok(e)
}

/// The bytes of `reply`.
pub fn encode_reply(reply: &Reply) -> Result<Vec<u8>, MessageError> {
    to_json("reply", reply)
}

/// Reads a reply: at most [`MAX_MESSAGE_BYTES`], its id and leader valid.
pub fn decode_reply(bytes: &[u8]) -> Result<Reply, MessageError> {
    let r: Reply = from_json("reply", bytes)?;
    if !valid_id(&r.id) || !valid_name(&r.leader) {
        return Err(malformed("reply", "bad id or leader"));
    }
    Ok(r)
}

/// The follower's side: the control plane's way to the power leader.
pub struct Forwarder {
    node: Arc<Node>,
    deadline: Duration,
    instances: Arc<InstanceCount>,
}

/// How many instances etcd holds records of, for the metrics endpoint: read again, in the
/// background, by a scrape that finds it older than [`INSTANCES_EVERY`] (one read at a time,
/// bounded by the etcd timeout), so a scrape never waits on etcd.
#[derive(Default)]
struct InstanceCount {
    count: AtomicU64,
    read_unix_ms: AtomicU64,
    reading: AtomicBool,
}

/// How old the instance count may grow before a scrape has it read again.
const INSTANCES_EVERY: Duration = Duration::from_secs(5);

impl Forwarder {
    /// A forwarder over `node`, waiting [`DEADLINE`] for answers.
    pub fn new(node: Arc<Node>) -> Arc<Forwarder> {
        Self::with_deadline(node, DEADLINE)
    }

    /// A forwarder waiting `deadline` for answers (tests).
    pub fn with_deadline(node: Arc<Node>, deadline: Duration) -> Arc<Forwarder> {
        Arc::new(Forwarder {
            node,
            deadline,
            instances: Arc::default(),
        })
    }

    /// Reads the instance count again in the background if it is stale and no read is under
    /// way (and a runtime runs: metrics are scraped on it).
    fn refresh_instances(&self) {
        let stale = unix_ms().saturating_sub(self.instances.read_unix_ms.load(Relaxed))
            >= u64::try_from(INSTANCES_EVERY.as_millis()).unwrap_or(u64::MAX);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !stale || self.instances.reading.swap(true, Relaxed) {
            return;
        }
        let (node, shared) = (self.node.clone(), self.instances.clone());
        runtime.spawn(async move {
            let prefix = node.keys().instances();
            if let Ok(records) = node.etcd.get_prefix(&prefix).await {
                let n = records
                    .iter()
                    .filter(|e| {
                        Keys::name_under(&prefix, &e.key)
                            .is_some_and(|name| instance_record(name, &e.value).is_some())
                    })
                    .count();
                shared.count.store(n as u64, Relaxed);
            }
            shared.read_unix_ms.store(unix_ms(), Relaxed);
            shared.reading.store(false, Relaxed);
        });
    }

    /// Sends `request` to the leader and waits for its answer; `None` when this instance
    /// leads.
    async fn send(&self, request: &Request, caller: &str) -> Option<Response> {
        if self.node.is_leader() {
            return None;
        }
        let leader = match self.node.role() {
            Role::Follower {
                leader: Some(record),
            } => record,
            Role::Follower { leader: None } => {
                return Some(Response::unreached(
                    "no power leader: election under way, retry in a few seconds; nothing was changed",
                ));
            }
            Role::Leader { .. } => {
                return Some(Response::unreached(
                    "this instance's power leadership is lapsing (its lease was not renewed in \
                     time): retry in a few seconds; nothing was changed",
                ));
            }
            Role::Starting => {
                return Some(Response::unreached(
                    "not yet in touch with etcd (starting): retry in a few seconds; nothing was changed",
                ));
            }
            Role::Unreachable { error } => {
                return Some(Response::unreached(format!(
                    "etcd unreachable: {error}; power control holds its plan and refuses changes"
                )));
            }
        };
        let lease = self.node.lease();
        if lease == 0 {
            return Some(Response::unreached(
                "etcd unreachable: this instance holds no lease; power control holds its plan \
                 and refuses changes",
            ));
        }
        let keys = self.node.keys();
        let etcd = &self.node.etcd;
        let deadline_ms = u64::try_from(self.deadline.as_millis()).unwrap_or(u64::MAX);
        let envelope = Envelope {
            id: new_id(keys.instance()),
            from_instance: keys.instance().to_owned(),
            caller: clean_caller(caller),
            request: request.clone(),
            deadline_unix_ms: unix_ms().saturating_add(deadline_ms),
        };
        let bytes = match encode_request(&envelope) {
            Ok(b) => b,
            Err(e) => return Some(Response::unreached(format!("cannot forward: {e}"))),
        };
        let request_key = format!("{}{}", keys.requests(), envelope.id);
        let reply_key = format!("{}{}", keys.replies(), envelope.id);
        let started = Instant::now();
        if let Err(e) = etcd.put(&request_key, bytes, lease).await {
            // A put that timed out may still land: withdraw it.
            let _ = etcd.delete(&request_key).await;
            return Some(Response::unreached(format!(
                "etcd unreachable: {e}; power control holds its plan and refuses changes"
            )));
        }
        let until = started + self.deadline;
        loop {
            tokio::time::sleep(WAIT_POLL).await;
            match etcd.get(&reply_key).await {
                Ok(Some(entry)) => {
                    let _ = etcd.delete(&reply_key).await;
                    debug!(id = %envelope.id, elapsed = ?started.elapsed(), "forwarded request answered");
                    return Some(match decode_reply(&entry.value) {
                        Ok(r) if r.id == envelope.id => r.response,
                        Ok(_) => Response::error("the power leader's reply names another request"),
                        Err(e) => Response::error(format!("the power leader's {e}")),
                    });
                }
                Ok(None) => {}
                Err(e) => debug!(error = %e, "reading the leader's reply failed; retrying"),
            }
            if Instant::now() >= until {
                break;
            }
        }
        let _ = etcd.delete(&request_key).await;
        Some(Response::unreached(format!(
            "the power leader {} did not answer within {} s; the change may still be carried \
             out: check `ctl events`",
            leader.instance,
            self.deadline.as_secs()
        )))
    }

    /// `ctl cluster`: the shape documented in docs/cluster.md and parsed by the end-to-end
    /// tests.
    pub async fn status_json(&self) -> Value {
        let node = &self.node;
        let keys = node.keys();
        let role = node.role();
        let (role_name, leader) = match &role {
            Role::Leader { record } => ("leader", Some(record)),
            Role::Follower { leader } => ("follower", leader.as_ref()),
            Role::Starting => ("starting", None),
            Role::Unreachable { .. } => ("unreachable", None),
        };
        let prefix = keys.instances();
        let (health, records) = tokio::join!(node.etcd.health(), node.etcd.get_prefix(&prefix));
        let (records, records_error) = match records {
            Ok(r) => (r, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let instances: Vec<Value> = records
            .iter()
            .filter_map(|e| {
                let name = Keys::name_under(&prefix, &e.key)?;
                let r = instance_record(name, &e.value)?;
                let leads = leader.is_some_and(|l| l.instance == r.instance);
                Some(json!({
                    "instance": r.instance,
                    "version": r.version,
                    "started_unix_ms": r.started_unix_ms,
                    "http": r.http,
                    "leader": leads,
                    "power_config": r.power_config,
                }))
            })
            .collect();
        if records_error.is_none() {
            self.instances.count.store(instances.len() as u64, Relaxed);
            self.instances.read_unix_ms.store(unix_ms(), Relaxed);
        }
        let etcd = match health {
            Ok((version, db_size)) => json!({
                "endpoints": node.etcd.endpoints(),
                "healthy": records_error.is_none(),
                "version": version,
                "db_size": db_size,
                "error": records_error,
            }),
            Err(e) => json!({
                "endpoints": node.etcd.endpoints(),
                "healthy": false,
                "version": null,
                "db_size": null,
                "error": e.to_string(),
            }),
        };
        let granted = node.lease_granted_unix_ms();
        json!({
            "site": node.config.site,
            "instance": keys.instance(),
            "role": role_name,
            "leader": leader,
            "lease": node.lease(),
            "lease_age_ms": (granted != 0).then(|| unix_ms().saturating_sub(granted)),
            "fence_remaining_ms": u64::try_from(node.fence.remaining().as_millis()).unwrap_or(u64::MAX),
            "etcd": etcd,
            "instances": instances,
            "etcd_writes": node.etcd.writes(),
        })
    }
}

/// An `instances/<name>` record, if it is one (hostile: malformed or oversized ones skipped).
fn instance_record(name: &str, value: &[u8]) -> Option<InstanceRecord> {
    if value.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    let r: InstanceRecord = serde_json::from_slice(value).ok()?;
    let field_ok = |s: &str| s.len() <= MAX_RECORD_FIELD_BYTES && !s.chars().any(char::is_control);
    (r.instance == name
        && valid_name(&r.instance)
        && field_ok(&r.version)
        && r.http.as_deref().is_none_or(field_ok)
        && r.power_config.as_deref().is_none_or(field_ok))
    .then_some(r)
}

impl ClusterLink for Forwarder {
    fn forward<'a>(
        &'a self,
        request: &'a Request,
        caller: &'a str,
    ) -> BoxFuture<'a, Option<Response>> {
        Box::pin(self.send(request, caller))
    }

    fn status(&self) -> BoxFuture<'_, Value> {
        Box::pin(self.status_json())
    }

    fn gauges(&self) -> ClusterGauges {
        self.refresh_instances();
        ClusterGauges {
            leader: self.node.is_leader(),
            etcd_writes: self.node.etcd.writes(),
            instances: self.instances.count.load(Relaxed),
            lease_remaining_secs: self.node.fence.remaining().as_secs_f64(),
        }
    }
}

/// Answers already given, by request id, so a reply whose transaction failed is written
/// again as it was, not carried out twice. Bounded by count and bytes, oldest forgotten first.
#[derive(Default)]
struct Answered {
    order: VecDeque<String>,
    replies: HashMap<String, Vec<u8>>,
    bytes: usize,
}

impl Answered {
    fn get(&self, id: &str) -> Option<&Vec<u8>> {
        self.replies.get(id)
    }

    fn insert(&mut self, id: String, reply: Vec<u8>) {
        self.bytes = self.bytes.saturating_add(reply.len());
        if let Some(old) = self.replies.insert(id.clone(), reply) {
            self.bytes = self.bytes.saturating_sub(old.len());
        } else {
            self.order.push_back(id);
        }
        while self.order.len() > REMEMBER_IDS || self.bytes > REMEMBER_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(r) = self.replies.remove(&oldest) {
                self.bytes = self.bytes.saturating_sub(r.len());
            }
        }
    }

    fn forget(&mut self, id: &str) {
        if let Some(r) = self.replies.remove(id) {
            self.bytes = self.bytes.saturating_sub(r.len());
            self.order.retain(|o| o != id);
        }
    }
}

/// What one read of the queue did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Round {
    /// Replies written.
    answered: usize,
    /// Replies etcd refused: this instance no longer leads.
    refused: usize,
    /// Transactions that failed (retried next round with the same answer).
    failed: usize,
    /// Requests past their deadline, deleted.
    expired: usize,
    /// Malformed requests, deleted.
    malformed: usize,
}

/// The leader's side.
struct Server {
    node: Arc<Node>,
    plane: Arc<ControlPlane>,
    answered: Answered,
}

impl Server {
    /// Answers the queued requests (at most [`MAX_PER_ROUND`]) while this instance leads.
    async fn round(&mut self) -> Result<Round, EtcdError> {
        let node = self.node.clone();
        let keys = node.keys();
        let prefix = keys.requests();
        let entries = node.etcd.get_prefix(&prefix).await?;
        let mut round = Round::default();
        for entry in entries.into_iter().take(MAX_PER_ROUND) {
            if !node.is_leader() {
                break;
            }
            let Some(name) = Keys::name_under(&prefix, &entry.key) else {
                continue;
            };
            let envelope = match decode_request(&entry.value) {
                Ok(e) if e.id == name => e,
                other => {
                    let error = other.map_or_else(|e| e.to_string(), |_| "id differs".to_owned());
                    warn!(key = %entry.key, %error, "malformed forwarded request deleted");
                    let _ = node.etcd.delete(&entry.key).await;
                    round.malformed += 1;
                    continue;
                }
            };
            let now = unix_ms();
            if envelope.deadline_unix_ms < now {
                warn!(
                    id = %envelope.id,
                    from = %envelope.from_instance,
                    late_ms = now - envelope.deadline_unix_ms,
                    "forwarded request past its deadline deleted (are the instances' clocks in step?)"
                );
                let _ = node.etcd.delete(&entry.key).await;
                self.answered.forget(&envelope.id);
                round.expired += 1;
                continue;
            }
            let id = envelope.id.clone();
            let reply = match self.answered.get(&id) {
                Some(r) => r.clone(),
                None => {
                    let r = self.answer(envelope).await;
                    self.answered.insert(id.clone(), r.clone());
                    r
                }
            };
            let writes = vec![
                Write::Put {
                    key: format!("{}{id}", keys.replies()),
                    value: reply,
                    leased: true,
                },
                Write::Delete { key: entry.key },
            ];
            match node.etcd.fenced(node.lease(), writes).await {
                Ok(true) => round.answered += 1,
                Ok(false) => {
                    warn!(%id, "not the power leader any more: reply not written");
                    round.refused += 1;
                    break;
                }
                Err(e) => {
                    debug!(%id, error = %e, "writing a reply failed; retrying with the same answer");
                    round.failed += 1;
                }
            }
        }
        Ok(round)
    }

    /// Carries out one forwarded request here and encodes the reply.
    async fn answer(&self, envelope: Envelope) -> Vec<u8> {
        let me = self.node.keys().instance().to_owned();
        info!(
            id = %envelope.id,
            from = %envelope.from_instance,
            caller = %envelope.caller,
            "answering a forwarded request"
        );
        let caller = Caller {
            claimed: envelope.request.by.clone(),
            origin: Origin::Forwarded {
                caller: envelope.caller,
                instance: envelope.from_instance,
            },
        };
        let response = self.plane.answer_here(envelope.request, caller).await;
        let mut reply = Reply {
            id: envelope.id,
            leader: me.clone(),
            written_unix_ms: unix_ms(),
            response,
        };
        match encode_reply(&reply) {
            Ok(b) => b,
            Err(e) => {
                reply.response = Response::error(format!(
                    "the answer is too large to forward ({e}): ask the power leader {me} directly"
                ));
                encode_reply(&reply).unwrap_or_default()
            }
        }
    }

    /// Deletes replies no follower collected (it gave up, or died waiting).
    async fn sweep(&self) -> Result<usize, EtcdError> {
        let etcd = &self.node.etcd;
        let prefix = self.node.keys().replies();
        let cutoff = unix_ms().saturating_sub(u64::try_from(REPLY_KEEP.as_millis()).unwrap_or(0));
        let mut swept = 0;
        for entry in etcd.get_prefix(&prefix).await? {
            let stale = decode_reply(&entry.value).map_or(true, |r| r.written_unix_ms < cutoff);
            if stale {
                etcd.delete(&entry.key).await?;
                swept += 1;
            }
        }
        Ok(swept)
    }
}

/// The leader's side of forwarding; runs on every instance and acts only while it leads.
/// Returns at `shutdown`.
pub async fn serve(node: Arc<Node>, plane: Arc<ControlPlane>, shutdown: CancellationToken) {
    let mut server = Server {
        node,
        plane,
        answered: Answered::default(),
    };
    let mut last_sweep = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SERVE_POLL) => {}
        }
        if !server.node.is_leader() {
            continue;
        }
        let round = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = server.round() => r,
        };
        match round {
            Ok(r) if r != Round::default() => debug!(?r, "forwarded requests"),
            Ok(_) => {}
            Err(e) => debug!(error = %e, "reading forwarded requests failed"),
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            match server.sweep().await {
                Ok(0) => {}
                Ok(n) => debug!(swept = n, "uncollected replies deleted"),
                Err(e) => debug!(error = %e, "sweeping replies failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::admin::protocol::{Command, Target};

    fn envelope() -> Envelope {
        Envelope {
            id: new_id("p2"),
            from_instance: "p2".into(),
            caller: "alice (uid 1000)".into(),
            request: Request {
                command: Command::Drain {
                    target: Target::Group("hall-a".into()),
                    reason: Some("GPU job".into()),
                },
                by: Some("alice".into()),
            },
            deadline_unix_ms: 1_800_000_000_000,
        }
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let e = envelope();
        assert!(valid_id(&e.id) && e.id.ends_with("-p2") && e.id.len() == 19);
        assert_eq!(decode_request(&encode_request(&e).unwrap()), Ok(e.clone()));
        let r = Reply {
            id: e.id.clone(),
            leader: "p1".into(),
            written_unix_ms: 1,
            response: Response::ok(json!({"accepted": true})),
        };
        assert_eq!(decode_reply(&encode_reply(&r).unwrap()), Ok(r));
        // The in-process mark never travels.
        let r = Reply {
            id: e.id,
            leader: "p1".into(),
            written_unix_ms: 1,
            response: Response::unreached("x"),
        };
        assert!(
            !decode_reply(&encode_reply(&r).unwrap())
                .unwrap()
                .response
                .unreached
        );
    }

    #[test]
    fn sizes_are_capped_both_ways() {
        let mut e = envelope();
        e.caller = "x".repeat(MAX_MESSAGE_BYTES);
        assert!(matches!(
            encode_request(&e),
            Err(MessageError::TooLarge { .. })
        ));
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            decode_request(&big),
            Err(MessageError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_reply(&big),
            Err(MessageError::TooLarge { .. })
        ));
        let r = Reply {
            id: "1-p2".into(),
            leader: "p1".into(),
            written_unix_ms: 1,
            response: Response::ok(json!("x".repeat(MAX_MESSAGE_BYTES))),
        };
        assert!(matches!(
            encode_reply(&r),
            Err(MessageError::TooLarge { .. })
        ));
    }

    #[test]
    fn hostile_requests_are_refused_without_panic() {
        let good = String::from_utf8(encode_request(&envelope()).unwrap()).unwrap();
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let bad = [
            String::new(),
            "null".into(),
            "{}".into(),
            deep,
            good.replace("\"p2\"", "\"../p1\""),
            good.replace("-p2\"", "/x\""),
            good.replace("alice (uid 1000)", "alice\\n(uid 0)"),
            good.replace("\"deadline_unix_ms\"", "\"extra\":1,\"deadline_unix_ms\""),
            good.replace("\"drain\"", "\"reboot\""),
            good.replace("1800000000000", "-1"),
        ];
        for b in &bad {
            assert!(decode_request(b.as_bytes()).is_err(), "{b:.200}");
        }
        assert!(decode_request(&[0xff, 0xfe, 0]).is_err());
        let mut e = envelope();
        e.caller = "y".repeat(MAX_CALLER_BYTES + 1);
        let bytes = serde_json::to_vec(&e).unwrap();
        assert!(decode_request(&bytes).is_err(), "caller too long");
        for bad in [
            "{}",
            r#"{"id":"a","leader":"p/1","written_unix_ms":1,"response":{"ok":true}}"#,
        ] {
            assert!(decode_reply(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn callers_are_cleaned_for_the_audit_log() {
        assert_eq!(clean_caller("alice (uid 1000)"), "alice (uid 1000)");
        assert_eq!(clean_caller("a\nb\u{7}"), "a?b?");
        let long = clean_caller(&"é".repeat(MAX_CALLER_BYTES));
        assert!(valid_caller(&long) && long.len() == MAX_CALLER_BYTES);
    }

    #[test]
    fn instance_records_are_read_as_hostile() {
        let ok =
            br#"{"instance":"p1","version":"0.1.0","started_unix_ms":5,"http":"127.0.0.1:8080"}"#;
        assert!(instance_record("p1", ok).is_some());
        assert!(instance_record("p2", ok).is_none(), "name differs from key");
        assert!(instance_record("p1", b"{").is_none());
        let long = format!(
            r#"{{"instance":"p1","version":"{}","started_unix_ms":5}}"#,
            "v".repeat(MAX_RECORD_FIELD_BYTES + 1)
        );
        assert!(instance_record("p1", long.as_bytes()).is_none());
    }

    #[test]
    fn remembered_answers_stay_bounded() {
        let mut a = Answered::default();
        for i in 0..REMEMBER_IDS + 10 {
            a.insert(format!("{i}"), vec![0; 10]);
        }
        assert_eq!(a.order.len(), REMEMBER_IDS);
        assert_eq!(a.bytes, REMEMBER_IDS * 10);
        assert!(a.get("0").is_none() && a.get(&format!("{}", REMEMBER_IDS + 9)).is_some());
        a.insert("big".into(), vec![0; REMEMBER_BYTES]);
        assert!(a.bytes <= REMEMBER_BYTES);
        assert!(a.get("big").is_some(), "the newest answer is kept");
        a.forget("big");
        assert_eq!((a.bytes, a.replies.len(), a.order.len()), (0, 0, 0));
    }
}

#[cfg(all(test, feature = "etcd"))]
mod etcd_tests;
