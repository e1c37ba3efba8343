//! d. An independent SV1 pool side: SV1 and SV2 miners → hashshift, whose SV1 upstream is
//! SRI's `translator_sv2` (an SV1 server we did not write) in front of SRI's `pool_sv2`, fed
//! by our template provider; our test pool is the backup.
//!
//! ```text
//! SV1 miner ─┐            ┌─ SV1 → translator_sv2 → SV2 → pool_sv2 ← TP   (priority 0)
//!            ├─ hashshift ┤
//! SV2 miner ─┘            └─ SV1 → test pool                             (priority 1)
//! ```
//!
//! What counts is what pool_sv2 itself counted (its monitoring API), not its log: every share
//! the proxy saw accepted upstream is counted there, from both miners, none rejected. Killing
//! the translator moves both miners to the test pool on their open connections
//! (`mining.set_extranonce`, `SetExtranoncePrefix`), whose own hashing accepts their next
//! shares; restarting it on the same port brings them back to pool_sv2.
//!
//! The miners here mine one share at a time in the test's task (no background miners): the
//! order of events is the test's, and a share's difficulty is the one in force when its job
//! arrived, as firmware does it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hashshift_protocol::sv1::{Notify, ServerNotification};
use hashshift_proxy::config::Config;
use hashshift_proxy::proxy::Proxy;
use hashshift_tools::testpool::{TestPool, TestPoolConfig};

use super::harness::{self, Harness, connect_when_listening, free_port, until};
use super::monitor::Snapshot;
use super::pool::{POOL_SIGNATURE, SriPool};
use super::support::failover::subscribed_miner;
use super::support::miner::{Miner, Share};
use super::support::sv2_miner::{
    MiningJob, OpenedChannel, REQUIRES_STANDARD_JOBS, Received, Sv2Miner,
};
use super::support::template_provider::{TemplateProvider, TpConfig};
use super::translator::Translator;

/// The translator's `downstream_extranonce2_size`: the extranonce2 its SV1 downstream (the
/// proxy) may roll. The proxy keeps 2 bytes of it per miner
/// (`aggregation.proxy_extranonce2_bytes`) and needs 2 more left for each miner
/// (`MIN_MINER_EXTRANONCE2`), so 4 is the least it accepts; 8 leaves its miners 6 bytes.
const TRANSLATOR_EXTRANONCE2: usize = 8;

/// The backup test pool's difficulty: ~4,300 hashes a share.
const BACKUP_DIFF: f64 = 1e-6;

/// The backup's name is in its coinbase: `/hashshift-testpool:<name>/`.
const BACKUP: &str = "b";
const BACKUP_TAG: &str = "/hashshift-testpool:b/";

/// The proxy's vardiff never goes below this, far above both pools' difficulties: each
/// miner's difficulty is then its pool's (the proxy caps it there), so every share goes up
/// and the pool's count is the miners' count.
const VARDIFF_MIN: f64 = 1e-4;

/// The worker names of the two miners (the pools see the proxy's user, `farm`: see
/// `worker_identity` in [`Chain::start`]).
const SV1_WORKER: &str = "farm.sv1";
const SV2_WORKER: &str = "farm.sv2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sv1_upstream_mines_through_sri_translator_into_pool_sv2_and_fails_over() -> Result<()> {
    harness::run("chain", &["pool_sv2", "translator_sv2"], chain_flow).await
}

/// The SRI side and the proxy in front of it, with the backup pool.
struct Chain {
    tp: TemplateProvider,
    pool: SriPool,
    backup: TestPool,
    proxy: Proxy,
    /// The proxy's authority public key, for the SV2 miner.
    authority: [u8; 32],
    /// How the translator was started (its SV1 port is fixed there) and its index in
    /// `Harness::procs`.
    translator_setup: Translator,
    translator: usize,
}

