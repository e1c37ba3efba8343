//! proptest strategies for every SV2 Common and Mining message, shared by the SV2 test files.
//! Every value generated is valid (within its type's bounds); floats exclude NaN so that
//! `PartialEq` round trips are meaningful.
#![allow(dead_code)]

use hashshift_protocol::sv2::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, Union};

pub fn str0255() -> impl Strategy<Value = Str0255> {
    vec(any::<u8>(), 0..=255).prop_map(|v| Str0255::try_from(v).unwrap())
}

pub fn b032() -> impl Strategy<Value = B032> {
    vec(any::<u8>(), 0..=32).prop_map(|v| B032::try_from(v).unwrap())
}

pub fn b0255() -> impl Strategy<Value = B0255> {
    vec(any::<u8>(), 0..=255).prop_map(|v| B0255::try_from(v).unwrap())
}

pub fn b064k() -> impl Strategy<Value = B064K> {
    vec(any::<u8>(), 0..=1500).prop_map(|v| B064K::try_from(v).unwrap())
}

pub fn u256() -> impl Strategy<Value = U256> {
    any::<[u8; 32]>()
}

pub fn f32_no_nan() -> impl Strategy<Value = f32> {
    any::<u32>()
        .prop_map(f32::from_bits)
        .prop_filter("NaN != NaN", |f| !f.is_nan())
}

pub fn merkle_path() -> impl Strategy<Value = Seq0255<U256>> {
    vec(u256(), 0..=24).prop_map(|v| Seq0255::try_from(v).unwrap())
}

pub fn protocol() -> impl Strategy<Value = Protocol> {
    (0u8..=2).prop_map(Protocol::from)
}

pub fn setup_connection() -> impl Strategy<Value = SetupConnection> {
    (
        protocol(),
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        str0255(),
        any::<u16>(),
        (str0255(), str0255(), str0255(), str0255()),
    )
        .prop_map(
            |(protocol, min_version, max_version, flags, host, port, d)| SetupConnection {
                protocol,
                min_version,
                max_version,
                flags,
                endpoint_host: host,
                endpoint_port: port,
                vendor: d.0,
                hardware_version: d.1,
                firmware: d.2,
                device_id: d.3,
            },
        )
}

pub fn setup_connection_success() -> impl Strategy<Value = SetupConnectionSuccess> {
    (any::<u16>(), any::<u32>()).prop_map(|(used_version, flags)| SetupConnectionSuccess {
        used_version,
        flags,
    })
}

pub fn setup_connection_error() -> impl Strategy<Value = SetupConnectionError> {
    (any::<u32>(), str0255())
        .prop_map(|(flags, error_code)| SetupConnectionError { flags, error_code })
}

pub fn channel_endpoint_changed() -> impl Strategy<Value = ChannelEndpointChanged> {
    any::<u32>().prop_map(|channel_id| ChannelEndpointChanged { channel_id })
}

pub fn reconnect() -> impl Strategy<Value = Reconnect> {
    (str0255(), any::<u16>()).prop_map(|(new_host, new_port)| Reconnect { new_host, new_port })
}

pub fn open_standard_mining_channel() -> impl Strategy<Value = OpenStandardMiningChannel> {
    (any::<u32>(), str0255(), f32_no_nan(), u256()).prop_map(|(a, b, c, d)| {
        OpenStandardMiningChannel {
            request_id: a,
            user_identity: b,
            nominal_hash_rate: c,
            max_target: d,
        }
    })
}

pub fn open_standard_mining_channel_success()
-> impl Strategy<Value = OpenStandardMiningChannelSuccess> {
    (any::<u32>(), any::<u32>(), u256(), b032(), any::<u32>()).prop_map(|(a, b, c, d, e)| {
        OpenStandardMiningChannelSuccess {
            request_id: a,
            channel_id: b,
            target: c,
            extranonce_prefix: d,
            group_channel_id: e,
        }
    })
}

pub fn open_extended_mining_channel() -> impl Strategy<Value = OpenExtendedMiningChannel> {
    (any::<u32>(), str0255(), f32_no_nan(), u256(), any::<u16>()).prop_map(|(a, b, c, d, e)| {
        OpenExtendedMiningChannel {
            request_id: a,
            user_identity: b,
            nominal_hash_rate: c,
            max_target: d,
            min_extranonce_size: e,
        }
    })
}

