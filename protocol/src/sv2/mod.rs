//! Stratum V2 binary protocol (sv2-spec 03 "Protocol overview", 04, 05 "Mining protocol").
//!
//! [`frame`] holds the 6-byte frame header shared by the plaintext and encrypted codecs.

pub mod frame;
