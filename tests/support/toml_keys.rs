//! The keys a TOML document sets, as `table.key` paths: for tests that hold the example
//! config, the effective config and the configuration page to the same set of keys.

use std::collections::BTreeSet;

/// Adds the `table.key` paths of `v` under `prefix` to `out`; array-of-tables elements share
/// their table's path.
pub fn key_paths(prefix: &str, v: &toml::Value, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                // Inline maps of free-form names (a command's `env`) are values, not keys.
                if matches!(v, toml::Value::Table(_)) && k == "env" {
                    out.insert(path);
                    continue;
                }
                match v {
                    toml::Value::Table(_) => key_paths(&path, v, out),
                    toml::Value::Array(a) if a.iter().all(|e| e.is_table()) && !a.is_empty() => {
                        for e in a {
                            key_paths(&path, e, out);
                        }
                    }
                    _ => {
                        out.insert(path);
                    }
                }
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}
