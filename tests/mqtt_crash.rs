//! MQTT crash test: mosquitto (QoS 1, rockfeed's persistent session), an
//! independent publisher (loadgen, acknowledged by the broker, not by
//! rockfeed), and `rockfeed run` as a child process killed with SIGKILL at
//! least 20 times during one stream and restarted each time. Kills rotate
//! through the WAL's and the epoch protocol's steps (the test hook halts
//! the child there) and random moments:
//! - `wal_before_fsync`: a group commit written, not synced;
//! - `wal_after_fsync`: synced, not acknowledged (the broker redelivers
//!   what the WAL already holds: the dedup horizon must drop it);
//! - `after_prepare`, `after_decide`, `mid_commit`;
//! - the archive's `archive_mid_frame`, `archive_after_seal`,
//!   `archive_mid_upload`, `archive_after_publish`.
//!
//! Then a last undisturbed run settles, and everything is audited against
//! what the broker acknowledged to the publisher: the aggregate table per
//! (vin, window, metric) and the latest table exactly, no transaction left
//! open, the Parquet archive (pyarrow) every reading once. The WAL's I/O
//! path is plain files (what CI runs) and, where the kernel allows it,
//! io_uring.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use loadgen::fleet::Fleet;
use loadgen::ledger::Ledger;
use loadgen::mqtt::{MqttSender, MqttTarget};
use loadgen::payload::{Generator, Profile};
use loadgen::run::{RunOptions, Target};
use rand::{Rng, SeedableRng};

mod common;

use common::archive::{audit_archive, read_archive, stray_files};
use common::crash::{self, settle, spawn};

const CLIENT: &str = "rockfeed-crash";

fn config(port: u16, emu: &str, dir: &Path, io: &str) -> String {
    format!(
        r#"
[starrocks]
endpoints = ["{emu}"]
database = "rockfeed"
user = "root"
password = "pw"
label_prefix = "mqcrash"
max_attempts = 0
[tables]
latest_metrics = ["speed", "soc"]
buckets = 8
replication_num = 1
[pipeline]
shards = 3
epoch = "250ms"
state_dir = "{dir}/state"
[wal]
dir = "{dir}/wal"
segment_bytes = 1048576
io = "{io}"
[source.mqtt]
host = "127.0.0.1"
port = {port}
client_id = "{CLIENT}"
topics = ["telemetry/#"]
protocol = "3.1.1"
clean_session = false
[dead_letter]
dir = "{dir}/dead"
[archive]
enabled = true
url = "{dir}/archive"
spool_dir = "{dir}/spool"
roll_bytes = 1048576
spool_max_bytes = 67108864
roll_age = "3s"
roll_idle = "1s"
spill_bytes = 4096
"#,
        dir = dir.display()
    )
}

/// Creates rockfeed's persistent session (subscribed at QoS 1), so the
/// broker queues everything published while rockfeed is down from the start.
async fn make_session(port: u16) {
    let mut o = rumqttc::MqttOptions::new(CLIENT, "127.0.0.1", port);
    o.set_clean_session(false);
    let (c, mut ev) = rumqttc::AsyncClient::new(o, 10);
    c.subscribe("telemetry/#", rumqttc::QoS::AtLeastOnce).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) = ev.poll().await.unwrap() {
                break;
            }
        }
    })
    .await
    .expect("subscribed");
    c.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(1), ev.poll()).await;
}

/// Narrow traffic (one reading per message, QoS 1) until `stop`; the
/// ledger holds what the broker acknowledged.
fn produce(port: u16, rate: f64, seed: u64, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Ledger> {
    tokio::spawn(async move {
        let fleet = Fleet::new(64, 12, seed, "RFMQCRASH");
        let mut ledger = Ledger::new(&fleet.metrics, 60_000);
        let mut generator = Generator::new(fleet, Profile::Narrow, "telemetry", 50);
        let mut target = MqttTarget::new("127.0.0.1", port);
        target.connections = 2;
        target.client_prefix = format!("crash-publisher-{seed}");
        let sender = MqttSender::connect(&target).await.unwrap();
        let o =
            RunOptions { ack_timeout: Duration::from_secs(120), ..RunOptions::timed(rate, Duration::from_secs(600)) };
        let s = loadgen::run::run(&mut generator, Profile::Narrow, &mut ledger, Target::Mqtt(sender), &o, &stop)
            .await
            .unwrap();
        assert!(s.complete(), "the broker acknowledged {} of {}", s.delivered, s.messages);
        ledger
    })
}

/// Where each kill lands: (hook step, how many visits before it halts).
const STEPS: [(&str, u32); 9] = [
    ("wal_after_fsync", 400),
    ("after_prepare", 3),
    ("wal_before_fsync", 400),
    ("after_decide", 3),
    ("archive_mid_frame", 3),
    ("mid_commit", 3),
    ("archive_after_seal", 3),
    ("archive_mid_upload", 2),
    ("archive_after_publish", 2),
];

/// One test's parts: mosquitto on a free port (unbounded queue,
/// `inflight` messages in flight), the emulator with the config's tables,
/// `rockfeed.toml` (WAL I/O `io`, then `extra`) and rockfeed's persistent
/// session, subscribed.
struct Setup {
    dir: tempfile::TempDir,
    port: u16,
    _broker: common::Broker,
    emu: rockfeed::starrocks_emulator::Emulator,
    conf: std::path::PathBuf,
}

async fn setup(inflight: u32, io: &str, extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let broker_conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages {inflight}\n"
    );
    let _broker = common::mosquitto(dir.path(), port, &broker_conf);
    let text = |emu: &str| format!("{}{extra}", config(port, emu, dir.path(), io));
    let mut cfg = rockfeed::config::Config::parse(&text("http://127.0.0.1:1")).unwrap();
    let emu = common::emulator_for(&mut cfg).await;
    let conf = dir.path().join("rockfeed.toml");
    std::fs::write(&conf, text(&emu.fe_url())).unwrap();
    make_session(port).await;
    Setup { dir, port, _broker, emu, conf }
}

