//! The few etcd operations the cluster needs, over the `etcd-client` crate: every call bounded
//! by the configured timeout, every value read capped, every write counted (metrics, and the
//! "etcd writes per drain" figure of docs/cluster.md).
//!
//! Fenced writes are transactions whose guard is "the leader key is still attached to my
//! lease": once the lease expired (etcd then deleted the key) or another instance leads, etcd
//! applies nothing, so a deposed leader can never overwrite the plan its successor writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp,
};

use super::keys::Keys;
use crate::config::Cluster;

/// Largest value we accept from etcd (etcd's own default request limit is 1.5 MiB; a site
/// that raised it for a very large plan still gets a bound).
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;
/// Most keys one prefix read returns (instances, their inventories, queued requests).
pub const MAX_KEYS: i64 = 4096;

/// An etcd lease id.
pub type LeaseId = i64;

/// What went wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// A config file (TLS) or secret could not be read.
    #[error("{0}")]
    Setup(String),
    /// etcd answered with an error, or could not be reached.
    #[error("etcd: {0}")]
    Client(#[from] etcd_client::Error),
    /// No answer within the configured timeout.
    #[error("etcd: no answer within {0:?}")]
    Timeout(Duration),
    /// A value larger than [`MAX_VALUE_BYTES`].
    #[error("etcd: value of {key} is {len} bytes (at most {MAX_VALUE_BYTES})")]
    TooLarge {
        /// Its key.
        key: String,
        /// Its length.
        len: usize,
    },
}

/// One write of a fenced transaction.
#[derive(Debug, Clone)]
pub enum Write {
    /// Put `value` at `key`, attached to the leader's lease when `leased`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Attach it to the leader's lease (it disappears with the leader).
        leased: bool,
    },
    /// Delete `key`.
    Delete {
        /// The key.
        key: String,
    },
}

/// A read key: its value, its revision and the lease it is attached to (0 = none).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// When it was last modified (etcd revision).
    pub mod_revision: i64,
    /// Its lease (0 = none).
    pub lease: LeaseId,
}

/// A connection to the site's etcd cluster.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    keys: Keys,
    timeout: Duration,
    writes: Arc<AtomicU64>,
    endpoints: Vec<String>,
}

