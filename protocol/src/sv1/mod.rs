//! Stratum V1: JSON-RPC 1.0-style messages over newline-delimited JSON.
