//! Stock Antminer (and Hiveon-style) web API, port 80: sleep and wake through the miner-mode
//! setting, state from the stats.
//!
//! - Every request carries HTTP Digest auth ([`digest`]: MD5, `qop=auth`, realm
//!   "antMiner Configuration"). The first request of a call is sent bare to get a challenge;
//!   later requests of the same call answer that challenge with a growing `nc`. A 401 with
//!   `stale=true` (the nonce expired) is answered once more with the new nonce; a 401 after
//!   answering a fresh challenge is [`FirmwareError::LoginRefused`] (not retryable).
//! - `GET /cgi-bin/get_miner_conf.cgi` → the whole config (pools, fan, frequency level and
//!   `bitmain-work-mode`: "0" normal, "1" sleep, "2" high, "3" low power; newer firmware
//!   also `miner-mode`).
//! - Sleep / wake = read-modify-write: `POST /cgi-bin/set_miner_conf.cgi` with the config the
//!   stock web page itself posts — `bitmain-fan-ctrl`, `bitmain-fan-pwm`, `freq-level`,
//!   `pools` (url/user/pass) taken unchanged from the config just read, and the mode as an
//!   integer under both `miner-mode` and `bitmain-work-mode` ([`set_payload`]). Posting only
//!   the mode would make the firmware rewrite its config without the pools. The reply is
//!   `{"stats":"success","code":"M000",...}` or `{"stats":"error","msg":...}`. The firmware
//!   then restarts its miner process: for a few seconds stats come back refused, 5xx or
//!   empty, which are retryable errors here, never "asleep".
//! - Idempotent: a rig already in the wanted mode is not written to (sleep: mode 1; wake: any
//!   mode but 1, so a rig a site keeps in low-power mode stays there; a rig we woke from
//!   sleep comes back in normal mode, since a stateless call cannot know the mode it had).
//!   This is also what makes a retry safe: a write that timed out (some firmware replies only
//!   once its miner restarted; asic-rs allows it 30 s) may have been applied, and the next
//!   call reads the mode before writing again.
//! - `GET /cgi-bin/stats.cgi` (`summary.cgi` on firmware without it) → `STATS[0].rate_5s` in
//!   `rate_unit` (GH/s on SHA-256 rigs; H/s, MH/s, TH/s elsewhere) and power where the
//!   firmware reports it (`chain_power` "3250 W", `power`, `Power`, `watt`; stock S19-era
//!   firmware does not: `None`).
//!
//! Facts from pyasic (`AntminerModernWebAPI`, `MiningModeConfig.as_am_modern`), asic-rs
//! (`antminer` v2020 / v2023_07 backends: both mode keys, the `stats == "success"` check) and
//! foreman-apps (a captured S19 config and the exact body its power-mode action posts); the
//! replies the tests parse are in `tools/fixtures/firmware/antminer/` with their sources.
//!
//! Each call opens its own connections (one request each, [`crate::http_client`]) and keeps
//! its Digest state on its stack: nothing is shared between rigs or calls.
//!
//! Not covered: pre-2020 firmware that posts `_ant_*` form fields instead of JSON (S9/S17
//! era) — such a rig answers the JSON post with an error, reported as
//! [`FirmwareError::Rejected`].

pub mod digest;

use bytes::Bytes;
use hyper::Method;
use hyper::header::{AUTHORIZATION, HeaderName};
use serde_json::{Map, Value};

use super::braiins::firmware_error;
use super::{Endpoint, FirmwareClient, FirmwareError, RigState, RigStatus};
use crate::http_client::{self, Limits, Response};

/// `GET` the whole miner config.
pub const GET_CONF: &str = "/cgi-bin/get_miner_conf.cgi";
/// `POST` a whole miner config.
pub const SET_CONF: &str = "/cgi-bin/set_miner_conf.cgi";
/// `GET` the miner statistics.
pub const STATS: &str = "/cgi-bin/stats.cgi";
/// `GET` the miner summary (fallback for firmware without `stats.cgi`).
pub const SUMMARY: &str = "/cgi-bin/summary.cgi";

/// Below this hashrate (TH/s) a rig counts as not hashing: a sleeping rig reports exactly 0.
pub const HASHING_THRESHOLD_THS: f64 = 0.01;

