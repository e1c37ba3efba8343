//! Errors of the SV2 data types, messages and plaintext codec.
//!
//! Two enums, one per layer: [`Sv2Error`] for turning payload bytes into messages (and for
//! building bounded values), [`Sv2CodecError`] for cutting a byte stream into frames. Each
//! variant's doc says what the connection should do about it.

/// Failure to decode an SV2 payload into a message, or to build a bounded SV2 value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Sv2Error {
    /// The payload ended before a field was complete: `needed` more bytes were required and
    /// only `remaining` were left (for a length-prefixed field, `needed` is the declared
    /// length). The peer sent a malformed message: drop the connection.
    #[error("payload truncated: field needs {needed} bytes, {remaining} left")]
    Truncated {
        /// Bytes the field needed.
        needed: usize,
        /// Bytes left in the payload.
        remaining: usize,
    },
    /// A message was fully decoded but `extra` bytes followed it. Malformed: drop the
    /// connection (SV2 core messages have no trailing TLVs unless an extension was negotiated,
    /// and we negotiate none).
    #[error("{extra} trailing bytes after the message")]
    TrailingBytes {
        /// Number of unconsumed bytes.
        extra: usize,
    },
    /// A length-bounded value (`STR0_255`, `B0_32`, `SEQ0_64K`, ...) is longer than its type
    /// allows. On decode only `B0_32` can hit this (its U8 prefix can say up to 255): drop the
    /// connection. On encode it is a local bug caught by the checked constructors.
    #[error("{kind} holds at most {max} items, got {len}")]
    TooLong {
        /// The SV2 type name, e.g. `"B0_32"`.
        kind: &'static str,
        /// Its maximum length.
        max: usize,
        /// The offending length.
        len: usize,
    },
    /// An `OPTION[T]` count byte other than 0 or 1. Malformed: drop the connection.
    #[error("OPTION count must be 0 or 1, got {0}")]
    InvalidOption(u8),
    /// `msg_type` is not a Common or Mining message of the core protocol (extension 0). The
    /// caller may log and ignore the frame (the spec lets unknown messages be skipped) or
    /// drop the connection if it is in a state where only specific messages make sense.
    #[error("unknown message type {msg_type:#04x} for extension 0")]
    UnknownMessage {
        /// The unknown message type.
        msg_type: u8,
    },
    /// The frame belongs to a non-zero extension, which this crate does not decode. The caller
    /// still has the raw [`Frame`](super::frame::Frame) and may forward it or ignore it;
    /// nothing is wrong with the connection.
    #[error("message {msg_type:#04x} of unsupported extension {extension_type:#06x}")]
    UnsupportedExtension {
        /// The extension type, channel bit removed.
        extension_type: u16,
        /// The message type within that extension.
        msg_type: u8,
    },
}

impl Sv2Error {
    /// Whether the frame can be skipped without harming the connection (an unknown message
    /// or an extension we do not speak), as opposed to a malformed payload that calls for
    /// dropping the peer.
    pub fn is_ignorable(&self) -> bool {
        matches!(
            self,
            Sv2Error::UnknownMessage { .. } | Sv2Error::UnsupportedExtension { .. }
        )
    }
}

/// Failure of the plaintext frame codec ([`Sv2Codec`](super::codec::Sv2Codec)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Sv2CodecError {
    /// The header announces a payload longer than the configured maximum. Checked before any
    /// buffering: drop the connection (the stream cannot be resynchronised without reading
    /// the oversized payload, and a peer sending one is hostile or broken).
    #[error("frame payload of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Announced payload length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// An outgoing frame's payload does not fit the U24 length field. A local bug; nothing
    /// was written. The connection may continue.
    #[error("outgoing payload of {len} bytes does not fit in a U24 length")]
    PayloadTooLong {
        /// The payload length.
        len: usize,
    },
    /// The underlying transport failed: the connection is gone.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
