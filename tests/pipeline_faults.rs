//! The pipeline (`app::run_wal`: the WAL read under the epoch coordinator,
//! as `rockfeed run` runs it for MQTT) under StarRocks faults, in both
//! delivery modes:
//! - transient faults (too many versions, memory limit, commit transport
//!   error in both branches, connection reset mid-body, publish timeout, no
//!   backend alive, busy BE) on a share of all calls: the aggregate table
//!   still equals the input exactly;
//! - the destination refusing rockfeed (HTTP 401 on every call): nothing is
//!   dead-lettered, `/ready`'s health says why, and once StarRocks takes
//!   loads again everything lands exactly;
//! - rows StarRocks refuses for what they hold: dead-lettered as CSV with
//!   their table, label and columns, every reading accounted for;
//! - bodies over the row limit, compressed bodies, and a stop that leaves
//!   records in the WAL for the next start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

use rockfeed::sink::starrocks::service::{RetryPolicy, StreamLoader};
use rockfeed::starrocks::ddl::parse_ddl;
use rockfeed::starrocks::types::Value;
use rockfeed::starrocks_emulator::faults::FaultRule;
use rockfeed::starrocks_emulator::{Emulator, EmulatorConfig, now_ms};
use rockfeed::telemetry::Stats;
use rockfeed::wal::{Record, Wal, WalConfig};
use tokio::sync::watch;

const DDL: &str = "CREATE DATABASE rockfeed; USE rockfeed;
CREATE TABLE telemetry_1m (
  vehicle_id VARCHAR(64) NOT NULL, window_start DATETIME NOT NULL, metric VARCHAR(128) NOT NULL,
  cnt BIGINT SUM DEFAULT \"0\", total DOUBLE SUM DEFAULT \"0\", `min` DOUBLE MIN, `max` DOUBLE MAX
) AGGREGATE KEY(vehicle_id, window_start, metric)
PARTITION BY date_trunc('day', window_start) DISTRIBUTED BY HASH(vehicle_id) BUCKETS 8;";

type Totals = BTreeMap<(String, i64, String), (u64, f64)>;

fn config(dir: &std::path::Path, delivery: &str, extra: &str) -> rockfeed::config::Config {
    let text = format!(
        r#"
[starrocks]
endpoints = ["http://127.0.0.1:1"]
database = "rockfeed"
user = "root"
password = "pw"
label_prefix = "faults"
delivery = "{delivery}"
[tables]
dims = []
buckets = 8
replication_num = 1
[pipeline]
shards = 2
epoch = "150ms"
state_dir = "{dir}/state"
[wal]
dir = "{dir}/wal"
[dead_letter]
dir = "{dir}/dead"
{extra}"#,
        dir = dir.display()
    );
    rockfeed::config::Config::parse(&text).unwrap()
}

/// A fast retry policy: faults on a share of calls cost milliseconds.
fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 0,
        base: Duration::from_millis(5),
        throttle_base: Duration::from_millis(10),
        max: Duration::from_millis(50),
        label_wait: Duration::from_secs(10),
    }
}

/// The pipeline over a WAL in `dir`, running until stopped.
struct Run {
    wal: Arc<Wal>,
    stats: Arc<Stats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), rockfeed::app::AppError>>,
}

fn start(cfg: &rockfeed::config::Config, loader: Arc<StreamLoader>) -> Run {
    let stats = Arc::new(Stats::default());
    let wal = Wal::open(WalConfig { dir: cfg.wal.dir.clone(), ..Default::default() }, stats.clone()).unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let (cfg, w, s) = (cfg.clone(), wal.clone(), stats.clone());
    let task = tokio::spawn(async move { rockfeed::app::run_wal(&cfg, w, loader, s, stop_rx).await });
    Run { wal, stats, stop, task }
}

impl Run {
    async fn stop(self) -> Arc<Stats> {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(60), self.task).await.unwrap().unwrap().unwrap();
        let wal = self.wal;
        tokio::task::spawn_blocking(move || wal.close()).await.unwrap();
        self.stats
    }
}

