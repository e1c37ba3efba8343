//! The Noise NX handshake over a `TcpStream`, both sides (sv2-spec 04): the proxy accepts
//! miners as responder and dials SV2 pools as initiator; the test pool and the load generator
//! use the same two functions. The messages have fixed sizes (64 bytes in, 234 back), so a
//! peer cannot make either side buffer more; callers bound the exchange with their own
//! timeout, which is what drops a peer that stalls.

use hashshift_protocol::noise::{
    AuthorityPublicKey, Certificate, HandshakeError, INITIATOR_MESSAGE_LEN, Initiator,
    RESPONDER_MESSAGE_LEN, Responder, ResponderConfig, TransportState,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a handshake failed. Every variant means the connection is dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// The peer closed the connection during the handshake.
    #[error("connection closed during the Noise handshake")]
    Closed,
    /// The socket failed during the handshake.
    #[error("I/O error during the Noise handshake: {0}")]
    Io(std::io::Error),
    /// The peer's message was rejected (for an initiator: the responder's key or certificate
    /// did not check out against the pinned authority).
    #[error("Noise handshake failed: {0}")]
    Noise(#[from] HandshakeError),
}

impl From<std::io::Error> for HandshakeFailure {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            HandshakeFailure::Closed
        } else {
            HandshakeFailure::Io(e)
        }
    }
}

/// The responder side on `stream`: reads the initiator's 64 bytes, writes our 234.
pub async fn accept(
    stream: &mut TcpStream,
    config: &ResponderConfig,
) -> Result<TransportState, HandshakeFailure> {
    let mut hello = [0u8; INITIATOR_MESSAGE_LEN];
    stream.read_exact(&mut hello).await?;
    // The thread RNG is not Send: use it only in this synchronous block.
    let responder = Responder::new(config, &mut rand::rng());
    let (reply, transport) = responder.step_1(&hello, crate::time::unix_secs_u32())?;
    stream.write_all(&reply).await?;
    Ok(transport)
}

/// The initiator side on `stream`, pinned to `authority`: the responder's certificate must be
/// signed by it and be valid now.
pub async fn initiate(
    stream: &mut TcpStream,
    authority: AuthorityPublicKey,
) -> Result<(TransportState, Certificate), HandshakeFailure> {
    // The thread RNG is not Send: use it before the first await.
    let mut initiator = Initiator::new(Some(authority), &mut rand::rng());
    let hello = initiator.step_0()?;
    stream.write_all(&hello).await?;
    let mut reply = [0u8; RESPONDER_MESSAGE_LEN];
    stream.read_exact(&mut reply).await?;
    Ok(initiator.step_2(&reply, crate::time::unix_secs_u32())?)
}
