//! HTTP Digest access authentication (RFC 7616, and RFC 2617 which it replaces), the MD5
//! flavour stock Antminer and Hiveon web servers speak. Sans-IO: parse a `WWW-Authenticate`
//! challenge, compute an `Authorization` value; the caller supplies the client nonce and the
//! nonce count, so every function here is a pure function of its inputs and testable against
//! the RFCs' worked examples.
//!
//! What is supported, and why no more:
//! - `algorithm=MD5` (or none given, which means MD5). `MD5-sess` and SHA-256 are refused with
//!   [`DigestError::Unsupported`]: no Antminer firmware we know offers them, and guessing would
//!   turn a clear "unsupported" into an opaque "login refused".
//! - `qop=auth` when offered (with `nc` and `cnonce`), and the RFC 2069 form when the
//!   challenge has no `qop` at all. `auth-int` alone is refused.
//! - `stale=true` is reported ([`Challenge::stale`]) so the caller can answer the new nonce
//!   once instead of declaring the password wrong.
//!
//! Bounds: a challenge over [`MAX_CHALLENGE_LEN`] is refused, as is any parameter value
//! containing a control character (it would end up in our request head).

use std::fmt::Write as _;

use md5::{Digest as _, Md5};

/// The longest `WWW-Authenticate` value parsed.
pub const MAX_CHALLENGE_LEN: usize = 2048;

/// A Digest challenge from a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// `realm` (Antminer: "antMiner Configuration").
    pub realm: String,
    /// The server nonce.
    pub nonce: String,
    /// `opaque`, echoed back unchanged when present.
    pub opaque: Option<String>,
    /// Whether `qop=auth` is offered (else the RFC 2069 form is used).
    pub qop_auth: bool,
    /// `stale=true`: our previous answer was right but its nonce expired.
    pub stale: bool,
}

/// Why a challenge cannot be answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// Not a Digest challenge, or its syntax is broken (`detail` says how).
    #[error("not a usable Digest challenge: {0}")]
    Malformed(String),
    /// A Digest variant this client does not speak (algorithm or qop).
    #[error("unsupported Digest variant: {0}")]
    Unsupported(String),
}

/// Parses the first Digest challenge among a reply's `WWW-Authenticate` values.
pub fn find_challenge<S: AsRef<str>>(values: &[S]) -> Result<Challenge, DigestError> {
    let mut first_err = None;
    for v in values {
        match parse_challenge(v.as_ref()) {
            Ok(c) => return Ok(c),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| DigestError::Malformed("no WWW-Authenticate header".into())))
}

/// Parses one `WWW-Authenticate` value: `Digest k=v, k="quoted", ...`.
pub fn parse_challenge(value: &str) -> Result<Challenge, DigestError> {
    if value.len() > MAX_CHALLENGE_LEN {
        return Err(DigestError::Malformed("challenge too long".into()));
    }
    let value = value.trim();
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("digest") {
        return Err(DigestError::Malformed(format!("scheme {scheme:.20}")));
    }
    let params = parse_params(rest)?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let realm = get("realm").ok_or_else(|| DigestError::Malformed("no realm".into()))?;
    let nonce = get("nonce")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| DigestError::Malformed("no nonce".into()))?;
    match get("algorithm") {
        None => {}
        Some(a) if a.eq_ignore_ascii_case("md5") => {}
        Some(a) => return Err(DigestError::Unsupported(format!("algorithm {a:.20}"))),
    }
    let qop_auth = match get("qop") {
        None => false,
        Some(q) => {
            let offered: Vec<&str> = q.split(',').map(str::trim).collect();
            if offered.iter().any(|o| o.eq_ignore_ascii_case("auth")) {
                true
            } else {
                return Err(DigestError::Unsupported(format!("qop {q:.20}")));
            }
        }
    };
    Ok(Challenge {
        realm: realm.to_owned(),
        nonce: nonce.to_owned(),
        opaque: get("opaque").map(str::to_owned),
        qop_auth,
        stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
    })
}

/// `k=v` pairs separated by commas; values are tokens or quoted strings with `\` escapes.
fn parse_params(s: &str) -> Result<Vec<(String, String)>, DigestError> {
    let bad = |what: &str| DigestError::Malformed(what.to_owned());
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars
            .peek()
            .is_some_and(|c| *c == ',' || c.is_ascii_whitespace())
        {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        if out.len() >= 32 {
            return Err(bad("too many parameters"));
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' || c.is_ascii_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return Err(bad("parameter without a value"));
        }
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(bad("unterminated quoted string")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(bad("unterminated quoted string")),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_ascii_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        if value.chars().any(|c| c.is_control()) {
            return Err(bad("control character in a parameter"));
        }
        out.push((key, value));
    }
}

fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p.as_bytes());
    }
    let mut out = String::with_capacity(32);
    for b in h.finalize() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The `response` value: `MD5(HA1:nonce:nc:cnonce:auth:HA2)` with qop, `MD5(HA1:nonce:HA2)`
