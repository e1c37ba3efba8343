//! A simulated switched PDU that speaks real SNMP: an in-process agent (`async-snmp`'s agent)
//! on `127.0.0.1:<ephemeral>` serving the APC rPDU outlet table of the `apc-rpdu` profile, for
//! `hashshift demo` and for fast tests that need no net-snmp.
//!
//! | OID (`.n` = outlet) | access | value |
//! |---|---|---|
//! | `1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.n` rPDUOutletControlOutletCommand | read-write | 1 on, 2 off, 3 reboot (stays on); reads 1/2 as the state |
//! | `1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.n` rPDUOutletStatusOutletState | read-only | 1 on, 2 off |
//! | `1.3.6.1.4.1.318.1.1.12.3.5.1.1.7.n` rPDUOutletStatusLoad | read-only | Gauge32, tenths of amperes; 0 while off |
//!
//! SNMPv2c only (one read-write community): the real-agent tests (`tests/pdu_snmp.rs`, Debian's
//! snmpd) cover v3. What an outlet draws while on is a set value ([`FakePdu::set_current`]) or
//! follows a callback ([`FakePdu::follow`]: e.g. a simulated rig's power over the line
//! voltage), so a demo rig behind the PDU stops drawing when its outlet is cut.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_snmp::agent::Agent;
use async_snmp::{
    BoxFuture, GetNextResult, GetResult, HandlerResult, MibHandler, Oid, PreparedSet,
    RequestContext, SetCommitResult, SetTestError, SetTestResult, SetUndoResult, Value, VarBind,
};
use hashshift_proxy::pdu::{PduSettings, Security, profile};
use tokio_util::sync::CancellationToken;

/// The outlet table's root (`rPDUOutlet`): the agent's handler owns this subtree.
const ROOT: [u32; 11] = [1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3];
/// rPDUOutletControlOutletCommand.
const CONTROL: [u32; 15] = [1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3, 3, 1, 1, 4];
/// rPDUOutletStatusOutletState.
const STATE: [u32; 15] = [1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3, 5, 1, 1, 4];
/// rPDUOutletStatusLoad.
const LOAD: [u32; 15] = [1, 3, 6, 1, 4, 1, 318, 1, 1, 12, 3, 5, 1, 1, 7];

/// What an outlet draws while on, in amperes.
pub type CurrentSource = Arc<dyn Fn() -> f64 + Send + Sync>;

struct Outlet {
    on: bool,
    current: CurrentSource,
    switched: u64,
    bogus: Option<BogusState>,
}

/// A wrong answer for an outlet's state column (fault injection: a PDU that does not follow
/// its MIB must be an error, never a guess).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BogusState {
    /// An integer that is neither on (1) nor off (2).
    Integer(i32),
    /// A string where an INTEGER belongs.
    Text(String),
}

struct Table {
    outlets: Vec<Outlet>,
}

impl Table {
    fn outlet(&mut self, n: u32) -> Option<&mut Outlet> {
        let i = usize::try_from(n).ok()?.checked_sub(1)?;
        self.outlets.get_mut(i)
    }

    /// The value at `oid`, if it is an instance of the table.
    fn value(&mut self, oid: &[u32]) -> Option<Value> {
        let (column, n) = oid.split_at(oid.len().checked_sub(1)?);
        let outlet = self.outlet(*n.first()?)?;
        let state = Value::Integer(if outlet.on { 1 } else { 2 });
        if column == STATE
            && let Some(b) = &outlet.bogus
        {
            Some(match b {
                BogusState::Integer(i) => Value::Integer(*i),
                BogusState::Text(t) => Value::OctetString(t.clone().into()),
            })
        } else if column == CONTROL || column == STATE {
            Some(state)
        } else if column == LOAD {
            let amps = if outlet.on { (outlet.current)() } else { 0.0 };
            // Tenths of amperes, clamped into a Gauge32.
            let tenths = (amps * 10.0).round().clamp(0.0, f64::from(u32::MAX));
            Some(Value::Gauge32(tenths as u32))
        } else {
            None
        }
    }

