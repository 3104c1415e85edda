//! Crash tests: `rockfeed run` as a child process, consuming from
//! librdkafka's mock cluster (in this process) into the StarRocks emulator
//! (in this process, running across every kill), is killed with SIGKILL
//! again and again while loadgen produces, and restarted each time. Kills
//! come at random moments and at each step of the epoch protocol (the test
//! hook halts the child there: after every shard prepared, after the offset
//! commit, between two transaction commits). Afterwards the emulator's
//! tables are audited against everything produced:
//! - exactly-once: every (vin, window, metric) row exactly equal, no
//!   transaction left open;
//! - at-least-once, killed after its loads but before its offset commit:
//!   the audit must find the duplicates (so the test can tell the modes apart).
//!
//! The raw archive is on throughout. The exactly-once run also kills in its
//! steps: half-way through a spool frame, after a file is cut, after the
//! file is encoded but before it is published, and after it is published
//! but before its spool segment is deleted. pyarrow then reads the archive
//! back: every reading exactly once, nothing stray in the layout.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use loadgen::audit::audit_emulator;
use loadgen::fleet::Fleet;
use loadgen::kafka::{KafkaSender, KafkaTarget, mock_cluster};
use loadgen::ledger::Ledger;
use loadgen::payload::{Generator, Profile};
use loadgen::run::{RunOptions, Target};
use rand::{Rng, SeedableRng};
use rockfeed::starrocks::ddl::parse_ddl;

mod common;

use common::archive::{audit_archive, read_archive, stray_files};
use common::crash::{self, settle, spawn};
use rockfeed::starrocks_emulator::{Emulator, EmulatorConfig};

fn config(brokers: &str, emu: &str, dir: &std::path::Path, delivery: &str, prefix: &str) -> String {
    format!(
        r#"
[starrocks]
endpoints = ["{emu}"]
database = "rockfeed"
user = "root"
password = "pw"
label_prefix = "{prefix}"
delivery = "{delivery}"
max_attempts = 0
[tables]
latest_metrics = ["speed", "soc"]
buckets = 8
replication_num = 1
[pipeline]
shards = 3
epoch = "250ms"
state_dir = "{dir}/state"
[source.kafka]
brokers = "{brokers}"
group_id = "crash-{prefix}"
topics = ["telemetry"]
[source.kafka.properties]
"session.timeout.ms" = "2500"
"heartbeat.interval.ms" = "300"
"group.instance.id" = "crash-{prefix}-1"
{}
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
        std::env::var("CRASH_KAFKA_DEBUG").map(|d| format!("\"debug\" = \"{d}\"")).unwrap_or_default(),
        dir = dir.display()
    )
}

struct Crash {
    emu: Emulator,
    conf: std::path::PathBuf,
    dir: tempfile::TempDir,
}

async fn setup(brokers: &str, delivery: &str, prefix: &str) -> Crash {
    let dir = tempfile::tempdir().unwrap();
    let text = config(brokers, "http://127.0.0.1:1", dir.path(), delivery, prefix);
    let cfg = rockfeed::config::Config::parse(&text).unwrap();
    let mut ec = EmulatorConfig::local(parse_ddl(&rockfeed::config::ddl::ddl(&cfg)).unwrap(), "root", "pw");
    ec.bes.push("127.0.0.1:0".parse().unwrap());
    let emu = Emulator::start(ec).await.unwrap();
    let conf = dir.path().join("rockfeed.toml");
    std::fs::write(&conf, config(brokers, &emu.fe_url(), dir.path(), delivery, prefix)).unwrap();
    Crash { emu, conf, dir }
}