/// without (RFC 2069), where `HA1 = MD5(user:realm:password)` and `HA2 = MD5(method:uri)`.
pub fn response(
    challenge: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let ha1 = md5_hex(&[user, &challenge.realm, password]);
    let ha2 = md5_hex(&[method, uri]);
    if challenge.qop_auth {
        let nc = format!("{nc:08x}");
        md5_hex(&[&ha1, &challenge.nonce, &nc, cnonce, "auth", &ha2])
    } else {
        md5_hex(&[&ha1, &challenge.nonce, &ha2])
    }
}

/// Quotes a value for a header parameter (`"` and `\` escaped).
fn quoted(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The whole `Authorization` header value answering `challenge` for `method uri`.
/// `nc` counts the requests made with this nonce (1 for the first); `cnonce` is the client's
/// fresh random nonce (visible ASCII, no quotes).
pub fn authorization(
    challenge: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let resp = response(challenge, user, password, method, uri, nc, cnonce);
    let mut out = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, algorithm=MD5, response=\"{resp}\"",
        quoted(user),
        quoted(&challenge.realm),
        quoted(&challenge.nonce),
        quoted(uri),
    );
    if challenge.qop_auth {
        let _ = write!(out, ", qop=auth, nc={nc:08x}, cnonce={}", quoted(cnonce));
    }
    if let Some(o) = &challenge.opaque {
        let _ = write!(out, ", opaque={}", quoted(o));
    }
    out
}

/// The fields of a client's `Authorization: Digest ...` value, for servers (the fake rig)
/// checking an answer. Parsed with the same rules as a challenge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// `username`.
    pub username: String,
    /// `realm`.
    pub realm: String,
    /// `nonce` answered.
    pub nonce: String,
    /// `uri`.
    pub uri: String,
    /// `response` (hex).
    pub response: String,
    /// `qop`, if sent.
    pub qop: Option<String>,
    /// `nc`, if sent (hex as written).
    pub nc: Option<String>,
    /// `cnonce`, if sent.
    pub cnonce: Option<String>,
}

/// Parses an `Authorization: Digest ...` value; `None` when it is not one.
pub fn parse_authorization(value: &str) -> Option<Credentials> {
    if value.len() > MAX_CHALLENGE_LEN {
        return None;
    }
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let params = parse_params(rest).ok()?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    Some(Credentials {
        username: get("username")?,
        realm: get("realm")?,
        nonce: get("nonce")?,
        uri: get("uri")?,
        response: get("response")?,
        qop: get("qop"),
        nc: get("nc"),
        cnonce: get("cnonce"),
    })
}

