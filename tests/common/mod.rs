//! Helpers shared by the integration tests: a loader for an in-process
//! emulator, `rockfeed run`'s wiring in-process (`run_app`), the MQTT
//! source into a WAL (`mqtt_into`), a mosquitto launcher, and publishers
//! that return only once the broker has acknowledged every message.
#![allow(dead_code)] // each test binary uses a different subset

pub mod archive;
pub mod crash;
pub mod mariadb;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rockfeed::sink::starrocks::client::{ClientConfig, Credentials, StreamLoadClient};
use rockfeed::sink::starrocks::service::{RetryPolicy, StreamLoader};
use rockfeed::starrocks_emulator::Emulator;
use tokio::sync::watch;

/// A Stream Load loader for `db` on the emulator's FE, as user root.
pub fn loader(emu: &Emulator, password: &str, db: &str, policy: RetryPolicy) -> Arc<StreamLoader> {
    let creds = Credentials { user: "root".into(), password: password.into() };
    let client = StreamLoadClient::new(ClientConfig::new(vec![emu.fe_url().parse().unwrap()], creds)).unwrap();
    Arc::new(StreamLoader::new(client, db, policy))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("run a setup tool (tests/run.sh installs openssl)");
    assert!(out.status.success(), "{:?}: {}", cmd, String::from_utf8_lossy(&out.stderr));
}

