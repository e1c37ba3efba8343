//! Pool URLs: `stratum+tcp://HOST:PORT` (Stratum V1) and
//! `stratum2+tcp://HOST:PORT/AUTHORITY_PUBKEY` (Stratum V2 over Noise).
//!
//! An SV2 URL must carry the pool's authority public key, in the base58check form pools
//! publish (`[0x01, 0x00] ‖ x-only key`, sv2-spec 04 "Certificate format"). The proxy only
//! speaks to a pool whose Noise certificate is signed by that key: there is no
//! unauthenticated SV2 and never a fallback to plaintext. A key that does not parse is a
//! config error that quotes the key.

use std::fmt;

use hashshift_protocol::noise::AuthorityPublicKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Protocol spoken to a pool, from the URL scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// `stratum+tcp://`
    Sv1,
    /// `stratum2+tcp://`, with the authority key the pool's certificate must be signed by.
    Sv2 {
        /// The pinned authority public key (from the URL path).
        authority_key: AuthorityPublicKey,
    },
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

const SV1_SCHEME: &str = "stratum+tcp://";
const SV2_SCHEME: &str = "stratum2+tcp://";

impl PoolUrl {
    /// Parses `stratum+tcp://HOST:PORT` or `stratum2+tcp://HOST:PORT/AUTHORITY_PUBKEY`.
    pub fn parse(s: &str) -> Result<PoolUrl, String> {
        let (sv2, rest) = if let Some(rest) = s.strip_prefix(SV1_SCHEME) {
            (false, rest.trim_end_matches('/'))
        } else if let Some(rest) = s.strip_prefix(SV2_SCHEME) {
            (true, rest)
        } else {
            return Err(format!(
                "unsupported URL {s:?}: expected stratum+tcp://HOST:PORT or \
                 stratum2+tcp://HOST:PORT/AUTHORITY_PUBKEY"
            ));
        };
        let (rest, protocol) = if sv2 {
            let (hostport, key) = rest.split_once('/').ok_or_else(|| {
                format!("{s:?}: stratum2+tcp:// needs the pool's authority public key: stratum2+tcp://HOST:PORT/AUTHORITY_PUBKEY")
            })?;
            let key = key.trim_end_matches('/');
            if key.is_empty() {
                return Err(format!("{s:?}: missing authority public key after '/'"));
            }
            let authority_key = key
                .parse::<AuthorityPublicKey>()
                .map_err(|e| format!("bad authority public key {key:?} in {s:?}: {e}"))?;
            (hostport, UpstreamProtocol::Sv2 { authority_key })
        } else {
            (rest, UpstreamProtocol::Sv1)
        };
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

    /// The pinned authority key of an SV2 pool.
    pub fn authority_key(&self) -> Option<AuthorityPublicKey> {
        match self.protocol {
            UpstreamProtocol::Sv1 => None,
            UpstreamProtocol::Sv2 { authority_key } => Some(authority_key),
        }
    }
}

impl fmt::Display for PoolUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocol {
            UpstreamProtocol::Sv1 => write!(f, "{SV1_SCHEME}{}", self.authority()),
            UpstreamProtocol::Sv2 { authority_key } => {
                write!(f, "{SV2_SCHEME}{}/{authority_key}", self.authority())
            }
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

    /// The authority public key of SRI's example configs.
    const SRI_KEY: &str = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";

    #[test]
    fn parses_host_port_and_ipv6() {
        let u = PoolUrl::parse("stratum+tcp://pool.example.com:3333").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("pool.example.com", 3333));
        assert_eq!(u.protocol, UpstreamProtocol::Sv1);
        let v6 = PoolUrl::parse("stratum+tcp://[::1]:4444").unwrap();
        assert_eq!(v6.authority(), "[::1]:4444");
        assert!(PoolUrl::parse("http://x:1").is_err());
        assert!(PoolUrl::parse("stratum+tcp://x").is_err());
        assert!(PoolUrl::parse("stratum+tcp://x:99999").is_err());
    }

    #[test]
    fn parses_sv2_with_its_authority_key_and_round_trips() {
        let s = format!("stratum2+tcp://pool.example.com:34254/{SRI_KEY}");
        let u = PoolUrl::parse(&s).unwrap();
        assert_eq!((u.host.as_str(), u.port), ("pool.example.com", 34254));
        assert_eq!(u.authority_key(), Some(SRI_KEY.parse().unwrap()));
        assert_eq!(u.to_string(), s);
        let v6 = PoolUrl::parse(&format!("stratum2+tcp://[::1]:1/{SRI_KEY}/")).unwrap();
        assert_eq!(v6.authority(), "[::1]:1");
        assert_eq!(PoolUrl::parse(&v6.to_string()).unwrap(), v6);
    }

    #[test]
    fn sv2_without_a_valid_key_is_refused_naming_the_key() {
        let e = PoolUrl::parse("stratum2+tcp://pool:34254").unwrap_err();
        assert!(e.contains("authority public key"), "{e}");
        let e = PoolUrl::parse("stratum2+tcp://pool:34254/").unwrap_err();
        assert!(e.contains("missing authority public key"), "{e}");
        let mut typo: Vec<char> = SRI_KEY.chars().collect();
        typo[10] = if typo[10] == 'a' { 'b' } else { 'a' };
        let typo: String = typo.into_iter().collect();
        let e = PoolUrl::parse(&format!("stratum2+tcp://pool:34254/{typo}")).unwrap_err();
        assert!(e.contains(&typo) && e.contains("checksum"), "{e}");
        assert!(PoolUrl::parse("stratum2+tcp://pool:x/abc").is_err());
    }
}
