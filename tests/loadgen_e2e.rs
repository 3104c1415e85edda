//! The load generator against the real appliance: loadgen's fleet over
//! MQTT (mosquitto started by the test) into the pipeline and the StarRocks
//! emulator, then loadgen's audit over the emulator's HTTP inspection
//! endpoint. The audit must pass on what rockfeed loaded, and must fail on
//! a row loaded twice and on a reading that never arrived. The second test
//! runs the `rockfeed` binary (`run --report`), reads `/metrics` while it
//! runs, stops it with SIGINT and checks the report it leaves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod common;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use loadgen::audit::{EmulatorTables, audit_emulator};
use loadgen::bench::metric_value;
use loadgen::fleet::Fleet;
use loadgen::ledger::Ledger;
use loadgen::mqtt::{MqttSender, MqttTarget};
use loadgen::payload::{Generator, Profile};
use loadgen::run::{RunOptions, Target};
use rockfeed::sink::starrocks::service::RetryPolicy;
use rockfeed::starrocks::ddl::parse_ddl;
use rockfeed::starrocks_emulator::{Emulator, EmulatorConfig};
use tokio::sync::watch;

fn mosquitto(dir: &std::path::Path) -> (common::Broker, u16) {
    let port = common::free_port();
    let conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 0\nmessage_size_limit 0\n"
    );
    (common::mosquitto(dir, port, &conf), port)
}

fn config(mqtt_port: u16, metrics_port: u16, dir: &std::path::Path, protocol: &str) -> String {
    format!(
        r#"
[starrocks]
endpoints = ["http://127.0.0.1:1"]
database = "rockfeed"
user = "root"
password = "pw"
label_prefix = "lg"
[tables]
latest_metrics = ["speed", "soc"]
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
port = {mqtt_port}
client_id = "rockfeed-loadgen-e2e"
topics = ["telemetry/#"]
protocol = "{protocol}"
[telemetry]
listen = "127.0.0.1:{metrics_port}"
[dead_letter]
dir = "{}"
"#,
        dir.join("dead").display(),
        state = dir.join("state").display(),
        wal = dir.join("wal").display(),
    )
}

fn tables(emu_url: String) -> EmulatorTables {
    EmulatorTables {
        url: emu_url,
        user: "root".into(),
        password: "pw".into(),
        db: "rockfeed".into(),
        telemetry: "telemetry_1m".into(),
        latest: Some("vehicle_latest".into()),
    }
}

async fn send(
    port: u16,
    v5: bool,
    profile: Profile,
    rate: f64,
    secs: u64,
    seed: u64,
) -> (Ledger, loadgen::run::RunSummary) {
    let fleet = Fleet::new(40, 25, seed, "RFE2E");
    let mut ledger = Ledger::new(&fleet.metrics, 60_000);
    let mut generator = Generator::new(fleet, profile, "telemetry", 50);
    let mut t = MqttTarget::new("127.0.0.1", port);
    t.connections = 3;
    t.v5 = v5;
    let sender = MqttSender::connect(&t).await.unwrap();
    let o = RunOptions::timed(rate, Duration::from_secs(secs));
    let s = loadgen::run::run(&mut generator, profile, &mut ledger, Target::Mqtt(sender), &o, &AtomicBool::new(false))
        .await
        .unwrap();
    assert!(s.complete(), "the broker acknowledged {} of {}", s.delivered, s.messages);
    assert_eq!(s.readings, ledger.readings());
    (ledger, s)
}

/// `/metrics` counter `name`, or 0 while the endpoint is not up.
async fn counter(metrics_port: u16, name: &str) -> u64 {
    match loadgen::http::get(&format!("http://127.0.0.1:{metrics_port}/metrics"), None).await {
        Ok((200, body)) => metric_value(&String::from_utf8_lossy(&body), name).unwrap_or(0.0) as u64,
        _ => 0,
    }
}