/// A throw-away CA (`ca.pem`, `ca.key`) and a server certificate for
/// 127.0.0.1 it signed (`server.pem`, `server.key`), in `dir`.
pub fn tls_material(dir: &Path) {
    let p = |n: &str| dir.join(n);
    sh(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=rockfeed-test-ca",
            "-keyout",
        ])
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.pem")));
    sh(Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")));
    std::fs::write(p("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    sh(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .args(["-CAcreateserial", "-out"])
        .arg(p("server.pem"))
        .arg("-extfile")
        .arg(p("ext.cnf")));
}

/// The documents of a YAML file, as JSON, read by PyYAML (tests/run.sh's
/// virtualenv): the deployment files' checks.
pub fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(archive::python())
        .args(["-c", "import sys, json, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Whether a container image reference names a version: a tag with a
/// digit in it, never `latest`.
pub fn pinned(image: &str) -> bool {
    let tag = image.rsplit_once(':').map(|t| t.1).unwrap_or("");
    tag != "latest" && tag.chars().any(|c| c.is_ascii_digit())
}

/// `text` with every container path of `mounts` replaced by where it is
/// here, the longest first (so `/var/lib/rockfeed/x` is not cut short).
pub fn as_mounted(text: &str, mounts: &mut [(String, std::path::PathBuf)]) -> String {
    mounts.sort_by_key(|(at, _)| std::cmp::Reverse(at.len()));
    let mut text = text.to_string();
    for (at, here) in mounts.iter() {
        text = text.replace(at.as_str(), &here.display().to_string());
    }
    text
}

/// `rockfeed check [args] --config path` with `env`: whether it passed,
/// and what it printed (stdout, then stderr).
pub fn rockfeed_check(path: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rockfeed"))
        .arg("check")
        .args(args)
        .arg("--config")
        .arg(path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A running mosquitto, killed and reaped on drop.
pub struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts mosquitto with `conf` (written to `dir/m.conf`) and waits until
/// `port` accepts connections.
pub fn mosquitto(dir: &Path, port: u16, conf: &str) -> Broker {
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|b| Path::new(b).exists())
        .expect("mosquitto is not installed: run tests/run.sh, which installs it (apt-get install mosquitto)");
    let path = dir.join("m.conf");
    std::fs::write(&path, conf).unwrap();
    let log_path = dir.join("mosquitto.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut broker = Broker(Command::new(bin).arg("-c").arg(&path).stdout(Stdio::null()).stderr(log).spawn().unwrap());
    let said = || std::fs::read_to_string(&log_path).unwrap_or_default();
    for _ in 0..100 {
        if let Ok(Some(st)) = broker.0.try_wait() {
            panic!("mosquitto exited ({st}) before listening on port {port}: {}", said());
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Something answers on the port. Make sure it is this mosquitto and
            // not another process that took the free port first: a mosquitto
            // that could not bind exits at once.
            std::thread::sleep(Duration::from_millis(100));
            if let Ok(Some(st)) = broker.0.try_wait() {
                panic!("mosquitto exited ({st}); port {port} is held by another process: {}", said());
            }
            return broker;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("mosquitto did not start on port {port}: {}", said());
}

/// mosquitto on a free port, anonymous, without persistence.
pub fn anonymous_mosquitto(dir: &Path) -> (Broker, u16) {
    let port = free_port();
    let conf =
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n");
    (mosquitto(dir, port, &conf), port)
}

/// A `rockfeed run` configuration for tests: StarRocks at a placeholder
/// endpoint (`emulator_for` and `run_app` point it at the emulator), state,
/// WAL and dead letters under `dir`, `shards` shards and 200 ms epochs, then
/// `rest` (`[tables]`, a source, `[enrich]`, `[telemetry]`…).
pub fn config_toml(dir: &Path, prefix: &str, shards: u32, rest: &str) -> String {
    format!(
        r#"
[starrocks]
endpoints = ["http://127.0.0.1:1"]
database = "rockfeed"
user = "root"
password = "pw"
label_prefix = "{prefix}"
[pipeline]
shards = {shards}
epoch = "200ms"
state_dir = "{state}"
[wal]
dir = "{wal}"
[dead_letter]
dir = "{dead}"
{rest}
"#,
        state = dir.join("state").display(),
        wal = dir.join("wal").display(),
        dead = dir.join("dead").display(),
    )
}

/// Publishes QoS 1 messages and returns once every PUBACK has arrived (the
/// two MQTT versions differ only in their types).
macro_rules! publish_acked {
    ($opts:expr, $msgs:expr, $AsyncClient:path, $Event:path, $Packet:path, $QoS:path) => {{
        use $AsyncClient as Client;
        use $Event as Ev;
        use $Packet as Pk;
        use $QoS as Q;
        let (c, mut ev) = Client::new($opts, 100);
        let (acks_tx, mut acks) = watch::channel(0usize);
        let h = tokio::spawn(async move {
            while let Ok(e) = ev.poll().await {
                if let Ev::Incoming(Pk::PubAck(_)) = e {
                    acks_tx.send_modify(|n| *n += 1);
                }
            }
        });
        let n = $msgs.len();
        for (t, p) in $msgs {
            c.publish(t, Q::AtLeastOnce, false, p.into_bytes()).await.unwrap();
        }
        let done = tokio::time::timeout(Duration::from_secs(30), acks.wait_for(|a| *a >= n)).await;
        assert!(matches!(done, Ok(Ok(_))), "the broker did not acknowledge all {n} messages");
        h.abort();
    }};
}

/// MQTT 3.1.1 publisher.
pub async fn publish_v4(opts: rumqttc::MqttOptions, msgs: Vec<(String, String)>) {
    publish_acked!(opts, msgs, rumqttc::AsyncClient, rumqttc::Event, rumqttc::Packet, rumqttc::QoS)
}

/// MQTT 5 publisher.
pub async fn publish_v5(opts: rumqttc::v5::MqttOptions, msgs: Vec<(String, String)>) {
    publish_acked!(
        opts,
        msgs,
        rumqttc::v5::AsyncClient,
        rumqttc::v5::Event,
        rumqttc::v5::mqttbytes::v5::Packet,
        rumqttc::v5::mqttbytes::QoS
    )
}

/// Produces `secs` of `profile` traffic from `fleet` into the Kafka topic
/// `telemetry` at `rate` readings/s, keyed by VIN, recording into `ledger`
/// (several calls with one fleet add up); returns once every record is
/// acknowledged.
pub async fn produce_kafka(
    brokers: &str,
    fleet: loadgen::fleet::Fleet,
    profile: loadgen::payload::Profile,
    rate: f64,
    secs: u64,
    ledger: &mut loadgen::ledger::Ledger,
) {
    use loadgen::kafka::{KafkaSender, KafkaTarget};
    use loadgen::run::{RunOptions, Target};
    let mut generator = loadgen::payload::Generator::new(fleet, profile, "telemetry", 50).narrow_as_objects(true);
    let sender = KafkaSender::connect(&KafkaTarget::new(brokers, "telemetry")).unwrap();
    let o = RunOptions { ack_timeout: Duration::from_secs(60), ..RunOptions::timed(rate, Duration::from_secs(secs)) };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let s = loadgen::run::run(&mut generator, profile, ledger, Target::Kafka(sender), &o, &stop).await.unwrap();
    assert!(s.complete(), "{} of {} delivered", s.delivered, s.messages);
}

/// The emulator with the tables `cfg` describes (and a second BE), and
/// `cfg` pointed at it and validated.
pub async fn emulator_for(cfg: &mut rockfeed::config::Config) -> Emulator {
    let ddl = rockfeed::starrocks::ddl::parse_ddl(&rockfeed::config::ddl::ddl(cfg)).unwrap();
    let mut ec = rockfeed::starrocks_emulator::EmulatorConfig::local(ddl, "root", "pw");
    ec.bes.push("127.0.0.1:0".parse().unwrap());
    ec.query = Some("127.0.0.1:0".parse().unwrap());
    let emu = Emulator::start(ec).await.unwrap();
    cfg.starrocks.endpoints = vec![emu.fe_url()];
    cfg.starrocks.query_port = emu.query_addr.map(|a| a.port()).unwrap_or(0);
    cfg.validate().unwrap();
    emu
}

/// The tables of database `rockfeed` on the emulator at `url`, for audits.
pub fn emulator_tables(url: String, latest: bool) -> loadgen::audit::EmulatorTables {
    loadgen::audit::EmulatorTables {
        url,
        user: "root".into(),
        password: "pw".into(),
        db: "rockfeed".into(),
        telemetry: "telemetry_1m".into(),
        latest: latest.then(|| "vehicle_latest".into()),
    }
}

/// Polls the emulator's tables until they audit clean against `ledger`, for
/// up to `within`; whether they did.
pub async fn audit_settles(
    t: &loadgen::audit::EmulatorTables,
    ledger: &loadgen::ledger::Ledger,
    within: Duration,
) -> bool {
    let end = tokio::time::Instant::now() + within;
    loop {
        if loadgen::audit::audit_emulator(t, ledger).await.unwrap().iter().all(|a| a.ok()) {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The MQTT source as `rockfeed run` runs it, into a WAL in `wal_dir`, with
/// that WAL fed into `tx` from its start (no epochs, nothing released): for
/// tests of the source and of the stages behind it. The WAL closes when the
/// source stops. Counts into `stats`.
pub fn mqtt_into(
    mcfg: rockfeed::source::mqtt::MqttConfig,
    wal_dir: &Path,
    tx: tokio::sync::mpsc::Sender<rockfeed::model::RawMessage>,
    stop: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    stats: Arc<rockfeed::telemetry::Stats>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let wcfg = rockfeed::wal::WalConfig { dir: wal_dir.into(), ..Default::default() };
    let wal = rockfeed::wal::Wal::open(wcfg, stats.clone()).unwrap();
    wal.feed(0, tx).unwrap();
    tokio::spawn(async move {
        let r = rockfeed::source::mqtt::run(mcfg, wal.clone(), stop, ready, stats).await;
        let _ = tokio::task::spawn_blocking(move || wal.close()).await;
        r
    })
}

/// Waits until the pipeline `task` has subscribed; a pipeline that ended
/// first fails the test with the error it returned.
pub async fn subscribed<T, E: std::fmt::Display>(
    ready: &mut watch::Receiver<bool>,
    task: tokio::task::JoinHandle<Result<T, E>>,
) -> tokio::task::JoinHandle<Result<T, E>> {
    if rockfeed::source::mqtt::wait_ready(ready, Duration::from_secs(30)).await {
        return task;
    }
    if !task.is_finished() {
        panic!("never subscribed within 30 s (the pipeline is still running)");
    }
    match task.await {
        Ok(Ok(_)) => panic!("never subscribed: the pipeline ended without an error"),
        Ok(Err(e)) => panic!("never subscribed: the pipeline ended: {e}"),
        Err(e) => panic!("never subscribed: the pipeline task failed: {e}"),
    }
}

/// `rockfeed run`'s own wiring (`app::run_with`), in-process.
pub struct App {
    pub stop: watch::Sender<bool>,
    pub stats: Arc<rockfeed::telemetry::Stats>,
    pub ready: watch::Receiver<bool>,
    pub task: tokio::task::JoinHandle<Result<Arc<rockfeed::telemetry::Stats>, rockfeed::app::AppError>>,
}

/// Starts `cfg` (pointed at `emu`, validated) and waits until the source
/// has subscribed.
pub async fn run_app(mut cfg: rockfeed::config::Config, emu: &Emulator) -> App {
    // The pipeline's log, shown with a failing test's output.
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("rockfeed=info").try_init();
    cfg.starrocks.endpoints = vec![emu.fe_url()];
    cfg.validate().unwrap();
    let stats = Arc::new(rockfeed::telemetry::Stats::default());
    let (stop, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready) = watch::channel(false);
    let task = tokio::spawn(rockfeed::app::run_with(cfg, stop_rx, ready_tx, stats.clone()));
    let task = subscribed(&mut ready, task).await;
    App { stop, stats, ready, task }
}

impl App {
    /// Stops it (SIGINT's path) and waits for a clean end.
    pub async fn stop(self) -> Arc<rockfeed::telemetry::Stats> {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(60), self.task).await.unwrap().unwrap().unwrap()
    }

    /// Waits until `f` holds on the stats (or `limit` passes).
    pub async fn until(&self, limit: Duration, f: impl Fn(&rockfeed::telemetry::Stats) -> bool) -> bool {
        let end = tokio::time::Instant::now() + limit;
        while !f(&self.stats) {
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }
}

/// Publishes `readings` readings of `profile` traffic from `fleet` over MQTT
/// (QoS 1, `connections` connections named `{client}-…`) at `rate`
/// readings/s; returns once the broker acknowledged every message, with
/// the ledger of what was sent and the run's summary.
pub async fn publish_readings(
    port: u16,
    fleet: loadgen::fleet::Fleet,
    profile: loadgen::payload::Profile,
    readings: u64,
    rate: f64,
    connections: u32,
    client: &str,
) -> (loadgen::ledger::Ledger, loadgen::run::RunSummary) {
    use loadgen::run::{RunOptions, Target};
    let mut ledger = loadgen::ledger::Ledger::new(&fleet.metrics, 60_000);
    let mut generator = loadgen::payload::Generator::new(fleet, profile, "telemetry", 50);
    let mut target = loadgen::mqtt::MqttTarget::new("127.0.0.1", port);
    target.connections = connections;
    target.client_prefix = client.into();
    let sender = loadgen::mqtt::MqttSender::connect(&target).await.unwrap();
    let o = RunOptions { count: Some(readings), duration: None, ..RunOptions::timed(rate, Duration::from_secs(60)) };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let s = loadgen::run::run(&mut generator, profile, &mut ledger, Target::Mqtt(sender), &o, &stop).await.unwrap();
    assert!(s.complete(), "the broker acknowledged {} of {} messages", s.delivered, s.messages);
    (ledger, s)
}
