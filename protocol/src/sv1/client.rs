//! Requests a miner sends to a pool (client → server): `mining.subscribe`,
//! `mining.authorize`, `mining.configure` (BIP310), `mining.submit`,
//! `mining.suggest_difficulty`, `mining.extranonce.subscribe`.
//!
//! Parsing is strict on field types and hex widths (a malformed share must be rejected with
//! a reason, not guessed at) and lenient on shape: missing or `null` params read as empty,
//! trailing extra params are ignored, and unknown methods become
//! [`ClientRequest::Unknown`] so that the caller can answer "unknown method" and carry on.

use serde_json::{Map, Value, json};

use super::error::FieldError;
use super::fields::{
    MAX_EXTRANONCE_LEN, Params, as_array, as_bit_count, as_difficulty, as_min_difficulty,
    as_object, as_str, parse_hex_bytes, parse_u32_hex, u32_hex_value, u32_to_hex,
};
use super::method;

/// A request from a miner, typed by method.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientRequest {
    /// `mining.subscribe`.
    Subscribe(Subscribe),
    /// `mining.authorize`.
    Authorize(Authorize),
    /// `mining.configure` (BIP310).
    Configure(Configure),
    /// `mining.submit`.
    Submit(Submit),
    /// `mining.suggest_difficulty`: the difficulty the miner would like.
    SuggestDifficulty(f64),
    /// `mining.extranonce.subscribe`: the miner understands `mining.set_extranonce`.
    ExtranonceSubscribe,
    /// Any other method, kept verbatim (e.g. `mining.get_transactions`, `mining.ping`).
    Unknown {
        /// The method name.
        method: String,
        /// The params as received (`null` when absent).
        params: Value,
    },
}

/// `mining.subscribe(["user agent", "session id", ...])`. Both params are optional; extra
/// params (host and port, as BOSminer and NiceHash-style clients send) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    /// The miner's user agent, e.g. `"bitaxe/BM1368/v2.4.0"`.
    pub user_agent: Option<String>,
    /// A session id (usually a previous extranonce1 or subscription id) the miner asks to
    /// resume. Kept as the opaque string it is.
    pub session_id: Option<String>,
}

/// `mining.authorize(["user", "password"])`; the password is optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorize {
    /// Worker or account name.
    pub user: String,
    /// Password (most pools ignore it; many miners send `"x"`).
    pub password: Option<String>,
}

/// `mining.configure([extensions, params])` (BIP310).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Configure {
    /// Extension codes in the order sent, known or not (`"version-rolling"`,
    /// `"minimum-difficulty"`, `"subscribe-extranonce"`, `"info"`, ...).
    pub extensions: Vec<String>,
    /// `version-rolling.mask`: the bits the miner can roll (BIP310 default when absent:
    /// `0xffffffff`).
    pub version_rolling_mask: Option<u32>,
    /// `version-rolling.min-bit-count`: how many bits the miner needs.
    pub version_rolling_min_bit_count: Option<u32>,
    /// `minimum-difficulty.value`: the lowest difficulty the miner accepts (>= 0).
    pub minimum_difficulty: Option<f64>,
    /// Every other parameter, kept verbatim (e.g. `info.hw-version`).
    pub other_params: Map<String, Value>,
}

/// `mining.submit([worker, job_id, extranonce2, ntime, nonce, version_bits?])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    /// Worker name as authorized.
    pub worker: String,
    /// Job id from `mining.notify`.
    pub job_id: String,
    /// Extranonce2 bytes, in the order the hex spells them (= coinbase order).
    pub extranonce2: Vec<u8>,
    /// Header time, the big-endian u32 the 8 hex characters spell.
    pub ntime: u32,
    /// Header nonce, the big-endian u32 the 8 hex characters spell.
    pub nonce: u32,
    /// BIP310 rolled version bits (6th param), when version rolling is on.
    pub version_bits: Option<u32>,
}

const KEY_MASK: &str = "version-rolling.mask";
const KEY_MIN_BITS: &str = "version-rolling.min-bit-count";
const KEY_MIN_DIFF: &str = "minimum-difficulty.value";

