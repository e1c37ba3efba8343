//! One PDU outlet as an [`OutletControl`]: the SNMP client of [`crate::pdu`] behind the power
//! controller's port.
//!
//! [`outlet_factory`] turns the `[[pdu]]` entries into an [`OutletFactory`]: given a PDU name
//! and an outlet number (a rig's `[[rig]]` mapping) it hands out that outlet's control. One
//! [`PduClient`] per PDU is made on first use, with its secrets read from the environment
//! then, and shared by every outlet of that PDU (one UDP socket per PDU, not per rig).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::warn;

use super::ports::{BoxFuture, OutletControl, OutletReading, PortError};
use crate::config;
use crate::error::{Retry, Side};
use crate::pdu::{PduClient, PduSettings};

pub use super::ports::OutletFactory;

/// One outlet of one PDU.
pub struct PduOutlet {
    client: Arc<PduClient>,
    outlet: u16,
}

impl PduOutlet {
    /// Outlet `outlet` of the PDU `client` speaks to (the number is checked on each call).
    pub fn new(client: Arc<PduClient>, outlet: u16) -> Self {
        PduOutlet { client, outlet }
    }
}

/// A call that overran the client's own bound (it should not: the client bounds itself).
fn overran(what: &str) -> PortError {
    PortError::new(
        Side::Firmware,
        Retry::Yes,
        format!("{what}: PDU call overran its bound"),
    )
}

impl OutletControl for PduOutlet {
    fn set(&self, on: bool) -> BoxFuture<'_, Result<(), PortError>> {
        Box::pin(async move {
            let bound = self.client.call_bound();
            match tokio::time::timeout(bound, self.client.set_outlet(self.outlet, on)).await {
                Ok(r) => r.map_err(|e| PortError::of(&e)),
                Err(_) => Err(overran(&self.describe())),
            }
        })
    }

    fn read(&self) -> BoxFuture<'_, Result<OutletReading, PortError>> {
        Box::pin(async move {
            let bound = self.client.call_bound();
            match tokio::time::timeout(bound, self.client.read_outlet(self.outlet)).await {
                Ok(Ok(r)) => Ok(OutletReading {
                    on: r.on,
                    power_w: r.power_w,
                    current_a: r.current_a,
                }),
                Ok(Err(e)) => Err(PortError::of(&e)),
                Err(_) => Err(overran(&self.describe())),
            }
        })
    }

    fn describe(&self) -> String {
        format!("{} outlet {}", self.client.settings().name, self.outlet)
    }
}

/// The factory over these PDUs, reading secrets with `std::env::var`.
pub fn outlet_factory(pdus: &[config::Pdu]) -> OutletFactory {
    outlet_factory_with_env(pdus, Arc::new(|k: &str| std::env::var(k).ok()))
}

/// Reads an environment variable (tests pass their own).
pub type EnvReader = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// [`outlet_factory`] with the environment given (tests, the demo).
pub fn outlet_factory_with_env(pdus: &[config::Pdu], env: EnvReader) -> OutletFactory {
    let pdus: HashMap<String, config::Pdu> =
        pdus.iter().map(|p| (p.name.clone(), p.clone())).collect();
    let clients: Mutex<HashMap<String, Arc<PduClient>>> = Mutex::new(HashMap::new());
    Arc::new(move |name: &str, outlet: u16| {
        let p = pdus.get(name)?;
        if outlet == 0 || outlet > p.outlets {
            warn!(
                pdu = name,
                outlet,
                outlets = p.outlets,
                "outlet out of the PDU's range"
            );
            return None;
        }
        // A poisoned lock only means another caller panicked mid-insert: the map is whole.
        let mut clients = clients.lock().unwrap_or_else(|e| e.into_inner());
        let client = match clients.get(name) {
            Some(c) => c.clone(),
            None => {
                let made = p
                    .settings(&|k| env(k))
                    .and_then(|s: PduSettings| PduClient::new(s).map_err(|e| e.to_string()));
                match made {
                    Ok(c) => {
                        let c = Arc::new(c);
                        clients.insert(name.to_string(), c.clone());
                        c
                    }
                    Err(e) => {
                        warn!(pdu = name, error = %e, side = %Side::Operator, "cannot make the PDU client");
                        return None;
                    }
                }
            }
        };
        Some(Arc::new(PduOutlet::new(client, outlet)) as Arc<dyn OutletControl>)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdu(name: &str) -> config::Pdu {
        toml::from_str(&format!(
            r#"
            name = "{name}"
            address = "127.0.0.1:9"
            profile = "apc-rpdu"
            outlets = 8
            version = "2c"
            insecure_v2c = true
            community_env = "TEST_PDU_COMMUNITY"
            "#
        ))
        .unwrap()
    }

    #[test]
    fn the_factory_checks_names_outlets_and_secrets() {
        let with_secret: EnvReader =
            Arc::new(|k: &str| (k == "TEST_PDU_COMMUNITY").then(|| "private".to_string()));
        let f = outlet_factory_with_env(&[pdu("pdu-a"), pdu("pdu-b")], with_secret);
        let o = f("pdu-a", 3).expect("configured outlet");
        assert_eq!(o.describe(), "pdu-a outlet 3");
        assert!(f("pdu-b", 8).is_some());
        assert!(f("pdu-a", 0).is_none());
        assert!(f("pdu-a", 9).is_none());
        assert!(f("pdu-z", 1).is_none());
        let without: EnvReader = Arc::new(|_: &str| None);
        let f = outlet_factory_with_env(&[pdu("pdu-a")], without);
        assert!(f("pdu-a", 1).is_none(), "no community in the environment");
    }
}
