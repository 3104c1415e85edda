//! MQTT → rockfeed pipeline → StarRocks emulator, against a real mosquitto
//! started by the test on a free port (tests/run.sh installs the Debian
//! package), over MQTT 5 and 3.1.1. A known dataset with late, duplicate-key
//! and malformed messages is published; the emulator's aggregate table must
//! equal an independent computation exactly, and the dead-letter directory
//! must hold each refused message with its reason.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

use rockfeed::starrocks::ddl::parse_ddl;
use rockfeed::starrocks_emulator::{Emulator, EmulatorConfig, now_ms};
use tokio::sync::watch;

/// A mosquitto on a free port, with the temporary directory of its config.
struct Mosquitto {
    _broker: common::Broker,
    port: u16,
    _dir: tempfile::TempDir,
}

fn mosquitto() -> Mosquitto {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\nmax_inflight_messages 1000\nmessage_size_limit 0\n"
    );
    Mosquitto { _broker: common::mosquitto(dir.path(), port, &conf), port, _dir: dir }
}

const DDL: &str = "CREATE DATABASE rockfeed; USE rockfeed;
CREATE TABLE telemetry_1m (
  vehicle_id VARCHAR(64) NOT NULL, window_start DATETIME NOT NULL, metric VARCHAR(128) NOT NULL,
  fleet VARCHAR(128) NULL, cnt BIGINT SUM DEFAULT \"0\", total DOUBLE SUM DEFAULT \"0\", `min` DOUBLE MIN, `max` DOUBLE MAX
) AGGREGATE KEY(vehicle_id, window_start, metric, fleet)
PARTITION BY date_trunc('day', window_start) DISTRIBUTED BY HASH(vehicle_id) BUCKETS 8;";

type Key = (String, i64, String, Option<String>);

