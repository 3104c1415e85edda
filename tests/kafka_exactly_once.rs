//! The Kafka source with exactly-once delivery, in process: librdkafka's
//! mock cluster (several brokers, a topic of several partitions), loadgen
//! producing keyed by VIN, rockfeed's app with the epoch coordinator, and
//! the StarRocks emulator's transaction API. Every (vin, window, metric)
//! row must equal what was produced, and the emulator must hold no open
//! transaction afterwards; each fault of the transaction interface
//! (`starrocks-stream-load.md` §5.2/§6) must still end in exact tables.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod common;

use loadgen::audit::{EmulatorTables, audit_emulator};
use loadgen::fleet::Fleet;
use loadgen::kafka::{KafkaSender, KafkaTarget, mock_cluster};
use loadgen::ledger::Ledger;
use loadgen::payload::{Generator, Profile};
use loadgen::run::{RunOptions, Target};
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
[source.kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = ["telemetry"]
key_is_colocation_key = true
[dead_letter]
dir = "{}"
"#,
        dir.join("dead").display()
    )
}

async fn produce(brokers: &str, profile: Profile, rate: f64, secs: u64, seed: u64) -> Ledger {
    let fleet = Fleet::new(24, 15, seed, "RFKX");
    let mut ledger = Ledger::new(&fleet.metrics, 60_000);
    let mut generator = Generator::new(fleet, profile, "telemetry", 50).narrow_as_objects(true);
    let sender = KafkaSender::connect(&KafkaTarget::new(brokers, "telemetry")).unwrap();
    let o = RunOptions { ack_timeout: Duration::from_secs(60), ..RunOptions::timed(rate, Duration::from_secs(secs)) };
    let s = loadgen::run::run(&mut generator, profile, &mut ledger, Target::Kafka(sender), &o, &AtomicBool::new(false))
        .await
        .unwrap();
    assert!(s.complete(), "{} of {} delivered", s.delivered, s.messages);
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
    let r = rig(&brokers, "kx", RegistryConfig::default()).await;
    let secs = std::env::var("KX_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let ledger = produce(&brokers, Profile::Narrow, 3000.0, secs, 1).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready) = watch::channel(false);
    let app = tokio::spawn(rockfeed::app::run_with_ready(r.cfg.clone(), stop_rx, ready_tx));
    assert!(
        tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r)).await.is_ok(),
        "never assigned"
    );
    let t = tables(r.emu.fe_url());
    let mut ok = false;
    for _ in 0..300 {
        let a = audit_emulator(&t, &ledger).await.unwrap();
        if a.iter().all(|a| a.ok()) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    r.emu.shutdown().await;
}
