//! `loadgen bench`: the end-to-end benchmark on one machine.
//!
//! It starts mosquitto (a temporary config on a free loopback port), then for
//! each rate of the ladder:
//!
//! 1. a fresh StarRocks emulator (`rockfeed starrocks-emulator`) with the DDL
//!    `rockfeed ddl` prints for the benchmark's config;
//! 2. a fresh `rockfeed run --report DIR` subscribed to the broker, with its
//!    `/metrics` endpoint on a free port; the step starts once `/ready` says
//!    the subscription is in place;
//! 3. the generator at that rate for the step's duration (in-process, open
//!    loop, every reading in a ledger);
//! 4. wait until rockfeed's `rockfeed_readings_total` reaches what was sent
//!    and then stays still for 3 s (duplicates from a redelivery can reach
//!    the count early); the time of the last arrival gives the sustained
//!    rate. Then SIGINT: rockfeed seals, loads what it holds and writes its
//!    report (latency histograms, CPU seconds, peak RSS);
//! 5. audit the emulator's tables against the ledger: loss and duplicates
//!    per table, which must be zero.
//!
//! In the same run it measures the broker's ceiling: the generator
//! unthrottled with the no-op consumer subscribed instead of rockfeed, and
//! then with rockfeed, so rockfeed's throughput is printed as a ratio of
//! what the broker itself delivers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value as J, json};
use tokio::process::{Child, Command};

use crate::audit::{EmulatorTables, audit_emulator};
use crate::fleet::Fleet;
use crate::ledger::Ledger;
use crate::mqtt::{MqttSender, MqttTarget};
use crate::payload::{Generator, Profile};
use crate::run::{ProgressMode, RunOptions, Target};

/// Benchmark settings.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Rates of the ladder, records/s, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "25000,50000,100000,150000,200000")]
    pub rates: Vec<f64>,
    /// Seconds per step.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Seconds of the unthrottled ceiling runs (0 skips them).
    #[arg(long, default_value_t = 10.0)]
    pub ceiling_seconds: f64,
    /// Seconds of the Kafka run: loadgen into librdkafka's mock cluster at
    /// 150k records/s with a no-op consumer (0 skips it).
    #[arg(long, default_value_t = 10.0)]
    pub kafka_seconds: f64,
    /// Seconds of each archive run: rockfeed over MQTT at 150k records/s
    /// with the raw Parquet archive off, then on (and unthrottled off/on
    /// when the ceiling runs are on); 0 skips them.
    #[arg(long, default_value_t = 0.0)]
    pub archive_seconds: f64,
    #[arg(long, default_value = "wide")]
    pub profile: Profile,
    #[arg(long, default_value_t = 1000)]
    pub vehicles: u32,
    #[arg(long, default_value_t = 100)]
    pub metrics: u32,
    /// MQTT QoS of the generator and of rockfeed's subscription.
    #[arg(long, default_value_t = 1)]
    pub qos: u8,
    /// Generator connections.
    #[arg(long, default_value_t = 4)]
    pub connections: u32,
    /// rockfeed shards.
    #[arg(long, default_value_t = 2)]
    pub shards: u32,
    /// rockfeed epoch.
    #[arg(long, default_value = "1s")]
    pub epoch: String,
    /// rockfeed's `pipeline.max_epoch` (pacing's ceiling; equal to
    /// `--epoch`: pacing off). Default: rockfeed's.
    #[arg(long)]
    pub max_epoch: Option<String>,
    /// The emulator's versions per tablet before `too many versions`.
    #[arg(long, default_value_t = 1000)]
    pub emulator_max_versions: u64,
    /// The emulator's compaction: versions removed per tablet per second.
    #[arg(long, default_value_t = 10.0)]
    pub emulator_compaction_per_sec: f64,
    /// rockfeed's WAL I/O path: auto, uring or std.
    #[arg(long, default_value = "auto")]
    pub wal_io: String,
    /// rockfeed's WAL group-commit interval (`wal.commit_interval`).
    #[arg(long, default_value = "2ms")]
    pub wal_commit_interval: String,
    /// The rockfeed binary (default: next to this one).
    #[arg(long)]
    pub rockfeed: Option<PathBuf>,
    /// The mosquitto binary.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    pub mosquitto: PathBuf,
    /// Where configs, logs and reports go.
    #[arg(long, default_value = "target/bench-e2e")]
    pub out: PathBuf,
}

const PASSWORD: &str = "bench";

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| e.to_string())
}

