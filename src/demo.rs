//! `rockfeed demo`: the whole appliance on one machine with nothing
//! installed. An embedded MQTT broker (rumqttd), the StarRocks emulator
//! in-process with the DDL `rockfeed ddl` generates, the pipeline through
//! `rockfeed run`'s own entry point (`app::run_with`: MQTT into the WAL,
//! exactly once into StarRocks and the archive), and the load generator (`loadgen`'s fleet model
//! and open-loop schedule) publishing wide samples. At the end: a summary,
//! the latency report (table, JSON, `.hgrm`, SVG) and `loadgen`'s audit of
//! both tables, and of the raw Parquet archive (local, under the data
//! directory), against every reading it sent. The exit status says whether
//! the audits passed.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use loadgen::audit::{EmulatorTables, audit_emulator};
use loadgen::fleet::{Fleet, readings_per_sample};
use loadgen::ledger::{Ledger, TableAudit};
use loadgen::mqtt::{MqttSender, MqttTarget};
use loadgen::payload::{Generator, Profile};
use loadgen::run::{RunOptions, Target};
use tokio::sync::watch;

use crate::config::Config;
use crate::pipeline::runner::Stats;
use crate::starrocks::ddl::parse_ddl;
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
    /// Where the latency report goes (default `data_dir/report`).
    pub report: Option<PathBuf>,
}

/// What the demo measured.
#[derive(Debug)]
pub struct DemoReport {
    /// Messages published (one wide sample each).
    pub published: u64,
    pub readings_published: u64,
    pub stats: Arc<Stats>,
    pub table_rows: usize,
    /// `loadgen`'s audit, one entry per table.
    pub audits: Vec<TableAudit>,
    /// The differences the audits found (empty when they passed).
    pub audit_errors: Vec<String>,
    pub elapsed: Duration,
    /// The latency report and where it was written.
    pub report: loadgen::report::Report,
    pub report_dir: PathBuf,
    /// The Parquet archive read back against the ledger, and its files.
    pub archive_audit: TableAudit,
    pub archive_files: usize,
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
    let mut cfg = demo_config(&o, mqtt_addr, password)?;
    cfg.pipeline.state_dir = o.data_dir.join("state");
    let catalog = parse_ddl(&crate::config::ddl::ddl(&cfg)).map_err(|e| e.to_string())?;
    let emu = Emulator::start(EmulatorConfig::local(catalog, "root", password)).await.map_err(|e| e.to_string())?;
    cfg.starrocks.endpoints = vec![emu.fe_url()];

    // The fleet, and its vehicle file: every third vehicle has no entry (NULL dims).
    let fleet = Fleet::new(o.vehicles, o.metrics, 42, "RFDEMO");
    let vehicles_csv = o.data_dir.join("vehicles.csv");
    let mut csv = String::from("vin,fleet\n");
    for v in (0..o.vehicles).filter(|v| v % 3 != 2) {
        csv.push_str(&format!("{},fleet-{}\n", fleet.vin(v), v % 4));
    }
    std::fs::write(&vehicles_csv, csv).map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;

    // The pipeline exactly as `rockfeed run` runs it.
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready) = watch::channel(false);
    let app = tokio::spawn(crate::app::run_with(cfg.clone(), stop_rx, ready_tx, stats.clone()));
    if !crate::source::mqtt::wait_ready(&mut ready, Duration::from_secs(30)).await {
        return Err("the pipeline did not subscribe to the embedded broker within 30 s".into());
    }

    let (ledger, sent) = generate(&o, fleet, mqtt_addr, cfg.window.width.0.as_millis() as i64).await?;
    // Wait until the pipeline has taken everything, then stop and drain.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.samples.load(Ordering::Relaxed) < sent.messages && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(true);
    app.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    let (archive_audit, archive_files) = audit_archive(&o.data_dir.join("archive").join(&cfg.archive.table), &ledger)?;

    let (table_rows, audits, audit_errors) = audit_tables(&emu, &cfg, &ledger, &archive_audit, password).await?;
    emu.shutdown().await;

    let elapsed = started.elapsed();
    let mut report = crate::telemetry::report::build("rockfeed demo", &stats, elapsed);
    report.series("loadgen_send_lag", sent.lag_us.clone());
    report.fact("published_messages", sent.messages).fact("published_readings", sent.readings);
    report.fact("audit", if audit_errors.is_empty() { "PASS" } else { "FAIL" });
    let report_dir = o.report.clone().unwrap_or_else(|| o.data_dir.join("report"));
    report.write(&report_dir).map_err(|e| format!("{}: {e}", report_dir.display()))?;
    Ok(DemoReport {
        published: sent.messages,
        readings_published: sent.readings,
        stats,
        table_rows,
        audits,
        audit_errors,
        elapsed,
        report,
        report_dir,
        archive_audit,
        archive_files,
    })
}

