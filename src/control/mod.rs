//! The control plane: power arbitration between mining and the GPU cluster (the admin socket,
//! rig inventory and drain orchestration join it here).

pub mod arbiter;
