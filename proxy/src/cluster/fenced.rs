//! Power control's ports, fenced: on a cluster leader, every firmware, PDU and GPU scheduler
//! call, reads included, first checks that this instance still leads with a live lease
//! ([`Node::is_leader`]: the role, and the [`super::fence::Fence`] deadline). A deposed or
//! frozen leader's controller may still be winding down; whatever it tries fails here with a
//! clear error and nothing reaches the hardware.
//!
//! The check is the last step before the call leaves: what can still slip through is a call
//! that passed the check just before the lease ran out, which the fence's margin covers
//! (the deadline is taken `margin` before etcd's own expiry).

use std::net::SocketAddr;
use std::sync::Arc;

use super::node::Node;
use crate::config::RigGroup;
use crate::control::arbiter::ControlPath;
use crate::control::power::ports::{
    BoxFuture, FirmwareStatus, GpuControl, GpuLoad, OutletControl, OutletFactory, OutletReading,
    PortError, RigControl,
};
use crate::control::power::rigs::ControlFactory;
use crate::error::{Retry, Side};

/// Calls refused by the fence so far (metrics, tests).
#[derive(Debug, Default)]
pub struct Refusals(std::sync::atomic::AtomicU64);

impl Refusals {
    /// How many.
    pub fn count(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What every fenced port holds.
#[derive(Clone)]
pub struct Gate {
    node: Arc<Node>,
    refused: Arc<Refusals>,
}

impl Gate {
    /// A gate on `node`'s leadership.
    pub fn new(node: Arc<Node>) -> Self {
        Gate {
            node,
            refused: Arc::new(Refusals::default()),
        }
    }

    /// Calls refused so far.
    pub fn refusals(&self) -> Arc<Refusals> {
        self.refused.clone()
    }

    fn pass(&self, side: Side) -> Result<(), PortError> {
        if self.node.is_leader() {
            return Ok(());
        }
        self.refused
            .0
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(PortError::new(
            side,
            Retry::No,
            "not the power leader (lease lost or not renewed in time): call not sent",
        ))
    }

    /// The rigs' controls, fenced.
    pub fn rigs(&self, inner: ControlFactory) -> ControlFactory {
        let gate = self.clone();
        Arc::new(move |group: &RigGroup, addr: SocketAddr| {
            inner(group, addr).map(|rig| {
                Arc::new(FencedRig {
                    gate: gate.clone(),
                    inner: rig,
                }) as Arc<dyn RigControl>
            })
        })
    }

    /// The PDU outlets, fenced.
    pub fn outlets(&self, inner: OutletFactory) -> OutletFactory {
        let gate = self.clone();
        Arc::new(move |pdu: &str, outlet: u16| {
            inner(pdu, outlet).map(|o| {
                Arc::new(FencedOutlet {
                    gate: gate.clone(),
                    inner: o,
                }) as Arc<dyn OutletControl>
            })
        })
    }

    /// The GPU scheduler, fenced.
    pub fn gpu(&self, inner: Arc<dyn GpuControl>) -> Arc<dyn GpuControl> {
        Arc::new(FencedGpu {
            gate: self.clone(),
            inner,
        })
    }
}

struct FencedRig {
    gate: Gate,
    inner: Arc<dyn RigControl>,
}

impl RigControl for FencedRig {
    fn sleep(&self) -> BoxFuture<'_, Result<(), PortError>> {
        Box::pin(async move {
            self.gate.pass(Side::Firmware)?;
            self.inner.sleep().await
        })
    }

    fn wake(&self) -> BoxFuture<'_, Result<(), PortError>> {
        Box::pin(async move {
            self.gate.pass(Side::Firmware)?;
            self.inner.wake().await
        })
    }

    fn status(&self) -> BoxFuture<'_, Result<FirmwareStatus, PortError>> {
        Box::pin(async move {
            self.gate.pass(Side::Firmware)?;
            self.inner.status().await
        })
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn path(&self) -> ControlPath {
        self.inner.path()
    }

    fn cut(&self) -> BoxFuture<'_, Result<(), PortError>> {
        Box::pin(async move {
            self.gate.pass(Side::Firmware)?;
            self.inner.cut().await
        })
    }
}

