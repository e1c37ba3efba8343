//! Notifications (and the rare requests) a pool sends to a miner (server → client):
//! `mining.notify`, `mining.set_difficulty`, `mining.set_extranonce`,
//! `mining.set_version_mask` (BIP310), `client.reconnect`, `client.show_message`,
//! `client.get_version`.
//!
//! `mining.notify` is parsed strictly: every hex field must have its exact width, because a
//! job we misread would make every share of the miner invalid. Unknown methods become
//! [`ServerNotification::Unknown`] rather than an error.

use serde_json::{Value, json};

use super::error::FieldError;
use super::fields::{
    MAX_EXTRANONCE_LEN, MAX_MERKLE_BRANCH, Params, as_array, as_bool, as_difficulty, as_str,
    as_u64, parse_hash32, parse_hex_bytes, prev_hash_from_stratum, prev_hash_to_stratum,
    u32_hex_value, u32_to_hex,
};
use super::method;
use crate::share::ExtendedJob;

/// Largest coinbase part accepted in `mining.notify`, in bytes. A whole block is at most
/// 4 MB; the codec's line limit is usually far lower anyway.
pub const MAX_COINBASE_PART: usize = 1 << 20;

/// A message from a pool that is not a response, typed by method.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerNotification {
    /// `mining.notify`: a new job.
    Notify(Notify),
    /// `mining.set_difficulty`: share difficulty for the next jobs.
    SetDifficulty(f64),
    /// `mining.set_extranonce`.
    SetExtranonce(SetExtranonce),
    /// `mining.set_version_mask` (BIP310): the new rollable version bits.
    SetVersionMask(u32),
    /// `client.reconnect`.
    Reconnect(Reconnect),
    /// `client.show_message`: text for the operator.
    ShowMessage(String),
    /// `client.get_version`: the pool asks for the miner's version (a request: answer with
    /// the same id).
    GetVersion,
    /// Any other method, kept verbatim.
    Unknown {
        /// The method name.
        method: String,
        /// The params as received (`null` when absent).
        params: Value,
    },
}

/// `mining.notify` params, converted to this crate's byte conventions (see the
/// [module docs](super)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Job id, echoed in `mining.submit`.
    pub job_id: String,
    /// Previous block hash in header byte order (Stratum's word-swapped spelling is
    /// converted on parse and on encode).
    pub prev_hash: [u8; 32],
    /// Coinbase transaction bytes before extranonce1.
    pub coinb1: Vec<u8>,
    /// Coinbase transaction bytes after extranonce2.
    pub coinb2: Vec<u8>,
    /// Merkle branch hashes, each as the 32 bytes its hex spells.
    pub merkle_branch: Vec<[u8; 32]>,
    /// Block version (big-endian u32 of the hex).
    pub version: u32,
    /// Compact target `nbits` (big-endian u32 of the hex).
    pub nbits: u32,
    /// Job time (big-endian u32 of the hex).
    pub ntime: u32,
    /// Whether earlier jobs must be abandoned.
    pub clean_jobs: bool,
}

/// `mining.set_extranonce([extranonce1, extranonce2_size])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetExtranonce {
    /// New extranonce1 bytes.
    pub extranonce1: Vec<u8>,
    /// New extranonce2 size in bytes (at most [`MAX_EXTRANONCE_LEN`]).
    pub extranonce2_size: usize,
}

/// `client.reconnect([host, port, wait])`: every param is optional. Ports sent as strings
/// (`"50814"`, as some rental services do) are accepted; they are encoded as numbers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reconnect {
    /// Host to connect to (`None`: the same host).
    pub host: Option<String>,
    /// Port to connect to (`None`: the same port).
    pub port: Option<u16>,
    /// Seconds to wait before reconnecting.
    pub wait: Option<u64>,
}

impl ServerNotification {
    /// Types a server message from its method and params. Unknown methods never fail.
    ///
    /// # Errors
    /// A [`FieldError`] naming the offending field when a known method's params do not fit.
    pub fn parse(method_name: &str, params: &Value) -> Result<Self, FieldError> {
        Ok(match method_name {
            method::NOTIFY => ServerNotification::Notify(Notify::parse(params)?),
            method::SET_DIFFICULTY => {
                let p = Params::new(params)?;
                ServerNotification::SetDifficulty(as_difficulty(
                    p.required(0, "difficulty")?,
                    "difficulty",
                )?)
            }
            method::SET_EXTRANONCE => {
                let p = Params::new(params)?;
                let extranonce1 =
                    parse_hex_bytes(p.str(0, "extranonce1")?, "extranonce1", MAX_EXTRANONCE_LEN)?;
                let size = as_u64(p.required(1, "extranonce2_size")?, "extranonce2_size")?;
                ServerNotification::SetExtranonce(SetExtranonce {
                    extranonce1,
                    extranonce2_size: extranonce2_size(size)?,
                })
            }
            method::SET_VERSION_MASK => {
                let p = Params::new(params)?;
                ServerNotification::SetVersionMask(u32_hex_value(p.required(0, "mask")?, "mask")?)
            }
            method::RECONNECT => ServerNotification::Reconnect(Reconnect::parse(params)?),
            method::SHOW_MESSAGE => {
                let p = Params::new(params)?;
                ServerNotification::ShowMessage(p.str(0, "message")?.to_owned())
            }
            method::GET_VERSION => ServerNotification::GetVersion,
            other => ServerNotification::Unknown {
                method: other.to_owned(),
                params: params.clone(),
            },
        })
    }

