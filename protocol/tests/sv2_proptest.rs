//! Property tests of the SV2 messages and plaintext codec: encode→decode identity for every
//! message type, and hostile bytes never panic (they error or decode, nothing else).

mod sv2_support;

use bytes::{BufMut, BytesMut};
use hashshift_protocol::sv2::*;
use proptest::prelude::*;
use sv2_support::*;
use tokio_util::codec::{Decoder, Encoder};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every message survives to_frame → from_frame, and the header is consistent.
    #[test]
    fn frame_round_trip(msg in any_message()) {
        let frame = msg.to_frame();
        prop_assert_eq!(frame.header.extension_type, 0);
        prop_assert_eq!(frame.header.msg_type, msg.msg_type());
        prop_assert_eq!(frame.header.channel_msg, msg.channel_msg());
        prop_assert_eq!(frame.header.msg_length as usize, frame.payload.len());
        prop_assert_eq!(frame.payload.len(), msg.payload_len());
        if msg.channel_msg() {
            // A channel message's payload starts with its channel id.
            let id = u32::from_le_bytes(frame.payload[..4].try_into().unwrap());
            prop_assert_eq!(Some(id), msg.channel_id());
        }
        prop_assert_eq!(Message::from_frame(&frame).unwrap(), msg);
    }

    /// Whole-stream round trip through the codec, two messages back to back, fed in
    /// arbitrary chunk sizes.
    #[test]
    fn codec_round_trip(a in any_message(), b in any_message(), chunk in 1usize..64) {
        let mut codec = Sv2Codec::new();
        let mut wire = BytesMut::new();
        codec.encode(&a, &mut wire).unwrap();
        codec.encode(b.to_frame(), &mut wire).unwrap();
        prop_assert_eq!(wire.len(), a.frame_len() + b.frame_len());
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(chunk) {
            src.put_slice(piece);
            while let Some(f) = codec.decode(&mut src).unwrap() {
                out.push(Message::from_frame(&f).unwrap());
            }
        }
        prop_assert!(src.is_empty());
        prop_assert_eq!(out, vec![a, b]);
    }

    /// Every strict prefix of a payload is an error, never a panic or a wrong message.
    #[test]
    fn truncated_payloads_fail(msg in any_message(), cut in any::<prop::sample::Index>()) {
        let frame = msg.to_frame();
        if !frame.payload.is_empty() {
            let n = cut.index(frame.payload.len());
            let r = Message::decode(msg.msg_type(), &frame.payload[..n]);
            prop_assert!(r.is_err(), "prefix of {} bytes decoded as {:?}", n, r);
        }
    }

    /// Arbitrary payloads for every message type (known and unknown) never panic.
    #[test]
    fn arbitrary_payloads_never_panic(
        msg_type in any::<u8>(),
        ext in prop_oneof![Just(0u16), any::<u16>()],
        channel in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        if let Some(f) = Frame::new(ext & 0x7fff, channel, msg_type, payload.into()) {
            if let Ok(m) = Message::from_frame(&f) {
                // Whatever decodes re-encodes to a decodable message of the same type.
                prop_assert_eq!(m.msg_type(), msg_type);
                prop_assert!(Message::from_frame(&m.to_frame()).is_ok());
            }
        }
    }

    /// Arbitrary bytes into the codec (then into from_frame) never panic, and the decoder
    /// never buffers a frame above its maximum.
    #[test]
    fn arbitrary_stream_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        max in 0usize..512,
    ) {
        let mut codec = Sv2Codec::with_max_payload_len(max);
        let mut src = BytesMut::from(bytes.as_slice());
        loop {
            match codec.decode(&mut src) {
                Ok(Some(f)) => {
                    prop_assert!(f.payload.len() <= max);
                    let _ = Message::from_frame(&f);
                }
                Ok(None) => break,
                Err(Sv2CodecError::FrameTooLarge { len, max: m }) => {
                    prop_assert!(len > m);
                    break;
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
    }
}

#[test]
fn strategy_covers_every_message_type() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strat = any_message();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..2000 {
        seen.insert(strat.new_tree(&mut runner).unwrap().current().msg_type());
    }
    assert_eq!(seen.len(), MESSAGE_TYPES);
}
