//! Errors of the Stratum V1 layer.
//!
//! Two levels: [`FieldError`] says what is wrong with one field of an otherwise well-formed
//! message (it names the field); [`Sv1Error`] is what the codec reports for one line. Every
//! [`Sv1Error`] concerns a single line only: the codec has already moved past it and keeps
//! decoding the next line, so the caller decides whether to answer, log, or disconnect.

use super::id::Id;

/// What is wrong with one field of a message (a positional param, a result member, ...).
///
/// On its own it never drops a connection: it travels inside [`Sv1Error::InvalidParams`] (the
/// peer gets an error reply when the message was a request), or it is returned by the typed
/// result interpreters such as [`super::SubscribeResult::from_result`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// A required field is absent (or `null`).
    #[error("missing field `{field}`")]
    Missing {
        /// Name of the field, as the Stratum documentation calls it.
        field: &'static str,
    },
    /// The field has the wrong JSON type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// Name of the field.
        field: &'static str,
        /// What the field should have been, e.g. "a string".
        expected: &'static str,
    },
    /// The field is a string but not valid hexadecimal (odd length or a non-hex character).
    #[error("field `{field}` is not valid hex")]
    BadHex {
        /// Name of the field.
        field: &'static str,
    },
    /// A fixed-width hex field has the wrong number of hex characters.
    #[error("field `{field}` must be {expected} hex characters, got {got}")]
    WrongLength {
        /// Name of the field.
        field: &'static str,
        /// Required number of hex characters.
        expected: usize,
        /// Number received.
        got: usize,
    },
    /// A variable-length field is longer than this crate accepts (a bound that keeps peer
    /// input from driving allocations).
    #[error("field `{field}` is longer than {max} bytes")]
    TooLong {
        /// Name of the field.
        field: &'static str,
        /// Largest accepted length in bytes (or entries, for lists).
        max: usize,
    },
    /// A number is outside its valid range (e.g. a difficulty that is not positive and
    /// finite, a port above 65535).
    #[error("field `{field}` is out of range")]
    OutOfRange {
        /// Name of the field.
        field: &'static str,
    },
}

/// Why one received line could not be turned into a message.
///
/// The codec yields these as `Ok(Some(Err(..)))` items, never as stream errors, so a
/// `FramedRead` keeps running: the line is already consumed and the next one decodes
/// normally. Each variant says what a caller should do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Sv1Error {
    /// A line exceeded the codec's maximum length. The codec discards bytes up to and
    /// including the next `\n` and then resynchronises. No reply is possible (the id was
    /// never read); a well-behaved peer never does this, so dropping the connection is the
    /// recommended reaction.
    #[error("line longer than {max} bytes")]
    LineTooLong {
        /// The configured maximum line length.
        max: usize,
    },
    /// The line is not valid UTF-8. No reply is possible; the caller may carry on or drop.
    #[error("line is not valid UTF-8")]
    NotUtf8,
    /// The line is not valid JSON (the parser's message is kept). No reply is possible;
    /// the caller may carry on or drop.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The JSON value is not an object. No reply is possible.
    #[error("message is not a JSON object")]
    NotAnObject,
    /// `id` is neither a number, a string nor null. No reply is possible (there is no id
    /// to echo).
    #[error("`id` must be a number, a string or null")]
    InvalidId,
    /// `method` is present but not a string. No reply is possible.
    #[error("`method` must be a string")]
    InvalidMethod,
    /// The object has neither `method` nor `result`/`error`: it is neither a request, a
    /// notification nor a response. No reply is possible.
    #[error("object is neither a request, a notification nor a response")]
    NotAMessage,
    /// A known method with parameters that do not fit it. If the message was a request
    /// (a client's call, or a pool's call with a non-null id), the peer gets an error reply
    /// (code 20) echoing `id`; for notifications the caller just logs it. The connection
    /// stays usable.
    #[error("invalid params for `{method}`: {error}")]
    InvalidParams {
        /// The id of the offending message, as received, so a reply can echo it.
        id: Id,
        /// The method name.
        method: String,
        /// What is wrong.
        error: FieldError,
    },
}

impl Sv1Error {
    /// The id to echo in an error reply, when the line was a recognisable request.
    pub fn request_id(&self) -> Option<&Id> {
        match self {
            Sv1Error::InvalidParams { id, .. } => Some(id),
            _ => None,
        }
    }
}
