//! The pipeline under StarRocks faults: transient ones (too many versions,
//! memory limit, commit transport error in both branches, connection reset
//! mid-body, publish timeout, no backend alive, busy BE) are injected on a
//! share of all loads, and the aggregate table must still equal the input
//! exactly, no loss, no double count. A permanent one (401) must leave every
//! batch in the dead-letter directory and nothing in the table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
mod common;

use rockfeed::pipeline::runner::{RunnerConfig, Sinks, Stats, run};
use rockfeed::sink::starrocks::service::RetryPolicy;
use rockfeed::source::RawMessage;
use rockfeed::starrocks::ddl::parse_ddl;
use rockfeed::starrocks::types::Value;
use rockfeed::starrocks_emulator::faults::FaultRule;
use rockfeed::starrocks_emulator::{Emulator, EmulatorConfig, now_ms};
use tokio::sync::{mpsc, watch};

const DDL: &str = "CREATE DATABASE rockfeed; USE rockfeed;
CREATE TABLE telemetry_1m (
  vehicle_id VARCHAR(64) NOT NULL, window_start DATETIME NOT NULL, metric VARCHAR(128) NOT NULL,
  cnt BIGINT SUM DEFAULT \"0\", total DOUBLE SUM DEFAULT \"0\", `min` DOUBLE MIN, `max` DOUBLE MAX
) AGGREGATE KEY(vehicle_id, window_start, metric)
PARTITION BY date_trunc('day', window_start) DISTRIBUTED BY HASH(vehicle_id) BUCKETS 8;";

type Totals = BTreeMap<(String, i64, String), (u64, f64)>;

fn runner_cfg(dir: &std::path::Path) -> RunnerConfig {
    RunnerConfig {
        shards: 2,
        epoch: Duration::from_millis(150),
        label_prefix: "faults".into(),
        ..common::runner_cfg(dir)
    }
}

