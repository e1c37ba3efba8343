//! Property tests for Stratum V1: every message type survives encode → decode unchanged,
//! the result interpreters invert their encoders, and no byte sequence makes the decoders
//! panic or hold more than their line limit.

use bytes::BytesMut;
use hashshift_protocol::sv1::{
    Authorize, ClientCodec, ClientMessage, ClientRequest, Configure, ConfigureResult,
    ExtensionResult, Id, Notify, Reconnect, Response, ServerCodec, ServerMessage,
    ServerNotification, SetExtranonce, StratumError, Submit, Subscribe, SubscribeResult, Sv1Codec,
    Sv1Message,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tokio_util::codec::{Decoder, Encoder};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// Positive difficulties whose decimal form parses back exactly: m / 2^k with small m and k
/// (serde_json's exact fast path), covering values below 1 and large ones.
fn difficulty() -> impl Strategy<Value = f64> {
    (1u32..(1 << 20), 0i32..=10, any::<bool>()).prop_map(|(m, k, up)| {
        if up {
            f64::from(m) * f64::from(1u32 << k)
        } else {
            f64::from(m) / f64::from(1u32 << k)
        }
    })
}

fn id() -> impl Strategy<Value = Id> {
    prop_oneof![
        Just(Id::Null),
        any::<u64>().prop_map(Id::from),
        any::<i64>().prop_map(|n| Id::Number(n.into())),
        ".{0,12}".prop_map(Id::String),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

fn extra_params() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("zz\\.[a-z]{1,6}", leaf(), 0..3)
        .prop_map(|m| m.into_iter().collect())
}

fn client_request() -> impl Strategy<Value = ClientRequest> {
    prop_oneof![
        (
            prop::option::of(".{0,16}"),
            prop::option::of("[0-9a-f]{0,16}")
        )
            .prop_map(
                |(user_agent, session_id)| ClientRequest::Subscribe(Subscribe {
                    user_agent,
                    session_id
                })
            ),
        (".{0,16}", prop::option::of(".{0,8}"))
            .prop_map(|(user, password)| ClientRequest::Authorize(Authorize { user, password })),
        (
            prop::collection::vec("[a-z-]{1,20}", 0..4),
            prop::option::of(any::<u32>()),
            prop::option::of(0u32..=32),
            prop::option::of(prop_oneof![Just(0.0), difficulty()]),
            extra_params(),
        )
            .prop_map(|(extensions, mask, bits, min_diff, other_params)| {
                ClientRequest::Configure(Configure {
                    extensions,
                    version_rolling_mask: mask,
                    version_rolling_min_bit_count: bits,
                    minimum_difficulty: min_diff,
                    other_params,
                })
            }),
        (
            ".{0,16}",
            ".{0,8}",
            bytes(32),
            any::<u32>(),
            any::<u32>(),
            prop::option::of(any::<u32>())
        )
            .prop_map(
                |(worker, job_id, extranonce2, ntime, nonce, version_bits)| {
                    ClientRequest::Submit(Submit {
                        worker,
                        job_id,
                        extranonce2,
                        ntime,
                        nonce,
                        version_bits,
                    })
                }
            ),
        difficulty().prop_map(ClientRequest::SuggestDifficulty),
        Just(ClientRequest::ExtranonceSubscribe),
        ("x\\.[a-z_]{1,10}", json_value())
            .prop_map(|(method, params)| ClientRequest::Unknown { method, params }),
    ]
}

fn notify() -> impl Strategy<Value = Notify> {
    (
        ".{0,12}",
        any::<[u8; 32]>(),
        bytes(120),
        bytes(120),
        prop::collection::vec(any::<[u8; 32]>(), 0..=12),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>()),
    )
        .prop_map(
            |(
                job_id,
                prev_hash,
                coinb1,
                coinb2,
                merkle_branch,
                (version, nbits, ntime, clean_jobs),
            )| Notify {
                job_id,
                prev_hash,
                coinb1,
                coinb2,
                merkle_branch,
                version,
                nbits,
                ntime,
                clean_jobs,
            },
        )
}

fn server_notification() -> impl Strategy<Value = ServerNotification> {
    prop_oneof![
        notify().prop_map(ServerNotification::Notify),
        difficulty().prop_map(ServerNotification::SetDifficulty),
        (bytes(32), 0usize..=32).prop_map(|(extranonce1, extranonce2_size)| {
            ServerNotification::SetExtranonce(SetExtranonce {
                extranonce1,
                extranonce2_size,
            })
        }),
        any::<u32>().prop_map(ServerNotification::SetVersionMask),
        (
            prop::option::of("[a-z.]{1,20}"),
            prop::option::of(any::<u16>()),
            prop::option::of(any::<u64>())
        )
            .prop_map(
                |(host, port, wait)| ServerNotification::Reconnect(Reconnect { host, port, wait })
            ),
        ".{0,30}".prop_map(ServerNotification::ShowMessage),
        Just(ServerNotification::GetVersion),
        ("x\\.[a-z_]{1,10}", json_value())
            .prop_map(|(method, params)| ServerNotification::Unknown { method, params }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    (
        id(),
        json_value(),
        prop::option::of((any::<i64>(), ".{0,20}")),
    )
        .prop_map(|(id, result, error)| Response {
            id,
            result,
            error: error.map(|(code, message)| StratumError { code, message }),
        })
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        4 => (id(), client_request()).prop_map(|(id, request)| ClientMessage::Request { id, request }),
        1 => response().prop_map(ClientMessage::Response),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        4 => (id(), server_notification()).prop_map(|(id, notification)| ServerMessage::Notification { id, notification }),
        1 => response().prop_map(ServerMessage::Response),
    ]
}

fn extension_result() -> impl Strategy<Value = ExtensionResult> {
    prop_oneof![
        Just(ExtensionResult::Accepted),
        Just(ExtensionResult::Rejected),
        ".{0,10}".prop_map(ExtensionResult::Error)
    ]
}

/// Encodes with `enc`, checks it is one `\n`-terminated line, decodes with `dec`.
fn round_trip<M, E, D>(enc: &mut E, dec: &mut D, msg: &M) -> D::Item
where
    E: for<'a> Encoder<&'a M, Error = std::io::Error>,
    D: Decoder<Error = std::io::Error>,
{
    let mut buf = BytesMut::new();
    enc.encode(msg, &mut buf).unwrap();
    assert_eq!(buf.iter().filter(|b| **b == b'\n').count(), 1);
    assert_eq!(buf.last(), Some(&b'\n'));
    let item = dec.decode(&mut buf).unwrap().expect("a complete line");
    assert!(buf.is_empty());
    item
}

/// Feeds `data` in chunks of `chunk` bytes; checks the buffer never keeps more than a line
/// plus one chunk, then drains at EOF. Returns the number of items.
fn feed<Rx: Sv1Message, Tx>(codec: &mut Sv1Codec<Rx, Tx>, data: &[u8], chunk: usize) -> usize {
    let mut buf = BytesMut::new();
    let mut items = 0;
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while codec.decode(&mut buf).unwrap().is_some() {
            items += 1;
        }
        assert!(
            buf.len() <= codec.max_line_len() + 1,
            "buffer kept {} bytes",
            buf.len()
        );
    }
    while codec.decode_eof(&mut buf).unwrap().is_some() {
        items += 1;
    }
    assert!(buf.is_empty());
    items
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn client_messages_round_trip(msg in client_message()) {
        let got = round_trip(&mut ClientCodec::new(), &mut ServerCodec::new(), &msg);
        prop_assert_eq!(got, Ok(msg));
    }

    #[test]
    fn server_messages_round_trip(msg in server_message()) {
        let got = round_trip(&mut ServerCodec::new(), &mut ClientCodec::new(), &msg);
        prop_assert_eq!(got, Ok(msg));
    }

    #[test]
    fn subscribe_results_round_trip(
        subscriptions in prop::collection::vec((".{0,10}", ".{0,10}"), 0..3),
        extranonce1 in bytes(32),
        extranonce2_size in 0usize..=32,
    ) {
        let r = SubscribeResult { subscriptions, extranonce1, extranonce2_size };
        prop_assert_eq!(SubscribeResult::from_result(&r.to_result()), Ok(r.clone()));
        // ... also through a whole response line.
        let msg = ServerMessage::Response(Response::ok(Id::from(1), r.to_result()));
        let Ok(ServerMessage::Response(back)) = round_trip(&mut ServerCodec::new(), &mut ClientCodec::new(), &msg) else {
            panic!("not a response");
        };
        prop_assert_eq!(back.subscribe_result(), Ok(r));
    }

    #[test]
    fn configure_results_round_trip(
        version_rolling in prop::option::of(extension_result()),
        version_rolling_mask in prop::option::of(any::<u32>()),
        version_rolling_min_bit_count in prop::option::of(any::<u32>()),
        minimum_difficulty in prop::option::of(extension_result()),
        subscribe_extranonce in prop::option::of(extension_result()),
        other in extra_params(),
    ) {
        let r = ConfigureResult {
            version_rolling, version_rolling_mask, version_rolling_min_bit_count,
            minimum_difficulty, subscribe_extranonce, other,
        };
        prop_assert_eq!(ConfigureResult::from_result(&r.to_result()), Ok(r));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in bytes(4096), chunk in 1usize..600, small in any::<bool>()) {
        let max = if small { 64 } else { 1024 };
        feed(&mut ServerCodec::with_max_line_len(max), &data, chunk);
        feed(&mut ClientCodec::with_max_line_len(max), &data, chunk);
    }

    /// Structured junk reaches deeper than random bytes: objects with real method names and
    /// random params, ids and results.
    #[test]
    fn json_shaped_junk_never_panics(
        lines in prop::collection::vec(
            (
                prop::option::of(json_value()),
                prop::option::of(prop::sample::select(vec![
                    "mining.subscribe", "mining.authorize", "mining.configure", "mining.submit",
                    "mining.suggest_difficulty", "mining.extranonce.subscribe", "mining.notify",
                    "mining.set_difficulty", "mining.set_extranonce", "mining.set_version_mask",
                    "client.reconnect", "client.show_message", "client.get_version",
                ])),
                prop::option::of(json_value()),
                prop::option::of(json_value()),
            ),
            1..8,
        ),
        chunk in 1usize..300,
    ) {
        let mut data = Vec::new();
        for (id, method, params, result) in &lines {
            let mut obj = Map::new();
            if let Some(id) = id { obj.insert("id".into(), id.clone()); }
            if let Some(m) = method { obj.insert("method".into(), json!(m)); }
            if let Some(p) = params { obj.insert("params".into(), p.clone()); }
            if let Some(r) = result { obj.insert("result".into(), r.clone()); }
            data.extend_from_slice(Value::Object(obj).to_string().as_bytes());
            data.push(b'\n');
        }
        prop_assert_eq!(feed(&mut ServerCodec::new(), &data, chunk), lines.len());
        prop_assert_eq!(feed(&mut ClientCodec::new(), &data, chunk), lines.len());
    }
}
