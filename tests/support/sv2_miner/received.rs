//! What the test SV2 miner received: each frame decoded by SRI's crates and copied into owned
//! values ([`Received`]).

use anyhow::{Result, anyhow};
use binary_sv2 as bin;
use common_messages_sv2 as sric;
use mining_sv2 as sri;

/// What the miner received, decoded by SRI and copied into owned values.
#[derive(Clone, Debug, PartialEq)]
pub enum Received {
    SetupSuccess {
        used_version: u16,
        flags: u32,
    },
    SetupError {
        flags: u32,
        code: String,
    },
    OpenStandardSuccess {
        request_id: u32,
        channel_id: u32,
        target: [u8; 32],
        extranonce_prefix: Vec<u8>,
        group_channel_id: u32,
    },
    OpenExtendedSuccess {
        request_id: u32,
        channel_id: u32,
        target: [u8; 32],
        extranonce_size: u16,
        extranonce_prefix: Vec<u8>,
        group_channel_id: u32,
    },
    OpenError {
        request_id: u32,
        code: String,
    },
    NewMiningJob {
        channel_id: u32,
        job_id: u32,
        min_ntime: Option<u32>,
        version: u32,
        merkle_root: [u8; 32],
    },
    NewExtendedJob {
        channel_id: u32,
        job_id: u32,
        min_ntime: Option<u32>,
        version: u32,
        version_rolling_allowed: bool,
        merkle_path: Vec<[u8; 32]>,
        coinbase_prefix: Vec<u8>,
        coinbase_suffix: Vec<u8>,
    },
    SetNewPrevHash {
        channel_id: u32,
        job_id: u32,
        prev_hash: [u8; 32],
        min_ntime: u32,
        nbits: u32,
    },
    SetTarget {
        channel_id: u32,
        target: [u8; 32],
    },
    SetExtranoncePrefix {
        channel_id: u32,
        prefix: Vec<u8>,
    },
    SubmitSuccess {
        channel_id: u32,
        last_sequence_number: u32,
        count: u32,
        shares_sum: u64,
    },
    SubmitError {
        channel_id: u32,
        sequence_number: u32,
        code: String,
    },
    UpdateChannelError {
        channel_id: u32,
        code: String,
    },
    CloseChannel {
        channel_id: u32,
        reason: String,
    },
    Other(u8),
}

