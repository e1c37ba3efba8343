//! hashshift's tooling: everything that is not the proxy but runs next to it.
//!
//! The proxy library (`hashshift-proxy`) does not depend on this crate; the `hashshift` binary
//! does, for `hashshift demo` and `hashshift bench`, and so do the end-to-end tests.
//!
//! | module | what it holds |
//! |---|---|
//! | [`testpool`] | an embedded SV1/SV2 pool that validates shares itself (demo, tests, load generator) |
//! | [`fake_pdu`] | a simulated switched PDU: an in-process SNMP agent speaking the APC outlet table |
//! | [`sim`] | simulated ASICs that speak SV1 like real firmware and really hash |
//! | [`fake_firmware`] | protocol-faithful fakes of the LuxOS, Braiins OS+, stock Antminer, Whatsminer and VNish APIs over simulated rigs, answering with replies captured from real machines |
//! | [`bench`] | the load generator (`hashshift bench`) |
//! | [`demo`] | `hashshift demo`: test pools, the proxy and simulated rigs on one machine |
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod demo;
pub mod fake_firmware;
pub mod fake_pdu;
pub mod sim;
pub mod testpool;
