//! The docs a newcomer walks: `README.md` and the pages in `docs/`.
//!
//! What holds after these pass: the README stays short (at most 200 lines) and starts with the
//! two commands a newcomer needs (the demo, then the test suite); it links every page in
//! `docs/`; and every relative link in the README or a page points to a file that exists and,
//! when it names a heading (`page.md#heading`), to a heading that exists, with GitHub's anchor
//! rules. Links to other sites are not followed (CI has no network for them). The README's
//! small configuration loads as `hashshift run` would load it.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use support::toml_keys::key_paths;

/// The README's line budget: what it is, the two commands, a small config, where to read next.
const README_MAX_LINES: usize = 200;

/// The two commands, exactly as the README must show them first.
const FIRST_COMMANDS: [&str; 2] = [
    "cargo run --release -- demo",
    "cargo test --workspace --locked",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `README.md` and every `docs/*.md`, sorted.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

/// The lines outside fenced code blocks (a `[x](y)` in a shell example is not a link).
fn prose_lines(text: &str) -> Vec<&str> {
    let mut in_fence = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if !in_fence {
            out.push(line);
        }
    }
    out
}

/// Inline code spans removed, so `` `[a](b)` `` is not taken for a link.
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// The targets of the inline links `[text](target)` in `text`, outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            match after.find(')') {
                Some(end) => {
                    // `[text](target "title")`: the target is the first word.
                    let target = after[..end].split_whitespace().next().unwrap_or("");
                    targets.push(target.to_owned());
                    rest = &after[end + 1..];
                }
                None => break,
            }
        }
    }
    targets
}