impl ClientRequest {
    /// Types a request from its method and params. Unknown methods never fail.
    ///
    /// # Errors
    /// A [`FieldError`] naming the offending field when a known method's params do not fit.
    pub fn parse(method_name: &str, params: &Value) -> Result<Self, FieldError> {
        Ok(match method_name {
            method::SUBSCRIBE => {
                let p = Params::new(params)?;
                ClientRequest::Subscribe(Subscribe {
                    user_agent: p.opt_str(0, "user_agent")?.map(str::to_owned),
                    session_id: p.opt_str(1, "session_id")?.map(str::to_owned),
                })
            }
            method::AUTHORIZE => {
                let p = Params::new(params)?;
                ClientRequest::Authorize(Authorize {
                    user: p.str(0, "user")?.to_owned(),
                    password: p.opt_str(1, "password")?.map(str::to_owned),
                })
            }
            method::CONFIGURE => ClientRequest::Configure(Configure::parse(params)?),
            method::SUBMIT => ClientRequest::Submit(Submit::parse(params)?),
            method::SUGGEST_DIFFICULTY => {
                let p = Params::new(params)?;
                ClientRequest::SuggestDifficulty(as_difficulty(
                    p.required(0, "difficulty")?,
                    "difficulty",
                )?)
            }
            method::EXTRANONCE_SUBSCRIBE => ClientRequest::ExtranonceSubscribe,
            other => ClientRequest::Unknown {
                method: other.to_owned(),
                params: params.clone(),
            },
        })
    }

    /// The method name this request is sent as.
    pub fn method(&self) -> &str {
        match self {
            ClientRequest::Subscribe(_) => method::SUBSCRIBE,
            ClientRequest::Authorize(_) => method::AUTHORIZE,
            ClientRequest::Configure(_) => method::CONFIGURE,
            ClientRequest::Submit(_) => method::SUBMIT,
            ClientRequest::SuggestDifficulty(_) => method::SUGGEST_DIFFICULTY,
            ClientRequest::ExtranonceSubscribe => method::EXTRANONCE_SUBSCRIBE,
            ClientRequest::Unknown { method, .. } => method,
        }
    }

    /// The params as they go on the wire.
    pub fn params(&self) -> Value {
        match self {
            ClientRequest::Subscribe(s) => match (&s.user_agent, &s.session_id) {
                (None, None) => json!([]),
                (ua, None) => json!([ua]),
                (ua, Some(session)) => json!([ua, session]),
            },
            ClientRequest::Authorize(a) => match &a.password {
                Some(password) => json!([a.user, password]),
                None => json!([a.user]),
            },
            ClientRequest::Configure(c) => c.params(),
            ClientRequest::Submit(s) => s.params(),
            ClientRequest::SuggestDifficulty(d) => json!([d]),
            ClientRequest::ExtranonceSubscribe => json!([]),
            ClientRequest::Unknown { params, .. } => params.clone(),
        }
    }
}

