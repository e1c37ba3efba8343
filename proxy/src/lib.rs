//! hashshift-proxy: the proxy library. Downstream miners, upstream pools, the control plane.
//!
//! The wire formats and share arithmetic live in the `hashshift-protocol` crate; this crate
//! moves bytes between sockets and those state machines.
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | the configuration file, typed and validated |
//! | [`control`] | the control plane: admin socket and `hashshift ctl`, the power arbiter, audit log |
//! | [`downstream`] | miners: listener, SV1 and SV2 sessions, vardiff |
//! | [`error`] | which side caused an error (miner, pool, firmware, scheduler, operator) and whether to retry |
//! | [`firmware`] | rig management APIs (LuxOS, Braiins OS+): sleep, wake, status |
//! | [`gpu`] | GPU scheduler adapters (Slurm license reservation, webhook, command hook) |
//! | [`http_client`] | the one HTTP/1.1 client (hyper): one bounded request per connection |
//! | [`http_server`] | the one HTTP/1.1 server loop (API and metrics): connection cap, header and idle timeouts |
//! | [`keyfile`] | the SV2 authority key file (`hashshift keygen`) |
//! | [`noise_tcp`] | the Noise NX handshake over TCP, responder and initiator sides |
//! | [`pdu`] | switched PDUs over SNMP (v2c, v3 authPriv): outlet on/off, state and load; vendor profiles as data |
//! | [`pool_link`] | what miners and pools share: work, shares and verdicts, assignments, the miner's record |
//! | [`upstream`] | pools: connections, work, extranonce splitting, the failover/split router and manager |
//! | [`proxy`] | the whole proxy assembled, with graceful shutdown |
//! | [`telemetry`] | counters shared between tasks and reports |
//! | [`time`] | wall-clock time as Unix seconds and milliseconds, saturating |
//! | [`supervisor`] | critical tasks: a panic or an early end stops the process for a restart |
//! | [`sys`] | signals and OS limits |
//! | [`web`] | the HTTP server: JSON API (grid curtailment signal, GPU requests, status) |
//!
//! The parts sit in layers, each naming only parts below it; `layers.rs` draws them and holds
//! the test that keeps them (no import cycle, miners and pools meet only in [`pool_link`]).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub use hashshift_protocol as protocol;

pub mod cluster;
pub mod config;
pub mod control;
pub mod downstream;
pub mod error;
pub mod firmware;
pub mod gpu;
pub mod http_client;
pub mod http_server;
pub mod keyfile;
mod layers;
pub mod noise_tcp;
pub mod pdu;
pub mod pool_link;
pub mod proxy;
pub mod supervisor;
pub mod sys;
pub mod telemetry;
pub mod time;
pub mod upstream;
pub mod web;