/// The demo's configuration, with this run's data directories emptied
/// (the audits compare this run's data with this run's ledger).
fn demo_config(o: &DemoOptions, mqtt_addr: SocketAddr, password: &str) -> Result<Config, String> {
    let cfg_text = format!(
        r#"
[starrocks]
endpoints = ["http://127.0.0.1:1"]
database = "rockfeed"
user = "root"
password = "{password}"
label_prefix = "demo"
[tables]
dims = ["fleet"]
latest_metrics = ["speed", "soc"]
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
[wal]
dir = "{}"
[enrich]
file = "{}"
[archive]
enabled = true
url = "{}"
spool_dir = "{}"
roll_age = "10s"
roll_idle = "5s"
"#,
        mqtt_addr.ip(),
        mqtt_addr.port(),
        o.data_dir.join("dead-letter").display(),
        o.data_dir.join("wal").display(),
        o.data_dir.join("vehicles.csv").display(),
        o.data_dir.join("archive").display(),
        o.data_dir.join("spool").display(),
    );
    // This run's data only: the audits compare it with this run's ledger
    // (a previous run's WAL would be replayed, its archive read back).
    for d in ["archive", "spool", "wal", "state"] {
        match std::fs::remove_dir_all(o.data_dir.join(d)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(format!("{d}: {e}")),
            _ => {}
        }
    }
    Config::parse(&cfg_text)
}

/// The load generator: `rate_hz` wide samples per vehicle per second, open
/// loop, over two connections, until every message is acknowledged.
async fn generate(
    o: &DemoOptions,
    fleet: Fleet,
    mqtt_addr: SocketAddr,
    window_ms: i64,
) -> Result<(Ledger, loadgen::run::RunSummary), String> {
    let mut ledger = Ledger::new(&fleet.metrics, window_ms);
    let rate = (o.vehicles * o.rate_hz.max(1)) as f64 * readings_per_sample(&fleet.metrics);
    let mut generator = Generator::new(fleet, Profile::Wide, "telemetry", 0);
    let mut target = MqttTarget::new(&mqtt_addr.ip().to_string(), mqtt_addr.port());
    target.connections = 2;
    target.client_prefix = "rockfeed-demo-generator".into();
    let sender = MqttSender::connect(&target).await.map_err(|e| e.to_string())?;
    let run_opts = RunOptions::timed(rate, Duration::from_secs(o.seconds));
    let sent = loadgen::run::run(
        &mut generator,
        Profile::Wide,
        &mut ledger,
        Target::Mqtt(sender),
        &run_opts,
        &AtomicBool::new(false),
    )
    .await?;
    if !sent.complete() {
        return Err(format!("the broker acknowledged {} of {} messages", sent.delivered, sent.messages));
    }
    Ok((ledger, sent))
}

/// The emulator's tables against the ledger; with the archive's audit, the
/// differences found.
async fn audit_tables(
    emu: &Emulator,
    cfg: &Config,
    ledger: &Ledger,
    archive_audit: &TableAudit,
    password: &str,
) -> Result<(usize, Vec<TableAudit>, Vec<String>), String> {
    let table_rows =
        emu.with_core(|c| c.table("rockfeed", &cfg.tables.telemetry).map(|t| t.rows().len()).unwrap_or_default());
    let tables = EmulatorTables {
        url: emu.fe_url(),
        user: "root".into(),
        password: password.into(),
        db: "rockfeed".into(),
        telemetry: cfg.tables.telemetry.clone(),
        latest: Some(cfg.tables.latest.clone()),
    };
    let audits = audit_emulator(&tables, ledger).await?;
    let audit_errors: Vec<String> = audits
        .iter()
        .chain(std::iter::once(archive_audit))
        .filter(|a| !a.ok())
        .flat_map(|a| std::iter::once(a.to_string()).chain(a.examples.clone()))
        .collect();
    Ok((table_rows, audits, audit_errors))
}

/// Reads every archived reading back and compares it with the ledger:
/// each (vin, ts, metric) once, and per (vin, window, metric) the count,
/// sum, min and max that were published. Returns the audit and the files.
fn audit_archive(dir: &std::path::Path, ledger: &Ledger) -> Result<(TableAudit, usize), String> {
    let files = crate::archive::read::files(dir).map_err(|e| e.to_string())?;
    let mut seen = std::collections::HashSet::new();
    let mut landed = Vec::new();
    let mut twice = 0u64;
    for f in &files {
        for (vin, ts, metric, value) in crate::archive::read::readings(f)? {
            if !seen.insert((vin.clone(), ts, metric.clone())) {
                twice += 1;
            }
            let w = ledger.window_ms;
            landed.push(loadgen::ledger::LandedRow {
                vin,
                window_ms: ts.div_euclid(w) * w,
                metric,
                agg: loadgen::ledger::Agg::one(value),
            });
        }
    }
    let mut a = loadgen::ledger::audit_aggregates("archive (Parquet)", ledger, landed);
    if twice > 0 {
        a.duplicated = a.duplicated.max(twice);
        a.examples.push(format!("{twice} readings archived twice"));
    }
    Ok((a, files.len()))
}
