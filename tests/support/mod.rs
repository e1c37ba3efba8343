//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod bench;
pub mod browser;
pub mod etcd;
pub mod failover;
pub mod honest;
pub mod logs;
pub mod metrics;
pub mod miner;
pub mod power_site;
pub mod process;
pub mod rig;
pub mod site;
pub mod slurm;
pub mod snmpd;
pub mod sv2_miner;
pub mod sv2_site;
pub mod template_provider;
pub mod toml_keys;
pub mod wire;
