//! `rockfeed check --connect` against real parts: the emulator (StarRocks),
//! mosquitto and a local archive. Every check says OK on a sound setup and
//! leaves nothing open; a wrong password, a missing table and a broker that
//! refuses the client each get a FAIL line naming what to do, and a
//! non-zero exit.

use std::path::Path;

mod common;

fn rest(port: u16, dir: &Path) -> String {
    format!(
        "[tables]\nlatest_metrics = [\"speed\"]\nbuckets = 8\nreplication_num = 1\n[source.mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"rockfeed-preflight\"\ntopics = [\"telemetry/#\"]\n[archive]\nenabled = true\nurl = \"{}\"\nspool_dir = \"{}\"\n",
        dir.join("archive").display(),
        dir.join("spool").display()
    )
}

/// `rockfeed check --connect` on `toml` (its endpoint pointed at `fe`):
/// whether it passed, and what it printed.
fn check(dir: &Path, toml: &str, fe: &str, env: &[(&str, &str)]) -> (bool, String) {
    let path = dir.join("check.toml");
    std::fs::write(&path, toml.replace("http://127.0.0.1:1", fe)).unwrap();
    common::rockfeed_check(&path, &["--connect"], env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_passes_on_a_sound_setup_and_leaves_nothing_open() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = common::anonymous_mosquitto(dir.path());
    let toml = common::config_toml(dir.path(), "pre", 2, &rest(port, dir.path()));
    let mut cfg = rockfeed::config::Config::parse(&toml).unwrap();
    let emu = common::emulator_for(&mut cfg).await;
    let fe = emu.fe_url();
    let (ok, said) = tokio::task::spawn_blocking({
        let (dir, toml, fe) = (dir.path().to_path_buf(), toml.clone(), fe.clone());
        move || check(&dir, &toml, &fe, &[])
    })
    .await
    .unwrap();
    assert!(ok, "{said}");
    for line in [
        "OK    StarRocks rockfeed.telemetry_1m: ",
        "OK    StarRocks rockfeed.vehicle_latest: ",
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
    let emu = rockfeed::starrocks_emulator::Emulator::start(rockfeed::starrocks_emulator::EmulatorConfig::local(
        catalog, "root", "pw",
    ))
    .await
    .unwrap();
    let fe = emu.fe_url();
    let d = dir.path().to_path_buf();
    let (ok, said) = tokio::task::spawn_blocking({
        let (d, toml, fe) = (d.clone(), toml.clone(), fe.clone());
        move || check(&d, &toml, &fe, &[])
    })
    .await
    .unwrap();
    assert!(!ok, "{said}");
    assert!(said.contains("OK    StarRocks rockfeed.telemetry_1m: "), "{said}");
    let missing = said
        .lines()
        .find(|l| l.starts_with("FAIL  StarRocks rockfeed.vehicle_latest: "))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(missing.contains("vehicle_latest") && missing.contains("rockfeed ddl"), "{missing}");
    let refused = said.lines().find(|l| l.starts_with("FAIL  MQTT broker: ")).unwrap_or_else(|| panic!("{said}"));
    assert!(refused.contains("refused the connection"), "{refused}");
    assert!(said.contains("check(s) failed"), "{said}");

    let (ok, said) =
        tokio::task::spawn_blocking(move || check(&d, &toml, &fe, &[("ROCKFEED_STARROCKS_PASSWORD", "wrong")]))
            .await
            .unwrap();
    assert!(!ok);
    let refused = said
        .lines()
        .find(|l| l.starts_with("FAIL  StarRocks rockfeed.telemetry_1m: "))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(refused.contains("refused user 'root'") && refused.contains("ROCKFEED_STARROCKS_PASSWORD"), "{refused}");
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
    let fe = emu.fe_url();
    let bad = common::config_toml(dir.path(), "prek", 2, &kafka("\"telemetry\", \"missing\""));
    let d = dir.path().to_path_buf();
    let ((ok, said), (bad_ok, bad_said)) =
        tokio::task::spawn_blocking(move || (check(&d, &good, &fe, &[]), check(&d, &bad, &fe, &[]))).await.unwrap();
    assert!(ok, "{said}");
    assert!(said.contains("OK    Kafka: ") && said.contains("telemetry (4 partitions)"), "{said}");
    assert!(!bad_ok, "{bad_said}");
    let line = bad_said.lines().find(|l| l.starts_with("FAIL  Kafka: ")).unwrap_or_else(|| panic!("{bad_said}"));
    assert!(line.contains("missing"), "{line}");
    emu.shutdown().await;
}
