//! Responses (`{"id":..,"result":..,"error":..}`) and interpreters for the results a proxy
//! needs.
//!
//! JSON-RPC responses do not name their method, so a [`Response`] keeps `result` as a raw
//! JSON value; the caller, which knows what it asked, reads it with
//! [`Response::subscribe_result`], [`Response::configure_result`] or
//! [`Response::as_bool`]. Errors are encoded the Stratum way, `[code, "message", null]`,
//! and parsed tolerantly: pools also send `{"code":..,"message":..}`, bare strings, and
//! two-element arrays.

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value, json};

use super::error::FieldError;
use super::fields::{
    MAX_EXTRANONCE_LEN, as_array, as_bit_count, as_object, as_str, as_u64, parse_hex_bytes,
    u32_hex_value, u32_to_hex,
};
use super::id::Id;
use super::server::extranonce2_size;
use super::{extension, method};

/// A JSON-RPC response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The id of the request answered, echoed exactly.
    pub id: Id,
    /// The result (`null` when absent or on error).
    pub result: Value,
    /// The error, if any (`null`, `false` and absence all read as `None`).
    pub error: Option<StratumError>,
}

impl Response {
    /// A successful response.
    pub fn ok(id: Id, result: Value) -> Self {
        Response {
            id,
            result,
            error: None,
        }
    }

    /// A boolean response, as answers to `mining.authorize` and `mining.submit` are.
    pub fn boolean(id: Id, accepted: bool) -> Self {
        Response::ok(id, Value::Bool(accepted))
    }

    /// An error response: `result` is `null`.
    pub fn error(id: Id, error: StratumError) -> Self {
        Response {
            id,
            result: Value::Null,
            error: Some(error),
        }
    }

    /// Reads a response from the members of a JSON object (after `id` has been taken out).
    pub(crate) fn from_members(id: Id, result: Option<Value>, error: Option<Value>) -> Self {
        Response {
            id,
            result: result.unwrap_or(Value::Null),
            error: error.and_then(StratumError::from_json),
        }
    }

    /// Reads the boolean answer to `mining.authorize` or `mining.submit`: `true` only when
    /// `result` is `true` and there is no error; `false` for `false`, `null`, or any error.
    ///
    /// # Errors
    /// [`FieldError::WrongType`] when there is no error and `result` is neither a boolean
    /// nor null.
    pub fn as_bool(&self) -> Result<bool, FieldError> {
        match (&self.result, &self.error) {
            (_, Some(_)) | (Value::Null, None) => Ok(false),
            (Value::Bool(b), None) => Ok(*b),
            _ => Err(FieldError::WrongType {
                field: "result",
                expected: "a boolean",
            }),
        }
    }

    /// Interprets `result` as the answer to `mining.subscribe`.
    ///
    /// # Errors
    /// See [`SubscribeResult::from_result`].
    pub fn subscribe_result(&self) -> Result<SubscribeResult, FieldError> {
        SubscribeResult::from_result(&self.result)
    }

    /// Interprets `result` as the answer to `mining.configure`.
    ///
    /// # Errors
    /// See [`ConfigureResult::from_result`].
    pub fn configure_result(&self) -> Result<ConfigureResult, FieldError> {
        ConfigureResult::from_result(&self.result)
    }
}

impl Serialize for Response {
    /// `{"id":..,"result":..,"error":..}` in that order, as pools send it.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Response", 3)?;
        s.serialize_field("id", &self.id)?;
        s.serialize_field("result", &self.result)?;
        s.serialize_field("error", &self.error)?;
        s.end()
    }
}

/// The standard Stratum V1 error codes (from the original slush pool documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 20: other or unknown error.
    Other = 20,
    /// 21: job not found (a stale share).
    JobNotFound = 21,
    /// 22: duplicate share.
    DuplicateShare = 22,
    /// 23: share above target (low difficulty).
    LowDifficulty = 23,
    /// 24: unauthorized worker.
    UnauthorizedWorker = 24,
    /// 25: not subscribed.
    NotSubscribed = 25,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The code for a number, if it is one of the standard ones.
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            20 => ErrorCode::Other,
            21 => ErrorCode::JobNotFound,
            22 => ErrorCode::DuplicateShare,
            23 => ErrorCode::LowDifficulty,
            24 => ErrorCode::UnauthorizedWorker,
            25 => ErrorCode::NotSubscribed,
            _ => return None,
        })
    }

    /// The conventional message for the code.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::Other => "Other/Unknown",
            ErrorCode::JobNotFound => "Job not found",
            ErrorCode::DuplicateShare => "Duplicate share",
            ErrorCode::LowDifficulty => "Low difficulty share",
            ErrorCode::UnauthorizedWorker => "Unauthorized worker",
            ErrorCode::NotSubscribed => "Not subscribed",
        }
    }
}

