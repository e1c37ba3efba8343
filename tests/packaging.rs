//! Packaging checks that need no Docker engine (none runs on our machines): `docker/`,
//! `.dockerignore` and `deploy/hashshift.service` are read and cross-checked against each other,
//! the README and the proxy's own config loader.
//!
//! What holds after these pass: the compose stack's config loads as `hashshift run` loads it;
//! every port the proxy listens on is published or exposed, and nothing else is; Prometheus
//! scrapes the compose service on the metrics port; every dashboard query is valid PromQL over
//! `hashshift_` metrics of the agreed names; the Dockerfile builds with the README's command
//! (plus `--features etcd`), covers every workspace member and bench target, runs as non-root
//! and checks health the way compose does; the `cluster` profile's two instances are one site
//! on the profile's etcd, each wired like the single one, and leave the default stack as it
//! was; the systemd unit is hardened and its directories are the config's.
//! External linters (`promtool`, `hadolint`, `docker compose`/`docker-compose`,
//! `systemd-analyze`) run when installed; `HASHSHIFT_PACKAGING_TOOLS=1` makes a missing one a
//! failure instead of a skip.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use hashshift_proxy::config::Config;
use serde_json::Value;

#[path = "packaging/dashboard.rs"]
mod dashboard;
#[path = "packaging/systemd.rs"]
mod systemd;

