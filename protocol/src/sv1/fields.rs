//! Field-level parsing shared by every message: positional params, the hex conventions of
//! Stratum V1, difficulties. Every function names the field it reads, so errors say which
//! one was wrong (see the byte conventions in the [module docs](super)).

use serde_json::{Map, Value};

use super::error::FieldError;

/// Longest extranonce (extranonce1, extranonce2, and `extranonce2_size`) accepted, in bytes.
/// Real pools use 2 to 24 bytes; 32 bounds what a peer can make us allocate or promise.
pub const MAX_EXTRANONCE_LEN: usize = 32;

/// Most merkle branch entries accepted in `mining.notify`: a block of 2^32 transactions
/// would need 32, so anything longer is garbage.
pub const MAX_MERKLE_BRANCH: usize = 32;

/// Positional JSON-RPC params. `null` or absent params read as an empty list (some miners
/// send `"params":null` for parameterless calls); extra trailing params are ignored.
pub(crate) struct Params<'a> {
    items: &'a [Value],
}

impl<'a> Params<'a> {
    /// Wraps a `params` value, which must be an array (or null).
    pub(crate) fn new(params: &'a Value) -> Result<Self, FieldError> {
        match params {
            Value::Null => Ok(Params { items: &[] }),
            Value::Array(items) => Ok(Params { items }),
            _ => Err(FieldError::WrongType {
                field: "params",
                expected: "an array",
            }),
        }
    }

    /// Param `index`; `None` when absent or `null`.
    pub(crate) fn get(&self, index: usize) -> Option<&'a Value> {
        self.items.get(index).filter(|v| !v.is_null())
    }

    /// Param `index`, required.
    pub(crate) fn required(
        &self,
        index: usize,
        field: &'static str,
    ) -> Result<&'a Value, FieldError> {
        self.get(index).ok_or(FieldError::Missing { field })
    }

    /// Required string param.
    pub(crate) fn str(&self, index: usize, field: &'static str) -> Result<&'a str, FieldError> {
        as_str(self.required(index, field)?, field)
    }

    /// Optional string param (`null` and absent both read as `None`).
    pub(crate) fn opt_str(
        &self,
        index: usize,
        field: &'static str,
    ) -> Result<Option<&'a str>, FieldError> {
        self.get(index).map(|v| as_str(v, field)).transpose()
    }
}

/// The value as a string.
pub(crate) fn as_str<'v>(value: &'v Value, field: &'static str) -> Result<&'v str, FieldError> {
    value.as_str().ok_or(FieldError::WrongType {
        field,
        expected: "a string",
    })
}

/// The value as a boolean.
pub(crate) fn as_bool(value: &Value, field: &'static str) -> Result<bool, FieldError> {
    value.as_bool().ok_or(FieldError::WrongType {
        field,
        expected: "a boolean",
    })
}

/// The value as a JSON object.
pub(crate) fn as_object<'v>(
    value: &'v Value,
    field: &'static str,
) -> Result<&'v Map<String, Value>, FieldError> {
    value.as_object().ok_or(FieldError::WrongType {
        field,
        expected: "an object",
    })
}

/// The value as an array.
pub(crate) fn as_array<'v>(
    value: &'v Value,
    field: &'static str,
) -> Result<&'v [Value], FieldError> {
    value
        .as_array()
        .map(Vec::as_slice)
        .ok_or(FieldError::WrongType {
            field,
            expected: "an array",
        })
}

/// A non-negative JSON integer.
pub(crate) fn as_u64(value: &Value, field: &'static str) -> Result<u64, FieldError> {
    match value {
        Value::Number(n) => n.as_u64().ok_or(FieldError::OutOfRange { field }),
        _ => Err(FieldError::WrongType {
            field,
            expected: "a non-negative integer",
        }),
    }
}

