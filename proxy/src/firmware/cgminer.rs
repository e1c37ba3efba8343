//! The cgminer-style JSON API (TCP 4028) that LuxOS and most ASIC firmwares speak.
//!
//! One request per TCP connection: the client writes `{"command":"X","parameter":"Y"}`, the
//! miner writes one JSON object and closes. Real replies break JSON in known ways, which
//! [`repair`] fixes before parsing:
//! - a trailing NUL byte (cgminer terminates every reply with one), sometimes with a newline;
//! - `}{` between objects of an array with no comma (bmminer's `stats`);
//! - bare `inf`, `-inf`, `nan`, `-nan` for numbers (C's printf of a division by zero, e.g. the
//!   `Work Utility` of a rig that has not hashed yet) — read as `null`;
//! - a comma before a closing bracket (`,}`, `,]`) or right after an opening one (`[,{`), which
//!   pyasic's parser repairs for btminer and bmminer replies.
//!
//! Quoted `"inf"`/`"nan"` (Avalon) are valid JSON strings; [`number`] reads them as no value.
//! Replies that are still not JSON after the repairs (cut short, cgminer's plain-text API form,
//! two replies glued) are refused with the parser's message, never guessed at. The samples in
//! `tools/fixtures/firmware/cgminer/` (from real machines, sources in its `sources.toml`) are
//! parsed by the tests below.
//!
//! Every reply carries `"STATUS":[{"STATUS":"S"|"I"|"W"|"E"|"F","Code":N,"Msg":"..."}]`;
//! [`check_status`] turns `E`/`F` into a refusal carrying the message.
//!
//! The parsing half is sans-IO ([`repair`], [`parse_reply`], [`check_status`]); [`request`] is
//! the only function touching a socket, and bounds the reply it reads.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{FirmwareClient, FirmwareError};

/// Repair the known cgminer JSON quirks (see the module docs), outside string literals only.
/// Returns bytes that are JSON if the reply was JSON apart from the quirks.
pub fn repair(raw: &[u8]) -> Vec<u8> {
    // Trailing NULs and whitespace: cgminer ends replies with '\0', some firmwares add '\n'.
    let end = raw
        .iter()
        .rposition(|&b| b != 0 && !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let raw = &raw[..end];
    let mut out = Vec::with_capacity(raw.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                out.push(b);
                i += 1;
            }
            b'}' => {
                out.push(b);
                i += 1;
                // `}` followed (after optional whitespace) by `{`: a missing comma.
                let next = raw[i..].iter().position(|c| !c.is_ascii_whitespace());
                if next.is_some_and(|n| raw[i + n] == b'{') {
                    out.push(b',');
                }
            }
            b'-' if starts_word(&raw[i + 1..], b"inf") || starts_word_ci(&raw[i + 1..], b"nan") => {
                out.extend_from_slice(b"null");
                i += 4;
            }
            // `,}` / `,]`: a trailing comma (a run of them: `,,}`); `[,`: a leading one. All
            // dropped, so a second repair finds nothing left to change.
            b',' if next_past_commas(&raw[i + 1..]).is_some_and(|c| c == b'}' || c == b']')
                || last_significant(&out) == Some(b'[') =>
            {
                i += 1;
            }
            b'i' if starts_word(&raw[i..], b"inf") => {
                out.extend_from_slice(b"null");
                i += 3;
            }
            b'n' | b'N' if starts_word_ci(&raw[i..], b"nan") => {
                out.extend_from_slice(b"null");
                i += 3;
            }
            // A NUL in the middle (two replies glued, or garbage): leave it, the parser
            // will refuse it.
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    // A dropped comma may have been the last significant byte: trim again what it exposed.
    while out
        .last()
        .is_some_and(|&b| b == 0 || b.is_ascii_whitespace())
    {
        out.pop();
    }
    out
}

/// `word` at the start of `s`, not followed by an identifier character (so `"info"` is not
/// `inf`; it is inside a string anyway, but `null`/`true` must not be touched either).
fn starts_word(s: &[u8], word: &[u8]) -> bool {
    s.starts_with(word) && s.get(word.len()).is_none_or(|c| !c.is_ascii_alphanumeric())
}

/// The first byte of `s` that is neither whitespace nor a comma.
fn next_past_commas(s: &[u8]) -> Option<u8> {
    s.iter()
        .copied()
        .find(|c| !c.is_ascii_whitespace() && *c != b',')
}

/// The last byte of `s` that is not whitespace.
fn last_significant(s: &[u8]) -> Option<u8> {
    s.iter().rev().copied().find(|c| !c.is_ascii_whitespace())
}

fn starts_word_ci(s: &[u8], word: &[u8]) -> bool {
    s.len() >= word.len()
        && s[..word.len()].eq_ignore_ascii_case(word)
        && s.get(word.len()).is_none_or(|c| !c.is_ascii_alphanumeric())
}

/// Parse a raw reply (quirks and all) into JSON.
pub fn parse_reply(raw: &[u8]) -> Result<Value, String> {
    let fixed = repair(raw);
    if fixed.is_empty() {
        return Err("empty reply".into());
    }
    serde_json::from_slice(&fixed).map_err(|e| format!("not JSON: {e}"))
}

/// The first STATUS entry of a reply: its letter and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// `S` success, `I` info, `W` warning, `E` error, `F` fatal.
    pub letter: String,
    /// The `Msg` text ("" when absent).
    pub msg: String,
}

