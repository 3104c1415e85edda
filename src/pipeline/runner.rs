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

use tokio::sync::{mpsc, oneshot};

use super::epoch::{Cut, Rebuilder, Rebuilt};
use super::shard::{ShardCtx, ShardMsg};
use super::window::WindowConfig;
use crate::archive::Archive;
use crate::deadletter::DeadLetterWriter;
use crate::decode::DecodeConfig;
use crate::decode::catalog::MetricCatalog;
use crate::enrich::Enrichment;
use crate::model::Delivery;
use crate::model::RawMessage;
use crate::model::UnknownVehicle;
use crate::model::epoch::Decision;
use crate::sink::starrocks::encode::{Compression, TelemetryCsv};
use crate::sink::starrocks::service::StreamLoader;
use crate::sink::starrocks::txn::{TxnLoader, TxnTimeouts};

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The decoder's settings, the form and the metric catalog's bounds.
    pub decode: DecodeConfig,
    pub window: WindowConfig,
    pub shards: u32,
    pub buckets: u32,
    pub epoch: Duration,
    pub dims: Vec<String>,
    pub unknown_vehicle: UnknownVehicle,
    pub table: String,
    pub label_prefix: String,
    pub dead_letter: crate::config::DeadLetterCfg,
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
    /// Set only for a rebuild of a decided epoch ([`rebuild`]).
    pub rebuild: Option<RebuildScope>,
}

/// What a rebuild of a decided epoch prepares.
#[derive(Debug, Clone, Default)]
pub struct RebuildScope {
    /// Only these labels are prepared: the epoch's other labels committed.
    pub labels: Vec<String>,
    /// Each shard starts from its watermark when the epoch began, so it
    /// refuses as too late exactly what the first run refused.
    pub watermarks: Vec<i64>,
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
    let catalog = Arc::new(RwLock::new(MetricCatalog::with_limits(cfg.decode.catalog_limits())));
    let dl = &cfg.dead_letter;
    let mut dead = DeadLetterWriter::open(&dl.dir, dl.file_bytes, dl.max_files)
        .map_err(|e| std::io::Error::new(e.kind(), format!("dead-letter directory {}: {e}", dl.dir.display())))?;
    dead = dead.with_stats(stats.clone());
    if cfg.rebuild.is_some() {
        dead = dead.without_records();
    }
    let dead = Arc::new(Mutex::new(dead));
    let headers = TelemetryCsv::headers(&cfg.dims, cfg.compression).map_err(std::io::Error::other)?;
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

/// Rebuilds the lost transactions `labels` of decided epoch `d` (recovery,
/// `epoch.rs`): the epoch's messages, re-read from the source, run through
/// a decoder and shards of their own (own counters, no archive, no dead
/// letters for records: the first run wrote those), each shard starting
/// from the watermark the decision recorded; one last cut seals epoch
/// `d.epoch`, and only `labels` are prepared. Returns them prepared; on
/// any failure nothing stays prepared.
pub async fn rebuild(
    mut cfg: RunnerConfig,
    loader: Arc<StreamLoader>,
    enrich: Option<Arc<Enrichment>>,
    d: Decision,
    labels: Vec<String>,
    mut messages: mpsc::Receiver<RawMessage>,
) -> Result<Rebuilt, String> {
    if d.shards != cfg.shards {
        return Err(format!("epoch {} was cut into {} shards; the config now has {}", d.epoch, d.shards, cfg.shards));
    }
    // The shards whose telemetry rows are rebuilt: their readings commit.
    let telemetry: Vec<bool> = (0..cfg.shards)
        .map(|k| {
            crate::sink::starrocks::label::label(&cfg.label_prefix, &cfg.table, k, d.epoch)
                .is_ok_and(|l| labels.contains(&l))
        })
        .collect();
    cfg.rebuild = Some(RebuildScope { labels, watermarks: (0..cfg.shards).map(|k| d.watermark(k)).collect() });
    let timeouts = cfg.timeouts;
    let (tx, rx) = mpsc::channel(1024);
    let (cut_tx, cut_rx) = mpsc::channel(1);
    let stats = Arc::new(Stats::default());
    let pipeline = tokio::spawn(run(cfg, Sinks::starrocks(loader.clone()), enrich, rx, stats, cut_rx));
    while let Some(m) = messages.recv().await {
        if tx.send(m).await.is_err() {
            break;
        }
    }
    // Every message is in the decoder's channel: the last cut takes them all.
    let (reply, answer) = oneshot::channel();
    let cut = Cut { epoch: d.epoch, drain: true, reset_positions: false, last: true, discard: false, reply };
    let stopped = || "the rebuild's decoder stopped".to_string();
    let shards = match cut_tx.send(cut).await {
        Ok(()) => answer.await.map(|r| r.shards).map_err(|_| stopped()),
        Err(_) => Err(stopped()),
    };
    let mut txns = Vec::new();
    let mut readings = 0u64;
    let mut failure = shards.as_ref().err().cloned();
    for (k, s) in shards.unwrap_or_default().into_iter().enumerate() {
        match s.await {
            Ok(done) => {
                if telemetry.get(k).copied().unwrap_or(false) {
                    readings += done.received.iter().map(|r| r.readings as u64).sum::<u64>();
                }
                txns.extend(done.txns);
                if let Some(e) = done.error {
                    failure.get_or_insert(e.to_string());
                }
            }
            Err(_) => {
                failure.get_or_insert("a shard of the rebuild stopped".into());
            }
        }
    }
    drop(cut_tx);
    let ended = pipeline.await;
    if let Ok(Err(e)) = ended {
        failure.get_or_insert(e.to_string());
    }
    match failure {
        None => Ok(Rebuilt { txns, readings }),
        Some(why) => {
            let txn = TxnLoader::new(&loader, timeouts);
            for t in &txns {
                txn.abort(&t.table, &t.label).await;
            }
            Err(why)
        }
    }
}

/// The rebuild function the coordinator calls for lost transactions
/// ([`rebuild`] over this pipeline's config, loader and dims).
pub fn rebuilder(cfg: RunnerConfig, loader: Arc<StreamLoader>, enrich: Option<Arc<Enrichment>>) -> Rebuilder {
    Arc::new(move |d, labels, messages| {
        Box::pin(rebuild(cfg.clone(), loader.clone(), enrich.clone(), d, labels, messages))
    })
}