    /// The method name this message is sent as.
    pub fn method(&self) -> &str {
        match self {
            ServerNotification::Notify(_) => method::NOTIFY,
            ServerNotification::SetDifficulty(_) => method::SET_DIFFICULTY,
            ServerNotification::SetExtranonce(_) => method::SET_EXTRANONCE,
            ServerNotification::SetVersionMask(_) => method::SET_VERSION_MASK,
            ServerNotification::Reconnect(_) => method::RECONNECT,
            ServerNotification::ShowMessage(_) => method::SHOW_MESSAGE,
            ServerNotification::GetVersion => method::GET_VERSION,
            ServerNotification::Unknown { method, .. } => method,
        }
    }

    /// The params as they go on the wire.
    pub fn params(&self) -> Value {
        match self {
            ServerNotification::Notify(n) => n.params(),
            ServerNotification::SetDifficulty(d) => json!([d]),
            ServerNotification::SetExtranonce(s) => {
                json!([hex::encode(&s.extranonce1), s.extranonce2_size])
            }
            ServerNotification::SetVersionMask(mask) => json!([u32_to_hex(*mask)]),
            ServerNotification::Reconnect(r) => r.params(),
            ServerNotification::ShowMessage(m) => json!([m]),
            ServerNotification::GetVersion => json!([]),
            ServerNotification::Unknown { params, .. } => params.clone(),
        }
    }
}

/// Checks an extranonce2 size against [`MAX_EXTRANONCE_LEN`].
pub(crate) fn extranonce2_size(size: u64) -> Result<usize, FieldError> {
    usize::try_from(size)
        .ok()
        .filter(|s| *s <= MAX_EXTRANONCE_LEN)
        .ok_or(FieldError::OutOfRange {
            field: "extranonce2_size",
        })
}

impl Notify {
    /// The notify for `job` under `job_id`. The fields map one to one: both types use header
    /// byte order for `prev_hash` and plain `u32` values, so no conversion happens here.
    pub fn from_job(job_id: String, job: &ExtendedJob, clean_jobs: bool) -> Notify {
        Notify {
            job_id,
            prev_hash: job.prev_hash,
            coinb1: job.coinbase_prefix.clone(),
            coinb2: job.coinbase_suffix.clone(),
            merkle_branch: job.merkle_branch.clone(),
            version: job.version,
            nbits: job.nbits,
            ntime: job.ntime,
            clean_jobs,
        }
    }

    /// The job this notify describes, in the share module's terms (the inverse of
    /// [`Notify::from_job`]; `job_id` and `clean_jobs` are not part of a job).
    pub fn into_job(self) -> ExtendedJob {
        ExtendedJob {
            version: self.version,
            prev_hash: self.prev_hash,
            coinbase_prefix: self.coinb1,
            coinbase_suffix: self.coinb2,
            merkle_branch: self.merkle_branch,
            nbits: self.nbits,
            ntime: self.ntime,
        }
    }

    fn parse(params: &Value) -> Result<Self, FieldError> {
        let p = Params::new(params)?;
        let branch = as_array(p.required(4, "merkle_branch")?, "merkle_branch")?;
        if branch.len() > MAX_MERKLE_BRANCH {
            return Err(FieldError::TooLong {
                field: "merkle_branch",
                max: MAX_MERKLE_BRANCH,
            });
        }
        let merkle_branch = branch
            .iter()
            .map(|h| parse_hash32(as_str(h, "merkle_branch")?, "merkle_branch"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Notify {
            job_id: p.str(0, "job_id")?.to_owned(),
            prev_hash: prev_hash_from_stratum(p.str(1, "prevhash")?)?,
            coinb1: parse_hex_bytes(p.str(2, "coinb1")?, "coinb1", MAX_COINBASE_PART)?,
            coinb2: parse_hex_bytes(p.str(3, "coinb2")?, "coinb2", MAX_COINBASE_PART)?,
            merkle_branch,
            version: u32_hex_value(p.required(5, "version")?, "version")?,
            nbits: u32_hex_value(p.required(6, "nbits")?, "nbits")?,
            ntime: u32_hex_value(p.required(7, "ntime")?, "ntime")?,
            clean_jobs: as_bool(p.required(8, "clean_jobs")?, "clean_jobs")?,
        })
    }

    fn params(&self) -> Value {
        let branch: Vec<String> = self.merkle_branch.iter().map(hex::encode).collect();
        json!([
            self.job_id,
            prev_hash_to_stratum(&self.prev_hash),
            hex::encode(&self.coinb1),
            hex::encode(&self.coinb2),
            branch,
            u32_to_hex(self.version),
            u32_to_hex(self.nbits),
            u32_to_hex(self.ntime),
            self.clean_jobs,
        ])
    }
}

impl Reconnect {
    fn parse(params: &Value) -> Result<Self, FieldError> {
        let p = Params::new(params)?;
        let port = match p.get(1) {
            None => None,
            Some(Value::String(s)) => Some(
                s.parse::<u16>()
                    .map_err(|_| FieldError::OutOfRange { field: "port" })?,
            ),
            Some(v) => Some(
                u16::try_from(as_u64(v, "port")?)
                    .map_err(|_| FieldError::OutOfRange { field: "port" })?,
            ),
        };
        Ok(Reconnect {
            host: p.opt_str(0, "host")?.map(str::to_owned),
            port,
            wait: p.get(2).map(|v| as_u64(v, "wait")).transpose()?,
        })
    }

