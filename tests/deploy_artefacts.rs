//! The monitoring artefacts of `deploy/` checked by the real tools: every query of the
//! Grafana dashboard parses in Prometheus (promtool checks each as a recording rule,
//! with Grafana's variables given values), and every recording rule the dashboard
//! reads is defined in `deploy/prometheus/callbridge.rules.yml`. (The rules' own
//! checks and unit tests run in scripts/test.sh; that the metrics they and the
//! dashboard name are exported is `metrics::tests` in the library.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// Every `expr` of every panel target.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("grafana/callbridge.json")).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn every_dashboard_query_parses_in_prometheus() {
    let queries = dashboard_queries();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        let q = q
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        assert!(!q.contains('$'), "an unknown Grafana variable in {q}");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&q).expect("quoted")
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dashboard.rules.yml");
    std::fs::write(&file, &rules).expect("rules");
    let promtool = Path::new("/usr/bin/promtool");
    assert!(
        promtool.is_file(),
        "promtool not found: apt-get install prometheus (scripts/deps.sh does for the tests)"
    );
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool refused a dashboard query:\n{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn recording_rules_the_dashboard_reads_are_defined() {
    let rules = std::fs::read_to_string(deploy("prometheus/callbridge.rules.yml")).expect("rules");
    for q in dashboard_queries() {
        for word in q.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if word.starts_with("callbridge:") {
                assert!(
                    rules.contains(&format!("record: {word}\n")),
                    "the dashboard reads {word}, which no rule records"
                );
            }
        }
    }
}
