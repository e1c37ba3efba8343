//! (stub until the inventory lands: the local fleet only)
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::node::Node;
use crate::pool_link::report::{Fleet, MinerReport, PoolSnapshot};

/// Stub.
pub struct ClusterFleet {
    local: Arc<dyn Fleet>,
}

impl ClusterFleet {
    /// Stub.
    pub fn new(_node: Arc<Node>, local: Arc<dyn Fleet>) -> Arc<Self> {
        Arc::new(ClusterFleet { local })
    }
}

impl Fleet for ClusterFleet {
    fn miner_reports(&self) -> Vec<MinerReport> {
        self.local.miner_reports()
    }
    fn pools(&self) -> Vec<PoolSnapshot> {
        self.local.pools()
    }
    fn pool_urls(&self) -> Vec<String> {
        self.local.pool_urls()
    }
    fn kick(&self, id: crate::pool_link::ConnId) -> bool {
        self.local.kick(id)
    }
}

/// Stub.
pub async fn run(_fleet: Arc<ClusterFleet>, shutdown: CancellationToken) {
    shutdown.cancelled().await
}
