//! SRI's translator_sv2 as a child process: an SV1 server on 127.0.0.1 in front of one SV2
//! pool (ours in flow b, pool_sv2 in flows d), as its 0.6.0 config spells it.

use std::net::SocketAddr;

use anyhow::Result;

use super::harness::Harness;

/// How one translator is set up.
pub struct Translator {
    /// The SV1 port it listens on (127.0.0.1).
    pub sv1_port: u16,
    /// Its SV2 pool, and the authority key (base58check) it pins.
    pub upstream: SocketAddr,
    pub authority: String,
    /// `downstream_extranonce2_size`: the extranonce2 its SV1 clients roll.
    pub extranonce2_size: usize,
    /// Whether it adjusts its SV1 clients' difficulty; at start it is that of 10 kH/s at 60
    /// shares a minute (~2.3e-6, quick to hash in a debug build) either way.
    pub vardiff: bool,
}

impl Translator {
    /// Writes its config into the flow's directory (`<log>.toml`) and starts it, its output
    /// in `<log>.log`; returns its index in `Harness::procs`. The flow must need
    /// `translator_sv2`. Called again with the same `self`, it restarts on the same port.
    pub fn spawn(&self, h: &mut Harness, log: &str) -> Result<usize> {
        let bin = h.bin("translator_sv2")?;
        let config = h.write(
            &format!("{log}.toml"),
            &format!(
                "downstream_address = \"127.0.0.1\"\ndownstream_port = {}\n\
                 max_supported_version = 2\nmin_supported_version = 2\n\
                 downstream_extranonce2_size = {}\nverify_payout = false\n\
                 aggregate_channels = true\nsupported_extensions = []\n\
                 [downstream_difficulty_config]\nmin_individual_miner_hashrate = 10000.0\n\
                 shares_per_minute = 60.0\nenable_vardiff = {}\njob_keepalive_interval_secs = 60\n\
                 [[upstreams]]\naddress = \"{}\"\nport = {}\nauthority_pubkey = \"{}\"\n\
                 user_identity = \"sri-tproxy\"\n",
                self.sv1_port,
                self.extranonce2_size,
                self.vardiff,
                self.upstream.ip(),
                self.upstream.port(),
                self.authority,
            ),
        )?;
        let config = config.display().to_string();
        h.spawn(log, &bin, &["-c", &config])
    }
}
