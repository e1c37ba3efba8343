//! Real Stratum V1 lines captured from miners and pools (tests/data/sv1/captured_lines.txt,
//! each source cited there) decode to the expected typed values, and re-encoding then
//! re-decoding gives the same values.

use bytes::BytesMut;
use hashshift_protocol::sv1::{
    ClientCodec, ClientMessage, ClientRequest, ExtensionResult, Id, Response, ServerCodec,
    ServerMessage, ServerNotification, Sv1Error,
};
use serde_json::json;
use tokio_util::codec::{Decoder, Encoder};

const DATA: &str = include_str!("data/sv1/captured_lines.txt");

struct Captured<'a> {
    label: &'a str,
    to_pool: bool,
    line: &'a str,
}

fn captured() -> Vec<Captured<'static>> {
    DATA.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (label, dir, line) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            assert!(dir == "c2s" || dir == "s2c", "bad direction in {l}");
            Captured {
                label,
                to_pool: dir == "c2s",
                line,
            }
        })
        .collect()
}

fn decode_one<D: Decoder>(codec: &mut D, line: &str) -> D::Item
where
    D::Error: std::fmt::Debug,
{
    let mut buf = BytesMut::from(format!("{line}\r\n").as_bytes());
    let item = codec
        .decode(&mut buf)
        .unwrap()
        .expect("one message per line");
    assert!(buf.is_empty(), "line not fully consumed");
    item
}

fn request(m: &Result<ClientMessage, Sv1Error>) -> (&Id, &ClientRequest) {
    match m {
        Ok(ClientMessage::Request { id, request }) => (id, request),
        other => panic!("expected a request, got {other:?}"),
    }
}

fn notification(m: &Result<ServerMessage, Sv1Error>) -> (&Id, &ServerNotification) {
    match m {
        Ok(ServerMessage::Notification { id, notification }) => (id, notification),
        other => panic!("expected a notification, got {other:?}"),
    }
}

