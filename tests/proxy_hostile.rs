//! The proxy against hostile miners, end to end over 127.0.0.1: while honest miners submit
//! real shares through the proxy to an embedded test pool (which checks each one itself),
//! hostile connections send oversized lines, junk, floods of invalid shares, stop reading,
//! or arrive by the thousand. Each test asserts that the hostile connection gets exactly the
//! treatment it deserves (error replies, then a close) and that the honest miners keep
//! getting their shares accepted upstream, counted at the pool.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use hashshift_protocol::sv1::Id;
use hashshift_proxy::proxy::Proxy;
use hashshift_tools::testpool::{TestPool, reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use support::honest::{Honest, accepted_counts, all_get_accepted, stop_all};
use support::miner::{Miner, STEP, Share, within};
use support::site::{self, Limits};
use support::wire::{
    alive, blast, closed, padded_request, responses, submits, unknown_job, wait_until,
};

/// Honest miners next to the hostile ones in every test.
const HONEST: usize = 2;
/// The proxy drops a miner after this many consecutive errors (`src/downstream/sv1.rs`).
const ERROR_LIMIT: usize = 500;

// SV1 error codes.
const OTHER: i64 = 20;
const JOB_NOT_FOUND: i64 = 21;
const LOW_DIFFICULTY: i64 = 23;
const UNAUTHORIZED: i64 = 24;
const NOT_SUBSCRIBED: i64 = 25;

/// A pool, the proxy in front of it and honest miners already mining.
struct Site {
    pool: TestPool,
    proxy: Proxy,
    addr: SocketAddr,
    honest: Vec<Honest>,
    /// Honest accepted counts when the attack began.
    before: Vec<u64>,
}

impl Site {
    async fn start(name: &str, limits: Limits) -> Result<Site> {
        let pool = site::pool(name).await?;
        let proxy = site::proxy(&pool, &limits).await?;
        let addr = proxy.listen_addrs()[0];
        let honest = Honest::start_many(addr, "honest", HONEST).await?;
        // Shares flow before the attack starts.
        let zero = vec![0; HONEST];
        all_get_accepted(&honest, &zero, 1).await?;
        let before = accepted_counts(&honest);
        Ok(Site {
            pool,
            proxy,
            addr,
            honest,
            before,
        })
    }

    fn registered(&self, miner: SocketAddr) -> bool {
        self.proxy
            .manager()
            .miners()
            .iter()
            .any(|m| m.peer == miner)
    }

    /// Honest shares keep being accepted after the attack; the pool credited each honest
    /// worker exactly the shares the proxy answered `true`, plus `other_accepted` shares of
    /// other workers, and rejected nothing (or only stale shares, when `stale_ok`).
    async fn finish(self, other_accepted: u64, stale_ok: bool) -> Result<()> {
        all_get_accepted(&self.honest, &self.before, 2)
            .await
            .context("honest shares after the attack")?;
        let reports = stop_all(self.honest).await?;
        let stats = self.pool.stats();
        let mut honest_total = 0;
        for r in &reports {
            let upstream = stats.workers.get(&r.worker).map_or(0, |w| w.accepted);
            assert_eq!(
                upstream, r.accepted,
                "{}: every share answered true was accepted by the pool",
                r.worker
            );
            honest_total += r.accepted;
        }
        assert_eq!(stats.accepted, honest_total + other_accepted, "{stats:?}");
        if stale_ok {
            assert_eq!(
                stats.rejected_total(),
                stats.rejected_for(reason::STALE),
                "{stats:?}"
            );
        } else {
            assert_eq!(
                stats.rejected_total(),
                0,
                "no invalid share got past the proxy: {stats:?}"
            );
        }
        self.proxy.shutdown(Duration::from_secs(2)).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_line_closes_only_that_connection() -> Result<()> {
    const MAX: usize = 1024;
    let site = Site::start(
        "oversized",
        Limits {
            max_line_bytes: MAX,
            ..Limits::default()
        },
    )
    .await?;

    // A line of exactly the limit is read (and answered: its params are wrong); one byte
    // more closes the connection.
    let mut edge = Miner::connect(site.addr).await?;
    edge.stream.write_all(&padded_request(7, MAX)).await?;
    assert_eq!(responses(&mut edge, 1).await?, [(Id::from(7), Some(OTHER))]);
    alive(&mut edge).await?;
    let _ = edge.stream.write_all(&padded_request(8, MAX + 1)).await;
    assert_eq!(closed(&mut edge, "a line one byte too long").await?, 0);

    // No newline at all: the proxy does not wait for one.
    let mut endless = Miner::connect(site.addr).await?;
    let _ = endless.stream.write_all(&[b'x'; MAX + 1]).await;
    assert_eq!(closed(&mut endless, "an endless line").await?, 0);

    // A miner at work sends 64 KiB in one line: dropped, and its place released.
    let mut big = Miner::connect(site.addr).await?;
    big.handshake("big", None).await?;
    let local = big.stream.local_addr()?;
    assert!(site.registered(local));
    let _ = within(
        "writing 64 KiB",
        big.stream.write_all(&padded_request(9, 64 * 1024)),
    )
    .await;
    closed(&mut big, "a 64 KiB line").await?;
    wait_until("the big-line miner released", || !site.registered(local)).await?;

    site.finish(0, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_gets_error_replies_until_the_consecutive_error_limit() -> Result<()> {
    let site = Site::start("junk", Limits::default()).await?;
    let mut m = Miner::connect(site.addr).await?;
    m.handshake("junk", None).await?;

    // Lines with no id to echo get no reply; well-formed requests with wrong params get
    // error 20 with their id. Every one of them counts as an error.
    let junk: [&[u8]; 9] = [
        b"hello world\n",
        b"\xff\xfe\xfd not utf-8\n",
        b"[1,2,3]\n",
        b"{\"id\":{\"x\":1},\"method\":\"mining.subscribe\",\"params\":[]}\n",
        b"{\"id\":5}\n",
        b"{\"id\":6,\"method\":\"mining.submit\",\"params\":[1,2]}\n",
        b"{\"id\":7,\"method\":\"mining.authorize\",\"params\":{\"user\":1}}\n",
        b"{\"id\":8,\"method\":\"mining.submit\",\"params\":[\"junk\",\"1\",\"zz\",\"00000000\",\"00000000\"]}\n",
        b"{\"id\":9,\"method\":\"mining.subscr\n",
    ];
    for line in junk {
        m.stream.write_all(line).await?;
    }
    m.stream
        .write_all(b"{\"id\":100,\"method\":\"mining.extranonce.subscribe\",\"params\":[]}\n")
        .await?;
    let got = responses(&mut m, 4).await?;
    assert_eq!(
        got,
        [
            (Id::from(6), Some(OTHER)),
            (Id::from(7), Some(OTHER)),
            (Id::from(8), Some(OTHER)),
            (Id::from(100), None),
        ],
        "error replies exactly where there is an id, and the connection is kept"
    );

    // Up to one short of the limit the connection stays; the limit-th error closes it.
    let no_id = [junk[0], junk[1], junk[2], junk[4]];
    let mut bulk = Vec::new();
    for line in no_id.iter().cycle().take(ERROR_LIMIT - 1 - junk.len()) {
        bulk.extend_from_slice(line);
    }
    m.stream.write_all(&bulk).await?;
    alive(&mut m).await?;
    let local = m.stream.local_addr()?;
    assert!(site.registered(local));
    m.stream.write_all(junk[0]).await?;
    assert_eq!(closed(&mut m, "the limit-th bad line").await?, 0);
    wait_until("the junk miner released", || !site.registered(local)).await?;

    site.finish(0, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_invalid_shares_is_rejected_then_dropped() -> Result<()> {
    const FLOOD: usize = 3000;
    let site = Site::start("flood", Limits::default()).await?;
    let mut floods = JoinSet::new();
    for i in 0..2 {
        let mut m = Miner::connect(site.addr).await?;
        let worker = format!("flood{i}");
        let (_, job) = m.handshake(&worker, None).await?;
        let good = m.find_share(&job, 1, None);
        let mut short = good.clone();
        short.extranonce2.pop();
        let mut late = good.clone();
        late.ntime = job.ntime + 3 * 3600;
        let shares = [m.bad_share(&job), unknown_job(&good), short, late];
        let codes = [LOW_DIFFICULTY, JOB_NOT_FOUND, OTHER, OTHER];
        let (bytes, ids) = submits(&mut m, &shares, &worker, FLOOD)?;
        let expected: Vec<(Id, Option<i64>)> = ids
            .into_iter()
            .zip(codes.iter().map(|code| Some(*code)).cycle())
            .collect();
        let local = m.stream.local_addr()?;
        floods.spawn(async move {
            let (got, closed) = blast(&mut m, &bytes, FLOOD).await?;
            Ok::<_, anyhow::Error>((got, closed, expected, local))
        });
    }
    while let Some(flood) = floods.join_next().await {
        let (got, closed, expected, local) = flood??;
        assert!(
            closed,
            "dropped before answering all {FLOOD} invalid shares"
        );
        // The proxy closes with unread submits in its buffer, which may reset the connection
        // before the last answers arrive; what did arrive is exact.
        assert!(
            !got.is_empty() && got.len() <= ERROR_LIMIT,
            "{} answers",
            got.len()
        );
        assert_eq!(got, expected[..got.len()], "each reject with its SV1 code");
        wait_until("the flooder released", || !site.registered(local)).await?;
    }
    site.finish(0, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_limit_counts_consecutive_rejects_but_not_stale_shares() -> Result<()> {
    let site = Site::start("limit", Limits::default()).await?;
    let mut m = Miner::connect(site.addr).await?;
    let (_, old) = m.handshake("limit", None).await?;

    // A new block: shares on the old job are stale, which says nothing bad about the miner.
    site.pool.new_job(true);
    let job = within("the new block's job", async {
        loop {
            let job = m.next_job().await?;
            if job.clean_jobs && job.job_id != old.job_id {
                return Ok::<_, anyhow::Error>(job);
            }
        }
    })
    .await??;
    let stale = m.bad_share(&old);
    let (bytes, _) = submits(&mut m, &[stale], "limit", ERROR_LIMIT + 100)?;
    m.stream.write_all(&bytes).await?;
    let got = responses(&mut m, ERROR_LIMIT + 100).await?;
    assert!(got.iter().all(|(_, code)| *code == Some(JOB_NOT_FOUND)));
    alive(&mut m).await?;

    // One short of the limit, then an accepted share starts the count again.
    let low = m.bad_share(&job);
    let low_burst = |m: &mut Miner, n| submits(m, std::slice::from_ref(&low), "limit", n);
    let (bytes, _) = low_burst(&mut m, ERROR_LIMIT - 1)?;
    m.stream.write_all(&bytes).await?;
    let got = responses(&mut m, ERROR_LIMIT - 1).await?;
    assert!(got.iter().all(|(_, code)| *code == Some(LOW_DIFFICULTY)));
    alive(&mut m).await?;
    let good = m.find_share(&job, 2, None);
    assert_eq!(m.submit(&good, "limit").await?, Ok(()));

    let (bytes, _) = low_burst(&mut m, ERROR_LIMIT - 1)?;
    m.stream.write_all(&bytes).await?;
    responses(&mut m, ERROR_LIMIT - 1).await?;
    alive(&mut m).await?;
    // The limit-th consecutive reject is answered, then the connection closes.
    let (bytes, ids) = low_burst(&mut m, 1)?;
    m.stream.write_all(&bytes).await?;
    assert_eq!(
        responses(&mut m, 1).await?,
        [(ids[0].clone(), Some(LOW_DIFFICULTY))]
    );
    assert_eq!(closed(&mut m, "the limit-th consecutive reject").await?, 0);

    site.finish(1, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejected_submit_counts_towards_the_error_limit() -> Result<()> {
    const FLOOD: usize = ERROR_LIMIT + 100;
    let site = Site::start("early", Limits::default()).await?;
    let mut failures = Vec::new();
    for (kind, code) in [
        ("not subscribed", NOT_SUBSCRIBED),
        ("unauthorized worker", UNAUTHORIZED),
        ("job id not hex", JOB_NOT_FOUND),
    ] {
        let mut m = Miner::connect(site.addr).await?;
        let (share, worker) = if kind == "not subscribed" {
            let share = Share {
                job_id: "1".into(),
                extranonce2: vec![0; 6],
                ntime: 0,
                nonce: 0,
                version_bits: None,
            };
            (share, "early")
        } else {
            let (_, job) = m.handshake("early", None).await?;
            let mut share = m.bad_share(&job);
            if kind == "job id not hex" {
                share.job_id = "not-hex".into();
                (share, "early")
            } else {
                (share, "intruder")
            }
        };
        let (bytes, _) = submits(&mut m, &[share], worker, FLOOD)?;
        let (got, closed) = blast(&mut m, &bytes, FLOOD).await?;
        assert!(got.iter().all(|(_, c)| *c == Some(code)), "{kind}: {got:?}");
        if !closed || got.len() > ERROR_LIMIT {
            failures.push(format!(
                "{kind}: {} rejects answered, connection still open",
                got.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    site.finish(0, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_that_stops_reading_is_dropped_without_stalling_others() -> Result<()> {
    let site = Site::start(
        "stuck",
        Limits {
            write_timeout_secs: 1,
            ..Limits::default()
        },
    )
    .await?;
    // A small receive buffer and a small MSS, so the proxy's writes back up after a few
    // jobs (over loopback's 64 KiB MSS, the kernel sizes the proxy's send buffer in MiB).
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_recv_buffer_size(4096)?;
    socket.set_tcp_mss(536)?;
    socket.set_nonblocking(true)?;
    let socket = TcpSocket::from_std_stream(socket.into());
    let stream = within("connect", socket.connect(site.addr)).await??;
    let mut stuck = Miner::from_stream(stream);
    stuck.handshake("stuck", None).await?;
    let local = stuck.stream.local_addr()?;

    // The pool sends a new job every millisecond; the stuck miner reads none of them.
    let stop = CancellationToken::new();
    let flood = tokio::spawn({
        let pool = site.pool.clone();
        let stop = stop.clone();
        async move {
            let mut jobs = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return jobs,
                    _ = tick.tick() => {
                        pool.new_job(false);
                        jobs += 1;
                    }
                }
            }
        }
    });
    // Bounded at 30 s rather than the usual 10: on a machine loaded by parallel builds the
    // 1 ms job flood itself runs late, and the drop (write_timeout 1 s) follows the flood.
    let dropped = tokio::time::timeout(Duration::from_secs(30), async {
        while site.registered(local) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("timed out: the stuck miner dropped"));
    stop.cancel();
    let jobs = flood.await?;
    dropped?;
    eprintln!("stuck miner dropped after {jobs} jobs");
    // Honest miners read through the whole flood and were never dropped (their task would
    // have failed); the stuck socket holds what fitted, then the end of the connection.
    for h in &site.honest {
        ensure!(
            site.proxy
                .manager()
                .miners()
                .iter()
                .any(|m| m.worker().as_deref() == Some(h.worker.as_str())),
            "{} was dropped",
            h.worker
        );
    }
    closed(&mut stuck, "the stuck miner's socket").await?;
    // Shares on jobs replaced during the flood may be stale at the pool: allowed.
    site.finish(0, true).await
}

/// What one storm connection does.
enum Storm {
    /// Connects and sends nothing.
    Idle(TcpStream),
    /// Connects and closes at once, or after half a line.
    Gone,
    /// Could not connect.
    Failed,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_storm_leaves_the_proxy_up_and_the_cap_enforced() -> Result<()> {
    const CAP: usize = 100;
    const HANDSHAKE_SECS: u64 = 6;
    // Two descriptors per connection live in this process (ours and the proxy's); leave
    // room for the other tests running alongside.
    let fd_limit = usize::try_from(rlimit::increase_nofile_limit(u64::MAX)?).unwrap_or(1024);
    // And no more than the kernel lets wait for `accept` at once: beyond that, silent
    // connections are lost in SYN-cookie limbo (they look connected; the proxy never hears
    // of them), which no server can help.
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(4096);
    let storm = (fd_limit.saturating_sub(1500) / 2).min(somaxconn).min(2000);
    ensure!(
        storm > 2 * CAP,
        "open-file limit {fd_limit} too low for a storm"
    );
    let site = Site::start(
        "storm",
        Limits {
            max_connections: CAP,
            handshake_timeout_secs: HANDSHAKE_SECS,
            ..Limits::default()
        },
    )
    .await?;

    // Half stay and say nothing, a quarter leave at once, a quarter leave mid-line.
    let mut tasks = JoinSet::new();
    for i in 0..storm {
        let addr = site.addr;
        tasks.spawn(async move {
            let Ok(Ok(mut s)) = tokio::time::timeout(STEP, TcpStream::connect(addr)).await else {
                return Storm::Failed;
            };
            match i % 4 {
                0 | 1 => Storm::Idle(s),
                2 => Storm::Gone,
                _ => {
                    let _ = s.write_all(b"{\"id\":1,\"method\":\"mining.sub").await;
                    Storm::Gone
                }
            }
        });
    }
    let (mut idle, mut failed) = (Vec::new(), 0);
    while let Some(t) = tasks.join_next().await {
        match t? {
            Storm::Idle(s) => idle.push(s),
            Storm::Gone => {}
            Storm::Failed => failed += 1,
        }
    }
    ensure!(
        idle.len() > CAP,
        "only {} idle connections made it",
        idle.len()
    );

    // Beyond the cap, connections are closed at once; the rest are kept until their
    // handshake timeout. (Connections that overflowed the kernel's accept queue look
    // connected here but reach the proxy only when the kernel retries, a second or more
    // later: so wait for the count to settle rather than sample it once.)
    let kept = idle.len();
    let open = Arc::new(AtomicUsize::new(kept));
    let mut watchers = JoinSet::new();
    for mut s in idle {
        let open = open.clone();
        watchers.spawn(async move {
            let mut byte = [0u8; 1];
            let wait = Duration::from_secs(HANDSHAKE_SECS) + STEP;
            let read = tokio::time::timeout(wait, s.read(&mut byte)).await;
            open.fetch_sub(1, Ordering::Relaxed);
            match read {
                Ok(Ok(0) | Err(_)) => Ok(()),
                Ok(Ok(_)) => bail!("the proxy wrote to a silent connection"),
                Err(_) => bail!("a silent connection outlived the handshake timeout"),
            }
        });
    }
    wait_until("connections beyond the cap closed", || {
        open.load(Ordering::Relaxed) <= CAP - HONEST
    })
    .await?;
    let settled = open.load(Ordering::Relaxed);
    eprintln!(
        "storm of {storm}: {kept} silent connections, {settled} kept under the cap of {CAP}, {failed} failed to connect"
    );
    assert!(
        settled > 0,
        "the silent connections within the cap should still be waiting for their handshake"
    );

    // Honest miners mined through it all.
    let now = accepted_counts(&site.honest);
    all_get_accepted(&site.honest, &now, 2).await?;

    // Silent connections are closed at the handshake timeout, freeing their places.
    while let Some(w) = watchers.join_next().await {
        w??;
    }
    let late = Honest::start(site.addr, "late").await?;
    late.wait_accepted(0, 2).await?;
    let late = late.stop().await?;
    wait_until("only the honest miners left", || {
        site.proxy.manager().miners().len() == HONEST
    })
    .await?;
    site.finish(late.accepted, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_names_that_are_too_long_or_carry_control_characters_are_refused() -> Result<()> {
    let site = Site::start("names", Limits::default()).await?;
    let mut m = Miner::connect(site.addr).await?;
    let sub = m
        .call(hashshift_protocol::sv1::ClientRequest::Subscribe(
            Default::default(),
        ))
        .await?;
    sub.subscribe_result()?;
    let local = m.stream.local_addr()?;
    for bad in [
        "x".repeat(256),
        "rig\nERROR forged log line".to_owned(),
        "rig\u{1b}[31m".to_owned(),
        String::new(),
    ] {
        let r = m
            .call(hashshift_protocol::sv1::ClientRequest::Authorize(
                hashshift_protocol::sv1::Authorize {
                    user: bad.clone(),
                    password: Some("x".into()),
                },
            ))
            .await?;
        assert_eq!(
            r.error.as_ref().map(|e| e.code),
            Some(UNAUTHORIZED),
            "{} bytes: {r:?}",
            bad.len()
        );
        // A refused name never becomes a miner the pool manager (or power control) sees.
        assert!(
            site.proxy
                .manager()
                .miners()
                .iter()
                .all(|x| x.peer != local || x.worker().is_none_or(|w| w != bad)),
            "{} bytes registered",
            bad.len()
        );
    }
    // The longest allowed name works on the same connection.
    let longest = "w".repeat(255);
    assert!(m.authorize(&longest).await?);
    site.finish(0, false).await
}
