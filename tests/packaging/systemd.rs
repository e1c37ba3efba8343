//! The systemd unit: hardened, and its directories and socket are the config's.

use super::*;

/// The unit's `Key=value` lines (the last one of a key wins, as systemd reads most keys).
fn unit(key: &str) -> Option<String> {
    read("deploy/hashshift.service")
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_owned())
        .next_back()
}

#[test]
fn systemd_unit_is_hardened_and_matches_the_config() {
    assert_eq!(
        unit("CapabilityBoundingSet").as_deref(),
        Some(""),
        "no capabilities"
    );
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("StateDirectory", "hashshift"),
        ("RuntimeDirectory", "hashshift"),
        ("User", "hashshift"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(unit(key).as_deref(), Some(value), "{key}");
    }
    let start = unit("ExecStart").unwrap();
    assert!(
        start.ends_with("run --config /etc/hashshift/hashshift.toml"),
        "{start}"
    );
    // The directories systemd creates are where the proxy and `hashshift ctl` look by default.
    let example = Config::load(&root().join("config.example.toml")).unwrap();
    let admin = example.admin.unwrap();
    assert_eq!(admin.socket, Path::new("/run/hashshift/admin.sock"));
    assert_eq!(
        admin.state_dir.as_deref(),
        Some(Path::new("/var/lib/hashshift"))
    );
    assert_eq!(
        hashshift_proxy::control::admin::ctl::DEFAULT_SOCKET,
        "/run/hashshift/admin.sock"
    );

    // systemd's own checks, with ExecStart pointed at this build's binary.
    let dir = std::env::temp_dir().join(format!("hashshift-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hashshift.service");
    let text = read("deploy/hashshift.service")
        .replace("/usr/local/bin/hashshift", env!("CARGO_BIN_EXE_hashshift"));
    std::fs::write(&file, text).unwrap();
    let path = file.to_str().unwrap();
    let verify = tool("systemd-analyze", &["verify", path]);
    let security = tool(
        "systemd-analyze",
        &["security", "--offline=yes", "--threshold=20", path],
    );
    let _ = std::fs::remove_dir_all(&dir);
    if let (Some(verify), Some(security)) = (verify, security) {
        assert_ok("systemd-analyze verify", &verify);
        // Exposure is reported ×10 for the threshold: 2.0 or lower is systemd's "OK".
        assert_ok("systemd-analyze security (exposure <= 2.0)", &security);
    }
}
