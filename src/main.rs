//! The `rockfeed` command line: thin wiring from arguments to the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rockfeed::starrocks::ddl::parse_ddl;
use rockfeed::starrocks_emulator::engine::VersionPolicy;
use rockfeed::starrocks_emulator::registry::RegistryConfig;
use rockfeed::starrocks_emulator::{Emulator, EmulatorConfig};

#[derive(Parser)]
#[command(
    name = "rockfeed",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("ROCKFEED_GIT_COMMIT"), ")"),
    about = "Edge telemetry appliance for StarRocks"
)]
struct Cli {
    /// Log lines on stderr: `text` (colours only on a terminal) or `json`
    /// (one object per line, for journald or Loki).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Everything on one machine: embedded broker, generator, pipeline,
    /// StarRocks emulator, then a summary and an audit of the table.
    #[cfg(feature = "demo")]
    Demo {
        /// How long the generator publishes.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Vehicles in the fleet.
        #[arg(long, default_value_t = 300)]
        vehicles: u32,
        /// Metrics per wide sample.
        #[arg(long, default_value_t = 50)]
        metrics: u32,
        /// Samples per vehicle per second.
        #[arg(long, default_value_t = 1)]
        rate_hz: u32,
        /// Where dead letters, the vehicle file and the report go.
        #[arg(long, default_value = "rockfeed-demo")]
        data_dir: PathBuf,
        /// Latency report directory (default DATA_DIR/report).
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Run a protocol-exact StarRocks FE/BE emulator (Stream Load, transactions).
    StarrocksEmulator(Box<EmulatorArgs>),
    /// Print the CREATE statements for the configured tables and views
    /// (with --hive: the Hive external table over the raw archive).
    Ddl {
        /// The rockfeed configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The Hive external table and partition repair for the archive.
        #[arg(long)]
        hive: bool,
    },
    /// The raw Parquet archive.
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// The dead-letter directory.
    #[command(subcommand)]
    Deadletter(DeadletterCommand),
    /// Run the pipeline: MQTT → decode → enrich → pre-aggregate → Stream Load.
    Run {
        /// The rockfeed configuration file.
        #[arg(long)]
        config: PathBuf,
        /// At shutdown, write the latency report (table, JSON, .hgrm, SVG) here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Validate a configuration file and open what `run` opens before it
    /// connects: directories created and probed for writing, the vehicle
    /// file read, TLS trust loaded, the WAL's lock tried. Connects to
    /// nothing, unless --connect.
    Check {
        /// The rockfeed configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Also ask the systems it points at: StarRocks (a probe transaction
        /// per table, begun and rolled back), the MQTT broker (connect and
        /// subscribe), the archive store (a probe object). One line per
        /// check; non-zero exit on any FAIL.
        #[arg(long)]
        connect: bool,
    },
}

#[derive(Subcommand)]
enum ArchiveCommand {
    /// List the published files with their row counts.
    Ls {
        /// The rockfeed configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum DeadletterCommand {
    /// Send the Stream Load bodies StarRocks refused for their rows again,
    /// under their own labels (a second replay loads nothing twice).
    Replay {
        /// The rockfeed configuration file (StarRocks and dead_letter.dir).
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct EmulatorArgs {
    /// Leader FE HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:8030")]
    fe: SocketAddr,
    /// BE HTTP listen address; repeat for several BEs.
    #[arg(long, default_value = "127.0.0.1:8040")]
    be: Vec<SocketAddr>,
    /// Optional follower FE listen address (transaction calls hop to the leader).
    #[arg(long)]
    follower_fe: Option<SocketAddr>,
    /// The user clients authenticate as.
    #[arg(long, default_value = "root")]
    user: String,
    /// The user's password (prefer the environment variable).
    #[arg(long, env = "ROCKFEED_EMULATOR_PASSWORD", default_value = "", hide_env_values = true)]
    password: String,
    /// File of CREATE DATABASE / USE / CREATE TABLE statements.
    #[arg(long)]
    ddl: PathBuf,
    /// Directory to persist labels and visible data across restarts.
    #[arg(long)]
    state: Option<PathBuf>,
    /// host:port written into redirects instead of each BE's bound address.
    #[arg(long)]
    be_advertise: Vec<String>,
    /// Seconds a finished label is remembered (FE label_keep_max_second).
    #[arg(long, default_value_t = 259_200)]
    label_keep_max_second: u64,
    /// Running transactions allowed per database (FE max_running_txn_num_per_db).
    #[arg(long, default_value_t = 1000)]
    max_running_txn_num_per_db: usize,
    /// Default PREPARED timeout (FE prepared_transaction_default_timeout_second).
    #[arg(long, default_value_t = 86_400)]
    prepared_timeout_second: u64,
    /// Versions a tablet may hold before loads fail with `too many versions`.
    #[arg(long, default_value_t = 1000)]
    max_versions: u64,
    /// Versions compaction removes per tablet per second.
    #[arg(long, default_value_t = 10.0)]
    compaction_per_sec: f64,
    /// PEM certificate chain: serve the FE over HTTPS (redirects to BEs stay http).
    #[arg(long, requires = "fe_tls_key")]
    fe_tls_cert: Option<PathBuf>,
    /// PEM private key for --fe-tls-cert.
    #[arg(long, requires = "fe_tls_cert")]
    fe_tls_key: Option<PathBuf>,
    /// Largest load body in MB (BE streaming_load_max_mb).
    #[arg(long, default_value_t = 10_240)]
    streaming_load_max_mb: u64,
    /// The FE's MySQL port (query_port): SHOW CREATE TABLE, ADMIN SHOW
    /// FRONTEND CONFIG, SHOW DATABASES/TABLES for `rockfeed check --connect`
    /// and the `mysql` client. `off` serves none.
    #[arg(long, default_value = "127.0.0.1:9030")]
    query: String,
    /// The user lacks OPERATE on SYSTEM: ADMIN SHOW FRONTEND CONFIG is refused (ERR 1227).
    #[arg(long)]
    no_operate_privilege: bool,
}

/// Logs go to stderr; `RUST_LOG` overrides the default filter. The demo's
/// embedded broker is silenced by default (its readiness probe alone makes
/// it log an error); `RUST_LOG=rumqttd=info` brings it back.
fn init_tracing(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        // Colours only on a terminal: a log file or journald gets plain text.
        LogFormat::Text => {
            use std::io::IsTerminal;
            fmt.with_target(false).with_ansi(std::io::stderr().is_terminal()).init()
        }
        LogFormat::Json => fmt.json().with_current_span(false).with_span_list(false).init(),
    }
}

/// SIGINT (Ctrl-C) or SIGTERM (systemd's and Kubernetes' stop): either
/// starts the graceful stop.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "Cannot listen for SIGTERM; only Ctrl-C stops gracefully.");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `rockfeed demo`: runs it and prints what happened, ending with the audit.
#[cfg(feature = "demo")]
async fn run_demo(o: rockfeed::demo::DemoOptions) -> Result<(), Box<dyn std::error::Error>> {
    let o_archive = o.data_dir.join("archive");
    println!(
        "rockfeed demo: {} vehicles × {} metrics at {} Hz for {} s (embedded broker, load generator, emulator, pipeline)…",
        o.vehicles, o.metrics, o.rate_hz, o.seconds
    );
    let r = rockfeed::demo::demo(o).await?;
    use std::sync::atomic::Ordering::Relaxed;
    let s = &r.stats;
    println!("messages published      {}", r.published);
    println!("readings published      {}", r.readings_published);
    println!("messages received       {}", s.messages.load(Relaxed));
    println!("samples decoded         {}", s.samples.load(Relaxed));
    println!("refused (dead letters)  {} ({} readings)", s.rejected.total(), s.rejected.readings());
    let unknown = |p| s.enrich.unknown(p).load(Relaxed);
    use rockfeed::model::UnknownVehicle as U;
    println!(
        "unknown vehicles        {} samples kept with NULL dims, {} dropped, {} dead-lettered (enrich.unknown_vehicle; {} vehicles in the dims)",
        unknown(U::Keep),
        unknown(U::Drop),
        unknown(U::DeadLetter),
        s.enrich.vehicles.load(Relaxed)
    );
    println!("stream loads            {} ({} failed)", s.loads.load(Relaxed), s.loads_failed.load(Relaxed));
    println!(
        "rows loaded             {} (rows per reading {:.3})",
        s.rows_loaded.load(Relaxed),
        s.rows_loaded.load(Relaxed) as f64 / r.readings_published.max(1) as f64
    );
    println!("rows in telemetry_1m    {}", r.table_rows);
    let (records, commits) = (s.wal_records.load(Relaxed), s.wal_commits.load(Relaxed));
    println!(
        "WAL                     {} records in {} group commits ({:.1} per commit), {:.3} bytes written per payload byte",
        records,
        commits,
        records as f64 / commits.max(1) as f64,
        s.wal_bytes_written.load(Relaxed) as f64 / s.mqtt_payload_bytes.load(Relaxed).max(1) as f64
    );
    println!("elapsed                 {:.1} s", r.elapsed.as_secs_f64());
    println!("\n{}", r.report.table());
    println!("latency report          {} (summary.txt, report.json, *.hgrm, latency.svg)", r.report_dir.display());
    println!(
        "archive                 {} Parquet file(s) in {} (rockfeed ddl --hive prints the Hive table)",
        r.archive_files,
        o_archive.display()
    );
    for a in r.audits.iter().chain(std::iter::once(&r.archive_audit)) {
        println!("audit                   {a}");
    }
    if r.audit_errors.is_empty() {
        println!(
            "audit                   PASS: every (vin, window, metric) count/sum/min/max and every vehicle's latest values equal what was published, and the archive holds every reading once"
        );
        Ok(())
    } else {
        for e in r.audit_errors.iter().take(10) {
            eprintln!("audit: {e}");
        }
        Err(format!("audit FAILED: {} differences", r.audit_errors.len()).into())
    }
}

/// `rockfeed run`: until SIGTERM or Ctrl-C, then the summary (and the report).
async fn cmd_run(config: &std::path::Path, report: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = rockfeed::config::Config::load(config)?;
    let started = std::time::Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        stop_signal().await;
        tracing::info!("Shutting down: sealing and loading what is held.");
        let _ = stop_tx.send(true);
    });
    let stats = rockfeed::app::run(cfg, stop_rx).await?;
    if let Some(dir) = report {
        let r = rockfeed::telemetry::report::build(
            &format!("rockfeed run {}", config.display()),
            &stats,
            started.elapsed(),
        );
        r.write(&dir).map_err(|e| format!("--report {}: {e}", dir.display()))?;
        print!("{}", r.table());
        println!("latency report: {}", dir.display());
    }
    use std::sync::atomic::Ordering::Relaxed;
    println!(
        "messages {} samples {} readings {} rejected {} rows loaded {} loads {} failed loads {}",
        stats.messages.load(Relaxed),
        stats.samples.load(Relaxed),
        stats.readings.load(Relaxed),
        stats.rejected.total(),
        stats.rows_loaded.load(Relaxed),
        stats.loads.load(Relaxed),
        stats.loads_failed.load(Relaxed)
    );
    Ok(())
}

/// `rockfeed archive ls`: the archive's files with their rows.
async fn cmd_archive_ls(config: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = rockfeed::config::Config::load(config)?;
    let store = rockfeed::archive::store::Store::open(&cfg.archive)?;
    let files = store.list(&cfg.archive.table).await?;
    let (mut rows, mut bytes) = (0i64, 0u64);
    println!("{:>12} {:>12}  file", "rows", "bytes");
    for (path, size) in &files {
        let n = store.rows(path).await?;
        rows += n;
        bytes += size;
        println!("{n:>12} {size:>12}  {path}");
    }
    println!("{rows:>12} {bytes:>12}  total: {} file(s) in {}", files.len(), store.display);
    Ok(())
}

/// `rockfeed deadletter replay`: dead-lettered bodies loaded again.
async fn cmd_replay(config: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = rockfeed::config::Config::load(config)?;
    let loader = rockfeed::app::loader(&cfg)?;
    let r = rockfeed::deadletter::replay(&cfg.dead_letter.dir, &loader).await?;
    println!("replayed: {} loaded, {} already loaded, {} still refused", r.loaded, r.already, r.refused.len());
    for (label, reason) in &r.refused {
        println!("refused: {label}: {reason}");
    }
    if r.refused.is_empty() { Ok(()) } else { Err("some bodies are still refused".into()) }
}

/// `rockfeed check [--connect]`: the config, then the systems it points at.
async fn cmd_check(config: &std::path::Path, connect: bool) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = rockfeed::config::Config::load(config)?;
    rockfeed::app::preflight(&cfg)?;
    println!(
        "{}: OK ({} endpoint(s), database {}, label prefix {}, {} shard(s), {:?} epochs, delivery {:?})",
        config.display(),
        cfg.starrocks.endpoints.len(),
        cfg.starrocks.database,
        cfg.starrocks.label_prefix,
        cfg.pipeline.shards,
        cfg.pipeline.epoch.0,
        cfg.delivery()
    );
    if !connect {
        return Ok(());
    }
    let mut failed = 0;
    for c in rockfeed::preflight::run(&cfg).await {
        use rockfeed::preflight::Outcome;
        match c.result {
            Outcome::Ok(found) => println!("OK    {}: {found}", c.what),
            Outcome::Skip(why) => println!("SKIP  {}: {why}", c.what),
            Outcome::Fail(todo) => {
                failed += 1;
                println!("FAIL  {}: {todo}", c.what);
            }
        }
    }
    if failed == 0 { Ok(()) } else { Err(format!("{failed} check(s) failed").into()) }
}

async fn run_emulator(a: EmulatorArgs) -> Result<(), Box<dyn std::error::Error>> {
    let ddl = std::fs::read_to_string(&a.ddl).map_err(|e| format!("cannot read --ddl {}: {e}", a.ddl.display()))?;
    let catalog = parse_ddl(&ddl).map_err(|e| format!("{}: {e}", a.ddl.display()))?;
    let mut cfg = EmulatorConfig::local(catalog, &a.user, &a.password);
    cfg.fe = a.fe;
    cfg.bes = a.be;
    cfg.follower_fe = a.follower_fe;
    cfg.state_dir = a.state;
    cfg.be_advertise = a.be_advertise;
    cfg.registry = RegistryConfig {
        label_keep_max_ms: a.label_keep_max_second * 1000,
        max_running_txn_num_per_db: a.max_running_txn_num_per_db,
        prepared_default_timeout_ms: a.prepared_timeout_second * 1000,
    };
    cfg.versions = VersionPolicy { max_versions: a.max_versions, compaction_per_sec: a.compaction_per_sec };
    cfg.max_body_bytes = a.streaming_load_max_mb * 1024 * 1024;
    cfg.fe_tls = a.fe_tls_cert.zip(a.fe_tls_key);
    cfg.query = match a.query.as_str() {
        "off" => None,
        q => Some(q.parse().map_err(|e| format!("--query {q}: not host:port or off ({e})"))?),
    };
    cfg.operate = !a.no_operate_privilege;
    let tables = cfg.catalog.tables.len();
    let emu = Emulator::start(cfg).await?;
    let query = emu.query_addr.map(|a| format!(", MySQL port {a}")).unwrap_or_default();
    println!(
        "StarRocks emulator: FE {} BE {:?}{query} ({tables} tables). Ctrl-C stops it.",
        emu.fe_url(),
        emu.be_addrs
    );
    tokio::signal::ctrl_c().await?;
    emu.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        #[cfg(feature = "demo")]
        Command::Demo { .. } => "info,rumqttd=off",
        // `check` prints its own result lines; the log says only what went wrong.
        Command::Check { .. } => "warn",
        _ => "info",
    };
    init_tracing(default_log, cli.log_format);
    // `run` sizes its runtime by `pipeline.worker_threads`; a file that does
    // not load is reported by `run` itself, inside the runtime.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Run { config, .. } = &cli.command
        && let Ok(cfg) = rockfeed::config::Config::load(config)
    {
        builder.worker_threads(cfg.pipeline.worker_threads());
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async {
        match cli.command {
            Command::StarrocksEmulator(a) => run_emulator(*a).await,
            #[cfg(feature = "demo")]
            Command::Demo { seconds, vehicles, metrics, rate_hz, data_dir, report } => {
                run_demo(rockfeed::demo::DemoOptions { seconds, vehicles, metrics, rate_hz, data_dir, report }).await
            }
            Command::Run { config, report } => cmd_run(&config, report).await,
            Command::Ddl { config, hive: false } => {
                let cfg = rockfeed::config::Config::load(&config)?;
                print!("{}", rockfeed::config::ddl::ddl(&cfg));
                Ok(())
            }
            Command::Ddl { config, hive: true } => {
                let cfg = rockfeed::config::Config::load(&config)?;
                print!("{}", rockfeed::archive::hive::ddl(&cfg.archive, &cfg.tables.dims)?);
                Ok(())
            }
            Command::Archive(ArchiveCommand::Ls { config }) => cmd_archive_ls(&config).await,
            Command::Deadletter(DeadletterCommand::Replay { config }) => cmd_replay(&config).await,
            Command::Check { config, connect } => cmd_check(&config, connect).await,
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_code(&*e))
        }
    }
}

/// 78 (`EX_CONFIG`) when the configuration cannot work as written (a file
/// that does not load, or `run` refusing it), so that supervisors need not
/// restart it; 1 otherwise.
fn exit_code(e: &(dyn std::error::Error + 'static)) -> u8 {
    if let Some(a) = e.downcast_ref::<rockfeed::app::AppError>() {
        a.exit_code()
    } else if e.downcast_ref::<rockfeed::config::ConfigError>().is_some() {
        78
    } else {
        1
    }
}
