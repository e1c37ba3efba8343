//! Switched PDUs (`[[pdu]]`): where each is, how to log in, and which vendor profile's OIDs
//! it speaks.
//!
//! Secrets never sit in the file: the v2c community and the v3 passwords are read from the
//! environment variables the entry names (`community_env`, `auth_password_env`,
//! `priv_password_env`) when the client is made ([`Pdu::settings`]). SNMPv3 must be authPriv;
//! v2c (clear-text community, anyone on the path can switch outlets) is refused unless the
//! entry says `insecure_v2c = true` (a lab).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};
use crate::pdu::{self, AuthProto, PduSettings, PrivProto, Profile, Security};

/// The most outlets one PDU may declare (the largest rack PDUs have 48; daisy-chained APC
/// units number up to 4 × 48).
pub const MAX_OUTLETS: u16 = 512;

/// One switched PDU.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pdu {
    /// Its name, which `[[rig]]` entries refer to (`pdu = "NAME"`).
    pub name: String,
    /// Its SNMP agent: `IP` or `IP:port` (`[v6]:port`); port 161 by default.
    pub address: String,
    /// A built-in vendor profile (`"apc-rpdu"`, `"apc-rpdu2"`); or give `custom_profile`.
    #[serde(default)]
    pub profile: Option<String>,
    /// A profile of your own, with the same keys as the built-in ones (`control_oid`,
    /// `control_on`, `control_off`, `state_oid`, `state_on`, `state_off`, optional
    /// `current_oid`/`current_scale`, `power_oid`/`power_scale`).
    #[serde(default)]
    pub custom_profile: Option<Profile>,
    /// How many outlets it has: rigs' outlet numbers are checked against `1..=outlets`.
    pub outlets: u16,
    /// SNMP version: `"3"` (authPriv) or `"2c"` (lab only, needs `insecure_v2c = true`).
    pub version: String,
    /// v2c: the environment variable holding the (write) community.
    #[serde(default)]
    pub community_env: Option<String>,
    /// v2c: the acknowledgement that a clear-text community is acceptable here (a lab).
    #[serde(default)]
    pub insecure_v2c: bool,
    /// v3: the USM user.
    #[serde(default)]
    pub user: Option<String>,
    /// v3: authentication protocol, `"sha"`, `"sha224"`, `"sha256"`, `"sha384"`, `"sha512"`.
    #[serde(default)]
    pub auth: Option<String>,
    /// v3: the environment variable holding the authentication password (8+ characters).
    #[serde(default)]
    pub auth_password_env: Option<String>,
    /// v3: privacy protocol, `"aes"` (AES-128), `"aes192"`, `"aes256"` (`"aes192c"`,
    /// `"aes256c"` for the Cisco/Reeder key extension).
    #[serde(default)]
    pub privacy: Option<String>,
    /// v3: the environment variable holding the privacy password (8+ characters).
    #[serde(default)]
    pub priv_password_env: Option<String>,
    /// Line voltage (V): turns a metered current into watts where the profile has no power
    /// column.
    #[serde(default)]
    pub voltage_v: Option<f64>,
    /// One SNMP request's timeout (ms), 100 to 30000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries after a timeout, 0 to 5.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_timeout_ms() -> u64 {
    2000
}

fn default_retries() -> u32 {
    1
}

