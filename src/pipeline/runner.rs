//! The pipeline behind a source, under the epoch coordinator (DESIGN.md
//! §3): raw messages → the decoder stage (`decoder.rs`: decode, enrich,
//! route by StarRocks bucket) → one shard stage per shard (`shard.rs`:
//! pre-aggregate, and on each epoch's seal load under
//! `{prefix}-{table}-{shard}-{epoch}`). Both delivery modes take this one
//! path: exactly-once prepares 2PC transactions that the coordinator
//! decides and commits; at-least-once (StarRocks without the transaction
//! API) loads them with plain Stream Load before the decision.
//!
//! Every channel is bounded, so a slow StarRocks stops the decoder, which
//! stops taking from the source (the WAL or Kafka holds the data).

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tokio::sync::mpsc;

pub use super::decoder::Form;
use super::epoch::Cut;
use super::shard::{ShardCtx, ShardMsg};
use super::window::WindowConfig;
use crate::archive::Archive;
use crate::config::Delivery;
use crate::deadletter::DeadLetterWriter;
use crate::decode::DecodeConfig;
use crate::decode::catalog::MetricCatalog;
use crate::enrich::{Enrichment, UnknownVehicle};
use crate::sink::starrocks::encode::{Compression, SEPARATOR_HEADER, TelemetryCsv};
use crate::sink::starrocks::service::StreamLoader;
use crate::sink::starrocks::txn::TxnTimeouts;
use crate::source::RawMessage;

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub decode: DecodeConfig,
    pub form: Form,
    pub catalog: crate::decode::catalog::Limits,
    pub window: WindowConfig,
    pub shards: u32,
    pub buckets: u32,
    pub epoch: Duration,
    pub dims: Vec<String>,
    pub unknown_vehicle: UnknownVehicle,
    pub table: String,
    pub label_prefix: String,
    pub dead_letter_dir: std::path::PathBuf,
    /// Capacity of each shard channel, in batches.
    pub channel_batches: usize,
    /// A shard loads early when it holds this many partial rows.
    pub max_rows_per_load: usize,
    /// Bound on the bodies held in memory (`pipeline.max_epoch_bytes`).
    pub max_epoch_bytes: u64,
    /// Body compression.
    pub compression: Compression,
    /// The latest-values table and its metrics (`None`: not loaded).
    pub latest: Option<(String, Vec<String>)>,
    /// Epoch seals load with 2PC (exactly-once) or plain Stream Load.
    pub delivery: Delivery,
    pub timeouts: TxnTimeouts,
    /// Route by the message key (Kafka) instead of the decoded VIN.
    pub route_by_key: bool,
}

impl RunnerConfig {
    /// Every table a shard may write.
    pub fn tables(&self) -> Vec<String> {
        let mut t = vec![self.table.clone()];
        t.extend(self.latest.as_ref().map(|(l, _)| l.clone()));
        t
    }
}

pub use crate::telemetry::Stats;

/// Where a run's output goes: StarRocks, and the raw archive if on.
pub struct Sinks {
    pub loader: Arc<StreamLoader>,
    pub archive: Option<Arc<Archive>>,
}

impl Sinks {
    /// StarRocks only.
    pub fn starrocks(loader: Arc<StreamLoader>) -> Sinks {
        Sinks { loader, archive: None }
    }
}

/// Runs the decoder and the shards until the coordinator's last cut (or
/// until its cut sender goes), then waits for the shards and syncs the
/// dead letters.
pub async fn run(
    cfg: RunnerConfig,
    sinks: Sinks,
    enrich: Option<Arc<Enrichment>>,
    rx: mpsc::Receiver<RawMessage>,
    stats: Arc<Stats>,
    cuts: mpsc::Receiver<Cut>,
) -> std::io::Result<()> {
    let Sinks { loader, archive } = sinks;
    stats.bodies.set_max(cfg.max_epoch_bytes);
    let catalog = Arc::new(RwLock::new(MetricCatalog::with_limits(cfg.catalog)));
    let dead = Arc::new(Mutex::new(DeadLetterWriter::open(&cfg.dead_letter_dir, 64 << 20, 100).map_err(|e| {
        std::io::Error::new(e.kind(), format!("dead-letter directory {}: {e}", cfg.dead_letter_dir.display()))
    })?));
    let mut headers = HeaderMap::new();
    headers.insert("column_separator", HeaderValue::from_static(SEPARATOR_HEADER));
    headers.insert("columns", HeaderValue::from_str(&TelemetryCsv::columns(&cfg.dims)).map_err(std::io::Error::other)?);
    headers.insert("format", HeaderValue::from_static(cfg.compression.format()));
    let mut shard_tx = Vec::new();
    let mut shard_tasks = Vec::new();
    for k in 0..cfg.shards {
        let (tx, srx) = mpsc::channel::<ShardMsg>(cfg.channel_batches.max(1));
        shard_tx.push(tx);
        let ctx = ShardCtx {
            k,
            cfg: cfg.clone(),
            catalog: catalog.clone(),
            dead: dead.clone(),
            loader: loader.clone(),
            headers: headers.clone(),
            stats: stats.clone(),
            archive: archive.clone(),
        };
        shard_tasks.push(tokio::spawn(super::shard::run(ctx, srx)));
    }
    let r =
        super::decoder::run(&cfg, &catalog, &dead, enrich.as_deref(), &stats, rx, cuts, &shard_tx, archive.is_some())
            .await;
    drop(shard_tx);
    for t in shard_tasks {
        let _ = t.await;
    }
    if let Ok(mut d) = dead.lock() {
        d.flush(true)?;
    }
    r
}