/// Requests one call may send: bare, answered, and once more after a stale nonce, for each of
/// at most three paths — a bound on what a confused server can make us do.
const MAX_SENDS_PER_REQUEST: usize = 3;

/// The miner modes of the config (`miner-mode` / `bitmain-work-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 0: normal.
    Normal,
    /// 1: sleep (hash boards off, control board and fans idle).
    Sleep,
    /// 2: high performance (some models).
    High,
    /// 3: low power.
    Low,
}

impl Mode {
    /// The integer the firmware stores.
    pub fn code(self) -> u8 {
        match self {
            Mode::Normal => 0,
            Mode::Sleep => 1,
            Mode::High => 2,
            Mode::Low => 3,
        }
    }

    /// Reads a mode written as an integer or a string of one ("1" and 1 both occur).
    pub fn from_value(v: &Value) -> Option<Mode> {
        let n = match v {
            Value::Number(n) => n.as_u64()?,
            Value::String(s) => s.trim().parse::<u64>().ok()?,
            _ => return None,
        };
        match n {
            0 => Some(Mode::Normal),
            1 => Some(Mode::Sleep),
            2 => Some(Mode::High),
            3 => Some(Mode::Low),
            _ => None,
        }
    }
}

/// The mode in a `get_miner_conf` reply: `miner-mode` if present, else `bitmain-work-mode`.
pub fn config_mode(conf: &Value) -> Option<Mode> {
    conf.get("miner-mode")
        .or_else(|| conf.get("bitmain-work-mode"))
        .and_then(Mode::from_value)
}

/// The body to post to `set_miner_conf.cgi` to put a rig whose config is `conf` into `mode`:
/// the fields the stock web page posts, copied with their types from `conf`, and the mode as
/// an integer under both keys (firmware generations read one or the other). `None` when
/// `conf` is not an object or has no pools: posting that would erase the rig's pools.
pub fn set_payload(conf: &Value, mode: Mode) -> Option<Value> {
    let conf = conf.as_object()?;
    let pools = conf.get("pools").filter(|p| p.is_array())?;
    let mut out = Map::new();
    out.insert("pools".into(), pools.clone());
    let copy = |out: &mut Map<String, Value>, key: &str, from: &[&str], default: Value| {
        let v = from.iter().find_map(|k| conf.get(*k)).cloned();
        out.insert(key.to_owned(), v.unwrap_or(default));
    };
    copy(
        &mut out,
        "bitmain-fan-ctrl",
        &["bitmain-fan-ctrl"],
        false.into(),
    );
    copy(
        &mut out,
        "bitmain-fan-pwm",
        &["bitmain-fan-pwm"],
        "100".into(),
    );
    copy(
        &mut out,
        "freq-level",
        &["freq-level", "bitmain-freq-level"],
        "100".into(),
    );
    out.insert("miner-mode".into(), mode.code().into());
    out.insert("bitmain-work-mode".into(), mode.code().into());
    Some(Value::Object(out))
}

/// A hashrate in `unit` (as the firmware's `rate_unit` spells it) in TH/s; `None` for a unit
/// we do not know (never guess a factor of 1000).
pub fn to_ths(value: f64, unit: Option<&str>) -> Option<f64> {
    let unit = unit.map(|u| u.trim().trim_end_matches("/s").trim_end_matches("/S"));
    // Divide rather than multiply by 1e-3 etc.: exact for the common GH/s round numbers.
    let ths = match unit.map(str::to_ascii_uppercase).as_deref() {
        // Firmware without `rate_unit` (2020-era S19) reports GH/s.
        None | Some("GH") => value / 1e3,
        Some("H") => value / 1e12,
        Some("KH") => value / 1e9,
        Some("MH") => value / 1e6,
        Some("TH") => value,
        Some("PH") => value * 1e3,
        _ => return None,
    };
    Some(ths).filter(|v| v.is_finite() && *v >= 0.0)
}

/// Watts from a `chain_power`-style value: a number, or a string like "3250 W".
fn watts(v: &Value) -> Option<f64> {
    let w = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.split_whitespace().next()?.parse::<f64>().ok()?,
        _ => return None,
    };
    Some(w).filter(|w| w.is_finite() && *w >= 0.0 && *w < 1e6)
}