pub fn open_extended_mining_channel_success()
-> impl Strategy<Value = OpenExtendedMiningChannelSuccess> {
    (
        any::<u32>(),
        any::<u32>(),
        u256(),
        any::<u16>(),
        b032(),
        any::<u32>(),
    )
        .prop_map(|(a, b, c, d, e, f)| OpenExtendedMiningChannelSuccess {
            request_id: a,
            channel_id: b,
            target: c,
            extranonce_size: d,
            extranonce_prefix: e,
            group_channel_id: f,
        })
}

pub fn open_mining_channel_error() -> impl Strategy<Value = OpenMiningChannelError> {
    (any::<u32>(), str0255()).prop_map(|(request_id, error_code)| OpenMiningChannelError {
        request_id,
        error_code,
    })
}

pub fn update_channel() -> impl Strategy<Value = UpdateChannel> {
    (any::<u32>(), f32_no_nan(), u256()).prop_map(|(a, b, c)| UpdateChannel {
        channel_id: a,
        nominal_hash_rate: b,
        maximum_target: c,
    })
}

pub fn update_channel_error() -> impl Strategy<Value = UpdateChannelError> {
    (any::<u32>(), str0255()).prop_map(|(channel_id, error_code)| UpdateChannelError {
        channel_id,
        error_code,
    })
}

pub fn close_channel() -> impl Strategy<Value = CloseChannel> {
    (any::<u32>(), str0255()).prop_map(|(channel_id, reason_code)| CloseChannel {
        channel_id,
        reason_code,
    })
}

pub fn set_extranonce_prefix() -> impl Strategy<Value = SetExtranoncePrefix> {
    (any::<u32>(), b032()).prop_map(|(channel_id, extranonce_prefix)| SetExtranoncePrefix {
        channel_id,
        extranonce_prefix,
    })
}

pub fn submit_shares_standard() -> impl Strategy<Value = SubmitSharesStandard> {
    any::<[u32; 6]>().prop_map(|[a, b, c, d, e, f]| SubmitSharesStandard {
        channel_id: a,
        sequence_number: b,
        job_id: c,
        nonce: d,
        ntime: e,
        version: f,
    })
}

pub fn submit_shares_extended() -> impl Strategy<Value = SubmitSharesExtended> {
    (any::<[u32; 6]>(), b032()).prop_map(|([a, b, c, d, e, f], x)| SubmitSharesExtended {
        channel_id: a,
        sequence_number: b,
        job_id: c,
        nonce: d,
        ntime: e,
        version: f,
        extranonce: x,
    })
}

pub fn submit_shares_success() -> impl Strategy<Value = SubmitSharesSuccess> {
    (any::<[u32; 3]>(), any::<u64>()).prop_map(|([a, b, c], d)| SubmitSharesSuccess {
        channel_id: a,
        last_sequence_number: b,
        new_submits_accepted_count: c,
        new_shares_sum: d,
    })
}

pub fn submit_shares_error() -> impl Strategy<Value = SubmitSharesError> {
    (any::<u32>(), any::<u32>(), str0255()).prop_map(|(a, b, c)| SubmitSharesError {
        channel_id: a,
        sequence_number: b,
        error_code: c,
    })
}

pub fn new_mining_job() -> impl Strategy<Value = NewMiningJob> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<Option<u32>>(),
        any::<u32>(),
        u256(),
    )
        .prop_map(|(a, b, c, d, e)| NewMiningJob {
            channel_id: a,
            job_id: b,
            min_ntime: c,
            version: d,
            merkle_root: e,
        })
}

pub fn new_extended_mining_job() -> impl Strategy<Value = NewExtendedMiningJob> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<Option<u32>>(),
        any::<u32>(),
        any::<bool>(),
        merkle_path(),
        b064k(),
        b064k(),
    )
        .prop_map(|(a, b, c, d, e, f, g, h)| NewExtendedMiningJob {
            channel_id: a,
            job_id: b,
            min_ntime: c,
            version: d,
            version_rolling_allowed: e,
            merkle_path: f,
            coinbase_tx_prefix: g,
            coinbase_tx_suffix: h,
        })
}

