//! The configuration file format: the shipped example loads, and mistakes name their key.

mod support;

use hashshift_proxy::config::{Config, ConfigError};
use support::toml_keys::key_paths;

#[test]
fn example_config_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let config = Config::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(config.upstream.len(), 3);
    assert_eq!(config.upstream[0].weight, 70);
    assert_eq!(config.upstream[2].priority, 1);
}

fn error_of(text: &str) -> String {
    match Config::from_toml(text) {
        Err(e @ (ConfigError::Parse(_) | ConfigError::Invalid { .. })) => e.to_string(),
        other => panic!("expected an error, got {other:?}"),
    }
}

const BASE: &str = r#"
[[downstream]]
protocol = "sv1"
listen = "127.0.0.1:0"
[[upstream]]
url = "stratum+tcp://127.0.0.1:3333"
user = "u"
"#;

#[test]
fn mistakes_name_their_key() {
    let vardiff = "\n[vardiff]\ninitial = 1.0\nmin = 2.0\nmax = 3.0\nshares_per_minute = 5.0\n";
    assert!(error_of(&format!("{BASE}{vardiff}")).contains("vardiff.initial"));
    let aggregation = "\n[aggregation]\nproxy_extranonce2_bytes = 1\nmax_miners_per_upstream = 300\nworker_identity = \"fixed\"\n";
    assert!(error_of(&format!("{BASE}{aggregation}")).contains("max_miners_per_upstream"));
    assert!(error_of(&format!("{BASE}\nbogus = 1\n")).contains("bogus"));
    assert!(
        error_of(&BASE.replace("stratum+tcp://127.0.0.1:3333", "http://x:1"))
            .contains("stratum+tcp")
    );
    assert!(error_of(&BASE.replace("sv1", "sv9")).contains("sv9"));
}

#[test]
fn fractional_difficulties_are_accepted() {
    let vardiff =
        "\n[vardiff]\ninitial = 0.001\nmin = 0.0001\nmax = 1.0\nshares_per_minute = 30.0\n";
    let c = Config::from_toml(&format!("{BASE}{vardiff}")).unwrap();
    assert_eq!(c.vardiff.min, 0.0001);
}

#[test]
fn the_example_describes_a_whole_site() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let config = Config::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap();
    let power = config.power.as_ref().unwrap();
    assert_eq!(power.site_cap_kw, 1000.0);
    assert_eq!(power.drain_margin, 0.05);
    assert_eq!(power.replace_after_secs, 30.0);
    assert_eq!(config.rig_group.len(), 2);
    // Group 0 gives workers and addresses: a rig must match both.
    assert!(config.rig_group[0].matches(Some("farm.s19-003"), "10.0.1.9".parse().unwrap()));
    assert!(!config.rig_group[0].matches(Some("farm.s19-003"), "10.9.9.9".parse().unwrap()));
    assert!(!config.rig_group[0].matches(Some("ghost-1a2b"), "10.0.1.9".parse().unwrap()));
    assert!(config.rig_group[1].matches(None, "10.0.2.44".parse().unwrap()));
    assert!(!config.rig_group[1].matches(Some("farm.s19-003"), "10.0.1.4".parse().unwrap()));
    assert!(config.gpu_scheduler.is_some());
}

#[test]
fn power_mistakes_name_their_key() {
    let admin = "\n[admin]\nsocket = \"/tmp/x.sock\"\nstate_dir = \"/tmp/x-state\"\n";
    let power = "\n[power]\nsite_cap_kw = 100.0\n";
    // Power control keeps its plan in the state directory: without one it is refused.
    assert!(error_of(&format!("{BASE}{power}")).contains("admin.state_dir"));
    let no_state = "\n[admin]\nsocket = \"/tmp/x.sock\"\n";
    assert!(error_of(&format!("{BASE}{no_state}{power}")).contains("admin.state_dir"));
    assert!(
        Config::from_toml(&format!("{BASE}{no_state}")).is_ok(),
        "no [power]: optional"
    );
    assert!(
        error_of(&format!(
            "{BASE}{admin}\n[power]\nsite_cap_kw = 10.0\nheadroom_kw = 10.0\n"
        ))
        .contains("power.headroom_kw")
    );
    let group = "\n[[rig_group]]\nname = \"a\"\nrated_w = 3000.0\naddresses = [\"10.0.0.0/40\"]\n";
    assert!(error_of(&format!("{BASE}{admin}{power}{group}")).contains("rig_group[0].addresses"));
    let rig = "\n[[rig]]\nworker = \"w\"\ngroup = \"nope\"\n";
    assert!(error_of(&format!("{BASE}{admin}{power}{rig}")).contains("rig[0].group"));
    let fw = "\n[[rig_group]]\nname = \"a\"\nrated_w = 3000.0\nfirmware = \"avalon\"\n";
    assert!(error_of(&format!("{BASE}{admin}{power}{fw}")).contains("avalon"));
}

