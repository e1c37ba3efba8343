//! A private etcd for the cluster module's tests: one member on free loopback ports, its data
//! in a temporary directory, killed and removed on drop. Without an `etcd` binary the tests
//! skip, printing why, unless `HASHSHIFT_ETCD=1` (CI) says etcd must be there: then they fail.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::etcd::Etcd;
use super::fence::Fence;
use super::node::Node;
use crate::config::Cluster;

/// A running private etcd.
pub struct TestEtcd {
    child: Child,
    dir: std::path::PathBuf,
    /// Its client URL.
    pub url: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl TestEtcd {
    /// Starts one, or `None` (skip) when `etcd` is missing and CI does not require it.
    pub fn start() -> Option<TestEtcd> {
        let found = Command::new("etcd")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var("HASHSHIFT_ETCD").as_deref() != Ok("1"),
                "HASHSHIFT_ETCD=1 but no etcd binary (apt install etcd-server)"
            );
            eprintln!(
                "skipped: no etcd binary (apt install etcd-server; CI sets HASHSHIFT_ETCD=1)"
            );
            return None;
        }
        let (client, peer) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("hashshift-etcd-{:x}", rand::random::<u64>()));
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(&dir)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        let etcd = TestEtcd { child, dir, url };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not listen within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(etcd)
    }

    /// A `[cluster]` section for `instance` on this etcd.
    pub fn cluster(&self, site: &str, instance: &str, ttl_secs: u64) -> Cluster {
        Cluster::plain(&self.url, site, instance, ttl_secs)
    }

    /// A node for `instance`, connected, with no lease yet.
    pub async fn node(&self, site: &str, instance: &str, ttl_secs: u64) -> Arc<Node> {
        let config = self.cluster(site, instance, ttl_secs);
        let etcd = Etcd::connect(&config).await.expect("connects");
        let margin = super::leader::fence_margin(Duration::from_secs(ttl_secs));
        Node::new(etcd, config, Fence::closed(margin))
    }

    /// Makes `node` the leader the way the election does: a lease, the leader key on it, the
    /// fence open, the role set. Returns the lease.
    pub async fn lead(node: &Node) -> i64 {
        let sent = Instant::now();
        let (lease, ttl) = node
            .etcd
            .grant(Duration::from_secs(node.config.lease_ttl_secs))
            .await
            .expect("a lease");
        node.set_lease(lease);
        let record = super::LeaderRecord {
            instance: node.keys().instance().to_owned(),
            lease,
            since_unix_ms: crate::time::unix_ms(),
        };
        let won = node
            .etcd
            .campaign(lease, serde_json::to_vec(&record).unwrap())
            .await
            .expect("campaign");
        assert!(won, "no one else leads");
        node.fence.renewed(sent, ttl);
        node.set_role(super::Role::Leader { record });
        lease
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
