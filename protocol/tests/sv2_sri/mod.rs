//! Conversions between our SV2 message structs and SRI's (`mining_sv2` 12.0.0,
//! `common_messages_sv2` 9.0.0, `binary_sv2` 7.0.0), field by field, and framing with SRI's
//! own encoder. Used by `sv2_interop.rs`.

use binary_sv2 as bin;
use codec_sv2::MessageFrame;
use common_messages_sv2 as sric;
use hashshift_protocol::sv2::*;
use mining_sv2 as sri;

/// A message we can convert to and from SRI's representation.
pub trait Interop: Sv2Message + Clone + PartialEq + std::fmt::Debug + Into<Message> {
    /// SRI's message type constant.
    const SRI_MSG_TYPE: u8;
    /// SRI's channel-bit constant.
    const SRI_CHANNEL_BIT: bool;
    /// Decodes `payload` with SRI's type and converts every field back to ours.
    fn sri_decode(payload: &mut [u8]) -> Self;
    /// Converts to SRI's type and frames it with SRI's encoder: the whole frame's bytes.
    fn sri_encode(&self) -> Vec<u8>;
}

pub fn sri_frame<T: bin::Serialize + bin::GetSize>(m: T, msg_type: u8, channel: bool) -> Vec<u8> {
    let frame = MessageFrame::from_message(m, msg_type, 0, channel).expect("SRI frame");
    let mut enc = codec_sv2::Encoder::new();
    let bytes: Vec<u8> = enc.encode(frame).expect("SRI encode");
    bytes
}

// ---- field conversions -------------------------------------------------------------------

fn s_str(x: &Str0255) -> bin::Str0255<'_> {
    bin::Str0255::try_from(x.as_bytes()).unwrap()
}
fn o_str(x: &bin::Str0255<'_>) -> Str0255 {
    Str0255::try_from(x.as_bytes()).unwrap()
}
fn s_b032(x: &B032) -> bin::B032<'_> {
    bin::B032::try_from(x.as_bytes()).unwrap()
}
fn o_b032(x: &bin::B032<'_>) -> B032 {
    B032::try_from(x.as_bytes()).unwrap()
}
fn s_b0255(x: &B0255) -> bin::B0255<'_> {
    bin::B0255::try_from(x.as_bytes()).unwrap()
}
fn o_b0255(x: &bin::B0255<'_>) -> B0255 {
    B0255::try_from(x.as_bytes()).unwrap()
}
fn s_b064k(x: &B064K) -> bin::B064K<'_> {
    bin::B064K::try_from(x.as_bytes()).unwrap()
}
fn o_b064k(x: &bin::B064K<'_>) -> B064K {
    B064K::try_from(x.as_bytes()).unwrap()
}
fn s_u256(x: &U256) -> bin::U256<'_> {
    bin::U256::from(x)
}
fn o_u256(x: &bin::U256<'_>) -> U256 {
    *x.as_array()
}
fn s_path(x: &Seq0255<U256>) -> bin::Seq0255<'_, bin::U256<'_>> {
    bin::Seq0255::new(x.iter().map(s_u256).collect()).unwrap()
}
fn o_path(x: &bin::Seq0255<'_, bin::U256<'_>>) -> Seq0255<U256> {
    Seq0255::try_from(x.iter().map(o_u256).collect::<Vec<_>>()).unwrap()
}

macro_rules! interop {
    ($ours:ident, $sri:ty, $mt:expr, $ch:expr,
     to_sri($o:ident) $to:block,
     from_sri($t:ident) $from:block) => {
        impl Interop for $ours {
            const SRI_MSG_TYPE: u8 = $mt;
            const SRI_CHANNEL_BIT: bool = $ch;
            fn sri_decode(payload: &mut [u8]) -> Self {
                let $t: $sri =
                    bin::from_bytes(payload).expect(concat!("SRI decodes ", stringify!($ours)));
                $from
            }
            fn sri_encode(&self) -> Vec<u8> {
                let $o = self;
                let m: $sri = $to;
                sri_frame(m, $mt, $ch)
            }
        }
    };
}