/// Produces narrow traffic (one reading per message) in the background
/// until `stop` (or `secs`); the ledger comes back when it is done.
fn produce(brokers: String, rate: f64, secs: u64, seed: u64, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Ledger> {
    tokio::spawn(async move {
        let fleet = Fleet::new(64, 12, seed, "RFCRASH");
        let mut ledger = Ledger::new(&fleet.metrics, 60_000);
        let mut generator = Generator::new(fleet, Profile::Narrow, "telemetry", 50).narrow_as_objects(true);
        let sender = KafkaSender::connect(&KafkaTarget::new(&brokers, "telemetry")).unwrap();
        let o =
            RunOptions { ack_timeout: Duration::from_secs(120), ..RunOptions::timed(rate, Duration::from_secs(secs)) };
        let s = loadgen::run::run(&mut generator, Profile::Narrow, &mut ledger, Target::Kafka(sender), &o, &stop)
            .await
            .unwrap();
        assert!(s.complete(), "{} of {} delivered", s.delivered, s.messages);
        ledger
    })
}

const STEPS: [&str; 7] = [
    "after_prepare",
    "archive_mid_frame",
    "after_decide",
    "archive_after_seal",
    "mid_commit",
    "archive_mid_upload",
    "archive_after_publish",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_survives_repeated_sigkill_at_random_moments_and_at_every_protocol_step() {
    let mock = mock_cluster(3, "telemetry", 4).unwrap();
    let brokers = mock.bootstrap_servers();
    let c = setup(&brokers, "exactly-once", "crash").await;
    let seed: u64 = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (CRASH_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce(brokers.clone(), 600.0, 600, seed, stop.clone());
    let mut kills = Vec::new();
    let mut logs = Vec::new();
    let kills_wanted: usize = std::env::var("CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(24);
    for i in 0..kills_wanted {
        // Every fourth kill at a random moment; the others at each protocol
        // step in turn.
        let hook =
            (i % 4 != 0).then(|| format!("{}:{}", STEPS[(i - i / 4 - 1) % STEPS.len()], rng.random_range(1..=3)));
        let mut run = spawn(&c.conf, hook.clone());
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
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ledger = producer.await.unwrap();
    eprintln!("{} kills: {kills:?}; {} readings produced", kills.len(), ledger.readings());
    let audits = settle(&c.emu, &c.conf, &ledger, Duration::from_secs(20)).await;
    assert!(audits.iter().all(|a| a.ok()), "{audits:?}");
    assert_eq!(audits[0].records_landed, ledger.readings());
    assert!(crash::open_txns(&c.emu).is_empty(), "{:?}", crash::open_txns(&c.emu));
    // The kills did hit the protocol: recovery rolled transactions of
    // undecided epochs back and committed prepared ones of decided epochs.
    let saw = |s: &str| logs.iter().filter(|l| l.contains(s)).count();
    assert!(saw("Recovery rolled back a transaction") > 0 && saw("Recovery committed a prepared transaction") > 0);
    // The premise: nothing was lost to the mock broker's retention (it keeps
    // 5 MiB per partition), which would show as an offset reset.
    assert_eq!(saw("offset reset"), 0, "the mock broker deleted unconsumed data; lower the rate");
    // The archive: every reading once, whatever the kills interrupted.
    let root = c.dir.path().join("archive");
    let rows = read_archive(&root.display().to_string(), None);
    let audit = audit_archive(&rows, &ledger).unwrap();
    assert!(audit.ok(), "{audit}: {:?}", audit.examples);
    assert_eq!(rows.len() as u64, ledger.readings());
    assert!(stray_files(&root, "telemetry_raw").is_empty(), "{:?}", stray_files(&root, "telemetry_raw"));
    assert!(saw("Archive spool segment recovered") > 0, "restarts found spooled segments");
    // A kill after a publish, before the segment was deleted: the restart
    // found the file in place and accepted it instead of writing it twice.
    assert!(saw("already published before a restart") > 0, "a re-publish after a kill was seen");
    c.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_killed_between_load_and_offset_commit_duplicates_rows() {
    let mock = mock_cluster(1, "telemetry", 4).unwrap();
    let brokers = mock.bootstrap_servers();
    let c = setup(&brokers, "at-least-once", "alo").await;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = produce(brokers.clone(), 600.0, 600, 3, stop.clone());
    for _ in 0..4 {
        let mut run = spawn(&c.conf, Some("after_prepare:2".into()));
        assert!(run.wait_for("test hook: halted at", Duration::from_secs(60)).await, "{}", run.tail());
        run.kill9().await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ledger = producer.await.unwrap();
    let t = common::emulator_tables(c.emu.fe_url(), true);
    // Let a last run catch up, then look.
    let _ = settle(&c.emu, &c.conf, &ledger, Duration::from_secs(10)).await;
    let a = &audit_emulator(&t, &ledger).await.unwrap()[0];
    assert_eq!(a.missing, 0, "at-least-once loses nothing: {a}");
    assert!(a.duplicated > 0, "loads before the offset commit are loaded again after the kill: {a}");
    c.emu.shutdown().await;
}

/// Issue 14: StarRocks' prepared timeout runs out while rockfeed is down.
/// The child halts right after deciding an epoch (its transactions
/// PREPARED, with a 2 s prepared timeout), is killed, and stays down past
/// the timeout, so StarRocks aborts a decided epoch's transactions. The
/// next start rebuilds them from the Kafka range each partition's decision
/// records, under the same labels: the tables audit exact, nothing is
/// counted lost, no transaction is left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_timeout_that_runs_out_while_down_is_rebuilt_from_kafka() {
    let mock = mock_cluster(1, "telemetry", 4).unwrap();
    let brokers = mock.bootstrap_servers();
    let c = setup(&brokers, "exactly-once", "expire").await;
    let text = std::fs::read_to_string(&c.conf)
        .unwrap()
        .replace("max_attempts = 0\n", "max_attempts = 0\nprepared_timeout = \"2s\"\n");
    std::fs::write(&c.conf, text).unwrap();
    // Produced while the child runs, so the halted epoch's ranges start
    // past offset 0; for 10 s, so that data still arrives for a third
    // epoch when a loaded machine joins the group late and the backlog
    // fits in two.
    let producer = produce(brokers.clone(), 600.0, 10, 7, Arc::new(AtomicBool::new(false)));
    let mut run = spawn(&c.conf, Some("after_decide:3".into()));
    assert!(run.wait_for("test hook: halted at", Duration::from_secs(60)).await, "{}", run.tail());
    run.kill9().await;
    let ledger = producer.await.unwrap();
    let expired = |emu: &Emulator| -> usize {
        emu.with_core(|core| {
            core.tick(rockfeed::starrocks_emulator::now_ms());
            core.registry.all().filter(|t| t.reason == "prepared transaction timeout").count()
        })
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(expired(&c.emu) > 0, "the decided epoch's prepared transactions timed out: {:?}", crash::open_txns(&c.emu));
    let mut run = spawn(&c.conf, None);
    assert!(run.wait_for("Recovery rebuilt a lost transaction", Duration::from_secs(60)).await, "{}", run.tail());
    assert!(!run.saw("did not commit in StarRocks"), "{}", run.tail());
    run.kill9().await;
    let audits = settle(&c.emu, &c.conf, &ledger, Duration::from_secs(20)).await;
    assert!(audits.iter().all(|a| a.ok()), "{audits:?}");
    assert!(crash::open_txns(&c.emu).is_empty(), "{:?}", crash::open_txns(&c.emu));
    c.emu.shutdown().await;
}

/// Issue 14: recovery at start, before any assignment. The child halts
/// after every shard prepared an epoch (undecided: its transactions
/// PREPARED) and is killed; as a dynamic member with a 30 s session, the
/// dead member keeps the group from rebalancing until its session expires,
/// so the restarted child gets no assignment for that long. Its recovery
/// still rolls the undecided epoch back at once, from the decisions in the
/// committed offsets, instead of leaving the transactions holding
/// running-transaction slots until an assignment (or StarRocks' prepared
/// timeout) comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_gets_no_assignment_still_recovers() {
    let mock = mock_cluster(1, "telemetry", 2).unwrap();
    let brokers = mock.bootstrap_servers();
    let c = setup(&brokers, "exactly-once", "noassign").await;
    let text = std::fs::read_to_string(&c.conf)
        .unwrap()
        .replace("\"group.instance.id\" = \"crash-noassign-1\"\n", "")
        .replace("\"session.timeout.ms\" = \"2500\"", "\"session.timeout.ms\" = \"30000\"")
        .replace("\"heartbeat.interval.ms\" = \"300\"", "\"heartbeat.interval.ms\" = \"1000\"");
    std::fs::write(&c.conf, text).unwrap();
    let producer = produce(brokers.clone(), 300.0, 3, 11, Arc::new(AtomicBool::new(false)));
    let mut run = spawn(&c.conf, Some("after_prepare:1".into()));
    assert!(run.wait_for("test hook: halted at", Duration::from_secs(60)).await, "{}", run.tail());
    run.kill9().await;
    assert!(!crash::open_txns(&c.emu).is_empty(), "the halted epoch's transactions are open");
    let mut run = spawn(&c.conf, None);
    assert!(run.wait_for("Epoch recovery done", Duration::from_secs(20)).await, "{}", run.tail());
    assert!(crash::open_txns(&c.emu).is_empty(), "rolled back at start: {:?}", crash::open_txns(&c.emu));
    assert!(!run.saw("Kafka partitions assigned"), "the premise: no assignment yet\n{}", run.tail());
    // The same child goes on once the dead member's session expires.
    let ledger = producer.await.unwrap();
    let t = common::emulator_tables(c.emu.fe_url(), true);
    let end = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut audits = audit_emulator(&t, &ledger).await.unwrap();
    while !audits.iter().all(|a| a.ok()) && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        audits = audit_emulator(&t, &ledger).await.unwrap();
    }
    assert!(audits.iter().all(|a| a.ok()), "{audits:?}\n{}", run.tail());
    assert!(run.saw("Kafka partitions assigned"));
    run.kill9().await;
    c.emu.shutdown().await;
}

/// Issue 14: the crash window between a decision and its local note. The
/// child halts after its offset commit decided an epoch, before it noted
/// it locally, and is killed. Another instance (its own prefix, same
/// group) then takes every partition over and commits its own decisions
/// over all of them, so the offsets no longer show the first one's last
/// decision. When the first restarts, the intent it noted before deciding,
/// and the decision the other instance found on the partitions when it
/// took them over (`base`), tell it the epoch was decided: it commits its
/// prepared transactions instead of rolling them back (the other instance
/// started after that epoch's range, so rolling back would lose it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_a_decision_and_its_note_is_recovered_after_another_instance_took_over() {
    let mock = mock_cluster(1, "telemetry", 4).unwrap();
    let brokers = mock.bootstrap_servers();
    let c = setup(&brokers, "exactly-once", "win").await;
    // The other instance: same group, its own prefix, member id and dirs.
    let other = c.dir.path().join("other.toml");
    let text = std::fs::read_to_string(&c.conf)
        .unwrap()
        .replace("label_prefix = \"win\"", "label_prefix = \"winb\"")
        .replace("\"group.instance.id\" = \"crash-win-1\"", "\"group.instance.id\" = \"crash-winb-1\"")
        .replace("/archive\"", "/archive-b\"")
        .replace("/spool\"", "/spool-b\"")
        .replace("/dead\"", "/dead-b\"")
        .replace("/state\"", "/state-b\"");
    std::fs::write(&other, text).unwrap();
    let producer = produce(brokers.clone(), 600.0, 12, 13, Arc::new(AtomicBool::new(false)));
    let mut run = spawn(&c.conf, Some("before_note:3".into()));
    assert!(run.wait_for("test hook: halted at before_note", Duration::from_secs(60)).await, "{}", run.tail());
    run.kill9().await;
    assert!(
        crash::open_txns(&c.emu).iter().any(|t| t.starts_with("win-") && t.ends_with("PREPARED")),
        "the decided epoch's transactions are prepared: {:?}",
        crash::open_txns(&c.emu)
    );
    let mut b = spawn(&other, None);
    let visible = |emu: &Emulator| {
        emu.with_core(|core| {
            core.registry.all().filter(|t| t.label.starts_with("winb-") && t.state.name() == "VISIBLE").count()
        })
    };
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while visible(&c.emu) < 12 && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(visible(&c.emu) >= 12, "the other instance committed epochs:\n{}", b.tail());
    assert!(b.saw("Kafka partitions assigned"), "{}", b.tail());
    let pid = b.child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").arg("-INT").arg(&pid).status().unwrap().success());
    let _ = tokio::time::timeout(Duration::from_secs(60), b.child.wait()).await;
    let ledger = producer.await.unwrap();
    let audits = settle(&c.emu, &c.conf, &ledger, Duration::from_secs(20)).await;
    assert!(audits.iter().all(|a| a.ok()), "{audits:?}");
    assert!(crash::open_txns(&c.emu).is_empty(), "{:?}", crash::open_txns(&c.emu));
    c.emu.shutdown().await;
}
