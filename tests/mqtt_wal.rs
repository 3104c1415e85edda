//! The MQTT write-ahead log in `rockfeed run`'s own wiring (`app::run_with`,
//! in-process), against mosquitto and the StarRocks emulator:
//! - store-and-forward: StarRocks is away (`No backend alive.` on every
//!   call) while the fleet publishes more than `wal.max_bytes`; rockfeed
//!   keeps acknowledging into the WAL until it is full, then stops taking
//!   messages (the broker queues them in the session), and once StarRocks
//!   is back everything lands exactly once, the backlog read back from disk;
//! - poison messages: a payload over `decode.max_payload_bytes`, over MQTT
//!   3.1.1 and 5, is received, acknowledged and dead-lettered as
//!   `payload_too_large`, and the stream behind it goes on.

use std::sync::atomic::Ordering;
use std::time::Duration;

use loadgen::fleet::Fleet;
use loadgen::payload::Profile;
use rockfeed::starrocks_emulator::Emulator;
use rockfeed::starrocks_emulator::faults::FaultRule;

mod common;

fn config(port: u16, dir: &std::path::Path, protocol: &str, wal: &str) -> String {
    format!(
        r#"
[starrocks]
endpoints = ["http://127.0.0.1:1"]
database = "rockfeed"
user = "root"
password = "pw"
label_prefix = "walt"
max_attempts = 0
[tables]
latest_metrics = ["speed", "soc"]
buckets = 8
replication_num = 1
[pipeline]
shards = 2
epoch = "250ms"
state_dir = "{dir}/state"
[wal]
dir = "{dir}/wal"
{wal}
[source.mqtt]
host = "127.0.0.1"
port = {port}
client_id = "rockfeed-wal-{protocol}"
topics = ["telemetry/#"]
protocol = "{protocol}"
[dead_letter]
dir = "{dir}/dead"
"#,
        dir = dir.display()
    )
}