    /// Every instance in OID order.
    fn instances(&self) -> impl Iterator<Item = Vec<u32>> + '_ {
        let count = u32::try_from(self.outlets.len()).unwrap_or(u32::MAX);
        [CONTROL, STATE, LOAD].into_iter().flat_map(move |column| {
            (1..=count).map(move |n| {
                let mut oid = column.to_vec();
                oid.push(n);
                oid
            })
        })
    }
}

type Shared = Arc<Mutex<Table>>;

fn lock(t: &Shared) -> MutexGuard<'_, Table> {
    // A poisoned lock only means a callback panicked; the table is still whole.
    t.lock().unwrap_or_else(|e| e.into_inner())
}

struct Handler {
    table: Shared,
}

impl MibHandler for Handler {
    fn get<'a>(
        &'a self,
        _ctx: &'a RequestContext,
        oid: &'a Oid,
    ) -> BoxFuture<'a, HandlerResult<GetResult>> {
        Box::pin(async move {
            let arcs = oid.arcs();
            Ok(match lock(&self.table).value(arcs) {
                Some(v) => GetResult::Value(v),
                None if arcs.len() == CONTROL.len() + 1
                    && [CONTROL, STATE, LOAD].iter().any(|c| arcs.starts_with(c)) =>
                {
                    GetResult::NoSuchInstance
                }
                None => GetResult::NoSuchObject,
            })
        })
    }

    fn get_next<'a>(
        &'a self,
        _ctx: &'a RequestContext,
        oid: &'a Oid,
    ) -> BoxFuture<'a, HandlerResult<GetNextResult>> {
        Box::pin(async move {
            let mut table = lock(&self.table);
            let next = table.instances().find(|i| i.as_slice() > oid.arcs());
            Ok(match next.and_then(|i| table.value(&i).map(|v| (i, v))) {
                Some((i, v)) => GetNextResult::Value(VarBind::new(Oid::from_slice(&i), v)),
                None => GetNextResult::EndOfMibView,
            })
        })
    }

    fn test_set<'a>(
        &'a self,
        _ctx: &'a RequestContext,
        oid: &'a Oid,
        value: &'a Value,
    ) -> BoxFuture<'a, SetTestResult> {
        Box::pin(async move {
            let arcs = oid.arcs();
            let Some((column, n)) = arcs.split_last().map(|(n, c)| (c, *n)) else {
                return Err(SetTestError::NotWritable);
            };
            if column != CONTROL || lock(&self.table).outlet(n).is_none() {
                return Err(SetTestError::NotWritable);
            }
            let Value::Integer(command) = value else {
                return Err(SetTestError::WrongType);
            };
            let on = match command {
                1 | 3 => true,
                2 => false,
                _ => return Err(SetTestError::WrongValue),
            };
            Ok(Box::new(Switch {
                table: self.table.clone(),
                outlet: n,
                on,
                before: None,
            }) as Box<dyn PreparedSet>)
        })
    }
}

/// A prepared outlet switch (SET's two phases).
struct Switch {
    table: Shared,
    outlet: u32,
    on: bool,
    before: Option<bool>,
}

impl PreparedSet for Switch {
    fn commit<'a>(
        &'a mut self,
        _ctx: &'a RequestContext,
        _oid: &'a Oid,
        _value: &'a Value,
    ) -> BoxFuture<'a, SetCommitResult> {
        Box::pin(async move {
            let mut table = lock(&self.table);
            if let Some(o) = table.outlet(self.outlet) {
                self.before = Some(o.on);
                o.on = self.on;
                o.switched = o.switched.saturating_add(1);
            }
            Ok(())
        })
    }

    fn undo<'a>(
        &'a mut self,
        _ctx: &'a RequestContext,
        _oid: &'a Oid,
        _value: &'a Value,
    ) -> BoxFuture<'a, SetUndoResult> {
        Box::pin(async move {
            if let Some(before) = self.before
                && let Some(o) = lock(&self.table).outlet(self.outlet)
            {
                o.on = before;
            }
            Ok(())
        })
    }
}

