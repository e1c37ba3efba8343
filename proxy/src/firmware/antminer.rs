//! Stock Antminer adapter (being written: every call is refused until it lands).

use super::{Endpoint, FirmwareClient, FirmwareError, RigStatus};

fn not_yet(endpoint: &Endpoint, command: &str) -> FirmwareError {
    FirmwareError::Rejected {
        addr: endpoint.addr,
        command: command.to_owned(),
        detail: "the antminer adapter is not implemented yet".to_owned(),
        retryable: false,
    }
}

/// Command the rig to sleep.
pub async fn sleep(_client: &FirmwareClient, endpoint: &Endpoint) -> Result<(), FirmwareError> {
    Err(not_yet(endpoint, "sleep"))
}

/// Command the rig to wake.
pub async fn wake(_client: &FirmwareClient, endpoint: &Endpoint) -> Result<(), FirmwareError> {
    Err(not_yet(endpoint, "wake"))
}

/// Read the rig's state, power and hashrate.
pub async fn status(
    _client: &FirmwareClient,
    endpoint: &Endpoint,
) -> Result<RigStatus, FirmwareError> {
    Err(not_yet(endpoint, "status"))
}