async fn wait_for(metrics_port: u16, name: &str, want: u64) {
    for _ in 0..600 {
        if counter(metrics_port, name).await >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never reached {want} (at {})", counter(metrics_port, name).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrow_mqtt5_traffic_lands_exactly_and_the_audit_catches_a_duplicate_and_a_drop() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = mosquitto(dir.path());
    let metrics_port = common::free_port();
    let mut cfg = rockfeed::config::Config::parse(&config(port, metrics_port, dir.path(), "5")).unwrap();
    let emu =
        Emulator::start(EmulatorConfig::local(parse_ddl(&rockfeed::config::ddl::ddl(&cfg)).unwrap(), "root", "pw"))
            .await
            .unwrap();
    cfg.starrocks.endpoints = vec![emu.fe_url()];
    cfg.validate().unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready) = watch::channel(false);
    let app = common::subscribed(&mut ready, tokio::spawn(rockfeed::app::run_with_ready(cfg, stop_rx, ready_tx))).await;
    let (st, _) = loadgen::http::get(&format!("http://127.0.0.1:{metrics_port}/ready"), None).await.unwrap();
    assert_eq!(st, 200, "/ready once subscribed");

    let (ledger, sent) = send(port, true, Profile::Narrow, 3000.0, 2, 1).await;
    assert_eq!(sent.messages, sent.readings, "narrow: one reading per message");
    wait_for(metrics_port, "rockfeed_readings_total", sent.readings).await;
    stop_tx.send(true).unwrap();
    let stats = app.await.unwrap().unwrap();
    assert_eq!(stats.readings_committed.load(Ordering::Relaxed), sent.readings);

    let t = tables(emu.fe_url());
    let audits = audit_emulator(&t, &ledger).await.unwrap();
    assert!(audits.iter().all(|a| a.ok()), "{audits:?}");
    assert_eq!(audits[0].records_landed, sent.readings);

    // The same rows in a MySQL-protocol server (MariaDB), audited through
    // it as `loadgen audit --mysql` audits a real StarRocks: the same
    // verdict, and a row changed there is found.
    let db = common::mariadb::MariaDb::start();
    copy_to_mysql(&t, &db).await;
    let via_sql = EmulatorTables {
        url: format!("mysql://127.0.0.1:{}", db.port),
        user: "audit".into(),
        password: "pw".into(),
        ..t.clone()
    };
    let sql_audits = audit_emulator(&via_sql, &ledger).await.unwrap();
    assert!(sql_audits.iter().all(|a| a.ok()), "{sql_audits:?}");
    assert_eq!(sql_audits[0].records_landed, sent.readings);
    assert!(audits[1].records_landed > 0, "{audits:?}");
    assert_eq!(sql_audits[1].records_landed, audits[1].records_landed, "{sql_audits:?}");
    db.exec(&["UPDATE rockfeed.telemetry_1m SET cnt = cnt + 1 ORDER BY vehicle_id, window_start, metric LIMIT 1"])
        .await;
    let a = &audit_emulator(&via_sql, &ledger).await.unwrap()[0];
    assert!(!a.ok(), "a changed row must be found: {a}");

    // One row loaded a second time (an existing key, in range): a duplicate.
    let (v, win, m) = *ledger.keys.keys().next().unwrap();
    let (vin, metric) = (&ledger.vins[v as usize], &ledger.metrics[m as usize]);
    let x = ledger.keys[&(v, win, m)].min;
    let mut value = Vec::new();
    loadgen::payload::push_value(&mut value, loadgen::fleet::Val { eighths: (x * 8.0) as i64, is_bool: false });
    let value = String::from_utf8(value).unwrap();
    let secs = win / 1000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil(days);
    let dt = format!("{y:04}-{mo:02}-{d:02} {:02}:{:02}:00", rem / 3600, rem % 3600 / 60);
    let body = format!("{vin}\x01{dt}\x01{metric}\x011\x01{value}\x01{value}\x01{value}\n");
    let mut h = HeaderMap::new();
    h.insert("column_separator", HeaderValue::from_static("\\x01"));
    h.insert("columns", HeaderValue::from_static("vehicle_id,window_start,metric,cnt,total,`min`,`max`"));
    common::loader(&emu, "pw", "rockfeed", RetryPolicy::default())
        .load("telemetry_1m", "lg-duplicate-1", &h, Bytes::from(body))
        .await
        .unwrap();
    let a = &audit_emulator(&t, &ledger).await.unwrap()[0];
    assert_eq!((a.missing, a.duplicated, a.mismatched), (0, 1, 0), "{a}");

    // A reading the ledger says was sent and that never arrived (another
    // key than the duplicate's, so the two cannot cancel out): missing.
    let mut more = ledger.clone();
    let (v2, win2, m2) = *ledger.keys.keys().find(|k| **k != (v, win, m)).unwrap();
    more.reading(v2, m2, win2, ledger.keys[&(v2, win2, m2)].max);
    let a = &audit_emulator(&t, &more).await.unwrap()[0];
    assert_eq!((a.missing, a.duplicated), (1, 1), "{a}");
    emu.shutdown().await;
}

