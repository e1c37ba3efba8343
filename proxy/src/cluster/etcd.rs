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

/// One configured endpoint, its client made at first use (with etcd's authentication the
/// client logs in as it connects, which needs the member up).
struct Member {
    url: String,
    client: tokio::sync::OnceCell<Client>,
}

/// A connection to the site's etcd cluster.
///
/// One client per endpoint, not one balanced over all of them: a balanced channel kept a dead
/// member in its rotation, so one call in three failed while etcd itself still had its
/// majority (and a leader lost its lease over it). Calls stick to the member that last
/// answered and move on to the next one on a transport error, an `Unavailable` answer (a
/// member cut off from its quorum says so, with `require_leader`) or a stall, all within the
/// call's one timeout.
#[derive(Clone)]
pub struct Etcd {
    members: Arc<[Member]>,
    current: Arc<std::sync::atomic::AtomicUsize>,
    options: ConnectOptions,
    keys: Keys,
    timeout: Duration,
    writes: Arc<AtomicU64>,
    endpoints: Vec<String>,
}

impl Etcd {
    /// Prepares the clients (they connect at first use: a down etcd is an error at the first
    /// call, not here, so an instance starts and serves miners while etcd is away).
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
        let members: Vec<Member> = config
            .etcd
            .iter()
            .map(|url| Member {
                url: url.clone(),
                client: tokio::sync::OnceCell::new(),
            })
            .collect();
        Ok(Etcd {
            members: members.into(),
            current: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            options,
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

    /// Runs `op` on the member that last answered, moving on to the next on a failure that
    /// another member may not share, until one answers or the call's timeout runs out.
    async fn call<T, F, Fut>(&self, op: F) -> Result<T, EtcdError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.members.len().max(1);
        let deadline = tokio::time::Instant::now() + self.timeout;
        // Each member gets a fair share of the timeout, so one that stalls leaves time for
        // the others (a refused connection fails at once and costs nothing).
        let share = self.timeout / u32::try_from(n).unwrap_or(1);
        let first = self.current.load(Relaxed);
        let mut last = EtcdError::Timeout(self.timeout);
        for k in 0..n {
            let i = (first + k) % n;
            let Some(member) = self.members.get(i) else {
                break;
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let attempt = async {
                let client = member
                    .client
                    .get_or_try_init(|| {
                        Client::connect([member.url.as_str()], Some(self.options.clone()))
                    })
                    .await?
                    .clone();
                op(client).await
            };
            // The last member tried gets whatever time is left.
            let bound = if k + 1 == n { left } else { left.min(share) };
            match tokio::time::timeout(bound, attempt).await {
                Ok(Ok(v)) => {
                    self.current.store(i, Relaxed);
                    return Ok(v);
                }
                Ok(Err(e)) if another_member_may_answer(&e) => last = EtcdError::Client(e),
                Ok(Err(e)) => return Err(EtcdError::Client(e)),
                Err(_) => last = EtcdError::Timeout(self.timeout),
            }
        }
        Err(last)
    }

    /// A new lease of `ttl`; returns its id and the TTL etcd granted.
    pub async fn grant(&self, ttl: Duration) -> Result<(LeaseId, Duration), EtcdError> {
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
        let r = self
            .call(|c| async move { c.lease_client().grant(secs, None).await })
            .await?;
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
        let reply = self
            .call(|c| async move {
                let (mut keeper, mut stream) = c.lease_client().keep_alive(lease).await?;
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await?;
        Ok(reply.filter(|r| r.ttl() > 0).map(|r| {
            (
                sent,
                Duration::from_secs(u64::try_from(r.ttl()).unwrap_or(0)),
            )
        }))
    }

    /// Gives `lease` up (its keys go at once). Best effort.
    pub async fn revoke(&self, lease: LeaseId) {
        let revoked = self
            .call(|c| async move { c.lease_client().revoke(lease).await })
            .await;
        if revoked.is_ok() {
            self.writes.fetch_add(1, Relaxed);
        }
    }

    /// Puts `value` at `key`, attached to `lease` (0: none). Unfenced: for an instance's own
    /// records (presence, inventory, requests).
    pub async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<(), EtcdError> {
        let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        self.call(|c| {
            let (value, options) = (value.clone(), options.clone());
            async move { c.kv_client().put(key, value, options).await }
        })
        .await?;
        self.writes.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Deletes `key` (unfenced: an instance's own records).
    pub async fn delete(&self, key: &str) -> Result<(), EtcdError> {
        self.call(|c| async move { c.kv_client().delete(key, None).await })
            .await?;
        self.writes.fetch_add(1, Relaxed);
        Ok(())
    }

    /// The value at `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, EtcdError> {
        let r = self
            .call(|c| async move { c.kv_client().get(key, None).await })
            .await?;
        r.kvs().first().map(entry).transpose()
    }

    /// Every key under `prefix` (at most [`MAX_KEYS`]), in key order.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Vec<Entry>, EtcdError> {
        let r = self
            .call(|c| async move {
                let options = GetOptions::new().with_prefix().with_limit(MAX_KEYS);
                c.kv_client().get(prefix, Some(options)).await
            })
            .await?;
        r.kvs().iter().map(entry).collect()
    }

    /// Every key under `prefix` (at most [`MAX_KEYS`]) with its revision and lease but no
    /// value: a cheap poll, after which only the keys that changed are read.
    pub async fn get_prefix_keys(&self, prefix: &str) -> Result<Vec<Entry>, EtcdError> {
        let r = self
            .call(|c| async move {
                let options = GetOptions::new()
                    .with_prefix()
                    .with_keys_only()
                    .with_limit(MAX_KEYS);
                c.kv_client().get(prefix, Some(options)).await
            })
            .await?;
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
        self.txn(txn).await
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
        self.txn(txn).await
    }

    /// Runs `txn`; returns whether its condition held (and its writes were applied).
    async fn txn(&self, txn: Txn) -> Result<bool, EtcdError> {
        let r = self
            .call(|c| {
                let txn = txn.clone();
                async move { c.kv_client().txn(txn).await }
            })
            .await?;
        self.writes.fetch_add(1, Relaxed);
        Ok(r.succeeded())
    }

    /// Whether etcd answers, and its version and database size (`ctl cluster`).
    pub async fn health(&self) -> Result<(String, i64), EtcdError> {
        let s = self
            .call(|c| async move { c.maintenance_client().status().await })
            .await?;
        Ok((s.version().to_owned(), s.db_size()))
    }
}

/// Whether another member may answer where this one failed: it could not be reached, it is
/// cut off from its quorum or shutting down (`Unavailable`), or it ran out of time.
fn another_member_may_answer(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        // gRPC status codes (the client does not re-export tonic's `Code`): Unknown (2),
        // DeadlineExceeded (4), Unavailable (14).
        etcd_client::Error::GRpcStatus(s) => matches!(s.code() as i32, 2 | 4 | 14),
        _ => false,
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