impl Pdu {
    /// The agent's address, port 161 unless given (`None` if it does not parse).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let a = self.address.trim();
        a.parse::<SocketAddr>()
            .ok()
            .or_else(|| {
                a.parse::<IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, pdu::DEFAULT_PORT))
            })
            .or_else(|| {
                // A bracketed IPv6 address without a port.
                a.strip_prefix('[')
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|ip| ip.parse::<IpAddr>().ok())
                    .map(|ip| SocketAddr::new(ip, pdu::DEFAULT_PORT))
            })
    }

    /// Its profile: the custom one, or the built-in one it names.
    pub fn resolved_profile(&self) -> Option<Profile> {
        match (&self.custom_profile, &self.profile) {
            (Some(p), None) => Some(p.clone()),
            (None, Some(name)) => pdu::profile::find(name),
            _ => None,
        }
    }

    /// The client settings, with secrets read through `env` (`std::env::var` in the proxy).
    /// Fails with the key and the variable when a secret is missing; the entry is assumed
    /// validated.
    pub fn settings(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<PduSettings, String> {
        let key = |k: &str| format!("pdu {:?}: {k}", self.name);
        let secret = |k: &str, var: &Option<String>| -> Result<String, String> {
            let var = var
                .as_deref()
                .ok_or_else(|| format!("{} is not set", key(k)))?;
            match env(var) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(format!(
                    "{}: environment variable {var} is not set or empty",
                    key(k)
                )),
            }
        };
        let security = if self.version == "2c" {
            Security::V2c {
                community: secret("community_env", &self.community_env)?,
            }
        } else {
            Security::V3 {
                user: self.user.clone().unwrap_or_default(),
                auth: self
                    .auth
                    .as_deref()
                    .and_then(AuthProto::parse)
                    .ok_or_else(|| format!("{} is not valid", key("auth")))?,
                auth_password: secret("auth_password_env", &self.auth_password_env)?,
                privacy: self
                    .privacy
                    .as_deref()
                    .and_then(PrivProto::parse)
                    .ok_or_else(|| format!("{} is not valid", key("privacy")))?,
                priv_password: secret("priv_password_env", &self.priv_password_env)?,
            }
        };
        Ok(PduSettings {
            name: self.name.clone(),
            addr: self
                .socket_addr()
                .ok_or_else(|| format!("{} does not parse", key("address")))?,
            security,
            profile: self
                .resolved_profile()
                .ok_or_else(|| format!("{} names no profile", key("profile")))?,
            outlets: self.outlets,
            voltage_v: self.voltage_v,
            timeout: Duration::from_millis(self.timeout_ms),
            retries: self.retries,
        })
    }
}