/// GitHub's anchor for a heading: lower case, punctuation dropped (but `-` and `_`), spaces
/// to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings (a repeated heading gets `-1`, `-2`, ... as on GitHub).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for line in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// Every relative link of `file` (whose text is `text`) that does not resolve, as
/// `"file: target (why)"`.
fn broken_links(file: &Path, text: &str) -> Vec<String> {
    let dir = file.parent().expect("a file has a directory");
    let mut broken = Vec::new();
    for target in link_targets(text) {
        if target.is_empty() {
            broken.push(format!("{}: empty link target", file.display()));
            continue;
        }
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, fragment) = match target.split_once('#') {
            Some((p, f)) => (p, Some(f)),
            None => (target.as_str(), None),
        };
        let resolved = if path.is_empty() {
            file.to_path_buf()
        } else {
            dir.join(path)
        };
        if !resolved.exists() {
            broken.push(format!("{}: {target} (no such file)", file.display()));
            continue;
        }
        if let Some(fragment) = fragment {
            // A link within the page (`#heading`) is checked against the text given.
            let page = if path.is_empty() {
                Some(text.to_owned())
            } else if resolved.extension().is_some_and(|x| x == "md") {
                Some(read(&resolved))
            } else {
                None
            };
            if page.is_some_and(|page| !anchors(&page).contains(fragment)) {
                broken.push(format!("{}: {target} (no such heading)", file.display()));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    let mut links = 0;
    for file in doc_files() {
        let text = read(&file);
        links += link_targets(&text).len();
        broken.extend(broken_links(&file, &text));
    }
    assert!(
        links > 20,
        "only {links} links found: is the parser reading the pages?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_is_short_and_starts_with_the_two_commands() {
    let readme = read(&root().join("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, more than {README_MAX_LINES}: move detail into docs/"
    );
    // The first code block holds the two commands, first and in this order.
    let mut in_fence = false;
    let mut first_block = Vec::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            if in_fence {
                break;
            }
            in_fence = true;
            continue;
        }
        if in_fence {
            first_block.push(line);
        }
    }
    let commands: Vec<&str> = first_block
        .iter()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert!(
        commands.len() >= 2 && commands[..2] == FIRST_COMMANDS,
        "the README's first code block must start with {FIRST_COMMANDS:?}, has {commands:?}"
    );
}

#[test]
fn the_readmes_configuration_loads() {
    let readme = read(&root().join("README.md"));
    let block = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README shows a configuration in a ```toml block");
    let config = hashshift_proxy::config::Config::from_toml(block)
        .unwrap_or_else(|e| panic!("the README's configuration: {e}\n{block}"));
    assert_eq!(config.downstream.len(), 1);
    assert_eq!(config.upstream.len(), 2);
    assert!(
        block.lines().count() <= 20,
        "the README's configuration is meant to be small"
    );
}

/// The reference page and the commented example cannot drift apart: every key the example
/// sets is in `docs/configuration.md`, by its name in backticks (`key` in its table's section,
/// or `table.key`).
#[test]
fn the_configuration_page_names_every_key_of_the_example() {
    let example: toml::Value = toml::from_str(&read(&root().join("config.example.toml")))
        .expect("config.example.toml parses");
    let mut keys = BTreeSet::new();
    key_paths("", &example, &mut keys);
    assert!(keys.len() > 50, "the example sets {} keys", keys.len());
    let page = read(&root().join("docs/configuration.md"));
    let missing: Vec<&String> = keys
        .iter()
        .filter(|path| {
            let key = path.rsplit('.').next().unwrap_or(path);
            !page.contains(&format!("`{path}`")) && !page.contains(&format!("`{key}`"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not name these keys of config.example.toml: {missing:?}"
    );
}

/// `[cluster]` is shown commented out in the example, since a build without the `etcd` feature
/// refuses the section and the example must load in every build. Uncommented, it is still a
/// section the loader takes (whole, with the feature; without it, refused only for the
/// missing feature), it sets every key the section has, and the configuration page names each.
#[test]
fn the_examples_commented_cluster_section_loads_and_is_documented() {
    let example = read(&root().join("config.example.toml"));
    let block: String = example
        .lines()
        .skip_while(|l| l.trim() != "# [cluster]")
        .take_while(|l| l.starts_with("# "))
        .map(|l| format!("{}\n", &l[2..]))
        .collect();
    assert!(
        block.starts_with("[cluster]\n"),
        "config.example.toml shows the section as `# [cluster]`"
    );
    let section: toml::Value = toml::from_str(&block)
        .unwrap_or_else(|e| panic!("the commented [cluster] section: {e}\n{block}"));
    let mut shown = BTreeSet::new();
    key_paths("", &section, &mut shown);

    // Every field of the section, read back from the section itself (all optional ones set).
    let cluster: hashshift_proxy::config::Cluster = section["cluster"]
        .clone()
        .try_into()
        .unwrap_or_else(|e| panic!("the commented [cluster] section: {e}"));
    let mut fields = BTreeSet::new();
    let effective = toml::Value::try_from(&cluster).expect("serializes");
    key_paths("cluster", &effective, &mut fields);
    assert_eq!(shown, fields, "the example's [cluster] sets every key");
    assert!(fields.len() >= 10, "{fields:?}");

    let page = read(&root().join("docs/configuration.md"));
    let missing: Vec<&String> = shown
        .iter()
        .filter(|path| !page.contains(&format!("`{path}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not name these [cluster] keys: {missing:?}"
    );

    let whole = format!("{example}\n{block}");
    let loaded = hashshift_proxy::config::Config::from_toml(&whole);
    if cfg!(feature = "etcd") {
        let config = loaded.unwrap_or_else(|e| panic!("the example with [cluster]: {e}"));
        assert_eq!(config.cluster.map(|c| c.etcd.len()), Some(3));
    } else {
        let e = loaded.expect_err("a build without etcd refuses [cluster]");
        assert!(e.to_string().contains("--features etcd"), "{e}");
    }
}

#[test]
fn the_readme_links_every_page() {
    let readme = read(&root().join("README.md"));
    let linked: BTreeSet<String> = link_targets(&readme)
        .into_iter()
        .map(|t| t.split('#').next().unwrap_or("").to_owned())
        .collect();
    for file in doc_files().into_iter().skip(1) {
        let name = file.file_name().unwrap().to_string_lossy();
        let rel = format!("docs/{name}");
        assert!(linked.contains(&rel), "README.md does not link {rel}");
    }
}

#[test]
fn the_checker_finds_what_it_must() {
    // A broken file link, a broken heading, and links in code that are not links: the checker
    // must tell them apart (so the test above cannot pass by finding nothing).
    let page = root().join("docs").join("architecture.md");
    let text = "# Top\n## A heading, with `code`\n\
                [ok](#a-heading-with-code) [ok](../README.md) [ok](https://example.invalid/x)\n\
                [missing](nowhere.md) [bad anchor](#nowhere) [bad page anchor](../README.md#nowhere)\n\
                `[not a link](nowhere-either.md)`\n```sh\n[not a link](nor-this.md)\n```\n";
    let broken = broken_links(&page, text);
    assert_eq!(broken.len(), 3, "{broken:#?}");
    assert!(
        broken[0].ends_with("nowhere.md (no such file)"),
        "{}",
        broken[0]
    );
    assert!(
        broken[1].ends_with("#nowhere (no such heading)"),
        "{}",
        broken[1]
    );
    assert!(
        broken[2].ends_with("../README.md#nowhere (no such heading)"),
        "{}",
        broken[2]
    );
    assert_eq!(
        slug("A power.json that cannot be used"),
        "a-powerjson-that-cannot-be-used"
    );
    assert_eq!(
        slug("The proxy under load (`hashshift bench`)"),
        "the-proxy-under-load-hashshift-bench"
    );
}