/// A difficulty: a JSON integer or float, finite and strictly positive (values below 1 are
/// valid: solo and CPU pools use them).
pub(crate) fn as_difficulty(value: &Value, field: &'static str) -> Result<f64, FieldError> {
    let n = value.as_f64().ok_or(FieldError::WrongType {
        field,
        expected: "a number",
    })?;
    if n.is_finite() && n > 0.0 {
        Ok(n)
    } else {
        Err(FieldError::OutOfRange { field })
    }
}

/// A difficulty that may also be 0 (BIP310's `minimum-difficulty.value` is `>= 0`).
pub(crate) fn as_min_difficulty(value: &Value, field: &'static str) -> Result<f64, FieldError> {
    let n = value.as_f64().ok_or(FieldError::WrongType {
        field,
        expected: "a number",
    })?;
    if n.is_finite() && n >= 0.0 {
        Ok(n)
    } else {
        Err(FieldError::OutOfRange { field })
    }
}

/// An 8-hex-character big-endian u32 (`version`, `nbits`, `ntime`, `nonce`, masks).
pub(crate) fn parse_u32_hex(s: &str, field: &'static str) -> Result<u32, FieldError> {
    let mut bytes = [0u8; 4];
    decode_fixed(s, field, &mut bytes)?;
    Ok(u32::from_be_bytes(bytes))
}

/// A u32 field read from a JSON value holding 8 hex characters.
pub(crate) fn u32_hex_value(value: &Value, field: &'static str) -> Result<u32, FieldError> {
    parse_u32_hex(as_str(value, field)?, field)
}

/// Encodes a u32 as 8 lowercase hex characters, big-endian.
pub(crate) fn u32_to_hex(v: u32) -> String {
    format!("{v:08x}")
}

/// A bit count sent as a JSON integer or, as some servers do in configure results, as an
/// 8-hex-character TMask (`"00000010"` = 16).
pub(crate) fn as_bit_count(value: &Value, field: &'static str) -> Result<u32, FieldError> {
    match value {
        Value::String(s) => parse_u32_hex(s, field),
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(FieldError::OutOfRange { field }),
        _ => Err(FieldError::WrongType {
            field,
            expected: "an integer or 8 hex characters",
        }),
    }
}

/// Exactly 64 hex characters into 32 bytes, in the order the hex spells them.
pub(crate) fn parse_hash32(s: &str, field: &'static str) -> Result<[u8; 32], FieldError> {
    let mut out = [0u8; 32];
    decode_fixed(s, field, &mut out)?;
    Ok(out)
}

/// Even-length hex of at most `max` bytes into bytes. The length is checked before any
/// allocation.
pub(crate) fn parse_hex_bytes(
    s: &str,
    field: &'static str,
    max: usize,
) -> Result<Vec<u8>, FieldError> {
    if s.len() % 2 != 0 {
        return Err(FieldError::BadHex { field });
    }
    if s.len() / 2 > max {
        return Err(FieldError::TooLong { field, max });
    }
    hex::decode(s).map_err(|_| FieldError::BadHex { field })
}

fn decode_fixed(s: &str, field: &'static str, out: &mut [u8]) -> Result<(), FieldError> {
    let expected = out.len() * 2;
    if s.len() != expected {
        return Err(FieldError::WrongLength {
            field,
            expected,
            got: s.len(),
        });
    }
    hex::decode_to_slice(s, out).map_err(|_| FieldError::BadHex { field })
}

/// Reverses the bytes of each 4-byte word. Converting between Stratum's `prevhash` spelling
/// and header byte order is this same involution in both directions.
pub(crate) fn swap_words(bytes: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (dst, src) in out.chunks_exact_mut(4).zip(bytes.chunks_exact(4)) {
        for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
            *d = *s;
        }
    }
    out
}

/// Parses Stratum's `prevhash` (64 hex characters, each 4-byte word byte-reversed) into the
/// 32 bytes as they appear in the block header.
pub fn prev_hash_from_stratum(s: &str) -> Result<[u8; 32], FieldError> {
    parse_hash32(s, "prevhash").map(|b| swap_words(&b))
}

