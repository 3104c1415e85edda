//! The latest table by event time: late bursts interleaved with newer
//! samples, across shards and epochs, through MQTT (mosquitto, the WAL) and
//! through Kafka (librdkafka's mock cluster), both exactly once. Afterwards
//! every vehicle's row of every tracked metric must hold the newest reading
//! sent by (event time, seq), and its any-metric row the newest sample,
//! whatever order they arrived and were loaded in.

use std::collections::BTreeMap;
use std::time::Duration;

mod common;

use rockfeed::starrocks_emulator::Emulator;

/// One sample as sent.
#[derive(Clone)]
struct Sent {
    vin: String,
    ts: i64,
    seq: u64,
    metrics: Vec<(&'static str, f64)>,
}

impl Sent {
    fn payload(&self) -> String {
        let m: Vec<String> = self.metrics.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!(r#"{{"vin":"{}","ts":{},"seq":{},"metrics":{{{}}}}}"#, self.vin, self.ts, self.seq, m.join(","))
    }
}

const VEHICLES: usize = 8;

/// Phases of samples, each sent after the last was loaded (so late ones
/// land in later epochs), vehicles interleaved within a phase:
/// 1. every metric at t+10 s;
/// 2. speed alone at t+20 s, mixed with a sample from t+5 s (loses both
///    metrics);
/// 3. soc alone from t+15 s (newer than the stored soc, older than the
///    vehicle's newest sample: a per-row condition would refuse it), and
///    two samples at t+20 s: a smaller seq (loses) and a larger one (wins);
/// 4. a burst of 19 samples from t+1 s to t+19 s (those after t+15 s win
///    soc, none wins speed).
fn phases(base: i64) -> Vec<Vec<Sent>> {
    let vin = |v: usize| format!("LATE{v}");
    let s = |v: usize, ts: i64, seq: u64, metrics: Vec<(&'static str, f64)>| Sent {
        vin: vin(v),
        ts: base + ts,
        seq,
        metrics,
    };
    let mut p = vec![Vec::new(); 4];
    for v in 0..VEHICLES {
        let x = v as f64;
        p[0].push(s(v, 10_000, 100, vec![("speed", 10.0 + x), ("soc", 50.0 + x), ("rpm", 1000.0)]));
        p[1].push(s(v, 5_000, 50, vec![("speed", -1.0), ("soc", -1.0)]));
        p[1].push(s(v, 20_000, 200, vec![("speed", 20.0 + x)]));
        p[2].push(s(v, 20_000, 190, vec![("speed", -2.0)]));
        p[2].push(s(v, 15_000, 150, vec![("soc", 60.0 + x)]));
        p[2].push(s(v, 20_000, 210, vec![("speed", 21.0 + x)]));
        for k in 1..20u64 {
            p[3].push(s(v, k as i64 * 1_000 + 7, k, vec![("speed", -(k as f64)), ("soc", 70.0 + k as f64 + x)]));
        }
    }
    // Interleave vehicles (and so shards): a fixed shuffle.
    for phase in &mut p {
        let n = phase.len();
        for i in 0..n {
            phase.swap(i, (i * 7 + 3) % n);
        }
    }
    p
}

/// (vin, metric) → (ts, seq, value): the newest by (ts, seq) of what was
/// sent, for the tracked metrics, and "" for each vehicle's newest sample.
fn expected(phases: &[Vec<Sent>]) -> BTreeMap<(String, String), (i64, u64, Option<f64>)> {
    let mut want: BTreeMap<(String, String), (i64, u64, Option<f64>)> = BTreeMap::new();
    let mut keep = |key: (String, String), new: (i64, u64, Option<f64>)| {
        let e = want.entry(key).or_insert(new);
        if (new.0, new.1) >= (e.0, e.1) {
            *e = new;
        }
    };
    for s in phases.iter().flatten() {
        keep((s.vin.clone(), String::new()), (s.ts, s.seq, None));
        for (m, x) in &s.metrics {
            if ["speed", "soc"].contains(m) {
                keep((s.vin.clone(), m.to_string()), (s.ts, s.seq, Some(*x)));
            }
        }
    }
    want
}

/// The emulator's latest table in the same shape.
fn landed(emu: &Emulator) -> BTreeMap<(String, String), (i64, u64, Option<f64>)> {
    use rockfeed::starrocks::types::Value;
    emu.with_core(|c| c.table("rockfeed", "vehicle_latest").unwrap().rows())
        .into_iter()
        .map(|r| {
            let ts = match &r[2] {
                Value::DateTime(us) => us / 1000,
                other => panic!("ts {other:?}"),
            };
            let seq = match &r[3] {
                Value::Int(q) => *q as u64,
                other => panic!("seq {other:?}"),
            };
            // event_order is ts × 2⁶⁴ + seq.
            assert_eq!(r[4], Value::Int((i128::from(ts) << 64) | seq as i128), "{r:?}");
            ((r[0].to_string(), r[1].to_string()), (ts, seq, r[5].as_f64()))
        })
        .collect()
}

fn config(source: &str, dir: &std::path::Path, prefix: &str) -> rockfeed::config::Config {
    let rest = format!("[tables]\nlatest_metrics = [\"speed\", \"soc\"]\nbuckets = 8\nreplication_num = 1\n{source}");
    rockfeed::config::Config::parse(&common::config_toml(dir, prefix, 3, &rest)).unwrap()
}

/// The wide view `rockfeed ddl` generates, run by an independent SQL engine
/// (DuckDB, from tests/run.sh's virtualenv) over the long table's rows:
/// vin → (last_ts ms, speed, soc).
fn wide_view_by_duckdb(emu: &Emulator, ddl: &str) -> BTreeMap<String, (i64, Option<f64>, Option<f64>)> {
    use rockfeed::starrocks::types::Value;
    let cat = rockfeed::starrocks::ddl::parse_ddl(ddl).unwrap();
    let view = cat.views.iter().find(|v| v.name == "vehicle_latest_wide").expect("the wide view");
    let rows: Vec<serde_json::Value> = emu
        .with_core(|c| c.table("rockfeed", "vehicle_latest").unwrap().rows())
        .into_iter()
        .map(|r| {
            let ts = match &r[2] {
                Value::DateTime(us) => *us,
                other => panic!("ts {other:?}"),
            };
            serde_json::json!([r[0].to_string(), r[1].to_string(), ts, r[5].as_f64()])
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rows.json");
    std::fs::write(&data, serde_json::to_string(&rows).unwrap()).unwrap();
    let script = r#"
import duckdb, json, sys
rows = json.load(open(sys.argv[1]))
con = duckdb.connect()
con.execute('CREATE TABLE vehicle_latest (vehicle_id VARCHAR, metric VARCHAR, ts TIMESTAMP, value DOUBLE)')
con.executemany('INSERT INTO vehicle_latest VALUES (?, ?, make_timestamp(?), ?)', rows)
con.execute(sys.argv[2])
out = con.execute('SELECT vehicle_id, epoch_ms(last_ts), speed, soc FROM vehicle_latest_wide ORDER BY vehicle_id').fetchall()
print(json.dumps(out))
"#;
    let out = std::process::Command::new(common::archive::python())
        .args(["-c", script])
        .arg(&data)
        .arg(view.sql.replace('`', "\""))
        .output()
        .unwrap();
    assert!(out.status.success(), "duckdb: {}", String::from_utf8_lossy(&out.stderr));
    let v: Vec<(String, i64, Option<f64>, Option<f64>)> = serde_json::from_slice(&out.stdout).unwrap();
    v.into_iter().map(|(vin, ts, speed, soc)| (vin, (ts, speed, soc))).collect()
}

/// Sends each phase with `send`, waits until it is loaded, then checks the
/// table against what was sent.
async fn scenario(emu: &Emulator, app: common::App, mut send: impl AsyncFnMut(&[Sent])) {
    let base = rockfeed::util::now_ms() as i64 - 600_000;
    let phases = phases(base);
    let mut sent_so_far = Vec::new();
    for phase in &phases {
        send(phase).await;
        sent_so_far.push(phase.clone());
        let want = expected(&sent_so_far);
        let mut got = landed(emu);
        for _ in 0..300 {
            if got == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            got = landed(emu);
        }
        assert_eq!(got, want, "after phase {}", sent_so_far.len());
    }
    let stats = app.stop().await;
    let samples = phases.iter().map(Vec::len).sum::<usize>() as u64;
    assert_eq!(stats.samples.load(std::sync::atomic::Ordering::Relaxed), samples);
    assert!(stats.txns_committed.load(std::sync::atomic::Ordering::Relaxed) >= 4, "exactly once, several epochs");
    // Sanity: the scenario does exercise both ways of losing.
    let want = expected(&phases);
    assert_eq!(want[&("LATE3".into(), "speed".into())], (base + 20_000, 210, Some(24.0)), "the larger seq of a tie");
    assert_eq!(want[&("LATE3".into(), "soc".into())], (base + 19_007, 19, Some(92.0)), "the burst's newest soc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_bursts_over_mqtt_never_overwrite_newer_values() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = common::anonymous_mosquitto(dir.path());
    let source = format!(
        "[source.mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"rockfeed-late\"\ntopics = [\"telemetry/#\"]\nprotocol = \"5\""
    );
    let mut cfg = config(&source, dir.path(), "latemq");
    let ddl = rockfeed::config::ddl::ddl(&cfg);
    let emu = common::emulator_for(&mut cfg).await;
    let app = common::run_app(cfg, &emu).await;
    let mut n = 0;
    scenario(&emu, app, async |phase| {
        n += 1;
        let msgs = phase.iter().map(|s| (format!("telemetry/{}", s.vin), s.payload())).collect();
        common::publish_v5(rumqttc::v5::MqttOptions::new(format!("pub-late-{n}"), "127.0.0.1", port), msgs).await;
    })
    .await;
    // The wide view over the landed rows: one row per vehicle, its newest
    // sample's time and the newest speed and soc.
    let base_rows = landed(&emu);
    let wide = wide_view_by_duckdb(&emu, &ddl);
    assert_eq!(wide.len(), VEHICLES);
    for (vin, (ts, speed, soc)) in &wide {
        let get = |m: &str| base_rows[&(vin.clone(), m.to_string())];
        assert_eq!(*ts, get("").0, "{vin}");
        assert_eq!((*speed, *soc), (get("speed").2, get("soc").2), "{vin}");
    }
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_bursts_over_kafka_never_overwrite_newer_values() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mock = loadgen::kafka::mock_cluster(1, "telemetry", 4).unwrap();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        "[source.kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"rockfeed-late\"\ntopics = [\"telemetry\"]\nkey_is_colocation_key = true"
    );
    let mut cfg = config(&source, dir.path(), "latekx");
    let emu = common::emulator_for(&mut cfg).await;
    let app = common::run_app(cfg, &emu).await;
    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).set("acks", "all").create().unwrap();
    scenario(&emu, app, async |phase| {
        for s in phase {
            let payload = s.payload();
            let record = FutureRecord::to("telemetry").key(&s.vin).payload(&payload);
            producer.send(record, Duration::from_secs(10)).await.unwrap();
        }
    })
    .await;
    emu.shutdown().await;
}
