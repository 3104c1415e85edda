//! The MQTT side of `rockfeed run`: the connection appends to the WAL for
//! as long as rockfeed runs, and lives of the pipeline read the WAL under
//! the epoch coordinator (recovery, the feeder from the decided position,
//! decoder and shards). An abandoned epoch restarts only the pipeline.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::{
    AppError, Parts, coordinator, drain_within, lives, open_archive, open_enrichment, stop_grace,
    stopped_while_recovering,
};
use crate::config::Config;
use crate::pipeline::epoch::EpochError;
use crate::pipeline::runner::{RunnerConfig, Sinks, Stats};
use crate::shutdown::{Deadline, Scope, join_within, stopped};
use crate::sink::starrocks::service::StreamLoader;
use crate::wal::{Wal, WalSource};

/// MQTT: the connection appends to the WAL for as long as rockfeed runs
/// (store-and-forward: it does not depend on StarRocks); the pipeline reads
/// the WAL under the epoch coordinator, and an abandoned epoch restarts only
/// the pipeline, from the last decided WAL position.
pub(super) async fn run_mqtt(
    cfg: &Config,
    mqtt: crate::source::mqtt::MqttConfig,
    parts: &Parts<'_>,
    shutdown: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
) -> Result<(), AppError> {
    let wal = Wal::open(cfg.wal.clone(), parts.stats.clone()).map_err(AppError::Fatal)?;
    let source = Arc::new(WalSource { wal: wal.clone() });
    // The intake stops on the outer shutdown, or when the pipeline cannot go on.
    let intake_scope = Scope::below(&shutdown);
    let intake = tokio::spawn(crate::source::mqtt::run(
        mqtt,
        wal.clone(),
        intake_scope.signal(),
        ready.clone(),
        parts.stats.clone(),
    ));
    let result = wal_lives(cfg, &source, parts, &shutdown).await;
    drop(intake_scope);
    let intake = match intake.await {
        Ok(r) => r.map_err(AppError::Io),
        Err(e) => Err(AppError::Io(std::io::Error::other(e))),
    };
    wal.close();
    result.and(intake)
}

/// The pipeline over an open WAL, as `rockfeed run` runs it for MQTT, but
/// without an MQTT connection: whatever is appended to `wal` is loaded
/// under the epoch protocol until `shutdown` flips. For tests and tools
/// that feed the WAL themselves; `loader` is the StarRocks loader to use.
pub async fn run_wal(
    cfg: &Config,
    wal: Arc<Wal>,
    loader: Arc<StreamLoader>,
    stats: Arc<Stats>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), AppError> {
    let enrich = open_enrichment(cfg, &stats).await?;
    let archive = open_archive(cfg, &stats)?;
    let stop = Deadline::new(&shutdown, cfg.pipeline.stop_grace.0);
    let parts = Parts { loader: &loader, enrich: &enrich, stats: &stats, archive: &archive, stop: &stop };
    let r = wal_lives(cfg, &Arc::new(WalSource { wal }), &parts, &shutdown).await;
    if let Some(a) = &archive {
        a.stop(stop.left()).await;
    }
    r
}

/// Lives of the pipeline over the WAL until `shutdown`: an abandoned epoch
/// restarts it (after a back-off) from the last decided position.
async fn wal_lives(
    cfg: &Config,
    source: &Arc<WalSource>,
    parts: &Parts<'_>,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), AppError> {
    let life = || mqtt_pipeline(cfg, source, parts, shutdown);
    let why = "Restarting the pipeline from the last decided WAL position; MQTT intake goes on into the WAL.";
    lives(shutdown, None, parts.stats, why, life).await
}

/// One life of the MQTT pipeline: recovery, the WAL feeder from the decided
/// position, decoder and shards, coordinator.
async fn mqtt_pipeline(
    cfg: &Config,
    source: &Arc<WalSource>,
    parts: &Parts<'_>,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), EpochError> {
    let Parts { loader, enrich, stats, archive, .. } = *parts;
    let rcfg = RunnerConfig::from(cfg);
    let (cut_tx, cut_rx) = mpsc::channel(1);
    let mut coordinator = coordinator(cfg, &rcfg, source.clone(), parts, cut_tx);
    // Recovery waits for StarRocks to answer; a stop must not wait with it.
    tokio::select! {
        r = coordinator.recover() => r?,
        _ = stopped(shutdown) => return stopped_while_recovering(),
    }
    let (tx, rx) = mpsc::channel(cfg.wal.feed_channel);
    source
        .wal
        .feed(source.decided_position(), tx)
        .map_err(|e| EpochError::Fatal(format!("cannot start the WAL feeder: {e}")))?;
    let pipeline = tokio::spawn(crate::pipeline::runner::run(
        rcfg,
        Sinks { loader: loader.clone(), archive: archive.clone() },
        enrich.clone(),
        rx,
        stats.clone(),
        cut_rx,
    ));
    // No source requests (no rebalances); the sender lives as long as the run.
    let (_req_tx, req_rx) = mpsc::channel(1);
    let mut coordinate = Box::pin(coordinator.run(req_rx, shutdown.clone()));
    let result = tokio::select! {
        r = &mut coordinate => r,
        e = stop_grace(parts.stop) => Err(e),
    };
    drop(coordinate);
    // The decoder ends when the coordinator's cut sender is gone.
    join_within(pipeline, drain_within(parts.stop)).await;
    if let Some(e) = source.wal.failed() {
        return Err(EpochError::Fatal(e));
    }
    result
}