/// A child process killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn log_file(dir: &Path, name: &str) -> Result<Stdio, String> {
    std::fs::File::create(dir.join(name)).map(Stdio::from).map_err(|e| format!("{name}: {e}"))
}

async fn wait_port(port: u16, what: &str) -> Result<(), String> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{what} did not listen on port {port}"))
}

fn mosquitto_conf(port: u16) -> String {
    // Unbounded queues: a slow subscriber must hold the broker's backlog, not
    // lose it (mosquitto drops QoS 1 messages past max_queued_messages). A
    // bounded in-flight window, as in production: unbounded, a reconnect of
    // a backpressured subscriber redelivers everything queued for it.
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 1000\nmax_queued_bytes 0\nlog_type error\n"
    )
}

/// rockfeed's config for one step: a persistent session as in production
/// (a reconnect, e.g. after a keep-alive timeout on an overloaded broker,
/// must not discard what the broker holds), under a client id of its own;
/// [`purge_session`] removes it after the step, so the broker does not
/// queue later steps' traffic for a subscriber that is gone.
fn rockfeed_conf(
    a: &BenchArgs,
    step: &str,
    via: &Via,
    fe: &str,
    metrics_port: u16,
    dir: &Path,
    archive: bool,
) -> String {
    let archive = if archive {
        format!(
            "[archive]\nenabled = true\nurl = \"{}\"\nspool_dir = \"{}\"\n",
            dir.join("archive").display(),
            dir.join("spool").display()
        )
    } else {
        String::new()
    };
    let source = match via {
        Via::Mqtt(port) => format!(
            r#"[source.mqtt]
host = "127.0.0.1"
port = {port}
client_id = "rockfeed-bench-{step}"
clean_session = false
topics = ["telemetry/#"]
qos = {qos}
protocol = "3.1.1"
"#,
            qos = a.qos
        ),
        // Exactly-once, the Kafka default.
        Via::Kafka(brokers) => format!(
            r#"[source.kafka]
brokers = "{brokers}"
group_id = "rockfeed-bench-{step}"
topics = ["telemetry"]
key_is_colocation_key = true
"#
        ),
    };
    let (head, source) = source.split_at(source.find("[source").unwrap_or(0));
    format!(
        r#"[starrocks]
endpoints = ["{fe}"]
database = "rockfeed"
user = "root"
password = "{PASSWORD}"
label_prefix = "bench"
max_attempts = 0
{head}[tables]
latest_metrics = ["speed", "soc", "odometer"]
buckets = 16
replication_num = 1
[pipeline]
shards = {shards}
epoch = "{epoch}"
{max_epoch}state_dir = "{state}"
[wal]
dir = "{wal}"
io = "{wal_io}"
commit_interval = "{wal_commit_interval}"
{source}[telemetry]
listen = "127.0.0.1:{metrics_port}"
[dead_letter]
dir = "{dead}"
{archive}"#,
        shards = a.shards,
        epoch = a.epoch,
        max_epoch = a.max_epoch.as_ref().map(|m| format!("max_epoch = \"{m}\"\n")).unwrap_or_default(),
        dead = dir.join("dead-letter").display(),
        state = dir.join("state").display(),
        wal = dir.join("wal").display(),
        wal_io = a.wal_io,
        wal_commit_interval = a.wal_commit_interval,
    )
}

/// Ends the persistent session `client_id` (a connect with a clean session
/// discards it and its queue).
async fn purge_session(port: u16, client_id: &str) {
    let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_clean_session(true);
    let (c, mut ev) = rumqttc::AsyncClient::new(o, 10);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(e) = ev.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) = e {
                break;
            }
        }
    })
    .await;
    let _ = c.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), ev.poll()).await;
}

/// A Prometheus counter's value from `/metrics` text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = rest.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// One rung of the ladder.
#[derive(Debug, Clone)]
pub struct Step {
    pub target_rate: f64,
    pub sent_rate: f64,
    pub records: u64,
    pub sustained_rate: f64,
    pub missing: u64,
    pub duplicated: u64,
    pub mismatched: u64,
    /// Event time → committed, ms.
    pub e2e: Option<(f64, f64, f64)>,
    pub cpu_s_per_m: Option<f64>,
    /// Every kernel thread's CPU over the step, per million records: see
    /// [`kernel_threads_cpu_seconds`].
    pub kernel_cpu_s_per_m: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub max_behind_ms: f64,
    /// Readings in published archive files and the files (archive on).
    pub archived: Option<(u64, u64)>,
}

