use super::*;
use serde_json::json;
use std::net::SocketAddr;

const DIR: &str = "../../../../tools/fixtures/firmware/antminer/";
const S19PROPLUS_STATS: &str =
    include_str!("../../../../tools/fixtures/firmware/antminer/s19proplus-stats.json");
const S19J_SUMMARY: &str =
    include_str!("../../../../tools/fixtures/firmware/antminer/s19j-summary.json");
const S19_CONF_SLEEP: &str =
    include_str!("../../../../tools/fixtures/firmware/antminer/s19-get_miner_conf-sleep.json");
const X19_CONF: &str =
    include_str!("../../../../tools/fixtures/firmware/antminer/x19-get_miner_conf.json");
const DG_STATS: &str =
    include_str!("../../../../tools/fixtures/firmware/antminer/dg-home1-stats.json");
const DG_SUMMARY: &str =
    include_str!("../../../../tools/fixtures/firmware/antminer/dg-home1-summary.json");
const SET_OK: &str =
    include_str!("../../../../tools/fixtures/firmware/antminer/set_miner_conf-ok.json");
const SET_ERROR: &str =
    include_str!("../../../../tools/fixtures/firmware/antminer/set_miner_conf-error.json");

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{DIR}: {e}"))
}

#[test]
fn stats_fixture_s19proplus() {
    let f = figures(&parse(S19PROPLUS_STATS)).expect("usable");
    let h = f.hashrate_ths.expect("hashrate");
    assert!((h - 121.05623).abs() < 1e-9, "{h}");
    assert_eq!(f.power_w, None, "stock S19Pro+ stats report no power");
    assert_eq!(
        derive_state(Some(Mode::Normal), f.hashrate_ths),
        RigState::Mining
    );
    assert_eq!(
        derive_state(Some(Mode::Sleep), f.hashrate_ths),
        RigState::Stopping
    );
}

#[test]
fn summary_fixture_s19j() {
    let f = figures(&parse(S19J_SUMMARY)).expect("usable");
    assert_eq!(f.hashrate_ths, Some(102.0));
    assert_eq!(f.power_w, None);
}

#[test]
fn idle_fixtures_in_mhs_dg_home1() {
    for reply in [DG_STATS, DG_SUMMARY] {
        let f = figures(&parse(reply)).expect("usable");
        assert_eq!((f.hashrate_ths, f.power_w), (Some(0.0), None));
        assert_eq!(
            derive_state(Some(Mode::Sleep), f.hashrate_ths),
            RigState::Sleeping
        );
        assert_eq!(
            derive_state(Some(Mode::Normal), f.hashrate_ths),
            RigState::Waking
        );
    }
    // The unit matters: its ideal rate is 3003.75 MH/s, i.e. 0.003 TH/s, not 3 TH/s.
    let ideal = parse(DG_STATS)["STATS"][0]["rate_ideal"].as_f64();
    let unit = parse(DG_STATS)["STATS"][0]["rate_unit"]
        .as_str()
        .map(str::to_owned);
    let ths = ideal.and_then(|r| to_ths(r, unit.as_deref()));
    assert!(
        ths.is_some_and(|t| (t - 0.00300375).abs() < 1e-12),
        "{ths:?}"
    );
}

