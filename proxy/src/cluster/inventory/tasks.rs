//! The inventory's tasks, which [`run`] drives: the publisher, the refresher, the order
//! sender and the order executor.
//!
//! - **Publish** (`miners/<me>`, one JSON value under this instance's own lease): when the
//!   instance dies its lease expires, etcd deletes the key, and its miners leave the live
//!   view at once (their rigs stay counted by the power controller at their last known power:
//!   a dead proxy does not mean a sleeping rig). Written at most once a second and only when
//!   something the power controller or an operator reads changed; the lease keeps the key, so
//!   there is no periodic rewrite. A new lease (after an expiry) is published to at once.
//!   When the miners do not fit in one value, a warning says so. (etcd keeps every revision
//!   until it compacts: run it with `--auto-compaction-retention`.)
//! - **Read** (every ~500 ms): a keys-only listing of `miners/`, then one read per instance
//!   whose revision moved: unchanged values are not downloaded again, and no single answer
//!   carries every instance's value (the client refuses answers over 4 MiB). Entries are
//!   capped in total ([`MAX_REMOTE_TOTAL`]) as well as per instance.
//! - **Orders** (`orders/<instance>/<id>`): a kick of a remote miner is written by the
//!   leader in a fenced transaction under its lease (a deposed leader's kick is refused by
//!   etcd); each instance polls its own orders every ~300 ms, kicks, and deletes them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::wire::{
    Decoded, MAX_PUBLISH_BYTES, MAX_PUBLISHED, Mark, Order, OrderAction, WireMiner, changed,
    decode, encode, marks_of, order_action,
};
use super::{ClusterFleet, Kick, MAX_REMOTE_TOTAL, assemble, build_instance};
use crate::cluster::etcd::{EtcdError, LeaseId, Write};
use crate::cluster::keys::Keys;

const PUBLISH_MIN_INTERVAL: Duration = Duration::from_secs(1);
const PUBLISH_TICK: Duration = Duration::from_millis(250);
const REFRESH_EVERY: Duration = Duration::from_millis(500);
const ORDERS_EVERY: Duration = Duration::from_millis(300);
const MAX_ORDERS_PER_POLL: usize = 256;
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Keeps `fleet` current until `shutdown`: publishes this instance's miners, reads the
/// others', writes kick orders and carries out this instance's. etcd errors are logged (at
/// most every 10 s per task) and retried; it returns only at shutdown.
pub async fn run(fleet: Arc<ClusterFleet>, shutdown: CancellationToken) {
    let kicks = match fleet.kicks_rx.lock() {
        Ok(mut k) => k.take(),
        Err(p) => p.into_inner().take(),
    };
    tokio::join!(
        publisher(&fleet, &shutdown),
        refresher(&fleet, &shutdown),
        order_sender(&fleet, kicks, &shutdown),
        order_executor(&fleet, &shutdown),
    );
}