    fn params(&self) -> Value {
        let mut v = vec![json!(self.host), json!(self.port), json!(self.wait)];
        // Trailing absent params are left out rather than sent as nulls.
        while v.last().is_some_and(Value::is_null) {
            v.pop();
        }
        Value::Array(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method_name: &str, params: Value) -> Result<ServerNotification, FieldError> {
        ServerNotification::parse(method_name, &params)
    }

    fn notify_params() -> Value {
        json!([
            "bf",
            "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000",
            "0100",
            "ff",
            ["3a5328ad196525bc87cc3ad830b0354d8b6e87fc2851f1af5dee89cfd773dacf"],
            "00000002",
            "1c2ac4af",
            "504e86b9",
            false
        ])
    }

    #[test]
    fn notify_fields_follow_the_conventions() {
        let Ok(ServerNotification::Notify(n)) = parse("mining.notify", notify_params()) else {
            panic!("notify did not parse")
        };
        assert_eq!((n.version, n.nbits, n.ntime), (2, 0x1c2a_c4af, 0x504e_86b9));
        assert_eq!(&n.prev_hash[..4], &[0xf8, 0xb6, 0x16, 0x4d]);
        assert_eq!(&n.prev_hash[28..], &[0, 0, 0, 0]);
        assert_eq!(n.merkle_branch[0][0], 0x3a);
        assert_eq!(ServerNotification::Notify(n).params(), notify_params());
    }

    #[test]
    fn notify_is_strict() {
        let mut p = notify_params();
        p[1] = json!("4d16");
        assert_eq!(
            parse("mining.notify", p),
            Err(FieldError::WrongLength {
                field: "prevhash",
                expected: 64,
                got: 4
            })
        );
        let mut p = notify_params();
        p[4] = json!(["00"]);
        assert_eq!(
            parse("mining.notify", p),
            Err(FieldError::WrongLength {
                field: "merkle_branch",
                expected: 64,
                got: 2
            })
        );
        let mut p = notify_params();
        p[8] = json!("true");
        assert_eq!(
            parse("mining.notify", p),
            Err(FieldError::WrongType {
                field: "clean_jobs",
                expected: "a boolean"
            })
        );
        let mut p = notify_params();
        p[4] = Value::Array(vec![json!("00"); 33]);
        assert_eq!(
            parse("mining.notify", p),
            Err(FieldError::TooLong {
                field: "merkle_branch",
                max: 32
            })
        );
    }

    #[test]
    fn reconnect_variants() {
        assert_eq!(
            parse("client.reconnect", json!([])),
            Ok(ServerNotification::Reconnect(Reconnect::default()))
        );
        let r = parse("client.reconnect", json!(["eu-01.example.com", "50814"])).unwrap();
        assert_eq!(
            r,
            ServerNotification::Reconnect(Reconnect {
                host: Some("eu-01.example.com".into()),
                port: Some(50814),
                wait: None
            })
        );
        assert_eq!(r.params(), json!(["eu-01.example.com", 50814]));
        let gap = ServerNotification::Reconnect(Reconnect {
            host: None,
            port: None,
            wait: Some(5),
        });
        assert_eq!(gap.params(), json!([null, null, 5]));
        assert_eq!(
            parse("client.reconnect", json!(["h", 70000])),
            Err(FieldError::OutOfRange { field: "port" })
        );
    }

    #[test]
    fn small_notifications() {
        assert_eq!(
            parse("mining.set_difficulty", json!([0.001])),
            Ok(ServerNotification::SetDifficulty(0.001))
        );
        assert_eq!(
            parse("mining.set_version_mask", json!(["00003000"])),
            Ok(ServerNotification::SetVersionMask(0x3000))
        );
        assert_eq!(
            parse("mining.set_extranonce", json!(["0001", 33])),
            Err(FieldError::OutOfRange {
                field: "extranonce2_size"
            })
        );
        assert!(matches!(
            parse("mining.set_target", json!(["00ff"])),
            Ok(ServerNotification::Unknown { .. })
        ));
    }
}
