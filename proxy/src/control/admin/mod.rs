//! The admin socket NOC staff and automation drive the site through: its line-delimited JSON
//! protocol ([`protocol`]), the server ([`server`]), and the `hashshift ctl` client ([`ctl`]).

pub mod ctl;
pub mod protocol;
pub mod server;
