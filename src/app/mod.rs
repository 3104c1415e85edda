//! `rockfeed run`: builds the stages from the configuration, wires the
//! bounded channels, and owns the stop (`crate::shutdown`: the source
//! stops first, the shards seal and load what they hold, the archive
//! publishes, all within one grace period).
//!
//! Whatever the source, the epoch coordinator drives the shards, and the
//! pipeline runs in *lives* (`lives`): an epoch that has to be abandoned
//! (StarRocks failing past the retry budget, a decision that cannot be
//! made) ends the life, and the next one starts after a back-off from the
//! decided positions. A fatal error (another writer on the label prefix)
//! stops rockfeed. The files:
//! - `kafka.rs`: a Kafka life (consumer, poll thread, decoder, shards);
//! - `mqtt.rs`: the MQTT connection into the WAL, and lives over the WAL;
//! - `settings.rs`: each stage's settings projected from the [`Config`],
//!   and the StarRocks loader.

mod kafka;
mod mqtt;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::archive::Archive;
use crate::archive::store::Store;
use crate::archive::writer::Settings;
use crate::config::Config;
use crate::enrich::Enrichment;
use crate::pipeline::epoch::{Coordinator, CoordinatorConfig, EpochError};
use crate::pipeline::runner::{RunnerConfig, Stats};
use crate::shutdown::{Deadline, stopped};
use crate::sink::starrocks::service::StreamLoader;

pub use mqtt::run_wal;
pub use settings::loader;

/// How long the decoder and shards of a pipeline life that ended get to
/// finish once their coordinator is gone.
const PIPELINE_DRAIN: Duration = Duration::from_secs(10);

/// [`PIPELINE_DRAIN`], within what is left of a stop's deadline: past it
/// (the last epoch did not commit), a shard still retrying its
/// transaction gets one more second, not ten.
fn drain_within(stop: &Deadline) -> Duration {
    stop.left_if_stopping().map_or(PIPELINE_DRAIN, |left| left.clamp(Duration::from_secs(1), PIPELINE_DRAIN))
}

/// Why `rockfeed run` ended with an error, and what its supervisor should
/// do about it ([`AppError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The configuration cannot work as written: a key, a file or directory
    /// it names, a WAL another process holds. Starting again cannot help
    /// until an operator fixes it.
    #[error("{0}")]
    Config(String),
    /// The pipeline refused to go on: another writer on the label prefix, a
    /// state file that does not read back, a stage that could not start or
    /// failed. Nothing is lost (the source replays from the decided
    /// positions); a restart may help, an operator should look.
    #[error("{0}")]
    Fatal(String),
    /// I/O outside the pipeline's own protocol (the MQTT intake's socket).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl AppError {
    /// `EX_CONFIG` (78, sysexits.h) for a configuration that cannot work,
    /// so that a supervisor need not restart it (the systemd unit's
    /// `RestartPreventExitStatus=78`); 1 for anything a restart may cure.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config(_) => 78,
            AppError::Fatal(_) | AppError::Io(_) => 1,
        }
    }
}

/// Runs until `shutdown` flips; returns the pipeline's counters.
pub async fn run(cfg: Config, shutdown: watch::Receiver<bool>) -> Result<Arc<Stats>, AppError> {
    run_with_ready(cfg, shutdown, watch::channel(false).0).await
}

/// Like [`run`]; `ready` flips to true once the source has subscribed (and
/// `/ready` answers 200 from then on).
pub async fn run_with_ready(
    cfg: Config,
    shutdown: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
) -> Result<Arc<Stats>, AppError> {
    run_with(cfg, shutdown, ready, Arc::new(Stats::default())).await
}

