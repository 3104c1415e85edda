//! `rockfeed check --connect` against real parts: the emulator (StarRocks,
//! HTTP and MySQL ports), mosquitto and a local archive. Every check says
//! OK on a sound setup and leaves nothing open; a wrong password, a missing
//! table, a wrong bucket count, a missing column, a low running-transaction
//! cap and a broker that refuses the client each get a FAIL line naming
//! what to do, and a non-zero exit; what the user may not read is a SKIP.

use std::path::Path;

mod common;

fn rest(port: u16, dir: &Path) -> String {
    format!(
        "[tables]\nlatest_metrics = [\"speed\"]\nbuckets = 8\nreplication_num = 1\n[source.mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"rockfeed-preflight\"\ntopics = [\"telemetry/#\"]\n[archive]\nenabled = true\nurl = \"{}\"\nspool_dir = \"{}\"\n",
        dir.join("archive").display(),
        dir.join("spool").display()
    )
}

/// The emulator's FE URL and MySQL port, for [`check`].
fn at(emu: &rockfeed::starrocks_emulator::Emulator) -> (String, u16) {
    (emu.fe_url(), emu.query_addr.map(|a| a.port()).unwrap_or(0))
}

/// `rockfeed check --connect` on `toml` (its endpoint pointed at `fe`, its
/// `query_port` at the emulator's MySQL port): whether it passed, and what
/// it printed.
fn check(dir: &Path, toml: &str, (fe, query): &(String, u16), env: &[(&str, &str)]) -> (bool, String) {
    let path = dir.join("check.toml");
    let toml =
        toml.replace("endpoints = [\"http://127.0.0.1:1\"]", &format!("endpoints = [\"{fe}\"]\nquery_port = {query}"));
    std::fs::write(&path, toml).unwrap();
    common::rockfeed_check(&path, &["--connect"], env)
}

/// [`check`] without an environment, off the runtime's threads.
async fn check_async(dir: &Path, toml: &str, to: &(String, u16)) -> (bool, String) {
    let (dir, toml, to) = (dir.to_path_buf(), toml.to_string(), to.clone());
    tokio::task::spawn_blocking(move || check(&dir, &toml, &to, &[])).await.unwrap()
}