/// A Stratum error: a numeric code and a message. Encoded as `[code, "message", null]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StratumError {
    /// The code; standard ones are [`ErrorCode`]s, pools also use others (e.g. Antpool's 40
    /// or JSON-RPC's -32601).
    pub code: i64,
    /// Human-readable message.
    pub message: String,
}

impl StratumError {
    /// An error with a standard code and its conventional message.
    pub fn new(code: ErrorCode) -> Self {
        StratumError {
            code: code.code(),
            message: code.message().to_owned(),
        }
    }

    /// An error with a standard code and a custom message.
    pub fn with_message(code: ErrorCode, message: impl Into<String>) -> Self {
        StratumError {
            code: code.code(),
            message: message.into(),
        }
    }

    /// The standard code, if this is one.
    pub fn kind(&self) -> Option<ErrorCode> {
        ErrorCode::from_code(self.code)
    }

    /// Reads an `error` member tolerantly; never fails. `null` and `false` mean "no error".
    /// Arrays read `[code, message, ...]`, objects `{code, message}`; a bare string is a
    /// message with code 20; anything unreadable keeps its JSON text as the message and
    /// code 20, so the caller still sees that the pool reported an error.
    pub fn from_json(value: Value) -> Option<Self> {
        let other = ErrorCode::Other.code();
        let (code, message) = match value {
            Value::Null | Value::Bool(false) => return None,
            Value::String(message) => (other, message),
            Value::Array(items) => (
                items.first().and_then(code_of).unwrap_or(other),
                items.get(1).map(message_of).unwrap_or_default(),
            ),
            Value::Object(map) => (
                map.get("code").and_then(code_of).unwrap_or(other),
                map.get("message").map(message_of).unwrap_or_default(),
            ),
            Value::Number(n) => (n.as_i64().unwrap_or(other), String::new()),
            Value::Bool(true) => (other, String::new()),
        };
        Some(StratumError { code, message })
    }
}

fn code_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn message_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Serialize for StratumError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.code, &self.message, ()).serialize(serializer)
    }
}

impl std::fmt::Display for StratumError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stratum error {}: {}", self.code, self.message)
    }
}

/// The result of `mining.subscribe`:
/// `[[["mining.set_difficulty", sid], ["mining.notify", sid]], extranonce1, extranonce2_size]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeResult {
    /// `(method, subscription id)` pairs, in the order sent (may be empty).
    pub subscriptions: Vec<(String, String)>,
    /// Extranonce1 bytes.
    pub extranonce1: Vec<u8>,
    /// Extranonce2 size in bytes.
    pub extranonce2_size: usize,
}

impl SubscribeResult {
    /// Reads a subscribe result. Tolerated variants: a list of pairs, a single flat pair
    /// (`[["mining.notify", sid], en1, size]`), `null` or `[]` subscriptions, pairs with extra
    /// members, and the two-element form without subscriptions (`[en1, size]`).
    ///
    /// # Errors
    /// A [`FieldError`] when the shape or a field is wrong (extranonce1 must be even-length
    /// hex, extranonce2_size an integer, both at most 32 bytes).
    pub fn from_result(result: &Value) -> Result<Self, FieldError> {
        let items = as_array(result, "result")?;
        let (subs, en1, size) = match items {
            [en1 @ Value::String(_), size] => (&Value::Null, en1, size),
            [subs, en1, size, ..] => (subs, en1, size),
            _ => {
                return Err(FieldError::Missing {
                    field: "extranonce2_size",
                });
            }
        };
        let subscriptions = match subs {
            Value::Null => Vec::new(),
            Value::Array(list) if list.first().is_some_and(Value::is_string) => vec![pair(list)?],
            Value::Array(list) => list
                .iter()
                .map(|p| pair(as_array(p, "subscriptions")?))
                .collect::<Result<Vec<_>, _>>()?,
            _ => {
                return Err(FieldError::WrongType {
                    field: "subscriptions",
                    expected: "an array",
                });
            }
        };
        Ok(SubscribeResult {
            subscriptions,
            extranonce1: parse_hex_bytes(
                as_str(en1, "extranonce1")?,
                "extranonce1",
                MAX_EXTRANONCE_LEN,
            )?,
            extranonce2_size: extranonce2_size(as_u64(size, "extranonce2_size")?)?,
        })
    }

    /// The result value in the canonical nested form.
    pub fn to_result(&self) -> Value {
        let subs: Vec<Value> = self
            .subscriptions
            .iter()
            .map(|(m, id)| json!([m, id]))
            .collect();
        json!([subs, hex::encode(&self.extranonce1), self.extranonce2_size])
    }

