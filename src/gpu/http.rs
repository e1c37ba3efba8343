//! A minimal HTTP/1.1 client for the webhook: one `POST` of a JSON body per TCP connection
//! (`Connection: close`), plain `http://` only, status line read and checked.
//!
//! Why not a client crate: a budget event is one small POST to a site-local endpoint; `hyper`/
//! `reqwest` would add dozens of crates (and TLS stacks) to build on every CI run for that, and
//! the proxy has no other HTTP client need. Sites that need HTTPS put a local relay (or the
//! command hook with `curl`) in front. Invariants: the URL is validated once (no whitespace or
//! control characters can reach the request head), the response read is capped, and the
//! caller bounds each attempt with a timeout.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of a response we read looking for the status line.
const MAX_HEAD: usize = 8 * 1024;

/// A parsed `http://host[:port][/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpUrl {
    /// Host as written (an IPv6 literal keeps its brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses a plain-HTTP URL; the error says what is wrong.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("contains whitespace or control characters".into());
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or("only http:// URLs are supported")?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        let path = path.split('#').next().unwrap_or("/").to_owned();
        if authority.contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("unclosed [ in host")?;
            let port = match after {
                "" => 80,
                p => p
                    .strip_prefix(':')
                    .ok_or("junk after ]")?
                    .parse()
                    .map_err(|_| "bad port")?,
            };
            (format!("[{h}]"), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| "bad port")?),
                None => (authority.to_owned(), 80),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err("no host".into());
        }
        if port == 0 {
            return Err("port 0".into());
        }
        Ok(Self { host, port, path })
    }

    fn connect_target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Sends one POST and returns the response status code. Errors are one-line descriptions
/// (connect refused, reset, malformed status line); the caller decides about retries and
/// bounds the whole call with a timeout.
pub(crate) async fn post_json(
    url: &HttpUrl,
    body: &[u8],
    authorization: Option<&str>,
) -> Result<u16, String> {
    let mut stream = TcpStream::connect(url.connect_target())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hashshift\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        url.path,
        if url.port == 80 {
            url.host.clone()
        } else {
            url.connect_target()
        },
        body.len()
    );
    if let Some(a) = authorization {
        head.push_str("Authorization: ");
        head.push_str(a);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    stream
        .write_all(&req)
        .await
        .map_err(|e| format!("send: {e}"))?;

    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return parse_status(&buf[..end]);
        }
        if buf.len() >= MAX_HEAD {
            return Err("no status line in the first 8 KiB".into());
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            return Err("connection closed before a status line".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `HTTP/1.x NNN reason` → NNN.
fn parse_status(line: &[u8]) -> Result<u16, String> {
    let text = std::str::from_utf8(line).map_err(|_| "status line is not UTF-8".to_owned())?;
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(format!(
            "malformed status line {:?}",
            super::clean_reason(text)
        ));
    }
    code.parse::<u16>()
        .ok()
        .filter(|c| (100..=599).contains(c))
        .ok_or_else(|| format!("malformed status code {code:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:8080/hook?x=1").expect("ok");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/hook?x=1")
        );
        let u = HttpUrl::parse("http://gpu.example").expect("ok");
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = HttpUrl::parse("http://[::1]:9/a#frag").expect("ok");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("[::1]", 9, "/a")
        );
        for bad in [
            "https://x/",
            "http://",
            "http://x:0/",
            "http://x:99999/",
            "http://u:p@x/",
            "http://x/a b",
            "http://x/\r\nEvil: 1",
            "ftp://x",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content"), Ok(204));
        assert_eq!(parse_status(b"HTTP/1.0 500"), Ok(500));
        assert!(parse_status(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_status(b"HTTP/1.1 20 OK").is_err());
        assert!(parse_status(b"HTTP/1.1 999 X").is_err());
        assert!(parse_status(&[0xff]).is_err());
    }
}