/// A simulated PDU: an SNMP agent on `127.0.0.1:<ephemeral>`. Stops when dropped.
pub struct FakePdu {
    addr: SocketAddr,
    community: String,
    table: Shared,
    cancel: CancellationToken,
}

impl FakePdu {
    /// Starts a PDU with `outlets` outlets, all on and drawing 0 A, answering v2c with
    /// `community` (read-write).
    pub async fn start(outlets: u16, community: &str) -> anyhow::Result<FakePdu> {
        let table: Shared = Arc::new(Mutex::new(Table {
            outlets: (0..outlets)
                .map(|_| Outlet {
                    on: true,
                    current: Arc::new(|| 0.0),
                    switched: 0,
                    bogus: None,
                })
                .collect(),
        }));
        let agent = Agent::builder()
            .bind("127.0.0.1:0")
            .community(community.as_bytes().to_vec())
            .handler(
                Oid::from_slice(&ROOT),
                Arc::new(Handler {
                    table: table.clone(),
                }),
            )
            .allow_all_access()
            .build()
            .await
            .map_err(|e| anyhow::anyhow!("fake PDU agent: {e}"))?;
        let addr = agent.local_addr();
        let cancel = agent.cancellation_token();
        tokio::spawn(async move {
            if let Err(e) = agent.run().await {
                tracing::warn!(error = %e, "fake PDU agent stopped");
            }
        });
        Ok(FakePdu {
            addr,
            community: community.to_string(),
            table,
            cancel,
        })
    }

    /// The agent's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its v2c community.
    pub fn community(&self) -> &str {
        &self.community
    }

    /// Outlets it has.
    pub fn outlets(&self) -> u16 {
        u16::try_from(lock(&self.table).outlets.len()).unwrap_or(u16::MAX)
    }

    /// Whether outlet `n` is on (`None`: no such outlet).
    pub fn is_on(&self, n: u16) -> Option<bool> {
        lock(&self.table).outlet(u32::from(n)).map(|o| o.on)
    }

    /// Switches outlet `n` by hand (the front panel); false if there is no such outlet.
    pub fn set_on(&self, n: u16, on: bool) -> bool {
        lock(&self.table)
            .outlet(u32::from(n))
            .map(|o| o.on = on)
            .is_some()
    }

    /// Sets what outlet `n` draws while on (A).
    pub fn set_current(&self, n: u16, amps: f64) -> bool {
        self.follow(n, Arc::new(move || amps))
    }

    /// Makes what outlet `n` draws while on follow `source` (A), read at every GET: e.g. a
    /// simulated rig's watts over the line voltage.
    pub fn follow(&self, n: u16, source: CurrentSource) -> bool {
        lock(&self.table)
            .outlet(u32::from(n))
            .map(|o| o.current = source)
            .is_some()
    }

    /// Makes outlet `n`'s state column answer `bogus` (`None`: the truth again).
    pub fn answer_state_with(&self, n: u16, bogus: Option<BogusState>) -> bool {
        lock(&self.table)
            .outlet(u32::from(n))
            .map(|o| o.bogus = bogus)
            .is_some()
    }

    /// How many SNMP SETs switched outlet `n` (including ones to the state it had).
    pub fn switch_count(&self, n: u16) -> u64 {
        lock(&self.table)
            .outlet(u32::from(n))
            .map_or(0, |o| o.switched)
    }

    /// Client settings for it (profile `apc-rpdu`, v2c, 230 V, 1 s timeout, 1 retry).
    pub fn settings(&self, name: &str) -> PduSettings {
        PduSettings {
            name: name.to_string(),
            addr: self.addr,
            security: Security::V2c {
                community: self.community.clone(),
            },
            profile: profile::find("apc-rpdu").expect("apc-rpdu is built in"),
            outlets: self.outlets(),
            voltage_v: Some(230.0),
            timeout: Duration::from_secs(1),
            retries: 1,
        }
    }

