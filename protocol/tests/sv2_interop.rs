//! Interoperability with the Stratum Reference Implementation (SRI): `codec_sv2` 7.0.0,
//! `binary_sv2` 7.0.0, `mining_sv2` 12.0.0, `common_messages_sv2` 9.0.0.
//!
//! For every Common and Mining message, in both directions:
//! - ours → SRI: our codec writes the frame, SRI's `codec_sv2::Decoder` cuts it, the header
//!   must carry SRI's message type, channel bit (`0x8000`) and our payload length, and
//!   `binary_sv2::from_bytes` into SRI's struct must give back every field;
//! - SRI → ours: SRI's struct, framed with SRI's `MessageFrame` (SRI's own `MESSAGE_TYPE_*`
//!   and `CHANNEL_BIT_*` constants) and `codec_sv2::Encoder`, must be byte-identical to our
//!   encoding and decode with our codec and `Message::from_frame` into the same message.
//!
//! Field comparison goes through explicit per-field conversions (`to_sri` / `from_sri`), so
//! a swapped or missing field shows up as a mismatch.

mod sv2_sri;
mod sv2_support;

use bytes::BytesMut;
use codec_sv2::Decoded;
use hashshift_protocol::sv2::*;
use proptest::prelude::*;
use sv2_sri::Interop;
use tokio_util::codec::{Decoder, Encoder};

/// Header fields as SRI's decoder reports them, and the payload.
struct SriFrame {
    ext_type: u16,
    msg_type: u8,
    channel_msg: bool,
    payload_len: usize,
    payload: Vec<u8>,
}

