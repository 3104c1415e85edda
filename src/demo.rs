//! `rockfeed demo`: the whole appliance on one machine with nothing
//! installed. An embedded MQTT broker (rumqttd), the StarRocks emulator
//! in-process with the DDL `rockfeed ddl` generates, the pipeline exactly as
//! `rockfeed run` wires it, and a built-in generator publishing wide samples
//! for a fleet. At the end: a summary and an independent audit of the
//! aggregate table against what was published (every cnt/sum/min/max per
//! key). The exit status says whether the audit passed.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::pipeline::runner::{Stats, run};
use crate::starrocks::ddl::parse_ddl;
use crate::starrocks::types::Value;
use crate::starrocks_emulator::{Emulator, EmulatorConfig};

/// Demo knobs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub seconds: u64,
    pub vehicles: u32,
    pub metrics: u32,
    /// Samples per vehicle per second.
    pub rate_hz: u32,
    pub data_dir: PathBuf,
}

/// What the demo measured.
#[derive(Debug)]
pub struct DemoReport {
    pub published: u64,
    pub readings_published: u64,
    pub stats: Arc<Stats>,
    pub table_rows: usize,
    pub audit_errors: Vec<String>,
    pub elapsed: Duration,
}

fn free_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Starts an embedded MQTT 3.1.1 broker (rumqttd) on `addr`, in its own
/// thread, for the demo and for tests that must run without mosquitto.
pub fn embedded_broker(addr: SocketAddr) -> Result<(), String> {
    let text = format!(
        r#"id = 0
[router]
id = 0
max_connections = 100
max_outgoing_packet_count = 1000
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "{addr}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 4194304
max_inflight_count = 1000
dynamic_filters = true
"#
    );
    let cfg: rumqttd::Config = toml::from_str(&text).map_err(|e| format!("broker config: {e}"))?;
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut b = rumqttd::Broker::new(cfg);
            if let Err(e) = b.start() {
                tracing::error!(error = %e, "Embedded broker stopped.");
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

type Key = (String, i64, String);

/// Runs the demo.
pub async fn demo(o: DemoOptions) -> Result<DemoReport, String> {
    let started = Instant::now();
    std::fs::create_dir_all(&o.data_dir).map_err(|e| format!("{}: {e}", o.data_dir.display()))?;
    let mqtt_addr = free_addr().map_err(|e| e.to_string())?;
    embedded_broker(mqtt_addr)?;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(mqtt_addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let password = "demo";
    let cfg_text = format!(
        r#"
[starrocks]
endpoints = ["http://127.0.0.1:1"]
database = "rockfeed"
user = "root"
password = "{password}"
label_prefix = "demo"
delivery = "at-least-once"
[tables]
dims = ["fleet"]
latest_metrics = ["m000", "m001"]
buckets = 8
replication_num = 1
[pipeline]
shards = 2
epoch = "1s"
[source.mqtt]
host = "{}"
port = {}
client_id = "rockfeed-demo"
topics = ["telemetry/#"]
protocol = "3.1.1"
[dead_letter]
dir = "{}"
"#,
        mqtt_addr.ip(),
        mqtt_addr.port(),
        o.data_dir.join("dead-letter").display()
    );
    let mut cfg = Config::parse(&cfg_text)?;
    let catalog = parse_ddl(&crate::config::ddl::ddl(&cfg)).map_err(|e| e.to_string())?;
    let emu = Emulator::start(EmulatorConfig::local(catalog, "root", password)).await.map_err(|e| e.to_string())?;
    cfg.starrocks.endpoints = vec![emu.fe_url()];
    cfg.validate().map_err(|e| e.to_string())?;

    // Vehicle file: every third vehicle has no entry (NULL dims).
    let vehicles_csv = o.data_dir.join("vehicles.csv");
    let mut csv = String::from("vin,fleet\n");
    for v in (0..o.vehicles).filter(|v| v % 3 != 2) {
        csv.push_str(&format!("{},fleet-{}\n", vin(v), v % 4));
    }
    std::fs::write(&vehicles_csv, csv).map_err(|e| e.to_string())?;
    let enrich = Arc::new(crate::enrich::Enrichment::open(&vehicles_csv, &cfg.tables.dims).map_err(|e| e.to_string())?);

    let loader = Arc::new(crate::app::loader(&cfg).map_err(|e| e.to_string())?);
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel(1024);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mqtt = cfg.source.mqtt.clone().ok_or("no mqtt source")?;
    let (ready_tx, mut ready) = watch::channel(false);
    let source = tokio::spawn(crate::source::mqtt::run_with_ready(mqtt, tx, stop_rx.clone(), ready_tx));
    let pipeline = tokio::spawn(run(crate::app::runner_config(&cfg), loader, Some(enrich), rx, stop_rx, stats.clone()));
    if !crate::source::mqtt::wait_ready(&mut ready, Duration::from_secs(30)).await {
        return Err("the pipeline did not subscribe to the embedded broker within 30 s".into());
    }

    // The generator and the independent audit totals.
    let (published, readings, expected, latest) = generate(mqtt_addr, &o).await?;
    // Wait until the pipeline has taken everything, then stop and drain.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.samples.load(Ordering::Relaxed) < published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(true);
    source.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    pipeline.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;

    let rows = emu.with_core(|c| c.table("rockfeed", &cfg.tables.telemetry).map(|t| t.rows()).unwrap_or_default());
    let mut audit_errors = audit(&rows, &expected);
    let latest_rows = emu.with_core(|c| c.table("rockfeed", &cfg.tables.latest).map(|t| t.rows()).unwrap_or_default());
    audit_errors.extend(audit_latest(&latest_rows, &latest));
    emu.shutdown().await;
    Ok(DemoReport {
        published,
        readings_published: readings,
        stats,
        table_rows: rows.len(),
        audit_errors,
        elapsed: started.elapsed(),
    })
}

fn vin(v: u32) -> String {
    format!("RFDEMO{v:011}")
}

/// Per vin: newest event time and the m000 value sent with it.
type Latest = BTreeMap<String, (i64, f64)>;

#[allow(clippy::type_complexity)]
async fn generate(
    addr: SocketAddr,
    o: &DemoOptions,
) -> Result<(u64, u64, BTreeMap<Key, (u64, f64, f64, f64)>, Latest), String> {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let (client, mut ev) =
        AsyncClient::new(MqttOptions::new("rockfeed-demo-generator", addr.ip().to_string(), addr.port()), 1000);
    // Counts PUBACKs, so the generator knows when the broker has everything.
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let acks = acked.clone();
    let poller = tokio::spawn(async move {
        while let Ok(e) = ev.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = e {
                acks.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let mut expected: BTreeMap<Key, (u64, f64, f64, f64)> = BTreeMap::new();
    let mut latest = Latest::new();
    let (mut published, mut readings) = (0u64, 0u64);
    let ticks = o.seconds * o.rate_hz.max(1) as u64;
    let period = Duration::from_millis(1000 / o.rate_hz.max(1) as u64);
    let mut next = tokio::time::Instant::now();
    for t in 0..ticks {
        let ts = crate::starrocks_emulator::now_ms() as i64;
        for v in 0..o.vehicles {
            let mut body = format!("{{\"vin\":\"{}\",\"ts\":{ts},\"seq\":{t},\"metrics\":{{", vin(v));
            for m in 0..o.metrics {
                let value = ((t * 7 + v as u64 * 13 + m as u64 * 3) % 1000) as f64 / 8.0;
                if m > 0 {
                    body.push(',');
                }
                body.push_str(&format!("\"m{m:03}\":{value}"));
                if m == 0 {
                    latest.insert(vin(v), (ts, value));
                }
                let e = expected.entry((vin(v), ts - ts.rem_euclid(60_000), format!("m{m:03}"))).or_insert((
                    0,
                    0.0,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                ));
                e.0 += 1;
                e.1 += value;
                e.2 = e.2.min(value);
                e.3 = e.3.max(value);
            }
            body.push_str("}}");
            client
                .publish("telemetry/wide", QoS::AtLeastOnce, false, body.into_bytes())
                .await
                .map_err(|e| e.to_string())?;
            published += 1;
            readings += o.metrics as u64;
        }
        next += period;
        tokio::time::sleep_until(next).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.load(Ordering::Relaxed) < published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    poller.abort();
    if acked.load(Ordering::Relaxed) < published {
        return Err(format!("the broker acknowledged {} of {published} messages", acked.load(Ordering::Relaxed)));
    }
    Ok((published, readings, expected, latest))
}

/// Compares `vehicle_latest` with the newest sample per vehicle.
fn audit_latest(rows: &[Vec<Value>], want: &Latest) -> Vec<String> {
    let mut errors = Vec::new();
    if rows.len() != want.len() {
        errors.push(format!("vehicle_latest has {} rows, {} vehicles published", rows.len(), want.len()));
    }
    for r in rows {
        let vin = r[0].to_string();
        let Some((ts, m0)) = want.get(&vin) else {
            errors.push(format!("vehicle_latest: unexpected {vin}"));
            continue;
        };
        let got_ts = match r[1] {
            Value::DateTime(t) => t / 1000,
            _ => i64::MIN,
        };
        if got_ts != *ts || r[2].as_f64() != Some(*m0) {
            errors.push(format!("vehicle_latest {vin}: got ({got_ts}, {:?}), want ({ts}, {m0})", r[2].as_f64()));
        }
    }
    errors
}

/// Compares the table with the generator's totals; returns the differences.
fn audit(rows: &[Vec<Value>], expected: &BTreeMap<Key, (u64, f64, f64, f64)>) -> Vec<String> {
    let mut got: BTreeMap<Key, (u64, f64, f64, f64)> = BTreeMap::new();
    let n = rows.first().map(|r| r.len()).unwrap_or(0);
    for r in rows {
        let win = match r[1] {
            Value::DateTime(t) => t / 1000,
            _ => i64::MIN,
        };
        let f = |i: usize| r[i].as_f64().unwrap_or(f64::NAN);
        // Keys ignore dims: the generator's totals are per (vin, window, metric).
        let e =
            got.entry((r[0].to_string(), win, r[2].to_string())).or_insert((0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
        e.0 += f(n - 4) as u64;
        e.1 += f(n - 3);
        e.2 = e.2.min(f(n - 2));
        e.3 = e.3.max(f(n - 1));
    }
    let mut errors = Vec::new();
    for (k, want) in expected {
        match got.get(k) {
            None => errors.push(format!("missing {k:?}")),
            Some(g) if g.0 != want.0 || (g.1 - want.1).abs() > 1e-6 || g.2 != want.2 || g.3 != want.3 => {
                errors.push(format!("{k:?}: got {g:?}, want {want:?}"))
            }
            _ => {}
        }
    }
    for k in got.keys().filter(|k| !expected.contains_key(*k)) {
        errors.push(format!("unexpected {k:?}"));
    }
    errors
}
