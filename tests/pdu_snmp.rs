//! The PDU client against a real SNMP agent: Debian's net-snmp `snmpd`, one private agent per
//! test (tests/support/snmpd.rs), serving the APC rPDU outlet table through `pass_persist`.
//!
//! v2c and v3 authPriv (SHA-256 and SHA-1, AES-128) set and read; what a wrong community, an
//! unknown user, a wrong password, a missing outlet and a dead agent look like; and the
//! `[[pdu]]` config end to end through the power controller's `OutletControl` port. Without
//! snmpd the tests print a skip note, unless `HASHSHIFT_SNMPD=1` (CI), where they fail.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use hashshift_proxy::config::Pdu;
use hashshift_proxy::control::power::pdu_adapter::outlet_factory_with_env;
use hashshift_proxy::error::{Classify, Retry, Side};
use hashshift_proxy::pdu::{AuthProto, PduClient, PduError, PduSettings, PrivProto, Security};
use support::snmpd::{Snmpd, V3_AUTH_PASSWORD, V3_PRIV_PASSWORD, V3_USER, V3_USER_SHA1};

/// Settings that expect no answer: short, so a failing call costs little.
fn short(mut s: PduSettings) -> PduSettings {
    s.timeout = Duration::from_millis(300);
    s.retries = 1;
    s
}

/// Every test finishes within this or fails.
const TEST_BOUND: Duration = Duration::from_secs(30);

async fn bounded<F: Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::time::timeout(TEST_BOUND, f)
        .await
        .context("test exceeded its time bound")?
}

/// Switches outlet 3 off and on over SNMP and checks the agent's table and the reads.
async fn set_and_read(agent: &Snmpd, client: &PduClient) -> Result<()> {
    agent.set_current(3, 6.5)?;
    let cold = Instant::now();
    let r = client.read_outlet(3).await?;
    eprintln!(
        "first read (v3: engine discovery and key localization): {:?}",
        cold.elapsed()
    );
    ensure!(r.on, "outlet 3 starts on: {r:?}");
    ensure!(r.current_a == Some(6.5), "{r:?}");
    ensure!(r.power_w == Some(6.5 * 230.0), "current × voltage_v: {r:?}");

    let start = Instant::now();
    client.set_outlet(3, false).await?;
    let r = client.read_outlet(3).await?;
    let took = start.elapsed();
    eprintln!("one set + read against snmpd: {took:?}");
    ensure!(!agent.outlet(3)?.on, "the agent's table has outlet 3 off");
    ensure!(!r.on, "{r:?}");
    ensure!(
        r.current_a == Some(0.0),
        "an off outlet draws nothing: {r:?}"
    );
    ensure!(agent.outlet(4)?.on, "other outlets untouched");

    client.set_outlet(3, true).await?;
    ensure!(agent.outlet(3)?.on);
    ensure!(client.read_outlet(3).await?.on);
    // Idempotent: on again is fine.
    client.set_outlet(3, true).await?;
    // Someone at the front panel switches it off: the read says so.
    agent.set_on(3, false)?;
    ensure!(!client.read_outlet(3).await?.on);
    Ok(())
}

#[tokio::test]
async fn v2c_switches_and_reads_an_outlet() -> Result<()> {
    bounded(async {
        let Some(agent) = Snmpd::start(8)? else {
            return Ok(());
        };
        let client = PduClient::new(agent.settings_v2c())?;
        set_and_read(&agent, &client)
            .await
            .with_context(|| agent.log())
    })
    .await
}

