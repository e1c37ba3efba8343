//! Vendor profiles: which OIDs switch an outlet, read its state and meter it, as data.
//!
//! A profile names three columns of the vendor's outlet table (the outlet number is appended
//! as the last arc) and the integer values they take. The built-in ones live in
//! `profiles.toml` next to this file (compiled in); a `[[pdu]]` may bring its own
//! (`custom_profile`). Every profile is validated once, where it enters: well-formed numeric
//! OIDs inside the enterprise or MIB-2 trees, distinct on/off values, finite positive scales.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The built-in profiles, as shipped.
const BUILT_IN: &str = include_str!("profiles.toml");

/// The longest OID accepted in a profile (arcs, before the outlet number): real outlet
/// columns have 15–16; SNMP caps an OID at 128.
const MAX_ARCS: usize = 32;

/// One vendor profile. Field names are the TOML keys.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Its name (`profile = "apc-rpdu"` in `[[pdu]]`).
    pub name: String,
    /// What it is, for `check-config` and logs.
    #[serde(default)]
    pub description: String,
    /// The outlet command column (written with `control_on` / `control_off`).
    pub control_oid: String,
    /// The value that switches an outlet on.
    pub control_on: i32,
    /// The value that switches an outlet off.
    pub control_off: i32,
    /// The outlet state column (read).
    pub state_oid: String,
    /// The state value that means on.
    pub state_on: i32,
    /// The state value that means off.
    pub state_off: i32,
    /// The per-outlet current column, where the PDU meters it.
    #[serde(default)]
    pub current_oid: Option<String>,
    /// Amperes per unit of `current_oid` (APC: 0.1, tenths of amperes).
    #[serde(default = "one")]
    pub current_scale: f64,
    /// The per-outlet active power column, where the PDU meters it.
    #[serde(default)]
    pub power_oid: Option<String>,
    /// Watts per unit of `power_oid`.
    #[serde(default = "one")]
    pub power_scale: f64,
}

fn one() -> f64 {
    1.0
}

/// Why a profile was refused: the profile, the key, the problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("PDU profile {profile:?}: {key}: {problem}")]
pub struct ProfileError {
    /// The profile's name.
    pub profile: String,
    /// The offending key.
    pub key: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    profile: Vec<Profile>,
}

/// Every built-in profile, validated. Fails only if `profiles.toml` is broken (a unit test
/// keeps it whole).
pub fn built_in() -> Result<Vec<Profile>, ProfileError> {
    let file: File = toml::from_str(BUILT_IN).map_err(|e| ProfileError {
        profile: "<built-in>".into(),
        key: "profiles.toml",
        problem: e.to_string(),
    })?;
    for p in &file.profile {
        p.validate()?;
    }
    Ok(file.profile)
}

/// The built-in profile with this name.
pub fn find(name: &str) -> Option<Profile> {
    built_in().ok()?.into_iter().find(|p| p.name == name)
}

/// The names of the built-in profiles (for error messages and docs).
pub fn names() -> Vec<String> {
    built_in()
        .map(|v| v.into_iter().map(|p| p.name).collect())
        .unwrap_or_default()
}

/// A numeric OID (`1.3.6.1.4.1.318...`), checked: 2 to [`MAX_ARCS`] arcs, each a `u32`, first
/// arc 0–2 and second below 40 under 0 and 1 (X.690), no leading dot or empty arc.
pub fn parse_oid(s: &str) -> Result<Vec<u32>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty OID".into());
    }
    let mut arcs = Vec::new();
    for part in s.split('.') {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{s:?} is not a numeric OID (digits separated by dots, no leading dot)"
            ));
        }
        let arc: u32 = part
            .parse()
            .map_err(|_| format!("{s:?}: arc {part} is too large"))?;
        arcs.push(arc);
        if arcs.len() > MAX_ARCS {
            return Err(format!("{s:?} has more than {MAX_ARCS} arcs"));
        }
    }
    match arcs.as_slice() {
        [first, second, ..] if *first <= 2 && (*first == 2 || *second < 40) => Ok(arcs),
        [_] => Err(format!("{s:?} has a single arc")),
        _ => Err(format!(
            "{s:?}: first arcs out of range (0-2, then below 40)"
        )),
    }
}

