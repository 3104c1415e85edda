//! The Kafka source with exactly-once delivery, in process: librdkafka's
//! mock cluster (several brokers, a topic of several partitions), loadgen
//! producing keyed by VIN, rockfeed's app with the epoch coordinator, and
//! the StarRocks emulator's transaction API. Every (vin, window, metric)
//! row must equal what was produced, and the emulator must hold no open
//! transaction afterwards; each fault of the transaction interface
//! (`starrocks-stream-load.md` §5.2/§6) must still end in exact tables.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

use loadgen::audit::{EmulatorTables, audit_emulator};
use loadgen::fleet::Fleet;
use loadgen::kafka::mock_cluster;
use loadgen::ledger::Ledger;
use loadgen::payload::{Generator, Profile};
use rockfeed::sink::starrocks::txn::{Chunk, TxnLoader};
use rockfeed::starrocks::ddl::parse_ddl;
use rockfeed::starrocks_emulator::faults::FaultRule;
use rockfeed::starrocks_emulator::registry::RegistryConfig;
use rockfeed::starrocks_emulator::{Emulator, EmulatorConfig};
use tokio::sync::watch;

fn config(brokers: &str, dir: &std::path::Path, prefix: &str, group: &str) -> String {
    format!(
        r#"
[starrocks]
endpoints = ["http://127.0.0.1:1"]
database = "rockfeed"
user = "root"
password = "pw"
label_prefix = "{prefix}"
max_attempts = 0
[tables]
latest_metrics = ["speed", "soc"]
buckets = 8
replication_num = 1
[pipeline]
shards = 3
epoch = "300ms"
state_dir = "{state}"
[source.kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = ["telemetry"]
key_is_colocation_key = true
[dead_letter]
dir = "{}"
"#,
        dir.join("dead").display(),
        state = dir.join("state").display()
    )
}

async fn produce(brokers: &str, profile: Profile, rate: f64, secs: u64, seed: u64) -> Ledger {
    let fleet = Fleet::new(24, 15, seed, "RFKX");
    let mut ledger = Ledger::new(&fleet.metrics, 60_000);
    common::produce_kafka(brokers, fleet, profile, rate, secs, &mut ledger).await;
    ledger
}

fn tables(url: String) -> EmulatorTables {
    EmulatorTables {
        url,
        user: "root".into(),
        password: "pw".into(),
        db: "rockfeed".into(),
        telemetry: "telemetry_1m".into(),
        latest: Some("vehicle_latest".into()),
    }
}

struct Rig {
    emu: Emulator,
    cfg: rockfeed::config::Config,
    _dir: tempfile::TempDir,
}

async fn rig(brokers: &str, prefix: &str, registry: RegistryConfig) -> Rig {
    // rockfeed's log, shown with a failing test's output.
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("rockfeed=info,librdkafka=warn").try_init();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = rockfeed::config::Config::parse(&config(brokers, dir.path(), prefix, "rockfeed-it")).unwrap();
    let mut ec = EmulatorConfig::local(parse_ddl(&rockfeed::config::ddl::ddl(&cfg)).unwrap(), "root", "pw");
    ec.registry = registry;
    ec.bes.push("127.0.0.1:0".parse().unwrap());
    let emu = Emulator::start(ec).await.unwrap();
    cfg.starrocks.endpoints = vec![emu.fe_url()];
    cfg.validate().unwrap();
    Rig { emu, cfg, _dir: dir }
}

fn open_txns(emu: &Emulator) -> Vec<String> {
    emu.with_core(|c| {
        c.registry.all().filter(|t| t.state.is_running()).map(|t| format!("{} {}", t.label, t.state.name())).collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_partitions_land_exactly_once_through_epochs() {
    let mock = mock_cluster(3, "telemetry", 4).unwrap();
    let brokers = mock.bootstrap_servers();
    let mut r = rig(&brokers, "kx", RegistryConfig::default()).await;
    // prepare sends `prepared_timeout` (and begin `timeout`) when configured.
    r.cfg.starrocks.prepared_timeout = Some(rockfeed::config::Dur(Duration::from_secs(3600)));
    r.cfg.starrocks.txn_timeout = rockfeed::config::Dur(Duration::from_secs(120));
    let secs = std::env::var("KX_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let ledger = produce(&brokers, Profile::Narrow, 3000.0, secs, 1).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready) = watch::channel(false);
    let app = tokio::spawn(rockfeed::app::run_with_ready(r.cfg.clone(), stop_rx, ready_tx));
    assert!(tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r)).await.is_ok(), "never assigned");
    let t = tables(r.emu.fe_url());
    let ok = common::audit_settles(&t, &ledger, Duration::from_secs(60)).await;
    stop_tx.send(true).unwrap();
    let stats = app.await.unwrap().unwrap();
    let audits = audit_emulator(&t, &ledger).await.unwrap();
    assert!(ok && audits.iter().all(|a| a.ok()), "{audits:?}");
    assert_eq!(stats.readings_committed.load(Ordering::Relaxed), ledger.readings());
    assert!(stats.txns_committed.load(Ordering::Relaxed) >= 3, "2PC was used");
    assert!(open_txns(&r.emu).is_empty(), "{:?}", open_txns(&r.emu));
    // Labels are prefix-table-shard-epoch and every one is VISIBLE.
    let labels: Vec<(String, &'static str)> =
        r.emu.with_core(|c| c.registry.all().map(|t| (t.label.clone(), t.state.name())).collect());
    assert!(labels.iter().all(|(l, s)| l.starts_with("kx-") && *s == "VISIBLE"), "{labels:?}");
    // (begin timeout, prepared deadline), both relative to the begin.
    let timeouts: Vec<(u64, Option<u64>)> = r.emu.with_core(|c| {
        c.registry
            .all()
            .map(|t| (t.timeout_ms - t.created_ms, t.prepared_deadline_ms.map(|d| d.saturating_sub(t.created_ms))))
            .collect()
    });
    assert!(
        timeouts.iter().all(|(t, p)| *t == 120_000 && p.is_some_and(|p| (3_600_000..3_700_000).contains(&p))),
        "{timeouts:?}"
    );
    r.emu.shutdown().await;
}

/// Arms `rules`, runs `setup`, runs rockfeed while 2 s of traffic arrive
/// (so faults meet several epochs), calls `during` every 100 ms while
/// waiting, and requires exact tables; returns the rig and the app's stats.
async fn exact_despite(
    prefix: &str,
    registry: RegistryConfig,
    rules: &[&str],
    setup: impl AsyncFnOnce(&Emulator),
    mut during: impl AsyncFnMut(&Emulator),
) -> (Rig, Arc<rockfeed::telemetry::Stats>) {
    let mock = mock_cluster(1, "telemetry", 3).unwrap();
    let brokers = mock.bootstrap_servers();
    let r = rig(&brokers, prefix, registry).await;
    for rule in rules {
        r.emu.faults().add(serde_json::from_str::<FaultRule>(rule).unwrap()).unwrap();
    }
    setup(&r.emu).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready) = watch::channel(false);
    let app = tokio::spawn(rockfeed::app::run_with_ready(r.cfg.clone(), stop_rx, ready_tx));
    assert!(tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r)).await.is_ok(), "never assigned");
    let ledger = produce(&brokers, Profile::Narrow, 2000.0, 2, 7).await;
    let t = tables(r.emu.fe_url());
    for _ in 0..600 {
        during(&r.emu).await;
        if audit_emulator(&t, &ledger).await.unwrap().iter().all(|a| a.ok()) || app.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_tx.send(true).unwrap();
    let stats = app.await.unwrap().unwrap();
    let audits = audit_emulator(&t, &ledger).await.unwrap();
    assert!(audits.iter().all(|a| a.ok()), "{rules:?}: {audits:?}");
    assert!(open_txns(&r.emu).is_empty(), "{:?}", open_txns(&r.emu));
    drop(mock);
    (r, stats)
}

fn fired(emu: &Emulator, kind: &str) -> usize {
    emu.faults().fired().iter().filter(|(k, _)| serde_json::to_value(k).unwrap() == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_and_lost_transaction_contexts_end_in_exact_tables() {
    // TXN_IN_PROCESSING on the BE (retried), the BE context lost before
    // prepare (TXN_NOT_EXISTS: rolled back, cancelled, loaded again), and a
    // prepare that became durable while its reply was lost (PREPARED found).
    let (r, _) = exact_despite(
        "kbusy",
        RegistryConfig::default(),
        &[
            r#"{"fault":"txn_in_processing","next":6}"#,
            r#"{"fault":"context_lost","next":2}"#,
            r#"{"fault":"crash_after_prepare","next":2}"#,
        ],
        async |_| {},
        async |_| {},
    )
    .await;
    for f in ["txn_in_processing", "context_lost", "crash_after_prepare"] {
        assert!(fired(&r.emu, f) > 0, "{f} never fired");
    }
    r.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_transport_errors_both_ways_end_in_exact_tables() {
    // The commit happened but its reply says "status unknown" (checked with
    // get_load_state: done), and the commit failed with the transaction
    // aborted (the decided epoch's rows are loaded again under the label).
    let (r, stats) = exact_despite(
        "kcommit",
        RegistryConfig::default(),
        &[r#"{"fault":"commit_unknown_committed","next":3}"#, r#"{"fault":"commit_unknown_aborted","next":2}"#],
        async |_| {},
        async |_| {},
    )
    .await;
    assert_eq!(fired(&r.emu, "commit_unknown_committed"), 3);
    assert_eq!(fired(&r.emu, "commit_unknown_aborted"), 2);
    assert_eq!(stats.txns_reloaded.load(Ordering::Relaxed), 2, "each aborted commit was loaded again");
    r.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_prepared_label_is_rolled_back_not_committed() {
    // Another writer left a PREPARED transaction, with rows, under the label
    // rockfeed will use for epoch 3 (above what recovery probes at start):
    // begin answers LABEL_ALREADY_EXISTS, the label is rolled back and
    // reused, and those foreign rows never become visible.
    let (r, _) = exact_despite(
        "kling",
        RegistryConfig::default(),
        &[],
        async |emu: &Emulator| {
            let loader = common::loader(emu, "pw", "rockfeed", Default::default());
            let txn = TxnLoader::new(&loader, Default::default());
            let mut h = http::HeaderMap::new();
            h.insert("column_separator", http::HeaderValue::from_static(","));
            h.insert("columns", http::HeaderValue::from_static("vehicle_id,window_start,metric,cnt,total,`min`,`max`"));
            let body = bytes::Bytes::from_static(b"FOREIGN,2026-01-01 00:00:00,speed,1,1,1,1\n");
            txn.prepare("telemetry_1m", "kling-telemetry_1m-0-3", &[Chunk { headers: h, body }]).await.unwrap();
        },
        async |_| {},
    )
    .await;
    let foreign =
        r.emu.with_core(|c| c.registry.by_label("rockfeed", "kling-telemetry_1m-0-3").map(|t| t.state.name()));
    assert_eq!(foreign, Some("VISIBLE"), "the label was reused by rockfeed's own epoch 3");
    r.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_transaction_cap_is_waited_out() {
    // max_running_txn_num_per_db = 6 = shards × tables, and two foreign
    // transactions hold slots until rockfeed has met the cap: its begins fail
    // with "current running txns on db … larger than limit" and are retried
    // with back-off until the slots free up.
    let (r, _) = exact_despite(
        "kcap",
        RegistryConfig { max_running_txn_num_per_db: 6, ..RegistryConfig::default() },
        &[],
        async |emu: &Emulator| {
            let loader = common::loader(emu, "pw", "rockfeed", Default::default());
            let mut h = http::HeaderMap::new();
            for l in ["other-1", "other-2"] {
                h.insert("label", http::HeaderValue::from_static(l));
                h.insert("db", http::HeaderValue::from_static("rockfeed"));
                h.insert("table", http::HeaderValue::from_static("telemetry_1m"));
                let r = loader
                    .client()
                    .request(http::Method::POST, "/api/transaction/begin", &h, bytes::Bytes::new())
                    .await
                    .unwrap();
                assert_eq!(r.status, 200);
            }
            assert_eq!(open_txns(emu).len(), 2, "the other writer holds two slots");
        },
        async |emu: &Emulator| {
            // Once rockfeed has met the cap, the other writer finishes.
            if emu.with_core(|c| c.stats.begin_rejected_cap) > 0
                && open_txns(emu).iter().any(|t| t.starts_with("other-"))
            {
                for l in ["other-1", "other-2"] {
                    let out = std::process::Command::new("curl")
                        .args(["-s", "--location-trusted", "-u", "root:pw", "-XPOST", "-H", &format!("label:{l}")])
                        .args(["-H", "db:rockfeed", "-H", "table:telemetry_1m"])
                        .arg(format!("{}/api/transaction/rollback", emu.fe_url()))
                        .output()
                        .unwrap();
                    assert!(String::from_utf8_lossy(&out.stdout).contains("\"OK\""), "{out:?}");
                }
            }
        },
    )
    .await;
    let capped = r.emu.with_core(|c| c.stats.begin_rejected_cap);
    assert!(capped > 0, "the cap was hit");
    r.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalances_between_two_instances_finish_their_epochs_and_lose_nothing() {
    // Instance A alone; B joins the group mid-stream (A's partitions are
    // revoked: A finishes its open epoch, then both recover and split the
    // partitions); A stops mid-stream (B takes everything over from A's
    // decided offsets). Every reading lands once, each under the prefix of
    // the instance that read it.
    let mock = mock_cluster(1, "telemetry", 4).unwrap();
    let brokers = mock.bootstrap_servers();
    let (r, cfg_b) = two_instances(&brokers, "kra", "krb").await;
    let start = |cfg: rockfeed::config::Config| {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ready_tx, ready) = watch::channel(false);
        (stop_tx, ready, tokio::spawn(rockfeed::app::run_with_ready(cfg, stop_rx, ready_tx)))
    };
    let (stop_a, mut ready_a, app_a) = start(r.cfg.clone());
    assert!(tokio::time::timeout(Duration::from_secs(60), ready_a.wait_for(|r| *r)).await.is_ok());
    let producer = {
        let brokers = brokers.clone();
        tokio::spawn(async move { produce(&brokers, Profile::Narrow, 1500.0, 12, 21).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (stop_b, mut ready_b, app_b) = start(cfg_b);
    assert!(tokio::time::timeout(Duration::from_secs(60), ready_b.wait_for(|r| *r)).await.is_ok());
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop_a.send(true).unwrap();
    let stats_a = app_a.await.unwrap().unwrap();
    let ledger = producer.await.unwrap();
    let t = tables(r.emu.fe_url());
    common::audit_settles(&t, &ledger, Duration::from_secs(60)).await;
    stop_b.send(true).unwrap();
    let stats_b = app_b.await.unwrap().unwrap();
    let audits = audit_emulator(&t, &ledger).await.unwrap();
    assert!(audits.iter().all(|a| a.ok()), "{audits:?}");
    assert!(open_txns(&r.emu).is_empty(), "{:?}", open_txns(&r.emu));
    let (a, b) = (stats_a.txns_committed.load(Ordering::Relaxed), stats_b.txns_committed.load(Ordering::Relaxed));
    assert!(a > 0 && b > 0, "both instances committed epochs: {a} {b}");
    assert_eq!(
        stats_a.readings_committed.load(Ordering::Relaxed) + stats_b.readings_committed.load(Ordering::Relaxed),
        ledger.readings(),
        "each reading committed by exactly one instance"
    );
    r.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_while_a_refused_decision_retries_rolls_the_epoch_back_without_a_restart() {
    // The group coordinator refuses A's offset commits (RebalanceInProgress)
    // while a second member joins: A's revoke arrives while the coordinator
    // retries the decision. The epoch is abandoned: its prepared
    // transactions are rolled back before the revoke is answered (A may not
    // be assigned anything again to recover them), and what A's pipeline
    // still holds of the revoked partitions is dropped. The consumer and
    // the pipeline go on, with no restart (issue 14): the tables come out
    // exact once A takes the partitions back from its decided offsets.
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let mock = mock_cluster(1, "telemetry", 2).unwrap();
    let brokers = mock.bootstrap_servers();
    let (r, _) = two_instances(&brokers, "krv", "unused").await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready) = watch::channel(false);
    let stats: Arc<rockfeed::telemetry::Stats> = Default::default();
    let app = tokio::spawn(rockfeed::app::run_with(r.cfg.clone(), stop_rx, ready_tx, stats.clone()));
    assert!(tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r)).await.is_ok(), "never assigned");
    let producer = {
        let brokers = brokers.clone();
        tokio::spawn(async move { produce(&brokers, Profile::Narrow, 1500.0, 8, 31).await })
    };
    let committed = |emu: &Emulator| {
        emu.with_core(|c| {
            c.registry
                .all()
                .filter(|t| t.label.starts_with("krv-") && matches!(t.state.name(), "COMMITTED" | "VISIBLE"))
                .count()
        })
    };
    let mut flowing = false;
    for _ in 0..100 {
        if committed(&r.emu) > 0 {
            flowing = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(flowing, "epochs commit before the fault");
    mock.request_errors(RDKafkaApiKey::OffsetCommit, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS; 40]);
    // The next epoch prepares and cannot be decided.
    let mut stuck = false;
    for _ in 0..100 {
        if open_txns(&r.emu).iter().any(|t| t.starts_with("krv-") && t.ends_with("PREPARED")) {
            stuck = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stuck, "an epoch prepared under the refused commits: {:?}", open_txns(&r.emu));
    // A second member joins the group: A's partitions are revoked.
    let joined = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let joiner = {
        let (brokers, joined) = (brokers.clone(), joined.clone());
        std::thread::spawn(move || {
            let c: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", "rockfeed-it")
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "500")
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            c.subscribe(&["telemetry"]).unwrap();
            while joined.load(Ordering::Relaxed) {
                let _ = c.poll(Duration::from_millis(100));
            }
        })
    };
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while stats.epochs_abandoned_on_revoke.load(Ordering::Relaxed) == 0 && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open = open_txns(&r.emu);
    assert!(stats.epochs_abandoned_on_revoke.load(Ordering::Relaxed) > 0, "the revoke abandoned the undecidable epoch");
    assert!(
        !open.iter().any(|t| t.starts_with("krv-")),
        "the abandoned epoch's transactions are rolled back before the partitions go: {open:?}"
    );
    mock.clear_request_errors(RDKafkaApiKey::OffsetCommit);
    joined.store(false, Ordering::Relaxed);
    joiner.join().unwrap();
    // A takes everything back over from its decided offsets.
    let ledger = producer.await.unwrap();
    let t = tables(r.emu.fe_url());
    common::audit_settles(&t, &ledger, Duration::from_secs(60)).await;
    stop_tx.send(true).unwrap();
    let stats = app.await.unwrap().unwrap();
    let audits = audit_emulator(&t, &ledger).await.unwrap();
    assert!(audits.iter().all(|a| a.ok()), "{audits:?}");
    assert!(open_txns(&r.emu).is_empty(), "{:?}", open_txns(&r.emu));
    assert!(stats.txns_rolled_back.load(Ordering::Relaxed) > 0);
    assert_eq!(stats.readings_committed.load(Ordering::Relaxed), ledger.readings());
    assert_eq!(stats.pipeline_restarts.load(Ordering::Relaxed), 0, "no pipeline restart");
    r.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrow_records_keyed_by_their_mqtt_topic_decode_as_narrow() {
    // An MQTT-to-Kafka bridge: the key is the MQTT topic
    // (`telemetry/{vin}/{metric}`), the value the narrow payload.
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let mock = mock_cluster(1, "telemetry", 3).unwrap();
    let brokers = mock.bootstrap_servers();
    let mut r = rig(&brokers, "knarrow", RegistryConfig::default()).await;
    r.cfg.source.kafka.as_mut().unwrap().key_is_colocation_key = false;
    r.cfg.source.kafka.as_mut().unwrap().topic_from_key = true;
    r.cfg.validate().unwrap();
    let fleet = Fleet::new(12, 10, 3, "RFKN");
    let mut ledger = Ledger::new(&fleet.metrics, 60_000);
    let mut generator = Generator::new(fleet, Profile::Narrow, "telemetry", 50);
    let producer: ThreadedProducer<DefaultProducerContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut n = 0;
    for i in 0..3000 {
        let m = generator.next(now - 5_000 + i, &mut ledger);
        assert!(m.topic.starts_with("telemetry/"), "{}", m.topic);
        producer.send(BaseRecord::to("telemetry").key(m.topic.as_bytes()).payload(&m.payload)).unwrap();
        n += 1;
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(n, 3000);
    let (stop_tx, stop_rx) = watch::channel(false);
    let app = tokio::spawn(rockfeed::app::run_with_ready(r.cfg.clone(), stop_rx, watch::channel(false).0));
    let t = tables(r.emu.fe_url());
    common::audit_settles(&t, &ledger, Duration::from_secs(60)).await;
    stop_tx.send(true).unwrap();
    let stats = app.await.unwrap().unwrap();
    let audits = audit_emulator(&t, &ledger).await.unwrap();
    assert!(audits.iter().all(|a| a.ok()), "{audits:?}");
    assert_eq!(stats.rejected.total(), 0);
    assert_eq!(stats.messages.load(Ordering::Relaxed), 3000);
    r.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_on_the_same_label_prefix_is_refused() {
    // Instance one commits epochs under prefix "kdup". A second instance
    // with the same prefix but another consumer group (no decisions of its
    // own) finds those labels COMMITTED above its last decided epoch (none)
    // and must refuse to start rather than write under labels it does not
    // own.
    let mock = mock_cluster(1, "telemetry", 2).unwrap();
    let brokers = mock.bootstrap_servers();
    let r = rig(&brokers, "kdup", RegistryConfig::default()).await;
    let ledger = produce(&brokers, Profile::Narrow, 2000.0, 1, 5).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let app = tokio::spawn(rockfeed::app::run_with_ready(r.cfg.clone(), stop_rx, watch::channel(false).0));
    let t = tables(r.emu.fe_url());
    common::audit_settles(&t, &ledger, Duration::from_secs(60)).await;
    stop_tx.send(true).unwrap();
    app.await.unwrap().unwrap();
    let mut other = r.cfg.clone();
    other.source.kafka.as_mut().unwrap().group_id = "another-group".into();
    let (_stop, stop_rx) = watch::channel(false);
    let res = tokio::time::timeout(
        Duration::from_secs(60),
        rockfeed::app::run_with_ready(other, stop_rx, watch::channel(false).0),
    )
    .await
    .expect("the second writer must stop by itself");
    let err = match res {
        Ok(_) => panic!("the second writer was not refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("another rockfeed instance uses this label prefix"), "{err}");
    // And it wrote nothing: the tables still match the first run exactly.
    assert!(audit_emulator(&t, &ledger).await.unwrap().iter().all(|a| a.ok()));
    r.emu.shutdown().await;
}

/// Two instances of one group, A (the rig's) and B, each with its own
/// prefix. A member that is gone (a stopped instance, or one whose epoch
/// could not be decided mid-rebalance and which restarts its consumer) is
/// evicted after 6 s, not librdkafka's default 45 s: on the mock cluster
/// the next assignment waits for it.
async fn two_instances(brokers: &str, a: &str, b: &str) -> (Rig, rockfeed::config::Config) {
    let mut r = rig(brokers, a, RegistryConfig::default()).await;
    let props = &mut r.cfg.source.kafka.as_mut().unwrap().properties;
    props.insert("session.timeout.ms".into(), "6000".into());
    props.insert("heartbeat.interval.ms".into(), "500".into());
    let mut cfg_b = r.cfg.clone();
    cfg_b.starrocks.label_prefix = b.into();
    cfg_b.dead_letter.dir = r.cfg.dead_letter.dir.with_file_name(format!("dead-{b}"));
    (r, cfg_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_restarts_after_another_committed_over_all_its_decisions() {
    // A runs alone and stops; B (its own prefix, same group) then owns every
    // partition and commits offsets with its metadata over all of A's
    // decisions; A restarts. Its committed labels above the decision the
    // group now shows for its prefix (none) must not read as another writer
    // on its prefix: A's local note of its last decided epoch says they are
    // its own.
    let mock = mock_cluster(1, "telemetry", 4).unwrap();
    let brokers = mock.bootstrap_servers();
    let (r, cfg_b) = two_instances(&brokers, "kro", "krq").await;
    let t = tables(r.emu.fe_url());
    let mut ledger = Ledger::new(&Fleet::new(24, 15, 41, "RFKX").metrics, 60_000);
    for (i, cfg) in [r.cfg.clone(), cfg_b, r.cfg.clone()].into_iter().enumerate() {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ready_tx, mut ready) = watch::channel(false);
        let app = tokio::spawn(rockfeed::app::run_with_ready(cfg, stop_rx, ready_tx));
        let up = tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r)).await.is_ok();
        if !up && app.is_finished() {
            panic!("run {i} stopped: {:?}", app.await.unwrap().err());
        }
        assert!(up, "run {i} never assigned");
        let fleet = Fleet::new(24, 15, 41, "RFKX");
        common::produce_kafka(&brokers, fleet, Profile::Narrow, 1500.0, 2, &mut ledger).await;
        let ok = common::audit_settles(&t, &ledger, Duration::from_secs(60)).await;
        stop_tx.send(true).unwrap();
        let stats = app.await.unwrap().unwrap();
        assert!(ok, "run {i}: {:?}", audit_emulator(&t, &ledger).await.unwrap());
        assert!(stats.txns_committed.load(Ordering::Relaxed) > 0, "run {i} committed epochs");
    }
    assert!(open_txns(&r.emu).is_empty(), "{:?}", open_txns(&r.emu));
    r.emu.shutdown().await;
}

/// Issue 14: a group with more members than partitions. A holds the only
/// partition, B (its own prefix, same group) joins and is assigned nothing
/// (recovery runs at start, and again on the empty assignment). B's last life left
/// epoch 3 decided (its local note) with a transaction still PREPARED, and
/// epoch 4 undecided with one PREPARED. B finishes both at start, though it
/// never gets a partition: epoch 3's commits (its canary row is visible),
/// epoch 4's rolls back (its canary is not), and no transaction waits for
/// StarRocks' prepared timeout holding a running-transaction slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_partitions_recovers() {
    let mock = mock_cluster(1, "telemetry", 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let (r, cfg_b) = two_instances(&brokers, "kna", "knb").await;
    let t = tables(r.emu.fe_url());
    let mut ledger = Ledger::new(&Fleet::new(24, 15, 43, "RFKX").metrics, 60_000);
    let (stop_a, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready) = watch::channel(false);
    let a = tokio::spawn(rockfeed::app::run_with_ready(r.cfg.clone(), stop_rx, ready_tx));
    assert!(tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r)).await.is_ok(), "A never assigned");
    common::produce_kafka(&brokers, Fleet::new(24, 15, 43, "RFKX"), Profile::Narrow, 1500.0, 1, &mut ledger).await;
    assert!(common::audit_settles(&t, &ledger, Duration::from_secs(60)).await);
    // B's last life.
    std::fs::create_dir_all(&cfg_b.pipeline.state_dir).unwrap();
    std::fs::write(cfg_b.pipeline.state_dir.join("knb.decided"), "3\n").unwrap();
    let loader = common::loader(&r.emu, "pw", "rockfeed", Default::default());
    let txn = TxnLoader::new(&loader, Default::default());
    for (label, vin) in [("knb-telemetry_1m-0-3", "DECIDED"), ("knb-telemetry_1m-1-4", "UNDECIDED")] {
        let mut h = http::HeaderMap::new();
        h.insert("column_separator", http::HeaderValue::from_static(","));
        h.insert("columns", http::HeaderValue::from_static("vehicle_id,window_start,metric,cnt,total,`min`,`max`"));
        let body = bytes::Bytes::from(format!("{vin},2026-01-01 00:00:00,speed,1,1,1,1\n"));
        txn.prepare("telemetry_1m", label, &[Chunk { headers: h, body }]).await.unwrap();
    }
    let state = |l: &str| r.emu.with_core(|c| c.registry.by_label("rockfeed", l).map(|t| t.state.name()));
    let (stop_b, stop_rx) = watch::channel(false);
    let (ready_tx, _ready_b) = watch::channel(false);
    let b = tokio::spawn(rockfeed::app::run_with_ready(cfg_b, stop_rx, ready_tx));
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while (state("knb-telemetry_1m-0-3"), state("knb-telemetry_1m-1-4")) != (Some("VISIBLE"), Some("ABORTED"))
        && tokio::time::Instant::now() < end
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state("knb-telemetry_1m-0-3"), Some("VISIBLE"), "the decided epoch committed");
    assert_eq!(state("knb-telemetry_1m-1-4"), Some("ABORTED"), "the undecided epoch rolled back");
    let vins: Vec<String> = r.emu.with_core(|c| {
        c.table("rockfeed", "telemetry_1m").unwrap().rows().iter().map(|row| row[0].to_string()).collect()
    });
    assert!(vins.contains(&"DECIDED".to_string()) && !vins.contains(&"UNDECIDED".to_string()));
    stop_b.send(true).unwrap();
    stop_a.send(true).unwrap();
    b.await.unwrap().unwrap();
    a.await.unwrap().unwrap();
    assert!(open_txns(&r.emu).is_empty(), "{:?}", open_txns(&r.emu));
    r.emu.shutdown().await;
}

/// Issue 14: a retention loss is counted, per partition, with the number
/// of offsets skipped. rockfeed consumes, commits and stops; while it is
/// down, more than the mock broker keeps per partition (5 MiB) is
/// produced, so the log's start moves past the committed offset. At the
/// restart consumption resets to the earliest offset kept: rockfeed counts
/// exactly the offsets between its committed offset and the log's new
/// start (`rockfeed_kafka_offsets_skipped_total{topic,partition}`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_retention_deleted_before_they_were_read_are_counted() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let mock = mock_cluster(1, "telemetry", 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let r = rig(&brokers, "kret", RegistryConfig::default()).await;
    let t = tables(r.emu.fe_url());
    let life = |stats: Arc<rockfeed::telemetry::Stats>| {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ready_tx, ready) = watch::channel(false);
        (stop_tx, ready, tokio::spawn(rockfeed::app::run_with(r.cfg.clone(), stop_rx, ready_tx, stats)))
    };
    let (stop, mut ready, app) = life(Default::default());
    assert!(tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r)).await.is_ok());
    let mut ledger = Ledger::new(&Fleet::new(24, 15, 47, "RFKX").metrics, 60_000);
    common::produce_kafka(&brokers, Fleet::new(24, 15, 47, "RFKX"), Profile::Narrow, 1500.0, 1, &mut ledger).await;
    assert!(common::audit_settles(&t, &ledger, Duration::from_secs(60)).await);
    stop.send(true).unwrap();
    app.await.unwrap().unwrap();
    // While rockfeed is down: 8 MiB of filler.
    let producer: BaseProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let filler = vec![b'x'; 100 << 10];
    for _ in 0..80 {
        producer.send(BaseRecord::<(), [u8]>::to("telemetry").payload(&filler[..])).unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    }
    let probe: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "rockfeed-it")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("telemetry", 0);
    let committed = match probe.committed_offsets(tpl, Duration::from_secs(10)).unwrap().elements()[0].offset() {
        rdkafka::Offset::Offset(o) => o,
        o => panic!("no committed offset: {o:?}"),
    };
    let (low, _) = probe.fetch_watermarks("telemetry", 0, Duration::from_secs(10)).unwrap();
    assert!(
        low > committed,
        "the premise: retention moved the log's start ({low}) past the committed offset ({committed})"
    );
    let stats: Arc<rockfeed::telemetry::Stats> = Default::default();
    let (stop, mut ready, app) = life(stats.clone());
    assert!(tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r)).await.is_ok());
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while stats.kafka_offset_resets.lock().is_empty() && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    app.await.unwrap().unwrap();
    let resets = stats.kafka_offset_resets.lock().clone();
    assert_eq!(resets.get(&("telemetry".to_string(), 0)), Some(&(1, (low - committed) as u64)), "{resets:?}");
    let text = rockfeed::telemetry::http::render(&stats, true);
    let line =
        format!("rockfeed_kafka_offsets_skipped_total{{topic=\"telemetry\",partition=\"0\"}} {}", low - committed);
    assert!(text.contains(&line), "{text}");
    r.emu.shutdown().await;
}
