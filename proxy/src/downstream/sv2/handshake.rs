//! The key material an SV2 listener needs for the responder side of the Noise NX handshake
//! (sv2-spec 04; the exchange itself is [`crate::noise_tcp::accept`]).
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

use hashshift_protocol::noise::{ResponderConfig, SecretKey};

use crate::keyfile::{self, KeyFileError};

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