interop!(SetupConnection, sric::SetupConnection, sric::MESSAGE_TYPE_SETUP_CONNECTION,
    sric::CHANNEL_BIT_SETUP_CONNECTION,
    to_sri(o) {
        sric::SetupConnection {
            protocol: sric::Protocol::try_from(u8::from(o.protocol)).unwrap(),
            min_version: o.min_version,
            max_version: o.max_version,
            flags: o.flags,
            endpoint_host: s_str(&o.endpoint_host),
            endpoint_port: o.endpoint_port,
            vendor: s_str(&o.vendor),
            hardware_version: s_str(&o.hardware_version),
            firmware: s_str(&o.firmware),
            device_id: s_str(&o.device_id),
        }
    },
    from_sri(t) {
        SetupConnection {
            protocol: Protocol::from(t.protocol as u8),
            min_version: t.min_version,
            max_version: t.max_version,
            flags: t.flags,
            endpoint_host: o_str(&t.endpoint_host),
            endpoint_port: t.endpoint_port,
            vendor: o_str(&t.vendor),
            hardware_version: o_str(&t.hardware_version),
            firmware: o_str(&t.firmware),
            device_id: o_str(&t.device_id),
        }
    }
);

interop!(SetupConnectionSuccess, sric::SetupConnectionSuccess,
    sric::MESSAGE_TYPE_SETUP_CONNECTION_SUCCESS, sric::CHANNEL_BIT_SETUP_CONNECTION_SUCCESS,
    to_sri(o) { sric::SetupConnectionSuccess { used_version: o.used_version, flags: o.flags } },
    from_sri(t) { SetupConnectionSuccess { used_version: t.used_version, flags: t.flags } }
);

interop!(SetupConnectionError, sric::SetupConnectionError,
    sric::MESSAGE_TYPE_SETUP_CONNECTION_ERROR, sric::CHANNEL_BIT_SETUP_CONNECTION_ERROR,
    to_sri(o) { sric::SetupConnectionError { flags: o.flags, error_code: s_str(&o.error_code) } },
    from_sri(t) { SetupConnectionError { flags: t.flags, error_code: o_str(&t.error_code) } }
);

interop!(ChannelEndpointChanged, sric::ChannelEndpointChanged,
    sric::MESSAGE_TYPE_CHANNEL_ENDPOINT_CHANGED, sric::CHANNEL_BIT_CHANNEL_ENDPOINT_CHANGED,
    to_sri(o) { sric::ChannelEndpointChanged { channel_id: o.channel_id } },
    from_sri(t) { ChannelEndpointChanged { channel_id: t.channel_id } }
);

interop!(Reconnect, sric::Reconnect, sric::MESSAGE_TYPE_RECONNECT, sric::CHANNEL_BIT_RECONNECT,
    to_sri(o) { sric::Reconnect { new_host: s_str(&o.new_host), new_port: o.new_port } },
    from_sri(t) { Reconnect { new_host: o_str(&t.new_host), new_port: t.new_port } }
);

interop!(OpenStandardMiningChannel, sri::OpenStandardMiningChannel,
    sri::MESSAGE_TYPE_OPEN_STANDARD_MINING_CHANNEL, sri::CHANNEL_BIT_OPEN_STANDARD_MINING_CHANNEL,
    to_sri(o) {
        sri::OpenStandardMiningChannel {
            request_id: o.request_id,
            user_identity: s_str(&o.user_identity),
            nominal_hash_rate: o.nominal_hash_rate,
            max_target: s_u256(&o.max_target),
        }
    },
    from_sri(t) {
        OpenStandardMiningChannel {
            request_id: t.request_id,
            user_identity: o_str(&t.user_identity),
            nominal_hash_rate: t.nominal_hash_rate,
            max_target: o_u256(&t.max_target),
        }
    }
);