/// What a `stats.cgi` or `summary.cgi` reply says: hashrate (TH/s) and power (W).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figures {
    /// 5 s hashrate in TH/s; `None` when absent or in an unknown unit.
    pub hashrate_ths: Option<f64>,
    /// Power in watts, where the firmware reports it.
    pub power_w: Option<f64>,
}

/// Reads a `stats.cgi` (`STATS[0]`) or `summary.cgi` (`SUMMARY[0]`) reply. `Err` says why it
/// is not a usable reply (the miner process restarting answers with `STATUS` "E" or an empty
/// list).
pub fn figures(reply: &Value) -> Result<Figures, String> {
    if let Some(status) = reply.pointer("/STATUS/STATUS").and_then(Value::as_str)
        && status != "S"
    {
        let msg = reply
            .pointer("/STATUS/Msg")
            .and_then(Value::as_str)
            .unwrap_or("");
        return Err(format!("STATUS {status:.8}: {msg:.100}"));
    }
    let row = ["STATS", "SUMMARY"]
        .iter()
        .find_map(|k| reply.get(*k).and_then(Value::as_array))
        .ok_or("no STATS or SUMMARY list")?
        .first()
        .ok_or("empty STATS/SUMMARY list (miner process not running?)")?;
    let unit = row.get("rate_unit").and_then(Value::as_str);
    let rate = row
        .get("rate_5s")
        .or_else(|| row.get("GHS 5s"))
        .and_then(|v| match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        });
    let hashrate_ths = rate.and_then(|r| to_ths(r, unit));
    let power_w = ["chain_power", "power", "Power", "watt"]
        .iter()
        .find_map(|k| row.get(*k).and_then(watts));
    Ok(Figures {
        hashrate_ths,
        power_w,
    })
}

/// Mode and hashrate → [`RigState`]: sleep and not hashing → `Sleeping`, sleep and still
/// hashing → `Stopping`, any other mode hashing → `Mining`, not hashing → `Waking` (the miner
/// restarts after every config write and ramps like a reboot); unknown mode or hashrate →
/// `Unknown`.
pub fn derive_state(mode: Option<Mode>, hashrate_ths: Option<f64>) -> RigState {
    let Some(h) = hashrate_ths else {
        return RigState::Unknown;
    };
    let hashing = h >= HASHING_THRESHOLD_THS;
    match mode {
        Some(Mode::Sleep) if hashing => RigState::Stopping,
        Some(Mode::Sleep) => RigState::Sleeping,
        Some(_) if hashing => RigState::Mining,
        Some(_) => RigState::Waking,
        None => RigState::Unknown,
    }
}

/// The Digest state of one call: the challenge being answered and its nonce count.
#[derive(Debug, Default)]
struct Session {
    challenge: Option<digest::Challenge>,
    nc: u32,
}