/// Publishes the dataset; returns the expected table and expected dead-letter reasons.
async fn publish(port: u16, v5: bool, now: i64) -> (BTreeMap<Key, (u64, f64, f64, f64)>, Vec<&'static str>) {
    let base = now - now.rem_euclid(60_000) - 60_000;
    let mut msgs: Vec<(String, String)> = Vec::new();
    let mut exp: BTreeMap<Key, (u64, f64, f64, f64)> = BTreeMap::new();
    let fleet = |v: u32| if v == 3 { None } else { Some(format!("fleet-{}", v % 2)) };
    let mut add = |vin: &str, fleet: Option<String>, ts: i64, m: &str, v: f64| {
        let e = exp.entry((vin.to_string(), ts - ts.rem_euclid(60_000), m.to_string(), fleet)).or_insert((
            0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ));
        e.0 += 1;
        e.1 += v;
        e.2 = e.2.min(v);
        e.3 = e.3.max(v);
    };
    for i in 0..40u32 {
        let v = i % 4;
        let vin = format!("VIN{v:04}");
        let ts = base + (i as i64) * 2_500;
        let (a, b) = (i as f64 * 0.5, 100.0 - i as f64);
        msgs.push((
            "telemetry/wide".into(),
            format!(r#"{{"vin":"{vin}","ts":{ts},"seq":{i},"metrics":{{"speed":{a},"soc":{b},"door":true}}}}"#),
        ));
        add(&vin, fleet(v), ts, "speed", a);
        add(&vin, fleet(v), ts, "soc", b);
        add(&vin, fleet(v), ts, "door", 1.0);
    }
    // An array of two samples, one of them for the same key again (duplicate key → cnt 2).
    msgs.push((
        "telemetry/wide".into(),
        format!(r#"[{{"vin":"VIN0000","ts":{base},"metrics":{{"speed":7}}}},{{"vin":"VIN0001","ts":"{}","metrics":{{"rpm":900}}}}]"#, rfc3339(base + 1000)),
    ));
    add("VIN0000", fleet(0), base, "speed", 7.0);
    add("VIN0001", fleet(1), base + 1000, "rpm", 900.0);
    // Narrow messages: topic per signal.
    for i in 0..10 {
        let ts = base + 30_000 + i;
        msgs.push(("telemetry/VIN0002/coolant".into(), format!(r#"{{"ts":{ts},"v":{}}}"#, 80 + i)));
        add("VIN0002", fleet(2), ts, "coolant", (80 + i) as f64);
    }
    // Late (but within the lateness bound): an older window, one more partial row.
    msgs.push((
        "telemetry/wide".into(),
        format!(r#"{{"vin":"VIN0003","ts":{},"metrics":{{"speed":1.25}}}}"#, base - 600_000),
    ));
    add("VIN0003", fleet(3), base - 600_000, "speed", 1.25);
    // Bad input: each refused with a reason, neighbours unaffected.
    let bad = [
        ("telemetry/wide", "{not json".to_string(), "malformed_json"),
        ("telemetry/wide", format!(r#"{{"ts":{base},"metrics":{{"x":1}}}}"#), "missing_vin"),
        ("telemetry/wide", r#"{"vin":"VIN0000","ts":"yesterday","metrics":{}}"#.to_string(), "bad_ts"),
        (
            "telemetry/wide",
            format!(r#"{{"vin":"VIN0000","ts":{},"metrics":{{"x":1}}}}"#, now + 86_400_000),
            "ts_out_of_range",
        ),
        ("telemetry/VIN0002/coolant", "hot".to_string(), "malformed_json"),
        // Two hours behind the newest event time, past the one-hour bound.
        (
            "telemetry/wide",
            format!(r#"{{"vin":"VIN0003","ts":{},"metrics":{{"speed":5}}}}"#, base - 7_200_000),
            "too_late",
        ),
    ];
    msgs.push((bad[0].0.into(), bad[0].1.clone()));
    // A sample with one bad value: the good readings stay.
    msgs.push((
        "telemetry/wide".into(),
        format!(r#"{{"vin":"VIN0001","ts":{},"metrics":{{"rpm":1000,"gear":"D"}}}}"#, base + 2000),
    ));
    add("VIN0001", fleet(1), base + 2000, "rpm", 1000.0);
    for b in &bad[1..] {
        msgs.push((b.0.into(), b.1.clone()));
    }
    let mut reasons: Vec<&'static str> = bad.iter().map(|b| b.2).collect();
    reasons.push("bad_value");
    reasons.sort();

    if v5 {
        common::publish_v5(rumqttc::v5::MqttOptions::new("pub5", "127.0.0.1", port), msgs).await;
    } else {
        common::publish_v4(rumqttc::MqttOptions::new("pub4", "127.0.0.1", port), msgs).await;
    }
    (exp, reasons)
}

fn rfc3339(ms: i64) -> String {
    let s = rockfeed::starrocks::text::format_datetime(ms * 1000);
    format!("{}Z", s.replace(' ', "T"))
}

async fn scenario(v5: bool) {
    let broker = mosquitto();
    scenario_on(broker.port, v5).await;
}

async fn scenario_on(port: u16, v5: bool) {
    let emu = Emulator::start(EmulatorConfig::local(parse_ddl(DDL).unwrap(), "root", "pw")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vehicles = dir.path().join("vehicles.csv");
    std::fs::write(&vehicles, "vin,fleet\nVIN0000,fleet-0\nVIN0001,fleet-1\nVIN0002,fleet-0\n").unwrap();
    let text = format!(
        r#"
[starrocks]
endpoints = ["http://127.0.0.1:1"]
database = "rockfeed"
user = "root"
password = "pw"
label_prefix = "{prefix}"
[tables]
dims = ["fleet"]
buckets = 8
replication_num = 1
[decode]
form = "auto"
max_metrics = 1000
[window]
width = "1m"
max_lateness = "1h"
[pipeline]
shards = 2
epoch = "300ms"
state_dir = "{dir}/state"
[wal]
dir = "{dir}/wal"
[source.mqtt]
host = "127.0.0.1"
port = {port}
client_id = "rockfeed-test-{v5}"
topics = ["telemetry/#"]
protocol = "{protocol}"
[enrich]
file = "{dir}/vehicles.csv"
[dead_letter]
dir = "{dir}/dead"
"#,
        prefix = if v5 { "t5" } else { "t4" },
        protocol = if v5 { "5" } else { "3.1.1" },
        dir = dir.path().display(),
    );
    let app = common::run_app(rockfeed::config::Config::parse(&text).unwrap(), &emu).await;
    let now = now_ms() as i64;
    let (expected, reasons) = publish(port, v5, now).await;
    // Good samples, plus the too-late one (decoded, then refused by the window).
    let want_samples = 40 + 2 + 10 + 1 + 1 + 1;
    app.until(Duration::from_secs(30), |s| {
        s.samples.load(Ordering::Relaxed) >= want_samples && s.rejected.total() >= 7
    })
    .await;
    let stats = app.stop().await;
    assert_eq!(stats.samples.load(Ordering::Relaxed), want_samples);
    assert_eq!(stats.loads_failed.load(Ordering::Relaxed), 0);
    // Exactly-once: every phase of the transaction interface was timed, one
    // commit per committed transaction.
    let h: BTreeMap<String, u64> = stats.histograms().into_iter().map(|(n, h)| (n, h.len())).collect();
    for phase in ["txn_begin", "txn_load", "txn_prepare", "txn_commit"] {
        assert!(h[phase] > 0, "{phase} was not timed: {h:?}");
    }
    assert!(h["txn_commit"] >= stats.txns_committed.load(Ordering::Relaxed), "{h:?}");
    assert!(h["txn_load"] >= h["txn_prepare"], "a load per body, a prepare per transaction: {h:?}");
    let text = rockfeed::telemetry::http::render(&stats, true);
    assert!(text.contains("rockfeed_stage_latency_seconds_count{stage=\"txn_prepare\"}"), "/metrics");

    let rows = emu.with_core(|c| c.table("rockfeed", "telemetry_1m").unwrap().rows());
    let mut got: BTreeMap<Key, (u64, f64, f64, f64)> = BTreeMap::new();
    for r in rows {
        let win = match r[1] {
            rockfeed::starrocks::types::Value::DateTime(t) => t / 1000,
            ref other => panic!("{other:?}"),
        };
        let fleet = match &r[3] {
            rockfeed::starrocks::types::Value::Null => None,
            v => Some(v.to_string()),
        };
        let f = |i: usize| r[i].as_f64().unwrap();
        got.insert((r[0].to_string(), win, r[2].to_string(), fleet), (f(4) as u64, f(5), f(6), f(7)));
    }
    assert_eq!(got.len(), expected.len(), "rows: {got:#?}\nexpected: {expected:#?}");
    for (k, (cnt, sum, min, max)) in &expected {
        let g = got.get(k).unwrap_or_else(|| panic!("missing row {k:?}"));
        assert_eq!(g.0, *cnt, "{k:?}");
        assert!((g.1 - sum).abs() < 1e-9, "{k:?}: {} vs {sum}", g.1);
        assert_eq!((g.2, g.3), (*min, *max), "{k:?}");
    }
    let mut dead: Vec<String> = rockfeed::deadletter::read_all(&dir.path().join("dead"))
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    dead.sort();
    assert_eq!(dead, reasons);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_mqtt5_into_the_aggregate_table_exactly() {
    scenario(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_mqtt311_into_the_aggregate_table_exactly() {
    scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_rumqttd_into_the_aggregate_table_exactly() {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port()).parse().unwrap();
    rockfeed::demo::embedded_broker(addr).unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    scenario_on(addr.port(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_shared_subscription_splits_a_stream_between_two_instances() {
    let broker = mosquitto();
    let emu = Emulator::start(EmulatorConfig::local(parse_ddl(DDL).unwrap(), "root", "pw")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut apps = Vec::new();
    for i in 0..2 {
        let text = format!(
            r#"
[starrocks]
endpoints = ["http://127.0.0.1:1"]
database = "rockfeed"
user = "root"
password = "pw"
label_prefix = "inst{i}"
[tables]
dims = ["fleet"]
buckets = 8
replication_num = 1
[pipeline]
shards = 1
epoch = "200ms"
state_dir = "{dir}/state{i}"
[wal]
dir = "{dir}/wal{i}"
[source.mqtt]
host = "127.0.0.1"
port = {port}
client_id = "rockfeed-shared-{i}"
topics = ["$share/rockfeed/telemetry/#"]
protocol = "5"
clean_session = true
[dead_letter]
dir = "{dir}/dead{i}"
"#,
            port = broker.port,
            dir = dir.path().display(),
        );
        apps.push(common::run_app(rockfeed::config::Config::parse(&text).unwrap(), &emu).await);
    }
    let now = now_ms() as i64;
    let n = 200u64;
    let msgs = (0..n)
        .map(|i| {
            // Distinct samples (the WAL drops a message whose bytes it already holds).
            let ts = now + i as i64;
            ("telemetry/wide".to_string(), format!(r#"{{"vin":"S{:03}","ts":{ts},"metrics":{{"x":1}}}}"#, i % 10))
        })
        .collect();
    common::publish_v5(rumqttc::v5::MqttOptions::new("pub-shared", "127.0.0.1", broker.port), msgs).await;
    for _ in 0..600 {
        if apps.iter().map(|a| a.stats.samples.load(Ordering::Relaxed)).sum::<u64>() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut per = Vec::new();
    for a in apps {
        per.push(a.stop().await.samples.load(Ordering::Relaxed));
    }
    assert_eq!(per.iter().sum::<u64>(), n, "each message went to exactly one instance: {per:?}");
    assert!(per.iter().all(|c| *c > 0), "both instances took a share: {per:?}");
    let total: u64 = emu.with_core(|c| {
        c.table("rockfeed", "telemetry_1m").unwrap().rows().iter().map(|r| r[4].as_f64().unwrap() as u64).sum()
    });
    assert_eq!(total, n, "the table counts every reading once");
    emu.shutdown().await;
}

/// `rockfeed run`'s wiring (`app::run`) from a TOML configuration, against
/// mosquitto and the emulator running the DDL `rockfeed ddl` generates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_run_from_a_toml_config() {
    let broker = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[starrocks]
endpoints = ["http://127.0.0.1:1"]
database = "rockfeed"
user = "root"
password = "pw"
label_prefix = "apprun"
[tables]
dims = ["fleet"]
latest_metrics = ["speed"]
buckets = 8
replication_num = 1
[pipeline]
shards = 2
epoch = "200ms"
state_dir = "{state}"
[wal]
dir = "{wal}"
[source.mqtt]
host = "127.0.0.1"
port = {}
client_id = "rockfeed-app-run"
topics = ["telemetry/#"]
protocol = "5"
[dead_letter]
dir = "{}"
"#,
        broker.port,
        dir.path().join("dead").display(),
        state = dir.path().join("state").display(),
        wal = dir.path().join("wal").display(),
    );
    let mut cfg = rockfeed::config::Config::parse(&toml).unwrap();
    let ddl = rockfeed::config::ddl::ddl(&cfg);
    let emu = Emulator::start(EmulatorConfig::local(parse_ddl(&ddl).unwrap(), "root", "pw")).await.unwrap();
    cfg.starrocks.endpoints = vec![emu.fe_url()];
    cfg.validate().unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready) = watch::channel(false);
    let app = common::subscribed(&mut ready, tokio::spawn(rockfeed::app::run_with_ready(cfg, stop_rx, ready_tx))).await;
    let now = now_ms() as i64;
    let msgs = (0..20)
        .map(|i| {
            let p = format!(r#"{{"vin":"APP{}","ts":{},"metrics":{{"speed":{i},"rpm":1000}}}}"#, i % 4, now + i);
            ("telemetry/wide".to_string(), p)
        })
        .collect();
    common::publish_v5(rumqttc::v5::MqttOptions::new("pub-app", "127.0.0.1", broker.port), msgs).await;
    for _ in 0..600 {
        if app.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Stop once everything is in (checked through the emulator below).
        let loaded: u64 = emu.with_core(|c| {
            c.table("rockfeed", "telemetry_1m").unwrap().rows().iter().map(|r| r[4].as_f64().unwrap() as u64).sum()
        });
        if loaded >= 40 {
            break;
        }
    }
    stop_tx.send(true).unwrap();
    let stats = app.await.unwrap().unwrap();
    assert_eq!(stats.samples.load(Ordering::Relaxed), 20);
    assert_eq!(stats.loads_failed.load(Ordering::Relaxed), 0);
    let (cnt, latest) = emu.with_core(|c| {
        let t = c.table("rockfeed", "telemetry_1m").unwrap();
        let cnt: u64 = t.rows().iter().map(|r| r[4].as_f64().unwrap() as u64).sum();
        (cnt, c.table("rockfeed", "vehicle_latest").unwrap().rows())
    });
    assert_eq!(cnt, 40, "20 samples × 2 metrics");
    // Per vehicle: its newest sample (metric "") and its speed (the tracked metric).
    assert_eq!(latest.len(), 8, "{latest:?}");
    // APP3's newest sample is i = 19: speed 19.
    let app3 = latest.iter().find(|r| r[0].to_string() == "APP3" && r[1].to_string() == "speed").unwrap();
    assert_eq!(app3[5].as_f64(), Some(19.0));
    emu.shutdown().await;
}