fn ticker(every: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Waits for `tick`, then runs `step` (not polled before the tick); `None` when `shutdown`
/// comes first, the step dropped if it was under way. The loop of every task here.
async fn after_tick<F: Future>(
    tick: &mut tokio::time::Interval,
    shutdown: &CancellationToken,
    step: F,
) -> Option<F::Output> {
    tokio::select! {
        _ = shutdown.cancelled() => return None,
        _ = tick.tick() => {}
    }
    tokio::select! {
        _ = shutdown.cancelled() => None,
        r = step => Some(r),
    }
}

#[derive(Default)]
struct Publisher {
    /// The lease the last write went under (0: none yet).
    lease: LeaseId,
    at: Option<Instant>,
    marks: HashMap<u64, Mark>,
    /// A write is owed (the last one failed or was held back by the interval).
    dirty: bool,
    truncating: bool,
    warn: Throttle,
}

async fn publisher(f: &ClusterFleet, shutdown: &CancellationToken) {
    let mut st = Publisher::default();
    let mut tick = ticker(PUBLISH_TICK);
    while after_tick(&mut tick, shutdown, publish_once(f, &mut st))
        .await
        .is_some()
    {}
}

async fn publish_once(f: &ClusterFleet, st: &mut Publisher) {
    let lease = f.node.lease();
    if lease == 0 {
        st.lease = 0;
        return;
    }
    let now = Instant::now();
    let cur: Vec<WireMiner> = f
        .local
        .miner_reports()
        .iter()
        .map(WireMiner::from_report)
        .collect();
    if lease == st.lease {
        if !st.dirty && !changed(&st.marks, &cur) {
            return;
        }
        if st
            .at
            .is_some_and(|at| now.duration_since(at) < PUBLISH_MIN_INTERVAL)
        {
            return;
        }
    }
    let marks = marks_of(&cur);
    let enc = encode(
        cur,
        crate::time::unix_ms(),
        MAX_PUBLISH_BYTES,
        MAX_PUBLISHED,
    );
    if enc.included < enc.total {
        f.counters.truncated.fetch_add(1, Relaxed);
        if !st.truncating {
            tracing::warn!(
                connected = enc.total,
                published = enc.included,
                bytes = enc.bytes.len(),
                "cluster: too many miners for one inventory value; publishing the first by worker name"
            );
        }
    }
    st.truncating = enc.included < enc.total;
    st.at = Some(now);
    st.lease = lease;
    match f
        .node
        .etcd
        .put(&f.node.keys().my_miners(), enc.bytes, lease)
        .await
    {
        Ok(()) => {
            f.counters.published.fetch_add(1, Relaxed);
            st.marks = marks;
            st.dirty = false;
        }
        Err(e) => {
            st.dirty = true;
            if let Some(held) = st.warn.ready() {
                tracing::warn!(error = %e, held, "cluster: cannot publish this instance's miners");
            }
        }
    }
}

async fn refresher(f: &ClusterFleet, shutdown: &CancellationToken) {
    let mut warn = Throttle::default();
    let mut bad = Throttle::default();
    let mut tick = ticker(REFRESH_EVERY);
    while let Some(r) = after_tick(&mut tick, shutdown, refresh_once(f, &mut bad)).await {
        if let Err(e) = r {
            if let Some(held) = warn.ready() {
                tracing::warn!(error = %e, held, "cluster: cannot read the other instances' miners");
            }
        }
    }
}

async fn refresh_once(f: &ClusterFleet, bad: &mut Throttle) -> Result<(), EtcdError> {
    let keys = f.node.keys();
    let prefix = keys.miners();
    let listed = f.node.etcd.get_prefix_keys(&prefix).await?;
    let names: Vec<(String, i64)> = listed
        .iter()
        .filter_map(|e| {
            Keys::name_under(&prefix, &e.key)
                .filter(|n| *n != keys.instance())
                .map(|n| (n.to_owned(), e.mod_revision))
        })
        .collect();
    let current = f.view();
    let unchanged = names.len() == current.instances.len()
        && names
            .iter()
            .all(|(n, r)| current.instances.get(n).is_some_and(|i| i.revision == *r));
    if unchanged {
        return Ok(());
    }
    let mut next = BTreeMap::new();
    let mut room = MAX_REMOTE_TOTAL;
    for (name, revision) in names {
        let old = current.instances.get(&name);
        let inst = match old.filter(|o| o.revision == revision) {
            Some(o) => o.clone(),
            None => {
                let Some(entry) = f.node.etcd.get(&format!("{prefix}{name}")).await? else {
                    continue; // gone since the listing
                };
                let now_ms = crate::time::unix_ms();
                let decoded = match decode(&entry.value, now_ms) {
                    Ok(d) => d,
                    Err(e) => {
                        if let Some(held) = bad.ready() {
                            tracing::warn!(instance = %name, error = %e, held, "cluster: unreadable inventory skipped");
                        }
                        // Remember the revision, so the same bad value is not read again.
                        Decoded::default()
                    }
                };
                let over = decoded.miners.len().saturating_sub(room);
                let skipped = decoded.skipped + over;
                if skipped > 0 {
                    f.counters.skipped.fetch_add(skipped as u64, Relaxed);
                    if let Some(held) = bad.ready() {
                        tracing::warn!(instance = %name, skipped, held, "cluster: inventory entries skipped");
                    }
                }
                Arc::new(build_instance(
                    &name,
                    entry.mod_revision,
                    decoded,
                    old.map(|o| &**o),
                    Instant::now(),
                    now_ms,
                    room,
                ))
            }
        };
        room = room.saturating_sub(inst.entries.len());
        next.insert(name, inst);
    }
    let (view, collisions) = assemble(next);
    if collisions > 0 {
        f.counters.collisions.fetch_add(collisions as u64, Relaxed);
    }
    f.set_view(view);
    Ok(())
}

async fn order_sender(
    f: &ClusterFleet,
    kicks: Option<mpsc::Receiver<Kick>>,
    shutdown: &CancellationToken,
) {
    let Some(mut kicks) = kicks else {
        // `run` twice: the first one sends.
        shutdown.cancelled().await;
        return;
    };
    let mut warn = Throttle::default();
    loop {
        let kick = tokio::select! {
            _ = shutdown.cancelled() => return,
            k = kicks.recv() => match k {
                Some(k) => k,
                None => return shutdown.cancelled().await,
            },
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = send_order(f, kick, &mut warn) => {}
        }
    }
}

async fn send_order(f: &ClusterFleet, kick: Kick, warn: &mut Throttle) {
    let lease = f.node.lease();
    let now_ms = crate::time::unix_ms();
    let order = Order {
        conn: kick.conn,
        at_unix_ms: now_ms,
    };
    let Ok(value) = serde_json::to_vec(&order) else {
        return;
    };
    let seq = f.order_seq.fetch_add(1, Relaxed);
    let key = format!(
        "{}{}-{now_ms}-{seq}",
        f.node.keys().orders(&kick.instance),
        f.node.keys().instance()
    );
    let result = if lease == 0 {
        Ok(false)
    } else {
        f.node
            .etcd
            .fenced(
                lease,
                vec![Write::Put {
                    key,
                    value,
                    leased: true,
                }],
            )
            .await
    };
    match result {
        Ok(true) => {
            f.counters.orders_sent.fetch_add(1, Relaxed);
        }
        Ok(false) => {
            f.counters.orders_refused.fetch_add(1, Relaxed);
            if let Some(held) = warn.ready() {
                tracing::warn!(instance = %kick.instance, conn = kick.conn, held, "cluster: kick refused: this instance does not lead");
            }
        }
        Err(e) => {
            f.counters.orders_refused.fetch_add(1, Relaxed);
            if let Some(held) = warn.ready() {
                tracing::warn!(instance = %kick.instance, conn = kick.conn, error = %e, held, "cluster: kick order not written");
            }
        }
    }
}

async fn order_executor(f: &ClusterFleet, shutdown: &CancellationToken) {
    let mut warn = Throttle::default();
    let mut tick = ticker(ORDERS_EVERY);
    while let Some(r) = after_tick(&mut tick, shutdown, execute_orders(f)).await {
        if let Err(e) = r {
            if let Some(held) = warn.ready() {
                tracing::warn!(error = %e, held, "cluster: cannot read this instance's orders");
            }
        }
    }
}

async fn execute_orders(f: &ClusterFleet) -> Result<(), EtcdError> {
    let prefix = f.node.keys().orders(f.node.keys().instance());
    let orders = f.node.etcd.get_prefix(&prefix).await?;
    for entry in orders.into_iter().take(MAX_ORDERS_PER_POLL) {
        match order_action(&entry.value, crate::time::unix_ms()) {
            OrderAction::Kick(conn) => {
                let kicked = f.local.kick(conn);
                f.counters.orders_executed.fetch_add(1, Relaxed);
                tracing::info!(conn, kicked, "cluster: kick ordered by the leader");
            }
            OrderAction::Drop(why) => {
                f.counters.orders_dropped.fetch_add(1, Relaxed);
                tracing::debug!(key = %entry.key, why, "cluster: order dropped");
            }
        }
        f.node.etcd.delete(&entry.key).await?;
    }
    Ok(())
}

/// Logs at most once per [`WARN_EVERY`], saying how many were held back.
#[derive(Default)]
pub(super) struct Throttle {
    pub(super) next: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// `Some(held back since the last one)` when a warning may be logged now.
    pub(super) fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.next.is_some_and(|n| now < n) {
            self.held += 1;
            return None;
        }
        self.next = Some(now + WARN_EVERY);
        Some(std::mem::take(&mut self.held))
    }
}