impl Step {
    fn json(&self) -> J {
        json!({
            "target_records_per_s": self.target_rate, "sent_records_per_s": self.sent_rate, "records": self.records,
            "sustained_records_per_s": self.sustained_rate, "missing": self.missing, "duplicated": self.duplicated,
            "mismatched": self.mismatched,
            "e2e_ms": self.e2e.map(|(a, b, c)| json!({"p50": a, "p99": b, "max": c})),
            "cpu_seconds_per_million_records": self.cpu_s_per_m,
            "kernel_threads_cpu_seconds_per_million_records": self.kernel_cpu_s_per_m, "peak_rss_mib": self.peak_rss_mib,
            "generator_max_behind_ms": self.max_behind_ms,
            "archived_readings": self.archived.map(|a| a.0), "archive_files": self.archived.map(|a| a.1),
        })
    }
}

/// Where a step's traffic goes: mosquitto on this port, or Kafka brokers.
enum Via {
    Mqtt(u16),
    Kafka(String),
}

struct Env {
    a: BenchArgs,
    rockfeed: PathBuf,
    mqtt_port: u16,
    out: PathBuf,
}

impl Env {
    fn generator(&self, seed: u64) -> (Generator, Ledger) {
        let fleet = Fleet::new(self.a.vehicles, self.a.metrics, seed, "RFBN");
        let ledger = Ledger::new(&fleet.metrics, 60_000);
        (Generator::new(fleet, self.a.profile, "telemetry", 100), ledger)
    }

    /// The bench's MQTT target: the generator's connections at its QoS.
    async fn mqtt(&self) -> Result<Target, String> {
        let mut t = MqttTarget::new("127.0.0.1", self.mqtt_port);
        t.connections = self.a.connections;
        t.qos = self.a.qos;
        Ok(Target::Mqtt(MqttSender::connect(&t).await.map_err(|e| e.to_string())?))
    }

    /// The generator at `rate` for `seconds` into `target`; every message
    /// must be acknowledged.
    async fn send(
        &self,
        rate: f64,
        seconds: f64,
        generator: &mut Generator,
        ledger: &mut Ledger,
        target: Target,
    ) -> Result<crate::run::RunSummary, String> {
        let o = RunOptions {
            progress: ProgressMode::Lines,
            ack_timeout: Duration::from_secs(120),
            ..RunOptions::timed(rate, Duration::from_secs_f64(seconds))
        };
        let s = crate::run::run(generator, self.a.profile, ledger, target, &o, &AtomicBool::new(false)).await?;
        if !s.complete() {
            return Err(format!("the broker acknowledged {} of {} messages", s.delivered, s.messages));
        }
        Ok(s)
    }