/// Like [`run_with_ready`], counting into `stats` (the demo watches them
/// while it runs).
pub async fn run_with(
    cfg: Config,
    shutdown: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    stats: Arc<Stats>,
) -> Result<Arc<Stats>, AppError> {
    preflight(&cfg)?;
    let loader = Arc::new(loader(&cfg)?.with_stats(stats.clone()));
    let enrich = open_enrichment(&cfg, &stats).await?;
    let archive = open_archive(&cfg, &stats)?;
    if let Some(addr) = cfg.telemetry.listen {
        let bound = crate::telemetry::http::start(addr, stats.clone(), ready.subscribe(), shutdown.clone()).await?;
        tracing::info!(%bound, "Serving /metrics, /health and /ready.");
    }
    // One deadline for the whole stop: the last epoch, then the archive.
    let stop = Deadline::new(&shutdown, cfg.pipeline.stop_grace.0);
    let r = run_source(
        &cfg,
        Parts { loader: &loader, enrich: &enrich, stats: &stats, archive: &archive, stop: &stop },
        shutdown,
        ready,
    )
    .await;
    if let Some(a) = &archive {
        a.stop(stop.left()).await;
    }
    r.map(|_| stats)
}

/// Everything `run` opens before it connects, opened and let go: a source
/// section, every directory it writes (created and probed), the StarRocks
/// endpoints and TLS trust, the vehicle dimensions file (read and parsed
/// whole), the archive's store, the MQTT TLS trust and the WAL's lock.
/// `rockfeed check` runs it, and so does `run` first: when `check` says
/// OK, `run` gets past its start. Each error names the key and the path or
/// value it could not use.
pub fn preflight(cfg: &Config) -> Result<(), AppError> {
    if cfg.source.mqtt.is_none() && cfg.source.kafka.is_none() {
        return Err(AppError::Config("no source configured: add a [source.mqtt] or [source.kafka] section".into()));
    }
    cfg.check_dirs().map_err(|e| AppError::Config(e.to_string()))?;
    loader(cfg)?;
    if let Some(e) = &cfg.enrich {
        if let Some(f) = &e.file {
            crate::enrich::load(f, &cfg.tables.dims).map_err(|err| AppError::Config(format!("enrich.file: {err}")))?;
        }
        // A database is not reached here (check connects to nothing; run
        // starts without it, from the cache); its cache must be writable.
        if let Some(db) = &e.database {
            db.check().map_err(AppError::Config)?;
            let cache = enrich_cache(cfg, db);
            let dir = cache.parent().unwrap_or(std::path::Path::new("."));
            std::fs::create_dir_all(dir)
                .and_then(|()| tempfile_in(dir))
                .map_err(|err| AppError::Config(format!("enrich.database.cache {}: {err}", cache.display())))?;
        }
    }
    if cfg.archive.enabled {
        Store::open(&cfg.archive).map_err(|e| AppError::Config(format!("archive.url: {e}")))?;
    }
    if let Some(m) = &cfg.source.mqtt {
        m.check().map_err(AppError::Config)?;
        crate::wal::Wal::probe_lock(&cfg.wal.dir).map_err(AppError::Config)?;
    }
    Ok(())
}

/// The archive, if configured.
pub fn open_archive(cfg: &Config, stats: &Arc<Stats>) -> Result<Option<Arc<Archive>>, AppError> {
    let a = &cfg.archive;
    if !a.enabled {
        return Ok(None);
    }
    let store = Store::open(a).map_err(AppError::Config)?;
    let settings = Settings::from(cfg);
    tracing::info!(url = %store.display, table = %a.table, "Raw archive on.");
    Archive::open(settings, cfg.pipeline.shards, store, stats.clone()).map(Some).map_err(AppError::Fatal)
}

async fn run_source(
    cfg: &Config,
    parts: Parts<'_>,
    shutdown: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
) -> Result<(), AppError> {
    if let Some(kafka) = cfg.source.kafka.clone() {
        let life = || kafka::run_kafka(cfg, &kafka, &parts, &shutdown, &ready);
        let restart = "Restarting the Kafka pipeline from the decided offsets.";
        return lives(&shutdown, Some(&ready), parts.stats, restart, life).await;
    }
    let Some(mqtt) = cfg.source.mqtt.clone() else { unreachable!("checked above") };
    mqtt::run_mqtt(cfg, mqtt, &parts, shutdown, ready).await
}

