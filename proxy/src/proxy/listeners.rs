//! The miners' stage: one listener per `[[downstream]]`, each started by [`listen`] whatever
//! its protocol, with the session settings the config asks for.
//!
//! A listener stops on the `accept` token; the sessions it started stop on the stage's own
//! token, which shutdown cancels only after accepting has stopped (see [`super::Proxy::shutdown`]).
//! The listener tasks and the sessions share the stage's tracker, so waiting for the stage
//! waits for both.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::stage::Stage;
use crate::config::{Config, Downstream, DownstreamProtocol};
use crate::downstream::listener::{self, Accepted, ConnectionLimits};
use crate::downstream::sv1::{self as sv1_session, SessionSettings};
use crate::downstream::sv2::{self as sv2_session, Sv2Settings, channel::ChannelSettings};
use crate::downstream::vardiff::VardiffSettings;
use crate::supervisor::Supervisor;
use crate::telemetry::Instruments;
use crate::upstream::manager::PoolManager;

/// Bytes of send buffer per `limits.send_queue` entry (a `mining.notify` is 0.3–2 KiB).
const SEND_QUEUE_ENTRY_BYTES: usize = 2048;

/// What every listener of the proxy shares.
pub(super) struct Miners<'a> {
    pub(super) config: &'a Config,
    pub(super) manager: &'a Arc<PoolManager>,
    pub(super) instruments: &'a Instruments,
    pub(super) supervisor: &'a Supervisor,
    /// Listeners and sessions.
    pub(super) stage: &'a Stage,
    /// Stops the listeners only (a child of the stage's token).
    pub(super) accept: &'a CancellationToken,
}

impl Miners<'_> {
    /// Binds every `[[downstream]]` listener and starts serving it (`listener-N` in config
    /// order). Returns their addresses, in config order. SV2 listeners load their authority
    /// key file here; an unreadable or invalid one fails the start.
    pub(super) fn start(&self) -> std::io::Result<Vec<SocketAddr>> {
        let sv1 = Arc::new(sv1_settings(self.config, self.instruments));
        let mut addresses = Vec::with_capacity(self.config.downstream.len());
        for (index, d) in self.config.downstream.iter().enumerate() {
            let name = format!("listener-{index}");
            let manager = self.manager.clone();
            let address = match d.protocol {
                DownstreamProtocol::Sv1 => {
                    let settings = sv1.clone();
                    self.listen(&name, d.listen, "sv1", move |accepted| {
                        sv1_session::serve(accepted, settings.clone(), manager.clone())
                    })?
                }
                DownstreamProtocol::Sv2 => {
                    let settings = Arc::new(self.sv2_settings(d, &sv1)?);
                    self.listen(&name, d.listen, "sv2", move |accepted| {
                        sv2_session::serve(accepted, settings.clone(), manager.clone())
                    })?
                }
            };
            addresses.push(address);
        }
        Ok(addresses)
    }

    /// The one way a listener starts: bind (with the deep backlog of [`listener::bind`]),
    /// then accept under the connection caps as the critical task `name`, one `session` task
    /// per miner.
    fn listen<H, Fut>(
        &self,
        name: &str,
        address: SocketAddr,
        protocol: &'static str,
        session: H,
    ) -> std::io::Result<SocketAddr>
    where
        H: Fn(Accepted) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let socket = listener::bind(address)?;
        let local = socket.local_addr()?;
        let limits = &self.config.limits;
        let caps = ConnectionLimits {
            total: limits.max_connections,
            per_address: limits.max_connections_per_address,
        };
        let serve = listener::serve(
            socket,
            caps,
            protocol,
            self.accept.clone(),
            self.stage.stop.clone(),
            self.stage.tasks.clone(),
            session,
        );
        self.supervisor
            .spawn_critical(&self.stage.tasks, name, serve);
        Ok(local)
    }

    /// An SV2 listener's settings: its Noise responder (the authority key file) and frame
    /// limits, with the timings and vardiff all miners share.
    fn sv2_settings(&self, d: &Downstream, sv1: &SessionSettings) -> std::io::Result<Sv2Settings> {
        let key_file = d
            .authority_key_file
            .as_deref()
            .ok_or_else(|| std::io::Error::other("SV2 listener without authority_key_file"))?;
        let noise = sv2_session::handshake::responder_config(key_file, d.cert_validity_secs)
            .map_err(std::io::Error::other)?;
        info!(authority = %noise.authority_public_key(), listen = %d.listen, "SV2 listener certified by authority key");
        let limits = &self.config.limits;
        Ok(Sv2Settings {
            noise,
            channel: ChannelSettings {
                vardiff: sv1.vardiff,
                initial_difficulty: sv1.initial_difficulty,
            },
            handshake_timeout: sv1.handshake_timeout,
            idle_timeout: sv1.idle_timeout,
            write_timeout: sv1.write_timeout,
            drain_grace: sv1.drain_grace,
            max_frame_bytes: d.max_frame_bytes,
            max_channels: d.max_channels_per_connection,
            ack_delay: Duration::from_millis(limits.sv2_ack_delay_ms),
            ack_batch: limits.sv2_ack_batch,
            stats: self.instruments.sv2.clone(),
        })
    }
}

/// SV1 session settings, whose timings and vardiff SV2 listeners share.
fn sv1_settings(config: &Config, instruments: &Instruments) -> SessionSettings {
    let limits = &config.limits;
    SessionSettings {
        vardiff: VardiffSettings {
            min: config.vardiff.min,
            max: config.vardiff.max,
            shares_per_minute: config.vardiff.shares_per_minute,
        },
        initial_difficulty: config.vardiff.initial,
        max_line_bytes: limits.max_line_bytes,
        max_outbox_bytes: limits.send_queue.saturating_mul(SEND_QUEUE_ENTRY_BYTES),
        handshake_timeout: Duration::from_secs(limits.handshake_timeout_secs),
        idle_timeout: Duration::from_secs(limits.idle_timeout_secs),
        write_timeout: Duration::from_secs(limits.write_timeout_secs),
        drain_grace: Duration::from_secs(limits.drain_grace_secs),
        stats: instruments.sv1.clone(),
    }
}