/// An environment variable name: letters, digits and `_`, not starting with a digit.
fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks every `[[pdu]]`: each error names the key (`pdu[2].auth`).
pub(super) fn validate(pdus: &[Pdu]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for (i, p) in pdus.iter().enumerate() {
        let key = |k: &str| format!("pdu[{i}].{k}");
        let name = p.name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(invalid(
                key("name"),
                "must be 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        if !names.insert(name) {
            return Err(invalid(key("name"), format!("{name:?} is used twice")));
        }
        match p.socket_addr() {
            None => {
                return Err(invalid(
                    key("address"),
                    format!("{:?} is not an IP address or IP:port", p.address),
                ));
            }
            Some(a) if a.port() == 0 || a.ip().is_unspecified() => {
                return Err(invalid(key("address"), "needs a real address and port"));
            }
            Some(_) => {}
        }
        match (&p.profile, &p.custom_profile) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    key("custom_profile"),
                    "give either profile or custom_profile, not both",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    key("profile"),
                    format!(
                        "missing: name a built-in profile ({}) or give custom_profile",
                        pdu::profile::names().join(", ")
                    ),
                ));
            }
            (Some(name), None) => {
                if pdu::profile::find(name).is_none() {
                    return Err(invalid(
                        key("profile"),
                        format!(
                            "{name:?} is not a built-in profile ({})",
                            pdu::profile::names().join(", ")
                        ),
                    ));
                }
            }
            (None, Some(c)) => {
                c.validate()
                    .map_err(|e| invalid(key(&format!("custom_profile.{}", e.key)), e.problem))?;
            }
        }
        if p.outlets == 0 || p.outlets > MAX_OUTLETS {
            return Err(invalid(
                key("outlets"),
                format!("{} is not in 1..={MAX_OUTLETS}", p.outlets),
            ));
        }
        let env_key = |k: &str, v: &Option<String>| -> Result<(), ConfigError> {
            match v {
                None => Err(invalid(
                    key(k),
                    "missing (the environment variable holding it)",
                )),
                Some(s) if !is_env_name(s) => Err(invalid(
                    key(k),
                    format!(
                        "{s:?} is not an environment variable name (the secret itself never goes in the file)"
                    ),
                )),
                Some(_) => Ok(()),
            }
        };
        let none_of = |keys: &[(&str, bool)], version: &str| -> Result<(), ConfigError> {
            match keys.iter().find(|(_, set)| *set) {
                Some((k, _)) => Err(invalid(
                    key(k),
                    format!("does not apply to version {version:?}"),
                )),
                None => Ok(()),
            }
        };
        match p.version.as_str() {
            "2c" => {
                if !p.insecure_v2c {
                    return Err(invalid(
                        key("version"),
                        "\"2c\" sends the community in clear text: anyone on the path can switch outlets; use \"3\" (authPriv), or set insecure_v2c = true for a lab",
                    ));
                }
                env_key("community_env", &p.community_env)?;
                none_of(
                    &[
                        ("user", p.user.is_some()),
                        ("auth", p.auth.is_some()),
                        ("auth_password_env", p.auth_password_env.is_some()),
                        ("privacy", p.privacy.is_some()),
                        ("priv_password_env", p.priv_password_env.is_some()),
                    ],
                    "2c",
                )?;
            }
            "3" => {
                none_of(
                    &[
                        ("community_env", p.community_env.is_some()),
                        ("insecure_v2c", p.insecure_v2c),
                    ],
                    "3",
                )?;
                match p.user.as_deref().map(str::trim) {
                    Some(u) if !u.is_empty() && u.len() <= 32 => {}
                    _ => {
                        return Err(invalid(
                            key("user"),
                            "v3 needs a USM user (1 to 32 characters)",
                        ));
                    }
                }
                match p.auth.as_deref() {
                    Some(a) if AuthProto::parse(a).is_some() => {}
                    Some("md5") => {
                        return Err(invalid(
                            key("auth"),
                            "MD5 is broken; use \"sha256\" (or \"sha\")",
                        ));
                    }
                    _ => {
                        return Err(invalid(
                            key("auth"),
                            "v3 must be authPriv: \"sha\", \"sha224\", \"sha256\", \"sha384\" or \"sha512\"",
                        ));
                    }
                }
                env_key("auth_password_env", &p.auth_password_env)?;
                match p.privacy.as_deref() {
                    Some(a) if PrivProto::parse(a).is_some() => {}
                    Some("des") => {
                        return Err(invalid(
                            key("privacy"),
                            "DES is broken; use \"aes\" or \"aes256\"",
                        ));
                    }
                    _ => {
                        return Err(invalid(
                            key("privacy"),
                            "v3 must be authPriv: \"aes\", \"aes192\", \"aes256\", \"aes192c\" or \"aes256c\"",
                        ));
                    }
                }
                env_key("priv_password_env", &p.priv_password_env)?;
            }
            other => {
                return Err(invalid(
                    key("version"),
                    format!("{other:?} is not \"3\" or \"2c\" (v1 is not supported)"),
                ));
            }
        }
        if let Some(v) = p.voltage_v
            && !(v.is_finite() && (80.0..=480.0).contains(&v))
        {
            return Err(invalid(key("voltage_v"), format!("{v} is not in 80..=480")));
        }
        if !(100..=30_000).contains(&p.timeout_ms) {
            return Err(invalid(
                key("timeout_ms"),
                format!("{} is not in 100..=30000", p.timeout_ms),
            ));
        }
        if p.retries > 5 {
            return Err(invalid(
                key("retries"),
                format!("{} is not in 0..=5", p.retries),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Vec<Pdu>, ConfigError> {
        #[derive(Deserialize)]
        struct Doc {
            pdu: Vec<Pdu>,
        }
        let d: Doc = toml::from_str(toml_text)?;
        validate(&d.pdu)?;
        Ok(d.pdu)
    }

    const V3: &str = r#"
        [[pdu]]
        name = "pdu-a"
        address = "10.0.9.20"
        profile = "apc-rpdu"
        outlets = 24
        version = "3"
        user = "hashshift"
        auth = "sha256"
        auth_password_env = "PDU_AUTH"
        privacy = "aes"
        priv_password_env = "PDU_PRIV"
        voltage_v = 230
    "#;

    fn key_of(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("not Invalid: {other}"),
        }
    }

    #[test]
    fn a_v3_pdu_loads_and_makes_settings() {
        let p = &parse(V3).unwrap()[0];
        assert_eq!(p.socket_addr().unwrap().port(), 161);
        let env = |k: &str| match k {
            "PDU_AUTH" => Some("auth-secret-1".to_string()),
            "PDU_PRIV" => Some("priv-secret-1".to_string()),
            _ => None,
        };
        let s = p.settings(&env).unwrap();
        assert_eq!(s.outlets, 24);
        assert_eq!(s.timeout, Duration::from_millis(2000));
        assert!(matches!(
            s.security,
            Security::V3 {
                auth: AuthProto::Sha256,
                ..
            }
        ));
        let e = p.settings(&|_| None).unwrap_err();
        assert!(e.contains("PDU_AUTH"), "{e}");
    }

    #[test]
    fn v2c_needs_the_acknowledgement() {
        let v2 = r#"
            [[pdu]]
            name = "lab"
            address = "127.0.0.1:1161"
            profile = "apc-rpdu"
            outlets = 8
            version = "2c"
            community_env = "PDU_COMMUNITY"
        "#;
        let e = parse(v2).unwrap_err();
        assert_eq!(key_of(e), "pdu[0].version");
        let ok = format!("{v2}\ninsecure_v2c = true\n");
        let p = &parse(&ok).unwrap()[0];
        assert_eq!(p.socket_addr().unwrap().port(), 1161);
    }

    #[test]
    fn every_bad_value_names_its_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("outlets = 24", "outlets = 0", "pdu[0].outlets"),
            ("outlets = 24", "outlets = 600", "pdu[0].outlets"),
            (
                "address = \"10.0.9.20\"",
                "address = \"pdu.example\"",
                "pdu[0].address",
            ),
            (
                "profile = \"apc-rpdu\"",
                "profile = \"nope\"",
                "pdu[0].profile",
            ),
            ("auth = \"sha256\"", "auth = \"md5\"", "pdu[0].auth"),
            ("privacy = \"aes\"", "privacy = \"des\"", "pdu[0].privacy"),
            ("privacy = \"aes\"", "", "pdu[0].privacy"),
            (
                "auth_password_env = \"PDU_AUTH\"",
                "auth_password_env = \"hunter 2\"",
                "pdu[0].auth_password_env",
            ),
            ("user = \"hashshift\"", "user = \"\"", "pdu[0].user"),
            ("version = \"3\"", "version = \"1\"", "pdu[0].version"),
            ("voltage_v = 230", "voltage_v = 5000", "pdu[0].voltage_v"),
            ("voltage_v = 230", "timeout_ms = 10", "pdu[0].timeout_ms"),
            ("voltage_v = 230", "retries = 50", "pdu[0].retries"),
            (
                "voltage_v = 230",
                "community_env = \"X\"",
                "pdu[0].community_env",
            ),
            ("name = \"pdu-a\"", "name = \"a b\"", "pdu[0].name"),
        ];
        for (from, to, key) in cases {
            let text = V3.replace(from, to);
            assert_ne!(text, V3, "{from}");
            let e = parse(&text).expect_err(to);
            assert_eq!(&key_of(e), key, "{to}");
        }
        let twice = format!("{V3}\n{V3}");
        assert_eq!(key_of(parse(&twice).unwrap_err()), "pdu[1].name");
    }

    #[test]
    fn a_custom_profile_is_validated() {
        let custom = V3.replace(
            "profile = \"apc-rpdu\"",
            r#"custom_profile = { name = "mine", control_oid = "1.3.6.1.4.1.99.1.1", control_on = 1, control_off = 0, state_oid = "1.3.6.1.4.1.99.1.2", state_on = 1, state_off = 0 }"#,
        );
        let p = &parse(&custom).unwrap()[0];
        assert_eq!(p.resolved_profile().unwrap().name, "mine");
        let bad = custom.replace("1.3.6.1.4.1.99.1.2", "1.3..6");
        assert_eq!(
            key_of(parse(&bad).unwrap_err()),
            "pdu[0].custom_profile.state_oid"
        );
        let both = custom.replace("outlets = 24", "outlets = 24\nprofile = \"apc-rpdu\"");
        assert_eq!(key_of(parse(&both).unwrap_err()), "pdu[0].custom_profile");
    }
}