#[test]
fn conf_fixtures_and_payloads() {
    let sleeping = parse(S19_CONF_SLEEP);
    assert!(
        S19_CONF_SLEEP.starts_with("\n\n"),
        "kept as the CGI prints it"
    );
    assert_eq!(config_mode(&sleeping), Some(Mode::Sleep));
    let mining = parse(X19_CONF);
    assert_eq!(config_mode(&mining), Some(Mode::Normal));

    let p = set_payload(&mining, Mode::Sleep).expect("payload");
    assert_eq!(
        p,
        json!({
            "pools": mining["pools"].clone(),
            "bitmain-fan-ctrl": false,
            "bitmain-fan-pwm": "100",
            "freq-level": "100",
            "miner-mode": 1,
            "bitmain-work-mode": 1,
        })
    );
    assert_eq!(config_mode(&p), Some(Mode::Sleep));
    let p = set_payload(&sleeping, Mode::Normal).expect("payload");
    assert_eq!(p["pools"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        (&p["miner-mode"], &p["bitmain-work-mode"]),
        (&json!(0), &json!(0))
    );
    // Newer firmware: `miner-mode` wins, `freq-level` is taken as it is.
    let newer = json!({"pools": [], "miner-mode": 3, "bitmain-work-mode": "0",
                       "freq-level": "90", "bitmain-fan-ctrl": true, "bitmain-fan-pwm": "70"});
    assert_eq!(config_mode(&newer), Some(Mode::Low));
    let p = set_payload(&newer, Mode::Sleep).expect("payload");
    assert_eq!(
        (&p["freq-level"], &p["bitmain-fan-pwm"]),
        (&json!("90"), &json!("70"))
    );
    // No pools: refuse to write a config that would drop them.
    assert_eq!(
        set_payload(&json!({"bitmain-work-mode": "0"}), Mode::Sleep),
        None
    );
    assert_eq!(set_payload(&json!([1, 2]), Mode::Sleep), None);
}

#[test]
fn set_replies() {
    assert_eq!(parse(SET_OK)["stats"], "success");
    assert_eq!(parse(SET_OK)["code"], "M000");
    assert_eq!(parse(SET_ERROR)["stats"], "error");
}

#[test]
fn modes_units_and_states() {
    for (v, m) in [
        (json!("0"), Some(Mode::Normal)),
        (json!(1), Some(Mode::Sleep)),
        (json!(" 3 "), Some(Mode::Low)),
        (json!(2), Some(Mode::High)),
        (json!("9"), None),
        (json!(-1), None),
        (json!(true), None),
        (json!(null), None),
    ] {
        assert_eq!(Mode::from_value(&v), m, "{v}");
    }
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
    assert!(close(to_ths(121056.23, Some("GH/s")), 121.05623));
    assert_eq!(to_ths(95000.0, None), Some(95.0));
    assert_eq!(to_ths(95.0, Some("TH/s")), Some(95.0));
    assert!(close(to_ths(5e12, Some("H/s")), 5.0));
    assert!(close(to_ths(0.2, Some("PH/s")), 200.0));
    assert_eq!(to_ths(1.0, Some("furlongs")), None);
    assert_eq!(to_ths(-1.0, Some("GH")), None);
    assert_eq!(to_ths(f64::INFINITY, Some("GH")), None);
    assert_eq!(
        derive_state(Some(Mode::Sleep), Some(0.0)),
        RigState::Sleeping
    );
    assert_eq!(
        derive_state(Some(Mode::Sleep), Some(50.0)),
        RigState::Stopping
    );
    assert_eq!(
        derive_state(Some(Mode::Normal), Some(0.0)),
        RigState::Waking
    );
    assert_eq!(derive_state(Some(Mode::Low), Some(60.0)), RigState::Mining);
    assert_eq!(derive_state(None, Some(60.0)), RigState::Unknown);
    assert_eq!(derive_state(Some(Mode::Sleep), None), RigState::Unknown);
}

#[test]
fn power_where_reported_and_broken_replies() {
    let hiveon = json!({"STATS": [{"rate_5s": 0.0, "rate_unit": "GH/s", "chain_power": "3250 W"}]});
    let f = figures(&hiveon).expect("usable");
    assert_eq!((f.hashrate_ths, f.power_w), (Some(0.0), Some(3250.0)));
    let numeric = json!({"SUMMARY": [{"rate_5s": "200000", "Power": 3500}]});
    let f = figures(&numeric).expect("usable");
    assert_eq!((f.hashrate_ths, f.power_w), (Some(200.0), Some(3500.0)));
    let f = figures(&json!({"STATS": [{"rate_5s": 1.0, "power": "lots"}]})).expect("usable");
    assert_eq!(f.power_w, None);
    for bad in [
        json!({"STATUS": {"STATUS": "E", "Msg": "miner not running"}, "STATS": []}),
        json!({"STATS": []}),
        json!({"nothing": 1}),
        json!("x"),
    ] {
        assert!(figures(&bad).is_err(), "{bad}");
    }
    let f = figures(&json!({"STATS": [{"elapsed": 3}]})).expect("no rate");
    assert_eq!(f.hashrate_ths, None);
}

/// A web server answering each path with a canned raw HTTP reply (no auth: the adapter's
/// first, bare request then succeeds), counting the requests per path.
async fn canned(
    routes: Vec<(&'static str, Vec<u8>)>,
) -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let line = head.lines().next().unwrap_or("").to_owned();
            let path = line.split(' ').nth(1).unwrap_or("").to_owned();
            log.lock().expect("log").push(line);
            let reply = routes
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec());
            let _ = s.write_all(&reply).await;
            let _ = s.shutdown().await;
        }
    });
    (addr, seen)
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::new(
        super::super::FirmwareKind::Antminer,
        addr,
        super::super::Credentials::new("root", "root"),
    )
}

fn client() -> FirmwareClient {
    FirmwareClient::new(super::super::Timeouts {
        connect: std::time::Duration::from_secs(2),
        request: std::time::Duration::from_secs(2),
    })
}

