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
}
