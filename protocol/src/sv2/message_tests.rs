//! Golden vectors and framing tests for [`Message`]. The vectors are written out by hand
//! from the spec's field tables, independently of the encoder.

use super::*;
use crate::sv2::bounded::{B032, B064K, Seq064K, Seq0255, Str0255};
use crate::sv2::common::Protocol;
use crate::sv2::constants::setup_flags;

fn s(v: &str) -> Str0255 {
    Str0255::try_from(v).unwrap()
}

fn golden(msg: Message, ext: [u8; 2], msg_type: u8, payload_hex: &str) {
    let payload = hex::decode(payload_hex.replace(' ', "")).unwrap();
    let frame = msg.to_frame();
    assert_eq!(frame.payload.as_ref(), payload.as_slice(), "{}", msg.name());
    let mut wire = Vec::new();
    msg.encode_frame(&mut wire);
    let len = (payload.len() as u32).to_le_bytes();
    assert_eq!(
        wire[..6],
        [ext[0], ext[1], msg_type, len[0], len[1], len[2]]
    );
    assert_eq!(&wire[6..], payload.as_slice());
    assert_eq!(frame.header.encode(), wire[..6]);
    assert_eq!(Message::from_frame(&frame).unwrap(), msg);
}

#[test]
fn golden_setup_connection() {
    golden(
        Message::SetupConnection(SetupConnection {
            protocol: Protocol::Mining,
            min_version: 2,
            max_version: 2,
            flags: setup_flags::REQUIRES_STANDARD_JOBS | setup_flags::REQUIRES_VERSION_ROLLING,
            endpoint_host: s("pool"),
            endpoint_port: 3333,
            vendor: s("v"),
            hardware_version: s(""),
            firmware: s("fw"),
            device_id: s(""),
        }),
        [0x00, 0x00],
        0x00,
        "00 0200 0200 05000000 04706f6f6c 050d 0176 00 026677 00",
    );
}

#[test]
fn golden_submit_shares_standard() {
    golden(
        Message::SubmitSharesStandard(SubmitSharesStandard {
            channel_id: 1,
            sequence_number: 2,
            job_id: 3,
            nonce: 0xdeadbeef,
            ntime: 0x6500_0000,
            version: 0x2000_0000,
        }),
        [0x00, 0x80],
        0x1a,
        "01000000 02000000 03000000 efbeadde 00000065 00000020",
    );
}

#[test]
fn golden_submit_shares_extended_and_success() {
    golden(
        Message::SubmitSharesExtended(SubmitSharesExtended {
            channel_id: 7,
            sequence_number: 0,
            job_id: 1,
            nonce: 2,
            ntime: 3,
            version: 4,
            extranonce: B032::try_from(&[0xaa, 0xbb][..]).unwrap(),
        }),
        [0x00, 0x80],
        0x1b,
        "07000000 00000000 01000000 02000000 03000000 04000000 02aabb",
    );
    golden(
        Message::SubmitSharesSuccess(SubmitSharesSuccess {
            channel_id: 7,
            last_sequence_number: 9,
            new_submits_accepted_count: 2,
            new_shares_sum: 0x0102,
        }),
        [0x00, 0x80],
        0x1c,
        "07000000 09000000 02000000 0201000000000000",
    );
}

#[test]
fn golden_jobs() {
    golden(
        Message::NewMiningJob(NewMiningJob {
            channel_id: 1,
            job_id: 2,
            min_ntime: None,
            version: 0x2000_0000,
            merkle_root: [0x11; 32],
        }),
        [0x00, 0x80],
        0x15,
        &format!("01000000 02000000 00 00000020 {}", "11".repeat(32)),
    );
    golden(
        Message::NewExtendedMiningJob(NewExtendedMiningJob {
            channel_id: 1,
            job_id: 2,
            min_ntime: Some(0x10),
            version: 0x2000_0000,
            version_rolling_allowed: true,
            merkle_path: Seq0255::try_from(vec![[0x22; 32]]).unwrap(),
            coinbase_tx_prefix: B064K::try_from(vec![0x01, 0x02]).unwrap(),
            coinbase_tx_suffix: B064K::try_from(vec![]).unwrap(),
        }),
        [0x00, 0x80],
        0x1f,
        &format!(
            "01000000 02000000 0110000000 00000020 01 01{} 02000102 0000",
            "22".repeat(32)
        ),
    );
    golden(
        Message::SetNewPrevHash(SetNewPrevHash {
            channel_id: 1,
            job_id: 2,
            prev_hash: [0x33; 32],
            min_ntime: 3,
            nbits: 0x1703_4219,
        }),
        [0x00, 0x80],
        0x20,
        &format!("01000000 02000000 {} 03000000 19420317", "33".repeat(32)),
    );
}

