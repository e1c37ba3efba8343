//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod miner;
pub mod sv2_miner;