/// Starts `text` against `emu` (a new emulator for its DDL when `None`).
async fn start(text: &str, emu: Option<Emulator>) -> (common::App, Emulator) {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("rockfeed=info").try_init();
    let mut cfg = rockfeed::config::Config::parse(text).unwrap();
    let emu = match emu {
        Some(e) => e,
        None => common::emulator_for(&mut cfg).await,
    };
    (common::run_app(cfg, &emu).await, emu)
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(tokio::time::Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes a backlog while StarRocks is away, lets it drain with
/// `max_epoch_bytes` = `max`, audits it; the peak and total bytes of the
/// Stream Load bodies held.
async fn drain_backlog(max: u64, tag: &str) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let conf = format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n");
    let _broker = common::mosquitto(dir.path(), port, &conf);
    let text = config(port, dir.path(), "5", "").replace(
        "[pipeline]\n",
        &format!("[pipeline]\nmax_epoch_bytes = {max}\nmax_rows_per_load = 2000\nchannel_batches = 2\n"),
    );
    let (app, emu) = start(&text, None).await;
    emu.faults().add(serde_json::from_str(r#"{"fault":"no_backend_alive","always":true}"#).unwrap()).unwrap();
    let fleet = Fleet::new(200, 100, 11, "RFDRAIN");
    let (ledger, sent) =
        common::publish_readings(port, fleet, Profile::Wide, 400_000, 200_000.0, 2, &format!("drain-{tag}")).await;
    let s = &app.stats;
    wait_until("the backlog is in the WAL", Duration::from_secs(30), || {
        s.wal_records.load(Ordering::Relaxed) >= sent.messages
    })
    .await;
    emu.faults().clear();
    let t = common::emulator_tables(emu.fe_url(), true);
    let landed = common::audit_settles(&t, &ledger, Duration::from_secs(120)).await;
    assert!(landed, "everything lands: {:?}", loadgen::audit::audit_emulator(&t, &ledger).await.unwrap());
    let (peak, total) = (s.bodies.peak(), s.bodies.total());
    app.stop().await;
    emu.shutdown().await;
    eprintln!("max_epoch_bytes {max}: bodies peaked at {peak} bytes, {total} bytes made");
    (peak, total)
}

/// A backlog drains as fast as the disk reads; with a bound on the Stream
/// Load bodies held until their epoch commits, intake pauses and epochs are
/// cut early, so far less is held at once than without one, and everything
/// still lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_within_the_bound_on_bodies_held() {
    let (free_peak, free_total) = drain_backlog(1 << 40, "free").await;
    let (peak, total) = drain_backlog(64 * 1024, "bound").await;
    assert!(free_total > 20 * 64 * 1024 && total > 20 * 64 * 1024, "the backlog dwarfs the bound");
    assert!(peak * 3 <= free_peak, "bounded peak {peak} bytes vs {free_peak} unbounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_forward_through_an_outage_and_a_full_wal_then_everything_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 100\n"
    );
    let _broker = common::mosquitto(dir.path(), port, &conf);
    // A 2 MiB WAL (two 1 MiB segments), 256 KiB of it in memory.
    let wal = "segment_bytes = 1048576\nmax_bytes = 2097152\nmemory_bytes = 262144\n";
    let text = config(port, dir.path(), "3.1.1", wal);
    let (app, emu) = start(&text, None).await;
    let rule: FaultRule = serde_json::from_str(r#"{"fault":"no_backend_alive","always":true}"#).unwrap();
    emu.faults().add(rule).unwrap();

    // ~6 MB of wide samples (100 metrics, ~2 KB each) while StarRocks is away.
    let fleet = Fleet::new(50, 100, 9, "RFSTORE");
    let (ledger, sent) =
        common::publish_readings(port, fleet, Profile::Wide, 300_000, 100_000.0, 2, "store-publisher").await;

    // rockfeed acknowledged into the WAL until it was full, then stopped
    // taking messages; nothing was loaded.
    let s = &app.stats;
    wait_until("the WAL is full", Duration::from_secs(30), || s.wal_full.load(Ordering::Relaxed) > 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = s.mqtt_received.load(Ordering::Relaxed);
    assert!(received < sent.messages, "intake stopped: {received} of {} received", sent.messages);
    assert!(s.wal_records.load(Ordering::Relaxed) > 100, "messages were acknowledged into the WAL meanwhile");
    assert!(s.wal_bytes.load(Ordering::Relaxed) <= 3 << 20, "the WAL stays near its bound");
    assert_eq!(s.readings_committed.load(Ordering::Relaxed), 0);
    assert_eq!(s.rejected.total(), 0, "nothing was refused");
    // `rockfeed run`'s loader reports to the health `/ready` reads.
    let down = s.destination.down().expect("the outage is an episode: /ready says 503");
    assert!(down.contains("No backend alive"), "{down}");

    // StarRocks is back: the backlog drains (from disk: it is larger than
    // the WAL's memory) and the broker's queue after it.
    emu.faults().clear();
    let t = common::emulator_tables(emu.fe_url(), true);
    let landed = common::audit_settles(&t, &ledger, Duration::from_secs(120)).await;
    assert!(landed, "everything lands: {:?}", loadgen::audit::audit_emulator(&t, &ledger).await.unwrap());
    assert_eq!(s.mqtt_received.load(Ordering::Relaxed), sent.messages, "every message received once");
    assert_eq!(s.mqtt_duplicates.load(Ordering::Relaxed), 0);
    assert!(s.destination.down().is_none(), "the episode ended when StarRocks took loads again");
    let dead = rockfeed::deadletter::read_all(&dir.path().join("dead")).unwrap_or_default();
    assert!(dead.is_empty(), "an outage moves nothing to dead letters: {dead:?}");
    app.stop().await;
    let audits = loadgen::audit::audit_emulator(&t, &ledger).await.unwrap();
    assert!(audits.iter().all(|a| a.ok()), "{audits:?}");
    emu.shutdown().await;
}

/// A too-large payload between two good ones, then a restart: nothing is
/// redelivered (the big one was acknowledged).
async fn oversize(protocol: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let conf = format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmessage_size_limit 0\n");
    let _broker = common::mosquitto(dir.path(), port, &conf);
    let text = config(port, dir.path(), protocol, "");
    let (app, emu) = start(&text, None).await;
    let now = rockfeed::util::now_ms();
    let small = |vin: &str| format!(r#"{{"vin":"{vin}","ts":{now},"metrics":{{"speed":1}}}}"#);
    let big = format!(r#"{{"vin":"BIG","ts":{now},"metrics":{{"pad":"{}"}}}}"#, "x".repeat(5 << 20));
    let msgs = vec![
        ("telemetry/wide".to_string(), small("BEFORE")),
        ("telemetry/wide".to_string(), big),
        ("telemetry/wide".to_string(), small("AFTER")),
    ];
    if protocol == "5" {
        let mut o = rumqttc::v5::MqttOptions::new("oversize-pub", "127.0.0.1", port);
        o.set_max_packet_size(Some(8 << 20));
        common::publish_v5(o, msgs).await;
    } else {
        let mut o = rumqttc::MqttOptions::new("oversize-pub", "127.0.0.1", port);
        o.set_max_packet_size(8 << 20, 8 << 20);
        common::publish_v4(o, msgs).await;
    }
    let s = app.stats.clone();
    wait_until("both small samples are committed", Duration::from_secs(30), || {
        s.readings_committed.load(Ordering::Relaxed) >= 2
    })
    .await;
    app.stop().await;
    let vins: Vec<String> = emu
        .with_core(|c| c.table("rockfeed", "telemetry_1m").unwrap().rows().iter().map(|r| r[0].to_string()).collect());
    assert!(vins.contains(&"BEFORE".to_string()) && vins.contains(&"AFTER".to_string()), "{vins:?}");
    let dead = rockfeed::deadletter::read_all(&dir.path().join("dead")).unwrap();
    let reasons: Vec<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, vec!["payload_too_large"]);
    // Restarted: the broker has nothing left to redeliver.
    let (app, emu) = start(&text, Some(emu)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.stats.mqtt_received.load(Ordering::Relaxed), 0, "the oversized message was acknowledged");
    app.stop().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_payload_over_mqtt311_is_dead_lettered_and_the_stream_goes_on() {
    oversize("3.1.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_payload_over_mqtt5_is_dead_lettered_and_the_stream_goes_on() {
    oversize("5").await;
}

/// Issue 14's crash during a re-load, when the source cannot give the
/// epoch's rows back: StarRocks aborted a decided epoch's prepared
/// transaction, rockfeed began loading the rows again under the same label
/// and died before that re-load was prepared, and the decided range holds
/// no record (this ledger's decision covers an empty range). At restart,
/// recovery rolls the re-load back (no transaction is left holding a
/// running-transaction slot), its rebuild finds no rows, and the loss is
/// counted with an ERROR line (`rockfeed_txns_lost_total`): never
/// silently. The rebuild itself: `tests/pipeline_faults.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_rolls_back_an_interrupted_reload_of_a_decided_epoch_and_counts_it() {
    use rockfeed::model::epoch::{Decision, EpochSource, Positions};
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let _broker = common::mosquitto(dir.path(), port, &format!("listener {port} 127.0.0.1\nallow_anonymous true\n"));
    let mut cfg = rockfeed::config::Config::parse(&config(port, dir.path(), "5", "")).unwrap();
    let emu = common::emulator_for(&mut cfg).await;
    // The WAL's ledger: epoch 5 of this prefix is decided.
    {
        let wcfg = rockfeed::wal::WalConfig { dir: dir.path().join("wal"), ..Default::default() };
        let wal = rockfeed::wal::Wal::open(wcfg, std::sync::Arc::new(rockfeed::telemetry::Stats::default())).unwrap();
        let d = Decision {
            prefix: "walt".into(),
            epoch: 5,
            shards: 2,
            tables: vec!["telemetry_1m".into(), "vehicle_latest".into()],
            ..Default::default()
        };
        rockfeed::wal::WalSource { wal: wal.clone() }.decide(&d, &Positions::new()).await.unwrap();
        wal.close();
    }
    // Shard 1's re-load of epoch 5 was begun, never prepared.
    let loader = common::loader(&emu, "pw", "rockfeed", Default::default());
    let mut h = http::HeaderMap::new();
    h.insert("label", http::HeaderValue::from_static("walt-telemetry_1m-1-5"));
    h.insert("db", http::HeaderValue::from_static("rockfeed"));
    h.insert("table", http::HeaderValue::from_static("telemetry_1m"));
    let r =
        loader.client().request(http::Method::POST, "/api/transaction/begin", &h, bytes::Bytes::new()).await.unwrap();
    assert_eq!(r.status, 200);
    let open = |emu: &Emulator| -> Vec<String> {
        emu.with_core(|c| c.registry.all().filter(|t| t.state.is_running()).map(|t| t.label.clone()).collect())
    };
    assert_eq!(open(&emu), ["walt-telemetry_1m-1-5"]);

    let app = common::run_app(cfg, &emu).await;
    let counted = app.until(Duration::from_secs(20), |s| s.txns_lost.load(Ordering::Relaxed) >= 1).await;
    let stats = app.stop().await;
    assert!(counted, "the interrupted re-load is counted as lost");
    assert_eq!(stats.txns_lost.load(Ordering::Relaxed), 1);
    assert!(open(&emu).is_empty(), "no transaction left open: {:?}", open(&emu));
    let state = emu.with_core(|c| c.registry.by_label("rockfeed", "walt-telemetry_1m-1-5").map(|t| t.state.name()));
    assert_eq!(state, Some("ABORTED"));
    emu.shutdown().await;
}
