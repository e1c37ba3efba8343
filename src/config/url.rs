//! Pool URLs: `stratum+tcp://HOST:PORT`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Protocol spoken to a pool, from the URL scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// `stratum+tcp://`
    Sv1,
}

/// A parsed pool URL. Host names are resolved when connecting, not when loading the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolUrl {
    /// Wire protocol.
    pub protocol: UpstreamProtocol,
    /// Host name or address literal (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl PoolUrl {
    /// Parses `stratum+tcp://HOST:PORT`.
    pub fn parse(s: &str) -> Result<PoolUrl, String> {
        let (protocol, rest) = if let Some(rest) = s.strip_prefix("stratum+tcp://") {
            (UpstreamProtocol::Sv1, rest)
        } else {
            return Err(format!(
                "unsupported URL {s:?}: expected stratum+tcp://HOST:PORT"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("unclosed '[' in {s:?}"))?;
            (
                host,
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("missing :PORT in {s:?}"))?,
            )
        } else {
            rest.rsplit_once(':')
                .ok_or_else(|| format!("missing :PORT in {s:?}"))?
        };
        if host.is_empty() {
            return Err(format!("missing host in {s:?}"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("bad port {port:?} in {s:?}"))?;
        Ok(PoolUrl {
            protocol,
            host: host.to_owned(),
            port,
        })
    }

    /// `HOST:PORT` for connecting (IPv6 literals bracketed).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for PoolUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocol {
            UpstreamProtocol::Sv1 => write!(f, "stratum+tcp://{}", self.authority()),
        }
    }
}

impl<'de> Deserialize<'de> for PoolUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PoolUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for PoolUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_ipv6() {
        let u = PoolUrl::parse("stratum+tcp://pool.example.com:3333").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("pool.example.com", 3333));
        let v6 = PoolUrl::parse("stratum+tcp://[::1]:4444").unwrap();
        assert_eq!(v6.authority(), "[::1]:4444");
        assert!(PoolUrl::parse("http://x:1").is_err());
        assert!(PoolUrl::parse("stratum+tcp://x").is_err());
        assert!(PoolUrl::parse("stratum+tcp://x:99999").is_err());
    }
}