    /// The generator into `target` while a no-op consumer (started by
    /// `spawn`) counts what the broker delivers; returns the run and the
    /// time until the consumer had every message.
    async fn via_noop(
        &self,
        rate: f64,
        seconds: f64,
        target: Target,
        narrow_objects: bool,
        spawn: impl FnOnce(
            Arc<crate::consume::Counts>,
            tokio::sync::watch::Sender<bool>,
            tokio::sync::watch::Receiver<bool>,
        ) -> tokio::task::JoinHandle<Result<(), String>>,
    ) -> Result<(crate::run::RunSummary, Duration), String> {
        let counts = Arc::new(crate::consume::Counts::default());
        let (ready_tx, mut ready) = tokio::sync::watch::channel(false);
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let task = spawn(counts.clone(), ready_tx, stop);
        let _ = tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r)).await;
        let (generator, mut ledger) = self.generator(7);
        let mut generator = generator.narrow_as_objects(narrow_objects);
        let started = Instant::now();
        let s = self.send(rate, seconds, &mut generator, &mut ledger, target).await?;
        let deadline = Instant::now() + Duration::from_secs(300);
        while counts.messages.load(Ordering::Relaxed) < s.messages && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = started.elapsed();
        let _ = stop_tx.send(true);
        let _ = task.await;
        let got = counts.messages.load(Ordering::Relaxed);
        if got != s.messages {
            return Err(format!("the no-op consumer received {got} of {} messages", s.messages));
        }
        Ok((s, took))
    }

    /// One step: fresh emulator and rockfeed, `rate` for `seconds`; then
    /// the step's MQTT session is removed, whatever happened.
    async fn step(&self, name: &str, rate: f64, seconds: f64, seed: u64) -> Result<Step, String> {
        self.mqtt_step(name, rate, seconds, seed, false).await
    }

    async fn mqtt_step(&self, name: &str, rate: f64, seconds: f64, seed: u64, archive: bool) -> Result<Step, String> {
        let r = self.run_step(name, rate, seconds, seed, &Via::Mqtt(self.mqtt_port), archive).await;
        purge_session(self.mqtt_port, &format!("rockfeed-bench-{name}")).await;
        r
    }

    async fn run_step(
        &self,
        name: &str,
        rate: f64,
        seconds: f64,
        seed: u64,
        via: &Via,
        archive: bool,
    ) -> Result<Step, String> {
        let dir = self.out.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (fe, be, metrics_port) = (free_port()?, free_port()?, free_port()?);
        let fe_url = format!("http://127.0.0.1:{fe}");
        let conf = dir.join("rockfeed.toml");
        std::fs::write(&conf, rockfeed_conf(&self.a, name, via, &fe_url, metrics_port, &dir, archive))
            .map_err(|e| e.to_string())?;
        let ddl = Command::new(&self.rockfeed)
            .arg("ddl")
            .arg("--config")
            .arg(&conf)
            .output()
            .await
            .map_err(|e| e.to_string())?;
        if !ddl.status.success() {
            return Err(format!("rockfeed ddl: {}", String::from_utf8_lossy(&ddl.stderr)));
        }
        std::fs::write(dir.join("ddl.sql"), &ddl.stdout).map_err(|e| e.to_string())?;
        let _emu = Proc(
            Command::new(&self.rockfeed)
                .args(["starrocks-emulator", "--fe", &format!("127.0.0.1:{fe}"), "--be", &format!("127.0.0.1:{be}")])
                .args(["--max-versions", &self.a.emulator_max_versions.to_string()])
                .args(["--compaction-per-sec", &self.a.emulator_compaction_per_sec.to_string()])
                // No MySQL port: `rockfeed run` does not use it, and a fixed
                // one (9030) would collide with the previous step's emulator
                // while it exits.
                .args(["--query", "off"])
                .arg("--ddl")
                .arg(dir.join("ddl.sql"))
                .env("ROCKFEED_EMULATOR_PASSWORD", PASSWORD)
                .stdout(log_file(&dir, "emulator.log")?)
                .stderr(log_file(&dir, "emulator.err")?)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("{}: {e}", self.rockfeed.display()))?,
        );
        wait_port(fe, "the emulator").await?;
        let report_dir = dir.join("report");
        let mut rf = Proc(
            Command::new(&self.rockfeed)
                .arg("run")
                .arg("--config")
                .arg(&conf)
                .arg("--report")
                .arg(&report_dir)
                .stdout(log_file(&dir, "rockfeed.out")?)
                .stderr(log_file(&dir, "rockfeed.log")?)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| e.to_string())?,
        );
        let metrics_url = format!("http://127.0.0.1:{metrics_port}");
        let ready = async {
            for _ in 0..300 {
                if let Ok((200, _)) = crate::http::get(&format!("{metrics_url}/ready"), None).await {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        };
        if !ready.await {
            return Err(format!("rockfeed was not ready within 30 s (see {})", dir.join("rockfeed.log").display()));
        }

        let kernel_before = kernel_threads_ticks();
        let (generator, mut ledger) = self.generator(seed);
        let (mut generator, target) = match via {
            Via::Mqtt(_) => (generator, self.mqtt().await?),
            Via::Kafka(brokers) => (
                generator.narrow_as_objects(true),
                Target::Kafka(crate::kafka::KafkaSender::connect(&crate::kafka::KafkaTarget::new(
                    brokers,
                    "telemetry",
                ))?),
            ),
        };
        let started = Instant::now();
        let sent = self.send(rate, seconds, &mut generator, &mut ledger, target).await?;
        // Everything received? The count alone is not proof: redelivered
        // duplicates (at-least-once) can reach it while originals are still
        // queued at the broker. So: at least what was sent, then nothing new
        // for QUIET. The time of the last arrival gives the sustained rate.
        const QUIET: Duration = Duration::from_secs(3);
        let deadline = Instant::now() + Duration::from_secs(300);
        let (mut last, mut last_change) = (0u64, started.elapsed());
        let caught_up = loop {
            let got = match crate::http::get(&format!("{metrics_url}/metrics"), None).await {
                Ok((200, b)) => metric_value(&String::from_utf8_lossy(&b), "rockfeed_readings_total").map(|g| g as u64),
                _ => None,
            };
            if let Some(g) = got
                && g != last
            {
                (last, last_change) = (g, started.elapsed());
            }
            if last >= sent.readings && started.elapsed() >= last_change + QUIET {
                break last_change;
            }
            if Instant::now() > deadline {
                return Err(format!("rockfeed received {got:?} of {} readings within 300 s", sent.readings));
            }
            if let Ok(Some(status)) = rf.0.try_wait() {
                return Err(format!(
                    "rockfeed exited ({status}) before receiving everything (see {})",
                    dir.join("rockfeed.log").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let pid = rf.0.id().ok_or("rockfeed exited early")?;
        let _ = Command::new("kill").arg("-INT").arg(pid.to_string()).status().await;
        let status = tokio::time::timeout(Duration::from_secs(120), rf.0.wait()).await;
        match status {
            Ok(Ok(s)) if s.success() => {}
            other => {
                return Err(format!(
                    "rockfeed did not stop cleanly: {other:?} (see {})",
                    dir.join("rockfeed.log").display()
                ));
            }
        }
        let kernel = kernel_before.zip(kernel_threads_ticks()).map(|(a, b)| kernel_threads_cpu_seconds(&a, &b));
        let report: J = std::fs::read_to_string(report_dir.join("report.json"))
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            .map_err(|e| format!("rockfeed's report: {e}"))?;
        let t = EmulatorTables {
            url: fe_url,
            user: "root".into(),
            password: PASSWORD.into(),
            db: "rockfeed".into(),
            telemetry: "telemetry_1m".into(),
            latest: Some("vehicle_latest".into()),
        };
        let audits = audit_emulator(&t, &ledger).await?;
        for r in &audits {
            println!("  audit {r}");
            for e in r.examples.iter().take(5) {
                println!("    {e}");
            }
        }
        let series = report["series"].as_array().cloned().unwrap_or_default();
        let e2e = series
            .iter()
            .find(|s| s["name"] == "event_to_committed")
            .and_then(|s| Some((s["p50"].as_f64()?, s["p99"].as_f64()?, s["max"].as_f64()?)));
        let facts = &report["facts"];
        Ok(Step {
            target_rate: rate,
            sent_rate: sent.measured_rate,
            records: sent.readings,
            sustained_rate: sent.readings as f64 / caught_up.as_secs_f64(),
            missing: audits.iter().map(|a| a.missing).sum(),
            duplicated: audits.iter().map(|a| a.duplicated).sum(),
            mismatched: audits.iter().map(|a| a.mismatched).sum(),
            e2e,
            cpu_s_per_m: facts["cpu_seconds"].as_f64().map(|c| c / (sent.readings.max(1) as f64 / 1e6)),
            kernel_cpu_s_per_m: kernel.map(|c| c / (sent.readings.max(1) as f64 / 1e6)),
            peak_rss_mib: facts["peak_rss_bytes"].as_f64().map(|b| b / (1024.0 * 1024.0)),
            max_behind_ms: sent.max_behind.as_secs_f64() * 1e3,
            archived: facts["archive_readings_published"]
                .as_u64()
                .map(|r| (r, facts["archive_files_published"].as_u64().unwrap_or(0))),
        })
    }

    /// The broker's ceiling: unthrottled generator, no-op consumer.
    async fn noop_ceiling(&self, seconds: f64) -> Result<(f64, f64), String> {
        let (port, qos) = (self.mqtt_port, self.a.qos);
        let (s, took) = self
            .via_noop(0.0, seconds, self.mqtt().await?, false, move |c, ready, stop| {
                tokio::spawn(async move {
                    crate::consume::mqtt("127.0.0.1", port, "telemetry/#", qos, c, ready, stop).await
                })
            })
            .await?;
        // Records/s delivered end to end, and records/s the generator offered.
        Ok((s.readings as f64 / took.as_secs_f64(), s.measured_rate))
    }
}

/// A Kafka run: records/s offered, sent, and delivered through the broker
/// to the no-op consumer.
#[derive(Debug, Clone, Copy)]
struct KafkaRow {
    offered: f64,
    sent: f64,
    consumed: f64,
    records: u64,
}

impl Env {
    /// loadgen → mock cluster (3 brokers, 6 partitions) → no-op consumer.
    async fn kafka(&self, rate: f64, seconds: f64) -> Result<KafkaRow, String> {
        let mock = crate::kafka::mock_cluster(3, "telemetry", 6)?;
        let brokers = mock.bootstrap_servers();
        let target =
            Target::Kafka(crate::kafka::KafkaSender::connect(&crate::kafka::KafkaTarget::new(&brokers, "telemetry"))?);
        let (s, took) = self
            .via_noop(rate, seconds, target, true, move |c, ready, stop| {
                tokio::spawn(async move { crate::consume::kafka(&brokers, "telemetry", c, ready, stop).await })
            })
            .await?;
        drop(mock);
        Ok(KafkaRow {
            offered: rate,
            sent: s.measured_rate,
            consumed: s.readings as f64 / took.as_secs_f64(),
            records: s.readings,
        })
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "-".into())
}

/// Runs the benchmark and prints the table.
pub async fn bench(a: BenchArgs) -> Result<(), String> {
    let rockfeed = match &a.rockfeed {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("rockfeed"),
    };
    if !rockfeed.exists() {
        return Err(format!(
            "{} not found: build it (cargo build --release --workspace) or pass --rockfeed",
            rockfeed.display()
        ));
    }
    if !a.mosquitto.exists() {
        return Err(format!("{} not found: apt-get install mosquitto (benches/e2e.sh does)", a.mosquitto.display()));
    }
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let out = std::fs::canonicalize(&a.out).map_err(|e| e.to_string())?;
    let mqtt_port = free_port()?;
    std::fs::write(out.join("mosquitto.conf"), mosquitto_conf(mqtt_port)).map_err(|e| e.to_string())?;
    let _broker = Proc(
        Command::new(&a.mosquitto)
            .arg("-c")
            .arg(out.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log_file(&out, "mosquitto.log")?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", a.mosquitto.display()))?,
    );
    wait_port(mqtt_port, "mosquitto").await?;
    let machine = machine();
    println!("loadgen bench on {machine}");
    println!(
        "profile {:?}, {} vehicles × {} metrics, QoS {}, {} s per step, rockfeed {} shards, epoch {}",
        a.profile, a.vehicles, a.metrics, a.qos, a.seconds, a.shards, a.epoch
    );
    let env = Env { a: a.clone(), rockfeed, mqtt_port, out: out.clone() };
    let mut steps = Vec::new();
    let mut failures = Vec::new();
    for (i, &rate) in a.rates.iter().enumerate() {
        println!("== step {rate:.0} records/s");
        match env.step(&format!("rate-{rate:.0}"), rate, a.seconds, 100 + i as u64).await {
            Ok(s) => steps.push(s),
            Err(e) => {
                println!("  step failed: {e}");
                failures.push(format!("{rate:.0}: {e}"));
            }
        }
    }
    let mut ceiling = None;
    if a.ceiling_seconds > 0.0 {
        println!("== broker ceiling: unthrottled generator, no-op consumer");
        let noop = env.noop_ceiling(a.ceiling_seconds).await?;
        println!("== rockfeed unthrottled");
        match env.step("unthrottled", 0.0, a.ceiling_seconds, 99).await {
            Ok(s) => ceiling = Some((noop, s)),
            Err(e) => failures.push(format!("unthrottled: {e}")),
        }
    }

    let mut kafka_rows = Vec::new();
    let mut kafka_step: Option<Step> = None;
    if a.kafka_seconds > 0.0 {
        // 150k records/s: the rate the generator must hold into Kafka on its
        // own. (An unthrottled run would measure how fast the in-memory mock
        // cluster drains afterwards, not the generator.)
        let rate = 150_000.0;
        println!("== Kafka (mock cluster), {rate:.0} records/s");
        match env.kafka(rate, a.kafka_seconds).await {
            Ok(r) => kafka_rows.push(r),
            Err(e) => {
                println!("  Kafka run failed: {e}");
                failures.push(format!("Kafka {rate:.0}: {e}"));
            }
        }
        println!("== rockfeed (exactly-once) from Kafka (mock cluster), {rate:.0} records/s");
        let mock = crate::kafka::mock_cluster(3, "telemetry", 6)?;
        match env.run_step("kafka", rate, a.kafka_seconds, 11, &Via::Kafka(mock.bootstrap_servers()), false).await {
            Ok(s) => kafka_step = Some(s),
            Err(e) => failures.push(format!("rockfeed from Kafka {rate:.0}: {e}")),
        }
        drop(mock);
    }

    let mut archive_runs: Vec<(&str, Step)> = Vec::new();
    if a.archive_seconds > 0.0 {
        let mut runs = vec![("150k, archive off", 150_000.0, false), ("150k, archive on", 150_000.0, true)];
        if a.ceiling_seconds > 0.0 {
            runs.push(("unthrottled, archive off", 0.0, false));
            runs.push(("unthrottled, archive on", 0.0, true));
        }
        for (i, (label, rate, on)) in runs.into_iter().enumerate() {
            println!("== {label} (MQTT)");
            let name = format!("archive-{}-{}", if on { "on" } else { "off" }, if rate > 0.0 { "150k" } else { "max" });
            match env.mqtt_step(&name, rate, a.archive_seconds, 200 + (i as u64 / 2), on).await {
                Ok(s) => {
                    if on && s.archived.map(|x| x.0) != Some(s.records) {
                        failures.push(format!("{label}: {:?} readings archived of {}", s.archived, s.records));
                    }
                    archive_runs.push((label, s));
                }
                Err(e) => failures.push(format!("{label}: {e}")),
            }
        }
    }

    const HEADER: &str = "| offered rec/s | sent rec/s | sustained rec/s | lost | duplicated | e2e p50 ms | e2e p99 ms | e2e max ms | CPU s per M rec | kernel threads CPU s per M | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
    let mut table = String::from(HEADER);
    let row = |s: &Step, offered: String| {
        format!(
            "| {offered} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.sent_rate,
            s.sustained_rate,
            s.missing,
            s.duplicated + s.mismatched,
            fmt_opt(s.e2e.map(|e| e.0), 0),
            fmt_opt(s.e2e.map(|e| e.1), 0),
            fmt_opt(s.e2e.map(|e| e.2), 0),
            fmt_opt(s.cpu_s_per_m, 2),
            fmt_opt(s.kernel_cpu_s_per_m, 2),
            fmt_opt(s.peak_rss_mib, 0)
        )
    };
    for s in &steps {
        table.push_str(&row(s, format!("{:.0}", s.target_rate)));
    }
    let mut summary = json!({"machine": machine, "args": format!("{a:?}"), "steps": steps.iter().map(Step::json).collect::<Vec<_>>()});
    if let Some(((noop_rate, noop_offered), s)) = &ceiling {
        table.push_str(&row(s, "unthrottled".into()));
        let ratio = s.sustained_rate / noop_rate;
        table.push_str(&format!(
            "\nBroker ceiling (no-op consumer, unthrottled generator offering {noop_offered:.0} rec/s): {noop_rate:.0} rec/s; rockfeed unthrottled: {:.0} rec/s = {:.2} of the ceiling.\n",
            s.sustained_rate, ratio
        ));
        summary["ceiling"] = json!({"noop_records_per_s": noop_rate, "noop_offered_records_per_s": noop_offered, "rockfeed": s.json(), "ratio": ratio});
    }
    if !kafka_rows.is_empty() {
        table.push_str("\nKafka (librdkafka mock cluster, 3 brokers, 6 partitions, in the loadgen process), no-op consumer:\n\n| offered rec/s | sent rec/s | consumed rec/s (end to end) | records |\n|---|---|---|---|\n");
        for r in &kafka_rows {
            table.push_str(&format!("| {:.0} | {:.0} | {:.0} | {} |\n", r.offered, r.sent, r.consumed, r.records));
        }
        summary["kafka"] = json!(
            kafka_rows
                .iter()
                .map(|r| json!({"offered": r.offered, "sent": r.sent, "consumed": r.consumed, "records": r.records}))
                .collect::<Vec<_>>()
        );
    }
    if let Some(s) = &kafka_step {
        table.push_str("\nrockfeed from Kafka, exactly-once (epochs with 2PC), same mock cluster setup:\n\n");
        table.push_str(HEADER);
        table.push_str(&row(s, format!("{:.0}", s.target_rate)));
        if let Some(r) = kafka_rows.first() {
            let ratio = s.sustained_rate / r.consumed;
            table.push_str(&format!(
                "\nrockfeed sustained {:.0} rec/s against the no-op consumer's {:.0}: {ratio:.2}.\n",
                s.sustained_rate, r.consumed
            ));
            summary["kafka_rockfeed_ratio"] = json!(ratio);
        }
        summary["kafka_rockfeed"] = s.json();
    }
    if !archive_runs.is_empty() {
        table.push_str("\nRaw Parquet archive off and on, rockfeed over MQTT, same run:\n\n| run | sent rec/s | sustained rec/s | lost | duplicated | e2e p99 ms | CPU s per M rec | peak RSS MiB | archived readings | files |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for (label, s) in &archive_runs {
            table.push_str(&format!(
                "| {label} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} |\n",
                s.sent_rate,
                s.sustained_rate,
                s.missing,
                s.duplicated + s.mismatched,
                fmt_opt(s.e2e.map(|e| e.1), 0),
                fmt_opt(s.cpu_s_per_m, 2),
                fmt_opt(s.peak_rss_mib, 0),
                s.archived.map(|x| x.0.to_string()).unwrap_or_else(|| "-".into()),
                s.archived.map(|x| x.1.to_string()).unwrap_or_else(|| "-".into()),
            ));
        }
        let pair = |p: &str| {
            let off = archive_runs.iter().find(|(l, _)| l.starts_with(p) && l.ends_with("off"))?;
            let on = archive_runs.iter().find(|(l, _)| l.starts_with(p) && l.ends_with(" on"))?;
            Some((on.1.sustained_rate / off.1.sustained_rate, on.1.cpu_s_per_m? / off.1.cpu_s_per_m?))
        };
        let mut ratios = serde_json::Map::new();
        for p in ["150k", "unthrottled"] {
            if let Some((thr, cpu)) = pair(p) {
                table.push_str(&format!(
                    "\n{p}: archive on / off sustained throughput {thr:.3}, CPU per reading {cpu:.2}.\n"
                ));
                ratios.insert(p.into(), json!({"throughput_ratio": thr, "cpu_ratio": cpu}));
            }
        }
        summary["archive"] = json!({
            "runs": archive_runs.iter().map(|(l, s)| json!({"run": l, "step": s.json()})).collect::<Vec<_>>(),
            "ratios": ratios,
        });
    }
    println!("\n{table}");
    std::fs::write(out.join("bench.md"), &table).map_err(|e| e.to_string())?;
    std::fs::write(out.join("bench.json"), serde_json::to_string_pretty(&summary).unwrap_or_default())
        .map_err(|e| e.to_string())?;
    println!("results: {} and bench.json; per-step reports under rate-*/report/", out.join("bench.md").display());
    let lossy: Vec<String> = steps
        .iter()
        .chain(ceiling.as_ref().map(|c| &c.1))
        .chain(kafka_step.as_ref())
        .chain(archive_runs.iter().map(|r| &r.1))
        .filter(|s| s.missing + s.duplicated + s.mismatched > 0)
        .map(|s| format!("{:.0} rec/s", s.target_rate))
        .collect();
    if !lossy.is_empty() {
        failures.push(format!("the audit found loss or duplicates at {}", lossy.join(", ")));
    }
    if failures.is_empty() { Ok(()) } else { Err(failures.join("; ")) }
}

/// CPU seconds that the machine's kernel threads (the children of
/// kthreadd, pid 2) spent between two snapshots, `before` and `after`. The
/// kernel does some of a process' work outside the process' own
/// accounting: the device flush of an `O_DSYNC` direct write completed
/// through io_uring runs in a kernel worker, as do the journal's commits
/// and softirqs deferred to ksoftirqd. Reported beside rockfeed's own CPU
/// so that moving work into the kernel does not pass for saving it.
/// Machine-wide: it includes what the broker and the generator cause. A
/// thread that exits between the snapshots takes its time with it.
fn kernel_threads_cpu_seconds(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> f64 {
    let ticks: u64 = after.iter().map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0))).sum();
    // Clock ticks are USER_HZ, 100 on every Linux architecture rockfeed
    // builds for.
    ticks as f64 / 100.0
}

/// Each kernel thread's CPU so far, in clock ticks, by pid; `None` without
/// `/proc`.
fn kernel_threads_ticks() -> Option<HashMap<u32, u64>> {
    let mut ticks = HashMap::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // After the command's closing parenthesis: state, ppid, ... utime
        // (12th) and stime (13th).
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1) == Some(&"2") {
            let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            ticks.insert(pid, field(11) + field(12));
        }
    }
    Some(ticks)
}

/// CPU model and core count, for the report.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_prometheus_text() {
        let t = "# HELP x y\n# TYPE rockfeed_readings_total counter\nrockfeed_readings_total 1234\nrockfeed_readings_total_x 5\n";
        assert_eq!(metric_value(t, "rockfeed_readings_total"), Some(1234.0));
        assert_eq!(metric_value(t, "missing"), None);
    }

    #[test]
    fn kernel_thread_time_is_what_each_thread_spent_between_the_snapshots() {
        // Thread 1 ran 5 ticks, 2 exited (its time is gone), 3 started and ran 7.
        let before = HashMap::from([(1, 10), (2, 5)]);
        let after = HashMap::from([(1, 15), (3, 7)]);
        assert!((kernel_threads_cpu_seconds(&before, &after) - 0.12).abs() < 1e-9);
        // This machine has kernel threads (kthreadd's children).
        assert!(kernel_threads_ticks().is_some_and(|t| !t.is_empty()));
    }
}
