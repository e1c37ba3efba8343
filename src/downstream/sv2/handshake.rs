//! The responder side of the Noise NX handshake for miners (sv2-spec 04), and the key
//! material a listener needs for it.
//!
//! At startup each SV2 listener loads its authority key file and draws a fresh static Noise
//! key for this process; every handshake certifies that static key with the authority key for
//! `cert_validity_secs` from the handshake's time. Miners pin only the authority public key,
//! so a restart (new static key) needs no miner reconfiguration.
//!
//! Handshake messages have fixed sizes (64 bytes in, 234 out), so a peer cannot make us buffer
//! more; the caller bounds the whole exchange with the handshake timeout, which is what drops a
//! peer that stalls. Any 64 bytes decode as an ElligatorSwift key, so garbage is only noticed
//! at the first encrypted frame, which then fails to decrypt and closes the connection.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hashshift_protocol::noise::{
    HandshakeError, INITIATOR_MESSAGE_LEN, Responder, ResponderConfig, SecretKey, TransportState,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::keyfile::{self, KeyFileError};

/// Why a miner's handshake failed. Every variant means the connection is dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// The socket failed or closed during the handshake.
    #[error("I/O error during the Noise handshake: {0}")]
    Io(#[from] std::io::Error),
    /// The initiator's message was rejected.
    #[error("Noise handshake failed: {0}")]
    Noise(#[from] HandshakeError),
}

/// Loads the authority key file and certifies a fresh static key with it.
pub fn responder_config(
    authority_key_file: &Path,
    cert_validity_secs: u32,
) -> Result<ResponderConfig, KeyFileError> {
    let authority = keyfile::load(authority_key_file)?;
    let static_key = SecretKey::generate(&mut rand::rng());
    Ok(ResponderConfig::new(
        authority,
        static_key,
        cert_validity_secs,
    ))
}

/// Unix time in seconds (0 if the clock is before 1970; certificates then start at 0).
pub fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// Runs the responder side on `stream`: reads the initiator's 64 bytes, writes our 234. Not
/// time-bounded by itself: the caller wraps it in the handshake timeout.
pub async fn accept(
    stream: &mut TcpStream,
    config: &ResponderConfig,
) -> Result<TransportState, HandshakeFailure> {
    let mut hello = [0u8; INITIATOR_MESSAGE_LEN];
    stream.read_exact(&mut hello).await?;
    // The thread RNG is not Send: use it only in this synchronous block.
    let responder = Responder::new(config, &mut rand::rng());
    let (reply, transport) = responder.step_1(&hello, unix_now())?;
    stream.write_all(&reply).await?;
    Ok(transport)
}
