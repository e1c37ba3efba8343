use super::*;

fn settings(outlets: u16) -> PduSettings {
    PduSettings {
        name: "pdu-a".into(),
        addr: "127.0.0.1:9".parse().unwrap(),
        security: Security::V2c {
            community: "private".into(),
        },
        profile: profile::find("apc-rpdu").unwrap(),
        outlets,
        voltage_v: Some(230.0),
        timeout: Duration::from_millis(100),
        retries: 1,
    }
}

#[test]
fn secrets_are_redacted() {
    let s = Security::V3 {
        user: "ops".into(),
        auth: AuthProto::Sha256,
        auth_password: "hunter2hunter2".into(),
        privacy: PrivProto::Aes,
        priv_password: "swordfish42".into(),
    };
    let d = format!("{s:?}");
    assert!(!d.contains("hunter2") && !d.contains("swordfish"), "{d}");
    let d = format!("{:?}", settings(8));
    assert!(!d.contains("private"), "{d}");
}

#[test]
fn protocols_parse() {
    assert_eq!(AuthProto::parse("sha256"), Some(AuthProto::Sha256));
    assert_eq!(AuthProto::parse("md5"), None);
    assert_eq!(PrivProto::parse("aes"), Some(PrivProto::Aes));
    assert_eq!(PrivProto::parse("des"), None);
}

#[test]
fn short_v3_passwords_are_refused() {
    let mut s = settings(8);
    s.security = Security::V3 {
        user: "ops".into(),
        auth: AuthProto::Sha,
        auth_password: "short".into(),
        privacy: PrivProto::Aes,
        priv_password: "longenough".into(),
    };
    let e = PduClient::new(s).unwrap_err();
    assert_eq!(e.side(), Side::Operator);
    assert!(e.to_string().contains("8 characters"), "{e}");
}

#[tokio::test]
async fn outlets_are_range_checked_before_any_io() {
    let c = PduClient::new(settings(8)).unwrap();
    for n in [0, 9] {
        let e = c.set_outlet(n, false).await.unwrap_err();
        assert!(matches!(e, PduError::NoOutlet { .. }), "{e}");
        assert_eq!(e.retry(), Retry::No);
    }
}

#[tokio::test]
async fn a_silent_agent_is_a_bounded_timeout() {
    // A bound UDP socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut s = settings(8);
    s.addr = silent.local_addr().unwrap();
    let c = PduClient::new(s).unwrap();
    let start = std::time::Instant::now();
    let e = c.read_outlet(1).await.unwrap_err();
    assert!(matches!(e, PduError::Timeout { .. }), "{e}");
    assert_eq!(e.retry(), Retry::Yes);
    assert!(e.to_string().contains("wrong community"), "{e}");
    assert!(start.elapsed() <= c.call_bound() + Duration::from_millis(200));
}

#[test]
fn integers_of_every_kind() {
    assert_eq!(integer(&Value::Integer(-3)), Some(-3));
    assert_eq!(integer(&Value::Gauge32(7)), Some(7));
    assert_eq!(integer(&Value::Null), None);
    assert_eq!(integer(&Value::OctetString("1".into())), None);
}