async fn crash_run(io: &str, kills_wanted: usize) {
    let Setup { dir, port, _broker, emu, conf } = setup(200, io, "").await;

    let seed: u64 = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("mqtt crash test ({io}) seed {seed} (CRASH_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce(port, 400.0, seed, stop.clone());
    let mut kills = Vec::new();
    let mut logs = Vec::new();
    for i in 0..kills_wanted {
        // Every fourth kill at a random moment; the others at each step in turn.
        let hook = (i % 4 != 0).then(|| {
            let (step, most) = STEPS[(i - i / 4 - 1) % STEPS.len()];
            format!("{step}:{}", rng.random_range(1..=most))
        });
        let mut run = spawn(&conf, hook.clone());
        match &hook {
            Some(h) => {
                let reached = run.wait_for("test hook: halted at", Duration::from_secs(60)).await;
                assert!(reached, "kill {i}: the hook {h} was never reached:\n{}", run.tail());
            }
            None => tokio::time::sleep(Duration::from_millis(rng.random_range(300..3000))).await,
        }
        kills.push(hook.unwrap_or_else(|| "random".into()));
        logs.extend(run.kill9().await);
    }
    stop.store(true, Ordering::Relaxed);
    let ledger = producer.await.unwrap();
    eprintln!("{} kills: {kills:?}; {} readings acknowledged by the broker", kills.len(), ledger.readings());
    let audits = settle(&emu, &conf, &ledger, Duration::from_secs(20)).await;
    assert!(audits.iter().all(|a| a.ok()), "{audits:?}");
    assert_eq!(audits[0].records_landed, ledger.readings());
    assert!(crash::open_txns(&emu).is_empty(), "{:?}", crash::open_txns(&emu));
    let saw = |s: &str| logs.iter().filter(|l| l.contains(s)).count();
    // The kills hit the protocol, and the broker redelivered what the WAL
    // already held.
    assert!(saw("Recovery rolled back a transaction") > 0, "an undecided epoch was rolled back");
    assert!(saw("Recovery committed a prepared transaction") > 0, "a decided epoch was committed by recovery");
    assert!(saw("redelivery of a message already in the WAL was dropped") > 0, "redeliveries were dropped");
    // The archive: every reading once.
    let root = dir.path().join("archive");
    let rows = read_archive(&root.display().to_string(), None);
    let audit = audit_archive(&rows, &ledger).unwrap();
    assert!(audit.ok(), "{audit}: {:?}", audit.examples);
    assert_eq!(rows.len() as u64, ledger.readings());
    assert!(stray_files(&root, "telemetry_raw").is_empty(), "{:?}", stray_files(&root, "telemetry_raw"));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_from_mqtt_survives_repeated_sigkill_with_plain_file_io() {
    let kills = std::env::var("CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(22);
    crash_run("std", kills).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_from_mqtt_survives_repeated_sigkill_with_io_uring() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let probe = std::thread::spawn(move || rockfeed::wal::io::UringBackend::probe(&path).map(|_| ())).join().unwrap();
    if let Err(e) = probe {
        eprintln!("skipped: io_uring is not usable here ({e})");
        return;
    }
    let kills = std::env::var("CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(22);
    crash_run("uring", kills).await;
}

/// The records a WAL directory holds (recovering it as rockfeed would).
fn wal_records(dir: &Path) -> u64 {
    let (log, _) =
        rockfeed::wal::segment::Log::open(dir, 1 << 20, Box::new(rockfeed::wal::io::StdBackend::buffered()), 0)
            .unwrap();
    let mut r = rockfeed::wal::segment::Reader::new(dir, log.start(), log.end());
    let mut n = 0;
    while r.next_record().unwrap().is_some() {
        n += 1;
    }
    n
}

/// Redelivery: rockfeed is killed after its first group commit was fsynced
/// and before any PUBACK went out. The broker redelivers everything it had
/// in flight, the records already in the WAL among them. The restarted
/// rockfeed drops exactly those (its dedup counter equals the WAL's record
/// count at the kill), and the tables hold every message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_of_what_the_wal_holds_is_dropped_and_counted_exactly() {
    let metrics_port = common::free_port();
    let extra = format!("[telemetry]\nlisten = \"127.0.0.1:{metrics_port}\"\n");
    let Setup { dir, port, _broker, emu, conf } = setup(1000, "std", &extra).await;
    // 600 messages wait in the session while rockfeed is down.
    let fleet = Fleet::new(16, 12, 5, "RFREDELIV");
    let (ledger, _) =
        common::publish_readings(port, fleet, Profile::Narrow, 600, 2000.0, 1, "redelivery-publisher").await;

    let mut run = spawn(&conf, Some("wal_after_fsync:1".into()));
    assert!(run.wait_for("test hook: halted at", Duration::from_secs(60)).await, "{}", run.tail());
    run.kill9().await;
    let in_wal = wal_records(&dir.path().join("wal"));
    assert!(in_wal > 0, "the first group commit was durable");

    let mut run = spawn(&conf, None);
    let t = common::emulator_tables(emu.fe_url(), true);
    assert!(common::audit_settles(&t, &ledger, Duration::from_secs(60)).await, "{}", run.tail());
    let (_, body) = loadgen::http::get(&format!("http://127.0.0.1:{metrics_port}/metrics"), None).await.unwrap();
    let metrics = String::from_utf8_lossy(&body).into_owned();
    let dups = loadgen::bench::metric_value(&metrics, "rockfeed_mqtt_duplicates_total");
    assert_eq!(dups, Some(in_wal as f64), "every redelivered record the WAL held, and nothing else");
    let received = loadgen::bench::metric_value(&metrics, "rockfeed_mqtt_received_total").unwrap();
    assert!(received >= 600.0, "the broker redelivered every unacknowledged message: {received}");
    eprintln!("{in_wal} records in the WAL at the kill; {received} messages received after the restart");
    let pid = run.child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").arg("-INT").arg(&pid).status().unwrap().success());
    let exit = tokio::time::timeout(Duration::from_secs(60), run.child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{}", run.tail());
    let audits = loadgen::audit::audit_emulator(&t, &ledger).await.unwrap();
    assert!(audits.iter().all(|a| a.ok() && a.duplicated == 0), "{audits:?}");
    emu.shutdown().await;
}

/// Issue 14: a crash while a decided epoch's transaction is loaded again.
/// StarRocks aborts a PREPARED transaction of a decided epoch just before
/// rockfeed commits it (the emulator's `aborted_before_commit`: a prepared
/// timeout or an operator's rollback). rockfeed begins loading its rows
/// again under the same label and is killed before that re-load is
/// prepared (the hook's `mid_reload`): the label is left in PREPARE. The
/// next start rolls the re-load back, re-reads the epoch's range from the
/// WAL, rebuilds the transaction under its label and commits it: the
/// tables audit exact, nothing is counted lost, no transaction is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_a_decided_epoch_is_loaded_again_is_rebuilt_from_the_wal() {
    let Setup { dir: _dir, port, _broker, emu, conf } = setup(200, "std", "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce(port, 300.0, 17, stop.clone());
    // Messages wait in the session, so the first epoch carries data.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rule = r#"{"fault":"aborted_before_commit","next":1}"#;
    emu.faults().add(serde_json::from_str(rule).unwrap()).unwrap();
    let mut run = spawn(&conf, Some("mid_reload:1".into()));
    assert!(run.wait_for("test hook: halted at mid_reload", Duration::from_secs(60)).await, "{}", run.tail());
    assert!(run.saw("A decided transaction was aborted; loading its rows again"), "{}", run.tail());
    run.kill9().await;
    let open = crash::open_txns(&emu);
    assert!(open.iter().any(|t| t.ends_with("PREPARE")), "the re-load is begun, not prepared: {open:?}");

    let mut run = spawn(&conf, None);
    assert!(run.wait_for("Recovery rebuilt a lost transaction", Duration::from_secs(60)).await, "{}", run.tail());
    assert!(run.saw("Recovery rolled back an interrupted re-load"), "{}", run.tail());
    assert!(!run.saw("did not commit in StarRocks"), "nothing counted lost:\n{}", run.tail());
    tokio::time::sleep(Duration::from_secs(1)).await;
    run.kill9().await;
    stop.store(true, Ordering::Relaxed);
    let ledger = producer.await.unwrap();
    let audits = settle(&emu, &conf, &ledger, Duration::from_secs(20)).await;
    assert!(audits.iter().all(|a| a.ok()), "{audits:?}");
    assert_eq!(audits[0].records_landed, ledger.readings());
    assert!(crash::open_txns(&emu).is_empty(), "{:?}", crash::open_txns(&emu));
    emu.shutdown().await;
}