/// Numbers that would overflow or panic once turned into durations or watts are refused by
/// `check-config`, naming the key.
#[test]
fn out_of_range_numbers_name_their_key() {
    let admin = "\n[admin]\nsocket = \"/tmp/x.sock\"\nstate_dir = \"/tmp/x-state\"\n";
    let power = |line: &str| format!("{BASE}{admin}\n[power]\nsite_cap_kw = 100.0\n{line}\n");
    for (line, key) in [
        (
            "confirm_deadline_secs = 1e300",
            "power.confirm_deadline_secs",
        ),
        (
            "confirm_deadline_secs = -1.0",
            "power.confirm_deadline_secs",
        ),
        ("confirm_deadline_secs = nan", "power.confirm_deadline_secs"),
        ("wake_deadline_secs = 604801.0", "power.wake_deadline_secs"),
        ("wake_deadline_secs = inf", "power.wake_deadline_secs"),
        ("resume_interval_secs = 0.0", "power.resume_interval_secs"),
        ("status_poll_secs = 86401.0", "power.status_poll_secs"),
        ("quiet_secs = -0.5", "power.quiet_secs"),
        ("quiet_secs = 1e20", "power.quiet_secs"),
        ("hysteresis_kw = 1e12", "power.hysteresis_kw"),
    ] {
        let e = error_of(&power(line));
        assert!(e.contains(key), "{line}: {e}");
    }
    // The limits themselves are accepted.
    assert!(Config::from_toml(&power("wake_deadline_secs = 604800.0\nquiet_secs = 0.0")).is_ok());
    let huge_cap = format!("{BASE}{admin}\n[power]\nsite_cap_kw = 1e12\n");
    assert!(error_of(&huge_cap).contains("power.site_cap_kw"));
    let group = |w: &str| format!("\n[[rig_group]]\nname = \"a\"\nrated_w = {w}\n");
    assert!(error_of(&format!("{BASE}{}", group("1e9"))).contains("rig_group[0].rated_w"));
    let rig = "\n[[rig]]\nworker = \"w\"\nrated_w = -3.0\n";
    assert!(error_of(&format!("{BASE}{rig}")).contains("rig[0].rated_w"));
    let limits = "\n[limits]\nmax_line_bytes = 16384\nsend_queue = 64\nmax_connections = 10\nhandshake_timeout_secs = 18446744073709551615\n";
    assert!(error_of(&format!("{BASE}{limits}")).contains("limits.handshake_timeout_secs"));
    let failover = "\n[failover]\nno_work_timeout_secs = 1e300\nfailback_after_secs = 30.0\nrebalance_every_secs = 10.0\n";
    assert!(error_of(&format!("{BASE}{failover}")).contains("failover.no_work_timeout_secs"));
}

#[test]
fn shed_aids_default_and_are_range_checked() {
    let admin = "\n[admin]\nsocket = \"/tmp/x.sock\"\nstate_dir = \"/tmp/x-state\"\n";
    let power = "\n[power]\nsite_cap_kw = 100.0\n";
    let config = Config::from_toml(&format!("{BASE}{admin}{power}")).unwrap();
    let p = config.power.as_ref().unwrap();
    assert_eq!(p.drain_margin, 0.05);
    assert_eq!(p.replace_after_secs, 30.0);
    let settings = hashshift_proxy::control::power::settings(p);
    assert_eq!(settings.replace_after, std::time::Duration::from_secs(30));
    for bad in [
        "drain_margin = -0.1",
        "drain_margin = 1.5",
        "drain_margin = nan",
    ] {
        assert!(
            error_of(&format!("{BASE}{admin}{power}{bad}\n")).contains("power.drain_margin"),
            "{bad}"
        );
    }
    for bad in [
        "replace_after_secs = 0.0",
        "replace_after_secs = 86401.0",
        "replace_after_secs = 1e300",
    ] {
        assert!(
            error_of(&format!("{BASE}{admin}{power}{bad}\n")).contains("power.replace_after_secs"),
            "{bad}"
        );
    }
}

fn example_text() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml")).unwrap()
}