fn response(m: &Result<ServerMessage, Sv1Error>) -> &Response {
    match m {
        Ok(ServerMessage::Response(r)) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn subscribe_result(
    m: &Result<ServerMessage, Sv1Error>,
    id: u64,
    en1: &str,
    en2_size: usize,
    subs: &[(&str, &str)],
) {
    let r = response(m);
    assert_eq!(r.id, Id::from(id));
    assert_eq!(r.error, None);
    let s = r.subscribe_result().unwrap();
    assert_eq!(hex::encode(&s.extranonce1), en1);
    assert_eq!(s.extranonce2_size, en2_size);
    let got: Vec<(&str, &str)> = s
        .subscriptions
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(got, subs);
}

fn accepted(m: &Result<ServerMessage, Sv1Error>, id: u64) {
    let r = response(m);
    assert_eq!(r.id, Id::from(id));
    assert_eq!(r.as_bool(), Ok(true));
}

fn set_difficulty(m: &Result<ServerMessage, Sv1Error>, want: f64) {
    let (id, n) = notification(m);
    assert_eq!(id, &Id::Null);
    assert_eq!(n, &ServerNotification::SetDifficulty(want));
}

fn configure_request(
    m: &Result<ClientMessage, Sv1Error>,
    id: u64,
    exts: &[&str],
    mask: u32,
    bits: Option<u32>,
) {
    let (got_id, r) = request(m);
    assert_eq!(got_id, &Id::from(id));
    let ClientRequest::Configure(c) = r else {
        panic!("not configure: {r:?}")
    };
    assert_eq!(c.extensions, exts);
    assert_eq!(c.version_rolling_mask, Some(mask));
    assert_eq!(c.version_rolling_min_bit_count, bits);
}

fn mask_result(m: &Result<ServerMessage, Sv1Error>, id: u64, mask: u32) {
    let r = response(m);
    assert_eq!(r.id, Id::from(id));
    assert_eq!(r.configure_result().unwrap().negotiated_mask(), Some(mask));
}

fn subscribe_request(
    m: &Result<ClientMessage, Sv1Error>,
    id: u64,
    agent: Option<&str>,
    session: Option<&str>,
) {
    let (got_id, r) = request(m);
    assert_eq!(got_id, &Id::from(id));
    let ClientRequest::Subscribe(s) = r else {
        panic!("not subscribe: {r:?}")
    };
    assert_eq!(s.user_agent.as_deref(), agent);
    assert_eq!(s.session_id.as_deref(), session);
}

fn authorize_request(m: &Result<ClientMessage, Sv1Error>, id: u64, user: &str, password: &str) {
    let (got_id, r) = request(m);
    assert_eq!(got_id, &Id::from(id));
    let ClientRequest::Authorize(a) = r else {
        panic!("not authorize: {r:?}")
    };
    assert_eq!(a.user, user);
    assert_eq!(a.password.as_deref(), Some(password));
}

fn extranonce_subscribe(m: &Result<ClientMessage, Sv1Error>, id: u64) {
    assert_eq!(
        request(m),
        (&Id::from(id), &ClientRequest::ExtranonceSubscribe)
    );
}

/// The expected typed value of every captured line, by label.
fn check_to_pool(label: &str, m: &Result<ClientMessage, Sv1Error>) {
    match label {
        "bip310-configure" => configure_request(m, 1, &["version-rolling"], 0x1fff_e000, Some(2)),
        "luxor-configure" => {
            configure_request(
                m,
                1,
                &[
                    "version-rolling",
                    "minimum-difficulty",
                    "subscribe-extranonce",
                ],
                0x1fff_e000,
                Some(16),
            );
            let (_, ClientRequest::Configure(c)) = request(m) else {
                unreachable!()
            };
            assert_eq!(c.minimum_difficulty, Some(150_000.0));
            assert!(c.has_extension("subscribe-extranonce"));
        }
        "luxor-subscribe" => subscribe_request(m, 2, None, None),
        "luxor-authorize" => authorize_request(m, 3, "fallback.btm19", "x"),
        "bitaxe-configure" => configure_request(m, 1, &["version-rolling"], 0xffff_ffff, None),
        "bitaxe-subscribe" => {
            subscribe_request(m, 2, Some("bitaxe/BM1370/v2.7.0-1-g0e03517-dirty"), None)
        }
        "bitaxe-authorize" => authorize_request(m, 3, "16obFFgEfMuLboyqb32sqFfwGKdKjuGHoM", "x"),
        "bitaxe-suggest-difficulty" => {
            assert_eq!(
                request(m),
                (&Id::from(4), &ClientRequest::SuggestDifficulty(1000.0))
            );
        }
        "antpool-authorize" => authorize_request(m, 3, "xvf9u.001", "123"),
        "bitaxe-submit-version-bits" => {
            let (id, r) = request(m);
            assert_eq!(id, &Id::from(1207));
            let ClientRequest::Submit(s) = r else {
                panic!("not submit")
            };
            assert_eq!(s.worker, "1GvHLb2zAA7doMh6DxvmM5BQYhXhZ5Eoj7.bitaxeTEST");
            assert_eq!(s.job_id, "648516380016eafe");
            assert_eq!(s.extranonce2, hex::decode("ea3e000000000000").unwrap());
            assert_eq!(
                (s.ntime, s.nonce, s.version_bits),
                (0x6713_6b82, 0xd20c_0004, Some(0x040d_0000))
            );
        }
        "bosminer-configure" => {
            configure_request(m, 0, &["version-rolling"], 0x1fff_e000, Some(16))
        }
        "bosminer-subscribe" => subscribe_request(
            m,
            1,
            Some("2022-09-27-0-26ba61b9-22.08.1-plus;bosminer-plus-am1-s9 0.9.0-26ba61b9"),
            None,
        ),
        "bosminer-authorize" => authorize_request(m, 2, "provoost", ""),
        "whatsminer-configure" => {
            configure_request(m, 196, &["version-rolling"], 0x1fff_e000, None)
        }
        "whatsminer-subscribe" => {
            subscribe_request(
                m,
                197,
                Some("whatsminer/v1.0"),
                Some("ae6812eb4cd7735a302a8a9dd95cf71f"),
            );
        }
        "nbminer-subscribe" => subscribe_request(m, 1, Some("NBMiner/42.3"), None),
        "nbminer-extranonce-subscribe" | "gminer-extranonce-subscribe" => {
            extranonce_subscribe(m, 3)
        }
        "nerdminer-subscribe" => subscribe_request(m, 1, Some("NerdMinerV2/V1.7.0"), None),
        "cpuminer-subscribe" => subscribe_request(m, 1, Some("cpuminer/2.5.1"), None),
        "slush-submit" => {
            let (id, r) = request(m);
            assert_eq!(id, &Id::from(4));
            let ClientRequest::Submit(s) = r else {
                panic!("not submit")
            };
            assert_eq!(
                (s.worker.as_str(), s.job_id.as_str()),
                ("slush.miner1", "bf")
            );
            assert_eq!(s.extranonce2, vec![0, 0, 0, 1]);
            assert_eq!(
                (s.ntime, s.nonce, s.version_bits),
                (0x504e_86ed, 0xb295_7c02, None)
            );
        }
        other => panic!("no expectation for miner line `{other}`"),
    }
}

fn check_to_miner(label: &str, m: &Result<ServerMessage, Sv1Error>) {
    match label {
        "bip310-configure-result" => {
            mask_result(m, 1, 0x1800_0000);
        }
        "bip310-configure-unknown" => {
            let c = response(m).configure_result().unwrap();
            assert_eq!(c.version_rolling, Some(ExtensionResult::Rejected));
            assert_eq!(c.negotiated_mask(), None);
        }
        "bip310-set-version-mask" => {
            assert_eq!(
                notification(m),
                (&Id::Null, &ServerNotification::SetVersionMask(0x3000))
            );
        }
        "luxor-authorize-ok" => accepted(m, 3),
        "luxor-authorize-denied" => {
            let r = response(m);
            assert_eq!(r.as_bool(), Ok(false));
            let e = r.error.as_ref().unwrap();
            assert_eq!(
                (e.code, e.message.as_str()),
                (24, "init_auth: sustainhash.firmware")
            );
            assert_eq!(
                e.kind(),
                Some(hashshift_protocol::sv1::ErrorCode::UnauthorizedWorker)
            );
        }
        "noerror-configure-result" | "antpool-configure-result" => mask_result(m, 1, 0x1fff_e000),
        "publicpool-configure-result" => mask_result(m, 2, 0x1fff_e000),
        "noerror-subscribe-result" => subscribe_result(
            m,
            2,
            "1000005f",
            4,
            &[
                ("mining.set_difficulty", "0HNCHKAL0L30J"),
                ("mining.notify", "0HNCHKAL0L30J"),
            ],
        ),
        "publicpool-subscribe-result" => {
            subscribe_result(m, 1, "63add300", 4, &[("mining.notify", "63add300")])
        }
        "publicpool-authorize-ok" => accepted(m, 3),
        "publicpool-set-difficulty" => set_difficulty(m, 1000.0),
        "antpool-subscribe-result" => subscribe_result(
            m,
            2,
            "0000d85d",
            8,
            &[
                ("mining.notify", "0000d85d1"),
                ("mining.set_difficulty", "0000d85d2"),
            ],
        ),
        "antpool-suggest-rejected" => {
            let r = response(m);
            assert_eq!(r.id, Id::from(4));
            let e = r.error.as_ref().unwrap();
            assert_eq!(
                (e.code, e.message.as_str(), e.kind()),
                (40, "unfit, ignore", None)
            );
        }
        "antpool-bare-word-id" => assert!(matches!(m, Err(Sv1Error::InvalidJson(_))), "{m:?}"),
        "nicehash-subscribe-result" => subscribe_result(
            m,
            2,
            "6351117f64",
            3,
            &[
                ("mining.set_difficulty", "6351117f64"),
                ("mining.notify", "6351117f64"),
            ],
        ),
        "spaced-subscribe-result" => subscribe_result(
            m,
            1,
            "1e0a0000",
            8,
            &[
                ("mining.notify", "1e0a00001"),
                ("mining.set_difficulty", "1e0a00002"),
            ],
        ),
        "fractional-set-difficulty" => set_difficulty(m, 16383.75),
        "bitaxe-submit-accepted" => accepted(m, 1207),
        "sri-configure-result" => {
            mask_result(m, 0, 0x1fff_e000);
            let c = response(m).configure_result().unwrap();
            assert_eq!(c.version_rolling_min_bit_count, Some(16));
            assert_eq!(c.minimum_difficulty, Some(ExtensionResult::Rejected));
        }
        "sri-configure-result-zero-bits" => {
            mask_result(m, 196, 0x1fff_e000);
            assert_eq!(
                response(m)
                    .configure_result()
                    .unwrap()
                    .version_rolling_min_bit_count,
                Some(0)
            );
        }
        "sri-subscribe-result" => subscribe_result(
            m,
            1,
            "000000000000000000000000000000030000000000000001",
            8,
            &[
                ("mining.set_difficulty", "ae6812eb4cd7735a302a8a9dd95cf71f"),
                ("mining.notify", "ae6812eb4cd7735a302a8a9dd95cf71f"),
            ],
        ),
        "sri-authorize-ok" => accepted(m, 2),
        "sri-set-difficulty-no-id" => set_difficulty(m, 1164.0),
        "mrr-subscribe-flat-result" => {
            subscribe_result(
                m,
                1,
                "f800002e",
                4,
                &[("mining.notify", "ae6812eb4cd7735a302a8a9dd95cf71f")],
            );
        }
        "mrr-reconnect" => {
            let (id, n) = notification(m);
            assert_eq!(id, &Id::from(0));
            let ServerNotification::Reconnect(r) = n else {
                panic!("not reconnect")
            };
            assert_eq!(r.host.as_deref(), Some("eu-01.miningrigrentals.com"));
            assert_eq!((r.port, r.wait), (Some(50814), None));
        }
        "f2pool-subscribe-result" => subscribe_result(
            m,
            1,
            "00",
            8,
            &[
                ("mining.notify", "mining.notify"),
                ("mining.set_difficulty", "mining.set_difficulty"),
            ],
        ),
        "f2pool-set-difficulty" => set_difficulty(m, 8192.0),
        "nerdminer-publicpool-result" => {
            subscribe_result(m, 1, "5421e067", 8, &[("mining.notify", "67e5f117")])
        }
        "viabtc-notify" => {
            let (id, n) = notification(m);
            assert_eq!(id, &Id::Null);
            let ServerNotification::Notify(n) = n else {
                panic!("not notify")
            };
            assert_eq!(n.job_id, "8be5");
            assert_eq!(
                (n.version, n.nbits, n.ntime, n.clean_jobs),
                (0x2000_0000, 0x1729_d72d, 0x5b82_5563, true)
            );
            assert_eq!(n.merkle_branch.len(), 10);
            assert_eq!(
                hex::encode(n.merkle_branch[9]),
                "6807882f4b9a754e31fd5b4456f8ce5df828dc27c60b1c8aba660f00164ab609"
            );
            // Header order: the word-swapped prevhash; the leading zeros of the block hash
            // sit at the end, as in any block header.
            assert_eq!(
                hex::encode(n.prev_hash),
                "ad32ead7b9573a605b463268bf4b0d11c2d670cc4a8f1b000000000000000000"
            );
            assert!(String::from_utf8_lossy(&n.coinb1).contains("/ViaBTC/Mined by w4m8st2/"));
            assert_eq!(n.coinb2.len(), 90);
        }
        "slush-subscribe-result" => subscribe_result(
            m,
            1,
            "08000002",
            4,
            &[
                ("mining.set_difficulty", "b4b6693b72a50c7116db18d6497cac52"),
                ("mining.notify", "ae6812eb4cd7735a302a8a9dd95cf71f"),
            ],
        ),
        "slush-notify" => {
            let (_, ServerNotification::Notify(n)) = notification(m) else {
                panic!("not notify")
            };
            assert_eq!(n.job_id, "bf");
            // Header-order value published alongside this example by an independent
            // implementation (a TypeScript Stratum library's test "standard test case from the web").
            assert_eq!(
                hex::encode(n.prev_hash),
                "f8b6164d19e2f65a2aae448f787fe66d61e57a48c0c6771b1e920b4400000000"
            );
            assert_eq!(
                (n.version, n.nbits, n.ntime, n.clean_jobs),
                (2, 0x1c2a_c4af, 0x504e_86b9, false)
            );
            assert!(n.merkle_branch.is_empty());
            assert_eq!(n.coinb1.len(), 58);
            assert_eq!(n.coinb2.len(), 51);
        }
        "jsonrpc2-error-object" => {
            let r = response(m);
            assert_eq!(
                r.id,
                Id::from("txlist21113054859690226509467881926496231517")
            );
            let e = r.error.as_ref().unwrap();
            assert_eq!((e.code, e.message.as_str()), (-32601, "Method not found"));
            assert_eq!(r.result, json!(null));
        }
        "gminer-extranonce-subscribe-ok" => accepted(m, 3),
        other => panic!("no expectation for pool line `{other}`"),
    }
}

#[test]
fn every_captured_line_decodes_to_its_expected_value_and_round_trips() {
    let lines = captured();
    assert!(
        lines.len() >= 50,
        "the data file lost lines: {}",
        lines.len()
    );
    let mut labels = std::collections::HashSet::new();
    for c in &lines {
        assert!(labels.insert(c.label), "duplicate label {}", c.label);
        if c.to_pool {
            let m = decode_one(&mut ServerCodec::new(), c.line);
            check_to_pool(c.label, &m);
            if let Ok(msg) = m {
                let mut out = BytesMut::new();
                ClientCodec::new().encode(&msg, &mut out).unwrap();
                assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
                let again = ServerCodec::new().decode(&mut out).unwrap().unwrap();
                assert_eq!(again, Ok(msg), "{} does not round-trip", c.label);
            }
        } else {
            let m = decode_one(&mut ClientCodec::new(), c.line);
            check_to_miner(c.label, &m);
            if let Ok(msg) = m {
                let mut out = BytesMut::new();
                ServerCodec::new().encode(&msg, &mut out).unwrap();
                assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
                let again = ClientCodec::new().decode(&mut out).unwrap().unwrap();
                assert_eq!(again, Ok(msg), "{} does not round-trip", c.label);
            }
        }
    }
}

/// The same lines as one byte stream, as a proxy would read them: one item per line, the
/// bad line reported in place, nothing lost around it.
#[test]
fn captured_pool_lines_as_one_stream() {
    let pool_lines: Vec<&str> = captured()
        .iter()
        .filter(|c| !c.to_pool)
        .map(|c| c.line)
        .collect();
    let mut buf = BytesMut::new();
    for l in &pool_lines {
        buf.extend_from_slice(l.as_bytes());
        buf.extend_from_slice(b"\n");
    }
    let mut codec = ClientCodec::new();
    let mut ok = 0;
    let mut bad = 0;
    while let Some(item) = codec.decode(&mut buf).unwrap() {
        if item.is_ok() { ok += 1 } else { bad += 1 }
    }
    assert_eq!((ok, bad), (pool_lines.len() - 1, 1));
}
