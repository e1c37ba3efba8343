//! hashshift: the proxy. Downstream miners, upstream pools, the control plane.
//!
//! The wire formats and share arithmetic live in the `hashshift-protocol` crate; this crate
//! moves bytes between sockets and those state machines.
#![deny(unsafe_code)]

pub use hashshift_protocol as protocol;

pub mod config;

pub mod bench;
pub mod downstream;
pub mod sim;
pub mod testpool;
pub mod upstream;