#[test]
fn golden_non_channel_messages_with_ids() {
    golden(
        Message::SetGroupChannel(SetGroupChannel {
            group_channel_id: 5,
            channel_ids: Seq064K::try_from(vec![1, 2]).unwrap(),
        }),
        [0x00, 0x00],
        0x25,
        "05000000 0200 01000000 02000000",
    );
    golden(
        Message::OpenMiningChannelError(OpenMiningChannelError {
            request_id: 1,
            error_code: s("unknown-user"),
        }),
        [0x00, 0x00],
        0x12,
        "01000000 0c756e6b6e6f776e2d75736572",
    );
    golden(
        Message::OpenExtendedMiningChannel(OpenExtendedMiningChannel {
            request_id: 1,
            user_identity: s("u"),
            nominal_hash_rate: 1.0,
            max_target: [0xff; 32],
            min_extranonce_size: 8,
        }),
        [0x00, 0x00],
        0x13,
        &format!("01000000 0175 0000803f {} 0800", "ff".repeat(32)),
    );
}

#[test]
fn channel_ids() {
    let m = Message::from(SetTarget {
        channel_id: 42,
        maximum_target: [0; 32],
    });
    assert_eq!(m.channel_id(), Some(42));
    let m = Message::from(SetGroupChannel {
        group_channel_id: 1,
        channel_ids: Seq064K::default(),
    });
    assert_eq!(m.channel_id(), None);
    assert_eq!(m.name(), "SetGroupChannel");
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut frame = Message::from(ChannelEndpointChanged { channel_id: 1 }).to_frame();
    let mut p = frame.payload.to_vec();
    p.push(0);
    frame.payload = p.into();
    assert_eq!(
        Message::from_frame(&frame),
        Err(Sv2Error::TrailingBytes { extra: 1 })
    );
}

#[test]
fn unknown_and_extension_frames_are_typed() {
    let f = Frame::new(0, false, 0x1e, bytes::Bytes::new()).unwrap();
    let e = Message::from_frame(&f).unwrap_err();
    assert_eq!(e, Sv2Error::UnknownMessage { msg_type: 0x1e });
    assert!(e.is_ignorable());
    let f = Frame::new(0x0002, true, 0x01, bytes::Bytes::new()).unwrap();
    let e = Message::from_frame(&f).unwrap_err();
    assert_eq!(
        e,
        Sv2Error::UnsupportedExtension {
            extension_type: 2,
            msg_type: 1
        }
    );
    assert!(e.is_ignorable());
    let f = Frame::new(0, true, 0x1a, bytes::Bytes::from_static(&[1, 2])).unwrap();
    assert!(!Message::from_frame(&f).unwrap_err().is_ignorable());
}

#[test]
fn received_channel_bit_is_not_checked() {
    // Pre-12 SRI sent SetCustomMiningJob.Success without the channel bit.
    let m = Message::from(SetCustomMiningJobSuccess {
        channel_id: 1,
        request_id: 2,
        job_id: 3,
    });
    let mut f = m.to_frame();
    assert!(f.header.channel_msg);
    f.header.channel_msg = false;
    assert_eq!(Message::from_frame(&f).unwrap(), m);
}

#[test]
fn largest_messages_fit_the_u24_length() {
    let group = Message::from(SetGroupChannel {
        group_channel_id: 1,
        channel_ids: Seq064K::try_from(vec![7u32; 65_535]).unwrap(),
    });
    assert_eq!(group.payload_len(), 4 + 2 + 65_535 * 4);
    let f = group.to_frame();
    assert_eq!(f.header.msg_length as usize, f.payload.len());
    assert_eq!(Message::from_frame(&f).unwrap(), group);

    let job = Message::from(NewExtendedMiningJob {
        channel_id: 1,
        job_id: 2,
        min_ntime: Some(1),
        version: 3,
        version_rolling_allowed: false,
        merkle_path: Seq0255::try_from(vec![[9u8; 32]; 255]).unwrap(),
        coinbase_tx_prefix: B064K::try_from(vec![1u8; 65_535]).unwrap(),
        coinbase_tx_suffix: B064K::try_from(vec![2u8; 65_535]).unwrap(),
    });
    let f = job.to_frame();
    assert_eq!(f.header.msg_length as usize, f.payload.len());
    assert!(f.payload.len() < crate::sv2::codec::DEFAULT_MAX_PAYLOAD_LEN);
    assert_eq!(Message::from_frame(&f).unwrap(), job);
}

#[test]
fn typed_to_frame_matches_enum_to_frame() {
    let m = SubmitSharesSuccess {
        channel_id: 1,
        last_sequence_number: 2,
        new_submits_accepted_count: 3,
        new_shares_sum: 4,
    };
    assert_eq!(
        Sv2Message::to_frame(&m),
        Message::from(m.clone()).to_frame()
    );
    assert_eq!(SubmitSharesSuccess::NAME, "SubmitShares.Success");
}