#[tokio::test]
async fn summary_is_read_where_stats_cgi_is_missing() {
    let (addr, seen) = canned(vec![
        (GET_CONF, ok(S19_CONF_SLEEP)),
        (SUMMARY, ok(S19J_SUMMARY)),
    ])
    .await;
    let s = client().status(&endpoint(addr)).await.expect("status");
    assert_eq!(
        (s.state, s.hashrate_ths, s.power_w),
        (RigState::Stopping, Some(102.0), None)
    );
    let seen = seen.lock().expect("log").clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen[1].contains(STATS) && seen[2].contains(SUMMARY),
        "{seen:?}"
    );
}

#[tokio::test]
async fn refusals_and_broken_replies_have_their_class() {
    let c = client();
    let big = format!("{{\"x\": \"{}\"}}", "a".repeat(300 * 1024));
    type Check = fn(&FirmwareError) -> bool;
    let cases: Vec<(Vec<u8>, Check)> = vec![
        (
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_vec(),
            |e| matches!(e, FirmwareError::Malformed { detail, .. } if detail.contains("Digest")),
        ),
        (
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256\r\nContent-Length: 0\r\n\r\n".to_vec(),
            |e| matches!(e, FirmwareError::Rejected { retryable: false, .. }),
        ),
        (
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 4\r\n\r\nbusy".to_vec(),
            |e| matches!(e, FirmwareError::Rejected { retryable: true, .. }),
        ),
        (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec(),
            |e| matches!(e, FirmwareError::Rejected { retryable: true, .. }),
        ),
        (
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_vec(),
            |e| matches!(e, FirmwareError::LoginRefused { .. }),
        ),
        (
            ok(&big),
            |e| matches!(e, FirmwareError::Malformed { detail, .. } if detail.contains("larger than")),
        ),
        (
            ok(r#"{"pools": [], "bitmain-work-mode": "7"}"#),
            |e| matches!(e, FirmwareError::Malformed { detail, .. } if detail.contains("miner-mode")),
        ),
    ];
    for (reply, want) in cases {
        let (addr, _) = canned(vec![(GET_CONF, reply.clone())]).await;
        let e = c.status(&endpoint(addr)).await.expect_err("fails");
        assert!(
            want(&e),
            "{}: {e}",
            String::from_utf8_lossy(&reply[..60.min(reply.len())])
        );
    }
}

#[tokio::test]
async fn writes_refused_or_unsafe_are_errors_and_redundant_ones_are_skipped() {
    let c = client();
    // The firmware's error reply to a write.
    let (addr, _) = canned(vec![(GET_CONF, ok(X19_CONF)), (SET_CONF, ok(SET_ERROR))]).await;
    let e = c.sleep(&endpoint(addr)).await.expect_err("refused");
    assert!(
        matches!(&e, FirmwareError::Rejected { retryable: false, detail, .. } if detail.contains("Invalid configuration")),
        "{e}"
    );
    // Accepted.
    let (addr, seen) = canned(vec![(GET_CONF, ok(X19_CONF)), (SET_CONF, ok(SET_OK))]).await;
    c.sleep(&endpoint(addr)).await.expect("accepted");
    assert_eq!(seen.lock().expect("log").len(), 2);
    // Already awake: no write at all.
    let (addr, seen) = canned(vec![(GET_CONF, ok(X19_CONF))]).await;
    c.wake(&endpoint(addr)).await.expect("idempotent");
    assert_eq!(seen.lock().expect("log").len(), 1);
    // A config without pools is never written back.
    let (addr, seen) = canned(vec![(GET_CONF, ok(r#"{"bitmain-work-mode": "0"}"#))]).await;
    let e = c.sleep(&endpoint(addr)).await.expect_err("unsafe");
    assert!(matches!(e, FirmwareError::Malformed { .. }), "{e}");
    assert_eq!(seen.lock().expect("log").len(), 1);
}

#[test]
fn empty_and_garbage_bodies_are_malformed_with_a_reason() {
    let ep = Endpoint::new(
        super::super::FirmwareKind::Antminer,
        "127.0.0.1:80".parse().expect("addr"),
        super::super::Credentials::new("root", "root"),
    );
    for (body, want) in [
        (&b"\n\n"[..], "empty reply"),
        (b"<html>busy</html>", "not JSON"),
        (b"{\"STATS\": [", "not JSON"),
    ] {
        match json(&ep, "GET /x", body) {
            Err(FirmwareError::Malformed { detail, .. }) => {
                assert!(detail.contains(want), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }
}