/// Whether a file can be created in `dir` (it is removed again).
fn tempfile_in(dir: &std::path::Path) -> std::io::Result<()> {
    let p = dir.join(".rockfeed-write-probe");
    std::fs::write(&p, b"")?;
    std::fs::remove_file(p)
}

/// The vehicle dims, if configured.
async fn open_enrichment(cfg: &Config, stats: &Arc<Stats>) -> Result<Option<Arc<Enrichment>>, AppError> {
    let Some(e) = &cfg.enrich else { return Ok(None) };
    let dims = &cfg.tables.dims;
    match (&e.file, &e.database) {
        (Some(f), _) => Ok(Some(Arc::new(
            Enrichment::open_file(f, dims, stats.clone()).map_err(|e| AppError::Config(e.to_string()))?,
        ))),
        (None, Some(db)) => {
            let cache = enrich_cache(cfg, db);
            Ok(Some(Enrichment::open_database(db.clone(), cache, dims, stats.clone()).await))
        }
        (None, None) => Err(AppError::Config("[enrich]: give `file` or `[enrich.database]`".into())),
    }
}

/// Where a database's dims are cached.
fn enrich_cache(cfg: &Config, db: &crate::enrich::db::DbConfig) -> std::path::PathBuf {
    db.cache.clone().unwrap_or_else(|| cfg.pipeline.state_dir.join("enrich-cache.csv"))
}

/// Runs lives of a pipeline until one ends well or fatally, or `shutdown`
/// flips: an abandoned epoch restarts it (from the decided positions)
/// after a back-off of 2, 4, … 32 s. `ready` (when the pipeline owns it)
/// says 503 meanwhile.
async fn lives<F, Fut>(
    shutdown: &watch::Receiver<bool>,
    ready: Option<&watch::Sender<bool>>,
    stats: &Stats,
    restarting: &str,
    mut life: F,
) -> Result<(), AppError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), EpochError>>,
{
    let mut restarts = 0u32;
    loop {
        match life().await {
            Ok(()) => return Ok(()),
            Err(EpochError::Fatal(m)) => return Err(AppError::Fatal(m)),
            Err(e @ EpochError::Abandoned { .. }) if *shutdown.borrow() => {
                tracing::error!(error = %e, "Stopped without committing the last epoch; the source replays it at the next start.");
                return Ok(());
            }
            Err(e @ EpochError::Abandoned { .. }) => {
                restarts += 1;
                stats.pipeline_restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let wait = Duration::from_secs(1u64 << restarts.min(5));
                tracing::error!(error = %e, restarts, ?wait, "{restarting}");
                if let Some(r) = ready {
                    let _ = r.send(false);
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped(shutdown) => return Ok(()),
                }
            }
        }
    }
}

/// The epoch coordinator of one pipeline life over `source`.
fn coordinator<S: crate::model::epoch::EpochSource>(
    cfg: &Config,
    rcfg: &RunnerConfig,
    source: Arc<S>,
    parts: &Parts<'_>,
    cuts: mpsc::Sender<crate::pipeline::epoch::Cut>,
) -> Coordinator<S> {
    Coordinator::new(CoordinatorConfig::from(cfg), source, parts.loader.clone(), cuts, parts.stats.clone())
        .with_archive(parts.archive.clone())
        .with_rebuild(Some(crate::pipeline::runner::rebuilder(
            rcfg.clone(),
            parts.loader.clone(),
            parts.enrich.clone(),
        )))
}

/// A stop that came while recovery waited for StarRocks: this life opened
/// no epoch, so there is nothing of it to roll back or replay; the next
/// start recovers again. Not an error: the life ends well.
fn stopped_while_recovering() -> Result<(), EpochError> {
    tracing::info!(
        "Stopped during recovery (StarRocks did not answer); no epoch was open, and the next start recovers again."
    );
    Ok(())
}

/// Resolves at the stop's deadline (`pipeline.stop_grace` after the
/// signal): the last epoch did not commit in time (StarRocks down), and
/// rockfeed exits with it undecided; recovery rolls it back next time.
async fn stop_grace(stop: &Deadline) -> EpochError {
    stop.passed().await;
    EpochError::Abandoned {
        epoch: 0,
        reason: format!(
            "the last epoch did not commit within {:?} of the stop (pipeline.stop_grace); it is rolled back at the next start",
            stop.grace()
        ),
    }
}

