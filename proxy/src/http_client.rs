//! The one HTTP/1.1 client of the proxy: a single request per TCP connection over `hyper`,
//! bounded in time and in size. Used by the Braiins OS+ and stock Antminer firmware adapters
//! ([`crate::firmware::braiins`], [`crate::firmware::antminer`]) and the GPU webhook
//! ([`crate::gpu::webhook`]).
//!
//! Why `hyper`'s connection API and not a pooled client (`reqwest`, `hyper-util`'s legacy
//! client): every caller talks to a plain-HTTP LAN endpoint a few times a minute at most, and
//! must bound connect and request separately and map each failure to its own typed error. A
//! fresh connection per request (`Connection: close`) keeps no state between calls, so
//! thousands of rigs can be driven concurrently with no shared pool to contend on. The wire
//! framing (status line, headers, `Content-Length`, chunked, read-to-EOF bodies) is hyper's.
//!
//! Invariants:
//! - Connect is bounded by [`Limits::connect_timeout`]; the handshake, sending the request and
//!   reading the whole reply by [`Limits::request_timeout`].
//! - A reply head is capped at [`MAX_HEAD_BYTES`], a body at [`Limits::max_body`] (checked
//!   against `Content-Length` up front and, through [`http_body_util::Limited`], while
//!   reading): a peer can never make us buffer more.
//! - Nothing a peer sends panics: every failure is an [`HttpError`].
//! - Plain `http://` only ([`HttpUrl`]): sites that need HTTPS put a local relay in front.

use std::io;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use hyper::client::conn::http1;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::error::Retry;

/// The largest status line + headers accepted in a reply.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// hyper's read buffer bound (its minimum is 8 KiB): also bounds what one read can hold.
const MAX_READ_BUF: usize = 64 * 1024;

/// Bounds on one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// TCP connect (name resolution included).
    pub connect_timeout: Duration,
    /// From an open connection to the whole reply read.
    pub request_timeout: Duration,
    /// The largest reply body accepted, in bytes.
    pub max_body: usize,
}

/// One request. `Host`, `User-Agent`, `Accept: application/json`, `Connection: close` and, for
/// a non-empty body, `Content-Type: application/json` are always sent.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The `Host` header (`host[:port]`).
    pub host: &'a str,
    /// Path and query, starting with `/`.
    pub path: &'a str,
    /// Further headers (e.g. `Authorization`); values are checked, never sent if invalid.
    pub headers: &'a [(HeaderName, &'a str)],
    /// A JSON body, or empty.
    pub body: Bytes,
}

/// The most `WWW-Authenticate` values kept from one reply (a server offers one or two
/// schemes; more is noise we need not hold).
pub const MAX_CHALLENGES: usize = 4;

/// A complete reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The whole body (de-chunked), at most [`Limits::max_body`] bytes.
    pub body: Bytes,
    /// The reply's `WWW-Authenticate` values (HTTP Digest challenges and the like), in order,
    /// at most [`MAX_CHALLENGES`]; values that are not visible ASCII are dropped. Bounded by
    /// [`MAX_HEAD_BYTES`] like every header.
    pub www_authenticate: Vec<String>,
}

