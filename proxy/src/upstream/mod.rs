//! Pools: connections, the pool manager (failover and weighted split), extranonce prefixes.
//!
//! Miners are never named here: the manager implements [`crate::pool_link::Pools`] and talks
//! to sessions through the types in [`crate::pool_link`].

pub mod connection;
pub mod manager;
pub mod prefix;
mod reconnect;
pub mod router;
pub mod sent;
pub mod sv1;
pub mod sv2;
