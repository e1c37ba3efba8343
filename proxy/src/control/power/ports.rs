//! What the power controller needs from the outside world, as two small traits: a rig's
//! management API ([`RigControl`]) and the GPU scheduler ([`GpuControl`]). The firmware
//! adapters (`crate::firmware`) and scheduler adapters (`crate::gpu`) implement them; tests
//! and the demo can plug in fakes. Errors are strings here: the controller only logs them and
//! turns them into the arbiter's `CommandFailed`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, for object-safe async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A rig's power state as its management API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirmwareState {
    /// Hashing.
    Mining,
    /// Asleep / paused / curtailed: not drawing mining power.
    Sleeping,
    /// Coming back up.
    Waking,
    /// The API answered without saying.
    Unknown,
}

/// What a status call returns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FirmwareStatus {
    /// The state.
    pub state: FirmwareState,
    /// Power the rig reports drawing (W), if it does.
    pub power_w: Option<f64>,
}

/// One rig's management API.
pub trait RigControl: Send + Sync {
    /// Commands sleep (returns once the rig accepted the command, not once it is asleep).
    fn sleep(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Commands wake.
    fn wake(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Reads the rig's state and power.
    fn status(&self) -> BoxFuture<'_, Result<FirmwareStatus, String>>;
    /// What it is, for logs (`luxos 10.0.1.17:4028`).
    fn describe(&self) -> String;
}

/// What the GPU side wants and uses (kW).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GpuLoad {
    /// Power pending plus running work wants.
    pub wanted_kw: f64,
    /// Power running work uses (work that keeps its share while suspended included).
    pub in_use_kw: f64,
    /// Of that, what work that is not suspended draws now: a shed is done once this is at or
    /// below the grant (a suspended Slurm job keeps its licenses but draws little).
    pub drawing_kw: f64,
}

/// The GPU scheduler.
pub trait GpuControl: Send + Sync {
    /// Sets the power the GPU cluster may use now.
    fn set_budget_kw(&self, kw: f64) -> BoxFuture<'_, Result<(), String>>;
    /// Asks the GPU side to give back `kw` of what it uses now.
    fn shed_kw(&self, kw: f64, reason: &str) -> BoxFuture<'_, Result<(), String>>;
    /// What it wants and uses; `None` when demand arrives through the admin socket instead
    /// (`ctl gpu-request`).
    fn demand(&self) -> BoxFuture<'_, Result<Option<GpuLoad>, String>>;
    /// What it is, for logs.
    fn describe(&self) -> String;
    /// The longest one `set_budget_kw` or `shed_kw` call can take, from the adapter's own
    /// settings (webhook attempts × timeout + backoffs, the command hook's timeout, Slurm's
    /// command timeouts). The adapter enforces it; the controller only adds a safety margin.
    fn call_bound(&self) -> Duration {
        DEFAULT_CALL_BOUND
    }
}

/// [`GpuControl::call_bound`] of an adapter that does not say.
pub const DEFAULT_CALL_BOUND: Duration = Duration::from_secs(30);
