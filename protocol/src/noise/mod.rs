//! The Noise NX handshake and transport cipher of Stratum V2 (sv2-spec 04).