impl Status {
    /// `E` or `F`: the command was refused.
    pub fn is_error(&self) -> bool {
        matches!(self.letter.as_str(), "E" | "F")
    }
}

/// Read `STATUS[0]` of a reply; `Err` when the reply has none (not a cgminer reply).
pub fn check_status(reply: &Value) -> Result<Status, String> {
    let entry = reply
        .get("STATUS")
        .and_then(|s| s.get(0))
        .ok_or("no STATUS array")?;
    let letter = entry
        .get("STATUS")
        .and_then(Value::as_str)
        .ok_or("STATUS entry without a STATUS letter")?;
    let msg = entry.get("Msg").and_then(Value::as_str).unwrap_or("");
    Ok(Status {
        letter: letter.to_owned(),
        msg: msg.to_owned(),
    })
}

/// A number field that may be a JSON number, a numeric string, or `null` (a repaired
/// `inf`/`nan`). Non-finite and missing values are `None`.
pub fn number(v: Option<&Value>) -> Option<f64> {
    let x = match v? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    x.is_finite().then_some(x)
}

/// Send one command on a fresh connection and read the whole reply (until NUL or EOF),
/// bounded by `client.max_reply_bytes` and `client.timeouts`. Returns the parsed JSON and its
/// STATUS; a `STATUS:"E"` reply is returned as `Ok` for the caller to interpret (LuxOS session
/// errors are refusals that mean different things).
pub async fn request(
    client: &FirmwareClient,
    addr: SocketAddr,
    command: &str,
    parameter: Option<&str>,
) -> Result<(Value, Status), FirmwareError> {
    let mut stream = super::connect(client, addr).await?;
    let mut req = serde_json::json!({ "command": command });
    if let Some(p) = parameter {
        req["parameter"] = Value::String(p.to_owned());
    }
    let line = req.to_string();
    let exchange = async {
        stream.write_all(line.as_bytes()).await?;
        read_reply(&mut stream, client.max_reply_bytes).await
    };
    let raw = match tokio::time::timeout(client.timeouts.request, exchange).await {
        Ok(Ok(raw)) => raw,
        Ok(Err(ReadError::Io(source))) => {
            return Err(FirmwareError::Io {
                addr,
                command: command.to_owned(),
                source,
            });
        }
        Ok(Err(ReadError::TooLarge)) => {
            return Err(FirmwareError::Malformed {
                addr,
                command: command.to_owned(),
                detail: format!("reply larger than {} bytes", client.max_reply_bytes),
            });
        }
        Err(_) => {
            return Err(FirmwareError::Timeout {
                addr,
                step: "request",
                after: client.timeouts.request,
            });
        }
    };
    let malformed = |detail: String| FirmwareError::Malformed {
        addr,
        command: command.to_owned(),
        detail,
    };
    let value = parse_reply(&raw).map_err(malformed)?;
    let status = check_status(&value).map_err(|e| malformed(e.to_owned()))?;
    Ok((value, status))
}

