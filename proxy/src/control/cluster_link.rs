//! What the control plane needs of a cluster (`crate::cluster` implements it; control never
//! names that module): forwarding a request to the power leader, and the cluster's status.

use std::future::Future;
use std::pin::Pin;

use super::admin::protocol::{Request, Response};

/// A boxed future (object-safe trait methods).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The control plane's way to the rest of the site.
pub trait ClusterLink: Send + Sync {
    /// Sends `request` (received from `caller` on this instance) to the power leader and
    /// returns its answer; `None` when this instance leads (answer it here). When no leader
    /// can be reached the answer is an error that says so: nothing was changed.
    fn forward<'a>(
        &'a self,
        request: &'a Request,
        caller: &'a str,
    ) -> BoxFuture<'a, Option<Response>>;

    /// `ctl cluster`: instances, the leader, lease age, etcd health.
    fn status(&self) -> BoxFuture<'_, serde_json::Value>;

    /// The cluster's figures for the metrics endpoint, read without waiting on etcd.
    fn gauges(&self) -> ClusterGauges {
        ClusterGauges::default()
    }
}

/// What the metrics endpoint shows of a cluster (`hashshift_cluster_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClusterGauges {
    /// Whether this instance leads now (and its fence is open).
    pub leader: bool,
    /// etcd writes this instance sent (puts, deletes, transactions, lease grants).
    pub etcd_writes: u64,
    /// Instances present in etcd (their records under live leases), as last read.
    pub instances: u64,
    /// How long this instance's lease is surely alive (its fence; 0 when lost).
    pub lease_remaining_secs: f64,
}
