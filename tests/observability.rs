//! Dashboards and alerts against what rockfeed really exports:
//! - `deploy/grafana/rockfeed.json` queries only metric names that
//!   `/metrics` exports, and covers every family it exports;
//! - `deploy/prometheus/rockfeed.rules.yml` queries only exported names,
//!   passes `promtool check rules`, and its unit tests
//!   (`rockfeed.rules.test.yml`) pass under `promtool test rules`.
//!
//! `/metrics` is scraped from `rockfeed run`'s own wiring under load: MQTT
//! through the WAL, the Parquet archive, enrichment and a bad message, so
//! that every family has had a reason to appear.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

/// Metric names in a PromQL expression: identifiers starting with one of
/// rockfeed's prefixes, histogram series mapped to their family.
fn queried(expr: &str, names: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':') {
            i += 1;
        }
        if i == start {
            i += 1;
            continue;
        }
        let before = start.checked_sub(1).map(|b| bytes[b]);
        let word = &expr[start..i];
        // Not a label value ("…") or a label name (followed by = or inside by (…)).
        if before == Some(b'"') || !(word.starts_with("rockfeed_") || word.starts_with("process_")) {
            continue;
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| word.strip_suffix(s).filter(|f| f.ends_with("_seconds")))
            .unwrap_or(word);
        names.insert(family.to_string());
    }
}

/// Every `expr` in a Grafana dashboard (panels, nested rows, variables).
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, out)),
        _ => {}
    }
}

/// Every `expr:` of the rules file (each on one line, or a `|` block).
fn rule_exprs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        let Some(rest) = l.trim_start().strip_prefix("expr:") else { continue };
        if rest.trim() == "|" {
            let indent = l.len() - l.trim_start().len();
            let mut block = String::new();
            while let Some(n) = lines.peek() {
                if !n.trim().is_empty() && n.len() - n.trim_start().len() <= indent {
                    break;
                }
                block.push_str(n);
                block.push('\n');
                lines.next();
            }
            out.push(block);
        } else {
            out.push(rest.trim().to_string());
        }
    }
    out
}

/// The families `/metrics` exports (its `# TYPE` lines), and the text.
async fn scrape_under_load() -> (BTreeSet<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = common::anonymous_mosquitto(dir.path());
    let listen = common::free_port();
    let vehicles = dir.path().join("vehicles.csv");
    std::fs::write(&vehicles, "vin,fleet\nNOTSEEN,f\n").unwrap();
    let rest = format!(
        r#"
[tables]
dims = ["fleet"]
latest_metrics = ["speed"]
buckets = 8
replication_num = 1
[enrich]
file = "{vehicles}"
[source.mqtt]
host = "127.0.0.1"
port = {port}
client_id = "rockfeed-observability"
topics = ["telemetry/#"]
[archive]
enabled = true
url = "{dir}/archive"
spool_dir = "{dir}/spool"
roll_age = "2s"
roll_idle = "1s"
[telemetry]
listen = "127.0.0.1:{listen}"
"#,
        vehicles = vehicles.display(),
        dir = dir.path().display(),
    );
    let mut cfg = rockfeed::config::Config::parse(&common::config_toml(dir.path(), "observe", 2, &rest)).unwrap();
    let emu = common::emulator_for(&mut cfg).await;
    let app = common::run_app(cfg, &emu).await;
    let fleet = loadgen::fleet::Fleet::new(20, 10, 7, "OBS");
    common::publish_readings(port, fleet, loadgen::payload::Profile::Wide, 2_000, 5_000.0, 1, "observe").await;
    common::publish_v4(
        rumqttc::MqttOptions::new("observe-bad", "127.0.0.1", port),
        vec![("telemetry/bad".into(), "not json".into())],
    )
    .await;
    let settled = app
        .until(Duration::from_secs(60), |s| {
            s.readings_committed.load(Ordering::Relaxed) >= 2_000 && s.rejected.total() >= 1
        })
        .await;
    let (code, body) = loadgen::http::get(&format!("http://127.0.0.1:{listen}/metrics"), None).await.unwrap();
    app.stop().await;
    emu.shutdown().await;
    assert!(settled, "the load never settled");
    assert_eq!(code, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    let families: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    (families, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alerts_query_what_metrics_exports() {
    let (exported, text) = scrape_under_load().await;
    assert!(exported.len() > 40, "{text}");

    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DEPLOY}/grafana/rockfeed.json")).unwrap()).unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dash, &mut exprs);
    let mut on_dashboard = BTreeSet::new();
    exprs.iter().for_each(|e| queried(e, &mut on_dashboard));
    let unknown: Vec<&String> = on_dashboard.difference(&exported).collect();
    assert!(unknown.is_empty(), "the dashboard queries names /metrics does not export: {unknown:?}");
    let missing: Vec<&String> = exported.difference(&on_dashboard).collect();
    assert!(missing.is_empty(), "families /metrics exports that no dashboard panel shows: {missing:?}");
    // Panels are addressable: unique ids.
    let ids: Vec<i64> =
        dash["panels"].as_array().unwrap().iter().map(|p| p["id"].as_i64().expect("every panel has an id")).collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "duplicate panel ids");

    let rules = std::fs::read_to_string(format!("{DEPLOY}/prometheus/rockfeed.rules.yml")).unwrap();
    let exprs = rule_exprs(&rules);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut in_rules = BTreeSet::new();
    exprs.iter().for_each(|e| queried(e, &mut in_rules));
    let unknown: Vec<&String> = in_rules.difference(&exported).collect();
    assert!(unknown.is_empty(), "the alert rules query names /metrics does not export: {unknown:?}");
    for needed in [
        "rockfeed_readings_total",
        "rockfeed_loads_failed_total",
        "rockfeed_txns_lost_total",
        "rockfeed_dead_letter_files_evicted_total",
        "rockfeed_rejected_readings_total",
        "rockfeed_archive_upload_failures_total",
        "rockfeed_archive_spool_max_bytes",
        "rockfeed_wal_max_bytes",
        "rockfeed_stage_latency_seconds",
    ] {
        assert!(in_rules.contains(needed), "no alert on {needed}");
    }
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let mut n = BTreeSet::new();
    queried(
        r#"histogram_quantile(0.99, sum by (le, stage) (rate(rockfeed_stage_latency_seconds_bucket{stage="rockfeed_not_a_metric"}[5m]))) / process_cpu_seconds_total"#,
        &mut n,
    );
    assert_eq!(n.into_iter().collect::<Vec<_>>(), ["process_cpu_seconds_total", "rockfeed_stage_latency_seconds"]);
    let e =
        rule_exprs("  - alert: A\n    expr: |\n      a_b\n        > 1\n    for: 5m\n  - alert: B\n    expr: up == 0\n");
    assert_eq!(e, ["      a_b\n        > 1\n", "up == 0"]);
}

fn promtool(args: &[&str], dir: &Path) {
    let Ok(out) = Command::new("promtool").args(args).current_dir(dir).output() else {
        panic!("promtool is missing: run tests/run.sh (it installs the Debian package prometheus)");
    };
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_check_and_pass_their_unit_tests() {
    let dir = Path::new(DEPLOY).join("prometheus");
    promtool(&["check", "rules", "rockfeed.rules.yml"], &dir);
    promtool(&["test", "rules", "rockfeed.rules.test.yml"], &dir);
}