/// Feeds `n` wide messages over ~`n * 10` ms and returns the expected totals.
async fn feed(tx: mpsc::Sender<RawMessage>, n: u32) -> Totals {
    let mut exp = Totals::new();
    for i in 0..n {
        let now = now_ms() as i64;
        let vin = format!("V{:03}", i % 9);
        let (a, b) = (i as f64, (i % 7) as f64 * 0.5);
        let p = format!(r#"{{"vin":"{vin}","ts":{now},"metrics":{{"a":{a},"b":{b}}}}}"#);
        for (m, v) in [("a", a), ("b", b)] {
            let e = exp.entry((vin.clone(), now - now.rem_euclid(60_000), m.into())).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += v;
        }
        tx.send(RawMessage::new("t", Bytes::from(p), now)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    exp
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_on_a_third_of_loads_change_nothing_in_the_table() {
    let emu = Emulator::start(EmulatorConfig::local(parse_ddl(DDL).unwrap(), "root", "pw")).await.unwrap();
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
    let policy = RetryPolicy {
        max_attempts: 0,
        base: Duration::from_millis(5),
        throttle_base: Duration::from_millis(10),
        max: Duration::from_millis(50),
        label_wait: Duration::from_secs(10),
    };
    let loader = common::loader(&emu, "pw", "rockfeed", policy);
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stats = Arc::new(Stats::default());
    let pipe =
        tokio::spawn(run(runner_cfg(dir.path()), Sinks::starrocks(loader), None, rx, stop_rx, stats.clone(), None));
    let want = feed(tx.clone(), 150).await;
    drop(tx);
    let _ = stop_tx;
    pipe.await.unwrap().unwrap();
    let fired = emu.faults().fired().len();
    assert!(fired >= 3, "faults should have fired on some loads, fired {fired}");
    assert_eq!(stats.loads_failed.load(Ordering::Relaxed), 0);
    // Publish timeouts become visible a little later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_same(&table(&emu), &want);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_keep_every_batch_as_a_dead_letter() {
    let emu = Emulator::start(EmulatorConfig::local(parse_ddl(DDL).unwrap(), "root", "pw")).await.unwrap();
    let loader = common::loader(&emu, "wrong", "rockfeed", RetryPolicy::default());
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel(64);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let stats = Arc::new(Stats::default());
    let pipe =
        tokio::spawn(run(runner_cfg(dir.path()), Sinks::starrocks(loader), None, rx, stop_rx, stats.clone(), None));
    let want = feed(tx.clone(), 30).await;
    drop(tx);
    pipe.await.unwrap().unwrap();
    assert!(table(&emu).is_empty());
    let failed = stats.loads_failed.load(Ordering::Relaxed);
    assert!(failed > 0);
    let dead = rockfeed::deadletter::read_all(&dir.path().join("dead")).unwrap();
    assert_eq!(dead.len() as u64, failed);
    // The dead-lettered bodies hold every reading: the data is kept, not dropped.
    let mut rows = 0u64;
    for d in &dead {
        assert_eq!(d["reason"], "load_failed");
        assert!(d["detail"].as_str().unwrap().contains("401"), "{}", d["detail"]);
        rows += d["payload"]
            .as_str()
            .unwrap()
            .lines()
            .map(|l| l.split('\x01').nth(3).unwrap().parse::<u64>().unwrap())
            .sum::<u64>();
    }
    assert_eq!(rows, want.values().map(|(c, _)| c).sum::<u64>());
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_the_row_limit_load_early_under_their_own_labels() {
    let emu = Emulator::start(EmulatorConfig::local(parse_ddl(DDL).unwrap(), "root", "pw")).await.unwrap();
    let loader = common::loader(&emu, "pw", "rockfeed", RetryPolicy::default());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = runner_cfg(dir.path());
    cfg.epoch = Duration::from_secs(3600); // only the size limit and the final drain load
    cfg.max_rows_per_load = 6;
    let (tx, rx) = mpsc::channel(64);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let stats = Arc::new(Stats::default());
    let pipe = tokio::spawn(run(cfg, Sinks::starrocks(loader), None, rx, stop_rx, stats.clone(), None));
    let want = feed(tx.clone(), 60).await;
    drop(tx);
    pipe.await.unwrap().unwrap();
    let loads = stats.loads.load(Ordering::Relaxed);
    assert!(loads >= 10, "expected early loads, got {loads}");
    let labels = emu.with_core(|c| c.registry.all().filter(|t| t.label.starts_with("faults-")).count() as u64);
    assert_eq!(labels, loads, "every load had its own label");
    assert_same(&table(&emu), &want);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_load_exactly() {
    use rockfeed::sink::starrocks::encode::Compression;
    for comp in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
        let emu = Emulator::start(EmulatorConfig::local(parse_ddl(DDL).unwrap(), "root", "pw")).await.unwrap();
        let loader = common::loader(&emu, "pw", "rockfeed", RetryPolicy::default());
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = runner_cfg(dir.path());
        cfg.compression = comp;
        let (tx, rx) = mpsc::channel(64);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        let pipe = tokio::spawn(run(cfg, Sinks::starrocks(loader), None, rx, stop_rx, stats.clone(), None));
        let want = feed(tx.clone(), 20).await;
        drop(tx);
        pipe.await.unwrap().unwrap();
        assert_eq!(stats.loads_failed.load(Ordering::Relaxed), 0, "{comp:?}");
        assert_same(&table(&emu), &want);
        emu.shutdown().await;
    }
}

/// A graceful stop loses nothing the source handed over: messages still
/// waiting in the source channel when shutdown flips (the source has
/// already acknowledged them to the broker) are decoded and loaded before
/// the runner returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_loads_what_is_still_queued_in_the_source_channel() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(EmulatorConfig::local(parse_ddl(DDL).unwrap(), "root", "pw")).await.unwrap();
    let loader = common::loader(&emu, "pw", "rockfeed", RetryPolicy::default());
    let (tx, rx) = mpsc::channel(1024);
    let now = now_ms() as i64;
    for i in 0..500 {
        let p = format!(r#"{{"vin":"Q{:03}","ts":{now},"metrics":{{"a":1}}}}"#, i % 20);
        tx.send(RawMessage::new("t", Bytes::from(p), now)).await.unwrap();
    }
    // Shutdown before the runner has taken a single message.
    let (stop_tx, stop) = watch::channel(false);
    stop_tx.send(true).unwrap();
    let stats = Arc::new(Stats::default());
    run(runner_cfg(dir.path()), Sinks::starrocks(loader), None, rx, stop, stats.clone(), None).await.unwrap();
    assert_eq!(stats.messages.load(Ordering::Relaxed), 500, "every queued message was taken");
    let cnt: u64 = emu.with_core(|c| {
        c.table("rockfeed", "telemetry_1m").unwrap().rows().iter().map(|r| r[3].as_f64().unwrap() as u64).sum()
    });
    assert_eq!(cnt, 500, "and loaded");
    drop(tx);
    emu.shutdown().await;
}