    /// A `[[pdu]]` entry for it (v2c, lab acknowledgement set), its community in the
    /// environment variable `community_env`.
    pub fn config_toml(&self, name: &str, community_env: &str) -> String {
        format!(
            "[[pdu]]\nname = \"{name}\"\naddress = \"{}\"\nprofile = \"apc-rpdu\"\noutlets = {}\n\
             version = \"2c\"\ninsecure_v2c = true\ncommunity_env = \"{community_env}\"\n\
             voltage_v = 230\n",
            self.addr,
            self.outlets()
        )
    }

    /// Stops the agent (an "agent down" test); the state stays readable.
    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

impl Drop for FakePdu {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hashshift_proxy::pdu::{PduClient, PduError};

    #[tokio::test]
    async fn the_proxy_client_switches_and_reads_it() {
        let pdu = FakePdu::start(4, "lab").await.unwrap();
        pdu.set_current(2, 7.3);
        let client = PduClient::new(pdu.settings("fake")).unwrap();
        let r = client.read_outlet(2).await.unwrap();
        assert!(r.on);
        assert_eq!(r.current_a, Some(7.3));
        client.set_outlet(2, false).await.unwrap();
        assert_eq!(pdu.is_on(2), Some(false));
        assert_eq!(pdu.switch_count(2), 1);
        let r = client.read_outlet(2).await.unwrap();
        assert!(!r.on);
        assert_eq!(r.current_a, Some(0.0));
        assert_eq!(pdu.is_on(1), Some(true), "others untouched");

        // The current can follow a simulated rig.
        let watts = Arc::new(Mutex::new(2300.0_f64));
        let w = watts.clone();
        pdu.follow(3, Arc::new(move || *w.lock().unwrap() / 230.0));
        assert_eq!(client.read_outlet(3).await.unwrap().power_w, Some(2300.0));
        *watts.lock().unwrap() = 0.0;
        assert_eq!(client.read_outlet(3).await.unwrap().power_w, Some(0.0));

        // Front panel, then a missing outlet.
        assert!(pdu.set_on(2, true));
        assert!(client.read_outlet(2).await.unwrap().on);
        let mut s = pdu.settings("fake");
        s.outlets = 8;
        let wide = PduClient::new(s).unwrap();
        let e = wide.read_outlet(6).await.unwrap_err();
        assert!(matches!(e, PduError::NoSuchObject { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_pdu_off_its_mib_is_an_error_not_a_guess() {
        let pdu = FakePdu::start(2, "lab").await.unwrap();
        let client = PduClient::new(pdu.settings("fake")).unwrap();
        for bogus in [BogusState::Integer(7), BogusState::Text("on".into())] {
            pdu.answer_state_with(1, Some(bogus.clone()));
            let e = client.read_outlet(1).await.unwrap_err();
            assert!(matches!(e, PduError::Malformed { .. }), "{bogus:?}: {e}");
            assert_eq!(
                hashshift_proxy::error::Classify::retry(&e),
                hashshift_proxy::error::Retry::No
            );
        }
        pdu.answer_state_with(1, None);
        assert!(client.read_outlet(1).await.unwrap().on);
        // A wrong value for the command column is refused by the agent: wrongValue.
        let mut s = pdu.settings("fake");
        s.profile.control_off = 9;
        let odd = PduClient::new(s).unwrap();
        let e = odd.set_outlet(1, false).await.unwrap_err();
        assert!(matches!(e, PduError::Refused { .. }), "{e}");
        assert_eq!(pdu.is_on(1), Some(true));
    }

    #[tokio::test]
    async fn a_stopped_pdu_times_out() {
        let pdu = FakePdu::start(2, "lab").await.unwrap();
        let mut s = pdu.settings("fake");
        s.timeout = Duration::from_millis(200);
        s.retries = 0;
        let client = PduClient::new(s).unwrap();
        assert!(client.read_outlet(1).await.unwrap().on);
        pdu.stop();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let e = client.read_outlet(1).await.unwrap_err();
        assert!(
            matches!(e, PduError::Timeout { .. } | PduError::Network { .. }),
            "{e}"
        );
    }
}