interop!(OpenStandardMiningChannelSuccess, sri::OpenStandardMiningChannelSuccess,
    sri::MESSAGE_TYPE_OPEN_STANDARD_MINING_CHANNEL_SUCCESS,
    sri::CHANNEL_BIT_OPEN_STANDARD_MINING_CHANNEL_SUCCESS,
    to_sri(o) {
        sri::OpenStandardMiningChannelSuccess {
            request_id: o.request_id,
            channel_id: o.channel_id,
            target: s_u256(&o.target),
            extranonce_prefix: s_b032(&o.extranonce_prefix),
            group_channel_id: o.group_channel_id,
        }
    },
    from_sri(t) {
        OpenStandardMiningChannelSuccess {
            request_id: t.request_id,
            channel_id: t.channel_id,
            target: o_u256(&t.target),
            extranonce_prefix: o_b032(&t.extranonce_prefix),
            group_channel_id: t.group_channel_id,
        }
    }
);

interop!(OpenExtendedMiningChannel, sri::OpenExtendedMiningChannel,
    sri::MESSAGE_TYPE_OPEN_EXTENDED_MINING_CHANNEL, sri::CHANNEL_BIT_OPEN_EXTENDED_MINING_CHANNEL,
    to_sri(o) {
        sri::OpenExtendedMiningChannel {
            request_id: o.request_id,
            user_identity: s_str(&o.user_identity),
            nominal_hash_rate: o.nominal_hash_rate,
            max_target: s_u256(&o.max_target),
            min_extranonce_size: o.min_extranonce_size,
        }
    },
    from_sri(t) {
        OpenExtendedMiningChannel {
            request_id: t.request_id,
            user_identity: o_str(&t.user_identity),
            nominal_hash_rate: t.nominal_hash_rate,
            max_target: o_u256(&t.max_target),
            min_extranonce_size: t.min_extranonce_size,
        }
    }
);

interop!(OpenExtendedMiningChannelSuccess, sri::OpenExtendedMiningChannelSuccess,
    sri::MESSAGE_TYPE_OPEN_EXTENDED_MINING_CHANNEL_SUCCESS,
    sri::CHANNEL_BIT_OPEN_EXTENDED_MINING_CHANNEL_SUCCESS,
    to_sri(o) {
        sri::OpenExtendedMiningChannelSuccess {
            request_id: o.request_id,
            channel_id: o.channel_id,
            target: s_u256(&o.target),
            extranonce_size: o.extranonce_size,
            extranonce_prefix: s_b032(&o.extranonce_prefix),
            group_channel_id: o.group_channel_id,
        }
    },
    from_sri(t) {
        OpenExtendedMiningChannelSuccess {
            request_id: t.request_id,
            channel_id: t.channel_id,
            target: o_u256(&t.target),
            extranonce_size: t.extranonce_size,
            extranonce_prefix: o_b032(&t.extranonce_prefix),
            group_channel_id: t.group_channel_id,
        }
    }
);

interop!(OpenMiningChannelError, sri::OpenMiningChannelError,
    sri::MESSAGE_TYPE_OPEN_MINING_CHANNEL_ERROR, sri::CHANNEL_BIT_OPEN_MINING_CHANNEL_ERROR,
    to_sri(o) {
        sri::OpenMiningChannelError { request_id: o.request_id, error_code: s_str(&o.error_code) }
    },
    from_sri(t) {
        OpenMiningChannelError { request_id: t.request_id, error_code: o_str(&t.error_code) }
    }
);

interop!(UpdateChannel, sri::UpdateChannel, sri::MESSAGE_TYPE_UPDATE_CHANNEL,
    sri::CHANNEL_BIT_UPDATE_CHANNEL,
    to_sri(o) {
        sri::UpdateChannel {
            channel_id: o.channel_id,
            nominal_hash_rate: o.nominal_hash_rate,
            maximum_target: s_u256(&o.maximum_target),
        }
    },
    from_sri(t) {
        UpdateChannel {
            channel_id: t.channel_id,
            nominal_hash_rate: t.nominal_hash_rate,
            maximum_target: o_u256(&t.maximum_target),
        }
    }
);

