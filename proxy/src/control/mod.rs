//! The control plane: what NOC staff and automation use to see the farm and move power
//! between mining and the GPU cluster. The admin socket and `hashshift ctl` ([`admin`]), the
//! power arbiter ([`arbiter`]), the audit log ([`audit`]), the power history ([`history`]), the rig inventory ([`inventory`]), the ranges every control input
//! must fall in ([`limits`])
//! what answers the socket ([`plane`]), and what it needs of a cluster of instances
//! ([`cluster_link`]).

pub mod admin;
pub mod arbiter;
pub mod audit;
pub mod cluster_link;
pub mod history;
pub mod inventory;
pub mod limits;
pub mod plane;
pub mod power;