struct FencedOutlet {
    gate: Gate,
    inner: Arc<dyn OutletControl>,
}

impl OutletControl for FencedOutlet {
    fn set(&self, on: bool) -> BoxFuture<'_, Result<(), PortError>> {
        Box::pin(async move {
            self.gate.pass(Side::Firmware)?;
            self.inner.set(on).await
        })
    }

    fn read(&self) -> BoxFuture<'_, Result<OutletReading, PortError>> {
        Box::pin(async move {
            self.gate.pass(Side::Firmware)?;
            self.inner.read().await
        })
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

struct FencedGpu {
    gate: Gate,
    inner: Arc<dyn GpuControl>,
}

impl GpuControl for FencedGpu {
    fn set_budget_kw(&self, kw: f64) -> BoxFuture<'_, Result<(), PortError>> {
        Box::pin(async move {
            self.gate.pass(Side::Scheduler)?;
            self.inner.set_budget_kw(kw).await
        })
    }

    fn shed_kw(&self, kw: f64, reason: &str) -> BoxFuture<'_, Result<(), PortError>> {
        let reason = reason.to_owned();
        Box::pin(async move {
            self.gate.pass(Side::Scheduler)?;
            self.inner.shed_kw(kw, &reason).await
        })
    }

    fn demand(&self) -> BoxFuture<'_, Result<Option<GpuLoad>, PortError>> {
        Box::pin(async move {
            self.gate.pass(Side::Scheduler)?;
            self.inner.demand().await
        })
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn call_bound(&self) -> std::time::Duration {
        self.inner.call_bound()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::cluster::{LeaderRecord, Role};

    /// Counts the sleeps that reached it.
    struct Rig(Arc<AtomicU32>);

    impl RigControl for Rig {
        fn sleep(&self) -> BoxFuture<'_, Result<(), PortError>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        }
        fn wake(&self) -> BoxFuture<'_, Result<(), PortError>> {
            Box::pin(async { Ok(()) })
        }
        fn status(&self) -> BoxFuture<'_, Result<FirmwareStatus, PortError>> {
            Box::pin(async { Err(PortError::new(Side::Firmware, Retry::Yes, "n/a")) })
        }
        fn describe(&self) -> String {
            "test rig".into()
        }
    }

    #[tokio::test]
    async fn nothing_reaches_a_rig_unless_this_instance_leads_within_its_lease() {
        // A lazy client: no etcd is needed to check the gate.
        let config = crate::config::Cluster {
            timeout_ms: 200,
            ..crate::config::Cluster::plain("http://127.0.0.1:1", "s", "a", 2)
        };
        let etcd = crate::cluster::etcd::Etcd::connect(&config).await.unwrap();
        let node = Node::new(
            etcd,
            config,
            crate::cluster::fence::Fence::closed(Duration::from_millis(100)),
        );
        let gate = Gate::new(node.clone());
        let reached = Arc::new(AtomicU32::new(0));
        let inner = reached.clone();
        let factory: ControlFactory =
            Arc::new(move |_, _| Some(Arc::new(Rig(inner.clone())) as Arc<dyn RigControl>));
        let group: RigGroup =
            toml::from_str("name = \"g\"\nworkers = [\"*\"]\nrated_w = 3000").unwrap();
        let rig = gate.rigs(factory)(&group, "127.0.0.1:4028".parse().unwrap()).unwrap();

        // Not leading: refused, nothing sent.
        assert!(rig.sleep().await.is_err());
        // Leading, lease fresh: sent.
        node.set_role(Role::Leader {
            record: LeaderRecord {
                instance: "a".into(),
                lease: 1,
                since_unix_ms: 0,
            },
        });
        node.fence.renewed(Instant::now(), Duration::from_secs(2));
        rig.sleep().await.unwrap();
        // Leading by role, but the lease ran out unrenewed (a frozen process): refused.
        node.fence.close();
        let e = rig.sleep().await.unwrap_err();
        assert!(e.message().contains("not the power leader"), "{e}");
        assert_eq!(reached.load(Ordering::SeqCst), 1);
        assert_eq!(gate.refusals().count(), 2);
    }
}