/// What a server expects in `response` for these credentials (the server half of
/// [`response`]): `None` when the fields are inconsistent (qop without nc/cnonce, a bad nc).
pub fn expected_response(c: &Credentials, password: &str, method: &str) -> Option<String> {
    let challenge = Challenge {
        realm: c.realm.clone(),
        nonce: c.nonce.clone(),
        opaque: None,
        qop_auth: c.qop.is_some(),
        stale: false,
    };
    let (nc, cnonce) = match (&c.qop, &c.nc, &c.cnonce) {
        (Some(q), Some(nc), Some(cn)) if q == "auth" && nc.len() == 8 => {
            (u32::from_str_radix(nc, 16).ok()?, cn.as_str())
        }
        (None, _, _) => (0, ""),
        _ => return None,
    };
    Some(response(
        &challenge,
        &c.username,
        password,
        method,
        &c.uri,
        nc,
        cnonce,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5: the worked example (Mufasa, "Circle Of Life").
    #[test]
    fn rfc2617_worked_example() {
        let ch = parse_challenge(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .expect("challenge");
        assert_eq!(ch.realm, "testrealm@host.com");
        assert!(ch.qop_auth && !ch.stale);
        assert_eq!(
            ch.opaque.as_deref(),
            Some("5ccc069c403ebaf9f0171e9517f40e41")
        );
        let r = response(
            &ch,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            1,
            "0a4f113b",
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
        let header = authorization(
            &ch,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            1,
            "0a4f113b",
        );
        assert!(header.contains("nc=00000001"), "{header}");
        assert!(header.contains("response=\"6629fae49393a05397450978507c4ef1\""));
        // The server half agrees with the client half.
        let creds = parse_authorization(&header).expect("parses");
        assert_eq!(
            expected_response(&creds, "Circle Of Life", "GET").as_deref(),
            Some("6629fae49393a05397450978507c4ef1")
        );
        assert_ne!(
            expected_response(&creds, "circle of life", "GET").as_deref(),
            Some("6629fae49393a05397450978507c4ef1")
        );
    }

    /// RFC 7616 §3.9.1: the MD5 example (note "Circle of Life", lower-case "of").
    #[test]
    fn rfc7616_md5_example() {
        let ch = parse_challenge(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
             algorithm=MD5, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        )
        .expect("challenge");
        let r = response(
            &ch,
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            1,
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert_eq!(r, "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn rfc2069_form_without_qop() {
        let ch = parse_challenge("Digest realm=\"r\", nonce=\"n\"").expect("challenge");
        assert!(!ch.qop_auth);
        let header = authorization(&ch, "u", "p", "GET", "/x", 1, "c");
        assert!(!header.contains("qop"), "{header}");
        let ha1 = md5_hex(&["u", "r", "p"]);
        let ha2 = md5_hex(&["GET", "/x"]);
        assert_eq!(
            response(&ch, "u", "p", "GET", "/x", 1, "c"),
            md5_hex(&[&ha1, "n", &ha2])
        );
    }

    #[test]
    fn challenges_antminer_and_hostile() {
        let ch = find_challenge(&[
            "Basic realm=\"x\"",
            "Digest qop=\"auth\", realm=\"antMiner Configuration\", nonce=\"abc\", stale=TRUE",
        ])
        .expect("digest found after basic");
        assert_eq!(ch.realm, "antMiner Configuration");
        assert!(ch.stale && ch.qop_auth);
        let quoted = parse_challenge(r#"Digest realm="a \"b\" \\c", nonce=n1"#).expect("escapes");
        assert_eq!(
            (ch.nonce.as_str(), quoted.realm.as_str()),
            ("abc", "a \"b\" \\c")
        );
        for bad in [
            "Basic realm=\"x\"",
            "Digest realm=\"x\"",
            "Digest nonce=\"n\"",
            "Digest realm=\"x, nonce=\"n\"",
            "Digest realm=\"x\", nonce=\"\"",
            "Digest realm",
            "Digest realm=\"x\r\nEvil: 1\", nonce=\"n\"",
            "",
        ] {
            assert!(
                matches!(parse_challenge(bad), Err(DigestError::Malformed(_))),
                "{bad:?}"
            );
        }
        for unsupported in [
            "Digest realm=\"x\", nonce=\"n\", algorithm=SHA-256",
            "Digest realm=\"x\", nonce=\"n\", algorithm=MD5-sess",
            "Digest realm=\"x\", nonce=\"n\", qop=\"auth-int\"",
        ] {
            assert!(
                matches!(
                    parse_challenge(unsupported),
                    Err(DigestError::Unsupported(_))
                ),
                "{unsupported}"
            );
        }
        let long = format!("Digest realm=\"{}\", nonce=\"n\"", "x".repeat(4000));
        assert!(parse_challenge(&long).is_err());
        let many = format!("Digest {}", "a=b, ".repeat(100));
        assert!(parse_challenge(&many).is_err());
        assert!(find_challenge::<&str>(&[]).is_err());
    }

    proptest::proptest! {
        /// Whatever a peer sends as a challenge, parsing returns (never panics).
        #[test]
        fn any_challenge_text_is_safe(text in ".{0,300}") {
            let _ = parse_challenge(&text);
            let _ = parse_challenge(&format!("Digest {text}"));
            let _ = parse_authorization(&format!("Digest {text}"));
        }

        /// Values with quotes, backslashes and commas survive our quoting: what we send is
        /// what a server reads back, and both halves compute the same response.
        #[test]
        fn quoted_values_round_trip(
            realm in "[ -~]{1,40}",
            nonce in "[!#-~]{1,40}",
            user in "[ -~]{0,20}",
            password in "[ -~]{0,20}",
            nc in 1u32..1000,
        ) {
            let ch = Challenge { realm, nonce, opaque: None, qop_auth: true, stale: false };
            let header = authorization(&ch, &user, &password, "POST", "/cgi-bin/x.cgi", nc, "cn");
            let creds = parse_authorization(&header).expect("our own header parses");
            proptest::prop_assert_eq!(&creds.realm, &ch.realm);
            proptest::prop_assert_eq!(&creds.username, &user);
            proptest::prop_assert_eq!(
                expected_response(&creds, &password, "POST"),
                Some(creds.response.clone())
            );
        }
    }

    #[test]
    fn server_side_refuses_inconsistent_answers() {
        let mut c = Credentials {
            username: "root".into(),
            realm: "r".into(),
            nonce: "n".into(),
            uri: "/".into(),
            response: String::new(),
            qop: Some("auth".into()),
            nc: None,
            cnonce: Some("c".into()),
        };
        assert_eq!(expected_response(&c, "p", "GET"), None);
        c.nc = Some("zz".into());
        assert_eq!(expected_response(&c, "p", "GET"), None);
        assert!(parse_authorization("Basic cm9vdDpyb290").is_none());
        assert!(parse_authorization("Digest username=\"root\"").is_none());
    }
}