#[test]
fn the_example_documents_every_key_and_the_defaults() {
    let text = example_text();
    let documented: toml::Value = toml::from_str(&text).unwrap();
    let config = Config::from_toml(&text).unwrap();
    let effective = toml::Value::try_from(&config).unwrap();
    let (mut in_example, mut in_code) = Default::default();
    key_paths("", &documented, &mut in_example);
    key_paths("", &effective, &mut in_code);
    let undocumented: Vec<_> = in_code.difference(&in_example).collect();
    assert!(
        undocumented.is_empty(),
        "keys the code reads that config.example.toml does not show: {undocumented:?}"
    );
    // The tables the example shows with their defaults: loading a file without them must
    // give exactly what the example says.
    let bare = Config::from_toml(BASE).unwrap();
    let bare = toml::Value::try_from(&bare).unwrap();
    for table in ["vardiff", "aggregation", "failover", "limits"] {
        assert_eq!(
            documented.get(table),
            bare.get(table),
            "[{table}] in config.example.toml differs from the defaults in the code"
        );
    }
}

#[test]
fn every_table_accepts_any_subset_of_its_keys() {
    let documented: toml::Value = toml::from_str(&example_text()).unwrap();
    let mut tried = 0;
    for table in ["vardiff", "aggregation", "failover", "limits"] {
        let keys = documented[table].as_table().unwrap();
        for (key, value) in keys {
            let text = format!("{BASE}\n[{table}]\n{key} = {value}\n");
            let config = Config::from_toml(&text)
                .unwrap_or_else(|e| panic!("[{table}] with only {key}: {e}"));
            let effective = toml::Value::try_from(&config).unwrap();
            assert_eq!(effective[table][key.as_str()], *value, "{table}.{key}");
            tried += 1;
        }
    }
    assert!(tried >= 28, "only {tried} keys tried");
    // The issue's example: [aggregation] with only worker_identity.
    let c = Config::from_toml(&format!(
        "{BASE}\n[aggregation]\nworker_identity = \"fixed\"\n"
    ))
    .unwrap();
    assert_eq!(c.aggregation.proxy_extranonce2_bytes, 2);
    // [power] needs only its cap, [[rig_group]] its name and nameplate.
    let site = format!(
        "{BASE}\n[admin]\nsocket = \"/tmp/x.sock\"\nstate_dir = \"/tmp/x\"\n[power]\nsite_cap_kw = 100.0\n[[rig_group]]\nname = \"a\"\nrated_w = 3000.0\n"
    );
    let c = Config::from_toml(&site).unwrap();
    assert_eq!(c.power.unwrap().forget_unverified_secs, 120.0);
    let e = error_of(&site.replace("rated_w = 3000.0\n", ""));
    assert!(e.contains("rated_w"), "{e}");
    let e = error_of(&site.replace("site_cap_kw = 100.0\n", ""));
    assert!(e.contains("site_cap_kw"), "{e}");
}

#[test]
fn new_timings_are_range_checked() {
    for (table, key, bad) in [
        ("limits", "idle_timeout_secs", "0"),
        ("limits", "max_connections_per_address", "0"),
        ("limits", "http_max_body_bytes", "0"),
        ("limits", "sv2_ack_batch", "0"),
        ("limits", "shutdown_grace_secs", "100000"),
        ("failover", "pool_write_timeout_secs", "0.0"),
        ("failover", "pool_connect_timeout_secs", "nan"),
        ("failover", "pool_min_backoff_secs", "0.0"),
        ("failover", "pool_min_backoff_secs", "31.0"),
        ("limits", "sv2_ack_delay_ms", "10001"),
    ] {
        let e = error_of(&format!("{BASE}\n[{table}]\n{key} = {bad}\n"));
        assert!(
            e.contains(key) || e.contains(table),
            "{table}.{key} = {bad}: {e}"
        );
    }
    let admin = "\n[admin]\nsocket = \"/tmp/x.sock\"\n";
    for bad in ["0", "86401"] {
        let e = error_of(&format!("{BASE}{admin}idle_timeout_secs = {bad}\n"));
        assert!(e.contains("admin.idle_timeout_secs"), "{bad}: {e}");
    }
    let config = Config::from_toml(&format!("{BASE}{admin}")).unwrap();
    assert_eq!(config.admin.unwrap().idle_timeout_secs, 600);
}

#[test]
fn check_config_shows_secrets_redacted() {
    let dir = std::env::temp_dir().join(format!("hashshift-redact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        format!(
            "{}\npassword = \"hunter2-pool\"\n[gpu_scheduler]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\nauthorization = \"Bearer s3cret-hook\"\n",
            BASE.trim_end()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hashshift"))
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !printed.contains("hunter2") && !printed.contains("s3cret"),
        "{printed}"
    );
    assert_eq!(printed.matches("\"<redacted>\"").count(), 2, "{printed}");
    // What is printed loads again (with the placeholders as values).
    Config::from_toml(&printed).unwrap();
}
