//! Deployment: the systemd unit in `deploy/systemd` passes `systemd-analyze
//! verify` without a warning; `rockfeed run` stops gracefully on SIGTERM
//! (systemd's and Kubernetes' stop signal) and, with `--log-format json`,
//! logs one JSON object per line; `--version` names the commit; a
//! configuration that cannot work exits 78 (`EX_CONFIG`), which the unit
//! does not restart.

use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_rockfeed");

#[test]
fn the_systemd_unit_verifies_without_warnings() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/systemd/rockfeed.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/rockfeed run"), "{unit}");
    assert!(unit.contains("\nRestartPreventExitStatus=78\n"), "a configuration mistake is not restarted: {unit}");
    // verify checks that the binary exists: point it at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rockfeed.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/rockfeed", BIN)).unwrap();
    let Ok(out) = Command::new("systemd-analyze").arg("verify").arg(&path).output() else {
        panic!("systemd-analyze is missing: run tests/run.sh (it installs the systemd package)");
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("rockfeed.service")).collect();
    assert!(ours.is_empty(), "warnings: {ours:?}");
}

/// A configuration `run` refuses, and one that does not parse, exit 78 with
/// the key named; a pipeline failure would exit 1 (systemd restarts that).
#[test]
fn a_configuration_that_cannot_work_exits_ex_config() {
    let dir = tempfile::tempdir().unwrap();
    let rest = format!(
        "[enrich]\nfile = \"{}/no-such-vehicles.csv\"\n[source.mqtt]\nhost = \"127.0.0.1\"\nport = 1\nclient_id = \"c\"\ntopics = [\"t/#\"]\n",
        dir.path().display()
    );
    let path = dir.path().join("rockfeed.toml");
    std::fs::write(&path, common::config_toml(dir.path(), "exitcode", 2, &rest)).unwrap();
    let out = Command::new(BIN).arg("run").arg("--config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("enrich.file") && err.contains("no-such-vehicles.csv"), "{err}");

    std::fs::write(&path, "[starrocks]\nendpoint = \"typo\"\n").unwrap();
    let out = Command::new(BIN).arg("run").arg("--config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("endpoint"), "{err}");
}

#[test]
fn version_names_the_commit() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    let v = String::from_utf8(out.stdout).unwrap();
    assert!(v.starts_with(&format!("rockfeed {} (", env!("CARGO_PKG_VERSION"))) && v.trim_end().ends_with(')'), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_run_gracefully_with_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = common::anonymous_mosquitto(dir.path());
    let listen = common::free_port();
    let rest = format!(
        "[tables]\nbuckets = 8\nreplication_num = 1\n[source.mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"rockfeed-sigterm\"\ntopics = [\"telemetry/#\"]\n[telemetry]\nlisten = \"127.0.0.1:{listen}\"\n"
    );
    let toml = common::config_toml(dir.path(), "deployterm", 2, &rest);
    let mut cfg = rockfeed::config::Config::parse(&toml).unwrap();
    let emu = common::emulator_for(&mut cfg).await;
    let path = dir.path().join("rockfeed.toml");
    std::fs::write(&path, toml.replace("http://127.0.0.1:1", &emu.fe_url())).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--log-format", "json", "--config"])
        .arg(&path)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let up = ready(listen).await;
    let pid = child.id().to_string();
    let term = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(term.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(up, "never ready: {err}");
    assert!(out.status.success(), "SIGTERM is a clean stop, not a kill: {:?}\n{err}", out.status);
    let mut stopping = false;
    for line in err.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{line}");
        stopping |= v["fields"]["message"].as_str().unwrap().starts_with("Shutting down");
    }
    assert!(stopping, "{err}");
    assert!(!err.contains('\u{1b}'), "no ANSI codes off a terminal");
    emu.shutdown().await;
}

/// `pipeline.stop_grace`: a stop while StarRocks is away waits that long
/// for the last epoch, then exits with it undecided (the next start rolls
/// it back), saying so; it does not hang until a service manager kills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_starrocks_is_away_ends_after_the_stop_grace() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = common::anonymous_mosquitto(dir.path());
    let listen = common::free_port();
    let rest = format!(
        "[tables]\nbuckets = 8\nreplication_num = 1\n[source.mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"rockfeed-grace\"\ntopics = [\"telemetry/#\"]\n[telemetry]\nlisten = \"127.0.0.1:{listen}\"\n"
    );
    let toml = common::config_toml(dir.path(), "deploygrace", 2, &rest)
        .replace("epoch = \"200ms\"", "epoch = \"200ms\"\nstop_grace = \"2s\"");
    let mut cfg = rockfeed::config::Config::parse(&toml).unwrap();
    assert_eq!(cfg.pipeline.stop_grace.0, Duration::from_secs(2));
    let emu = common::emulator_for(&mut cfg).await;
    let path = dir.path().join("rockfeed.toml");
    std::fs::write(&path, toml.replace("http://127.0.0.1:1", &emu.fe_url())).unwrap();
    let child = Command::new(BIN).args(["run", "--config"]).arg(&path).stderr(Stdio::piped()).spawn().unwrap();
    let up = ready(listen).await;
    // StarRocks goes away; a sample arrives that can no longer be loaded.
    emu.shutdown().await;
    let now = rockfeed::util::now_ms();
    let msg = format!(r#"{{"vin":"GRACE1","ts":{now},"metrics":{{"soc":50}}}}"#);
    common::publish_v4(
        rumqttc::MqttOptions::new("grace-pub", "127.0.0.1", port),
        vec![("telemetry/GRACE1".into(), msg)],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = std::time::Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let took = stopped.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(up, "never ready: {err}");
    assert!(err.contains("pipeline.stop_grace") && err.contains("rolled back at the next start"), "{err}");
    // The configured 2 s, then at most a second for the shards still
    // retrying (not the 10 s a life's drain otherwise gets), and the exit.
    assert!(took < Duration::from_secs(10), "the stop took {took:?}:\n{err}");
}

/// A stop while recovery still waits for StarRocks (away from the start):
/// no epoch was open, so the exit is clean and says so at INFO, without
/// the ERROR of a stop that leaves an epoch undecided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_recovery_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = common::anonymous_mosquitto(dir.path());
    let rest = format!(
        "[tables]\nbuckets = 8\nreplication_num = 1\n[source.mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"rockfeed-early\"\ntopics = [\"telemetry/#\"]\n"
    );
    // StarRocks at http://127.0.0.1:1: nothing answers there.
    let toml = common::config_toml(dir.path(), "deployearly", 2, &rest);
    assert!(toml.contains("http://127.0.0.1:1\""), "{toml}");
    let path = dir.path().join("rockfeed.toml");
    std::fs::write(&path, &toml).unwrap();
    let child = Command::new(BIN).args(["run", "--config"]).arg(&path).stderr(Stdio::piped()).spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{err}", out.status);
    assert!(err.contains("Stopped during recovery (StarRocks did not answer)"), "{err}");
    assert!(!err.contains("Stopped without committing"), "no epoch was open:\n{err}");
}

/// Whether `/ready` on `listen` answered 200 within 30 s.
async fn ready(listen: u16) -> bool {
    let url = format!("http://127.0.0.1:{listen}/ready");
    for _ in 0..300 {
        if matches!(loadgen::http::get(&url, None).await, Ok((200, _))) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
