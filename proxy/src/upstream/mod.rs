//! Pools: connections, work distribution, failover and weighted split.

pub mod connection;
pub mod manager;
pub mod prefix;
pub mod router;
pub mod sent;
pub mod sv1;
pub mod sv2;
