//! `[cluster]`: several hashshift instances serve one site, with one power leader elected on
//! etcd (docs/cluster.md). Absent: one instance, its plan in the local state directory.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// Longest site or instance name: they become etcd key segments and label values.
pub const MAX_NAME_LEN: usize = 63;
/// Most etcd endpoints a config may list (a cluster larger than 9 members is not one a site
/// would run; more is a typo).
pub const MAX_ENDPOINTS: usize = 9;

/// How this instance joins the site's cluster.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// etcd client URLs (`http://HOST:2379` or `https://HOST:2379`), 1 to 9 of them.
    pub etcd: Vec<String>,
    /// The site's name: every instance of one site names the same (keys live under
    /// `/hashshift/<site>/`). Letters, digits, `.`, `_`, `-`; at most 63.
    pub site: String,
    /// This instance's name, unique within the site (same characters).
    pub instance: String,
    /// The leader's etcd lease, in seconds (2 to 60; default 6): a dead leader is replaced
    /// within this plus the election delay, and a live one renews every third of it.
    #[serde(default = "default_lease_ttl_secs")]
    pub lease_ttl_secs: u64,
    /// Each etcd call's timeout, in milliseconds (100 to 10000; default 1500).
    #[serde(default = "default_etcd_timeout_ms")]
    pub timeout_ms: u64,
    /// etcd user (etcd's own authentication), with `password_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Environment variable holding the etcd user's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// CA certificate (PEM) that signs the etcd servers' certificates; required with
    /// `https://` endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's client-certificate authentication, with `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// Default [`Cluster::lease_ttl_secs`].
fn default_lease_ttl_secs() -> u64 {
    6
}

/// Default [`Cluster::timeout_ms`].
fn default_etcd_timeout_ms() -> u64 {
    1500
}

/// Whether `name` is a site or instance name: 1 to 63 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && name != "."
        && name != ".."
}

impl Cluster {
    /// A plain-`http://`, unauthenticated section on one endpoint, the other keys at their
    /// defaults (tests).
    #[cfg(test)]
    pub(crate) fn plain(url: &str, site: &str, instance: &str, ttl_secs: u64) -> Cluster {
        Cluster {
            etcd: vec![url.to_owned()],
            site: site.into(),
            instance: instance.into(),
            lease_ttl_secs: ttl_secs,
            timeout_ms: default_etcd_timeout_ms(),
            username: None,
            password_env: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }

    /// Whether every endpoint is `https://`.
    pub fn tls(&self) -> bool {
        self.etcd.iter().all(|e| e.starts_with("https://"))
    }

    /// Range-checks what serde cannot.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.etcd.is_empty() || self.etcd.len() > MAX_ENDPOINTS {
            return Err(invalid(
                "cluster.etcd",
                format!("list 1 to {MAX_ENDPOINTS} etcd client URLs"),
            ));
        }
        for e in &self.etcd {
            let rest = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"));
            let Some(rest) = rest else {
                return Err(invalid(
                    "cluster.etcd",
                    format!("{e:?}: an etcd URL starts with http:// or https://"),
                ));
            };
            if rest.is_empty() || rest.len() > 253 || rest.contains(['/', '?', '#', ' ', '@']) {
                return Err(invalid(
                    "cluster.etcd",
                    format!("{e:?}: expected http(s)://HOST:PORT"),
                ));
            }
        }
        let https = self
            .etcd
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if https != 0 && https != self.etcd.len() {
            return Err(invalid(
                "cluster.etcd",
                "mixes http:// and https:// endpoints: use one scheme for the whole cluster",
            ));
        }
        if https != 0 && self.ca_file.is_none() {
            return Err(invalid(
                "cluster.ca_file",
                "required with https:// endpoints (the CA that signs the etcd servers)",
            ));
        }
        if https == 0 && (self.ca_file.is_some() || self.cert_file.is_some()) {
            return Err(invalid(
                "cluster.ca_file",
                "TLS files are set but the endpoints are http://: use https:// endpoints",
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(invalid(
                "cluster.cert_file",
                "cert_file and key_file go together",
            ));
        }
        if self.username.is_some() != self.password_env.is_some() {
            return Err(invalid(
                "cluster.username",
                "username and password_env go together",
            ));
        }
        if !valid_name(&self.site) {
            return Err(invalid(
                "cluster.site",
                format!("{:?}: 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ -", self.site),
            ));
        }
        if !valid_name(&self.instance) {
            return Err(invalid(
                "cluster.instance",
                format!(
                    "{:?}: 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ -",
                    self.instance
                ),
            ));
        }
        if !(2..=60).contains(&self.lease_ttl_secs) {
            return Err(invalid("cluster.lease_ttl_secs", "must be 2 to 60 seconds"));
        }
        if !(100..=10_000).contains(&self.timeout_ms) {
            return Err(invalid(
                "cluster.timeout_ms",
                "must be 100 to 10000 milliseconds",
            ));
        }
        if !cfg!(feature = "etcd") {
            return Err(invalid(
                "cluster",
                "this hashshift was built without etcd support: build it with `cargo build --release --features etcd` (needs protoc; docs/cluster.md)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        Cluster::plain("http://127.0.0.1:2379", "hall-a", "proxy-1", 6)
    }

    #[test]
    fn names_are_key_segments() {
        for ok in ["a", "hall-a", "proxy_1.b", &"x".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ä", &"x".repeat(64), "a\n"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn bad_settings_name_their_key() {
        type Change = Box<dyn Fn(&mut Cluster)>;
        let cases: Vec<(&str, Change)> = vec![
            ("cluster.etcd", Box::new(|c| c.etcd.clear())),
            (
                "cluster.etcd",
                Box::new(|c| c.etcd = vec!["127.0.0.1:2379".into()]),
            ),
            (
                "cluster.etcd",
                Box::new(|c| c.etcd = vec!["http://a:1/x".into()]),
            ),
            (
                "cluster.etcd",
                Box::new(|c| c.etcd = vec!["http://".into()]),
            ),
            (
                "cluster.etcd",
                Box::new(|c| c.etcd = vec!["http://a:1".into(), "https://b:1".into()]),
            ),
            (
                "cluster.ca_file",
                Box::new(|c| c.etcd = vec!["https://a:1".into()]),
            ),
            (
                "cluster.ca_file",
                Box::new(|c| c.ca_file = Some("ca.pem".into())),
            ),
            (
                "cluster.username",
                Box::new(|c| c.username = Some("u".into())),
            ),
            ("cluster.site", Box::new(|c| c.site = "a/b".into())),
            ("cluster.instance", Box::new(|c| c.instance = String::new())),
            ("cluster.lease_ttl_secs", Box::new(|c| c.lease_ttl_secs = 1)),
            (
                "cluster.lease_ttl_secs",
                Box::new(|c| c.lease_ttl_secs = 61),
            ),
            ("cluster.timeout_ms", Box::new(|c| c.timeout_ms = 50)),
        ];
        for (key, change) in cases {
            let mut c = cluster();
            change(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn a_good_section_passes_only_with_the_feature() {
        let r = cluster().validate();
        assert_eq!(r.is_ok(), cfg!(feature = "etcd"), "{r:?}");
        if let Err(e) = r {
            assert!(e.to_string().contains("--features etcd"), "{e}");
        }
    }
}
