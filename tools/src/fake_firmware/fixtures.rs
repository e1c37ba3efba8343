//! Replies captured from real machines, which the fakes answer with.
//!
//! They live in `tools/fixtures/firmware/<firmware>/`, one file per reply, exactly as the
//! machine sent it (a cgminer-style reply keeps its trailing NUL). Each folder has a
//! `sources.toml` naming, for every file, the model it came from and where it was published:
//!
//! ```toml
//! [[fixture]]
//! file = "s19-stats.json"
//! model = "Antminer S19 (stock 2022)"
//! source = "pyasic tests/... (github.com/UpstreamData/pyasic, commit ...)"
//! note = "what was changed, if anything (e.g. serial numbers replaced)"
//! ```
//!
//! The fakes embed the files with `include_bytes!`/`include_str!`, and the adapters' unit
//! tests parse the same files, so the adapter and the fake are held to the machine's words, not
//! to each other's. The test below keeps the folder and its `sources.toml` in step.

/// The fixture folder, relative to the tooling crate.
pub const DIR: &str = "fixtures/firmware";

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sources {
        fixture: Vec<Source>,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Source {
        file: String,
        model: String,
        source: String,
        #[serde(default)]
        #[allow(dead_code)] // read by people
        note: String,
    }

    /// Every fixture names its source and model, and every source names a fixture that is there.
    #[test]
    fn every_fixture_names_its_source() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(super::DIR);
        let mut firmwares = BTreeSet::new();
        for dir in std::fs::read_dir(&root).unwrap() {
            let dir = dir.unwrap().path();
            if !dir.is_dir() {
                continue;
            }
            firmwares.insert(dir.file_name().unwrap().to_string_lossy().into_owned());
            let listed = dir.join("sources.toml");
            let text = std::fs::read_to_string(&listed)
                .unwrap_or_else(|e| panic!("{}: {e}", listed.display()));
            let sources: Sources =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", listed.display()));
            let mut named = BTreeSet::new();
            for s in &sources.fixture {
                assert!(
                    !s.model.trim().is_empty(),
                    "{}: {} has no model",
                    dir.display(),
                    s.file
                );
                assert!(
                    !s.source.trim().is_empty(),
                    "{}: {} has no source",
                    dir.display(),
                    s.file
                );
                assert!(
                    dir.join(&s.file).is_file(),
                    "{}: {} is listed but missing",
                    dir.display(),
                    s.file
                );
                assert!(
                    named.insert(s.file.clone()),
                    "{}: {} listed twice",
                    dir.display(),
                    s.file
                );
            }
            for f in std::fs::read_dir(&dir).unwrap() {
                let name = f.unwrap().file_name().to_string_lossy().into_owned();
                if name != "sources.toml" {
                    assert!(
                        named.contains(&name),
                        "{}: {name} is not in sources.toml",
                        dir.display()
                    );
                }
            }
        }
        // Every adapter is held to captured replies, and cgminer's quirks to real ones.
        for needed in [
            "antminer",
            "braiins",
            "cgminer",
            "luxos",
            "vnish",
            "whatsminer",
        ] {
            assert!(firmwares.contains(needed), "no fixtures for {needed}");
        }
    }
}
