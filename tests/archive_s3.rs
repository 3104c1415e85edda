//! The raw archive on an S3-compatible store: moto's server (PyPI), path
//! style, credentials from the configuration. The store is down when
//! rockfeed starts:
//! 1. ingestion into StarRocks goes on while uploads fail and retry;
//! 2. once the spool reaches its disk bound, spooling waits and the
//!    pipeline is held (backpressure), instead of the spool growing;
//! 3. when the store comes up, everything is uploaded, the pipeline
//!    resumes, and pyarrow (reading S3) finds every reading exactly once.
//!
//! And a missing bucket is the store refusing rockfeed (a destination
//! error, waited out), not a failure that may pass or a fault of the file.

use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

use common::archive::{Moto, audit_archive, read_archive};
use common::{emulator_for, emulator_tables, free_port, produce_kafka};
use loadgen::audit::audit_emulator;
use loadgen::fleet::Fleet;
use loadgen::kafka::mock_cluster;
use loadgen::ledger::Ledger;
use loadgen::payload::Profile;
use tokio::sync::watch;

fn config(brokers: &str, dir: &std::path::Path, s3_port: u16) -> String {
    format!(
        r#"
[starrocks]
endpoints = ["http://127.0.0.1:1"]
database = "rockfeed"
user = "root"
password = "pw"
label_prefix = "s3t"
max_attempts = 0
[tables]
buckets = 8
replication_num = 1
[pipeline]
shards = 2
epoch = "300ms"
state_dir = "{dir}/state"
[source.kafka]
brokers = "{brokers}"
group_id = "rockfeed-s3-it"
topics = ["telemetry"]
key_is_colocation_key = true
[dead_letter]
dir = "{dir}/dead"
[archive]
enabled = true
url = "s3://lake/edge/one"
spool_dir = "{dir}/spool"
roll_bytes = 1048576
spool_max_bytes = 2097152
roll_age = "2s"
roll_idle = "1s"
[archive.s3]
endpoint = "http://127.0.0.1:{s3_port}"
access_key_id = "rk"
secret_access_key = "rs"
allow_http = true
"#,
        dir = dir.display()
    )
}

fn fleet() -> Fleet {
    Fleet::new(40, 100, 5, "RFS3")
}

async fn produce(brokers: &str, rate: f64, secs: u64, ledger: &mut Ledger) {
    produce_kafka(brokers, fleet(), Profile::Wide, rate, secs, ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_retries_then_holds_the_pipeline_at_the_spool_bound_and_loses_nothing() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("rockfeed=info,librdkafka=warn").try_init();
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_cluster(1, "telemetry", 8).unwrap();
    let brokers = mock.bootstrap_servers();
    let s3_port = free_port();
    let mut cfg = rockfeed::config::Config::parse(&config(&brokers, dir.path(), s3_port)).unwrap();
    let emu = emulator_for(&mut cfg).await;
    let t = emulator_tables(emu.fe_url(), false);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready) = watch::channel(false);
    let app = tokio::spawn(rockfeed::app::run_with_ready(cfg.clone(), stop_rx, ready_tx));
    assert!(tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r)).await.is_ok(), "never assigned");

    // 1. The store is down: a little traffic still reaches StarRocks.
    let mut ledger = Ledger::new(&fleet().metrics, 60_000);
    produce(&brokers, 4000.0, 2, &mut ledger).await;
    let loaded = common::audit_settles(&t, &ledger, Duration::from_secs(20)).await;
    assert!(loaded, "ingestion must not wait for the archive store below the spool bound");

    // 2. Much more than the spool's 2 MiB bound: the pipeline is held.
    produce(&brokers, 40_000.0, 12, &mut ledger).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let held = !audit_emulator(&t, &ledger).await.unwrap().iter().all(|a| a.ok());
    let spool: u64 = spool_bytes(&dir.path().join("spool"));
    assert!(held, "the pipeline went on past the spool bound");
    assert!(spool <= 2_097_152 + (1 << 20), "the spool grew to {spool} bytes past its 2 MiB bound");

    // 3. The store comes up: everything lands, in StarRocks and in S3.
    let moto = Moto::start(s3_port);
    moto.create_bucket("lake");
    let done = common::audit_settles(&t, &ledger, Duration::from_secs(60)).await;
    assert!(done, "the pipeline did not resume once the store was back");
    stop_tx.send(true).unwrap();
    let stats = app.await.unwrap().unwrap();
    assert!(stats.archive_upload_failures.load(Ordering::Relaxed) > 0, "uploads failed while the store was down");
    assert!(stats.archive_spool_full.load(Ordering::Relaxed) > 0, "the spool bound was reached");

    let rows = read_archive("s3://lake/edge/one", Some((&format!("127.0.0.1:{s3_port}"), "rk", "rs")));
    let audit = audit_archive(&rows, &ledger).unwrap();
    assert!(audit.ok(), "{audit}: {:?}", audit.examples);
    assert_eq!(rows.len() as u64, ledger.readings());
    assert_eq!(stats.archive_readings_published.load(Ordering::Relaxed), ledger.readings());
    assert_eq!(spool_bytes(&dir.path().join("spool")), 0, "the stop published everything");
    emu.shutdown().await;
    drop(moto);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_the_store_refusing_rockfeed_until_it_is_created() {
    use rockfeed::archive::store::{PublishError, Store};
    let s3_port = free_port();
    let moto = Moto::start(s3_port);
    let dir = tempfile::tempdir().unwrap();
    let text = config("127.0.0.1:1", dir.path(), s3_port).replace("s3://lake/", "s3://absent/");
    let cfg = rockfeed::config::Config::parse(&text).unwrap();
    let store = Store::open(&cfg.archive).unwrap();
    let local = dir.path().join("f.parquet");
    std::fs::write(&local, b"PAR1 not really").unwrap();
    let rel = "t/dt=2026-11-27/hour=10/w-0-1-1.parquet";
    match store.publish(rel, &local, 1, "w").await {
        Err(PublishError::Destination(m)) => assert!(m.contains("upload"), "{m}"),
        other => panic!("a missing bucket must be a destination error: {other:?}"),
    }
    moto.create_bucket("absent");
    let p = store.publish(rel, &local, 1, "w").await.expect("published once the bucket exists");
    assert_eq!(p.bytes, 15);
}

/// Bytes of spool segments on disk.
fn spool_bytes(d: &std::path::Path) -> u64 {
    let mut n = 0;
    let Ok(rd) = std::fs::read_dir(d) else { return 0 };
    for e in rd.flatten() {
        if e.path().is_dir() {
            n += spool_bytes(&e.path());
        } else if e.file_name().to_string_lossy().ends_with(".seg") {
            n += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    n
}
