//! hashshift-protocol: the wire formats and the arithmetic of Bitcoin mining, without I/O.
//!
//! This crate has no sockets, tasks, clocks or random number generators: time and randomness
//! are arguments. Everything a peer can send is parsed here into owned, typed values, and every
//! failure is a typed error that says whether the peer gets an error reply or the connection
//! is dropped. The proxy (the `hashshift` crate) only moves bytes between sockets and these
//! state machines.
//!
//! | module | what it holds | spec |
//! |---|---|---|
//! | [`sv1`] | Stratum V1 JSON-RPC messages and the line codec | Stratum V1 (de facto), BIP310 |
//! | [`sv2`] | Stratum V2 data types, frames, Common and Mining messages, plaintext codec | sv2-spec 03, 04, 05 |
//! | [`noise`] | Noise NX handshake, certificates, keys, the encrypted frame codec | sv2-spec 04 |
//! | [`share`] | targets and difficulty, coinbase/merkle/header rebuild, share validation | BIP310, BIP320 |
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod noise;
pub mod share;
pub mod sv1;
pub mod sv2;