    /// The usual two subscriptions (`mining.set_difficulty` and `mining.notify`) sharing
    /// one subscription id.
    pub fn standard(subscription_id: &str, extranonce1: Vec<u8>, extranonce2_size: usize) -> Self {
        SubscribeResult {
            subscriptions: vec![
                (
                    method::SET_DIFFICULTY.to_owned(),
                    subscription_id.to_owned(),
                ),
                (method::NOTIFY.to_owned(), subscription_id.to_owned()),
            ],
            extranonce1,
            extranonce2_size,
        }
    }
}

fn pair(items: &[Value]) -> Result<(String, String), FieldError> {
    match items {
        [m, id, ..] => Ok((
            as_str(m, "subscriptions")?.to_owned(),
            as_str(id, "subscriptions")?.to_owned(),
        )),
        _ => Err(FieldError::Missing {
            field: "subscriptions",
        }),
    }
}

/// BIP310 `TExtensionResult`: `true`, `false`, or an error string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionResult {
    /// `true`: supported and configured.
    Accepted,
    /// `false`: unsupported or unknown.
    Rejected,
    /// A string: what went wrong.
    Error(String),
}

impl ExtensionResult {
    fn from_json(value: &Value, field: &'static str) -> Result<Self, FieldError> {
        match value {
            Value::Bool(true) => Ok(ExtensionResult::Accepted),
            Value::Bool(false) => Ok(ExtensionResult::Rejected),
            Value::String(s) => Ok(ExtensionResult::Error(s.clone())),
            _ => Err(FieldError::WrongType {
                field,
                expected: "a boolean or a string",
            }),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            ExtensionResult::Accepted => Value::Bool(true),
            ExtensionResult::Rejected => Value::Bool(false),
            ExtensionResult::Error(s) => Value::String(s.clone()),
        }
    }
}

/// The result of `mining.configure` (BIP310), e.g.
/// `{"version-rolling": true, "version-rolling.mask": "1fffe000", "minimum-difficulty": true}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigureResult {
    /// `version-rolling`.
    pub version_rolling: Option<ExtensionResult>,
    /// `version-rolling.mask`: the bits the miner may roll.
    pub version_rolling_mask: Option<u32>,
    /// `version-rolling.min-bit-count` (integer or TMask hex string on input, integer on
    /// output).
    pub version_rolling_min_bit_count: Option<u32>,
    /// `minimum-difficulty`.
    pub minimum_difficulty: Option<ExtensionResult>,
    /// `subscribe-extranonce`.
    pub subscribe_extranonce: Option<ExtensionResult>,
    /// Every other member, kept verbatim.
    pub other: Map<String, Value>,
}

const RES_MASK: &str = "version-rolling.mask";
const RES_MIN_BITS: &str = "version-rolling.min-bit-count";

