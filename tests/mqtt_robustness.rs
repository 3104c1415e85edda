//! The MQTT source against a real mosquitto with TLS and a password file: a
//! 300 KiB payload arrives whole, and a broker restart is survived by
//! reconnecting and resubscribing (messages published after the restart are
//! loaded too).

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

use rockfeed::starrocks::ddl::parse_ddl;
use rockfeed::starrocks_emulator::{Emulator, EmulatorConfig, now_ms};

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("run a setup tool (tests/run.sh installs openssl and mosquitto)");
    assert!(out.status.success(), "{:?}: {}", cmd, String::from_utf8_lossy(&out.stderr));
}

/// CA, server certificate for 127.0.0.1, and a password file.
fn material(dir: &Path) {
    let p = |n: &str| dir.join(n);
    common::tls_material(dir);
    let passwd = ["/usr/bin/mosquitto_passwd", "/usr/sbin/mosquitto_passwd"]
        .into_iter()
        .find(|b| Path::new(b).exists())
        .expect("mosquitto_passwd (package mosquitto)");
    sh(Command::new(passwd).args(["-b", "-c"]).arg(p("passwd")).args(["rockfeed", "s3cret-mqtt"]));
    // mosquitto started as root drops to its own user: it must be able to
    // read this throw-away material.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["ca.pem", "server.pem", "server.key", "passwd"] {
        std::fs::set_permissions(p(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

fn start_broker(dir: &Path, port: u16) -> common::Broker {
    let conf = format!(
        "listener {port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\npassword_file {0}/passwd\nallow_anonymous false\npersistence false\nmessage_size_limit 0\n",
        dir.display()
    );
    common::mosquitto(dir, port, &conf)
}

async fn publish(dir: &Path, port: u16, id: &str, payloads: Vec<String>) {
    use rumqttc::{MqttOptions, TlsConfiguration, Transport};
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_credentials("rockfeed", "s3cret-mqtt");
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: std::fs::read(dir.join("ca.pem")).unwrap(),
        alpn: None,
        client_auth: None,
    }));
    let msgs = payloads.into_iter().map(|p| ("telemetry/wide".to_string(), p)).collect();
    common::publish_v4(o, msgs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_auth_large_payloads_and_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    material(dir.path());
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let broker = start_broker(dir.path(), port);

    let ddl = "CREATE DATABASE rockfeed; USE rockfeed; CREATE TABLE telemetry_1m (vehicle_id VARCHAR(64) NOT NULL, window_start DATETIME NOT NULL, metric VARCHAR(128) NOT NULL, cnt BIGINT SUM DEFAULT \"0\", total DOUBLE SUM DEFAULT \"0\", `min` DOUBLE MIN, `max` DOUBLE MAX) AGGREGATE KEY(vehicle_id, window_start, metric) PARTITION BY date_trunc('day', window_start) DISTRIBUTED BY HASH(vehicle_id) BUCKETS 4;";
    let emu = Emulator::start(EmulatorConfig::local(parse_ddl(ddl).unwrap(), "root", "pw")).await.unwrap();
    let text = format!(
        r#"
[starrocks]
endpoints = ["http://127.0.0.1:1"]
database = "rockfeed"
user = "root"
password = "pw"
label_prefix = "robust"
[tables]
dims = []
buckets = 4
replication_num = 1
[decode]
max_metrics = 100000
# One sample of 12,000 metrics, all new: past the defaults (10,000 per
# sample, 5,000 new names per vehicle), so this fleet raises them.
max_metrics_per_sample = 20000
new_metrics_per_vehicle = 20000
[pipeline]
shards = 1
epoch = "200ms"
channel_batches = 16
state_dir = "{dir}/state"
[wal]
dir = "{dir}/wal"
[source.mqtt]
host = "127.0.0.1"
port = {port}
client_id = "rockfeed-robust"
topics = ["telemetry/#"]
protocol = "3.1.1"
username = "rockfeed"
password = "s3cret-mqtt"
tls_ca_file = "{dir}/ca.pem"
keep_alive_secs = 5
[dead_letter]
dir = "{dir}/dead"
"#,
        dir = dir.path().display()
    );
    let app = common::run_app(rockfeed::config::Config::parse(&text).unwrap(), &emu).await;
    let (stats, mut ready) = (app.stats.clone(), app.ready.clone());

    // A ~300 KiB wide sample: 12,000 metrics.
    let now = now_ms() as i64;
    let metrics: Vec<String> = (0..12_000).map(|m| format!("\"vehicle.subsystem.signal_{m:05}\":{m}.25")).collect();
    let big = format!(r#"{{"vin":"BIG1","ts":{now},"metrics":{{{}}}}}"#, metrics.join(","));
    assert!(big.len() > 300 * 1024, "{} bytes", big.len());
    publish(dir.path(), port, "pub-1", vec![big]).await;
    for _ in 0..600 {
        if stats.readings.load(Ordering::Relaxed) >= 12_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats.readings.load(Ordering::Relaxed), 12_000, "the large payload arrived whole");

    // Restart the broker (it forgets every session); rockfeed must come back.
    ready.mark_unchanged();
    drop(broker);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _broker = start_broker(dir.path(), port);
    // The source reconnects (ready is re-sent at the new ConnAck and SubAck)
    // and resubscribes: wait for a change after the restart, then for true.
    let resubscribed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if ready.changed().await.is_err() {
                return false;
            }
            if *ready.borrow() {
                return true;
            }
        }
    })
    .await;
    assert_eq!(resubscribed, Ok(true), "never resubscribed");
    let after: Vec<String> =
        (0..5).map(|i| format!(r#"{{"vin":"AFTER","ts":{},"metrics":{{"x":{i}}}}}"#, now + i)).collect();
    publish(dir.path(), port, "pub-2", after).await;
    for _ in 0..600 {
        if stats.samples.load(Ordering::Relaxed) >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
    assert_eq!(stats.samples.load(Ordering::Relaxed), 6, "resubscribed after the restart");
    let rows = emu.with_core(|c| c.table("rockfeed", "telemetry_1m").unwrap().row_count());
    assert_eq!(rows, 12_000 + 1);
    emu.shutdown().await;
}