interop!(UpdateChannelError, sri::UpdateChannelError, sri::MESSAGE_TYPE_UPDATE_CHANNEL_ERROR,
    sri::CHANNEL_BIT_UPDATE_CHANNEL_ERROR,
    to_sri(o) {
        sri::UpdateChannelError { channel_id: o.channel_id, error_code: s_str(&o.error_code) }
    },
    from_sri(t) {
        UpdateChannelError { channel_id: t.channel_id, error_code: o_str(&t.error_code) }
    }
);

interop!(CloseChannel, sri::CloseChannel, sri::MESSAGE_TYPE_CLOSE_CHANNEL,
    sri::CHANNEL_BIT_CLOSE_CHANNEL,
    to_sri(o) { sri::CloseChannel { channel_id: o.channel_id, reason_code: s_str(&o.reason_code) } },
    from_sri(t) { CloseChannel { channel_id: t.channel_id, reason_code: o_str(&t.reason_code) } }
);

interop!(SetExtranoncePrefix, sri::SetExtranoncePrefix, sri::MESSAGE_TYPE_SET_EXTRANONCE_PREFIX,
    sri::CHANNEL_BIT_SET_EXTRANONCE_PREFIX,
    to_sri(o) {
        sri::SetExtranoncePrefix {
            channel_id: o.channel_id,
            extranonce_prefix: s_b032(&o.extranonce_prefix),
        }
    },
    from_sri(t) {
        SetExtranoncePrefix {
            channel_id: t.channel_id,
            extranonce_prefix: o_b032(&t.extranonce_prefix),
        }
    }
);

interop!(SubmitSharesStandard, sri::SubmitSharesStandard, sri::MESSAGE_TYPE_SUBMIT_SHARES_STANDARD,
    sri::CHANNEL_BIT_SUBMIT_SHARES_STANDARD,
    to_sri(o) {
        sri::SubmitSharesStandard {
            channel_id: o.channel_id,
            sequence_number: o.sequence_number,
            job_id: o.job_id,
            nonce: o.nonce,
            ntime: o.ntime,
            version: o.version,
        }
    },
    from_sri(t) {
        SubmitSharesStandard {
            channel_id: t.channel_id,
            sequence_number: t.sequence_number,
            job_id: t.job_id,
            nonce: t.nonce,
            ntime: t.ntime,
            version: t.version,
        }
    }
);

interop!(SubmitSharesExtended, sri::SubmitSharesExtended, sri::MESSAGE_TYPE_SUBMIT_SHARES_EXTENDED,
    sri::CHANNEL_BIT_SUBMIT_SHARES_EXTENDED,
    to_sri(o) {
        sri::SubmitSharesExtended {
            channel_id: o.channel_id,
            sequence_number: o.sequence_number,
            job_id: o.job_id,
            nonce: o.nonce,
            ntime: o.ntime,
            version: o.version,
            extranonce: s_b032(&o.extranonce),
        }
    },
    from_sri(t) {
        SubmitSharesExtended {
            channel_id: t.channel_id,
            sequence_number: t.sequence_number,
            job_id: t.job_id,
            nonce: t.nonce,
            ntime: t.ntime,
            version: t.version,
            extranonce: o_b032(&t.extranonce),
        }
    }
);

interop!(SubmitSharesSuccess, sri::SubmitSharesSuccess, sri::MESSAGE_TYPE_SUBMIT_SHARES_SUCCESS,
    sri::CHANNEL_BIT_SUBMIT_SHARES_SUCCESS,
    to_sri(o) {
        sri::SubmitSharesSuccess {
            channel_id: o.channel_id,
            last_sequence_number: o.last_sequence_number,
            new_submits_accepted_count: o.new_submits_accepted_count,
            new_shares_sum: o.new_shares_sum,
        }
    },
    from_sri(t) {
        SubmitSharesSuccess {
            channel_id: t.channel_id,
            last_sequence_number: t.last_sequence_number,
            new_submits_accepted_count: t.new_submits_accepted_count,
            new_shares_sum: t.new_shares_sum,
        }
    }
);