impl Chain {
    async fn start(h: &mut Harness, tp: TpConfig) -> Result<Chain> {
        let tp = TemplateProvider::start(tp).await?;
        let pool = SriPool::start(h, &tp).await?;
        let sv1_port = free_port()?;
        let translator_setup = Translator {
            sv1_port,
            upstream: pool.addr,
            authority: pool.authority.to_string(),
            extranonce2_size: TRANSLATOR_EXTRANONCE2,
            vardiff: false,
        };
        let translator = translator_setup.spawn(h, "translator_sv2")?;
        // Listening means the translator is up with pool_sv2 (it binds after its upstream
        // connection). The probe connection is an SV1 peer that says nothing and leaves.
        let sv1: SocketAddr = ([127, 0, 0, 1], sv1_port).into();
        drop(connect_when_listening(h, sv1, Duration::from_secs(30)).await?);

        let backup = TestPool::start(TestPoolConfig {
            difficulty: BACKUP_DIFF,
            name: BACKUP.into(),
            ..TestPoolConfig::default()
        })
        .await?;
        let key_path = h.dir.join("authority.key");
        let authority = hashshift_proxy::keyfile::generate(&key_path)?;
        let text = format!(
            "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n\
             [[downstream]]\nprotocol = \"sv2\"\nlisten = \"127.0.0.1:0\"\nauthority_key_file = {:?}\n\
             [[upstream]]\nurl = \"stratum+tcp://{sv1}\"\nuser = \"farm\"\npriority = 0\n\
             [[upstream]]\nurl = \"{}\"\nuser = \"farm\"\npriority = 1\n\
             [aggregation]\nworker_identity = \"fixed\"\n\
             [vardiff]\ninitial = 1e-3\nmin = {VARDIFF_MIN:e}\nmax = 1.0\nshares_per_minute = 600.0\n\
             [failover]\nfailback_after_secs = 0.5\nrebalance_every_secs = 1.0\n\
             no_work_timeout_secs = 60.0\npool_min_backoff_secs = 0.2\npool_max_backoff_secs = 1.0\n",
            key_path.display().to_string(),
            backup.url(),
        );
        // Every share goes up as `farm`, authorized when the session opens: the translator
        // remembers one user per SV1 connection (each `mining.authorize` replaces the last),
        // so with `passthrough` a miner's share after another miner's authorize is refused
        // as from an unauthorized worker.
        let proxy = Proxy::start(&Config::from_toml(&text)?).await?;
        until(
            h,
            "both pools up, the chain in use",
            Duration::from_secs(20),
            || {
                let pools = proxy.pools();
                pools.iter().all(|p| p.up) && pools[0].active
            },
        )
        .await?;
        Ok(Chain {
            tp,
            pool,
            backup,
            proxy,
            authority: authority.to_bytes(),
            translator_setup,
            translator,
        })
    }

    fn sv2_addr(&self) -> SocketAddr {
        self.proxy.listen_addrs()[1]
    }

    /// Shares the proxy saw accepted by the chain (over all its sessions with the translator).
    fn chain_accepted(&self) -> u64 {
        self.proxy.pools()[0].shares.accepted
    }

    /// Waits until pool_sv2 counted `n` accepted shares on channels `counted` selects. If it
    /// does not, an SRI process that died is named as the reason before the timeout.
    async fn pool_counts(
        &self,
        h: &mut Harness,
        what: &str,
        n: u64,
        counted: impl Fn(&Snapshot) -> u64,
    ) -> Result<Snapshot> {
        let r = self
            .pool
            .monitor
            .until(
                &format!("pool_sv2 counting {n} for {what}"),
                Duration::from_secs(20),
                |s| counted(s) >= n,
            )
            .await;
        if r.is_err() {
            h.ensure_alive()?;
        }
        r
    }

    async fn stop(self) {
        self.proxy.shutdown(Duration::from_secs(2)).await;
        self.backup.shutdown().await;
        self.tp.shutdown().await;
    }
}