/// Why a request failed. Every variant but [`HttpError::InvalidRequest`] is the peer's or the
/// network's doing, and worth retrying later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The TCP connection could not be made (refused, unreachable, name not resolved).
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    /// A step did not finish in time (`step`: "connect" or "request").
    #[error("{step} timed out after {after:?}")]
    Timeout {
        /// Which step timed out.
        step: &'static str,
        /// The bound that was hit.
        after: Duration,
    },
    /// The connection broke mid-exchange (reset, write failed).
    #[error("connection failed: {0}")]
    Io(#[source] io::Error),
    /// The reply is not HTTP/1 or its framing is broken (bad status line or headers, a head
    /// over [`MAX_HEAD_BYTES`], a bad chunk, closed before the reply was complete).
    #[error("malformed reply: {0}")]
    Malformed(String),
    /// The reply body is larger than [`Limits::max_body`]; `status` is what the head said.
    #[error("HTTP {status} reply larger than {limit} bytes")]
    TooLarge {
        /// The reply's status code.
        status: u16,
        /// The bound.
        limit: usize,
    },
    /// Our request could not be built (a header value with forbidden characters). Not
    /// retryable: nothing was sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// The retry hint only: which side failed depends on whom the client was talking to (a rig's
/// firmware, the GPU scheduler's webhook), which only the caller knows, so `HttpError` does
/// not implement [`Classify`](crate::error::Classify); the callers wrap it in their own
/// error, which does.
impl HttpError {
    /// Whether the same request can succeed later: every failure of the peer or the network
    /// may pass; a request we could not build fails the same way every time.
    pub fn retry(&self) -> Retry {
        match self {
            HttpError::InvalidRequest(_) => Retry::No,
            HttpError::Connect(_)
            | HttpError::Timeout { .. }
            | HttpError::Io(_)
            | HttpError::Malformed(_)
            | HttpError::TooLarge { .. } => Retry::Yes,
        }
    }
}

/// Sends one request on a fresh connection to `addr` and reads the whole reply, within
/// `limits`. Any status is a successful exchange: the caller decides what it means.
pub async fn request(
    addr: impl ToSocketAddrs,
    req: Request<'_>,
    limits: Limits,
) -> Result<Response, HttpError> {
    let req = build(req)?;
    let stream = match tokio::time::timeout(limits.connect_timeout, TcpStream::connect(addr)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(HttpError::Connect(e)),
        Err(_) => {
            return Err(HttpError::Timeout {
                step: "connect",
                after: limits.connect_timeout,
            });
        }
    };
    // Small request/response exchanges: do not wait for Nagle.
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(
        limits.request_timeout,
        exchange(stream, req, limits.max_body),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout {
            step: "request",
            after: limits.request_timeout,
        }),
    }
}

fn build(req: Request<'_>) -> Result<hyper::Request<Full<Bytes>>, HttpError> {
    let value = |v: &str| {
        HeaderValue::from_str(v)
            .map_err(|_| HttpError::InvalidRequest("header value with forbidden characters".into()))
    };
    let uri = Uri::from_str(req.path)
        .ok()
        .filter(|u| u.scheme().is_none() && u.authority().is_none())
        .ok_or_else(|| HttpError::InvalidRequest(format!("bad path {:.60}", req.path)))?;
    let mut out = hyper::Request::new(Full::new(req.body.clone()));
    *out.method_mut() = req.method;
    *out.uri_mut() = uri;
    let h = out.headers_mut();
    h.insert(header::HOST, value(req.host)?);
    h.insert(header::USER_AGENT, HeaderValue::from_static("hashshift"));
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    // One request per connection: hyper closes it once the reply is read.
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if !req.body.is_empty() {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    for (name, v) in req.headers {
        h.insert(name.clone(), value(v)?);
    }
    Ok(out)
}

/// The handshake, the request and the whole reply on `stream`.
async fn exchange(
    stream: TcpStream,
    req: hyper::Request<Full<Bytes>>,
    max_body: usize,
) -> Result<Response, HttpError> {
    let (mut sender, conn) = http1::Builder::new()
        // Some embedded servers match header names case-sensitively.
        .title_case_headers(true)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_READ_BUF)
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(classify)?;
    let exchange = async move {
        let resp = sender.send_request(req).await.map_err(classify)?;
        let status = resp.status().as_u16();
        let www_authenticate = challenges(resp.headers());
        let body = resp.into_body();
        let too_large = HttpError::TooLarge {
            status,
            limit: max_body,
        };
        // A declared length over the bound fails before anything is buffered.
        if body.size_hint().lower() > max_body as u64 {
            return Err(too_large);
        }
        match Limited::new(body, max_body).collect().await {
            Ok(collected) => Ok(Response {
                status,
                body: collected.to_bytes(),
                www_authenticate,
            }),
            Err(e) if e.is::<LengthLimitError>() => Err(too_large),
            Err(e) => Err(match e.downcast::<hyper::Error>() {
                Ok(e) => classify(*e),
                Err(e) => HttpError::Malformed(e.to_string()),
            }),
        }
    };
    // hyper's connection future does the I/O; it must be polled while the exchange waits.
    // Neither future is recreated, so nothing is lost when the other one finishes first.
    let mut conn = std::pin::pin!(conn);
    let mut exchange = std::pin::pin!(exchange);
    tokio::select! {
        biased;
        r = &mut exchange => r,
        c = &mut conn => {
            c.map_err(classify)?;
            // The connection is done: the reply is in the body's buffer, or its sender is
            // gone and the exchange reports that.
            exchange.await
        }
    }
}