interop!(SubmitSharesError, sri::SubmitSharesError, sri::MESSAGE_TYPE_SUBMIT_SHARES_ERROR,
    sri::CHANNEL_BIT_SUBMIT_SHARES_ERROR,
    to_sri(o) {
        sri::SubmitSharesError {
            channel_id: o.channel_id,
            sequence_number: o.sequence_number,
            error_code: s_str(&o.error_code),
        }
    },
    from_sri(t) {
        SubmitSharesError {
            channel_id: t.channel_id,
            sequence_number: t.sequence_number,
            error_code: o_str(&t.error_code),
        }
    }
);

interop!(NewMiningJob, sri::NewMiningJob, sri::MESSAGE_TYPE_NEW_MINING_JOB,
    sri::CHANNEL_BIT_NEW_MINING_JOB,
    to_sri(o) {
        sri::NewMiningJob {
            channel_id: o.channel_id,
            job_id: o.job_id,
            min_ntime: bin::Sv2Option::new(o.min_ntime),
            version: o.version,
            merkle_root: s_u256(&o.merkle_root),
        }
    },
    from_sri(t) {
        NewMiningJob {
            channel_id: t.channel_id,
            job_id: t.job_id,
            min_ntime: t.min_ntime.as_ref().copied(),
            version: t.version,
            merkle_root: o_u256(&t.merkle_root),
        }
    }
);

interop!(NewExtendedMiningJob, sri::NewExtendedMiningJob, sri::MESSAGE_TYPE_NEW_EXTENDED_MINING_JOB,
    sri::CHANNEL_BIT_NEW_EXTENDED_MINING_JOB,
    to_sri(o) {
        sri::NewExtendedMiningJob {
            channel_id: o.channel_id,
            job_id: o.job_id,
            min_ntime: bin::Sv2Option::new(o.min_ntime),
            version: o.version,
            version_rolling_allowed: o.version_rolling_allowed,
            merkle_path: s_path(&o.merkle_path),
            coinbase_tx_prefix: s_b064k(&o.coinbase_tx_prefix),
            coinbase_tx_suffix: s_b064k(&o.coinbase_tx_suffix),
        }
    },
    from_sri(t) {
        NewExtendedMiningJob {
            channel_id: t.channel_id,
            job_id: t.job_id,
            min_ntime: t.min_ntime.as_ref().copied(),
            version: t.version,
            version_rolling_allowed: t.version_rolling_allowed,
            merkle_path: o_path(&t.merkle_path),
            coinbase_tx_prefix: o_b064k(&t.coinbase_tx_prefix),
            coinbase_tx_suffix: o_b064k(&t.coinbase_tx_suffix),
        }
    }
);

interop!(SetNewPrevHash, sri::SetNewPrevHash, sri::MESSAGE_TYPE_MINING_SET_NEW_PREV_HASH,
    sri::CHANNEL_BIT_MINING_SET_NEW_PREV_HASH,
    to_sri(o) {
        sri::SetNewPrevHash {
            channel_id: o.channel_id,
            job_id: o.job_id,
            prev_hash: s_u256(&o.prev_hash),
            min_ntime: o.min_ntime,
            nbits: o.nbits,
        }
    },
    from_sri(t) {
        SetNewPrevHash {
            channel_id: t.channel_id,
            job_id: t.job_id,
            prev_hash: o_u256(&t.prev_hash),
            min_ntime: t.min_ntime,
            nbits: t.nbits,
        }
    }
);

