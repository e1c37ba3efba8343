//! (stub until forwarding lands)
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::node::Node;
use crate::control::admin::protocol::{Request, Response};
use crate::control::cluster_link::{BoxFuture, ClusterLink};
use crate::control::plane::ControlPlane;

/// Stub.
pub struct Forwarder {
    node: Arc<Node>,
}

impl Forwarder {
    /// Stub.
    pub fn new(node: Arc<Node>) -> Arc<Self> {
        Arc::new(Forwarder { node })
    }
}

impl ClusterLink for Forwarder {
    fn forward<'a>(&'a self, _: &'a Request, _: &'a str) -> BoxFuture<'a, Option<Response>> {
        Box::pin(async move {
            (!self.node.is_leader()).then(|| Response::error("not the leader (stub)"))
        })
    }
    fn status(&self) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async move { serde_json::json!({"role": format!("{:?}", self.node.role())}) })
    }
}

/// Stub.
pub async fn serve(_node: Arc<Node>, _plane: Arc<ControlPlane>, shutdown: CancellationToken) {
    shutdown.cancelled().await
}
