//! The `loadgen` command line: thin wiring from arguments to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadgen::audit::{EmulatorTables, audit_emulator};
use loadgen::fleet::Fleet;
use loadgen::kafka::{KafkaSender, KafkaTarget};
use loadgen::ledger::Ledger;
use loadgen::mqtt::{MqttSender, MqttTarget};
use loadgen::payload::{Generator, Profile};
use loadgen::report::Report;
use loadgen::run::{ProgressMode, RunOptions, Target};

#[derive(Parser)]
#[command(name = "loadgen", version, about = "Load generator, auditor and benchmark driver for rockfeed")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send fleet telemetry to an MQTT broker or Kafka on a fixed schedule.
    Run(Box<RunArgs>),
    /// Compare a sent file with what landed in StarRocks (or its emulator).
    Audit(AuditArgs),
    /// Count what a broker delivers for a topic filter (the no-op consumer).
    Consume(ConsumeArgs),
    /// The end-to-end benchmark: broker, emulator, rockfeed and a rate ladder.
    Bench(Box<loadgen::bench::BenchArgs>),
    /// Write wide samples as JSON lines to stdout.
    Sample {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Samples per vehicle.
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Event time of the first sample, epoch milliseconds.
        #[arg(long, default_value_t = 1_714_978_800_000)]
        start_ms: i64,
    },
}

#[derive(Args, Clone)]
struct FleetArgs {
    /// Vehicles in the fleet.
    #[arg(long, default_value_t = 10_000)]
    vehicles: u32,
    /// Metrics per vehicle (catalogue size).
    #[arg(long, default_value_t = 1000)]
    metrics: u32,
    /// Seed of the value generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// VIN prefix (VINs are padded to 17 characters).
    #[arg(long, default_value = "RFLG")]
    vin_prefix: String,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// MQTT broker, host:port (the default target: 127.0.0.1:1883).
    #[arg(long, conflicts_with_all = ["kafka", "kafka_mock"])]
    mqtt: Option<String>,
    /// Kafka bootstrap servers: send to Kafka instead of MQTT.
    #[arg(long, conflicts_with = "kafka_mock")]
    kafka: Option<String>,
    /// Start librdkafka's mock cluster with this many brokers in this process
    /// and send to it (tests, benchmarks).
    #[arg(long)]
    kafka_mock: Option<i32>,
    /// Kafka topic.
    #[arg(long, default_value = "telemetry")]
    topic: String,
    /// Partitions of the topic the mock cluster creates.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// A librdkafka producer property, KEY=VALUE (repeatable): acks, compression.type, security.protocol, sasl.* (password from LOADGEN_KAFKA_PASSWORD).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    property: Vec<String>,
    /// Parallel MQTT connections (vehicles are spread over them).
    #[arg(long, default_value_t = 4)]
    connections: u32,
    /// MQTT QoS, 0 or 1.
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// MQTT protocol: 3.1.1 or 5.
    #[arg(long, default_value = "3.1.1")]
    protocol: String,
    /// MQTT username (the password comes from LOADGEN_MQTT_PASSWORD).
    #[arg(long)]
    username: Option<String>,
    /// PEM CA bundle: connect over TLS.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// wide, narrow, batched (10 samples) or batched:K.
    #[arg(long, default_value = "wide")]
    profile: Profile,
    /// Milliseconds between the samples of one batched message.
    #[arg(long, default_value_t = 100)]
    batch_gap_ms: i64,
    /// Topic prefix: wide/batched go to PREFIX/{vin}, narrow to PREFIX/{vin}/{metric}.
    #[arg(long, default_value = "telemetry")]
    topic_prefix: String,
    /// Records (readings) per second; 0 sends as fast as the broker takes them.
    #[arg(long, default_value_t = 150_000.0)]
    rate: f64,
    /// Seconds to send (default 60 unless --count is given).
    #[arg(long)]
    duration: Option<f64>,
    /// Records to send.
    #[arg(long)]
    count: Option<u64>,
    /// Seconds at the start that are sent but not measured.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Aggregation window of the audit in seconds (rockfeed's window.width).
    #[arg(long, default_value_t = 60)]
    window_secs: i64,
    /// Write the sent file (for `loadgen audit`) here.
    #[arg(long)]
    sent: Option<PathBuf>,
    /// Write the send-lag report (table, JSON, .hgrm, SVG) into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// auto (a live line on a terminal, log lines otherwise), lines or off.
    #[arg(long, default_value = "auto")]
    progress: String,
}

