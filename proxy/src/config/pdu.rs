//! Switched PDUs (`[[pdu]]`): where each is, how to log in, and which vendor profile's OIDs
//! it speaks (being written).

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// One switched PDU.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pdu {
    /// Its name, which `[[rig]]` entries refer to (`pdu = "NAME"`).
    pub name: String,
}

/// Checks every `[[pdu]]`.
pub(super) fn validate(_pdus: &[Pdu]) -> Result<(), ConfigError> {
    Ok(())
}