#[tokio::test]
async fn v3_auth_priv_switches_and_reads_an_outlet() -> Result<()> {
    bounded(async {
        let Some(agent) = Snmpd::start(8)? else {
            return Ok(());
        };
        let client = PduClient::new(agent.settings_v3())?;
        set_and_read(&agent, &client)
            .await
            .with_context(|| agent.log())?;
        // SHA-1 + AES-128, what older PDUs offer.
        let sha1 = PduClient::new(agent.settings(Security::V3 {
            user: V3_USER_SHA1.into(),
            auth: AuthProto::Sha,
            auth_password: V3_AUTH_PASSWORD.into(),
            privacy: PrivProto::Aes,
            priv_password: V3_PRIV_PASSWORD.into(),
        }))?;
        sha1.set_outlet(5, false).await?;
        ensure!(!agent.outlet(5)?.on);
        ensure!(!sha1.read_outlet(5).await?.on);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_wrong_community_is_a_timeout_that_says_so() -> Result<()> {
    bounded(async {
        let Some(agent) = Snmpd::start(4)? else {
            return Ok(());
        };
        let client = PduClient::new(short(agent.settings(Security::V2c {
            community: "not-the-community".into(),
        })))?;
        let start = Instant::now();
        let e = client.set_outlet(1, false).await.unwrap_err();
        ensure!(matches!(e, PduError::Timeout { .. }), "{e}");
        ensure!(e.to_string().contains("wrong community"), "{e}");
        ensure!(start.elapsed() <= client.call_bound() + Duration::from_millis(300));
        ensure!(agent.outlet(1)?.on, "nothing switched");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn wrong_credentials_fail_bounded_and_say_why() -> Result<()> {
    bounded(async {
        let Some(agent) = Snmpd::start(4)? else {
            return Ok(());
        };
        let v3 = |user: &str, auth_password: &str| {
            short(agent.settings(Security::V3 {
                user: user.into(),
                auth: AuthProto::Sha256,
                auth_password: auth_password.into(),
                privacy: PrivProto::Aes,
                priv_password: V3_PRIV_PASSWORD.into(),
            }))
        };
        for (settings, what) in [
            (v3("nobody", V3_AUTH_PASSWORD), "unknown user"),
            (v3(V3_USER, "wrong-password-1"), "wrong auth password"),
        ] {
            let client = PduClient::new(settings)?;
            let e = client.set_outlet(1, false).await.unwrap_err();
            // net-snmp refuses with an unauthenticated report, which the client does not
            // trust: the call times out, and the message names the credentials.
            ensure!(matches!(e, PduError::Timeout { .. }), "{what}: {e}");
            ensure!(
                e.to_string().contains("v3 user or passwords"),
                "{what}: {e}"
            );
            ensure!(e.side() == Side::Firmware, "{what}");
            eprintln!("{what}: {e}");
        }
        // A read-only community is refused outright, and says so.
        let ro = PduClient::new(agent.settings(Security::V2c {
            community: support::snmpd::COMMUNITY_RO.into(),
        }))?;
        ensure!(ro.read_outlet(1).await?.on, "it may read");
        let e = ro.set_outlet(1, false).await.unwrap_err();
        ensure!(matches!(e, PduError::Auth { .. }), "{e}");
        ensure!(e.retry() == Retry::No && e.side() == Side::Firmware, "{e}");
        eprintln!("read-only community: {e}");
        ensure!(agent.outlet(1)?.on, "nothing switched");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_outlet_the_agent_lacks_and_a_dead_agent() -> Result<()> {
    bounded(async {
        let Some(mut agent) = Snmpd::start(4)? else {
            return Ok(());
        };
        // The config says 8 outlets, the PDU has 4 (wrong model in the config).
        let mut settings = agent.settings_v2c();
        settings.outlets = 8;
        let client = PduClient::new(settings)?;
        let e = client.read_outlet(6).await.unwrap_err();
        ensure!(matches!(e, PduError::NoSuchObject { .. }), "{e}");
        ensure!(e.retry() == Retry::No);
        let e = client.set_outlet(6, false).await.unwrap_err();
        ensure!(
            matches!(e, PduError::Refused { .. } | PduError::NoSuchObject { .. }),
            "{e}"
        );
        ensure!(e.retry() == Retry::No, "{e}");

        // Agent down: a bounded Timeout, then back once it is.
        ensure!(client.read_outlet(1).await?.on);
        agent.stop();
        let client = PduClient::new(short(client.settings().clone()))?;
        let start = Instant::now();
        let e = client.read_outlet(1).await.unwrap_err();
        ensure!(
            matches!(e, PduError::Timeout { .. } | PduError::Network { .. }),
            "{e}"
        );
        ensure!(e.retry() == Retry::Yes, "{e}");
        ensure!(start.elapsed() <= client.call_bound() + Duration::from_millis(300));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_pdu_config_end_to_end_through_the_outlet_port() -> Result<()> {
    bounded(async {
        let Some(agent) = Snmpd::start(8)? else {
            return Ok(());
        };
        // The built-in profile, v3, secrets from the (given) environment.
        let text = agent.config_v3("rack-7", "RACK7");
        let config = hashshift_proxy::config::Config::from_toml(&format!(
            "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n\
             [[upstream]]\nurl = \"stratum+tcp://127.0.0.1:1\"\nuser = \"u\"\n{text}"
        ))?;
        ensure!(config.pdu.len() == 1);
        let factory = outlet_factory_with_env(&config.pdu, Arc::new(Snmpd::env_v3("RACK7")));
        ensure!(factory("rack-7", 9).is_none(), "outlet 9 of 8");
        let outlet = factory("rack-7", 2).context("outlet 2")?;
        ensure!(outlet.describe() == "rack-7 outlet 2");
        agent.set_current(2, 12.0)?;
        let r = outlet.read().await?;
        ensure!(r.on && r.current_a == Some(12.0) && r.power_w == Some(2760.0), "{r:?}");
        outlet.set(false).await?;
        ensure!(!agent.outlet(2)?.on);
        let r = outlet.read().await?;
        ensure!(!r.on && r.power_w == Some(0.0), "{r:?}");

        // A custom profile: the same table without the meter column reads as unmetered.
        let custom: Pdu = toml::from_str(&format!(
            "name = \"custom\"\naddress = \"{}\"\noutlets = 8\nversion = \"2c\"\n\
             insecure_v2c = true\ncommunity_env = \"C\"\n\
             custom_profile = {{ name = \"apc-switch-only\", control_oid = \"1.3.6.1.4.1.318.1.1.12.3.3.1.1.4\", \
             control_on = 1, control_off = 2, state_oid = \"1.3.6.1.4.1.318.1.1.12.3.5.1.1.4\", \
             state_on = 1, state_off = 2 }}\n",
            agent.addr()
        ))?;
        let factory = outlet_factory_with_env(
            &[custom],
            Arc::new(|k: &str| (k == "C").then(|| support::snmpd::COMMUNITY.to_string())),
        );
        let outlet = factory("custom", 2).context("custom outlet 2")?;
        outlet.set(true).await?;
        let r = outlet.read().await?;
        ensure!(r.on && r.current_a.is_none() && r.power_w.is_none(), "{r:?}");
        ensure!(agent.outlet(2)?.on);
        Ok(())
    })
    .await
}