/// The `WWW-Authenticate` values of a reply head that are plain visible ASCII (spaces and
/// tabs allowed), at most [`MAX_CHALLENGES`].
fn challenges(headers: &hyper::HeaderMap) -> Vec<String> {
    headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
        .take(MAX_CHALLENGES)
        .map(str::to_owned)
        .collect()
}

/// hyper's error → ours: an I/O error anywhere in its chain is [`HttpError::Io`], anything
/// else is the peer's broken HTTP.
fn classify(e: hyper::Error) -> HttpError {
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return HttpError::Io(io::Error::new(io.kind(), e.to_string()));
        }
        source = s.source();
    }
    if e.is_incomplete_message() {
        return HttpError::Malformed("connection closed before the reply was complete".into());
    }
    HttpError::Malformed(e.to_string())
}

/// A validated `http://host[:port][/path][?query]` URL (a fragment is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host as written (an IPv6 literal keeps its brackets).
    pub host: String,
    /// Port (80 unless given).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses a plain-HTTP URL; the error says what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        // `Uri` accepts some bytes we would rather not put in a request head; refuse early.
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("contains whitespace or control characters".into());
        }
        if !url.starts_with("http://") {
            return Err("only http:// URLs are supported".into());
        }
        let uri = Uri::from_str(url).map_err(|e| e.to_string())?;
        let authority = uri.authority().ok_or("no host")?;
        if authority.as_str().contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        let host = authority.host();
        if host.is_empty() || host == "[]" {
            return Err("no host".into());
        }
        // `Authority::port` reads an out-of-range port as none at all: parse it ourselves.
        let after_host = authority.as_str().strip_prefix(host).unwrap_or("");
        let port = match after_host.strip_prefix(':') {
            None | Some("") => 80,
            Some(p) => p.parse::<u16>().map_err(|_| "bad port")?,
        };
        if port == 0 {
            return Err("port 0".into());
        }
        let path = match uri.path_and_query() {
            Some(pq) if pq.as_str().starts_with('/') => pq.as_str().to_owned(),
            Some(pq) => format!("/{}", pq.as_str()),
            None => "/".to_owned(),
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// `host:port`, to connect to.
    pub fn connect_target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The `Host` header: the port only when it is not 80.
    pub fn host_header(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            self.connect_target()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_request_we_could_not_build_is_not_worth_retrying() {
        let io = || io::Error::from(io::ErrorKind::ConnectionReset);
        for e in [
            HttpError::Connect(io()),
            HttpError::Io(io()),
            HttpError::Timeout {
                step: "connect",
                after: Duration::from_secs(1),
            },
            HttpError::Malformed("x".into()),
            HttpError::TooLarge {
                status: 200,
                limit: 1,
            },
        ] {
            assert_eq!(e.retry(), Retry::Yes, "{e}");
        }
        assert_eq!(HttpError::InvalidRequest("x".into()).retry(), Retry::No);
    }

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:8080/hook?x=1").expect("ok");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/hook?x=1")
        );
        assert_eq!(u.host_header(), "127.0.0.1:8080");
        let u = HttpUrl::parse("http://gpu.example").expect("ok");
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert_eq!(u.host_header(), "gpu.example");
        let u = HttpUrl::parse("http://gpu.example?a=b").expect("ok");
        assert_eq!(u.path, "/?a=b");
        let u = HttpUrl::parse("http://[::1]:9/a#frag").expect("ok");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("[::1]", 9, "/a")
        );
        assert_eq!(u.connect_target(), "[::1]:9");
        for bad in [
            "https://x/",
            "http://",
            "http://x:0/",
            "http://x:99999/",
            "http://u:p@x/",
            "http://x/a b",
            "http://x/\r\nEvil: 1",
            "ftp://x",
            "http://[::1/",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    fn req<'a>(path: &'a str, headers: &'a [(HeaderName, &'a str)]) -> Request<'a> {
        Request {
            method: Method::GET,
            host: "h",
            path,
            headers,
            body: Bytes::new(),
        }
    }

    #[test]
    fn requests_are_checked_before_sending() {
        let good = [(header::AUTHORIZATION, "Bearer t")];
        let evil = [(header::AUTHORIZATION, "t\r\nX: y")];
        assert!(build(req("/a?b=c", &good)).is_ok());
        for (path, headers) in [("/a", &evil[..]), ("http://evil/", &good[..]), ("", &good)] {
            let e = build(req(path, headers));
            assert!(matches!(e, Err(HttpError::InvalidRequest(_))), "{path}");
        }
    }

    /// A server that answers every connection with `reply` and closes.
    async fn canned(reply: Vec<u8>) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(&reply).await;
                let _ = s.shutdown().await;
            }
        });
        addr
    }

    async fn get(reply: &[u8], max_body: usize) -> Result<Response, HttpError> {
        let addr = canned(reply.to_vec()).await;
        let limits = Limits {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            max_body,
        };
        let req = req("/", &[]);
        tokio::time::timeout(Duration::from_secs(10), request(addr, req, limits))
            .await
            .expect("bounded")
    }

    #[tokio::test]
    async fn challenges_are_kept_in_order_and_bounded() {
        let reply = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"a\", nonce=\"n\"\r\nwww-authenticate: Basic realm=\"a\"\r\nContent-Length: 0\r\n\r\n";
        let r = get(reply, 100).await.expect("401 is an exchange");
        assert_eq!(r.status, 401);
        assert_eq!(
            r.www_authenticate,
            vec!["Digest realm=\"a\", nonce=\"n\"", "Basic realm=\"a\""]
        );
        let mut many = b"HTTP/1.1 401 X\r\nWWW-Authenticate: Digest realm=\"\xff\"\r\n".to_vec();
        for i in 0..10 {
            many.extend_from_slice(format!("WWW-Authenticate: Basic realm=\"{i}\"\r\n").as_bytes());
        }
        many.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let r = get(&many, 100).await.expect("401");
        assert_eq!(r.www_authenticate.len(), MAX_CHALLENGES);
        assert_eq!(r.www_authenticate[0], "Basic realm=\"0\"");
        let r = get(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 100).await;
        assert!(r.expect("ok").www_authenticate.is_empty());
    }

    #[tokio::test]
    async fn framings_and_bounds() {
        let r = get(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 100).await;
        assert_eq!(r.expect("ok").body.as_ref(), b"{}");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        let r = get(chunked, 100).await.expect("chunked");
        assert_eq!(r.body.as_ref(), b"{\"a\":1}");
        let r = get(b"HTTP/1.0 401 Unauthorized\r\n\r\nnope", 100).await;
        let r = r.expect("to EOF");
        assert_eq!((r.status, r.body.as_ref()), (401, &b"nope"[..]));

        for (reply, max) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"[..], 1),
            (&chunked[..], 5),
            (&b"HTTP/1.1 200 OK\r\n\r\n0123456789"[..], 5),
        ] {
            let e = get(reply, max).await;
            assert!(matches!(e, Err(HttpError::TooLarge { .. })), "{e:?}");
        }
        let mut huge_head = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        huge_head.resize(MAX_HEAD_BYTES + 100, b'a');
        huge_head.extend_from_slice(b"\r\n\r\n");
        for reply in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab",
            b"HTTP/1.1 200 O",
            b"",
            &huge_head,
        ] {
            let e = get(reply, 100).await;
            assert!(
                matches!(e, Err(HttpError::Malformed(_) | HttpError::Io(_))),
                "{reply:?}: {e:?}"
            );
        }
    }
}