async fn chain_flow(h: &mut Harness) -> Result<()> {
    let started = Instant::now();
    let chain = Chain::start(h, TpConfig::default()).await?;
    let up = started.elapsed();

    // The SV2 miner alone first: whatever pool_sv2 counts now came from it.
    let mut sv2 = Sv2Rig::open(chain.sv2_addr(), chain.authority, SV2_WORKER).await?;
    for _ in 0..3 {
        sv2.accepted("through the chain").await?;
    }
    let by_sv2 = chain.chain_accepted();
    ensure!(
        by_sv2 == 3,
        "each SV2 share went up: {:?}",
        chain.proxy.pools()[0]
    );
    let snap = chain
        .pool_counts(h, "the SV2 miner's shares", by_sv2, Snapshot::accepted)
        .await?;
    let after_sv2 = snap.accepted();

    // Then the SV1 miner, on pool_sv2's work: pool_sv2's count grows by its shares. One more
    // SV2 share after them: the two miners' shares interleave on the one translator session.
    let mut sv1 = Sv1Rig::start(&chain.proxy, SV1_WORKER).await?;
    ensure!(
        contains(&sv1.job.coinb1, POOL_SIGNATURE.as_bytes()),
        "the SV1 miner's job is pool_sv2's, through the translator"
    );
    let translator_difficulty = sv1.difficulty;
    for _ in 0..3 {
        sv1.accepted("through the chain").await?;
    }
    let by_both = chain.chain_accepted();
    ensure!(by_both == by_sv2 + 3, "each SV1 share went up too");
    let snap = chain
        .pool_counts(h, "the SV1 miner's shares", by_both, Snapshot::accepted)
        .await?;
    let after_sv1 = snap.accepted();
    sv2.accepted("after the SV1 miner's").await?;
    let before_kill = chain.chain_accepted();
    ensure!(before_kill == by_both + 1, "the last SV2 share went up");
    let snap = chain
        .pool_counts(h, "every share", before_kill, Snapshot::accepted)
        .await?;
    eprintln!(
        "[d] chain up {:.1} s after start (TP, pool_sv2, translator_sv2, hashshift); SV1 \
         difficulty from the translator {translator_difficulty:e}; pool_sv2 counted {after_sv2} \
         after 3 SV2 shares, {after_sv1} after 3 SV1 shares, {} after 1 more SV2 share; proxy \
         chain counters {:?}; pool_sv2 {snap:?}",
        up.as_secs_f64(),
        snap.accepted(),
        chain.proxy.pools()[0].shares,
    );
    ensure!(
        after_sv2 >= 3 && after_sv1 >= after_sv2 + 3 && snap.accepted() > after_sv1,
        "pool_sv2 counted each miner's shares"
    );
    ensure!(snap.rejected() == 0, "pool_sv2 rejected none: {snap:?}");
    ensure!(
        snap.channels
            .iter()
            .all(|c| c.user_identity.starts_with("sri-tproxy")),
        "every channel at pool_sv2 is the translator's: {snap:?}"
    );
    let old_channels: BTreeSet<(usize, u32)> = snap
        .channels
        .iter()
        .map(|c| (c.client_id, c.channel_id))
        .collect();

    // Failover: the translator dies; both miners move to the backup on their connections.
    let killed = Instant::now();
    h.kill(chain.translator).await?;
    sv1.until_moved(1).await?;
    ensure!(
        contains(&sv1.job.coinb2, BACKUP_TAG.as_bytes()),
        "the SV1 miner's job after the move is the backup's"
    );
    sv1.accepted("on the backup").await?;
    let first_on_backup = killed.elapsed();
    sv2.until_moved(1).await?;
    sv2.accepted("on the backup").await?;
    let failover = killed.elapsed();
    let backup = chain.backup.stats();
    ensure!(
        backup.accepted == 2 && backup.rejected_total() == 0,
        "the backup's own hashing accepted both miners' shares: {backup:?}"
    );
    let on_chain = chain.chain_accepted();
    ensure!(
        on_chain == before_kill,
        "nothing more accepted by a dead chain"
    );

    // Failback: the translator comes back on the same port; the miners return to pool_sv2.
    let restarted = Instant::now();
    chain
        .translator_setup
        .spawn(h, "translator_sv2-restarted")?;
    until(h, "the chain in use again", Duration::from_secs(30), || {
        chain.proxy.pools()[0].active
    })
    .await?;
    let active_again = restarted.elapsed();
    sv1.until_moved(2).await?;
    ensure!(
        contains(&sv1.job.coinb1, POOL_SIGNATURE.as_bytes()),
        "the SV1 miner's job after failback is pool_sv2's"
    );
    sv1.accepted("after failback").await?;
    sv2.until_moved(2).await?;
    sv2.accepted("after failback").await?;
    let new_channels = |s: &Snapshot| -> u64 {
        s.channels
            .iter()
            .filter(|c| !old_channels.contains(&(c.client_id, c.channel_id)))
            .map(|c| u64::from(c.shares_accepted))
            .sum()
    };
    chain
        .pool_counts(h, "a share after failback", 1, new_channels)
        .await?;
    let failback = restarted.elapsed();
    let after = chain.chain_accepted() - on_chain;
    ensure!(after == 2, "both shares after failback went up");
    let snap = chain
        .pool_counts(h, "every share after failback", after, new_channels)
        .await?;
    let up = chain.proxy.pools()[0].shares;
    eprintln!(
        "[d] failover: kill → first share accepted by the backup {:.2} s, both miners' {:.2} s; \
         failback: restart → chain active at the proxy {:.2} s, shares counted by pool_sv2 \
         {:.2} s (its monitoring refreshes every second); backup {:?}; proxy chain counters \
         {up:?}; the SV1 miner saw {} set_extranonce, the SV2 miner {} SetExtranoncePrefix, \
         neither was disconnected; pool_sv2 now {snap:?}",
        first_on_backup.as_secs_f64(),
        failover.as_secs_f64(),
        active_again.as_secs_f64(),
        failback.as_secs_f64(),
        chain.backup.stats().workers,
        sv1.moves,
        sv2.moves,
    );
    ensure!(
        snap.rejected() == 0 && up.rejected == 0,
        "no rejection after failback: {snap:?} {up:?}"
    );
    chain.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_found_behind_hashshift_goes_through_the_translator_to_the_template_provider()
-> Result<()> {
    harness::run(
        "chain-block",
        &["pool_sv2", "translator_sv2"],
        chain_block_flow,
    )
    .await
}

/// Regtest nBits (0x207fffff: about every other hash is a block): the SV1 miner's first share
/// is a block, which pool_sv2 must find valid by its own hashing, after the proxy and the
/// translator rebuilt it, to send `SubmitSolution` to our TP.
async fn chain_block_flow(h: &mut Harness) -> Result<()> {
    let chain = Chain::start(
        h,
        TpConfig {
            nbits: 0x207f_ffff,
            template_every: None,
            ..TpConfig::default()
        },
    )
    .await?;
    let mut sv1 = Sv1Rig::start(&chain.proxy, SV1_WORKER).await?;
    ensure!(
        sv1.job.nbits == 0x207f_ffff,
        "the TP's nBits: {:08x}",
        sv1.job.nbits
    );
    let mined = Instant::now();
    let share = sv1.accepted("that is a block").await?;
    until(
        h,
        "SubmitSolution at the TP",
        Duration::from_secs(10),
        || !chain.tp.stats().solutions.is_empty(),
    )
    .await?;
    let at_tp = mined.elapsed();
    let snap = chain
        .pool_counts(h, "the block", 1, Snapshot::blocks)
        .await?;
    let solutions = chain.tp.stats().solutions;
    let up = chain.proxy.pools()[0].shares;
    eprintln!(
        "[d2] block: SubmitSolution at the TP {:.0} ms after the miner's submit; proxy chain \
         counters {up:?}; pool_sv2 {snap:?}",
        at_tp.as_secs_f64() * 1e3,
    );
    ensure!(solutions.len() == 1, "one solution: {solutions:?}");
    let solution = &solutions[0];
    ensure!(
        (solution.header_nonce, solution.header_timestamp) == (share.nonce, share.ntime),
        "the solution is the miner's share: {solution:?}"
    );
    ensure!(
        contains(&solution.coinbase_tx, POOL_SIGNATURE.as_bytes()),
        "the solution's coinbase is pool_sv2's"
    );
    let extranonce = [sv1.m.extranonce1.as_slice(), &share.extranonce2].concat();
    ensure!(
        contains(&solution.coinbase_tx, &extranonce),
        "and carries the miner's extranonce1 (the translator's, then the proxy's slot) and \
         extranonce2 {}: {}",
        hex::encode(&extranonce),
        hex::encode(&solution.coinbase_tx)
    );
    ensure!(
        snap.blocks() == 1 && snap.accepted() == 1 && snap.rejected() == 0,
        "pool_sv2 counted one share, a block: {snap:?}"
    );
    ensure!(
        up.blocks == 1 && up.accepted == 1,
        "the proxy counted the block as pool_sv2 did: {up:?}"
    );
    chain.stop().await;
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// An SV1 miner that subscribed to extranonce changes, mining one share at a time.
struct Sv1Rig {
    m: Miner,
    worker: String,
    job: Notify,
    /// The difficulty in force when `job` arrived: its shares are judged at it.
    job_difficulty: f64,
    /// The newest `mining.set_difficulty`.
    difficulty: f64,
    seed: u64,
    /// `mining.set_extranonce` received (moves to another pool connection).
    moves: usize,
    /// Jobs received, and how many when the last move came.
    jobs: usize,
    jobs_at_move: usize,
}

impl Sv1Rig {
    /// On the proxy's SV1 listener (its first).
    async fn start(proxy: &Proxy, worker: &str) -> Result<Sv1Rig> {
        let (m, job) = subscribed_miner(proxy, worker).await?;
        let difficulty = m.difficulty;
        let mut rig = Sv1Rig {
            m,
            worker: worker.into(),
            job,
            job_difficulty: difficulty,
            difficulty,
            // Extranonce2 starts with these bytes (little-endian): easy to find in a coinbase.
            seed: 0x5eed_0000,
            moves: 0,
            jobs: 1,
            jobs_at_move: 0,
        };
        rig.apply_queued()?;
        Ok(rig)
    }

    fn apply(&mut self, note: ServerNotification) -> Result<()> {
        match note {
            ServerNotification::SetDifficulty(d) => self.difficulty = d,
            ServerNotification::Notify(n) => {
                self.job = n;
                self.job_difficulty = self.difficulty;
                self.jobs += 1;
            }
            ServerNotification::SetExtranonce(e) => {
                self.m.extranonce1 = e.extranonce1;
                self.m.extranonce2_size = e.extranonce2_size;
                self.moves += 1;
                self.jobs_at_move = self.jobs;
            }
            ServerNotification::Reconnect(r) => bail!("{}: told to reconnect: {r:?}", self.worker),
            _ => {}
        }
        Ok(())
    }

    fn apply_queued(&mut self) -> Result<()> {
        while let Some(note) = self.m.notes.pop_front() {
            self.apply(note)?;
        }
        Ok(())
    }

    /// Mines a share on the newest job and returns it with the proxy's verdict.
    async fn mine_one(&mut self) -> Result<(Share, Result<(), String>)> {
        self.apply_queued()?;
        self.m.difficulty = self.job_difficulty;
        let seed = self.seed;
        self.seed += 1;
        let share = tokio::task::block_in_place(|| self.m.find_share(&self.job, seed, None));
        let r = self.m.call(share.request(&self.worker)).await?;
        self.apply_queued()?;
        let verdict = match r.error {
            Some(e) => Err(format!("{} {}", e.code, e.message)),
            None if r.as_bool()? => Ok(()),
            None => Err("false".into()),
        };
        Ok((share, verdict))
    }

    /// Mines a share and fails unless the proxy accepts it (`when` says where, for the error).
    async fn accepted(&mut self, when: &str) -> Result<Share> {
        match self.mine_one().await? {
            (share, Ok(())) => Ok(share),
            (_, Err(e)) => bail!("{}: share {when} refused: {e}", self.worker),
        }
    }

    /// Reads until the `moves`-th extranonce change and a job after it have arrived.
    async fn until_moved(&mut self, moves: usize) -> Result<()> {
        self.apply_queued()?;
        while self.moves < moves || self.jobs == self.jobs_at_move {
            let note = self
                .m
                .next_note()
                .await
                .with_context(|| format!("{} waiting for move {moves}", self.worker))?;
            self.apply(note)?;
        }
        Ok(())
    }
}

/// An SV2 miner (SRI's crates) with one standard channel, mining one share at a time.
struct Sv2Rig {
    m: Sv2Miner,
    ch: OpenedChannel,
    /// The active job, and the target in force when it arrived.
    job: MiningJob,
    job_target: [u8; 32],
    /// A future job waiting for its `SetNewPrevHash`.
    future: Option<MiningJob>,
    seed: u32,
    /// `SetExtranoncePrefix` received (moves to another pool connection).
    moves: usize,
    jobs: usize,
    jobs_at_move: usize,
}

impl Sv2Rig {
    async fn open(addr: SocketAddr, authority: [u8; 32], user: &str) -> Result<Sv2Rig> {
        let mut m = Sv2Miner::connect(addr, authority).await?;
        match m.setup(REQUIRES_STANDARD_JOBS).await? {
            Received::SetupSuccess { .. } => {}
            other => bail!("SetupConnection: {other:?}"),
        }
        let ch = m.open_channel(1, user, false).await?;
        let job = m.first_job(ch.id).await?;
        Ok(Sv2Rig {
            m,
            job_target: ch.target,
            ch,
            job,
            future: None,
            seed: 0,
            moves: 0,
            jobs: 1,
            jobs_at_move: 0,
        })
    }

    fn apply(&mut self, r: Received) -> Result<()> {
        let id = self.ch.id;
        match r {
            Received::SetTarget { channel_id, target } if channel_id == id => {
                self.ch.target = target;
            }
            Received::SetExtranoncePrefix { channel_id, prefix } if channel_id == id => {
                self.ch.prefix = prefix;
                self.moves += 1;
                self.jobs_at_move = self.jobs;
            }
            Received::NewMiningJob {
                channel_id,
                job_id,
                min_ntime,
                version,
                merkle_root,
            } if channel_id == id => {
                let job = MiningJob {
                    job_id,
                    version,
                    merkle_root: Some(merkle_root),
                    ..self.job.clone()
                };
                match min_ntime {
                    Some(ntime) => self.activate(MiningJob { ntime, ..job }),
                    None => self.future = Some(job),
                }
            }
            Received::SetNewPrevHash {
                channel_id,
                job_id,
                prev_hash,
                min_ntime,
                nbits,
            } if channel_id == id => {
                let future = self
                    .future
                    .take()
                    .filter(|j| j.job_id == job_id)
                    .context("SetNewPrevHash for a future job never sent")?;
                self.activate(MiningJob {
                    prev_hash,
                    ntime: min_ntime,
                    nbits,
                    ..future
                });
            }
            Received::CloseChannel { reason, .. } => bail!("channel closed: {reason}"),
            _ => {}
        }
        Ok(())
    }

    fn activate(&mut self, job: MiningJob) {
        self.job = job;
        self.job_target = self.ch.target;
        self.jobs += 1;
    }

    async fn step(&mut self) -> Result<()> {
        let r = self
            .m
            .recv()
            .await?
            .context("the proxy closed the SV2 miner")?;
        self.apply(r)
    }

    /// Mines a share on the active job and returns the proxy's verdict.
    async fn mine_one(&mut self) -> Result<Result<(), String>> {
        while let Some(r) = self.m.inbox.pop_front() {
            self.apply(r)?;
        }
        let seed = self.seed;
        self.seed += 1;
        // A share meeting both the job's target and any newer one is valid either way.
        let target = harder(self.job_target, self.ch.target);
        let job = &self.job;
        let share = tokio::task::block_in_place(|| {
            job.find(&[], Vec::new(), job.version, &target, seed, false)
        });
        let (id, seq) = (self.ch.id, self.m.submit(self.ch.id, &share, false).await?);
        loop {
            match self
                .m
                .recv()
                .await?
                .context("closed waiting for a verdict")?
            {
                Received::SubmitSuccess {
                    channel_id,
                    last_sequence_number,
                    ..
                } if channel_id == id && last_sequence_number >= seq => return Ok(Ok(())),
                Received::SubmitError {
                    channel_id,
                    sequence_number,
                    code,
                } if channel_id == id && sequence_number == seq => return Ok(Err(code)),
                other => self.apply(other)?,
            }
        }
    }

    /// Mines a share and fails unless the proxy accepts it (`when` says where, for the error).
    async fn accepted(&mut self, when: &str) -> Result<()> {
        match self.mine_one().await? {
            Ok(()) => Ok(()),
            Err(e) => bail!("SV2 miner: share {when} refused: {e}"),
        }
    }

    /// Reads until the `moves`-th `SetExtranoncePrefix` and a job after it have arrived.
    async fn until_moved(&mut self, moves: usize) -> Result<()> {
        while let Some(r) = self.m.inbox.pop_front() {
            self.apply(r)?;
        }
        while self.moves < moves || self.jobs == self.jobs_at_move {
            self.step().await?;
        }
        Ok(())
    }
}

/// The harder (smaller) of two little-endian 256-bit targets.
fn harder(a: [u8; 32], b: [u8; 32]) -> [u8; 32] {
    if a.iter().rev().lt(b.iter().rev()) {
        a
    } else {
        b
    }
}
