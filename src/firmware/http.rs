//! Minimal HTTP/1.1 for firmware REST APIs: one request per connection (`Connection: close`),
//! JSON bodies, bounded replies.
//!
//! The framing half is sans-IO: [`parse_response`] (client side) and [`parse_request`] (the
//! fakes' side) take the bytes received so far and say "incomplete", "complete" or "broken".
//! Bodies may be delimited by `Content-Length`, `Transfer-Encoding: chunked`, or (responses
//! only) the end of the connection. Headers are capped at [`MAX_HEAD_BYTES`]; bodies by the
//! caller's bound, checked before buffering.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{FirmwareClient, FirmwareError};

/// The largest status line + headers accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// A parsed HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// A parsed HTTP request (for the fakes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Method, as sent.
    pub method: String,
    /// Path, as sent (query included).
    pub path: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The first header with this (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

enum Framing {
    Length(usize),
    Chunked,
    ToEof,
}

struct Head {
    first_line: String,
    headers: Vec<(String, String)>,
    body_start: usize,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD_BYTES {
            return Err("headers too large".into());
        }
        return Ok(None);
    };
    if end > MAX_HEAD_BYTES {
        return Err("headers too large".into());
    }
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "headers not UTF-8")?;
    let mut lines = text.split("\r\n");
    let first_line = lines.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("header without ':'")?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(Some(Head {
        first_line,
        headers,
        body_start: end + 4,
    }))
}

fn framing(headers: &[(String, String)], default: Framing) -> Result<Framing, String> {
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return Ok(Framing::Chunked);
    }
    match get("content-length") {
        Some(v) => v
            .parse::<usize>()
            .map(Framing::Length)
            .map_err(|_| "bad Content-Length".to_owned()),
        None => Ok(default),
    }
}

/// De-chunk `buf`; `Ok(None)` while the last chunk has not arrived.
fn dechunk(mut buf: &[u8], max_body: usize) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
            if buf.len() > 64 {
                return Err("chunk size line too long".into());
            }
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[..eol]).map_err(|_| "bad chunk size")?;
        let hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| "bad chunk size")?;
        if body.len().saturating_add(size) > max_body {
            return Err(format!("body larger than {max_body} bytes"));
        }
        let rest = &buf[eol + 2..];
        if size == 0 {
            // Trailers are not used by firmware APIs; the body is complete here.
            return Ok(Some(body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        if &rest[size..size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        buf = &rest[size + 2..];
    }
}

fn body(
    buf: &[u8],
    framing: Framing,
    eof: bool,
    max_body: usize,
) -> Result<Option<Vec<u8>>, String> {
    match framing {
        Framing::Length(n) => {
            if n > max_body {
                return Err(format!("body larger than {max_body} bytes"));
            }
            if buf.len() >= n {
                Ok(Some(buf[..n].to_vec()))
            } else if eof {
                Err("connection closed before the body was complete".into())
            } else {
                Ok(None)
            }
        }
        Framing::Chunked => match dechunk(buf, max_body)? {
            Some(b) => Ok(Some(b)),
            None if eof => Err("connection closed inside a chunked body".into()),
            None => Ok(None),
        },
        Framing::ToEof => {
            if buf.len() > max_body {
                Err(format!("body larger than {max_body} bytes"))
            } else if eof {
                Ok(Some(buf.to_vec()))
            } else {
                Ok(None)
            }
        }
    }
}

/// Parse a response from the bytes received so far. `eof` says the peer closed (which
/// completes a body without length). `Ok(None)`: need more bytes.
pub fn parse_response(buf: &[u8], eof: bool, max_body: usize) -> Result<Option<Response>, String> {
    let Some(head) = parse_head(buf)? else {
        return if eof {
            Err("connection closed before the headers were complete".into())
        } else {
            Ok(None)
        };
    };
    let mut parts = head.first_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!(
            "not an HTTP/1 status line: {:.40}",
            head.first_line
        ));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or("bad status code")?;
    let framing = framing(&head.headers, Framing::ToEof)?;
    Ok(
        body(&buf[head.body_start..], framing, eof, max_body)?
            .map(|body| Response { status, body }),
    )
}

/// Parse a request from the bytes received so far. `Ok(None)`: need more bytes.
pub fn parse_request(buf: &[u8], max_body: usize) -> Result<Option<Request>, String> {
    let Some(head) = parse_head(buf)? else {
        return Ok(None);
    };
    let mut parts = head.first_line.split(' ');
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("bad request line".into());
    };
    if !version.starts_with("HTTP/1.") {
        return Err("not HTTP/1".into());
    }
    // A request without a length has no body.
    let framing = framing(&head.headers, Framing::Length(0))?;
    Ok(
        body(&buf[head.body_start..], framing, false, max_body)?.map(|body| Request {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: head.headers,
            body,
        }),
    )
}