impl Configure {
    fn parse(params: &Value) -> Result<Self, FieldError> {
        let p = Params::new(params)?;
        let extensions = as_array(p.required(0, "extensions")?, "extensions")?
            .iter()
            .map(|e| as_str(e, "extensions").map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()?;
        let mut configure = Configure {
            extensions,
            ..Configure::default()
        };
        // BIP310 makes the parameter map required, but miners that only list extensions
        // without parameters (`[["subscribe-extranonce"]]`) exist; treat absence as empty.
        let Some(map) = p.get(1) else {
            return Ok(configure);
        };
        for (key, value) in as_object(map, "extension-parameters")? {
            match key.as_str() {
                KEY_MASK => configure.version_rolling_mask = Some(u32_hex_value(value, KEY_MASK)?),
                KEY_MIN_BITS => {
                    configure.version_rolling_min_bit_count =
                        Some(as_bit_count(value, KEY_MIN_BITS)?)
                }
                KEY_MIN_DIFF => {
                    configure.minimum_difficulty = Some(as_min_difficulty(value, KEY_MIN_DIFF)?)
                }
                _ => {
                    configure.other_params.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(configure)
    }

    fn params(&self) -> Value {
        let mut map = self.other_params.clone();
        if let Some(mask) = self.version_rolling_mask {
            map.insert(KEY_MASK.to_owned(), Value::String(u32_to_hex(mask)));
        }
        if let Some(bits) = self.version_rolling_min_bit_count {
            map.insert(KEY_MIN_BITS.to_owned(), Value::from(bits));
        }
        if let Some(diff) = self.minimum_difficulty {
            map.insert(KEY_MIN_DIFF.to_owned(), Value::from(diff));
        }
        json!([self.extensions, map])
    }

    /// Whether the miner listed extension `code` (e.g. [`super::extension::VERSION_ROLLING`]).
    pub fn has_extension(&self, code: &str) -> bool {
        self.extensions.iter().any(|e| e == code)
    }
}

impl Submit {
    fn parse(params: &Value) -> Result<Self, FieldError> {
        let p = Params::new(params)?;
        Ok(Submit {
            worker: p.str(0, "worker")?.to_owned(),
            job_id: p.str(1, "job_id")?.to_owned(),
            extranonce2: parse_hex_bytes(
                p.str(2, "extranonce2")?,
                "extranonce2",
                MAX_EXTRANONCE_LEN,
            )?,
            ntime: parse_u32_hex(p.str(3, "ntime")?, "ntime")?,
            nonce: parse_u32_hex(p.str(4, "nonce")?, "nonce")?,
            version_bits: p
                .opt_str(5, "version_bits")?
                .map(|s| parse_u32_hex(s, "version_bits"))
                .transpose()?,
        })
    }

    fn params(&self) -> Value {
        let mut v = vec![
            Value::String(self.worker.clone()),
            Value::String(self.job_id.clone()),
            Value::String(hex::encode(&self.extranonce2)),
            Value::String(u32_to_hex(self.ntime)),
            Value::String(u32_to_hex(self.nonce)),
        ];
        if let Some(bits) = self.version_bits {
            v.push(Value::String(u32_to_hex(bits)));
        }
        Value::Array(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method_name: &str, params: Value) -> Result<ClientRequest, FieldError> {
        ClientRequest::parse(method_name, &params)
    }

    #[test]
    fn subscribe_variants() {
        assert_eq!(
            parse("mining.subscribe", json!([])),
            Ok(ClientRequest::Subscribe(Subscribe::default()))
        );
        assert_eq!(
            parse("mining.subscribe", Value::Null),
            Ok(ClientRequest::Subscribe(Subscribe::default()))
        );
        let s = parse(
            "mining.subscribe",
            json!(["bos", null, "10.0.0.1:3333", null]),
        )
        .unwrap();
        assert_eq!(
            s,
            ClientRequest::Subscribe(Subscribe {
                user_agent: Some("bos".into()),
                session_id: None
            })
        );
        assert_eq!(s.params(), json!(["bos"]));
        assert_eq!(
            parse("mining.subscribe", json!([1])),
            Err(FieldError::WrongType {
                field: "user_agent",
                expected: "a string"
            })
        );
    }

    #[test]
    fn submit_with_and_without_version_bits() {
        let five = parse(
            "mining.submit",
            json!(["w", "bf", "00000001", "504e86ed", "b2957c02"]),
        )
        .unwrap();
        let ClientRequest::Submit(s) = &five else {
            panic!("not a submit")
        };
        assert_eq!(
            (s.ntime, s.nonce, s.version_bits),
            (0x504e_86ed, 0xb295_7c02, None)
        );
        assert_eq!(s.extranonce2, vec![0, 0, 0, 1]);
        let six = parse(
            "mining.submit",
            json!([
                "w",
                "j",
                "ea3e000000000000",
                "67136b82",
                "d20c0004",
                "040d0000"
            ]),
        );
        let Ok(ClientRequest::Submit(s)) = six else {
            panic!("not a submit")
        };
        assert_eq!(s.version_bits, Some(0x040d_0000));
        assert_eq!(
            parse(
                "mining.submit",
                json!(["w", "j", "000", "67136b82", "d20c0004"])
            ),
            Err(FieldError::BadHex {
                field: "extranonce2"
            })
        );
        assert_eq!(
            parse(
                "mining.submit",
                json!(["w", "j", "00", "67136b8", "d20c0004"])
            ),
            Err(FieldError::WrongLength {
                field: "ntime",
                expected: 8,
                got: 7
            })
        );
        assert_eq!(
            parse("mining.submit", json!(["w", "j", "00", "67136b82"])),
            Err(FieldError::Missing { field: "nonce" })
        );
        assert_eq!(
            parse(
                "mining.submit",
                json!(["w", 5, "00", "67136b82", "d20c0004"])
            ),
            Err(FieldError::WrongType {
                field: "job_id",
                expected: "a string"
            })
        );
    }

    #[test]
    fn configure_keeps_unknown_extensions() {
        let c = parse(
            "mining.configure",
            json!([["version-rolling", "info"], {"version-rolling.mask": "1fffe000", "info.hw-id": "abc"}]),
        )
        .unwrap();
        let ClientRequest::Configure(c) = c else {
            panic!("not configure")
        };
        assert!(c.has_extension("info"));
        assert_eq!(c.version_rolling_mask, Some(0x1fff_e000));
        assert_eq!(c.other_params.get("info.hw-id"), Some(&json!("abc")));
        assert_eq!(
            parse(
                "mining.configure",
                json!([["version-rolling"], {"version-rolling.mask": 5}])
            ),
            Err(FieldError::WrongType {
                field: "version-rolling.mask",
                expected: "a string"
            })
        );
        assert_eq!(
            parse("mining.configure", json!(["version-rolling"])),
            Err(FieldError::WrongType {
                field: "extensions",
                expected: "an array"
            })
        );
    }

    #[test]
    fn unknown_methods_are_kept() {
        let u = parse("mining.get_transactions", json!(["1"])).unwrap();
        assert_eq!(u.method(), "mining.get_transactions");
        assert_eq!(u.params(), json!(["1"]));
    }
}
