//! `rockfeed run`: builds the stages from the configuration, wires the
//! bounded channels, and owns shutdown (sources stop first, shards seal and
//! load what they hold, dead letters are synced last).

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::config::{Config, Delivery};
use crate::enrich::Enrichment;
use crate::pipeline::runner::{RunnerConfig, Stats};
use crate::pipeline::window::WindowConfig;
use crate::sink::starrocks::client::{ClientConfig, Credentials, Endpoint, StreamLoadClient};
use crate::sink::starrocks::service::{RetryPolicy, StreamLoader};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The loader for a configuration.
pub fn loader(cfg: &Config) -> Result<StreamLoader, AppError> {
    let sr = &cfg.starrocks;
    let endpoints =
        sr.endpoints.iter().map(|e| e.parse::<Endpoint>()).collect::<Result<Vec<_>, _>>().map_err(AppError::Config)?;
    let mut c = ClientConfig::new(endpoints, Credentials { user: sr.user.clone(), password: sr.password.clone() });
    c.request_timeout = sr.request_timeout.0;
    c.tls_ca_file = sr.tls_ca_file.clone();
    let client = StreamLoadClient::new(c).map_err(|e| AppError::Config(e.to_string()))?;
    Ok(StreamLoader::new(
        client,
        sr.database.clone(),
        RetryPolicy { max_attempts: sr.max_attempts, ..Default::default() },
    ))
}

/// The runner settings for a configuration.
pub fn runner_config(cfg: &Config) -> RunnerConfig {
    RunnerConfig {
        decode: cfg.decode.to_decode_config(),
        form: cfg.decode.form,
        max_metrics: cfg.decode.max_metrics,
        window: WindowConfig {
            width_ms: cfg.window.width.0.as_millis() as i64,
            max_lateness_ms: cfg.window.max_lateness.0.as_millis() as i64,
        },
        shards: cfg.pipeline.shards,
        buckets: cfg.tables.buckets,
        epoch: cfg.pipeline.epoch.0,
        dims: cfg.tables.dims.clone(),
        unknown_vehicle: cfg.enrich.as_ref().map(|e| e.unknown_vehicle).unwrap_or(crate::enrich::UnknownVehicle::Keep),
        table: cfg.tables.telemetry.clone(),
        label_prefix: cfg.starrocks.label_prefix.clone(),
        dead_letter_dir: cfg.dead_letter.dir.clone(),
        channel_batches: cfg.pipeline.channel_batches,
        max_rows_per_load: cfg.pipeline.max_rows_per_load,
        compression: cfg.starrocks.compression,
        latest: (!cfg.tables.latest_metrics.is_empty() || cfg.tables.load_latest)
            .then(|| (cfg.tables.latest.clone(), cfg.tables.latest_metrics.clone())),
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
    if cfg.starrocks.delivery == Delivery::ExactlyOnce {
        return Err(AppError::Config(
            "delivery = \"exactly-once\" (epochs with 2PC) is not implemented yet; set starrocks.delivery = \"at-least-once\"".into(),
        ));
    }
    let Some(mqtt) = cfg.source.mqtt.clone() else {
        return Err(AppError::Config("no source configured: add a [source.mqtt] section".into()));
    };
    let loader = Arc::new(loader(&cfg)?);
    let enrich = match &cfg.enrich {
        Some(e) => {
            Some(Arc::new(Enrichment::open(&e.file, &cfg.tables.dims).map_err(|e| AppError::Config(e.to_string()))?))
        }
        None => None,
    };
    let stats = Arc::new(Stats::default());
    if let Some(addr) = cfg.telemetry.listen {
        let bound = crate::telemetry::http::start(addr, stats.clone(), ready.subscribe(), shutdown.clone()).await?;
        tracing::info!(%bound, "Serving /metrics, /health and /ready.");
    }
    let (tx, rx) = mpsc::channel(1024);
    let source = tokio::spawn(crate::source::mqtt::run_with_ready(mqtt, tx, shutdown.clone(), ready));
    let pipeline = crate::pipeline::runner::run(runner_config(&cfg), loader, enrich, rx, shutdown, stats.clone());
    pipeline.await?;
    match source.await {
        Ok(r) => r?,
        Err(e) => return Err(AppError::Io(std::io::Error::other(e))),
    }
    Ok(stats)
}
