//! The configuration file format: the shipped example loads, and mistakes name their key.

use hashshift::config::{Config, ConfigError};

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
    assert!(config.rig_group[0].matches(Some("farm.s19-003"), "10.9.9.9".parse().unwrap()));
    assert!(config.rig_group[1].matches(None, "10.0.2.44".parse().unwrap()));
    assert!(!config.rig_group[1].matches(Some("farm.s19-003"), "10.0.1.4".parse().unwrap()));
    assert!(config.gpu_scheduler.is_some());
}

#[test]
fn power_mistakes_name_their_key() {
    let admin = "\n[admin]\nsocket = \"/tmp/x.sock\"\n";
    let power = "\n[power]\nsite_cap_kw = 100.0\n";
    assert!(error_of(&format!("{BASE}{power}")).contains("needs [admin]"));
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
    let fw = "\n[[rig_group]]\nname = \"a\"\nrated_w = 3000.0\nfirmware = \"whatsminer\"\n";
    assert!(error_of(&format!("{BASE}{admin}{power}{fw}")).contains("whatsminer"));
}

#[test]
fn shed_aids_default_and_are_range_checked() {
    let admin = "\n[admin]\nsocket = \"/tmp/x.sock\"\n";
    let power = "\n[power]\nsite_cap_kw = 100.0\n";
    let config = Config::from_toml(&format!("{BASE}{admin}{power}")).unwrap();
    let p = config.power.as_ref().unwrap();
    assert_eq!(p.drain_margin, 0.05);
    assert_eq!(p.replace_after_secs, 30.0);
    let settings = hashshift::control::power::settings(p);
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
