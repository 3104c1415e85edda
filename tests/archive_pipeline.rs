//! The raw archive inside the running pipeline: Kafka (librdkafka's mock
//! cluster) with exactly-once epochs, the StarRocks emulator, and the
//! archive on the local filesystem. pyarrow then reads the Hive dataset
//! back: every reading sent must be there exactly once with its value, in
//! the partition of its event time; no stray file may be left in the
//! layout; and the per-epoch reconciliation (archived = aggregated +
//! too-late) must hold.

use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

use common::archive::{audit_archive, read_archive, stray_files};
use common::{emulator_for, emulator_tables, produce_kafka};
use loadgen::audit::audit_emulator;
use loadgen::fleet::Fleet;
use loadgen::kafka::mock_cluster;
use loadgen::ledger::Ledger;
use loadgen::payload::Profile;
use tokio::sync::watch;

fn config(brokers: &str, dir: &std::path::Path) -> String {
    format!(
        r#"
[starrocks]
endpoints = ["http://127.0.0.1:1"]
database = "rockfeed"
user = "root"
password = "pw"
label_prefix = "arc"
max_attempts = 0
[tables]
buckets = 8
replication_num = 1
dims = ["fleet"]
[pipeline]
shards = 2
epoch = "300ms"
state_dir = "{dir}/state"
[source.kafka]
brokers = "{brokers}"
group_id = "rockfeed-archive-it"
topics = ["telemetry"]
key_is_colocation_key = true
[dead_letter]
dir = "{dir}/dead"
[archive]
enabled = true
url = "{dir}/archive"
spool_dir = "{dir}/spool"
roll_bytes = 1048576
spool_max_bytes = 67108864
roll_age = "2s"
roll_idle = "1s"
spill_bytes = 4096
row_group_rows = 4096
"#,
        dir = dir.display()
    )
}

fn fleet() -> Fleet {
    Fleet::new(30, 20, 3, "RFAR")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_lands_in_the_archive_exactly_once() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("rockfeed=info,librdkafka=warn").try_init();
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_cluster(3, "telemetry", 4).unwrap();
    let brokers = mock.bootstrap_servers();
    let mut cfg = rockfeed::config::Config::parse(&config(&brokers, dir.path())).unwrap();
    let emu = emulator_for(&mut cfg).await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready) = watch::channel(false);
    let app = tokio::spawn(rockfeed::app::run_with_ready(cfg.clone(), stop_rx, ready_tx));
    assert!(tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r)).await.is_ok(), "never assigned");
    // Wide, then narrow records, 5 s: several epochs per file, several files.
    let mut ledger = Ledger::new(&fleet().metrics, 60_000);
    produce_kafka(&brokers, fleet(), Profile::Wide, 400.0, 3, &mut ledger).await;
    produce_kafka(&brokers, fleet(), Profile::Narrow, 1500.0, 2, &mut ledger).await;
    let t = emulator_tables(emu.fe_url(), false);
    common::audit_settles(&t, &ledger, Duration::from_secs(60)).await;
    // Let some files roll by age and idleness while running, then stop
    // (which cuts and publishes the rest).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let files_before_stop = app_files(dir.path());
    stop_tx.send(true).unwrap();
    let stats = app.await.unwrap().unwrap();
    let audits = audit_emulator(&t, &ledger).await.unwrap();
    assert!(audits.iter().all(|a| a.ok()), "{audits:?}");

    let rows = read_archive(&dir.path().join("archive").display().to_string(), None);
    let audit = audit_archive(&rows, &ledger).unwrap();
    assert!(audit.ok(), "{audit}: {:?}", audit.examples);
    assert_eq!(rows.len() as u64, audit.records_sent);
    assert!(rows.iter().all(|r| r.source.starts_with("kafka:telemetry/")), "{:?}", &rows[0]);
    assert!(stray_files(&dir.path().join("archive"), "telemetry_raw").is_empty());
    // Files rolled while running (never one per epoch), and the stop
    // published the rest: the spool holds no segment.
    let files: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.file.as_str()).collect();
    assert!(files_before_stop >= 2, "files published while running: {files_before_stop}");
    let epochs = stats.epochs_decided.load(Ordering::Relaxed);
    assert!((files.len() as u64) < epochs, "{} files for {epochs} epochs", files.len());
    for f in &files {
        let (shard, first, last) = rockfeed::archive::layout::parse_file_name(f).unwrap();
        assert!(shard.starts_with("arc-") && first <= last, "{f}");
    }
    let left: Vec<_> = walk(&dir.path().join("spool")).into_iter().filter(|p| p.ends_with(".seg")).collect();
    assert!(left.is_empty(), "{left:?}");
    // Reconciliation: per epoch, archived = aggregated + too late; in total
    // every reading committed to StarRocks was archived and published.
    assert_eq!(stats.reconcile_mismatches.load(Ordering::Relaxed), 0);
    // `spill_bytes = 4096`: epochs spilled mid-way, and nothing was lost
    // or doubled by it.
    assert!(stats.archive_spills.load(Ordering::Relaxed) > 0, "raw samples spilled mid-epoch");
    assert_eq!(stats.archive_readings_published.load(Ordering::Relaxed), ledger.readings());
    assert_eq!(stats.archive_readings_spooled.load(Ordering::Relaxed), ledger.readings());
    assert_eq!(stats.readings_committed.load(Ordering::Relaxed), ledger.readings());
    {
        let log = stats.archive_log.lock();
        assert_eq!(log.files.iter().map(|f| f.rows).sum::<u64>(), ledger.readings());
        assert!(log.epochs.iter().all(|e| e.agrees()));
    }

    // `rockfeed archive ls` lists the same files and rows; `ddl --hive`
    // points Hive at the same table directory.
    let conf = dir.path().join("rockfeed.toml");
    std::fs::write(&conf, config(&brokers, dir.path())).unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rockfeed")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let ls = cli(&["archive", "ls", "--config", conf.to_str().unwrap()]);
    let listed: Vec<&str> = ls.lines().filter(|l| l.contains(".parquet")).collect();
    assert_eq!(listed.len(), files.len(), "{ls}");
    let total = ls.lines().last().unwrap();
    assert!(total.trim_start().starts_with(&format!("{} ", ledger.readings())), "{ls}");
    assert!(total.contains(&format!("total: {} file(s)", files.len())), "{ls}");
    let hive = cli(&["ddl", "--hive", "--config", conf.to_str().unwrap()]);
    let want = format!("LOCATION 'file://{}/archive/telemetry_raw'", dir.path().display());
    assert!(hive.contains(&want) && hive.contains("`fleet` STRING"), "{hive}");
    emu.shutdown().await;
}

fn walk(d: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(d) else { return out };
    for e in rd.flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

/// Parquet files published so far.
fn app_files(dir: &std::path::Path) -> usize {
    walk(&dir.join("archive").join("telemetry_raw")).iter().filter(|p| p.ends_with(".parquet")).count()
}