#[derive(Args)]
struct AuditArgs {
    /// The sent file of a `loadgen run`.
    #[arg(long)]
    sent: PathBuf,
    /// The emulator's FE URL (its inspection endpoint).
    #[arg(long, required_unless_present = "mysql", conflicts_with = "mysql")]
    emulator: Option<String>,
    /// A real StarRocks: the FE's MySQL port, host:port (9030).
    #[arg(long)]
    mysql: Option<String>,
    #[arg(long, default_value = "root")]
    user: String,
    #[arg(long, env = "LOADGEN_STARROCKS_PASSWORD", default_value = "", hide_env_values = true)]
    password: String,
    #[arg(long, default_value = "rockfeed")]
    db: String,
    #[arg(long, default_value = "telemetry_1m")]
    table: String,
    /// The latest-values table ("none" to skip it).
    #[arg(long, default_value = "vehicle_latest")]
    latest: String,
}

#[derive(Args)]
struct ConsumeArgs {
    /// MQTT broker, host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: String,
    /// Kafka bootstrap servers: consume --topic from Kafka instead.
    #[arg(long)]
    kafka: Option<String>,
    /// MQTT topic filter, or the Kafka topic.
    #[arg(long, default_value = "telemetry/#")]
    topic: String,
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
}

fn host_port(s: &str) -> Result<(String, u16), String> {
    let (h, p) = s.rsplit_once(':').ok_or_else(|| format!("{s}: expected host:port"))?;
    Ok((h.to_string(), p.parse().map_err(|_| format!("{s}: bad port"))?))
}