fn dec<'a, T: bin::Decodable<'a>>(payload: &'a mut [u8]) -> Result<T> {
    bin::from_bytes(payload).map_err(|e| anyhow!("SRI cannot decode: {e:?}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(super) fn parse(msg_type: u8, payload: &mut [u8]) -> Result<Received> {
    Ok(match msg_type {
        sric::MESSAGE_TYPE_SETUP_CONNECTION_SUCCESS => {
            let m: sric::SetupConnectionSuccess = dec(payload)?;
            Received::SetupSuccess {
                used_version: m.used_version,
                flags: m.flags,
            }
        }
        sric::MESSAGE_TYPE_SETUP_CONNECTION_ERROR => {
            let m: sric::SetupConnectionError = dec(payload)?;
            Received::SetupError {
                flags: m.flags,
                code: text(m.error_code.as_bytes()),
            }
        }
        sri::MESSAGE_TYPE_OPEN_STANDARD_MINING_CHANNEL_SUCCESS => {
            let m: sri::OpenStandardMiningChannelSuccess = dec(payload)?;
            Received::OpenStandardSuccess {
                request_id: m.request_id,
                channel_id: m.channel_id,
                target: *m.target.as_array(),
                extranonce_prefix: m.extranonce_prefix.as_bytes().to_vec(),
                group_channel_id: m.group_channel_id,
            }
        }
        sri::MESSAGE_TYPE_OPEN_EXTENDED_MINING_CHANNEL_SUCCESS => {
            let m: sri::OpenExtendedMiningChannelSuccess = dec(payload)?;
            Received::OpenExtendedSuccess {
                request_id: m.request_id,
                channel_id: m.channel_id,
                target: *m.target.as_array(),
                extranonce_size: m.extranonce_size,
                extranonce_prefix: m.extranonce_prefix.as_bytes().to_vec(),
                group_channel_id: m.group_channel_id,
            }
        }
        sri::MESSAGE_TYPE_OPEN_MINING_CHANNEL_ERROR => {
            let m: sri::OpenMiningChannelError = dec(payload)?;
            Received::OpenError {
                request_id: m.request_id,
                code: text(m.error_code.as_bytes()),
            }
        }
        sri::MESSAGE_TYPE_NEW_MINING_JOB => {
            let m: sri::NewMiningJob = dec(payload)?;
            Received::NewMiningJob {
                channel_id: m.channel_id,
                job_id: m.job_id,
                min_ntime: m.min_ntime.as_ref().copied(),
                version: m.version,
                merkle_root: *m.merkle_root.as_array(),
            }
        }
        sri::MESSAGE_TYPE_NEW_EXTENDED_MINING_JOB => {
            let m: sri::NewExtendedMiningJob = dec(payload)?;
            Received::NewExtendedJob {
                channel_id: m.channel_id,
                job_id: m.job_id,
                min_ntime: m.min_ntime.as_ref().copied(),
                version: m.version,
                version_rolling_allowed: m.version_rolling_allowed,
                merkle_path: m.merkle_path.iter().map(|h| *h.as_array()).collect(),
                coinbase_prefix: m.coinbase_tx_prefix.as_bytes().to_vec(),
                coinbase_suffix: m.coinbase_tx_suffix.as_bytes().to_vec(),
            }
        }
        sri::MESSAGE_TYPE_MINING_SET_NEW_PREV_HASH => {
            let m: sri::SetNewPrevHash = dec(payload)?;
            Received::SetNewPrevHash {
                channel_id: m.channel_id,
                job_id: m.job_id,
                prev_hash: *m.prev_hash.as_array(),
                min_ntime: m.min_ntime,
                nbits: m.nbits,
            }
        }
        sri::MESSAGE_TYPE_SET_TARGET => {
            let m: sri::SetTarget = dec(payload)?;
            Received::SetTarget {
                channel_id: m.channel_id,
                target: *m.maximum_target.as_array(),
            }
        }
        sri::MESSAGE_TYPE_SET_EXTRANONCE_PREFIX => {
            let m: sri::SetExtranoncePrefix = dec(payload)?;
            Received::SetExtranoncePrefix {
                channel_id: m.channel_id,
                prefix: m.extranonce_prefix.as_bytes().to_vec(),
            }
        }
        sri::MESSAGE_TYPE_SUBMIT_SHARES_SUCCESS => {
            let m: sri::SubmitSharesSuccess = dec(payload)?;
            Received::SubmitSuccess {
                channel_id: m.channel_id,
                last_sequence_number: m.last_sequence_number,
                count: m.new_submits_accepted_count,
                shares_sum: m.new_shares_sum,
            }
        }
        sri::MESSAGE_TYPE_SUBMIT_SHARES_ERROR => {
            let m: sri::SubmitSharesError = dec(payload)?;
            Received::SubmitError {
                channel_id: m.channel_id,
                sequence_number: m.sequence_number,
                code: text(m.error_code.as_bytes()),
            }
        }
        sri::MESSAGE_TYPE_UPDATE_CHANNEL_ERROR => {
            let m: sri::UpdateChannelError = dec(payload)?;
            Received::UpdateChannelError {
                channel_id: m.channel_id,
                code: text(m.error_code.as_bytes()),
            }
        }
        sri::MESSAGE_TYPE_CLOSE_CHANNEL => {
            let m: sri::CloseChannel = dec(payload)?;
            Received::CloseChannel {
                channel_id: m.channel_id,
                reason: text(m.reason_code.as_bytes()),
            }
        }
        other => Received::Other(other),
    })
}
