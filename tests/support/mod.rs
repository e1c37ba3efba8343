//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod honest;
pub mod miner;
pub mod site;
pub mod sv2_miner;
pub mod template_provider;
pub mod wire;