async fn run(a: RunArgs) -> Result<(), String> {
    let properties = a
        .property
        .iter()
        .map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect::<Option<Vec<_>>>()
        .ok_or("-X takes KEY=VALUE")?;
    // The mock cluster lives as long as the run.
    let mock = match a.kafka_mock {
        Some(n) => Some(loadgen::kafka::mock_cluster(n, &a.topic, a.partitions)?),
        None => None,
    };
    let kafka_brokers = a.kafka.clone().or_else(|| mock.as_ref().map(|m| m.bootstrap_servers()));
    if let Some(m) = &mock {
        println!("Kafka mock cluster: {} (topic {}, {} partitions)", m.bootstrap_servers(), a.topic, a.partitions);
    }
    let target = match &kafka_brokers {
        Some(brokers) => {
            let mut t = KafkaTarget::new(brokers, &a.topic);
            t.properties = properties;
            Target::Kafka(KafkaSender::connect(&t)?)
        }
        None => {
            let (host, port) = host_port(a.mqtt.as_deref().unwrap_or("127.0.0.1:1883"))?;
            let mut t = MqttTarget::new(&host, port);
            t.connections = a.connections;
            t.qos = a.qos;
            t.v5 = match a.protocol.as_str() {
                "5" => true,
                "3.1.1" | "4" => false,
                p => return Err(format!("--protocol {p}: 3.1.1 or 5")),
            };
            t.username = a.username.clone();
            t.tls_ca = a.tls_ca.clone();
            Target::Mqtt(MqttSender::connect(&t).await.map_err(|e| format!("MQTT: {e}"))?)
        }
    };
    let progress = match a.progress.as_str() {
        "auto" => ProgressMode::Auto,
        "lines" => ProgressMode::Lines,
        "off" => ProgressMode::Off,
        p => return Err(format!("--progress {p}: auto, lines or off")),
    };
    let duration = match (a.duration, a.count) {
        (Some(d), _) => Some(Duration::from_secs_f64(d)),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(60)),
    };
    let f = &a.fleet;
    let fleet = Fleet::new(f.vehicles, f.metrics, f.seed, &f.vin_prefix);
    let mut ledger = Ledger::new(&fleet.metrics, a.window_secs * 1000);
    let mut generator =
        Generator::new(fleet, a.profile, &a.topic_prefix, a.batch_gap_ms).narrow_as_objects(kafka_brokers.is_some());
    let o = RunOptions {
        rate: a.rate,
        duration,
        count: a.count,
        warmup: Duration::from_secs_f64(a.warmup),
        progress,
        ack_timeout: Duration::from_secs(60),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s2.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let s = loadgen::run::run(&mut generator, a.profile, &mut ledger, target, &o, &stop).await?;
    println!(
        "sent {} records in {} messages over {:.1} s: {:.0} records/s after warm-up (target {:.0}); {} of {} messages acknowledged",
        s.readings,
        s.messages,
        s.elapsed.as_secs_f64(),
        s.measured_rate,
        a.rate,
        s.delivered,
        s.messages
    );
    let mut report = Report::new(&format!("loadgen {:?} {} rec/s", a.profile, a.rate));
    report.series("send_lag", s.lag_us.clone());
    report
        .fact("records", s.readings)
        .fact("messages", s.messages)
        .fact("acknowledged", s.delivered)
        .fact("elapsed_s", s.elapsed.as_secs_f64())
        .fact("target_records_per_s", a.rate)
        .fact("measured_records_per_s", s.measured_rate)
        .fact("max_behind_ms", s.max_behind.as_secs_f64() * 1e3);
    print!("{}", report.table());
    println!("furthest behind schedule: {:.1} ms", s.max_behind.as_secs_f64() * 1e3);
    if let Some(dir) = &a.report {
        report.write(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        println!("report: {}", dir.display());
    }
    if let Some(p) = &a.sent {
        let file = std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let mut w = std::io::BufWriter::new(file);
        ledger.save(&mut w).and_then(|_| std::io::Write::flush(&mut w)).map_err(|e| format!("{}: {e}", p.display()))?;
        println!("sent file: {} ({} keys)", p.display(), ledger.keys.len());
    }
    if !s.complete() {
        return Err(format!("the broker acknowledged {} of {} messages", s.delivered, s.messages));
    }
    drop(mock);
    Ok(())
}

async fn audit(a: AuditArgs) -> Result<(), String> {
    let file = std::fs::File::open(&a.sent).map_err(|e| format!("{}: {e}", a.sent.display()))?;
    let sent = Ledger::load(std::io::BufReader::new(file))?;
    let url = match (a.emulator, a.mysql) {
        (Some(u), _) => u,
        (None, Some(m)) => format!("mysql://{m}"),
        (None, None) => return Err("--emulator or --mysql says where the tables are".into()),
    };
    let t = EmulatorTables {
        url,
        user: a.user,
        password: a.password,
        db: a.db,
        telemetry: a.table,
        latest: (a.latest != "none").then_some(a.latest),
    };
    let results = audit_emulator(&t, &sent).await?;
    let mut ok = true;
    for r in &results {
        println!("{r}");
        for e in &r.examples {
            println!("  {e}");
        }
        ok &= r.ok();
    }
    if ok { Ok(()) } else { Err("audit found differences".into()) }
}

async fn consume(a: ConsumeArgs) -> Result<(), String> {
    let (host, port) = host_port(&a.mqtt)?;
    let counts = Arc::new(loadgen::consume::Counts::default());
    let (ready, _r) = tokio::sync::watch::channel(false);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let c = counts.clone();
    let task = tokio::spawn(async move {
        match a.kafka {
            Some(brokers) => loadgen::consume::kafka(&brokers, &a.topic, c, ready, stop).await,
            None => loadgen::consume::mqtt(&host, port, &a.topic, a.qos, c, ready, stop).await,
        }
    });
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs_f64(a.seconds)) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let _ = stop_tx.send(true);
    task.await.map_err(|e| e.to_string())??;
    use std::sync::atomic::Ordering::Relaxed;
    println!(
        "received {} messages ({} bytes), {:.0} messages/s between the first and the last",
        counts.messages.load(Relaxed),
        counts.bytes.load(Relaxed),
        counts.rate()
    );
    Ok(())
}

fn sample(f: FleetArgs, count: u64, start_ms: i64) -> Result<(), String> {
    use std::io::Write;
    let fleet = Fleet::new(f.vehicles, f.metrics, f.seed, &f.vin_prefix);
    let mut ledger = Ledger::new(&fleet.metrics, 60_000);
    let n = fleet.vehicles() as u64;
    let mut generator = Generator::new(fleet, Profile::Wide, "telemetry", 0);
    let out = std::io::stdout();
    let mut w = std::io::BufWriter::new(out.lock());
    for i in 0..count * n {
        let m = generator.next(start_ms + (i / n) as i64 * 1000, &mut ledger);
        w.write_all(&m.payload).and_then(|_| w.write_all(b"\n")).map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async {
        match cli.command {
            Cmd::Run(a) => run(*a).await,
            Cmd::Audit(a) => audit(a).await,
            Cmd::Consume(a) => consume(a).await,
            Cmd::Bench(a) => loadgen::bench::bench(*a).await,
            Cmd::Sample { fleet, count, start_ms } => sample(fleet, count, start_ms),
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