pub fn set_new_prev_hash() -> impl Strategy<Value = SetNewPrevHash> {
    (any::<[u32; 2]>(), u256(), any::<[u32; 2]>()).prop_map(|([a, b], c, [d, e])| SetNewPrevHash {
        channel_id: a,
        job_id: b,
        prev_hash: c,
        min_ntime: d,
        nbits: e,
    })
}

pub fn set_custom_mining_job() -> impl Strategy<Value = SetCustomMiningJob> {
    (
        any::<[u32; 2]>(),
        b0255(),
        any::<u32>(),
        u256(),
        any::<[u32; 3]>(),
        b0255(),
        any::<u32>(),
        b064k(),
        any::<u32>(),
        merkle_path(),
    )
        .prop_map(
            |(
                [channel_id, request_id],
                token,
                version,
                prev_hash,
                [t, nb, cv],
                cp,
                seq,
                outs,
                lt,
                mp,
            )| {
                SetCustomMiningJob {
                    channel_id,
                    request_id,
                    mining_job_token: token,
                    version,
                    prev_hash,
                    min_ntime: t,
                    nbits: nb,
                    coinbase_tx_version: cv,
                    coinbase_prefix: cp,
                    coinbase_tx_input_n_sequence: seq,
                    coinbase_tx_outputs: outs,
                    coinbase_tx_locktime: lt,
                    merkle_path: mp,
                }
            },
        )
}

pub fn set_custom_mining_job_success() -> impl Strategy<Value = SetCustomMiningJobSuccess> {
    any::<[u32; 3]>().prop_map(|[a, b, c]| SetCustomMiningJobSuccess {
        channel_id: a,
        request_id: b,
        job_id: c,
    })
}

pub fn set_custom_mining_job_error() -> impl Strategy<Value = SetCustomMiningJobError> {
    (any::<u32>(), any::<u32>(), str0255()).prop_map(|(a, b, c)| SetCustomMiningJobError {
        channel_id: a,
        request_id: b,
        error_code: c,
    })
}

pub fn set_target() -> impl Strategy<Value = SetTarget> {
    (any::<u32>(), u256()).prop_map(|(channel_id, maximum_target)| SetTarget {
        channel_id,
        maximum_target,
    })
}

pub fn set_group_channel() -> impl Strategy<Value = SetGroupChannel> {
    (any::<u32>(), vec(any::<u32>(), 0..=300)).prop_map(|(group_channel_id, ids)| SetGroupChannel {
        group_channel_id,
        channel_ids: Seq064K::try_from(ids).unwrap(),
    })
}

fn boxed<S>(s: S) -> BoxedStrategy<Message>
where
    S: Strategy + 'static,
    S::Value: Into<Message>,
{
    s.prop_map(Into::into).boxed()
}

/// Any message, every type equally likely.
pub fn any_message() -> impl Strategy<Value = Message> {
    Union::new(vec![
        boxed(setup_connection()),
        boxed(setup_connection_success()),
        boxed(setup_connection_error()),
        boxed(channel_endpoint_changed()),
        boxed(reconnect()),
        boxed(open_standard_mining_channel()),
        boxed(open_standard_mining_channel_success()),
        boxed(open_mining_channel_error()),
        boxed(open_extended_mining_channel()),
        boxed(open_extended_mining_channel_success()),
        boxed(new_mining_job()),
        boxed(update_channel()),
        boxed(update_channel_error()),
        boxed(close_channel()),
        boxed(set_extranonce_prefix()),
        boxed(submit_shares_standard()),
        boxed(submit_shares_extended()),
        boxed(submit_shares_success()),
        boxed(submit_shares_error()),
        boxed(new_extended_mining_job()),
        boxed(set_new_prev_hash()),
        boxed(set_target()),
        boxed(set_custom_mining_job()),
        boxed(set_custom_mining_job_success()),
        boxed(set_custom_mining_job_error()),
        boxed(set_group_channel()),
    ])
}

/// Number of message types [`any_message`] covers (every Common and Mining message).
pub const MESSAGE_TYPES: usize = 26;