interop!(SetCustomMiningJob, sri::SetCustomMiningJob, sri::MESSAGE_TYPE_SET_CUSTOM_MINING_JOB,
    sri::CHANNEL_BIT_SET_CUSTOM_MINING_JOB,
    to_sri(o) {
        sri::SetCustomMiningJob {
            channel_id: o.channel_id,
            request_id: o.request_id,
            token: s_b0255(&o.mining_job_token),
            version: o.version,
            prev_hash: s_u256(&o.prev_hash),
            min_ntime: o.min_ntime,
            nbits: o.nbits,
            coinbase_tx_version: o.coinbase_tx_version,
            coinbase_prefix: s_b0255(&o.coinbase_prefix),
            coinbase_tx_input_n_sequence: o.coinbase_tx_input_n_sequence,
            coinbase_tx_outputs: s_b064k(&o.coinbase_tx_outputs),
            coinbase_tx_locktime: o.coinbase_tx_locktime,
            merkle_path: s_path(&o.merkle_path),
        }
    },
    from_sri(t) {
        SetCustomMiningJob {
            channel_id: t.channel_id,
            request_id: t.request_id,
            mining_job_token: o_b0255(&t.token),
            version: t.version,
            prev_hash: o_u256(&t.prev_hash),
            min_ntime: t.min_ntime,
            nbits: t.nbits,
            coinbase_tx_version: t.coinbase_tx_version,
            coinbase_prefix: o_b0255(&t.coinbase_prefix),
            coinbase_tx_input_n_sequence: t.coinbase_tx_input_n_sequence,
            coinbase_tx_outputs: o_b064k(&t.coinbase_tx_outputs),
            coinbase_tx_locktime: t.coinbase_tx_locktime,
            merkle_path: o_path(&t.merkle_path),
        }
    }
);

interop!(SetCustomMiningJobSuccess, sri::SetCustomMiningJobSuccess,
    sri::MESSAGE_TYPE_SET_CUSTOM_MINING_JOB_SUCCESS, sri::CHANNEL_BIT_SET_CUSTOM_MINING_JOB_SUCCESS,
    to_sri(o) {
        sri::SetCustomMiningJobSuccess {
            channel_id: o.channel_id,
            request_id: o.request_id,
            job_id: o.job_id,
        }
    },
    from_sri(t) {
        SetCustomMiningJobSuccess {
            channel_id: t.channel_id,
            request_id: t.request_id,
            job_id: t.job_id,
        }
    }
);

interop!(SetCustomMiningJobError, sri::SetCustomMiningJobError,
    sri::MESSAGE_TYPE_SET_CUSTOM_MINING_JOB_ERROR, sri::CHANNEL_BIT_SET_CUSTOM_MINING_JOB_ERROR,
    to_sri(o) {
        sri::SetCustomMiningJobError {
            channel_id: o.channel_id,
            request_id: o.request_id,
            error_code: s_str(&o.error_code),
        }
    },
    from_sri(t) {
        SetCustomMiningJobError {
            channel_id: t.channel_id,
            request_id: t.request_id,
            error_code: o_str(&t.error_code),
        }
    }
);

interop!(SetTarget, sri::SetTarget, sri::MESSAGE_TYPE_SET_TARGET, sri::CHANNEL_BIT_SET_TARGET,
    to_sri(o) {
        sri::SetTarget { channel_id: o.channel_id, maximum_target: s_u256(&o.maximum_target) }
    },
    from_sri(t) {
        SetTarget { channel_id: t.channel_id, maximum_target: o_u256(&t.maximum_target) }
    }
);

interop!(SetGroupChannel, sri::SetGroupChannel, sri::MESSAGE_TYPE_SET_GROUP_CHANNEL,
    sri::CHANNEL_BIT_SET_GROUP_CHANNEL,
    to_sri(o) {
        sri::SetGroupChannel {
            group_channel_id: o.group_channel_id,
            channel_ids: bin::Seq064K::new(o.channel_ids.to_vec()).unwrap(),
        }
    },
    from_sri(t) {
        SetGroupChannel {
            group_channel_id: t.group_channel_id,
            channel_ids: Seq064K::try_from(t.channel_ids.as_slice().to_vec()).unwrap(),
        }
    }
);