/// Appends `n` wide messages over ~`n * 10` ms (vins from `vin`) and
/// returns the expected totals.
async fn feed(wal: &Wal, n: u32, vin: impl Fn(u32) -> String) -> Totals {
    feed_frames(wal, n, vin).await.0
}

/// [`feed`], and the bytes of the frames appended.
async fn feed_frames(wal: &Wal, n: u32, vin: impl Fn(u32) -> String) -> (Totals, u64) {
    let mut exp = Totals::new();
    let mut bytes = 0;
    for i in 0..n {
        let now = now_ms() as i64;
        let vin = vin(i);
        let (a, b) = (i as f64, (i % 7) as f64 * 0.5);
        let p = format!(r#"{{"vin":"{vin}","ts":{now},"seq":{i},"metrics":{{"a":{a},"b":{b}}}}}"#);
        for (m, v) in [("a", a), ("b", b)] {
            let e = exp.entry((vin.clone(), now - now.rem_euclid(60_000), m.into())).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += v;
        }
        let r = Record { qos: 1, received_ms: now, topic: "t".into(), payload: p.into() };
        bytes += r.frame_len() as u64;
        wal.append(r);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (exp, bytes)
}

fn nine(i: u32) -> String {
    format!("V{:03}", i % 9)
}

fn table(emu: &Emulator) -> Totals {
    emu.with_core(|c| c.table("rockfeed", "telemetry_1m").unwrap().rows())
        .into_iter()
        .map(|r| {
            let w = match r[1] {
                Value::DateTime(t) => t / 1000,
                _ => panic!("window_start is not a DATETIME"),
            };
            ((r[0].to_string(), w, r[2].to_string()), (r[3].as_f64().unwrap() as u64, r[4].as_f64().unwrap()))
        })
        .collect()
}

fn assert_same(got: &Totals, want: &Totals) {
    assert_eq!(got.len(), want.len());
    for (k, (c, s)) in want {
        let g = got.get(k).unwrap_or_else(|| panic!("missing {k:?}"));
        assert_eq!(g.0, *c, "count of {k:?}: a duplicate or a loss");
        assert!((g.1 - s).abs() < 1e-9, "sum of {k:?}: {} vs {s}", g.1);
    }
}

/// Waits until the table holds `want` (or `limit` passes).
async fn settles(emu: &Emulator, want: &Totals, limit: Duration) {
    let end = tokio::time::Instant::now() + limit;
    while table(emu) != *want && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::local(parse_ddl(DDL).unwrap(), "root", "pw")).await.unwrap()
}

/// An emulator whose compaction removes `per_sec` versions per tablet per
/// second and refuses loads past `max` versions.
async fn slow_compaction(max: u64, per_sec: f64) -> Emulator {
    let mut ec = EmulatorConfig::local(parse_ddl(DDL).unwrap(), "root", "pw");
    ec.versions =
        rockfeed::starrocks_emulator::engine::VersionPolicy { max_versions: max, compaction_per_sec: per_sec };
    Emulator::start(ec).await.unwrap()
}

async fn transient_faults(delivery: &str) {
    let emu = emulator().await;
    for f in [
        "too_many_versions",
        "mem_limit",
        "commit_unknown_committed",
        "commit_unknown_aborted",
        "reset_mid_body",
        "publish_timeout",
        "no_backend_alive",
        "http_concurrency_limit",
    ] {
        let extra = if f == "publish_timeout" { r#","delay_ms":300"# } else { "" };
        let rule: FaultRule = serde_json::from_str(&format!(r#"{{"fault":"{f}","percent":5{extra}}}"#)).unwrap();
        emu.faults().add(rule).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let run = start(&config(dir.path(), delivery, ""), common::loader(&emu, "pw", "rockfeed", fast()));
    let want = feed(&run.wal, 150, nine).await;
    settles(&emu, &want, Duration::from_secs(30)).await;
    let stats = run.stop().await;
    let fired = emu.faults().fired().len();
    assert!(fired >= 3, "faults should have fired on some calls, fired {fired}");
    assert_eq!(stats.loads_failed.load(Ordering::Relaxed), 0);
    // Publish timeouts become visible a little later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_same(&table(&emu), &want);
    assert!(rockfeed::deadletter::read_all(&dir.path().join("dead")).unwrap_or_default().is_empty());
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_on_a_share_of_calls_change_nothing_in_the_table_exactly_once() {
    transient_faults("exactly-once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_on_a_share_of_calls_change_nothing_in_the_table_at_least_once() {
    transient_faults("at-least-once").await;
}

/// StarRocks refuses every call with HTTP 401 (as with a wrong password):
/// the data is not at fault, so nothing goes to dead letters; the health
/// says why; when StarRocks takes loads again, everything lands once.
async fn refused_destination(delivery: &str) {
    let emu = emulator().await;
    let rule: FaultRule = serde_json::from_str(r#"{"fault":"unauthorized","always":true}"#).unwrap();
    emu.faults().add(rule).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let loader = common::loader(&emu, "pw", "rockfeed", fast());
    let health = loader.health().clone();
    let run = start(&config(dir.path(), delivery, ""), loader);
    let want = feed(&run.wal, 30, nine).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let down = health.down().expect("the destination is reported down");
    assert!(down.contains("401") && down.contains("ROCKFEED_STARROCKS_PASSWORD"), "{down}");
    assert!(table(&emu).is_empty());
    assert_eq!(run.stats.loads_failed.load(Ordering::Relaxed), 0, "no load counts as failed for its data");
    assert!(rockfeed::deadletter::read_all(&dir.path().join("dead")).unwrap_or_default().is_empty());
    emu.faults().clear();
    settles(&emu, &want, Duration::from_secs(30)).await;
    assert!(health.down().is_none(), "the episode ended");
    run.stop().await;
    assert_same(&table(&emu), &want);
    emu.shutdown().await;
}

/// A stop while StarRocks refuses every call, even during recovery (which
/// waits for StarRocks' answer), ends the run promptly; the data stays in
/// the WAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_the_destination_refuses_ends_promptly() {
    let emu = emulator().await;
    let rule: FaultRule = serde_json::from_str(r#"{"fault":"unauthorized","always":true}"#).unwrap();
    emu.faults().add(rule).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = start(&config(dir.path(), "exactly-once", ""), common::loader(&emu, "pw", "rockfeed", fast()));
    feed(&run.wal, 5, nine).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), run.task).await.expect("stopped within 10 s").unwrap().unwrap();
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_destination_waits_and_never_dead_letters_exactly_once() {
    refused_destination("exactly-once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_destination_waits_and_never_dead_letters_at_least_once() {
    refused_destination("at-least-once").await;
}

/// Rows StarRocks refuses (a vin too long for the table's VARCHAR(8)):
/// their body is dead-lettered as plain CSV with what a replay needs, and
/// every reading is either in the table or in a dead letter, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_rows_are_dead_lettered_as_replayable_csv() {
    let ddl = DDL.replace("vehicle_id VARCHAR(64)", "vehicle_id VARCHAR(8)");
    let emu = Emulator::start(EmulatorConfig::local(parse_ddl(&ddl).unwrap(), "root", "pw")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "exactly-once", "");
    cfg.starrocks.compression = rockfeed::sink::starrocks::encode::Compression::Lz4;
    let run = start(&cfg, common::loader(&emu, "pw", "rockfeed", fast()));
    let want = feed(&run.wal, 40, |i| if i % 4 == 0 { format!("LONGVIN{i:05}") } else { nine(i) }).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    run.stop().await;
    let dead = rockfeed::deadletter::read_all(&dir.path().join("dead")).unwrap();
    assert!(!dead.is_empty());
    let mut landed = table(&emu);
    for d in &dead {
        assert_eq!(d["reason"], "load_rejected");
        assert!(d["detail"].as_str().unwrap().contains("too many filtered rows"), "{d}");
        let meta: rockfeed::deadletter::LoadMeta = serde_json::from_value(d["stream_load"].clone()).unwrap();
        assert_eq!(meta.table, "telemetry_1m");
        assert!(meta.label.starts_with("faults-telemetry_1m-"), "{}", meta.label);
        assert!(meta.columns.starts_with("`vehicle_id`,`window_start`,`metric`"), "{}", meta.columns);
        assert_eq!(meta.column_separator, "\\x01");
        // Plain CSV (the body was sent lz4-compressed): rows of
        // vin, window, metric, cnt, total, min, max (no dims here).
        for line in d["payload"].as_str().unwrap().lines() {
            let f: Vec<&str> = line.split('\x01').collect();
            let w = rockfeed::starrocks::text::parse_datetime(f[1]).unwrap() / 1000;
            let e = landed.entry((f[0].to_string(), w, f[2].to_string())).or_insert((0, 0.0));
            e.0 += f[3].parse::<u64>().unwrap();
            e.1 += f[4].parse::<f64>().unwrap();
        }
    }
    assert!(table(&emu).keys().all(|(vin, _, _)| vin.len() <= 8));
    assert_same(&landed, &want);
    // Replayed into a table that takes them: every refused body loads once,
    // and a second replay loads nothing twice.
    let wide = Emulator::start(EmulatorConfig::local(parse_ddl(DDL).unwrap(), "root", "pw")).await.unwrap();
    let loader = common::loader(&wide, "pw", "rockfeed", fast());
    let r = rockfeed::deadletter::replay(&dir.path().join("dead"), &loader).await.unwrap();
    assert_eq!((r.loaded, r.already, r.refused.len()), (dead.len() as u64, 0, 0));
    let r = rockfeed::deadletter::replay(&dir.path().join("dead"), &loader).await.unwrap();
    assert_eq!((r.loaded, r.already), (0, dead.len() as u64));
    let mut both = table(&emu);
    for (k, (c, t)) in table(&wide) {
        let e = both.entry(k).or_insert((0, 0.0));
        e.0 += c;
        e.1 += t;
    }
    assert_same(&both, &want);
    wide.shutdown().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_row_limit_load_under_labels_of_their_own() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    // Epochs far apart: only the row limit and the stop cut bodies.
    let mut cfg = config(dir.path(), "at-least-once", "");
    cfg.pipeline.epoch = rockfeed::config::Dur(Duration::from_secs(3600));
    cfg.pipeline.max_rows_per_load = 6;
    let run = start(&cfg, common::loader(&emu, "pw", "rockfeed", RetryPolicy::default()));
    let want = feed(&run.wal, 60, nine).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = run.stop().await;
    let loads = stats.loads.load(Ordering::Relaxed);
    assert!(loads >= 10, "expected early bodies, got {loads} loads");
    let labels: Vec<String> = emu
        .with_core(|c| c.registry.all().filter(|t| t.label.starts_with("faults-")).map(|t| t.label.clone()).collect());
    assert_eq!(labels.len() as u64, loads, "every body had its own label: {labels:?}");
    assert!(labels.iter().any(|l| l.ends_with("_1")), "{labels:?}");
    assert_same(&table(&emu), &want);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_load_exactly() {
    for comp in ["gzip", "lz4", "zstd"] {
        let emu = emulator().await;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), "exactly-once", "");
        cfg.starrocks.compression = serde_json::from_value(serde_json::json!(comp)).unwrap();
        let run = start(&cfg, common::loader(&emu, "pw", "rockfeed", RetryPolicy::default()));
        let want = feed(&run.wal, 20, nine).await;
        settles(&emu, &want, Duration::from_secs(20)).await;
        let stats = run.stop().await;
        assert_eq!(stats.loads_failed.load(Ordering::Relaxed), 0, "{comp}");
        assert_same(&table(&emu), &want);
        emu.shutdown().await;
    }
}

/// A stop loses nothing: what the last epoch did not take stays in the WAL
/// and the next start loads it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_leaves_what_was_not_loaded_in_the_wal_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let emu = emulator().await;
    let cfg = config(dir.path(), "exactly-once", "");
    let loader = || common::loader(&emu, "pw", "rockfeed", RetryPolicy::default());
    let run = start(&cfg, loader());
    let now = now_ms() as i64;
    for i in 0..500 {
        let p = format!(r#"{{"vin":"Q{:03}","ts":{now},"seq":{i},"metrics":{{"a":1}}}}"#, i % 20);
        run.wal.append(Record { qos: 1, received_ms: now, topic: "t".into(), payload: p.into() });
    }
    run.wal.durable().wait_for(|&d| d > 500).await.unwrap();
    // Stopped at once: the last epoch takes what reached the pipeline.
    let first = run.stop().await.readings_committed.load(Ordering::Relaxed);
    let cnt = || -> u64 {
        emu.with_core(|c| {
            c.table("rockfeed", "telemetry_1m").unwrap().rows().iter().map(|r| r[3].as_f64().unwrap() as u64).sum()
        })
    };
    assert_eq!(cnt(), first, "what the first run committed is in the table");
    let run = start(&cfg, loader());
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while cnt() < 500 && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.stop().await;
    assert_eq!(cnt(), 500, "the rest was loaded by the next start, nothing twice");
    emu.shutdown().await;
}

/// Issue 14: StarRocks loses transactions of a decided epoch, and the WAL
/// still holds the epoch's range, so nothing is lost. Epoch 5 is decided in
/// the WAL's ledger (through `WalSource::decide`, which records where the
/// range began). Shard 0's transaction was prepared with a 1 s prepared
/// timeout that expired while rockfeed was down (ABORTED by StarRocks);
/// shard 1's was aborted earlier and rockfeed died while loading it again
/// (a begun re-load, still PREPARE). At the next start, recovery rolls the
/// re-load back, re-reads the range from the WAL, rebuilds both shards'
/// rows, loads them under the same labels and commits: the table is
/// exact, nothing is counted lost, no transaction is left open, and the
/// rows loaded into the expired transaction (a canary) are not in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_transactions_of_a_decided_epoch_are_rebuilt_from_the_wal_under_their_labels() {
    use rockfeed::model::epoch::{Decision, EpochSource, Positions};
    use rockfeed::wal::{STREAM, WalSource};
    let dir = tempfile::tempdir().unwrap();
    let emu = emulator().await;
    let cfg = config(dir.path(), "exactly-once", "");
    let loader = common::loader(&emu, "pw", "rockfeed", fast());
    let wal =
        Wal::open(WalConfig { dir: cfg.wal.dir.clone(), ..Default::default() }, Arc::new(Stats::default())).unwrap();
    let n = 60;
    // A new WAL starts at position 0: the last record ends at `end`.
    let (want, end) = feed_frames(&wal, n, nine).await;
    wal.durable().wait_for(|&d| d >= n as u64).await.unwrap();
    let d = Decision {
        prefix: "faults".into(),
        epoch: 5,
        shards: 2,
        tables: vec!["telemetry_1m".into()],
        ..Default::default()
    };
    let positions: Positions = [((Arc::<str>::from(STREAM), 0), end as i64)].into_iter().collect();
    WalSource { wal: wal.clone() }.decide(&d, &positions).await.unwrap();
    tokio::task::spawn_blocking(move || wal.close()).await.unwrap();

    let call = |path: &'static str, label: &'static str, extra: &[(&'static str, &'static str)], body: &'static str| {
        let client = loader.client();
        let mut h = http::HeaderMap::new();
        h.insert("label", http::HeaderValue::from_static(label));
        h.insert("db", http::HeaderValue::from_static("rockfeed"));
        h.insert("table", http::HeaderValue::from_static("telemetry_1m"));
        for (k, v) in extra {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        async move {
            let r =
                client.request(http::Method::POST, path, &h, bytes::Bytes::from_static(body.as_bytes())).await.unwrap();
            assert_eq!(r.status, 200, "{path} {label}");
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["Status"], "OK", "{path} {label}: {v}");
        }
    };
    // Shard 0: prepared (a canary row), its prepared timeout runs out.
    let l0 = "faults-telemetry_1m-0-5";
    call("/api/transaction/begin", l0, &[], "").await;
    call("/api/transaction/load", l0, &[("column_separator", ",")], "GHOST,2026-01-01 00:00:00,x,1,1,1,1\n").await;
    call("/api/transaction/prepare", l0, &[("prepared_timeout", "1")], "").await;
    // Shard 1: a re-load begun, never prepared.
    let l1 = "faults-telemetry_1m-1-5";
    call("/api/transaction/begin", l1, &[], "").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let state = |l: &str| emu.with_core(|c| c.registry.by_label("rockfeed", l).map(|t| t.state.name()));
    let open = || -> Vec<String> {
        emu.with_core(|c| c.registry.all().filter(|t| t.state.is_running()).map(|t| t.label.clone()).collect())
    };
    assert_eq!(open(), [l1], "shard 0's prepared timeout expired while rockfeed was down");

    let run = start(&cfg, loader.clone());
    settles(&emu, &want, Duration::from_secs(30)).await;
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while run.stats.txns_rebuilt.load(Ordering::Relaxed) < 2 && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = run.stop().await;
    assert_same(&table(&emu), &want);
    assert_eq!(stats.txns_rebuilt.load(Ordering::Relaxed), 2, "both shards' transactions rebuilt");
    assert_eq!(stats.txns_lost.load(Ordering::Relaxed), 0, "nothing counted lost");
    let readings: u64 = want.values().map(|v| v.0).sum();
    assert_eq!(stats.readings_committed.load(Ordering::Relaxed), readings, "the rebuilt readings count as committed");
    assert!(open().is_empty(), "no transaction left open: {:?}", open());
    assert_eq!(state(l0), Some("VISIBLE"));
    assert_eq!(state(l1), Some("VISIBLE"));
    emu.shutdown().await;
}

/// Runs 200 ms epochs (pacing up to `max_epoch`) against StarRocks that
/// compacts 2 versions per tablet per second and refuses a load past 6:
/// each 200 ms epoch gives every tablet it touches a version. Returns the
/// loads refused with `too many versions` in a window after 8 s (when
/// pacing has had time to settle), and the epoch length at the end. The
/// table must be exact either way.
async fn paced(max_epoch_ms: u64) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let emu = slow_compaction(6, 2.0).await;
    let mut cfg = config(dir.path(), "exactly-once", "");
    cfg.pipeline.epoch = rockfeed::config::Dur(Duration::from_millis(200));
    cfg.pipeline.max_epoch = Some(rockfeed::config::Dur(Duration::from_millis(max_epoch_ms)));
    let loader = common::loader(&emu, "pw", "rockfeed", fast());
    let run = start(&cfg, loader.clone());
    let mut want = feed(&run.wal, 800, nine).await;
    let before = loader.throttled();
    for (k, v) in feed(&run.wal, 400, nine).await {
        let e = want.entry(k).or_insert((0, 0.0));
        e.0 += v.0;
        e.1 += v.1;
    }
    let window = loader.throttled() - before;
    settles(&emu, &want, Duration::from_secs(60)).await;
    let epoch_ms = run.stats.epoch_ms.load(Ordering::Relaxed);
    run.stop().await;
    assert_same(&table(&emu), &want);
    emu.shutdown().await;
    (window, epoch_ms)
}

/// Issue 14: adaptive pacing. With pacing off, StarRocks keeps refusing
/// loads for too many versions (retried: nothing is lost, but every epoch
/// waits for compaction); with it on, the epoch stretches until StarRocks
/// keeps up, and once it has settled no load is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_stretches_the_epoch_until_starrocks_stops_refusing_for_versions() {
    let (off_refused, off_epoch) = paced(200).await;
    assert_eq!(off_epoch, 200, "pacing off keeps the epoch");
    assert!(off_refused > 0, "the premise: 200 ms epochs outrun compaction");
    let (on_refused, on_epoch) = paced(10_000).await;
    assert!(on_epoch >= 800, "the epoch stretched to where compaction keeps up: {on_epoch} ms");
    assert_eq!(on_refused, 0, "no refusal once settled (off: {off_refused})");
}
