//! Where miners and pools meet: the types both sides use, and the narrow interface through
//! which a miner session asks for a place on a pool.
//!
//! Miner sessions (`downstream`) and pool connections with their manager (`upstream`) never
//! name each other; each names only this module. What crosses between them:
//!
//! | what | where |
//! |---|---|
//! | a pool's current work and jobs (latest wins, `watch`) | [`work`] |
//! | a share going up and the pool's verdict | [`submit`] |
//! | a miner's extranonce layout on a pool session | [`extranonce`] |
//! | a miner's shared record (identity, counters, pool) | [`miner`] |
//! | the manager's commands to a session (latest-wins mailbox) | [`mailbox`], [`Control`] |
//! | a miner's place: pool, connection, prefix slot | [`Assignment`], [`PoolConn`] |
//! | asking for a place and giving it back | [`Pools`] (implemented by the pool manager) |
//!
//! Invariant: nothing here opens a socket or spawns a task; it holds plain data, channels'
//! ends and the one trait, so either side can be tested with the other faked.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

pub mod extranonce;
pub mod mailbox;
pub mod miner;
pub mod report;
pub mod submit;
pub mod work;

use self::mailbox::MailboxSender;
use self::miner::MinerShared;
use self::submit::UpstreamSubmit;
use self::work::WorkState;

/// A process-wide connection id (one per miner: an SV1 connection, an SV2 channel), for
/// logs and registries.
pub type ConnId = u64;

/// Index of a pool in the configuration's `[[upstream]]` list.
pub type PoolId = usize;

/// One pool connection as a miner sees it: the work it publishes and the queue its shares
/// go up by. The pool manager keeps the rest of the connection (status, counters) to itself.
#[derive(Clone, Debug)]
pub struct PoolConn {
    /// The connection's current work; latest wins.
    pub work: watch::Receiver<Arc<WorkState>>,
    /// Shares to the pool (bounded: a full queue answers the share as lost).
    pub submit: mpsc::Sender<UpstreamSubmit>,
}

/// A miner's place: a connection and an extranonce prefix on it.
#[derive(Clone, Debug)]
pub struct Assignment {
    /// The pool.
    pub pool: PoolId,
    /// The connection the miner's work comes from and its shares go to.
    pub conn: PoolConn,
    /// The prefix slot on that connection.
    pub slot: u32,
    /// Bytes of extranonce2 the proxy keeps.
    pub prefix_bytes: usize,
}

/// Messages from the pool manager to a miner session.
#[derive(Debug)]
pub enum Control {
    /// Move to another connection (failover, failback, rebalancing).
    Reassign(Assignment),
    /// Disconnect (operator action).
    Kick,
}

/// What a miner session asks of the pools: a place, and giving it back. The pool manager
/// implements it; sessions hold an `Arc<dyn Pools>` and never see the manager itself.
///
/// Both calls are short and never block on I/O (the manager answers from memory under one
/// short lock), so sessions may call them from their task directly.
pub trait Pools: Send + Sync {
    /// Finds a place for miner `id`; `None` when no pool is usable right now. Later moves
    /// arrive as [`Control::Reassign`] through `control`.
    fn assign(
        &self,
        id: ConnId,
        control: MailboxSender,
        shared: Arc<MinerShared>,
    ) -> Option<Assignment>;

    /// Forgets miner `id` and frees its prefix (nothing happens if it has none).
    fn release(&self, id: ConnId);
}

/// A [`Pools`] with no usable pool: every request for a place is answered `None` (what the
/// manager answers while every pool is down), for tests of sessions waiting for a pool.
#[cfg(test)]
pub struct NoPools;

#[cfg(test)]
impl Pools for NoPools {
    fn assign(&self, _: ConnId, _: MailboxSender, _: Arc<MinerShared>) -> Option<Assignment> {
        None
    }

    fn release(&self, _: ConnId) {}
}

/// A shared handle is a `Pools` too, so a session can pass its `&Arc<dyn Pools>` wherever a
/// `&dyn Pools` is asked for (the compiler does not deref before it unsizes).
impl<P: Pools + ?Sized> Pools for Arc<P> {
    fn assign(
        &self,
        id: ConnId,
        control: MailboxSender,
        shared: Arc<MinerShared>,
    ) -> Option<Assignment> {
        (**self).assign(id, control, shared)
    }

    fn release(&self, id: ConnId) {
        (**self).release(id);
    }
}