fn cnonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn short(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

/// One request with Digest auth, answering a new challenge as the module doc says. Returns
/// the 2xx reply; any other status is an error of the right class.
async fn request(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    session: &mut Session,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<Response, FirmwareError> {
    let addr = endpoint.addr;
    let command = format!("{method} {path}");
    let host = addr.to_string();
    let limits = Limits {
        connect_timeout: client.timeouts.connect,
        request_timeout: client.timeouts.request,
        max_body: client.max_reply_bytes,
    };
    let creds = &endpoint.credentials;
    // Whether the challenge we hold came from the reply just before (so a 401 now means the
    // answer itself was refused), and whether a stale nonce was already retried.
    let mut fresh = false;
    let mut stale_retried = false;
    for _ in 0..MAX_SENDS_PER_REQUEST {
        let auth = session.challenge.as_ref().map(|ch| {
            session.nc = session.nc.saturating_add(1);
            digest::authorization(
                ch,
                &creds.user,
                creds.password(),
                method.as_str(),
                path,
                session.nc,
                &cnonce(),
            )
        });
        let headers: Vec<(HeaderName, &str)> = auth
            .as_deref()
            .map(|a| (AUTHORIZATION, a))
            .into_iter()
            .collect();
        let req = http_client::Request {
            method: method.clone(),
            host: &host,
            path,
            headers: &headers,
            body: body.clone(),
        };
        let resp = http_client::request(addr, req, limits)
            .await
            .map_err(|e| firmware_error(addr, command.clone(), e))?;
        match resp.status {
            200..=299 => return Ok(resp),
            401 => {
                let challenge = match digest::find_challenge(&resp.www_authenticate) {
                    Ok(c) => c,
                    Err(digest::DigestError::Unsupported(what)) => {
                        return Err(FirmwareError::Rejected {
                            addr,
                            command,
                            detail: format!("HTTP 401 asks for {what}, which we do not speak"),
                            retryable: false,
                        });
                    }
                    Err(e) => {
                        return Err(FirmwareError::Malformed {
                            addr,
                            command,
                            detail: format!("HTTP 401 without a usable Digest challenge: {e}"),
                        });
                    }
                };
                // Answering the challenge of the reply just before was refused: the
                // password is wrong, unless only the nonce expired meanwhile (once).
                if auth.is_some() && fresh {
                    if !challenge.stale {
                        return Err(FirmwareError::LoginRefused {
                            addr,
                            detail: format!(
                                "{command}: Digest answer refused for user {:?} (realm {:?})",
                                creds.user, challenge.realm
                            ),
                        });
                    }
                    if stale_retried {
                        return Err(FirmwareError::SessionExpired {
                            addr,
                            detail: format!("{command}: nonce stale again right after a fresh one"),
                        });
                    }
                    stale_retried = true;
                }
                session.challenge = Some(challenge);
                session.nc = 0;
                fresh = true;
            }
            403 => {
                return Err(FirmwareError::LoginRefused {
                    addr,
                    detail: format!("{command}: HTTP 403: {}", short(&resp.body)),
                });
            }
            status => {
                return Err(FirmwareError::Rejected {
                    addr,
                    command,
                    detail: format!("HTTP {status}: {}", short(&resp.body)),
                    retryable: crate::error::Retry::for_http_status(status).is_retryable(),
                });
            }
        }
    }
    // Unreachable in practice (every path of the third send returns); a typed error is
    // cheaper than a panic path.
    Err(FirmwareError::SessionExpired {
        addr,
        detail: format!("{command}: too many Digest rounds"),
    })
}

fn json(endpoint: &Endpoint, command: &str, body: &[u8]) -> Result<Value, FirmwareError> {
    // The CGIs print a couple of newlines before the JSON; serde skips whitespace.
    serde_json::from_slice(body).map_err(|e| FirmwareError::Malformed {
        addr: endpoint.addr,
        command: command.to_owned(),
        detail: if body.iter().all(u8::is_ascii_whitespace) {
            "empty reply (miner process restarting?)".to_owned()
        } else {
            format!("not JSON: {e}")
        },
    })
}

async fn get_json(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    session: &mut Session,
    path: &str,
) -> Result<Value, FirmwareError> {
    let resp = request(client, endpoint, session, Method::GET, path, Bytes::new()).await?;
    json(endpoint, &format!("GET {path}"), &resp.body)
}

async fn read_conf(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    session: &mut Session,
) -> Result<(Value, Mode), FirmwareError> {
    let conf = get_json(client, endpoint, session, GET_CONF).await?;
    let mode = config_mode(&conf).ok_or_else(|| FirmwareError::Malformed {
        addr: endpoint.addr,
        command: format!("GET {GET_CONF}"),
        detail: "no readable miner-mode or bitmain-work-mode".into(),
    })?;
    Ok((conf, mode))
}

/// Reads the config, and writes it back with `mode` unless the rig is already there.
async fn set_mode(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    want: Mode,
) -> Result<(), FirmwareError> {
    let mut session = Session::default();
    let (conf, mode) = read_conf(client, endpoint, &mut session).await?;
    let already = match want {
        Mode::Sleep => mode == Mode::Sleep,
        _ => mode != Mode::Sleep,
    };
    if already {
        return Ok(());
    }
    let command = format!("POST {SET_CONF}");
    let payload = set_payload(&conf, want).ok_or_else(|| FirmwareError::Malformed {
        addr: endpoint.addr,
        command: format!("GET {GET_CONF}"),
        detail: "config has no pools list: refusing to write a config that would erase them".into(),
    })?;
    let resp = request(
        client,
        endpoint,
        &mut session,
        Method::POST,
        SET_CONF,
        payload.to_string().into(),
    )
    .await?;
    // Some firmware answers the write with an empty or plain-text body: 2xx is acceptance;
    // only an explicit error is a refusal. `status` confirms what happened either way.
    if let Ok(reply) = serde_json::from_slice::<Value>(&resp.body)
        && let Some(stats) = reply.get("stats").and_then(Value::as_str)
        && stats != "success"
    {
        let msg = reply.get("msg").and_then(Value::as_str).unwrap_or("");
        let code = reply.get("code").and_then(Value::as_str).unwrap_or("");
        return Err(FirmwareError::Rejected {
            addr: endpoint.addr,
            command,
            detail: format!("{stats:.20} {code:.10}: {msg:.100}"),
            retryable: false,
        });
    }
    Ok(())
}

/// Command the rig to sleep (`miner-mode` 1). `Ok` when the firmware accepted the new config
/// or was already asleep.
pub async fn sleep(client: &FirmwareClient, endpoint: &Endpoint) -> Result<(), FirmwareError> {
    set_mode(client, endpoint, Mode::Sleep).await
}

/// Command the rig to wake (`miner-mode` 0). `Ok` when the firmware accepted the new config
/// or was not asleep.
pub async fn wake(client: &FirmwareClient, endpoint: &Endpoint) -> Result<(), FirmwareError> {
    set_mode(client, endpoint, Mode::Normal).await
}

/// Read the rig's state (mode from the config, hashrate and power from the stats).
pub async fn status(
    client: &FirmwareClient,
    endpoint: &Endpoint,
) -> Result<RigStatus, FirmwareError> {
    let mut session = Session::default();
    let (_, mode) = read_conf(client, endpoint, &mut session).await?;
    let (path, reply) = match get_json(client, endpoint, &mut session, STATS).await {
        Ok(v) => (STATS, v),
        // Firmware without stats.cgi: the summary has the same rate fields.
        Err(FirmwareError::Rejected { detail, .. }) if detail.starts_with("HTTP 404") => (
            SUMMARY,
            get_json(client, endpoint, &mut session, SUMMARY).await?,
        ),
        Err(e) => return Err(e),
    };
    let figures = figures(&reply).map_err(|detail| FirmwareError::Malformed {
        addr: endpoint.addr,
        command: format!("GET {path}"),
        detail,
    })?;
    Ok(RigStatus {
        state: derive_state(Some(mode), figures.hashrate_ths),
        power_w: figures.power_w,
        hashrate_ths: figures.hashrate_ths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::net::SocketAddr;

    const DIR: &str = "../../../tools/fixtures/firmware/antminer/";
    const S19PROPLUS_STATS: &str =
        include_str!("../../../tools/fixtures/firmware/antminer/s19proplus-stats.json");
    const S19J_SUMMARY: &str =
        include_str!("../../../tools/fixtures/firmware/antminer/s19j-summary.json");
    const S19_CONF_SLEEP: &str =
        include_str!("../../../tools/fixtures/firmware/antminer/s19-get_miner_conf-sleep.json");
    const X19_CONF: &str =
        include_str!("../../../tools/fixtures/firmware/antminer/x19-get_miner_conf.json");
    const DG_STATS: &str =
        include_str!("../../../tools/fixtures/firmware/antminer/dg-home1-stats.json");
    const DG_SUMMARY: &str =
        include_str!("../../../tools/fixtures/firmware/antminer/dg-home1-summary.json");
    const SET_OK: &str =
        include_str!("../../../tools/fixtures/firmware/antminer/set_miner_conf-ok.json");
    const SET_ERROR: &str =
        include_str!("../../../tools/fixtures/firmware/antminer/set_miner_conf-error.json");

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{DIR}: {e}"))
    }

    #[test]
    fn stats_fixture_s19proplus() {
        let f = figures(&parse(S19PROPLUS_STATS)).expect("usable");
        let h = f.hashrate_ths.expect("hashrate");
        assert!((h - 121.05623).abs() < 1e-9, "{h}");
        assert_eq!(f.power_w, None, "stock S19Pro+ stats report no power");
        assert_eq!(
            derive_state(Some(Mode::Normal), f.hashrate_ths),
            RigState::Mining
        );
        assert_eq!(
            derive_state(Some(Mode::Sleep), f.hashrate_ths),
            RigState::Stopping
        );
    }

    #[test]
    fn summary_fixture_s19j() {
        let f = figures(&parse(S19J_SUMMARY)).expect("usable");
        assert_eq!(f.hashrate_ths, Some(102.0));
        assert_eq!(f.power_w, None);
    }

    #[test]
    fn idle_fixtures_in_mhs_dg_home1() {
        for reply in [DG_STATS, DG_SUMMARY] {
            let f = figures(&parse(reply)).expect("usable");
            assert_eq!((f.hashrate_ths, f.power_w), (Some(0.0), None));
            assert_eq!(
                derive_state(Some(Mode::Sleep), f.hashrate_ths),
                RigState::Sleeping
            );
            assert_eq!(
                derive_state(Some(Mode::Normal), f.hashrate_ths),
                RigState::Waking
            );
        }
        // The unit matters: its ideal rate is 3003.75 MH/s, i.e. 0.003 TH/s, not 3 TH/s.
        let ideal = parse(DG_STATS)["STATS"][0]["rate_ideal"].as_f64();
        let unit = parse(DG_STATS)["STATS"][0]["rate_unit"]
            .as_str()
            .map(str::to_owned);
        let ths = ideal.and_then(|r| to_ths(r, unit.as_deref()));
        assert!(
            ths.is_some_and(|t| (t - 0.00300375).abs() < 1e-12),
            "{ths:?}"
        );
    }

    #[test]
    fn conf_fixtures_and_payloads() {
        let sleeping = parse(S19_CONF_SLEEP);
        assert!(
            S19_CONF_SLEEP.starts_with("\n\n"),
            "kept as the CGI prints it"
        );
        assert_eq!(config_mode(&sleeping), Some(Mode::Sleep));
        let mining = parse(X19_CONF);
        assert_eq!(config_mode(&mining), Some(Mode::Normal));

        let p = set_payload(&mining, Mode::Sleep).expect("payload");
        assert_eq!(
            p,
            json!({
                "pools": mining["pools"].clone(),
                "bitmain-fan-ctrl": false,
                "bitmain-fan-pwm": "100",
                "freq-level": "100",
                "miner-mode": 1,
                "bitmain-work-mode": 1,
            })
        );
        assert_eq!(config_mode(&p), Some(Mode::Sleep));
        let p = set_payload(&sleeping, Mode::Normal).expect("payload");
        assert_eq!(p["pools"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            (&p["miner-mode"], &p["bitmain-work-mode"]),
            (&json!(0), &json!(0))
        );
        // Newer firmware: `miner-mode` wins, `freq-level` is taken as it is.
        let newer = json!({"pools": [], "miner-mode": 3, "bitmain-work-mode": "0",
                           "freq-level": "90", "bitmain-fan-ctrl": true, "bitmain-fan-pwm": "70"});
        assert_eq!(config_mode(&newer), Some(Mode::Low));
        let p = set_payload(&newer, Mode::Sleep).expect("payload");
        assert_eq!(
            (&p["freq-level"], &p["bitmain-fan-pwm"]),
            (&json!("90"), &json!("70"))
        );
        // No pools: refuse to write a config that would drop them.
        assert_eq!(
            set_payload(&json!({"bitmain-work-mode": "0"}), Mode::Sleep),
            None
        );
        assert_eq!(set_payload(&json!([1, 2]), Mode::Sleep), None);
    }

    #[test]
    fn set_replies() {
        assert_eq!(parse(SET_OK)["stats"], "success");
        assert_eq!(parse(SET_OK)["code"], "M000");
        assert_eq!(parse(SET_ERROR)["stats"], "error");
    }

    #[test]
    fn modes_units_and_states() {
        for (v, m) in [
            (json!("0"), Some(Mode::Normal)),
            (json!(1), Some(Mode::Sleep)),
            (json!(" 3 "), Some(Mode::Low)),
            (json!(2), Some(Mode::High)),
            (json!("9"), None),
            (json!(-1), None),
            (json!(true), None),
            (json!(null), None),
        ] {
            assert_eq!(Mode::from_value(&v), m, "{v}");
        }
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        assert!(close(to_ths(121056.23, Some("GH/s")), 121.05623));
        assert_eq!(to_ths(95000.0, None), Some(95.0));
        assert_eq!(to_ths(95.0, Some("TH/s")), Some(95.0));
        assert!(close(to_ths(5e12, Some("H/s")), 5.0));
        assert!(close(to_ths(0.2, Some("PH/s")), 200.0));
        assert_eq!(to_ths(1.0, Some("furlongs")), None);
        assert_eq!(to_ths(-1.0, Some("GH")), None);
        assert_eq!(to_ths(f64::INFINITY, Some("GH")), None);
        assert_eq!(
            derive_state(Some(Mode::Sleep), Some(0.0)),
            RigState::Sleeping
        );
        assert_eq!(
            derive_state(Some(Mode::Sleep), Some(50.0)),
            RigState::Stopping
        );
        assert_eq!(
            derive_state(Some(Mode::Normal), Some(0.0)),
            RigState::Waking
        );
        assert_eq!(derive_state(Some(Mode::Low), Some(60.0)), RigState::Mining);
        assert_eq!(derive_state(None, Some(60.0)), RigState::Unknown);
        assert_eq!(derive_state(Some(Mode::Sleep), None), RigState::Unknown);
    }

    #[test]
    fn power_where_reported_and_broken_replies() {
        let hiveon =
            json!({"STATS": [{"rate_5s": 0.0, "rate_unit": "GH/s", "chain_power": "3250 W"}]});
        let f = figures(&hiveon).expect("usable");
        assert_eq!((f.hashrate_ths, f.power_w), (Some(0.0), Some(3250.0)));
        let numeric = json!({"SUMMARY": [{"rate_5s": "200000", "Power": 3500}]});
        let f = figures(&numeric).expect("usable");
        assert_eq!((f.hashrate_ths, f.power_w), (Some(200.0), Some(3500.0)));
        let f = figures(&json!({"STATS": [{"rate_5s": 1.0, "power": "lots"}]})).expect("usable");
        assert_eq!(f.power_w, None);
        for bad in [
            json!({"STATUS": {"STATUS": "E", "Msg": "miner not running"}, "STATS": []}),
            json!({"STATS": []}),
            json!({"nothing": 1}),
            json!("x"),
        ] {
            assert!(figures(&bad).is_err(), "{bad}");
        }
        let f = figures(&json!({"STATS": [{"elapsed": 3}]})).expect("no rate");
        assert_eq!(f.hashrate_ths, None);
    }

    /// A web server answering each path with a canned raw HTTP reply (no auth: the adapter's
    /// first, bare request then succeeds), counting the requests per path.
    async fn canned(
        routes: Vec<(&'static str, Vec<u8>)>,
    ) -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let line = head.lines().next().unwrap_or("").to_owned();
                let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                log.lock().expect("log").push(line);
                let reply = routes
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, r)| r.clone())
                    .unwrap_or_else(|| {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()
                    });
                let _ = s.write_all(&reply).await;
                let _ = s.shutdown().await;
            }
        });
        (addr, seen)
    }

    fn ok(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn endpoint(addr: SocketAddr) -> Endpoint {
        Endpoint::new(
            super::super::FirmwareKind::Antminer,
            addr,
            super::super::Credentials::new("root", "root"),
        )
    }

    fn client() -> FirmwareClient {
        FirmwareClient::new(super::super::Timeouts {
            connect: std::time::Duration::from_secs(2),
            request: std::time::Duration::from_secs(2),
        })
    }

    #[tokio::test]
    async fn summary_is_read_where_stats_cgi_is_missing() {
        let (addr, seen) = canned(vec![
            (GET_CONF, ok(S19_CONF_SLEEP)),
            (SUMMARY, ok(S19J_SUMMARY)),
        ])
        .await;
        let s = client().status(&endpoint(addr)).await.expect("status");
        assert_eq!(
            (s.state, s.hashrate_ths, s.power_w),
            (RigState::Stopping, Some(102.0), None)
        );
        let seen = seen.lock().expect("log").clone();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(
            seen[1].contains(STATS) && seen[2].contains(SUMMARY),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn refusals_and_broken_replies_have_their_class() {
        let c = client();
        let big = format!("{{\"x\": \"{}\"}}", "a".repeat(300 * 1024));
        type Check = fn(&FirmwareError) -> bool;
        let cases: Vec<(Vec<u8>, Check)> = vec![
            (
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_vec(),
                |e| matches!(e, FirmwareError::Malformed { detail, .. } if detail.contains("Digest")),
            ),
            (
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256\r\nContent-Length: 0\r\n\r\n".to_vec(),
                |e| matches!(e, FirmwareError::Rejected { retryable: false, .. }),
            ),
            (
                b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 4\r\n\r\nbusy".to_vec(),
                |e| matches!(e, FirmwareError::Rejected { retryable: true, .. }),
            ),
            (
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec(),
                |e| matches!(e, FirmwareError::Rejected { retryable: true, .. }),
            ),
            (
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_vec(),
                |e| matches!(e, FirmwareError::LoginRefused { .. }),
            ),
            (
                ok(&big),
                |e| matches!(e, FirmwareError::Malformed { detail, .. } if detail.contains("larger than")),
            ),
            (
                ok(r#"{"pools": [], "bitmain-work-mode": "7"}"#),
                |e| matches!(e, FirmwareError::Malformed { detail, .. } if detail.contains("miner-mode")),
            ),
        ];
        for (reply, want) in cases {
            let (addr, _) = canned(vec![(GET_CONF, reply.clone())]).await;
            let e = c.status(&endpoint(addr)).await.expect_err("fails");
            assert!(
                want(&e),
                "{}: {e}",
                String::from_utf8_lossy(&reply[..60.min(reply.len())])
            );
        }
    }

    #[tokio::test]
    async fn writes_refused_or_unsafe_are_errors_and_redundant_ones_are_skipped() {
        let c = client();
        // The firmware's error reply to a write.
        let (addr, _) = canned(vec![(GET_CONF, ok(X19_CONF)), (SET_CONF, ok(SET_ERROR))]).await;
        let e = c.sleep(&endpoint(addr)).await.expect_err("refused");
        assert!(
            matches!(&e, FirmwareError::Rejected { retryable: false, detail, .. } if detail.contains("Invalid configuration")),
            "{e}"
        );
        // Accepted.
        let (addr, seen) = canned(vec![(GET_CONF, ok(X19_CONF)), (SET_CONF, ok(SET_OK))]).await;
        c.sleep(&endpoint(addr)).await.expect("accepted");
        assert_eq!(seen.lock().expect("log").len(), 2);
        // Already awake: no write at all.
        let (addr, seen) = canned(vec![(GET_CONF, ok(X19_CONF))]).await;
        c.wake(&endpoint(addr)).await.expect("idempotent");
        assert_eq!(seen.lock().expect("log").len(), 1);
        // A config without pools is never written back.
        let (addr, seen) = canned(vec![(GET_CONF, ok(r#"{"bitmain-work-mode": "0"}"#))]).await;
        let e = c.sleep(&endpoint(addr)).await.expect_err("unsafe");
        assert!(matches!(e, FirmwareError::Malformed { .. }), "{e}");
        assert_eq!(seen.lock().expect("log").len(), 1);
    }

    #[test]
    fn empty_and_garbage_bodies_are_malformed_with_a_reason() {
        let ep = Endpoint::new(
            super::super::FirmwareKind::Antminer,
            "127.0.0.1:80".parse().expect("addr"),
            super::super::Credentials::new("root", "root"),
        );
        for (body, want) in [
            (&b"\n\n"[..], "empty reply"),
            (b"<html>busy</html>", "not JSON"),
            (b"{\"STATS\": [", "not JSON"),
        ] {
            match json(&ep, "GET /x", body) {
                Err(FirmwareError::Malformed { detail, .. }) => {
                    assert!(detail.contains(want), "{detail}")
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