impl ConfigureResult {
    /// Reads a configure result object.
    ///
    /// # Errors
    /// [`FieldError::WrongType`] if `result` is not an object (a pool that does not know
    /// `mining.configure` answers `null` plus an error: treat that as "no extensions"), or
    /// a field error for a malformed known member.
    pub fn from_result(result: &Value) -> Result<Self, FieldError> {
        let mut out = ConfigureResult::default();
        for (key, value) in as_object(result, "result")? {
            match key.as_str() {
                extension::VERSION_ROLLING => {
                    out.version_rolling = Some(ExtensionResult::from_json(
                        value,
                        extension::VERSION_ROLLING,
                    )?);
                }
                RES_MASK => out.version_rolling_mask = Some(u32_hex_value(value, RES_MASK)?),
                RES_MIN_BITS => {
                    out.version_rolling_min_bit_count = Some(as_bit_count(value, RES_MIN_BITS)?)
                }
                extension::MINIMUM_DIFFICULTY => {
                    out.minimum_difficulty = Some(ExtensionResult::from_json(
                        value,
                        extension::MINIMUM_DIFFICULTY,
                    )?);
                }
                extension::SUBSCRIBE_EXTRANONCE => {
                    out.subscribe_extranonce = Some(ExtensionResult::from_json(
                        value,
                        extension::SUBSCRIBE_EXTRANONCE,
                    )?);
                }
                _ => {
                    out.other.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(out)
    }

    /// The result object.
    pub fn to_result(&self) -> Value {
        let mut map = self.other.clone();
        let mut put = |key: &str, v: Option<Value>| {
            if let Some(v) = v {
                map.insert(key.to_owned(), v);
            }
        };
        put(
            extension::VERSION_ROLLING,
            self.version_rolling.as_ref().map(ExtensionResult::to_json),
        );
        put(
            RES_MASK,
            self.version_rolling_mask
                .map(|m| Value::String(u32_to_hex(m))),
        );
        put(
            RES_MIN_BITS,
            self.version_rolling_min_bit_count.map(Value::from),
        );
        put(
            extension::MINIMUM_DIFFICULTY,
            self.minimum_difficulty
                .as_ref()
                .map(ExtensionResult::to_json),
        );
        put(
            extension::SUBSCRIBE_EXTRANONCE,
            self.subscribe_extranonce
                .as_ref()
                .map(ExtensionResult::to_json),
        );
        Value::Object(map)
    }

    /// The negotiated version-rolling mask: `Some` only when version rolling was accepted
    /// and a mask was given.
    pub fn negotiated_mask(&self) -> Option<u32> {
        match self.version_rolling {
            Some(ExtensionResult::Accepted) => self.version_rolling_mask,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_parse_tolerantly() {
        let e = |v| StratumError::from_json(v);
        assert_eq!(e(json!(null)), None);
        assert_eq!(e(json!(false)), None);
        assert_eq!(
            e(json!([21, "Job not found", null])),
            Some(StratumError::new(ErrorCode::JobNotFound))
        );
        assert_eq!(e(json!([40, "unfit, ignore"])).map(|x| x.code), Some(40));
        assert_eq!(
            e(json!({"code": 23, "message": "Invalid share"})),
            Some(StratumError::with_message(
                ErrorCode::LowDifficulty,
                "Invalid share"
            ))
        );
        assert_eq!(
            e(json!("stale")),
            Some(StratumError::with_message(ErrorCode::Other, "stale"))
        );
        assert_eq!(
            e(json!(["22", 5])).map(|x| (x.code, x.message)),
            Some((22, "5".into()))
        );
        assert_eq!(e(json!([])).map(|x| x.code), Some(20));
        assert_eq!(
            serde_json::to_string(&StratumError::new(ErrorCode::DuplicateShare)).unwrap(),
            r#"[22,"Duplicate share",null]"#
        );
    }

    #[test]
    fn responses_encode_in_pool_order() {
        let r = Response::boolean(Id::from(1), true);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"id":1,"result":true,"error":null}"#
        );
        let r = Response::error(
            Id::from("7"),
            StratumError::new(ErrorCode::UnauthorizedWorker),
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"id":"7","result":null,"error":[24,"Unauthorized worker",null]}"#
        );
        assert_eq!(r.as_bool(), Ok(false));
        assert!(Response::ok(Id::Null, json!(5)).as_bool().is_err());
    }

    #[test]
    fn subscribe_result_variants() {
        let nested = json!([
            [["mining.set_difficulty", "a"], ["mining.notify", "b"]],
            "08000002",
            4
        ]);
        let r = SubscribeResult::from_result(&nested).unwrap();
        assert_eq!(r.subscriptions.len(), 2);
        assert_eq!(r.extranonce1, vec![8, 0, 0, 2]);
        assert_eq!(r.to_result(), nested);
        let flat = SubscribeResult::from_result(&json!([["mining.notify", "ae68"], "f800002e", 4]))
            .unwrap();
        assert_eq!(
            flat.subscriptions,
            vec![("mining.notify".to_owned(), "ae68".to_owned())]
        );
        let none = SubscribeResult::from_result(&json!([null, "2f2e650700027768", 8])).unwrap();
        assert!(none.subscriptions.is_empty());
        let two = SubscribeResult::from_result(&json!(["0001", 6])).unwrap();
        assert_eq!((two.extranonce1, two.extranonce2_size), (vec![0, 1], 6));
        assert_eq!(
            SubscribeResult::from_result(&json!([[], "0001", 33])),
            Err(FieldError::OutOfRange {
                field: "extranonce2_size"
            })
        );
        assert_eq!(
            SubscribeResult::from_result(&json!([[], "001", 4])),
            Err(FieldError::BadHex {
                field: "extranonce1"
            })
        );
    }

    #[test]
    fn configure_result() {
        let v = json!({"version-rolling": true, "version-rolling.mask": "18000000", "minimum-difficulty": "too low", "x": 1});
        let r = ConfigureResult::from_result(&v).unwrap();
        assert_eq!(r.negotiated_mask(), Some(0x1800_0000));
        assert_eq!(
            r.minimum_difficulty,
            Some(ExtensionResult::Error("too low".into()))
        );
        assert_eq!(r.to_result(), v);
        let off = ConfigureResult::from_result(&json!({"version-rolling": false})).unwrap();
        assert_eq!(off.negotiated_mask(), None);
        assert!(ConfigureResult::from_result(&Value::Null).is_err());
    }
}
