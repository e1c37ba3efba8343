//! What the power controller needs from the outside world, as two small traits: a rig's
//! management API ([`RigControl`]) and the GPU scheduler ([`GpuControl`]). The firmware
//! adapters (`crate::firmware`) and scheduler adapters (`crate::gpu`) implement them; tests
//! and the demo can plug in fakes. Errors are a message with its side and retry hint
//! ([`PortError`]): the controller logs them and turns them into the arbiter's
//! `CommandFailed`; it never branches on the message.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use crate::control::arbiter::ControlPath;
use crate::error::{Classify, Retry, Side};

/// A boxed future, for object-safe async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a call to a rig or the GPU side failed: the adapter's message, with the side and retry
/// hint of the typed error it came from (kept, not the error, so fakes need no error type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortError {
    side: Side,
    retry: Retry,
    message: String,
}

impl PortError {
    /// An error with its side and retry hint spelled out (timeouts, fakes).
    pub fn new(side: Side, retry: Retry, message: impl Into<String>) -> Self {
        PortError {
            side,
            retry,
            message: message.into(),
        }
    }

    /// The typed error's side and hint, and its message.
    pub fn of(e: &(impl Classify + fmt::Display)) -> Self {
        PortError::new(e.side(), e.retry(), e.to_string())
    }

    /// The message alone (the audit log's detail).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PortError {}

impl Classify for PortError {
    fn side(&self) -> Side {
        self.side
    }

    fn retry(&self) -> Retry {
        self.retry
    }
}

/// A rig's power state as its management API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirmwareState {
    /// Hashing at full power.
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
    /// `power_w` is its PDU outlet's meter, not the rig's own estimate.
    pub metered: bool,
}

/// One rig's controls: its management API, a switched PDU outlet, or both
/// ([`super::path::PowerPath`] puts them together).
pub trait RigControl: Send + Sync {
    /// Commands sleep (returns once the rig accepted the command, not once it is asleep).
    fn sleep(&self) -> BoxFuture<'_, Result<(), PortError>>;
    /// Commands wake.
    fn wake(&self) -> BoxFuture<'_, Result<(), PortError>>;
    /// Reads the rig's state and power.
    fn status(&self) -> BoxFuture<'_, Result<FirmwareStatus, PortError>>;
    /// What it is, for logs (`luxos 10.0.1.17:4028`, `luxos 10.0.1.7:4028 + pdu-a outlet 7`).
    fn describe(&self) -> String;
    /// How it can be slept (drain order, `ctl rigs`). A management API alone by default.
    fn path(&self) -> ControlPath {
        ControlPath::Firmware
    }
    /// Cuts its power at the PDU outlet and confirms the outlet is off (and, where metered,
    /// that its load fell): the escalation of a sleep the firmware did not carry out. Without
    /// an outlet: an error.
    fn cut(&self) -> BoxFuture<'_, Result<(), PortError>> {
        let e = PortError::new(
            Side::Operator,
            Retry::No,
            format!("{}: no PDU outlet configured", self.describe()),
        );
        Box::pin(async move { Err(e) })
    }
}

/// Makes the outlet control of `[[rig]]` `pdu = NAME`, `outlet = N` (`None`: no such PDU
/// or outlet). The SNMP side provides it (`pdu_adapter::outlet_factory`); tests plug in fakes.
pub type OutletFactory =
    std::sync::Arc<dyn Fn(&str, u16) -> Option<std::sync::Arc<dyn OutletControl>> + Send + Sync>;

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
    fn set_budget_kw(&self, kw: f64) -> BoxFuture<'_, Result<(), PortError>>;
    /// Asks the GPU side to give back `kw` of what it uses now.
    fn shed_kw(&self, kw: f64, reason: &str) -> BoxFuture<'_, Result<(), PortError>>;
    /// What it wants and uses; `None` when demand arrives through the admin socket instead
    /// (`ctl gpu-request`).
    fn demand(&self) -> BoxFuture<'_, Result<Option<GpuLoad>, PortError>>;
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

/// What a switched PDU reports of one outlet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutletReading {
    /// Whether the outlet is switched on (relay closed).
    pub on: bool,
    /// The outlet's load in watts, where the PDU meters it per outlet (directly, or current
    /// × the PDU's configured voltage).
    pub power_w: Option<f64>,
    /// The outlet's current in amperes, where the PDU meters it.
    pub current_a: Option<f64>,
}

/// One outlet of a switched PDU: a hard power cut, the last resort (and the only control of
/// rigs without a management API).
pub trait OutletControl: Send + Sync {
    /// Switches the outlet on or off. Returns once the PDU accepted the command; confirm with
    /// [`OutletControl::read`].
    fn set(&self, on: bool) -> BoxFuture<'_, Result<(), PortError>>;
    /// Reads the outlet's state and, where metered, its load.
    fn read(&self) -> BoxFuture<'_, Result<OutletReading, PortError>>;
    /// What it is, for logs and `ctl rigs` (`pdu-a outlet 7`).
    fn describe(&self) -> String;
}
