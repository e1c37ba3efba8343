//! The import graph between the proxy's top-level modules, checked by a test.
//!
//! The parts of the proxy sit in layers, each naming only parts below it:
//!
//! ```text
//! proxy                                   assembly: starts everything, stops it in reverse
//! web (API, NOC page, metrics exporter)   reads the running proxy
//! control                                 admin socket, power arbitration
//! downstream   upstream                   miners, pools
//! pool_link                               what miners and pools share; what control reads
//! config   http_server                    the configuration (names firmware and gpu sections); the HTTP loop
//! firmware   gpu   pdu                    rig, scheduler and PDU adapters
//! telemetry supervisor time error http_client noise_tcp keyfile sys
//! ```
//!
//! The test walks `src/`, strips comments and string literals, and collects for every file the
//! top-level modules it names (`crate::x`, `use crate::{x, ...}`, a `super::` that climbs to
//! the crate root). It then checks that the graph has no cycle, that miners and pools never
//! name each other (they meet in `pool_link`), that `control` reaches miners and pools only
//! through `pool_link`, that the leaves (`telemetry`, `supervisor`, `time`, `error`) name nothing and that `config` and
//! `pool_link` name only what sits below them. A failure prints each offending file and path.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// Pairs `(from, to)` where `from` must never name `to`, and why.
    const FORBIDDEN: &[(&str, &str, &str)] = &[
        (
            "downstream",
            "upstream",
            "miners meet pools only through pool_link",
        ),
        (
            "upstream",
            "downstream",
            "pools meet miners only through pool_link",
        ),
        (
            "control",
            "downstream",
            "control reaches miners only through pool_link",
        ),
        (
            "control",
            "upstream",
            "control reads miners and pools through pool_link's Fleet",
        ),
        ("pool_link", "downstream", "pool_link is below both sides"),
        ("pool_link", "upstream", "pool_link is below both sides"),
        (
            "control",
            "cluster",
            "power control is below the cluster: it sees ports, a plan store and a Fleet",
        ),
        (
            "downstream",
            "cluster",
            "the share path never waits on etcd",
        ),
        ("upstream", "cluster", "the share path never waits on etcd"),
        (
            "supervisor",
            "control",
            "the supervisor is below what it supervises",
        ),
    ];

    /// Modules that may name only the parts listed (an empty list: a leaf).
    ///
    /// `config` names `firmware` (`FirmwareKind`), `gpu` (`GpuSchedulerConfig`, validated
    /// by the adapter that will run it, so `check-config` refuses what `run` would) and `pdu`
    /// (vendor profiles and SNMP protocol names, checked by the code that uses them): all sit
    /// below `config` and name nothing above it; `pdu` names only `error`.
    const ONLY: &[(&str, &[&str])] = &[
        ("telemetry", &[]),
        ("supervisor", &[]),
        ("time", &[]),
        ("error", &[]),
        ("config", &["firmware", "gpu", "pdu"]),
        ("pdu", &["error"]),
        ("pool_link", &["telemetry", "time"]),
    ];

    /// One place a module names another.
    #[derive(Clone, Debug)]
    struct Use {
        file: String,
        line: usize,
        path: String,
    }

    /// Top-level module → named top-level module → where.
    type Graph = BTreeMap<String, BTreeMap<String, Vec<Use>>>;

    /// `text` with comments, string and char literals blanked out (newlines kept, so line
    /// numbers stay right). Lifetimes are kept: `'a` is not a char literal.
    fn strip(text: &str) -> String {
        let c: Vec<char> = text.chars().collect();
        let mut out = String::with_capacity(text.len());
        let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
        let mut i = 0;
        while i < c.len() {
            let at = |k: usize| c.get(i + k).copied().unwrap_or('\0');
            if at(0) == '/' && at(1) == '/' {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            } else if at(0) == '/' && at(1) == '*' {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        blank(&mut out, c[i]);
                        i += 1;
                    }
                }
            } else if (at(0) == 'r' || (at(0) == 'b' && at(1) == 'r')) && !prev_is_ident(&c, i) && {
                let s = if at(0) == 'b' { 2 } else { 1 };
                let mut k = s;
                while at(k) == '#' {
                    k += 1;
                }
                at(k) == '"'
            } {
                // A raw string: r"..." or r#"..."#, maybe with a b prefix.
                i += if at(0) == 'b' { 2 } else { 1 };
                let mut hashes = 0;
                while c.get(i) == Some(&'#') {
                    hashes += 1;
                    i += 1;
                }
                i += 1; // the opening quote
                while i < c.len() {
                    if c[i] == '"' && (1..=hashes).all(|h| c.get(i + h) == Some(&'#')) {
                        i += 1 + hashes;
                        break;
                    }
                    blank(&mut out, c[i]);
                    i += 1;
                }
            } else if at(0) == '"' {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' {
                        i += 1;
                    }
                    if let Some(&ch) = c.get(i) {
                        blank(&mut out, ch);
                    }
                    i += 1;
                }
                i += 1;
            } else if at(0) == '\'' && (at(1) == '\\' || at(2) == '\'') {
                // A char literal ('x', '\n', '\u{1f}'); a lifetime has no closing quote.
                i += 1;
                while i < c.len() && c[i] != '\'' {
                    if c[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            } else {
                out.push(c[i]);
                i += 1;
            }
        }
        out
    }

    fn prev_is_ident(c: &[char], i: usize) -> bool {
        i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')
    }

    fn is_ident(ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_'
    }

    /// Tokens of stripped code: identifiers, `::`, and single punctuation characters, each
    /// with its line.
    fn tokens(code: &str) -> Vec<(String, usize)> {
        let c: Vec<char> = code.chars().collect();
        let mut out = Vec::new();
        let (mut i, mut line) = (0, 1);
        while i < c.len() {
            let ch = c[i];
            if ch == '\n' {
                line += 1;
                i += 1;
            } else if ch.is_whitespace() {
                i += 1;
            } else if is_ident(ch) || ch == '$' {
                let start = i;
                i += 1;
                while i < c.len() && is_ident(c[i]) {
                    i += 1;
                }
                out.push((c[start..i].iter().collect(), line));
            } else if ch == ':' && c.get(i + 1) == Some(&':') {
                out.push(("::".into(), line));
                i += 2;
            } else {
                out.push((ch.to_string(), line));
                i += 1;
            }
        }
        out
    }

    /// The top-level module names a file's code reaches, with the line and the path as
    /// written. `module` is the file's module path (`["upstream", "manager"]` for
    /// `src/upstream/manager/mod.rs`); inline `mod x { ... }` blocks deepen it.
    fn named(code: &str, module: &[String]) -> Vec<(String, usize, String)> {
        let t = tokens(&strip(code));
        let tok = |k: usize| t.get(k).map_or("", |(s, _)| s.as_str());
        let mut out = Vec::new();
        // Inline modules open at a brace depth; popped when that brace closes.
        let mut inline: Vec<usize> = Vec::new();
        let mut depth = 0usize;
        let mut pending_mod = false;
        let mut i = 0;
        while i < t.len() {
            let line = t[i].1;
            match tok(i) {
                "{" => {
                    depth += 1;
                    if pending_mod {
                        inline.push(depth);
                        pending_mod = false;
                    }
                }
                "}" => {
                    if inline.last() == Some(&depth) {
                        inline.pop();
                    }
                    depth = depth.saturating_sub(1);
                }
                ";" => pending_mod = false,
                "mod" if tok(i + 2) == "{" => pending_mod = true,
                "crate" | "$crate" if tok(i + 1) == "::" => {
                    if tok(i + 2) == "{" {
                        // use crate::{a::B, b, c::{D, E}}: the first name of each item.
                        let mut k = i + 3;
                        let mut level = 0;
                        let mut first = true;
                        while k < t.len() {
                            match tok(k) {
                                "{" => level += 1,
                                "}" if level == 0 => break,
                                "}" => level -= 1,
                                "," if level == 0 => first = true,
                                name if first && is_ident(name.chars().next().unwrap_or(' ')) => {
                                    if name != "self" {
                                        out.push((
                                            name.to_owned(),
                                            t[k].1,
                                            format!("crate::{{{name}, ..}}"),
                                        ));
                                    }
                                    first = false;
                                }
                                _ => first = false,
                            }
                            k += 1;
                        }
                    } else {
                        let name = tok(i + 2).to_owned();
                        out.push((
                            name.clone(),
                            line,
                            format!("crate::{name}{}", rest(&t, i + 3)),
                        ));
                    }
                }
                "super" if i == 0 || tok(i - 1) != "::" => {
                    // Count the supers: `super::super::x` climbs two levels.
                    let mut k = i;
                    let mut ups = 0;
                    while tok(k) == "super" && tok(k + 1) == "::" {
                        ups += 1;
                        k += 2;
                    }
                    let level = module.len() + inline.len();
                    if ups == level && is_ident(tok(k).chars().next().unwrap_or(' ')) {
                        let name = tok(k).to_owned();
                        let path = format!("{}{name}{}", "super::".repeat(ups), rest(&t, k + 1));
                        out.push((name, line, path));
                    }
                }
                _ => {}
            }
            i += 1;
        }
        out
    }

    /// The rest of a path after its first segment, for messages (`::b::C`).
    fn rest(t: &[(String, usize)], mut k: usize) -> String {
        let mut s = String::new();
        while t.get(k).is_some_and(|(x, _)| x == "::")
            && t.get(k + 1).is_some_and(|(x, _)| x.chars().all(is_ident))
        {
            s.push_str("::");
            s.push_str(&t[k + 1].0);
            k += 2;
        }
        s
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// The module path of a file under `src` (`src/a/b.rs` and `src/a/b/mod.rs` → `[a, b]`).
    fn module_of(src: &Path, file: &Path) -> Vec<String> {
        let rel = file.strip_prefix(src).unwrap_or(file);
        let mut parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        parts
    }

    /// The graph of `src`: every top-level module and what it names.
    fn graph(src: &Path) -> Graph {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        files.sort();
        let tops: BTreeSet<String> = files
            .iter()
            .filter_map(|f| module_of(src, f).first().cloned())
            .filter(|m| m != "lib" && m != "main")
            .collect();
        let mut g: Graph = tops.iter().map(|m| (m.clone(), BTreeMap::new())).collect();
        for f in &files {
            let module = module_of(src, f);
            let Some(top) = module.first().filter(|m| tops.contains(*m)) else {
                continue;
            };
            let code = std::fs::read_to_string(f).unwrap_or_default();
            for (name, line, path) in named(&code, &module) {
                if &name == top || !tops.contains(&name) {
                    continue;
                }
                let at = Use {
                    file: f.strip_prefix(src).unwrap_or(f).display().to_string(),
                    line,
                    path,
                };
                if let Some(edges) = g.get_mut(top) {
                    edges.entry(name).or_default().push(at);
                }
            }
        }
        g
    }

    /// A cycle in the graph, as the list of modules along it, if there is one.
    fn find_cycle(g: &Graph) -> Option<Vec<String>> {
        fn visit(
            g: &Graph,
            m: &str,
            stack: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = stack.iter().position(|s| s == m) {
                let mut cycle = stack[at..].to_vec();
                cycle.push(m.to_owned());
                return Some(cycle);
            }
            if done.contains(m) {
                return None;
            }
            stack.push(m.to_owned());
            for next in g.get(m).into_iter().flat_map(|e| e.keys()) {
                if let Some(c) = visit(g, next, stack, done) {
                    return Some(c);
                }
            }
            stack.pop();
            done.insert(m.to_owned());
            None
        }
        let mut done = BTreeSet::new();
        g.keys()
            .find_map(|m| visit(g, m, &mut Vec::new(), &mut done))
    }

    /// Where `from` names `to`, one line per place.
    fn places(g: &Graph, from: &str, to: &str) -> String {
        g.get(from)
            .and_then(|e| e.get(to))
            .into_iter()
            .flatten()
            .map(|u| format!("    src/{}:{}: {}\n", u.file, u.line, u.path))
            .collect()
    }

    /// Every broken rule, with the places that break it; empty when the layers hold.
    fn violations(g: &Graph) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(cycle) = find_cycle(g) {
            let mut msg = format!("import cycle: {}\n", cycle.join(" -> "));
            for pair in cycle.windows(2) {
                msg += &format!(
                    "  {} -> {}:\n{}",
                    pair[0],
                    pair[1],
                    places(g, &pair[0], &pair[1])
                );
            }
            out.push(msg);
        }
        for (from, to, why) in FORBIDDEN {
            let p = places(g, from, to);
            if !p.is_empty() {
                out.push(format!("{from} names {to} ({why}):\n{p}"));
            }
        }
        for (from, allowed) in ONLY {
            for to in g.get(*from).into_iter().flat_map(|e| e.keys()) {
                if !allowed.contains(&to.as_str()) {
                    let only = if allowed.is_empty() {
                        "is a leaf".to_owned()
                    } else {
                        format!("may name only {}", allowed.join(", "))
                    };
                    out.push(format!(
                        "{from} {only} but names {to}:\n{}",
                        places(g, from, to)
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn the_parts_of_the_proxy_import_no_cycle_and_keep_their_layers() {
        let src = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
        let g = graph(src);
        for m in [
            "downstream",
            "upstream",
            "pool_link",
            "telemetry",
            "control",
        ] {
            assert!(g.contains_key(m), "no module {m} under {}", src.display());
        }
        let broken = violations(&g);
        assert!(
            broken.is_empty(),
            "the layers are broken:\n{}",
            broken.join("\n")
        );
    }

    /// Builds a graph from in-memory files (`path`, code).
    fn graph_of(files: &[(&str, &str)]) -> Graph {
        let dir = std::env::temp_dir().join(format!(
            "hashshift-layers-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, code) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap_or(&dir)).expect("dir");
            std::fs::write(&p, code).expect("write");
        }
        let g = graph(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        g
    }

    fn edges(g: &Graph, from: &str) -> Vec<String> {
        g.get(from)
            .map(|e| e.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn comments_strings_and_chars_name_nothing() {
        let g = graph_of(&[
            (
                "telemetry.rs",
                "//! See [`crate::control`].\n/// [`crate::upstream`]\n/* crate::web /* nested */ */\n\
                 fn f<'a>(x: &'a str) -> char { let _ = \"crate::proxy\"; let _ = r#\"crate::web\"#; '\"' }\n",
            ),
            ("control.rs", ""),
            ("upstream.rs", ""),
            ("web.rs", ""),
            ("proxy.rs", ""),
        ]);
        assert_eq!(edges(&g, "telemetry"), Vec::<String>::new());
        assert!(violations(&g).is_empty());
    }

    #[test]
    fn every_way_of_naming_a_module_is_seen() {
        let g = graph_of(&[
            ("a.rs", "use crate::b::X;\nfn f() { crate::c::g(); }\n"),
            (
                "b/mod.rs",
                "use crate::{c::Y, d, self};\nmod inner { use super::super::e::Z; }\n",
            ),
            (
                "b/deep.rs",
                "use super::super::f::W;\nuse super::sibling;\n",
            ),
            (
                "c.rs",
                "use super::d::V;\n#[cfg(test)]\nmod tests { use super::*; use super::e; }\n",
            ),
            ("d.rs", "macro_rules! m { () => { $crate::e::f() } }\n"),
            ("e.rs", ""),
            ("f.rs", ""),
            ("sibling.rs", ""),
        ]);
        assert_eq!(edges(&g, "a"), ["b", "c"]);
        assert_eq!(edges(&g, "b"), ["c", "d", "e", "f"]);
        assert_eq!(
            edges(&g, "c"),
            ["d"],
            "super inside an inline mod stays in c"
        );
        assert_eq!(edges(&g, "d"), ["e"]);
    }

    #[test]
    fn a_cycle_and_a_forbidden_edge_are_reported_with_their_places() {
        let g = graph_of(&[
            ("downstream.rs", "use crate::upstream::Job;\n"),
            ("upstream.rs", "\n\nuse crate::downstream::ConnId;\n"),
            ("telemetry.rs", "use crate::config::Limits;\n"),
            ("config.rs", ""),
        ]);
        let broken = violations(&g).join("\n");
        assert!(
            broken.contains("import cycle: downstream -> upstream -> downstream"),
            "{broken}"
        );
        assert!(
            broken.contains("src/upstream.rs:3: crate::downstream::ConnId"),
            "{broken}"
        );
        assert!(broken.contains("downstream names upstream"), "{broken}");
        assert!(
            broken.contains("telemetry is a leaf but names config"),
            "{broken}"
        );
        assert!(
            broken.contains("src/telemetry.rs:1: crate::config::Limits"),
            "{broken}"
        );
        // A forbidden edge that makes no cycle is still reported.
        let g = graph_of(&[
            ("control.rs", "use crate::downstream::listener::ConnId;\n"),
            ("downstream.rs", ""),
            ("pool_link.rs", "use crate::{telemetry::X, upstream};\n"),
            ("telemetry.rs", ""),
            ("upstream.rs", ""),
        ]);
        let broken = violations(&g).join("\n");
        assert!(!broken.contains("cycle"), "{broken}");
        assert!(
            broken.contains(
                "control names downstream (control reaches miners only through pool_link)"
            ),
            "{broken}"
        );
        assert!(broken.contains("pool_link names upstream"), "{broken}");
        assert!(
            broken.contains("pool_link may name only telemetry, time but names upstream"),
            "{broken}"
        );
    }
}