/// An emulator of `cfg`'s tables, changed by `tweak` (MySQL port served).
async fn emulator(
    cfg: &rockfeed::config::Config,
    tweak: impl FnOnce(&mut rockfeed::starrocks_emulator::EmulatorConfig),
) -> rockfeed::starrocks_emulator::Emulator {
    let ddl = rockfeed::config::ddl::ddl(cfg);
    let mut ec = rockfeed::starrocks_emulator::EmulatorConfig::local(
        rockfeed::starrocks::ddl::parse_ddl(&ddl).unwrap(),
        "root",
        "pw",
    );
    ec.query = Some("127.0.0.1:0".parse().unwrap());
    tweak(&mut ec);
    rockfeed::starrocks_emulator::Emulator::start(ec).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_passes_on_a_sound_setup_and_leaves_nothing_open() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = common::anonymous_mosquitto(dir.path());
    let toml = common::config_toml(dir.path(), "pre", 2, &rest(port, dir.path()));
    let mut cfg = rockfeed::config::Config::parse(&toml).unwrap();
    let emu = common::emulator_for(&mut cfg).await;
    let fe = emu.fe_url();
    let (ok, said) = check_async(dir.path(), &toml, &at(&emu)).await;
    assert!(ok, "{said}");
    for line in [
        "OK    StarRocks rockfeed.telemetry_1m: ",
        "OK    StarRocks rockfeed.vehicle_latest: ",
        "OK    StarRocks rockfeed.telemetry_1m schema: AGGREGATE KEY table with every column rockfeed writes, 8 buckets on (vehicle_id), colocate_with 'vehicle'",
        "OK    StarRocks rockfeed.vehicle_latest schema: PRIMARY KEY table with every column rockfeed writes, 8 buckets on (vehicle_id), colocate_with 'vehicle'",
        "OK    StarRocks max_running_txn_num_per_db: 1000, at least the 4 one instance needs",
        "OK    MQTT broker: ",
        "OK    archive store: ",
    ] {
        assert!(said.contains(line), "no {line:?} in:\n{said}");
    }
    // The probe transactions were rolled back, under labels of their own.
    let labels: Vec<&str> =
        said.split('(').skip(1).filter_map(|s| s.split(')').next()).filter(|l| l.starts_with("pre-check-")).collect();
    assert_eq!(labels.len(), 2, "{said}");
    for l in labels {
        let (st, body) =
            loadgen::http::get(&format!("{fe}/api/rockfeed/get_load_state?label={l}"), Some(("root", "pw")))
                .await
                .unwrap();
        assert_eq!(st, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["state"], "ABORTED", "{l}: {v}");
    }
    // Nothing left in the archive but the (empty) probe directory.
    let probe = dir.path().join("archive/_rockfeed-check");
    assert!(!probe.exists() || std::fs::read_dir(&probe).unwrap().next().is_none(), "the probe object was deleted");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_a_missing_table_and_a_refusing_broker_each_fail_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    // mosquitto that refuses anonymous clients.
    let mport = common::free_port();
    let conf = format!("listener {mport} 127.0.0.1\nallow_anonymous false\n");
    let _broker = common::mosquitto(dir.path(), mport, &conf);
    let toml = common::config_toml(dir.path(), "pre", 2, &rest(mport, dir.path()));
    let cfg = rockfeed::config::Config::parse(&toml).unwrap();
    // StarRocks without the latest table.
    let ddl = rockfeed::config::ddl::ddl(&cfg);
    let mut catalog = rockfeed::starrocks::ddl::parse_ddl(&ddl).unwrap();
    catalog.tables.retain(|t| t.name != "vehicle_latest");
    catalog.views.clear();
    let mut ec = rockfeed::starrocks_emulator::EmulatorConfig::local(catalog, "root", "pw");
    ec.query = Some("127.0.0.1:0".parse().unwrap());
    let emu = rockfeed::starrocks_emulator::Emulator::start(ec).await.unwrap();
    let to = at(&emu);
    let d = dir.path().to_path_buf();
    let (ok, said) = check_async(&d, &toml, &to).await;
    assert!(!ok, "{said}");
    assert!(said.contains("OK    StarRocks rockfeed.telemetry_1m: "), "{said}");
    let missing = said
        .lines()
        .find(|l| l.starts_with("FAIL  StarRocks rockfeed.vehicle_latest: "))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(missing.contains("vehicle_latest") && missing.contains("rockfeed ddl"), "{missing}");
    let missing = said
        .lines()
        .find(|l| l.starts_with("FAIL  StarRocks rockfeed.vehicle_latest schema: "))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        missing.contains("Unknown table 'rockfeed.vehicle_latest'") && missing.contains("rockfeed ddl"),
        "{missing}"
    );
    let refused = said.lines().find(|l| l.starts_with("FAIL  MQTT broker: ")).unwrap_or_else(|| panic!("{said}"));
    assert!(refused.contains("refused the connection"), "{refused}");
    assert!(said.contains("check(s) failed"), "{said}");

    let (ok, said) =
        tokio::task::spawn_blocking(move || check(&d, &toml, &to, &[("ROCKFEED_STARROCKS_PASSWORD", "wrong")]))
            .await
            .unwrap();
    assert!(!ok);
    for what in ["StarRocks rockfeed.telemetry_1m", "StarRocks MySQL port"] {
        let refused =
            said.lines().find(|l| l.starts_with(&format!("FAIL  {what}: "))).unwrap_or_else(|| panic!("{said}"));
        assert!(
            refused.contains("refused user 'root'") && refused.contains("ROCKFEED_STARROCKS_PASSWORD"),
            "{refused}"
        );
    }
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_topics_are_looked_up_without_joining_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let mock = loadgen::kafka::mock_cluster(1, "telemetry", 4).unwrap();
    let kafka = |topics: &str| {
        format!(
            "[tables]\nbuckets = 8\nreplication_num = 1\n[source.kafka]\nbrokers = \"{}\"\ngroup_id = \"rockfeed-preflight\"\ntopics = [{topics}]\n",
            mock.bootstrap_servers()
        )
    };
    let good = common::config_toml(dir.path(), "prek", 2, &kafka("\"telemetry\""));
    let mut cfg = rockfeed::config::Config::parse(&good).unwrap();
    let emu = common::emulator_for(&mut cfg).await;
    let to = at(&emu);
    let bad = common::config_toml(dir.path(), "prek", 2, &kafka("\"telemetry\", \"missing\""));
    let d = dir.path().to_path_buf();
    // No broker at all: the reason is in the FAIL line, and librdkafka's
    // repeated complaints are not on stderr.
    let down = common::config_toml(dir.path(), "prek", 2, &kafka("\"telemetry\""))
        .replace(&mock.bootstrap_servers(), &format!("127.0.0.1:{}", common::free_port()));
    let ((ok, said), (bad_ok, bad_said), (down_ok, down_said)) = tokio::task::spawn_blocking(move || {
        (check(&d, &good, &to, &[]), check(&d, &bad, &to, &[]), check(&d, &down, &to, &[]))
    })
    .await
    .unwrap();
    assert!(!down_ok, "{down_said}");
    let line = down_said.lines().find(|l| l.starts_with("FAIL  Kafka: ")).unwrap_or_else(|| panic!("{down_said}"));
    assert!(line.contains("Connection refused"), "{line}");
    assert!(!down_said.contains("librdkafka"), "librdkafka logged on stderr:\n{down_said}");
    assert!(ok, "{said}");
    assert!(said.contains("OK    Kafka: ") && said.contains("telemetry (4 partitions)"), "{said}");
    assert!(!bad_ok, "{bad_said}");
    let line = bad_said.lines().find(|l| l.starts_with("FAIL  Kafka: ")).unwrap_or_else(|| panic!("{bad_said}"));
    assert!(line.contains("missing"), "{line}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_bucket_count_a_missing_column_and_a_low_transaction_cap_each_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = common::anonymous_mosquitto(dir.path());
    let toml = common::config_toml(dir.path(), "pres", 2, &rest(port, dir.path()));
    let cfg = rockfeed::config::Config::parse(&toml).unwrap();
    // The telemetry table created with 4 buckets, the latest table without
    // its `value` column, and a cap below 2 shards × 2 tables.
    let emu = emulator(&cfg, |ec| {
        for t in &mut ec.catalog.tables {
            match t.name.as_str() {
                "telemetry_1m" => t.buckets = 4,
                _ => t.columns.retain(|c| c.name != "value"),
            }
        }
        ec.registry.max_running_txn_num_per_db = 3;
    })
    .await;
    let (ok, said) = check_async(dir.path(), &toml, &at(&emu)).await;
    assert!(!ok, "{said}");
    let line = |what: &str| {
        said.lines()
            .find(|l| l.starts_with(&format!("FAIL  {what}: ")))
            .unwrap_or_else(|| panic!("no FAIL {what} in:\n{said}"))
    };
    let buckets = line("StarRocks rockfeed.telemetry_1m schema");
    assert!(
        buckets.contains("it has 4 buckets, and tables.buckets is 8") && buckets.contains("tables.buckets = 4"),
        "{buckets}"
    );
    let column = line("StarRocks rockfeed.vehicle_latest schema");
    assert!(column.contains("column `value` (double) is missing") && column.contains("rockfeed ddl"), "{column}");
    let cap = line("StarRocks max_running_txn_num_per_db");
    assert!(cap.contains("3, below the 4 one instance needs") && cap.contains("ADMIN SET FRONTEND CONFIG"), "{cap}");
    // The transaction API itself still answers on both tables.
    assert!(said.contains("OK    StarRocks rockfeed.telemetry_1m: the transaction API"), "{said}");
    assert!(said.contains("check(s) failed"), "{said}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_read_is_skipped_and_an_unreachable_mysql_port_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = common::anonymous_mosquitto(dir.path());
    let toml = common::config_toml(dir.path(), "prep", 2, &rest(port, dir.path()));
    let cfg = rockfeed::config::Config::parse(&toml).unwrap();
    // A loading user without OPERATE on SYSTEM: the cap is not readable,
    // which is no failure; the table's definition still is.
    let emu = emulator(&cfg, |ec| ec.operate = false).await;
    let to = at(&emu);
    let d = dir.path().to_path_buf();
    let (ok, said) = check_async(&d, &toml, &to).await;
    assert!(ok, "{said}");
    let skip = said
        .lines()
        .find(|l| l.starts_with("SKIP  StarRocks max_running_txn_num_per_db: "))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(skip.contains("OPERATE") && skip.contains("at least 4"), "{skip}");
    assert!(said.contains("OK    StarRocks rockfeed.telemetry_1m schema: "), "{said}");

    // Nothing listening on the configured MySQL port.
    let closed = (to.0.clone(), common::free_port());
    let (ok, said) = check_async(&d, &toml, &closed).await;
    assert!(!ok, "{said}");
    let fail = said.lines().find(|l| l.starts_with("FAIL  StarRocks MySQL port: ")).unwrap_or_else(|| panic!("{said}"));
    assert!(fail.contains("cannot reach the FE's MySQL port") && fail.contains("starrocks.query_port"), "{fail}");

    // query_port = 0: the schema checks are skipped, by the operator's choice.
    let off = (to.0.clone(), 0);
    let (ok, said) = check_async(&d, &toml, &off).await;
    assert!(ok, "{said}");
    assert!(
        said.contains("SKIP  StarRocks rockfeed.telemetry_1m schema: not checked: starrocks.query_port = 0"),
        "{said}"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_begins_no_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = common::anonymous_mosquitto(dir.path());
    let toml = common::config_toml(dir.path(), "prea", 2, &rest(port, dir.path()))
        .replace("label_prefix = \"prea\"", "label_prefix = \"prea\"\ndelivery = \"at-least-once\"");
    let cfg = rockfeed::config::Config::parse(&toml).unwrap();
    let emu = emulator(&cfg, |_| {}).await;
    let (ok, said, bad_ok, bad_said) = tokio::task::spawn_blocking({
        let (d, toml, to) = (dir.path().to_path_buf(), toml.clone(), at(&emu));
        move || {
            let (ok, said) = check(&d, &toml, &to, &[]);
            let (bad_ok, bad_said) = check(&d, &toml, &to, &[("ROCKFEED_STARROCKS_PASSWORD", "wrong")]);
            (ok, said, bad_ok, bad_said)
        }
    })
    .await
    .unwrap();
    assert!(ok, "{said}");
    assert!(said.contains("OK    StarRocks rockfeed: the FE answers get_load_state for database rockfeed"), "{said}");
    assert!(said.contains("OK    StarRocks rockfeed.vehicle_latest schema: "), "{said}");
    assert!(!said.contains("prea-check-"), "no probe transaction: {said}");
    let labels = emu.with_core(|c| c.registry.all().count());
    assert_eq!(labels, 0, "a transaction was begun");
    assert!(!bad_ok, "{bad_said}");
    let line =
        bad_said.lines().find(|l| l.starts_with("FAIL  StarRocks rockfeed: ")).unwrap_or_else(|| panic!("{bad_said}"));
    assert!(line.contains("ROCKFEED_STARROCKS_PASSWORD"), "{line}");
    emu.shutdown().await;
}
