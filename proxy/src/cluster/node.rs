//! One instance's membership of the site's cluster, shared by everything that talks to etcd:
//! the connection, this instance's lease, its role and the fence. [`super::leader`] keeps it
//! current; the inventory and the request forwarding read it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use tokio::sync::watch;

use super::Role;
use super::etcd::{Etcd, LeaseId};
use super::fence::Fence;
use super::keys::Keys;
use crate::config::Cluster;

/// This instance in the cluster.
pub struct Node {
    /// The etcd connection.
    pub etcd: Etcd,
    /// Open while this instance leads and its lease is surely alive.
    pub fence: Fence,
    /// The `[cluster]` section.
    pub config: Cluster,
    /// When this process joined (lease age is measured from the lease's grant).
    pub started: Instant,
    lease: AtomicI64,
    lease_granted_ms: std::sync::atomic::AtomicU64,
    role_tx: watch::Sender<Role>,
    role: watch::Receiver<Role>,
}

impl Node {
    /// A node that has not yet reached etcd.
    pub fn new(etcd: Etcd, config: Cluster, fence: Fence) -> Arc<Self> {
        let (role_tx, role) = watch::channel(Role::Starting);
        Arc::new(Node {
            etcd,
            fence,
            config,
            started: Instant::now(),
            lease: AtomicI64::new(0),
            lease_granted_ms: std::sync::atomic::AtomicU64::new(0),
            role_tx,
            role,
        })
    }

    /// The site's keys.
    pub fn keys(&self) -> &Keys {
        self.etcd.keys()
    }

    /// This instance's lease now (0: none, etcd is not reachable or it just expired).
    pub fn lease(&self) -> LeaseId {
        self.lease.load(Ordering::Acquire)
    }

    /// When the current lease was granted (Unix ms; 0: none).
    pub fn lease_granted_unix_ms(&self) -> u64 {
        self.lease_granted_ms.load(Ordering::Acquire)
    }

    /// Records a new lease (0: none).
    pub(super) fn set_lease(&self, lease: LeaseId) {
        self.lease.store(lease, Ordering::Release);
        let at = if lease == 0 {
            0
        } else {
            crate::time::unix_ms()
        };
        self.lease_granted_ms.store(at, Ordering::Release);
    }

    /// This instance's role now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// Follows role changes.
    pub fn role_watch(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Whether this instance leads now (and its fence is open).
    pub fn is_leader(&self) -> bool {
        self.role.borrow().is_leader() && self.fence.check().is_ok()
    }

    /// Sets the role (only [`super::leader`] does).
    pub(super) fn set_role(&self, role: Role) {
        self.role_tx.send_if_modified(|r| {
            if *r == role {
                false
            } else {
                *r = role;
                true
            }
        });
    }
}