/// Feeds `wire` through SRI's plaintext decoder, which must yield exactly one frame.
fn sri_read_frame(wire: &[u8]) -> SriFrame {
    let mut dec = codec_sv2::Decoder::new();
    let mut rest = wire;
    loop {
        match dec.next_frame().expect("SRI decoder error") {
            Decoded::Frame(mut f) => {
                assert!(rest.is_empty(), "SRI decoder left {} bytes", rest.len());
                let h = f.header();
                return SriFrame {
                    ext_type: h.ext_type(),
                    msg_type: h.msg_type(),
                    channel_msg: h.channel_msg(),
                    payload_len: h.payload_length(),
                    payload: f.payload().to_vec(),
                };
            }
            Decoded::Incomplete(_) => {
                let n = dec.writable_len();
                assert!(
                    n <= rest.len(),
                    "SRI wants {n} more bytes, {} left",
                    rest.len()
                );
                dec.writable().copy_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
        }
    }
}

fn check<M: Interop>(ours: &M) {
    assert_eq!(M::MSG_TYPE, M::SRI_MSG_TYPE, "{} msg_type", M::NAME);
    assert_eq!(
        M::CHANNEL_MSG,
        M::SRI_CHANNEL_BIT,
        "{} channel bit",
        M::NAME
    );
    let msg: Message = ours.clone().into();

    // Ours → SRI.
    let mut wire = BytesMut::new();
    Sv2Codec::new().encode(&msg, &mut wire).unwrap();
    let mut theirs = sri_read_frame(&wire);
    let expected_ext = if M::SRI_CHANNEL_BIT { 0x8000 } else { 0 };
    assert_eq!(theirs.ext_type, expected_ext, "{} extension_type", M::NAME);
    assert_eq!(theirs.channel_msg, M::SRI_CHANNEL_BIT);
    assert_eq!(theirs.msg_type, M::SRI_MSG_TYPE);
    assert_eq!(theirs.payload_len, msg.payload_len());
    assert_eq!(theirs.payload.len(), msg.payload_len());
    assert_eq!(
        &M::sri_decode(&mut theirs.payload),
        ours,
        "{} via SRI",
        M::NAME
    );

    // SRI → ours.
    let sri_wire = ours.sri_encode();
    assert_eq!(&sri_wire[..6], &wire[..6], "{} header bytes", M::NAME);
    assert_eq!(sri_wire, wire.to_vec(), "{} frame bytes", M::NAME);
    let mut src = BytesMut::from(sri_wire.as_slice());
    let frame = Sv2Codec::new()
        .decode(&mut src)
        .unwrap()
        .expect("one frame");
    assert!(src.is_empty());
    assert_eq!(frame.header.extension_type, 0);
    assert_eq!(frame.header.channel_msg, M::SRI_CHANNEL_BIT);
    assert_eq!(frame.header.msg_type, M::SRI_MSG_TYPE);
    assert_eq!(frame.header.msg_length as usize, frame.payload.len());
    assert_eq!(
        Message::from_frame(&frame).unwrap(),
        msg,
        "{} from SRI",
        M::NAME
    );
}

/// Dispatches a [`Message`] to the typed check.
fn check_message(msg: &Message) {
    match msg {
        Message::SetupConnection(m) => check(m),
        Message::SetupConnectionSuccess(m) => check(m),
        Message::SetupConnectionError(m) => check(m),
        Message::ChannelEndpointChanged(m) => check(m),
        Message::Reconnect(m) => check(m),
        Message::OpenStandardMiningChannel(m) => check(m),
        Message::OpenStandardMiningChannelSuccess(m) => check(m),
        Message::OpenMiningChannelError(m) => check(m),
        Message::OpenExtendedMiningChannel(m) => check(m),
        Message::OpenExtendedMiningChannelSuccess(m) => check(m),
        Message::NewMiningJob(m) => check(m),
        Message::UpdateChannel(m) => check(m),
        Message::UpdateChannelError(m) => check(m),
        Message::CloseChannel(m) => check(m),
        Message::SetExtranoncePrefix(m) => check(m),
        Message::SubmitSharesStandard(m) => check(m),
        Message::SubmitSharesExtended(m) => check(m),
        Message::SubmitSharesSuccess(m) => check(m),
        Message::SubmitSharesError(m) => check(m),
        Message::NewExtendedMiningJob(m) => check(m),
        Message::SetNewPrevHash(m) => check(m),
        Message::SetTarget(m) => check(m),
        Message::SetCustomMiningJob(m) => check(m),
        Message::SetCustomMiningJobSuccess(m) => check(m),
        Message::SetCustomMiningJobError(m) => check(m),
        Message::SetGroupChannel(m) => check(m),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random valid messages of every type, both directions, byte-identical frames.
    #[test]
    fn every_message_interoperates(msg in sv2_support::any_message()) {
        check_message(&msg);
    }
}

/// Each message type once with fixed, distinctive values (so a failure names the type even
/// if the strategy's distribution changes), including the largest bounded fields.
#[test]
fn every_message_type_interoperates_at_the_bounds() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strat = sv2_support::any_message();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < sv2_support::MESSAGE_TYPES {
        let m = strat.new_tree(&mut runner).unwrap().current();
        if seen.insert(m.msg_type()) {
            check_message(&m);
        }
    }

    let full_str = Str0255::try_from(vec![b'x'; 255]).unwrap();
    check(&SetupConnection {
        protocol: Protocol::TemplateDistribution,
        min_version: 2,
        max_version: 2,
        flags: u32::MAX,
        endpoint_host: full_str.clone(),
        endpoint_port: u16::MAX,
        vendor: full_str.clone(),
        hardware_version: full_str.clone(),
        firmware: full_str.clone(),
        device_id: full_str,
    });
    check(&SubmitSharesExtended {
        channel_id: u32::MAX,
        sequence_number: 1,
        job_id: 2,
        nonce: 3,
        ntime: 4,
        version: 5,
        extranonce: B032::try_from(vec![0xee; 32]).unwrap(),
    });
    check(&NewExtendedMiningJob {
        channel_id: 1,
        job_id: 2,
        min_ntime: Some(u32::MAX),
        version: 3,
        version_rolling_allowed: true,
        merkle_path: Seq0255::try_from(vec![[7u8; 32]; 255]).unwrap(),
        coinbase_tx_prefix: B064K::try_from(vec![1u8; 65_535]).unwrap(),
        coinbase_tx_suffix: B064K::try_from(vec![2u8; 65_535]).unwrap(),
    });
    check(&SetGroupChannel {
        group_channel_id: 9,
        channel_ids: Seq064K::try_from((0..65_535u32).collect::<Vec<_>>()).unwrap(),
    });
}

/// SRI's `bool` decoding reads only the low bit, like ours: a non-canonical byte from a peer
/// means the same thing to both.
#[test]
fn non_canonical_bool_agrees_with_sri() {
    let job = NewExtendedMiningJob {
        channel_id: 1,
        job_id: 2,
        min_ntime: None,
        version: 3,
        version_rolling_allowed: true,
        merkle_path: Seq0255::default(),
        coinbase_tx_prefix: B064K::default(),
        coinbase_tx_suffix: B064K::default(),
    };
    let mut payload = job.to_frame().payload.to_vec();
    // channel_id(4) job_id(4) option(1) version(4) → bool at offset 13.
    payload[13] = 0xfd;
    let ours = NewExtendedMiningJob::from_payload(&payload).unwrap();
    let theirs = NewExtendedMiningJob::sri_decode(&mut payload.clone());
    assert_eq!(ours, theirs);
    assert!(ours.version_rolling_allowed);
}
