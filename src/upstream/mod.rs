//! Pools: connections, work distribution, failover and weighted split.

pub mod extranonce;
pub mod router;