impl Profile {
    /// Checks every field; the error names the key.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let err = |key: &'static str, problem: String| ProfileError {
            profile: self.name.clone(),
            key,
            problem,
        };
        if self.name.trim().is_empty() || self.name.len() > 64 {
            return Err(err("name", "must be 1 to 64 characters".into()));
        }
        let control = parse_oid(&self.control_oid).map_err(|e| err("control_oid", e))?;
        let state = parse_oid(&self.state_oid).map_err(|e| err("state_oid", e))?;
        if control == state {
            return Err(err(
                "state_oid",
                "is the control column: a PDU reports the state it is in, in its own column".into(),
            ));
        }
        if self.control_on == self.control_off {
            return Err(err("control_off", "must differ from control_on".into()));
        }
        if self.state_on == self.state_off {
            return Err(err("state_off", "must differ from state_on".into()));
        }
        if let Some(o) = &self.current_oid {
            parse_oid(o).map_err(|e| err("current_oid", e))?;
        }
        if let Some(o) = &self.power_oid {
            parse_oid(o).map_err(|e| err("power_oid", e))?;
        }
        for (key, v) in [
            ("current_scale", self.current_scale),
            ("power_scale", self.power_scale),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 1000.0) {
                return Err(err(key, format!("{v} is not in (0, 1000]")));
            }
        }
        Ok(())
    }

    /// The validated OIDs, parsed (`None` where `validate` would refuse).
    pub(crate) fn oids(&self) -> Option<ProfileOids> {
        Some(ProfileOids {
            control: parse_oid(&self.control_oid).ok()?,
            state: parse_oid(&self.state_oid).ok()?,
            current: match &self.current_oid {
                Some(o) => Some(parse_oid(o).ok()?),
                None => None,
            },
            power: match &self.power_oid {
                Some(o) => Some(parse_oid(o).ok()?),
                None => None,
            },
        })
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A profile's columns as arcs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProfileOids {
    pub control: Vec<u32>,
    pub state: Vec<u32>,
    pub current: Option<Vec<u32>>,
    pub power: Option<Vec<u32>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_profile_loads() {
        let all = built_in().expect("profiles.toml is valid");
        assert!(all.len() >= 2);
        let mut names: Vec<_> = all.iter().map(|p| p.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len(), "profile names are unique");
        let apc = find("apc-rpdu").expect("apc-rpdu is built in");
        assert_eq!(apc.control_oid, "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4");
        assert_eq!((apc.control_on, apc.control_off), (1, 2));
        assert_eq!((apc.state_on, apc.state_off), (1, 2));
        let apc2 = find("apc-rpdu2").expect("apc-rpdu2 is built in");
        assert_eq!((apc2.state_on, apc2.state_off), (2, 1));
        assert!(find("nope").is_none());
        for p in &all {
            assert!(p.oids().is_some(), "{}", p.name);
        }
    }

    #[test]
    fn oids_are_checked() {
        assert_eq!(parse_oid("1.3.6.1").unwrap(), vec![1, 3, 6, 1]);
        for bad in [
            "",
            ".1.3.6",
            "1..3",
            "1.3.x",
            "1",
            "3.1",
            "1.40",
            "1.3.99999999999",
            "1.3.-1",
        ] {
            assert!(parse_oid(bad).is_err(), "{bad:?}");
        }
        let long = vec!["1"; MAX_ARCS + 1].join(".");
        assert!(parse_oid(&long).is_err());
    }

    #[test]
    fn bad_profiles_name_the_key() {
        let good = find("apc-rpdu").unwrap();
        let mut p = good.clone();
        p.control_off = p.control_on;
        assert_eq!(p.validate().unwrap_err().key, "control_off");
        let mut p = good.clone();
        p.state_oid = p.control_oid.clone();
        assert_eq!(p.validate().unwrap_err().key, "state_oid");
        let mut p = good.clone();
        p.current_scale = f64::NAN;
        assert_eq!(p.validate().unwrap_err().key, "current_scale");
        let mut p = good;
        p.power_oid = Some("1.3.6.1.4.1.318.a".into());
        assert_eq!(p.validate().unwrap_err().key, "power_oid");
    }
}
