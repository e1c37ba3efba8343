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
