//! JSON-RPC message ids.
//!
//! Stratum V1 peers use numbers, strings (some firmwares send `"id":"1"`) and `null` (for
//! notifications). A response must echo the id exactly as received, so [`Id`] keeps the
//! JSON number or string untouched instead of normalising it.

use serde::{Serialize, Serializer};
use serde_json::{Number, Value};

use super::error::Sv1Error;

/// A JSON-RPC id: `null`, a number or a string, kept exactly as received.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Id {
    /// `null`, or an absent `id` key (notifications).
    #[default]
    Null,
    /// A JSON number (integer or float), echoed as received.
    Number(Number),
    /// A JSON string.
    String(String),
}

impl Id {
    /// Reads an id from its JSON value; `None` stands for an absent key.
    ///
    /// # Errors
    /// [`Sv1Error::InvalidId`] for booleans, arrays and objects.
    pub fn from_json(value: Option<Value>) -> Result<Self, Sv1Error> {
        match value {
            None | Some(Value::Null) => Ok(Id::Null),
            Some(Value::Number(n)) => Ok(Id::Number(n)),
            Some(Value::String(s)) => Ok(Id::String(s)),
            Some(_) => Err(Sv1Error::InvalidId),
        }
    }

    /// Whether this is the `null` id (the marker of a notification).
    pub fn is_null(&self) -> bool {
        matches!(self, Id::Null)
    }

    /// The id as an unsigned integer, if it is one (string ids are not converted).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Id::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// The JSON value of this id.
    pub fn to_json(&self) -> Value {
        match self {
            Id::Null => Value::Null,
            Id::Number(n) => Value::Number(n.clone()),
            Id::String(s) => Value::String(s.clone()),
        }
    }
}

impl From<u64> for Id {
    fn from(n: u64) -> Self {
        Id::Number(n.into())
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id::String(s.to_owned())
    }
}

impl From<String> for Id {
    fn from(s: String) -> Self {
        Id::String(s)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Id::Null => serializer.serialize_unit(),
            Id::Number(n) => n.serialize(serializer),
            Id::String(s) => serializer.serialize_str(s),
        }
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Null => f.write_str("null"),
            Id::Number(n) => write!(f, "{n}"),
            Id::String(s) => write!(f, "{s:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_kept_exactly() {
        for v in [
            json!(null),
            json!(7),
            json!("7"),
            json!(-3),
            json!(1.5),
            json!("auth"),
        ] {
            let id = Id::from_json(Some(v.clone())).unwrap();
            assert_eq!(serde_json::to_value(&id).unwrap(), v);
            assert_eq!(id.to_json(), v);
        }
        assert_eq!(Id::from_json(None).unwrap(), Id::Null);
        assert_eq!(Id::from(7).as_u64(), Some(7));
        assert_eq!(Id::from("7").as_u64(), None);
    }

    #[test]
    fn bad_ids_are_rejected() {
        for v in [json!(true), json!([1]), json!({"a": 1})] {
            assert_eq!(Id::from_json(Some(v)), Err(Sv1Error::InvalidId));
        }
    }
}