/// Spells header-order previous-block-hash bytes the way `mining.notify` sends them.
pub fn prev_hash_to_stratum(header_order: &[u8; 32]) -> String {
    hex::encode(swap_words(header_order))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn u32_hex_is_big_endian_and_strict() {
        assert_eq!(parse_u32_hex("20000000", "version"), Ok(0x2000_0000));
        assert_eq!(parse_u32_hex("1FFFE000", "mask"), Ok(0x1fff_e000));
        assert_eq!(u32_to_hex(0x1fff_e000), "1fffe000");
        assert_eq!(
            parse_u32_hex("2000000", "version"),
            Err(FieldError::WrongLength {
                field: "version",
                expected: 8,
                got: 7
            })
        );
        assert_eq!(
            parse_u32_hex("2000000g", "version"),
            Err(FieldError::BadHex { field: "version" })
        );
        assert_eq!(
            parse_u32_hex("0x200000", "version"),
            Err(FieldError::BadHex { field: "version" })
        );
    }

    #[test]
    fn hex_bytes_need_even_length_and_a_bound() {
        assert_eq!(parse_hex_bytes("", "x", 4), Ok(vec![]));
        assert_eq!(parse_hex_bytes("0a0B", "x", 4), Ok(vec![0x0a, 0x0b]));
        assert_eq!(
            parse_hex_bytes("0a0", "x", 4),
            Err(FieldError::BadHex { field: "x" })
        );
        assert_eq!(
            parse_hex_bytes("zz", "x", 4),
            Err(FieldError::BadHex { field: "x" })
        );
        assert_eq!(
            parse_hex_bytes("0000000000", "x", 4),
            Err(FieldError::TooLong { field: "x", max: 4 })
        );
    }

    /// Block 1's header stores the genesis hash
    /// 000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f as its little-endian
    /// bytes; a pool mining on top of genesis sends those bytes word-swapped.
    #[test]
    fn prevhash_word_swap_against_genesis() {
        let display = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";
        let mut header_order = [0u8; 32];
        hex::decode_to_slice(display, &mut header_order).unwrap();
        header_order.reverse();
        assert_eq!(
            hex::encode(header_order),
            "6fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000"
        );
        let stratum = "0a8ce26f72b3f1b646a2a6c14ff763ae65831e939c085ae10019d66800000000";
        assert_eq!(prev_hash_to_stratum(&header_order), stratum);
        assert_eq!(prev_hash_from_stratum(stratum), Ok(header_order));
    }

    #[test]
    fn difficulties() {
        assert_eq!(as_difficulty(&json!(1024), "d"), Ok(1024.0));
        assert_eq!(as_difficulty(&json!(0.0001), "d"), Ok(0.0001));
        assert_eq!(
            as_difficulty(&json!(0), "d"),
            Err(FieldError::OutOfRange { field: "d" })
        );
        assert_eq!(
            as_difficulty(&json!(-1), "d"),
            Err(FieldError::OutOfRange { field: "d" })
        );
        assert_eq!(
            as_difficulty(&json!("1"), "d"),
            Err(FieldError::WrongType {
                field: "d",
                expected: "a number"
            })
        );
        assert_eq!(as_min_difficulty(&json!(0), "d"), Ok(0.0));
    }

    #[test]
    fn bit_counts_accept_integers_and_tmask() {
        assert_eq!(as_bit_count(&json!(16), "b"), Ok(16));
        assert_eq!(as_bit_count(&json!("00000010"), "b"), Ok(16));
        assert_eq!(
            as_bit_count(&json!(1u64 << 40), "b"),
            Err(FieldError::OutOfRange { field: "b" })
        );
    }

    #[test]
    fn params_treat_null_as_absent() {
        let v = json!(["a", null]);
        let p = Params::new(&v).unwrap();
        assert_eq!(p.opt_str(1, "x"), Ok(None));
        assert_eq!(p.opt_str(5, "x"), Ok(None));
        assert_eq!(p.str(1, "x"), Err(FieldError::Missing { field: "x" }));
        assert!(Params::new(&Value::Null).is_ok());
        assert!(Params::new(&json!({"a": 1})).is_err());
    }
}