enum ReadError {
    Io(std::io::Error),
    TooLarge,
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Read until the terminating NUL, EOF, or a newline that ends a complete reply, never holding
/// more than `max` bytes. Some firmwares end a reply with `\n` instead of a NUL and keep the
/// connection open (asic-rs's reader stops on either for that reason): waiting for EOF there
/// would turn every answer into a timeout. A newline alone is not enough, since pretty-printed
/// replies contain newlines, so the buffer must also parse.
async fn read_reply(stream: &mut tokio::net::TcpStream, max: usize) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::with_capacity(4096.min(max));
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(buf);
        }
        let piece = &chunk[..n];
        if buf.len() + n > max {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(piece);
        // The parse is tried only when the newline follows a closing brace, so a peer
        // streaming newlines does not make us re-parse the buffer on every chunk.
        let ends_an_object = buf.ends_with(b"\n") && last_significant(&buf) == Some(b'}');
        if piece.contains(&0) || (ends_an_object && parse_reply(&buf).is_ok()) {
            return Ok(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_nul_and_newline_are_dropped() {
        let v = parse_reply(b"{\"STATUS\":[{\"STATUS\":\"S\",\"Msg\":\"ok\"}]}\0").unwrap();
        assert_eq!(check_status(&v).unwrap().letter, "S");
        assert!(parse_reply(b"{\"a\":1}\n\0\0").is_ok());
    }

    #[test]
    fn glued_objects_get_their_comma() {
        let v = parse_reply(b"{\"STATS\":[{\"a\":1}{\"b\":2} {\"c\":3}]}\0").unwrap();
        assert_eq!(v["STATS"].as_array().unwrap().len(), 3);
        // `}{` inside a string is data, not a quirk.
        let v = parse_reply(br#"{"Msg":"a}{b"}"#).unwrap();
        assert_eq!(v["Msg"], "a}{b");
    }

    #[test]
    fn non_finite_numbers_read_as_null() {
        let v = parse_reply(
            b"{\"U\":inf,\"V\":-inf,\"W\":nan,\"X\":NaN,\"s\":\"inf nan\",\"t\":true,\"n\":null}\0",
        )
        .unwrap();
        assert!(v["U"].is_null() && v["V"].is_null() && v["W"].is_null() && v["X"].is_null());
        assert_eq!(v["s"], "inf nan");
        assert_eq!(v["t"], true);
        assert_eq!(number(v.get("U")), None);
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        let v = parse_reply(br#"{"Msg":"say \"}{\" inf","x":inf}"#).unwrap();
        assert_eq!(v["Msg"], "say \"}{\" inf");
        assert!(v["x"].is_null());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for raw in [
            &b""[..],
            b"\0",
            b"{",
            b"{\"STATUS\":[{\"STATUS\":\"S\"",
            b"\xff\xfe\x00",
            b"}{}{",
            b"-",
            b"-in",
            b"i",
            b"n",
            b"{\"a\":1}\0{\"b\":2}\0",
        ] {
            let _ = parse_reply(raw);
            let _ = repair(raw);
        }
        assert!(parse_reply(b"").is_err());
        assert!(parse_reply(b"{\"a\":1}\0{\"b\":2}\0").is_err());
    }

    #[test]
    fn status_letters() {
        let v = parse_reply(br#"{"STATUS":[{"STATUS":"E","Code":14,"Msg":"Invalid command"}]}"#)
            .unwrap();
        let s = check_status(&v).unwrap();
        assert!(s.is_error());
        assert_eq!(s.msg, "Invalid command");
        assert!(check_status(&serde_json::json!({"x": 1})).is_err());
        assert!(check_status(&serde_json::json!({"STATUS": []})).is_err());
        assert!(check_status(&serde_json::json!({"STATUS": [{"STATUS": 1}]})).is_err());
    }

    /// A sample from `tools/fixtures/firmware/cgminer/`.
    macro_rules! quirk {
        ($file:literal) => {
            include_bytes!(concat!("../../../tools/fixtures/firmware/cgminer/", $file)).as_slice()
        };
    }

    /// Every sample from a real machine: parsed with its figures where it is a reply, refused
    /// with the parser's message where it is not (and never a panic).
    #[test]
    fn quirks_from_real_machines() {
        // bmminer-style `}{` between STATS objects (VolcMiner D1).
        let v = parse_reply(quirk!("volcminer-d1-stats-glued.json")).unwrap();
        assert_eq!(v["STATS"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["STATS"][0]["CGMiner"], "2.3.3");
        assert_eq!(
            number(v["STATS"].get(1).and_then(|s| s.get("fan1"))),
            Some(5610.0)
        );

        // A multi-command reply with `}{`, numbers as strings, cut short: the repair adds the
        // comma, the parser still refuses the cut reply.
        let raw = quirk!("antminer-d3-multi-truncated.json");
        let fixed = String::from_utf8(repair(raw)).unwrap();
        assert!(
            fixed.contains(r#""Antminer D3 Blissz v1.1"},{"STATS":0"#),
            "{fixed}"
        );
        let err = parse_reply(raw).unwrap_err();
        assert!(err.starts_with("not JSON"), "{err}");
        // The complete part of the same capture reads as strings-for-numbers.
        let summary_end = fixed.find(r#"],"stats""#).unwrap();
        let summary: Value =
            serde_json::from_str(&format!("{}]}}", &fixed[..summary_end])).unwrap();
        let s = &summary["summary"][0]["SUMMARY"][0];
        assert_eq!(number(s.get("GHS 5s")), Some(15679.6));
        assert_eq!(number(s.get("Accepted")), Some(5.0));

        // A refusal, with and without cgminer's NUL terminator: the same reply.
        let plain = parse_reply(quirk!("cgminer-3.7.2-invalid-command.json")).unwrap();
        let nul = parse_reply(quirk!("cgminer-3.7.2-invalid-command-nul.json")).unwrap();
        assert_eq!(plain, nul);
        let status = check_status(&nul).unwrap();
        assert!(status.is_error());
        assert_eq!(status.msg, "Invalid command");

        // cgminer's plain-text API form is not JSON: refused, not guessed at.
        let err = parse_reply(quirk!("avalon-nano3-stats-text-truncated.txt")).unwrap_err();
        assert!(err.starts_with("not JSON"), "{err}");

        // Bare inf, nan and -nan read as no value; the finite figures survive.
        let v = parse_reply(quirk!("summary-nonfinite-bare.json")).unwrap();
        let s = &v["SUMMARY"][0];
        for key in ["Work Utility", "Device Hardware%", "Device Rejected%"] {
            assert!(s[key].is_null(), "{key}: {}", s[key]);
        }
        assert_eq!(number(s.get("GHS 5s")), Some(0.0));
        assert_eq!(number(s.get("Pool Rejected%")), Some(0.0));

        // Quoted "inf"/"nan" are strings; as numbers they are no value.
        let v = parse_reply(quirk!("summary-nonfinite-quoted.json")).unwrap();
        let s = &v["SUMMARY"][0];
        assert_eq!(number(s.get("MHS av")), None);
        assert_eq!(number(s.get("Work Utility")), None);
        assert_eq!(number(s.get("MHS 5s")), Some(0.0));
    }

    /// Every prefix of every sample: an answer cut anywhere is an error or a value, never a
    /// panic (the repairs index around the cut).
    #[test]
    fn cut_replies_never_panic() {
        for raw in [
            quirk!("volcminer-d1-stats-glued.json"),
            quirk!("antminer-d3-multi-truncated.json"),
            quirk!("summary-nonfinite-bare.json"),
            quirk!("summary-nonfinite-quoted.json"),
            quirk!("cgminer-3.7.2-invalid-command-nul.json"),
        ] {
            for end in 0..=raw.len() {
                let _ = parse_reply(&raw[..end]);
            }
        }
    }

    #[test]
    fn stray_commas_are_dropped() {
        // btminer's trailing comma and bmminer's leading one (pyasic repairs both).
        let v = parse_reply(br#"{"SUMMARY":[,{"a":1,},{"b":[1,2,]}],"id":1,}"#).unwrap();
        assert_eq!(v["SUMMARY"][0]["a"], 1);
        assert_eq!(v["SUMMARY"][1]["b"][1], 2);
        // Inside strings they are data.
        let v = parse_reply(br#"{"Msg":"a,}[,b"}"#).unwrap();
        assert_eq!(v["Msg"], "a,}[,b");
        // A run of them goes at once: a second repair changes nothing (found by the
        // firmware_replies fuzz target).
        let once = repair(b"{\"a\":[1,, ,,  ],\"b\":2,,,}");
        assert_eq!(repair(&once), once);
        assert_eq!(once, br#"{"a":[1   ],"b":2}"#.to_vec());
        // A leading comma that was the last byte leaves no whitespace behind it.
        let once = repair(b"ok\0,[\r\r,");
        assert_eq!(repair(&once), once);
        assert_eq!(once, b"ok\0,[".to_vec());
    }

    /// A reply ended by a newline on a connection the peer keeps open is read at once, not
    /// after the request timeout; a pretty-printed reply's inner newlines do not end it early.
    #[tokio::test]
    async fn newline_terminated_reply_on_an_open_connection() {
        use std::time::Duration;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reply = include_bytes!("../../../tools/fixtures/firmware/luxos/s19kpro-power.json");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 256];
            let _ = s.read(&mut req).await;
            // Pretty-printed: send it line by line, then hold the connection open.
            for line in reply.split_inclusive(|&b| b == b'\n') {
                s.write_all(line).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let client = FirmwareClient::new(super::super::Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(10),
        });
        let started = std::time::Instant::now();
        let (v, status) = request(&client, addr, "power", None).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(status.msg, "Power usage");
        assert_eq!(number(v["POWER"][0].get("Watts")), Some(1051.0));
        server.abort();
    }

    #[test]
    fn numbers_from_numbers_and_strings() {
        let v = serde_json::json!({"a": 1.5, "b": "2.5", "c": "x", "d": null, "e": [1]});
        assert_eq!(number(v.get("a")), Some(1.5));
        assert_eq!(number(v.get("b")), Some(2.5));
        assert_eq!(number(v.get("c")), None);
        assert_eq!(number(v.get("d")), None);
        assert_eq!(number(v.get("e")), None);
        assert_eq!(number(v.get("missing")), None);
    }
}