/// The build command of the README.
const BUILD: &str = "cargo build --release --locked";
/// The image's build: the README's, with the cluster feature (docs/cluster.md), so one image
/// runs a single instance or one of a site's several.
const IMAGE_BUILD: &str = "cargo build --release --locked --features etcd";
/// The services of the compose profile `cluster`: one etcd member and two instances.
const CLUSTER_SERVICES: [&str; 3] = ["etcd", "hashshift-a", "hashshift-b"];
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Value {
    serde_norway::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn compose() -> Value {
    yaml("docker/compose.yml")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose
        .pointer(&format!("/services/{name}"))
        .unwrap_or_else(|| panic!("compose.yml has no service {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| match s {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The ports the stack's proxy listens on, from the raw TOML (so `[metrics]` is read even
/// before the config loader knows it): (downstream listeners + HTTP API, metrics).
fn stack_ports() -> (BTreeSet<u16>, u16) {
    config_ports("docker/hashshift.toml")
}

/// The ports the proxy configured by `rel` listens on: (downstream listeners + HTTP API,
/// metrics).
fn config_ports(rel: &str) -> (BTreeSet<u16>, u16) {
    let raw: toml::Value = toml::from_str(&read(rel)).unwrap();
    let port = |v: &toml::Value| -> u16 {
        v.as_str()
            .and_then(|s| s.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.port())
            .unwrap_or_else(|| panic!("not an ADDR:PORT: {v}"))
    };
    let mut served: BTreeSet<u16> = raw["downstream"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| port(&d["listen"]))
        .collect();
    served.insert(port(&raw["http"]["listen"]));
    (served, port(&raw["metrics"]["listen"]))
}

/// The stack's config loaded as `hashshift run` loads it. Until the `[metrics]` section is
/// merged (config.example.toml, which a test loads, documents every known section), the table
/// is cut out first, so this test stays meaningful for everything else meanwhile.
fn stack_config() -> Config {
    let path = root().join("docker/hashshift.toml");
    if read("config.example.toml")
        .lines()
        .any(|l| l.trim() == "[metrics]")
    {
        return Config::load(&path).unwrap_or_else(|e| panic!("docker/hashshift.toml: {e}"));
    }
    eprintln!("note: the config has no [metrics] section yet; loading the stack config without it");
    let mut skipping = false;
    let text: String = read("docker/hashshift.toml")
        .lines()
        .filter(|l| {
            let t = l.trim();
            if t.starts_with('[') {
                skipping = t == "[metrics]";
            }
            !skipping
        })
        .map(|l| format!("{l}\n"))
        .collect();
    Config::from_toml(&text).unwrap_or_else(|e| panic!("docker/hashshift.toml: {e}"))
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("docker/Dockerfile").lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (instr, args) = current.split_once(' ').unwrap_or((current.as_str(), ""));
        out.push((instr.to_uppercase(), args.trim().to_owned()));
        current.clear();
    }
    out
}

fn instructions(name: &str) -> Vec<String> {
    dockerfile()
        .into_iter()
        .filter(|(i, _)| i == name)
        .map(|(_, a)| a)
        .collect()
}

/// The exec-form array at the end of an instruction's arguments (`CMD [..]`).
fn exec_form(args: &str) -> Vec<String> {
    let start = args.find('[').expect("exec form");
    serde_json::from_str(&args[start..]).expect("exec form is a JSON array")
}

#[test]
fn stack_config_loads_as_the_proxy_loads_it() {
    let config = stack_config();
    let admin = config
        .admin
        .as_ref()
        .expect("[admin]: the healthcheck needs the socket");
    assert_eq!(admin.socket, Path::new("/run/hashshift/admin.sock"));
    assert_eq!(
        admin.state_dir.as_deref(),
        Some(Path::new("/var/lib/hashshift"))
    );
    assert!(config.http.is_some() && config.power.is_some());
    // Inside a container every listener must bind all interfaces to be reachable at all.
    for d in &config.downstream {
        assert!(
            d.listen.ip().is_unspecified(),
            "{} binds one address",
            d.listen
        );
    }
}

#[test]
fn compose_services_ports_volumes_and_healthcheck() {
    let compose = compose();
    let hs = service(&compose, "hashshift");
    for name in ["prometheus", "grafana"] {
        let s = service(&compose, name);
        assert!(s["image"].is_string(), "{name} runs a published image");
        assert!(
            s.pointer("/healthcheck/test").is_some(),
            "{name} has a healthcheck"
        );
    }
    for (name, s) in compose["services"].as_object().unwrap() {
        assert!(s["restart"].is_string(), "{name} has a restart policy");
    }

    // Built from the repository root with the Dockerfile beside this file.
    let context = root()
        .join("docker")
        .join(hs["build"]["context"].as_str().unwrap());
    assert!(
        context.join("Cargo.toml").is_file(),
        "build context is the repository root"
    );
    let dockerfile = hs["build"]["dockerfile"].as_str().unwrap();
    assert!(context.join(dockerfile).is_file());

    // Published (or, for metrics, exposed to the compose network only): exactly what the proxy serves.
    let (served, metrics) = stack_ports();
    let published = container_ports(hs);
    assert_eq!(
        published, served,
        "published container ports = the stack's listeners"
    );
    let exposed: BTreeSet<u16> = strings(&hs["expose"])
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(exposed, BTreeSet::from([metrics]));

    // The config where the image's CMD reads it; state in a declared named volume at state_dir.
    let volumes = strings(&hs["volumes"]);
    let cmd = exec_form(&instructions("CMD")[0]);
    let config_path = &cmd[cmd.iter().position(|a| a == "--config").unwrap() + 1];
    assert!(
        volumes.contains(&format!("./hashshift.toml:{config_path}:ro")),
        "config mounted read-only at {config_path}: {volumes:?}"
    );
    let state = volumes
        .iter()
        .find(|v| v.ends_with(":/var/lib/hashshift"))
        .expect("a volume at state_dir");
    let declared = compose["volumes"].as_object().expect("top-level volumes");
    for s in compose["services"].as_object().unwrap().values() {
        for v in strings(&s["volumes"]) {
            let source = v.split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(
                    root().join("docker").join(source).exists(),
                    "{source} exists"
                );
            } else {
                assert!(declared.contains_key(source), "volume {source} is declared");
            }
        }
    }
    assert!(
        !state.starts_with('.'),
        "state is a named volume, not a bind mount"
    );

    // Read-only root: the socket directory is a tmpfs owned by the image's user.
    assert_eq!(hs["read_only"], Value::Bool(true));
    let user = instructions("USER").pop().unwrap();
    let uid = user.split(':').next().unwrap();
    let tmpfs = strings(&hs["tmpfs"]);
    assert!(
        tmpfs
            .iter()
            .any(|t| t.starts_with("/run/hashshift:") && t.contains(&format!("uid={uid}"))),
        "/run/hashshift is a tmpfs owned by {uid}: {tmpfs:?}"
    );

    // The same health probe as the image's.
    let probe = exec_form(&instructions("HEALTHCHECK")[0]);
    let mut expected = vec!["CMD".to_owned()];
    expected.extend(probe);
    assert_eq!(strings(&hs["healthcheck"]["test"]), expected);
}

/// The container side of a service's published ports (`"127.0.0.1:8080:8080"` → 8080).
fn container_ports(service: &Value) -> BTreeSet<u16> {
    strings(&service["ports"])
        .iter()
        .map(|p| {
            p.rsplit(':')
                .next()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

/// The host side of a service's published ports (`"127.0.0.1:8081:8080"` → 8081).
fn host_ports(service: &Value) -> Vec<u16> {
    strings(&service["ports"])
        .iter()
        .map(|p| {
            let parts: Vec<&str> = p.split(':').collect();
            parts[parts.len() - 2].parse().unwrap()
        })
        .collect()
}

#[test]
fn the_cluster_profile_is_two_instances_of_one_site() {
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    // The default stack is untouched: its services have no profile, the cluster's all have it.
    for (name, s) in services {
        if CLUSTER_SERVICES.contains(&name.as_str()) {
            assert_eq!(
                strings(&s["profiles"]),
                vec!["cluster"],
                "{name}'s profiles"
            );
        } else {
            assert!(
                s.get("profiles").is_none(),
                "{name} must stay in the default stack"
            );
        }
    }
    let etcd = service(&compose, "etcd");
    let image = etcd["image"].as_str().unwrap();
    let (repo, tag) = image
        .rsplit_once(':')
        .expect("the etcd image is pinned by tag");
    assert!(
        ["gcr.io/etcd-development/etcd", "quay.io/coreos/etcd"].contains(&repo)
            && tag.starts_with("v3.5."),
        "an official etcd 3.5 image: {image}"
    );
    assert!(etcd.pointer("/healthcheck/test").is_some());
    assert!(etcd.get("ports").is_none(), "etcd is not published");
    let etcd_exposed = strings(&etcd["expose"]);

    let single = service(&compose, "hashshift");
    let cmd = exec_form(&instructions("CMD")[0]);
    let config_path = &cmd[cmd.iter().position(|a| a == "--config").unwrap() + 1];
    let probe = exec_form(&instructions("HEALTHCHECK")[0]);
    let mut hosts: Vec<u16> = host_ports(single);
    let mut raws = Vec::new();
    let mut state_volumes = BTreeSet::from(["hashshift-state".to_owned()]);
    for name in ["hashshift-a", "hashshift-b"] {
        let s = service(&compose, name);
        let rel = format!("docker/{name}.toml");
        // The same image as the single instance, wired the same way.
        assert_eq!(s["image"], single["image"], "{name} runs the stack's image");
        for key in [
            "read_only",
            "cap_drop",
            "security_opt",
            "tmpfs",
            "ulimits",
            "restart",
        ] {
            assert_eq!(
                s[key], single[key],
                "{name}: {key} as the single instance's"
            );
        }
        let mut expected = vec!["CMD".to_owned()];
        expected.extend(probe.clone());
        assert_eq!(
            strings(&s["healthcheck"]["test"]),
            expected,
            "{name} healthcheck"
        );
        let volumes = strings(&s["volumes"]);
        assert!(
            volumes.contains(&format!("./{name}.toml:{config_path}:ro")),
            "{name}: its own config at {config_path}: {volumes:?}"
        );
        let state = volumes
            .iter()
            .find_map(|v| v.strip_suffix(":/var/lib/hashshift"))
            .unwrap_or_else(|| panic!("{name}: a volume at state_dir"));
        assert!(
            state_volumes.insert(state.to_owned()),
            "{name}: a state volume of its own, not {state}"
        );
        assert!(strings(&s["depends_on"]).contains(&"etcd".to_owned()));
        // Published (and exposed): exactly what its config serves.
        let (served, metrics) = config_ports(&rel);
        assert_eq!(container_ports(s), served, "{name}: published = listeners");
        assert_eq!(strings(&s["expose"]), vec![metrics.to_string()]);
        hosts.extend(host_ports(s));

        // Its config: [cluster] on the profile's etcd, named after the service.
        let raw: toml::Value = toml::from_str(&read(&rel)).unwrap();
        let cluster = &raw["cluster"];
        assert_eq!(cluster["instance"].as_str(), Some(name), "{rel}: instance");
        for endpoint in cluster["etcd"].as_array().expect("cluster.etcd") {
            let url = endpoint.as_str().unwrap();
            let (host, port) = url
                .strip_prefix("http://")
                .and_then(|r| r.split_once(':'))
                .unwrap_or_else(|| panic!("{rel}: {url}"));
            assert!(
                CLUSTER_SERVICES.contains(&host) && host != name,
                "{rel}: {url} names a service of the profile"
            );
            assert!(
                etcd_exposed.contains(&port.to_owned()),
                "etcd exposes {port}"
            );
        }
        raws.push(raw);
    }
    // Two instances may run beside the default stack without fighting over host ports.
    let distinct: BTreeSet<u16> = hosts.iter().copied().collect();
    assert_eq!(distinct.len(), hosts.len(), "host ports collide: {hosts:?}");
    // One site: the two configs differ only in the instance's name.
    for raw in &mut raws {
        raw["cluster"].as_table_mut().unwrap().remove("instance");
    }
    assert_eq!(
        raws[0], raws[1],
        "hashshift-a.toml and -b.toml differ beyond `instance`"
    );

    // Each loads as `hashshift run` (and `check-config`) loads it. Without the `etcd` feature
    // the loader refuses [cluster] only for the feature (everything else checked first), so the
    // rest is loaded without the section; CI loads them whole in its `--features etcd` run.
    for name in ["hashshift-a", "hashshift-b"] {
        let rel = format!("docker/{name}.toml");
        let loaded = Config::load(&root().join(&rel));
        if cfg!(feature = "etcd") {
            let config = loaded.unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert_eq!(config.cluster.map(|c| c.instance), Some(name.to_owned()));
        } else {
            let e = loaded.expect_err("a build without etcd refuses [cluster]");
            assert!(e.to_string().contains("--features etcd"), "{rel}: {e}");
            let mut raw: toml::Value = toml::from_str(&read(&rel)).unwrap();
            raw.as_table_mut().unwrap().remove("cluster");
            let config = Config::from_toml(&toml::to_string(&raw).unwrap())
                .unwrap_or_else(|e| panic!("{rel} without [cluster]: {e}"));
            assert!(config.power.is_some() && config.admin.is_some());
        }
    }
}

#[test]
fn prometheus_scrapes_the_hashshift_service() {
    let prom = yaml("docker/prometheus.yml");
    let (_, metrics) = stack_ports();
    let jobs = prom["scrape_configs"].as_array().unwrap();
    let job = jobs
        .iter()
        .find(|j| j["job_name"] == "hashshift")
        .expect("a hashshift job");
    assert_eq!(job["metrics_path"], "/metrics");
    let targets = strings(&job["static_configs"][0]["targets"]);
    assert_eq!(targets, vec![format!("hashshift:{metrics}")]);

    let compose = compose();
    service(&compose, "hashshift");
    let p = service(&compose, "prometheus");
    let config_flag = strings(&p["command"])
        .into_iter()
        .find_map(|a| a.strip_prefix("--config.file=").map(str::to_owned))
        .expect("--config.file");
    assert!(strings(&p["volumes"]).contains(&format!("./prometheus.yml:{config_flag}:ro")));
    // Grafana's datasource is this Prometheus, by service name and port.
    let ds = yaml("docker/grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(ds["datasources"][0]["url"], "http://prometheus:9090");

    if let Some(out) = tool("promtool", &["check", "config", "docker/prometheus.yml"]) {
        assert_ok("promtool check config", &out);
    }
}

#[test]
fn dockerfile_builds_like_the_readme() {
    // The README's build commands, all of them, are the one the image uses.
    let readme = read("README.md");
    let readme_builds: Vec<&str> = readme
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("cargo build"))
        .collect();
    assert!(!readme_builds.is_empty(), "the README shows how to build");
    for l in &readme_builds {
        let cmd = l.split('#').next().unwrap().trim();
        assert!(
            cmd == BUILD || cmd == IMAGE_BUILD,
            "README build command: {cmd}"
        );
    }
    let runs = instructions("RUN").join(" && ");
    let builds: Vec<&str> = runs
        .split("&&")
        .map(str::trim)
        .filter(|c| c.contains("cargo build"))
        .collect();
    assert!(!builds.is_empty());
    for b in builds {
        assert_eq!(b, IMAGE_BUILD, "Dockerfile build command");
    }
    // etcd-client's build needs protoc: the builder installs it before the first build.
    let first_build = runs.find(IMAGE_BUILD).unwrap();
    assert!(
        runs[..first_build].contains("install -y --no-install-recommends protobuf-compiler"),
        "the builder installs protoc before building: {runs}"
    );
    // COPY keeps the context's timestamps, which may be older than the stub build: without a
    // touch cargo keeps the stub crates and the image ships `fn main() {}` (checked by hand).
    let real_build = instructions("RUN").pop().unwrap();
    assert!(
        real_build.contains("touch") && real_build.contains(IMAGE_BUILD),
        "the sources are touched before the real build: {real_build}"
    );

    // The builder's Rust is the workspace's minimum.
    let manifest: toml::Value = toml::from_str(&read("Cargo.toml")).unwrap();
    let msrv = manifest["workspace"]["package"]["rust-version"]
        .as_str()
        .unwrap();
    assert!(instructions("ARG").contains(&format!("RUST_VERSION={msrv}")));

    // Multi-stage; the runtime stage is neither the Rust image nor root.
    let froms = instructions("FROM");
    assert!(froms.len() >= 2 && !froms.last().unwrap().contains("rust:"));
    let user = instructions("USER").pop().expect("USER");
    assert!(!["0", "root"].contains(&user.split(':').next().unwrap()));

    // Every workspace member is copied, every bench target has a stub in the dependency layer
    // (cargo refuses a manifest whose declared targets are missing).
    let copies = instructions("COPY").join("\n");
    let df = read("docker/Dockerfile");
    for member in manifest["workspace"]["members"].as_array().unwrap() {
        let m = member.as_str().unwrap();
        if m != "." {
            assert!(
                copies.contains(&format!("{m}/Cargo.toml")),
                "{m} manifest copied"
            );
            assert!(
                copies.lines().any(|c| c.starts_with(&format!("{m} "))),
                "{m} copied"
            );
        }
    }
    for member in manifest["workspace"]["members"].as_array().unwrap() {
        let dir = match member.as_str().unwrap() {
            "." => String::new(),
            m => format!("{m}/"),
        };
        let m: toml::Value = toml::from_str(&read(&format!("{dir}Cargo.toml"))).unwrap();
        for bench in m
            .get("bench")
            .and_then(|b| b.as_array())
            .into_iter()
            .flatten()
        {
            let stub = format!("{dir}benches/{}.rs", bench["name"].as_str().unwrap());
            assert!(df.contains(&stub), "dependency layer stubs {stub}");
        }
    }

    // What the image copies is not excluded from the build context.
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for copy in instructions("COPY")
        .iter()
        .filter(|c| !c.starts_with("--from"))
    {
        let words: Vec<&str> = copy.split_whitespace().collect();
        for src in &words[..words.len() - 1] {
            assert!(
                !ignored.iter().any(|i| i == src),
                "{src} is in .dockerignore"
            );
        }
    }

    // Every port the stack serves is declared.
    let (served, metrics) = stack_ports();
    let exposed: BTreeSet<u16> = instructions("EXPOSE")
        .join(" ")
        .split_whitespace()
        .map(|p| p.split('/').next().unwrap().parse().unwrap())
        .collect();
    assert!(served.iter().chain([&metrics]).all(|p| exposed.contains(p)));
}

#[test]
fn hadolint_accepts_the_dockerfile() {
    if let Some(out) = tool("hadolint", &["docker/Dockerfile"]) {
        assert_ok("hadolint", &out);
    }
}

#[test]
fn compose_validates_the_file() {
    let args = ["-f", "docker/compose.yml", "config", "-q"];
    // The Compose v2 plugin if the docker CLI has it, else Compose v1 (Debian's docker-compose).
    let plugin = on_path("docker")
        && run(Command::new("docker").args(["compose", "version"]))
            .status
            .success();
    let out = if plugin {
        Some(run(Command::new("docker")
            .arg("compose")
            .args(args)
            .current_dir(root())))
    } else {
        tool("docker-compose", &args)
    };
    if let Some(out) = out {
        assert_ok("docker compose config", &out);
    }
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// Runs an external checker from the repository root, or `None` (with a note) when it is not
/// installed; `HASHSHIFT_PACKAGING_TOOLS=1` turns that into a failure.
fn tool(name: &str, args: &[&str]) -> Option<Output> {
    if !on_path(name) {
        assert!(
            std::env::var("HASHSHIFT_PACKAGING_TOOLS").as_deref() != Ok("1"),
            "{name} is not installed and HASHSHIFT_PACKAGING_TOOLS=1"
        );
        eprintln!("skipped: {name} is not installed");
        return None;
    }
    Some(run(Command::new(name).args(args).current_dir(root())))
}

/// Runs a command to completion within 120 s (killed and failed beyond).
fn run(cmd: &mut Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{cmd:?} did not finish within 120 s");
        }
    }
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