/// What every life of a pipeline (Kafka or MQTT) shares.
#[derive(Clone, Copy)]
struct Parts<'a> {
    loader: &'a Arc<StreamLoader>,
    enrich: &'a Option<Arc<Enrichment>>,
    stats: &'a Arc<Stats>,
    archive: &'a Option<Arc<Archive>>,
    /// The stop's one deadline.
    stop: &'a Deadline,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, extra: &str) -> Config {
        let d = dir.display();
        let text = format!(
            r#"
[starrocks]
endpoints = ["http://127.0.0.1:8030"]
database = "rockfeed"
user = "root"
[pipeline]
state_dir = "{d}/state"
[dead_letter]
dir = "{d}/dead"
[wal]
dir = "{d}/wal"
{extra}"#
        );
        let c = Config::parse(&text).unwrap();
        c.validate().unwrap();
        c
    }

    const MQTT: &str = "[source.mqtt]\nhost = \"127.0.0.1\"\nclient_id = \"c\"\ntopics = [\"t/#\"]\n";

    /// `rockfeed check` runs `preflight`: each mistake `run` would stumble
    /// on is found there, with the key and the path it could not use.
    #[test]
    fn preflight_finds_what_run_would_refuse_and_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        preflight(&config(tmp.path(), MQTT)).unwrap();

        let e = preflight(&config(tmp.path(), "")).unwrap_err().to_string();
        assert!(e.contains("no source configured"), "{e}");

        let missing = tmp.path().join("no-such-vehicles.csv");
        let e = preflight(&config(tmp.path(), &format!("[enrich]\nfile = \"{}\"\n{MQTT}", missing.display())))
            .unwrap_err()
            .to_string();
        assert!(e.contains("enrich.file") && e.contains("no-such-vehicles.csv"), "{e}");

        let ca = tmp.path().join("no-such-ca.pem");
        let e = preflight(&config(tmp.path(), &format!("{MQTT}tls_ca_file = \"{}\"\n", ca.display())))
            .unwrap_err()
            .to_string();
        assert!(e.contains("source.mqtt.tls_ca_file") && e.contains("no-such-ca.pem"), "{e}");

        // Another process (here: this one) holds the WAL.
        let wal = crate::wal::Wal::open(
            crate::wal::WalConfig { dir: tmp.path().join("wal"), ..Default::default() },
            Arc::new(Stats::default()),
        )
        .unwrap();
        let e = preflight(&config(tmp.path(), MQTT)).unwrap_err().to_string();
        assert!(e.contains("in use by another process"), "{e}");
        wal.close();
        preflight(&config(tmp.path(), MQTT)).unwrap();
    }

    /// A configuration mistake is not worth a restart; a pipeline that
    /// refused to go on may be.
    #[tokio::test]
    async fn refusals_say_whether_a_restart_can_help() {
        let tmp = tempfile::tempdir().unwrap();
        let e = preflight(&config(tmp.path(), "")).unwrap_err();
        assert!(matches!(e, AppError::Config(_)) && e.exit_code() == 78, "{e:?}");
        let (_tx, shutdown) = watch::channel(false);
        let stats = Stats::default();
        let life = || async { Err(EpochError::Fatal("label a-t-0-1 is already VISIBLE: another writer".into())) };
        let e = lives(&shutdown, None, &stats, "restarting", life).await.unwrap_err();
        assert!(matches!(&e, AppError::Fatal(m) if m.contains("another writer")) && e.exit_code() == 1, "{e:?}");
    }

    #[test]
    fn an_endpoint_that_would_be_changed_fails_validation() {
        let text = "[starrocks]\nendpoints = [\"http://127.0.0.1:99999\"]\ndatabase = \"d\"\nuser = \"u\"\n";
        let e = Config::parse(text).unwrap().validate().unwrap_err().to_string();
        assert!(e.contains("starrocks.endpoints") && e.contains("port 99999"), "{e}");
    }
}
