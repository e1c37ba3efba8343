//! The Grafana dashboard: it queries only metrics the proxy exports, and every query is valid
//! PromQL.

use super::*;

fn dashboard() -> Value {
    serde_json::from_str(&read("docker/grafana/dashboards/hashshift.json"))
        .expect("the dashboard is JSON")
}

#[test]
fn dashboard_covers_the_metrics_contract() {
    let dash = dashboard();
    let ds = yaml("docker/grafana/provisioning/datasources/prometheus.yml");
    let uid = ds["datasources"][0]["uid"].as_str().unwrap();
    let panels = dash["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        // No two panels cover the same grid cell.
        let g = &p["gridPos"];
        let [x, y, w, h] = [&g["x"], &g["y"], &g["w"], &g["h"]].map(|v| v.as_u64().unwrap());
        assert!(x + w <= 24, "{} fits the grid", p["title"]);
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "{} overlaps another panel",
                    p["title"]
                );
            }
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], uid,
            "{} uses the provisioned datasource",
            p["title"]
        );
        let targets = p["targets"].as_array().filter(|t| !t.is_empty());
        for t in targets.unwrap_or_else(|| panic!("{} has no query", p["title"])) {
            let expr = t["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(
                !names.is_empty(),
                "{}: {expr} queries no hashshift_ metric",
                p["title"]
            );
            used.extend(names);
        }
    }
    let used: BTreeSet<&str> = used
        .iter()
        .map(|n| n.strip_suffix("_bucket").unwrap_or(n))
        .collect();
    // Every metric the dashboard queries is one the proxy exports (its catalogue).
    let exported: BTreeSet<&str> = hashshift_proxy::web::metrics::catalogue::ALL
        .iter()
        .map(|spec| spec.name)
        .collect();
    let unknown: Vec<&&str> = used.iter().filter(|n| !exported.contains(**n)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the proxy does not export: {unknown:?}"
    );
    assert!(used.len() >= 12, "the dashboard covers the farm: {used:?}");

    // The provider loads the folder compose mounts the dashboards into.
    let provider = yaml("docker/grafana/provisioning/dashboards/hashshift.yml");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let compose = compose();
    let grafana = service(&compose, "grafana");
    assert!(strings(&grafana["volumes"]).contains(&format!("./grafana/dashboards:{path}:ro")));
}

/// Every `hashshift_...` identifier in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("hashshift_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool parses PromQL in recording rules: one rule per panel query, Grafana's
    // variables replaced by what they expand to.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for p in dashboard()["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$pool", ".*");
            rules.push_str(&format!(
                "      - record: panel_{}_{}\n        expr: {}\n",
                p["id"],
                t["refId"].as_str().unwrap(),
                serde_json::to_string(&expr).unwrap()
            ));
        }
    }
    let file = std::env::temp_dir().join(format!("hashshift-dashboard-{}.yml", std::process::id()));
    std::fs::write(&file, rules).unwrap();
    let out = tool("promtool", &["check", "rules", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    if let Some(out) = out {
        assert_ok("promtool check rules (dashboard queries)", &out);
    }
}
