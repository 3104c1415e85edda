//! Hostile input through `rockfeed run`'s wiring, from a real mosquitto into
//! the emulator: junk metric names from a few vehicles, a sample of 20,000
//! metrics, a payload that names its vin twice, a vehicle whose readings are
//! all refused. The fleet's legitimate data still loads, each refusal is
//! dead-lettered and counted by its own reason and unit, and refused
//! readings leave no trace in the tables.

use std::collections::BTreeMap;
use std::time::Duration;

mod common;

use rockfeed::reject::RejectReason;
use rockfeed::starrocks_emulator::now_ms;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_names_ambiguity_and_floods_are_refused_and_the_fleet_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let conf = format!("listener {port} 127.0.0.1\nallow_anonymous true\nmessage_size_limit 0\n");
    let _broker = common::mosquitto(dir.path(), port, &conf);
    let text = format!(
        r#"
[starrocks]
endpoints = ["http://127.0.0.1:1"]
database = "rockfeed"
user = "root"
password = "pw"
label_prefix = "hostile-1"
[tables]
latest_metrics = ["soc"]
buckets = 4
replication_num = 1
[decode]
max_metrics = 1000
new_metrics_per_vehicle = 50
new_metrics_per_vehicle_per_hour = 1
[pipeline]
shards = 2
epoch = "300ms"
state_dir = "{dir}/state"
[wal]
dir = "{dir}/wal"
[source.mqtt]
host = "127.0.0.1"
port = {port}
client_id = "rockfeed-hostile"
topics = ["telemetry/#"]
[dead_letter]
dir = "{dir}/dead"
"#,
        dir = dir.path().display(),
    );
    let mut cfg = rockfeed::config::Config::parse(&text).unwrap();
    let emu = common::emulator_for(&mut cfg).await;
    let app = common::run_app(cfg, &emu).await;

    let now = now_ms();
    let wide = |vin: &str, metrics: String| format!(r#"{{"vin":"{vin}","ts":{now},"metrics":{{{metrics}}}}}"#);
    let junk = |vin: &str, n: usize| (0..n).map(|i| format!(r#""{vin}_junk_{i}":1"#)).collect::<Vec<_>>().join(",");
    let mut msgs: Vec<(String, String)> = Vec::new();
    // Three vehicles invent 600 names each: 50 admitted apiece.
    for vin in ["JUNK1", "JUNK2", "JUNK3"] {
        msgs.push((format!("telemetry/{vin}"), wide(vin, junk(vin, 600))));
    }
    // One sample with 20,000 metrics: refused whole, admits nothing.
    msgs.push(("telemetry/JUNK4".into(), wide("JUNK4", junk("JUNK4", 20_000))));
    // Ambiguous: which vehicle is it?
    msgs.push(("telemetry/X".into(), format!(r#"{{"vin":"X18","vin":"X19","ts":{now},"metrics":{{"soc":50}}}}"#)));
    // Every reading refused: no row anywhere.
    msgs.push(("telemetry/ONLYBAD".into(), wide("ONLYBAD", r#""soc":"high","\\N":1"#.into())));
    // The fleet: a legitimate new metric from another vehicle.
    msgs.push(("telemetry/GOOD".into(), wide("GOOD", r#""battery.soh":97,"soc":80"#.into())));
    let mut opts = rumqttc::MqttOptions::new("hostile-pub", "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    common::publish_v4(opts, msgs).await;

    let settled = app
        .until(Duration::from_secs(30), |s| {
            s.readings_committed.load(std::sync::atomic::Ordering::Relaxed) >= 3 * 50 + 2
                && s.rejected.of(RejectReason::BadMetricName) >= 1
        })
        .await;
    let stats = app.stop().await;
    assert!(settled, "readings committed: {:?}", stats.rejected.snapshot());

    // The tables: GOOD's new metric loaded; 50 names per junk vehicle.
    let rows = emu.with_core(|c| c.table("rockfeed", "telemetry_1m").unwrap().rows());
    let mut per_vin: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        *per_vin.entry(r[0].to_string()).or_default() += 1;
    }
    let want: BTreeMap<String, usize> =
        [("GOOD", 2), ("JUNK1", 50), ("JUNK2", 50), ("JUNK3", 50)].into_iter().map(|(v, n)| (v.into(), n)).collect();
    assert_eq!(per_vin, want);
    assert!(rows.iter().any(|r| r[0].to_string() == "GOOD" && r[2].to_string() == "battery.soh"));
    let latest: Vec<String> = emu
        .with_core(|c| c.table("rockfeed", "vehicle_latest").unwrap().rows())
        .iter()
        .filter(|r| r[1].to_string().is_empty())
        .map(|r| r[0].to_string())
        .collect();
    // Vehicles with an accepted reading have a newest sample; those whose
    // readings were all refused (ONLYBAD, X18/X19, JUNK4) have no row.
    assert_eq!(latest, ["GOOD", "JUNK1", "JUNK2", "JUNK3"]);

    // Counted by reason, in their units.
    let c = stats.rejected.snapshot();
    let count = |r: RejectReason| c.get(&r).map(|x| (x.count, x.readings)).unwrap_or_default();
    assert_eq!(count(RejectReason::MetricAdmission), (3 * 550, 3 * 550));
    assert_eq!(count(RejectReason::TooManyMetrics), (1, 20_000));
    assert_eq!(count(RejectReason::DuplicateKey), (1, 1));
    assert_eq!(count(RejectReason::BadValue), (1, 1));
    assert_eq!(count(RejectReason::BadMetricName), (1, 1));
    assert_eq!(count(RejectReason::CatalogFull), (0, 0), "the catalog never filled");
    let text = rockfeed::telemetry::http::render(&stats, true);
    for line in [
        "rockfeed_rejected_readings_total{reason=\"metric_admission_limit\"} 1650",
        "rockfeed_rejected_samples_total{reason=\"too_many_metrics\"} 1",
        "rockfeed_rejected_readings_total{reason=\"too_many_metrics\"} 20000",
        "rockfeed_rejected_samples_total{reason=\"duplicate_key\"} 1",
        "rockfeed_rejected_readings_total{reason=\"bad_metric_name\"} 1",
        "rockfeed_rejected_rows_total{reason=\"load_rejected\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "/metrics lacks {line}");
    }

    // Dead letters: one per refusal (the three admission refusals are one
    // record per sample, naming the names), each with the rule it broke.
    let dead = rockfeed::deadletter::read_all(&dir.path().join("dead")).unwrap();
    let mut reasons: Vec<&str> = dead.iter().map(|r| r["reason"].as_str().unwrap()).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "bad_metric_name",
            "bad_value",
            "duplicate_key",
            "metric_admission_limit",
            "metric_admission_limit",
            "metric_admission_limit",
            "too_many_metrics"
        ]
    );
    let detail =
        |reason: &str| dead.iter().find(|r| r["reason"] == reason).unwrap()["detail"].as_str().unwrap().to_string();
    assert!(detail("duplicate_key").contains("field 'vin' appears twice"), "{}", detail("duplicate_key"));
    assert!(detail("bad_metric_name").contains("NULL"), "{}", detail("bad_metric_name"));
    assert!(detail("metric_admission_limit").contains("budget"), "{}", detail("metric_admission_limit"));
    emu.shutdown().await;
}