/// Copies the audited columns of the emulator's tables into MariaDB
/// (database `rockfeed`, readable by user `audit`, password `pw`).
async fn copy_to_mysql(t: &EmulatorTables, db: &common::mariadb::MariaDb) {
    let mut sql = vec![
        "CREATE DATABASE rockfeed".to_string(),
        "CREATE TABLE rockfeed.telemetry_1m (vehicle_id VARCHAR(64) NOT NULL, window_start DATETIME NOT NULL, \
         metric VARCHAR(128) NOT NULL, cnt BIGINT NOT NULL, total DOUBLE NOT NULL, `min` DOUBLE, `max` DOUBLE)"
            .to_string(),
        "CREATE TABLE rockfeed.vehicle_latest (vehicle_id VARCHAR(64) NOT NULL, metric VARCHAR(128) NOT NULL, \
         ts DATETIME(3) NOT NULL, value DOUBLE NULL)"
            .to_string(),
        "CREATE USER 'audit'@'%' IDENTIFIED BY 'pw'".to_string(),
        "GRANT SELECT ON rockfeed.* TO 'audit'@'%'".to_string(),
    ];
    let get = |table: &str| {
        let url = format!("{}/_emulator/rockfeed/{table}", t.url);
        async move {
            let (st, body) = loadgen::http::get(&url, Some(("root", "pw"))).await.unwrap();
            assert_eq!(st, 200);
            serde_json::from_slice::<Vec<serde_json::Map<String, serde_json::Value>>>(&body).unwrap()
        }
    };
    let lit = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "NULL".to_string(),
        serde_json::Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => other.to_string(),
    };
    for r in get("telemetry_1m").await {
        let cols = ["vehicle_id", "window_start", "metric", "cnt", "total", "min", "max"].map(|c| lit(&r[c]));
        sql.push(format!("INSERT INTO rockfeed.telemetry_1m VALUES ({})", cols.join(", ")));
    }
    for r in get("vehicle_latest").await {
        let cols = ["vehicle_id", "metric", "ts", "value"].map(|c| lit(&r[c]));
        sql.push(format!("INSERT INTO rockfeed.vehicle_latest VALUES ({})", cols.join(", ")));
    }
    db.exec(&sql.iter().map(String::as_str).collect::<Vec<_>>()).await;
}

/// Days since 1970-01-01 → (year, month, day).
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rockfeed_run_serves_metrics_and_writes_its_report_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = mosquitto(dir.path());
    let metrics_port = common::free_port();
    let text = config(port, metrics_port, dir.path(), "3.1.1");
    let cfg = rockfeed::config::Config::parse(&text).unwrap();
    let emu =
        Emulator::start(EmulatorConfig::local(parse_ddl(&rockfeed::config::ddl::ddl(&cfg)).unwrap(), "root", "pw"))
            .await
            .unwrap();
    let conf = dir.path().join("rockfeed.toml");
    std::fs::write(&conf, text.replace("http://127.0.0.1:1", &emu.fe_url())).unwrap();
    let report = dir.path().join("report");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rockfeed"))
        .arg("run")
        .arg("--config")
        .arg(&conf)
        .arg("--report")
        .arg(&report)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let health = async {
        for _ in 0..300 {
            if let Ok((200, _)) = loadgen::http::get(&format!("http://127.0.0.1:{metrics_port}/ready"), None).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(health.await, "rockfeed run never became ready");
    let (st, body) = loadgen::http::get(&format!("http://127.0.0.1:{metrics_port}/health"), None).await.unwrap();
    assert_eq!((st, &body[..]), (200, &b"ok\n"[..]));

    let (ledger, sent) = send(port, false, Profile::Batched(4), 4000.0, 2, 2).await;
    wait_for(metrics_port, "rockfeed_readings_committed_total", sent.readings).await;
    let (_, body) = loadgen::http::get(&format!("http://127.0.0.1:{metrics_port}/metrics"), None).await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(metric_value(&text, "rockfeed_messages_total"), Some(sent.messages as f64));
    assert!(
        text.contains(&format!(
            "rockfeed_stage_latency_seconds_count{{stage=\"event_to_committed\"}} {}",
            sent.readings
        ))
    );

    let status = std::process::Command::new("kill").arg("-INT").arg(child.id().unwrap().to_string()).status().unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "rockfeed run exits cleanly on SIGINT: {exit:?}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["facts"]["readings_committed"], sent.readings);
    assert!(json["facts"]["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    let svg = std::fs::read_to_string(report.join("latency.svg")).unwrap();
    assert!(svg.contains("data-series=\"event_to_committed\"") && svg.contains("data-series=\"queue_wait_shard_1\""));
    assert!(report.join("stream_load_write_data.hgrm").is_file());

    // The sent file round trip, as `loadgen run --sent` / `loadgen audit` use it.
    let mut file = Vec::new();
    ledger.save(&mut file).unwrap();
    let back = Ledger::load(&file[..]).unwrap();
    let audits = audit_emulator(&tables(emu.fe_url()), &back).await.unwrap();
    assert!(audits.iter().all(|a| a.ok() && a.records_sent > 0), "{audits:?}");
    emu.shutdown().await;
}
