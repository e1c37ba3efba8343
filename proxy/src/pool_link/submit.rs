//! A share on its way from a miner session to a pool connection, and the pool's verdict on
//! it. Each share carries its own oneshot: the session that sent it waits for exactly its
//! answer, whatever order the pool answers in.

use std::sync::Arc;

use hashshift_protocol::sv1::StratumError;
use tokio::sync::oneshot;

use super::work::UpstreamJob;

/// A share going to the pool.
#[derive(Debug)]
pub struct UpstreamSubmit {
    /// Worker name it is submitted under (passthrough mode; ignored in fixed mode).
    pub worker: Arc<str>,
    /// The job it solves.
    pub job: Arc<UpstreamJob>,
    /// The pool-sized extranonce2 (the proxy's prefix, padding, then the miner's part).
    pub extranonce2: Vec<u8>,
    /// Header time.
    pub ntime: u32,
    /// Nonce the miner found.
    pub nonce: u32,
    /// Rolled version bits, if version rolling is in use.
    pub version_bits: Option<u32>,
    /// The pool's difficulty for this share (for accounting).
    pub difficulty: f64,
    /// Whether it meets the network target (counted as a block once the pool accepts it).
    pub block: bool,
    /// Where the verdict goes.
    pub reply: oneshot::Sender<SubmitOutcome>,
}

/// The pool's verdict on a share.
#[derive(Clone, Debug, PartialEq)]
pub enum SubmitOutcome {
    /// Accepted by the pool.
    Accepted,
    /// Rejected by the pool, with its error.
    Rejected(StratumError),
    /// Never answered: the connection went away or the pool timed out.
    Lost(&'static str),
}