impl Etcd {
    /// Connects (lazily: a down etcd is an error at the first call, not here, so an instance
    /// starts and serves miners while etcd is away).
    pub async fn connect(config: &Cluster) -> Result<Etcd, EtcdError> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let mut options = ConnectOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(timeout)
            .with_keep_alive(Duration::from_secs(2), timeout)
            .with_keep_alive_while_idle(true)
            // Refuse answers from a member cut off from its quorum: a stale read of the
            // leader key must not look like "no leader".
            .with_require_leader(true);
        if let (Some(user), Some(var)) = (&config.username, &config.password_env) {
            let password = std::env::var(var).map_err(|_| {
                EtcdError::Setup(format!(
                    "[cluster] password_env: environment variable {var} is not set"
                ))
            })?;
            options = options.with_user(user.clone(), password);
        }
        if config.tls() {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| {
                    EtcdError::Setup(format!("[cluster]: cannot read {}: {e}", p.display()))
                })
            };
            let mut tls = TlsOptions::new();
            if let Some(ca) = &config.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(tls);
        }
        let connect = Client::connect(&config.etcd, Some(options));
        let client = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| EtcdError::Timeout(timeout))??;
        Ok(Etcd {
            client,
            keys: Keys::new(&config.site, &config.instance),
            timeout,
            writes: Arc::new(AtomicU64::new(0)),
            endpoints: config.etcd.clone(),
        })
    }

    /// The site's keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Writes sent so far (puts, deletes and transactions, fenced or not; each counts once).
    pub fn writes(&self) -> u64 {
        self.writes.load(Relaxed)
    }

    async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, EtcdError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(EtcdError::Timeout(self.timeout)),
        }
    }

    /// A new lease of `ttl`; returns its id and the TTL etcd granted.
    pub async fn grant(&self, ttl: Duration) -> Result<(LeaseId, Duration), EtcdError> {
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
        let mut lease = self.client.lease_client();
        let r = self.bounded(lease.grant(secs, None)).await?;
        self.writes.fetch_add(1, Relaxed);
        Ok((
            r.id(),
            Duration::from_secs(u64::try_from(r.ttl()).unwrap_or(0)),
        ))
    }

    /// Renews `lease` once. Returns when it was sent and the TTL etcd now gives it, `None`
    /// if the lease is gone (expired or revoked).
    pub async fn keep_alive(
        &self,
        lease: LeaseId,
    ) -> Result<Option<(Instant, Duration)>, EtcdError> {
        let sent = Instant::now();
        let mut client = self.client.lease_client();
        let once = async move {
            let (mut keeper, mut stream) = client.keep_alive(lease).await?;
            keeper.keep_alive().await?;
            stream.message().await
        };
        let reply = self.bounded(once).await?;
        Ok(reply.filter(|r| r.ttl() > 0).map(|r| {
            (
                sent,
                Duration::from_secs(u64::try_from(r.ttl()).unwrap_or(0)),
            )
        }))
    }

    /// Gives `lease` up (its keys go at once). Best effort.
    pub async fn revoke(&self, lease: LeaseId) {
        let mut client = self.client.lease_client();
        if self.bounded(client.revoke(lease)).await.is_ok() {
            self.writes.fetch_add(1, Relaxed);
        }
    }

    /// Puts `value` at `key`, attached to `lease` (0: none). Unfenced: for an instance's own
    /// records (presence, inventory, requests).
    pub async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<(), EtcdError> {
        let mut kv = self.client.kv_client();
        let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        self.bounded(kv.put(key, value, options)).await?;
        self.writes.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Deletes `key` (unfenced: an instance's own records).
    pub async fn delete(&self, key: &str) -> Result<(), EtcdError> {
        let mut kv = self.client.kv_client();
        self.bounded(kv.delete(key, None)).await?;
        self.writes.fetch_add(1, Relaxed);
        Ok(())
    }

    /// The value at `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, EtcdError> {
        let mut kv = self.client.kv_client();
        let r = self.bounded(kv.get(key, None)).await?;
        r.kvs().first().map(entry).transpose()
    }

    /// Every key under `prefix` (at most [`MAX_KEYS`]), in key order.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Vec<Entry>, EtcdError> {
        let mut kv = self.client.kv_client();
        let options = GetOptions::new().with_prefix().with_limit(MAX_KEYS);
        let r = self.bounded(kv.get(prefix, Some(options))).await?;
        r.kvs().iter().map(entry).collect()
    }

    /// Every key under `prefix` (at most [`MAX_KEYS`]) with its revision and lease but no
    /// value: a cheap poll, after which only the keys that changed are read.
    pub async fn get_prefix_keys(&self, prefix: &str) -> Result<Vec<Entry>, EtcdError> {
        let mut kv = self.client.kv_client();
        let options = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_limit(MAX_KEYS);
        let r = self.bounded(kv.get(prefix, Some(options))).await?;
        r.kvs().iter().map(entry).collect()
    }

    /// Becomes the leader if no one is: puts `value` at the leader key under `lease` only if
    /// the key does not exist. Returns whether it won.
    pub async fn campaign(&self, lease: LeaseId, value: Vec<u8>) -> Result<bool, EtcdError> {
        self.create(&self.keys.leader(), value, lease).await
    }

    /// Puts `value` at `key` under `lease` only if the key does not exist. Returns whether
    /// it did.
    pub async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> Result<bool, EtcdError> {
        let key = key.to_owned();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let mut kv = self.client.kv_client();
        let r = self.bounded(kv.txn(txn)).await?;
        self.writes.fetch_add(1, Relaxed);
        Ok(r.succeeded())
    }

    /// Applies `writes` only if the leader key is attached to `lease`, in one transaction.
    /// Returns whether etcd applied them (false: this instance no longer leads).
    pub async fn fenced(&self, lease: LeaseId, writes: Vec<Write>) -> Result<bool, EtcdError> {
        let ops: Vec<TxnOp> = writes
            .into_iter()
            .map(|w| match w {
                Write::Put { key, value, leased } => TxnOp::put(
                    key,
                    value,
                    leased.then(|| PutOptions::new().with_lease(lease)),
                ),
                Write::Delete { key } => TxnOp::delete(key, None),
            })
            .collect();
        let txn = Txn::new()
            .when([Compare::lease(self.keys.leader(), CompareOp::Equal, lease)])
            .and_then(ops);
        let mut kv = self.client.kv_client();
        let r = self.bounded(kv.txn(txn)).await?;
        self.writes.fetch_add(1, Relaxed);
        Ok(r.succeeded())
    }

    /// Whether etcd answers, and its version and database size (`ctl cluster`).
    pub async fn health(&self) -> Result<(String, i64), EtcdError> {
        let mut m = self.client.maintenance_client();
        let s = self.bounded(m.status()).await?;
        Ok((s.version().to_owned(), s.db_size()))
    }
}

fn entry(kv: &etcd_client::KeyValue) -> Result<Entry, EtcdError> {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    if kv.value().len() > MAX_VALUE_BYTES {
        return Err(EtcdError::TooLarge {
            key,
            len: kv.value().len(),
        });
    }
    Ok(Entry {
        key,
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    })
}