/// Encode a request with a JSON (or empty) body and `Connection: close`.
pub fn encode_request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        out.push_str("Content-Type: application/json\r\n");
    }
    if let Some(token) = authorization {
        out.push_str("Authorization: ");
        out.push_str(token);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Encode a JSON response; `chunked` sends the body in two chunks (as embedded web servers
/// do for generated replies), to exercise the client's de-chunking.
pub fn encode_response(status: u16, body: &[u8], chunked: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Status",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nConnection: close\r\n"
    );
    if chunked {
        out.push_str("Transfer-Encoding: chunked\r\n\r\n");
        let mut out = out.into_bytes();
        let (a, b) = body.split_at(body.len() / 2);
        for part in [a, b] {
            if !part.is_empty() {
                out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                out.extend_from_slice(part);
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    } else {
        out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut out = out.into_bytes();
        out.extend_from_slice(body);
        out
    }
}

/// One HTTP exchange on a fresh connection, bounded by the client's timeouts and reply size.
pub async fn exchange(
    client: &FirmwareClient,
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<Response, FirmwareError> {
    let command = format!("{method} {path}");
    let mut stream = super::connect(client, addr).await?;
    let request = encode_request(method, addr, path, authorization, body);
    let max = client.max_reply_bytes;
    let run = async {
        stream.write_all(&request).await?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await?;
            if buf.len() + n > max + MAX_HEAD_BYTES {
                return Ok(Err(format!("reply larger than {max} bytes")));
            }
            buf.extend_from_slice(&chunk[..n]);
            match parse_response(&buf, n == 0, max) {
                Ok(Some(resp)) => return Ok(Ok(resp)),
                Ok(None) => {}
                Err(e) => return Ok(Err(e)),
            }
        }
    };
    match tokio::time::timeout(client.timeouts.request, run).await {
        Ok(Ok(Ok(resp))) => Ok(resp),
        Ok(Ok(Err(detail))) => Err(FirmwareError::Malformed {
            addr,
            command,
            detail,
        }),
        Ok(Err(source)) => Err(FirmwareError::Io {
            addr,
            command,
            source,
        }),
        Err(_) => Err(FirmwareError::Timeout {
            addr,
            step: "request",
            after: client.timeouts.request,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_with_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(&raw[..20], false, 100), Ok(None));
        assert_eq!(parse_response(&raw[..raw.len() - 1], false, 100), Ok(None));
        let r = parse_response(raw, false, 100).unwrap().unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        assert!(parse_response(&raw[..raw.len() - 1], true, 100).is_err());
        assert!(parse_response(raw, false, 1).is_err());
    }

    #[test]
    fn response_chunked_and_to_eof() {
        let enc = encode_response(200, b"{\"token\":\"abc\"}", true);
        let r = parse_response(&enc, false, 100).unwrap().unwrap();
        assert_eq!(r.body, b"{\"token\":\"abc\"}");
        assert_eq!(parse_response(&enc[..enc.len() - 3], false, 100), Ok(None));
        assert!(parse_response(&enc, false, 5).is_err());
        let raw = b"HTTP/1.0 401 Unauthorized\r\n\r\nnope";
        assert_eq!(parse_response(raw, false, 100), Ok(None));
        let r = parse_response(raw, true, 100).unwrap().unwrap();
        assert_eq!((r.status, r.body.as_slice()), (401, &b"nope"[..]));
    }

    #[test]
    fn broken_responses_are_errors() {
        for raw in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
        ] {
            assert!(parse_response(raw, true, 100).is_err(), "{raw:?}");
        }
        let huge = vec![b'a'; MAX_HEAD_BYTES + 10];
        assert!(parse_response(&huge, false, 100).is_err());
    }

    #[test]
    fn request_round_trip() {
        let addr: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let enc = encode_request("PUT", addr, "/api/v1/actions/pause", Some("tok"), b"{}");
        assert_eq!(parse_request(&enc[..10], 100), Ok(None));
        let r = parse_request(&enc, 100).unwrap().unwrap();
        assert_eq!(r.method, "PUT");
        assert_eq!(r.path, "/api/v1/actions/pause");
        assert_eq!(r.header("authorization"), Some("tok"));
        assert_eq!(r.body, b"{}");
        let enc = encode_request("GET", addr, "/x", None, b"");
        assert!(parse_request(&enc, 100).unwrap().unwrap().body.is_empty());
        assert!(parse_request(b"GARBAGE\r\n\r\n", 100).is_err());
    }
}
