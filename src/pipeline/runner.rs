//! The pipeline's I/O loop (at-least-once delivery): raw messages →
//! decode → enrich → route → per-shard pre-aggregation → every epoch, one
//! labelled Stream Load per shard.
//!
//! Tasks and channels (all bounded, so a slow StarRocks stops the source):
//! - the **decoder** owns the metric catalog and the dead-letter writer; it
//!   decodes, joins dims, dead-letters what it refuses, routes samples by
//!   StarRocks bucket to shard channels (one batch per shard for everything
//!   already waiting in the source channel, up to 256 messages, so a stream
//!   of small narrow messages does not cost a channel send each), and every
//!   `epoch` sends each shard a seal (in the same channel, so a seal follows
//!   exactly the samples routed before it);
//! - each **shard** owns its aggregator; on a seal it drains, encodes one CSV
//!   body and loads it under `{prefix}-{table}-{shard}-{epoch}` with the
//!   label-exact retry loop (`sink::starrocks::service`). A batch that fails
//!   permanently is dead-lettered whole (`load_failed`), never dropped.
//!
//! Label sequences are `flush_ms * 100 + n` (`n` counting a shard's loads
//! within one millisecond): unique within a process and increasing across
//! restarts, so a restarted instance never reuses a label of different data
//! (a wall clock stepped backwards by NTP is the one way to collide; the
//! exactly-once mode replaces wall time with source positions). Exactly-once epochs replace this with source positions
//! (DESIGN.md §3).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use compact_str::CompactString;
use http::{HeaderMap, HeaderValue};
use tokio::sync::{mpsc, oneshot, watch};

use super::epoch::{Cut, CutReply, Positions, PreparedTxn, ShardDone, ShardError};
use super::latest::LatestTracker;
use super::route::shard_of;
use super::window::{Added, WindowAggregator, WindowConfig};
use crate::archive::{Archive, ArchiveSample};
use crate::config::Delivery;
use crate::deadletter::{DeadLetter, DeadLetterWriter};
use crate::decode::catalog::MetricCatalog;
use crate::decode::narrow::TopicTemplate;
use crate::decode::{DecodeConfig, Decoded, Sample, narrow, wide};
use crate::enrich::{DimRow, Enrichment, UnknownVehicle};
use crate::sink::starrocks::encode::{Compression, SEPARATOR_HEADER, TelemetryCsv};
use crate::sink::starrocks::label::label;
use crate::sink::starrocks::service::StreamLoader;
use crate::sink::starrocks::txn::{Chunk, TxnError, TxnLoader, TxnTimeouts};
use crate::source::RawMessage;
use crate::telemetry::{Local, Reconciliation, Stage};
use crate::util::now_ms;

/// Which wire form payloads use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    Wide,
    Narrow,
    /// Narrow when the topic matches the template, wide otherwise.
    Auto,
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub decode: DecodeConfig,
    pub form: Form,
    pub max_metrics: usize,
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

/// A routed sample: dims, receive time (ms), and its source position (for
/// the archive; empty without one).
type Routed = (Sample, Option<DimRow>, i64, CompactString);

enum ShardMsg {
    /// Samples with their dims and receive time (ms), and when the decoder
    /// handed them over (for the shard's queue-wait histogram).
    Samples(Vec<Routed>, Instant),
    /// Load what the shard holds: on its own tick (uncoordinated) or for
    /// the coordinator's epoch, answering when prepared (or loaded).
    Seal(Option<(u64, oneshot::Sender<ShardDone>)>),
}

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

/// Runs until `rx` closes or `shutdown` flips; seals and loads what is left,
/// then returns. With `cuts`, the epoch coordinator decides when to seal
/// (and the last cut ends the run); without, the decoder seals every
/// `epoch` on its own.
pub async fn run(
    cfg: RunnerConfig,
    sinks: Sinks,
    enrich: Option<Arc<Enrichment>>,
    mut rx: mpsc::Receiver<RawMessage>,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<Stats>,
    mut cuts: Option<mpsc::Receiver<Cut>>,
) -> std::io::Result<()> {
    let Sinks { loader, archive } = sinks;
    let template = TopicTemplate::parse(&cfg.decode.topic_template).map_err(std::io::Error::other)?;
    let catalog = Arc::new(RwLock::new(MetricCatalog::new(cfg.max_metrics)));
    let dead = Arc::new(Mutex::new(DeadLetterWriter::open(&cfg.dead_letter_dir, 64 << 20, 100)?));
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
        shard_tasks.push(tokio::spawn(shard(ctx, srx)));
    }

    let mut tick = tokio::time::interval(cfg.epoch);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut dec = Decoder {
        cfg: &cfg,
        template: &template,
        catalog: &catalog,
        dead: &dead,
        enrich: enrich.as_deref(),
        stats: &stats,
        decoded: Decoded::default(),
        event_to_received: Local::default(),
        positions: Positions::new(),
        archive: archive.is_some(),
    };
    // Samples routed but not yet handed to their shard; empty between
    // branches, so a seal always follows exactly the samples before it.
    let mut per_shard: Vec<Vec<Routed>> = (0..cfg.shards).map(|_| Vec::new()).collect();
    let seal = |shard_tx: &Vec<mpsc::Sender<ShardMsg>>| {
        let txs = shard_tx.clone();
        async move {
            for t in &txs {
                let _ = t.send(ShardMsg::Seal(None)).await;
            }
        }
    };
    let coordinated = cuts.is_some();
    let mut source_open = true;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed(), if !coordinated => break,
            cut = recv_cut(&mut cuts) => {
                let Some(cut) = cut else { break };
                let last = cut.last;
                if cut.last {
                    // Everything the source handed over belongs to the last epoch.
                    rx.close();
                    while let Some(m) = rx.recv().await {
                        dec.take(m, &mut per_shard);
                    }
                } else if cut.drain {
                    while let Ok(m) = rx.try_recv() {
                        dec.take(m, &mut per_shard);
                    }
                }
                hand_off(&mut per_shard, &shard_tx).await?;
                if let Ok(mut d) = dead.lock() { let _ = d.flush(false); }
                let mut replies = Vec::with_capacity(shard_tx.len());
                for t in &shard_tx {
                    let (done_tx, done_rx) = oneshot::channel();
                    if t.send(ShardMsg::Seal(Some((cut.epoch, done_tx)))).await.is_err() {
                        return Err(std::io::Error::other("a shard stopped"));
                    }
                    replies.push(done_rx);
                }
                let positions = if cut.reset_positions { std::mem::take(&mut dec.positions) } else { dec.positions.clone() };
                let _ = cut.reply.send(CutReply { positions, shards: replies });
                stats.epochs.fetch_add(1, Ordering::Relaxed);
                stats.merge(Stage::EventToReceived, &mut dec.event_to_received);
                *stats.queue_depth.lock() = shard_tx.iter().map(|t| (t.max_capacity() - t.capacity()) as u64).collect();
                if last {
                    break;
                }
            }
            _ = tick.tick() => {
                if let Some(e) = &enrich && let Err(err) = e.reload_if_changed() {
                    tracing::error!(error = %err, "Vehicle file reload failed; keeping the previous snapshot.");
                }
                if coordinated {
                    continue;
                }
                if let Ok(mut d) = dead.lock() { let _ = d.flush(false); }
                seal(&shard_tx).await;
                stats.epochs.fetch_add(1, Ordering::Relaxed);
                stats.merge(Stage::EventToReceived, &mut dec.event_to_received);
                *stats.queue_depth.lock() = shard_tx.iter().map(|t| (t.max_capacity() - t.capacity()) as u64).collect();
            }
            msg = rx.recv(), if source_open => {
                let Some(m) = msg else {
                    // Coordinated: the source is gone, but the last cut
                    // still seals what was taken.
                    if coordinated {
                        source_open = false;
                        continue;
                    }
                    break;
                };
                dec.take(m, &mut per_shard);
                // Take what is already waiting too (try_recv never waits, so
                // a quiet stream gains no latency): a burst of small
                // messages costs one channel send per shard, not one each.
                for _ in 1..MAX_MESSAGES_PER_HANDOFF {
                    match rx.try_recv() {
                        Ok(m) => dec.take(m, &mut per_shard),
                        Err(_) => break,
                    }
                }
                hand_off(&mut per_shard, &shard_tx).await?;
            }
        }
    }
    // Drain. What is still queued in the source channel was handed over,
    // and the source has acknowledged it to the broker: it must be loaded,
    // not dropped. Close the channel (the source stops sending) and take
    // everything in it, then one last seal so everything received is loaded.
    // (Coordinated: the last cut did this, and positions not decided are
    // simply read again.)
    if !coordinated {
        rx.close();
        while let Some(m) = rx.recv().await {
            dec.take(m, &mut per_shard);
        }
        hand_off(&mut per_shard, &shard_tx).await?;
        seal(&shard_tx).await;
    }
    stats.merge(Stage::EventToReceived, &mut dec.event_to_received);
    drop(shard_tx);
    for t in shard_tasks {
        let _ = t.await;
    }
    if let Ok(mut d) = dead.lock() {
        d.flush(true)?;
    }
    Ok(())
}

/// The next cut, or never when the decoder seals on its own.
async fn recv_cut(cuts: &mut Option<mpsc::Receiver<Cut>>) -> Option<Cut> {
    match cuts {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

/// Sends each shard its routed samples (one batch per shard) and leaves
/// `per_shard` empty.
async fn hand_off(per_shard: &mut [Vec<Routed>], shard_tx: &[mpsc::Sender<ShardMsg>]) -> std::io::Result<()> {
    let now = Instant::now();
    for (batch, tx) in per_shard.iter_mut().zip(shard_tx) {
        if !batch.is_empty() && tx.send(ShardMsg::Samples(std::mem::take(batch), now)).await.is_err() {
            return Err(std::io::Error::other("a shard stopped"));
        }
    }
    Ok(())
}

/// Messages the decoder takes from the source channel before handing the
/// routed samples to the shards.
const MAX_MESSAGES_PER_HANDOFF: usize = 256;

/// The decoder's state: decode, dead-letter what is refused, enrich, route.
struct Decoder<'a> {
    cfg: &'a RunnerConfig,
    template: &'a TopicTemplate,
    catalog: &'a RwLock<MetricCatalog>,
    dead: &'a Mutex<DeadLetterWriter>,
    enrich: Option<&'a Enrichment>,
    stats: &'a Stats,
    /// Reused for every message.
    decoded: Decoded,
    /// Event time → received, merged into the stats once per epoch.
    event_to_received: Local,
    /// Position after the last message taken, per (stream, partition).
    positions: Positions,
    /// Samples carry their source position for the archive.
    archive: bool,
}

impl Decoder<'_> {
    /// Decodes one message and routes its samples into `per_shard`.
    fn take(&mut self, m: RawMessage, per_shard: &mut [Vec<Routed>]) {
        let (cfg, stats) = (self.cfg, self.stats);
        stats.messages.fetch_add(1, Ordering::Relaxed);
        if let Some((stream, partition, offset)) = &m.position {
            self.positions.insert((stream.clone(), *partition), offset + 1);
        }
        self.decoded.clear();
        {
            let mut cat = self.catalog.write().unwrap_or_else(|p| p.into_inner());
            let narrow_topic = matches!(cfg.form, Form::Narrow)
                || (cfg.form == Form::Auto && self.template.captures(&m.topic).is_some());
            if narrow_topic {
                narrow::decode(
                    &m.topic,
                    &m.payload,
                    m.received_ms,
                    &cfg.decode,
                    self.template,
                    &mut cat,
                    &mut self.decoded,
                );
            } else {
                wide::decode(&m.payload, m.received_ms, &cfg.decode, &mut cat, &mut self.decoded);
            }
        }
        // Only refused input (and the archive) needs the source text: build
        // it then.
        let source = || source_of(&m);
        if !self.decoded.rejects.is_empty() {
            stats.rejected.fetch_add(self.decoded.rejects.len() as u64, Ordering::Relaxed);
            let mut d = self.dead.lock().unwrap_or_else(|p| p.into_inner());
            for r in &self.decoded.rejects {
                let detail = match r.index {
                    Some(i) => format!("sample {i}: {}", r.detail),
                    None => r.detail.clone(),
                };
                let rec = DeadLetter {
                    at_ms: m.received_ms,
                    reason: r.reason.as_str(),
                    detail: &detail,
                    source: &source(),
                    payload: &m.payload,
                };
                if let Err(e) = d.write(&rec) {
                    tracing::error!(error = %e, "Cannot write a dead letter.");
                }
            }
        }
        let src = if self.archive && !self.decoded.samples.is_empty() { source() } else { CompactString::default() };
        let snap = self.enrich.map(|e| e.snapshot());
        for s in self.decoded.samples.drain(..) {
            let dims = snap.as_ref().and_then(|sn| sn.row(&s.vin));
            if dims.is_none() && snap.is_some() && cfg.unknown_vehicle == UnknownVehicle::DeadLetter {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                let mut d = self.dead.lock().unwrap_or_else(|p| p.into_inner());
                let detail = format!("vin {} is not in the vehicle file", s.vin);
                let rec = DeadLetter {
                    at_ms: m.received_ms,
                    reason: "unknown_vehicle",
                    detail: &detail,
                    source: &source(),
                    payload: &m.payload,
                };
                if let Err(e) = d.write(&rec) {
                    tracing::error!(error = %e, "Cannot write a dead letter.");
                }
                continue;
            }
            stats.samples.fetch_add(1, Ordering::Relaxed);
            stats.readings.fetch_add(s.readings.len() as u64, Ordering::Relaxed);
            self.event_to_received.record_ms(m.received_ms - s.ts_ms, s.readings.len() as u64);
            let key = match (&m.key, cfg.route_by_key) {
                (Some(k), true) => k.as_ref(),
                _ => s.vin.as_bytes(),
            };
            let k = shard_of(key, cfg.buckets, cfg.shards) as usize;
            per_shard[k].push((s, dims, m.received_ms, src.clone()));
        }
    }
}

/// Where a message came from: `kafka:topic/partition@offset` or `mqtt:topic`.
fn source_of(m: &RawMessage) -> CompactString {
    match &m.position {
        Some((s, _, o)) if &**s == crate::wal::STREAM => {
            compact_str::format_compact!("mqtt:{}@wal:{}", m.topic, o + 1)
        }
        Some((s, p, o)) => compact_str::format_compact!("kafka:{s}/{p}@{o}"),
        None => compact_str::format_compact!("mqtt:{}", m.topic),
    }
}

struct ShardCtx {
    k: u32,
    cfg: RunnerConfig,
    catalog: Arc<RwLock<MetricCatalog>>,
    dead: Arc<Mutex<DeadLetterWriter>>,
    loader: Arc<StreamLoader>,
    headers: HeaderMap,
    stats: Arc<Stats>,
    archive: Option<Arc<Archive>>,
}

/// A shard's state between flushes.
struct ShardState {
    agg: WindowAggregator,
    /// Dims tuples of this batch, interned: the key carries their index.
    dims: Vec<Option<DimRow>>,
    /// Keyed by the snapshot row's address (`None` for unknown vehicles):
    /// rows are shared `Arc`s kept alive in `dims`, so equal rows of one
    /// snapshot share a key without hashing their strings per sample.
    dims_index: HashMap<Option<usize>, u32>,
    /// (receive time, event time, readings) of this batch's samples, for
    /// the committed-latency histograms once its load succeeds.
    received: Vec<(i64, i64, u32)>,
    /// This shard's histograms, merged into [`Stats`] once per load.
    received_to_committed: Local,
    event_to_committed: Local,
    queue_wait: Local,
    /// Last flush time (ms) and flushes within it, for label sequences.
    last_ms: u64,
    n: u64,
    /// Latest values per vehicle for the latest table.
    latest: Option<LatestTracker>,
    /// Exactly-once: bodies encoded for the open epoch (a shard that holds
    /// `max_rows_per_load` rows encodes them early; all are loaded into the
    /// epoch's one transaction at the seal).
    chunks: Vec<Chunk>,
    chunk_rows: u64,
    /// Raw samples since the last seal, for the archive.
    raw: Vec<ArchiveSample>,
    /// Readings refused as too late since the last seal (archived, not
    /// aggregated).
    too_late: u64,
}

async fn shard(ctx: ShardCtx, mut rx: mpsc::Receiver<ShardMsg>) {
    let mut st = ShardState {
        agg: WindowAggregator::new(ctx.cfg.window),
        dims: Vec::new(),
        dims_index: HashMap::new(),
        received: Vec::new(),
        received_to_committed: Local::default(),
        event_to_committed: Local::default(),
        queue_wait: Local::default(),
        last_ms: 0,
        n: 0,
        latest: ctx.cfg.latest.as_ref().map(|(_, m)| LatestTracker::new(m)),
        chunks: Vec::new(),
        chunk_rows: 0,
        raw: Vec::new(),
        too_late: 0,
    };
    let archive = ctx.archive.is_some();
    let exactly_once = ctx.cfg.delivery == Delivery::ExactlyOnce;
    while let Some(msg) = rx.recv().await {
        match msg {
            ShardMsg::Samples(batch, handed_over) => {
                st.queue_wait.0.saturating_record_n(handed_over.elapsed().as_micros() as u64, batch.len() as u64);
                if let Some(l) = st.latest.as_mut() {
                    let cat = ctx.catalog.read().unwrap_or_else(|p| p.into_inner());
                    l.bind(|id| (id.0 < cat.len() as u32).then(|| cat.name(id).to_string()), cat.len());
                }
                for (s, row, rx_ms, src) in batch {
                    let key = row.as_ref().map(|r| Arc::as_ptr(r) as *const () as usize);
                    let dims = &mut st.dims;
                    let d = *st.dims_index.entry(key).or_insert_with(|| {
                        dims.push(row.clone());
                        (dims.len() - 1) as u32
                    });
                    match st.agg.add(&s, d) {
                        Added::Folded(_) => {
                            st.received.push((rx_ms, s.ts_ms, s.readings.len() as u32));
                            if let Some(l) = st.latest.as_mut() {
                                l.add(&s);
                            }
                        }
                        Added::TooLate { watermark_ms } => {
                            st.too_late += s.readings.len() as u64;
                            ctx.stats.rejected.fetch_add(1, Ordering::Relaxed);
                            let detail = format!(
                                "vin {} event time {} is older than the lateness bound {}",
                                s.vin, s.ts_ms, watermark_ms
                            );
                            dead_letter(&ctx, "too_late", &detail, "pipeline", b"");
                        }
                    }
                    if archive {
                        st.raw.push(ArchiveSample { sample: s, dims: row, received_ms: rx_ms, source: src });
                    }
                }
                // Size limit: a batch never grows past max_rows_per_load.
                if st.agg.len() >= ctx.cfg.max_rows_per_load {
                    if exactly_once {
                        if let Some((c, rows)) = encode(&ctx, &mut st) {
                            st.chunks.push(c);
                            st.chunk_rows += rows;
                        }
                    } else {
                        flush(&ctx, &mut st).await;
                    }
                }
            }
            ShardMsg::Seal(None) => flush(&ctx, &mut st).await,
            ShardMsg::Seal(Some((epoch, reply))) if exactly_once => {
                let done = prepare_epoch(&ctx, &mut st, epoch).await;
                let _ = reply.send(done);
            }
            ShardMsg::Seal(Some((_, reply))) => {
                flush(&ctx, &mut st).await;
                let _ = reply.send(ShardDone::default());
            }
        }
    }
}

/// Exactly-once seal: one transaction per table with rows, prepared under
/// `{prefix}-{table}-{shard}-{epoch}`; the coordinator decides and commits.
async fn prepare_epoch(ctx: &ShardCtx, st: &mut ShardState, epoch: u64) -> ShardDone {
    ctx.stats.merge_queue_wait(ctx.k as usize, &mut st.queue_wait);
    let too_late = std::mem::take(&mut st.too_late);
    let spool = spool_raw(ctx, st, epoch);
    let mut done = prepare_txns(ctx, st, epoch).await;
    done.too_late = too_late;
    if let Some(rx) = spool {
        match rx.await {
            Ok(Ok(n)) => done.archived = n,
            Ok(Err(e)) => {
                done.error.get_or_insert(ShardError::Transient(format!("archive spool: {e}")));
            }
            Err(_) => {
                done.error.get_or_insert(ShardError::Transient("the archive spooler stopped".into()));
            }
        }
    }
    done
}

/// Hands the raw samples since the last seal to the archive spooler.
fn spool_raw(
    ctx: &ShardCtx,
    st: &mut ShardState,
    epoch: u64,
) -> Option<tokio::sync::oneshot::Receiver<Result<u64, String>>> {
    let a = ctx.archive.as_ref()?;
    if st.raw.is_empty() {
        return None;
    }
    Some(a.spool(ctx.k, epoch, std::mem::take(&mut st.raw), ctx.catalog.clone()))
}

/// The 2PC part of an exactly-once seal.
async fn prepare_txns(ctx: &ShardCtx, st: &mut ShardState, epoch: u64) -> ShardDone {
    let mut done = ShardDone { received: std::mem::take(&mut st.received), ..Default::default() };
    if let Some((c, rows)) = encode(ctx, st) {
        st.chunks.push(c);
        st.chunk_rows += rows;
    }
    let mut work = Vec::new();
    if !st.chunks.is_empty() {
        work.push((ctx.cfg.table.clone(), std::mem::take(&mut st.chunks), std::mem::take(&mut st.chunk_rows)));
    }
    if let (Some(tracker), Some((table, _))) = (st.latest.as_mut(), ctx.cfg.latest.as_ref())
        && !tracker.is_empty()
    {
        let mut headers = ctx.headers.clone();
        headers.insert("format", HeaderValue::from_static("csv"));
        if let Ok(v) = HeaderValue::from_str(&tracker.columns()) {
            headers.insert("columns", v);
        }
        let (body, rows) = tracker.drain();
        work.push((table.clone(), vec![Chunk { headers, body: Bytes::from(body) }], rows));
    }
    let txn = TxnLoader::new(&ctx.loader, ctx.cfg.timeouts);
    for (table, chunks, rows) in work {
        let l = match label(&ctx.cfg.label_prefix, &table, ctx.k, epoch) {
            Ok(l) => l,
            Err(e) => {
                done.error = Some(ShardError::Conflict(e));
                return done;
            }
        };
        let call = Instant::now();
        match txn.prepare(&table, &l, &chunks).await {
            Ok(()) => {
                ctx.stats.record_load_ms(Stage::LoadCall, call.elapsed().as_millis() as u64);
                done.txns.push(PreparedTxn { table, label: l, chunks, rows });
            }
            Err(TxnError::Permanent { reason, .. }) => {
                // StarRocks refuses these rows for good: they go to the
                // dead-letter directory whole, and the epoch goes on.
                let e = crate::sink::starrocks::service::LoadError::Permanent { label: l.clone(), reason };
                for c in &chunks {
                    keep_failed_batch(ctx, &l, &e, &c.body);
                }
            }
            Err(e @ TxnError::Conflict { .. }) => {
                done.error = Some(ShardError::Conflict(e.to_string()));
                return done;
            }
            Err(e @ TxnError::Exhausted { .. }) => {
                done.error = Some(ShardError::Transient(e.to_string()));
                return done;
            }
        }
    }
    done
}

/// Drains the aggregator into one CSV body (compressed as configured) and
/// its headers; `None` when the shard holds no rows.
fn encode(ctx: &ShardCtx, st: &mut ShardState) -> Option<(Chunk, u64)> {
    if st.agg.is_empty() {
        return None;
    }
    let mut csv = TelemetryCsv::default();
    let mut refused: Vec<String> = Vec::new();
    {
        let cat = ctx.catalog.read().unwrap_or_else(|p| p.into_inner());
        let ndims = ctx.cfg.dims.len();
        let dims = &st.dims;
        st.agg.drain(|g| {
            let values: Vec<Option<&str>> = match dims.get(g.dims as usize).and_then(|d| d.as_ref()) {
                Some(r) => r.iter().map(|v| v.as_deref()).collect(),
                None => vec![None; ndims],
            };
            if let Err(e) = csv.push_group(&g, &values, |m| cat.name(m)) {
                refused.push(format!("vin {} window {}: {e}", g.vin, g.window_start_ms));
            }
        });
    }
    // Rows the CSV cannot carry (a separator or `\N` in a text field) are
    // kept as dead letters, never dropped silently.
    for detail in refused {
        ctx.stats.rejected.fetch_add(1, Ordering::Relaxed);
        dead_letter(ctx, "unsafe_field", &detail, "pipeline", b"");
    }
    st.dims.clear();
    st.dims_index.clear();
    let rows = csv.rows;
    // The label is bound to these exact bytes: compress once, and should
    // compression ever fail, send the plain CSV rather than drop the batch.
    let mut headers = ctx.headers.clone();
    let body = match ctx.cfg.compression {
        Compression::None => Bytes::from(csv.buf),
        c => match c.apply(&csv.buf) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::error!(error = %e, "Compressing a body failed; sending it uncompressed.");
                headers.insert("format", HeaderValue::from_static("csv"));
                Bytes::from(csv.buf)
            }
        },
    };
    Some((Chunk { headers, body }, rows))
}

/// Encodes and loads what the shard holds, under a fresh label, and (with
/// an archive) spools its raw samples under the same sequence.
async fn flush(ctx: &ShardCtx, st: &mut ShardState) {
    let seq = next_seq(st);
    let aggregated: u64 = st.received.iter().map(|r| r.2 as u64).sum();
    let too_late = std::mem::take(&mut st.too_late);
    let spool = spool_raw(ctx, st, seq);
    load_batch(ctx, st, seq).await;
    let Some(rx) = spool else { return };
    match rx.await {
        Ok(Ok(archived)) => {
            ctx.stats.reconcile(Reconciliation { epoch: seq, shard: Some(ctx.k), aggregated, too_late, archived })
        }
        Ok(Err(e)) => {
            ctx.stats.archive_spool_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(shard = ctx.k, seq, error = %e, "Archive spooling failed; these raw readings are not archived.");
        }
        Err(_) => {
            ctx.stats.archive_spool_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(shard = ctx.k, seq, "The archive spooler stopped; these raw readings are not archived.");
        }
    }
}

/// The next label sequence of this shard.
fn next_seq(st: &mut ShardState) -> u64 {
    // Label sequence: flush time (ms) * 100 + a per-shard counter. Unique
    // within the process, and a restarted process flushes at later
    // milliseconds, so a fresh batch never meets an old label (which
    // StarRocks would answer with "Label Already Exists" — and the data
    // would be dropped as already loaded).
    let ms = (now_ms().max(0) as u64).max(st.last_ms);
    st.n = if ms == st.last_ms { st.n + 1 } else { 0 };
    st.last_ms = ms;
    ms * 100 + st.n % 100
}

async fn load_batch(ctx: &ShardCtx, st: &mut ShardState, seq: u64) {
    let Some((Chunk { headers, body }, rows)) = encode(ctx, st) else {
        st.received.clear();
        load_latest(ctx, st, seq).await;
        return;
    };
    let l = match label(&ctx.cfg.label_prefix, &ctx.cfg.table, ctx.k, seq) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "Cannot build a label.");
            return;
        }
    };
    let call = Instant::now();
    match ctx.loader.load(&ctx.cfg.table, &l, &headers, body.clone()).await {
        Ok(r) => {
            let done = now_ms();
            let mut committed = 0u64;
            for (rx, ts, n) in st.received.drain(..) {
                st.received_to_committed.record_ms(done - rx, n as u64);
                st.event_to_committed.record_ms(done - ts, n as u64);
                committed += n as u64;
            }
            let stats = &ctx.stats;
            stats.merge(Stage::ReceivedToCommitted, &mut st.received_to_committed);
            stats.merge(Stage::EventToCommitted, &mut st.event_to_committed);
            stats.merge_queue_wait(ctx.k as usize, &mut st.queue_wait);
            record_load(stats, call, &r);
            stats.readings_committed.fetch_add(committed, Ordering::Relaxed);
            ctx.stats.loads.fetch_add(1, Ordering::Relaxed);
            ctx.stats.rows_loaded.fetch_add(rows, Ordering::Relaxed);
            tracing::debug!(shard = ctx.k, label = %l, rows, attempts = r.attempts, "Stream load committed.");
        }
        Err(e) => {
            st.received.clear();
            keep_failed_batch(ctx, &l, &e, &body);
        }
    }
    load_latest(ctx, st, seq).await;
}

/// Loads the batch's latest values per vehicle into the latest table.
async fn load_latest(ctx: &ShardCtx, st: &mut ShardState, seq: u64) {
    let (Some(tracker), Some((table, _))) = (st.latest.as_mut(), ctx.cfg.latest.as_ref()) else { return };
    if tracker.is_empty() {
        return;
    }
    let columns = tracker.columns();
    let (body, rows) = tracker.drain();
    let mut h = ctx.headers.clone();
    h.insert("format", HeaderValue::from_static("csv"));
    if let Ok(v) = HeaderValue::from_str(&columns) {
        h.insert("columns", v);
    }
    let l = match label(&ctx.cfg.label_prefix, table, ctx.k, seq) {
        Ok(l) => l,
        Err(e) => return tracing::error!(error = %e, "Cannot build a label."),
    };
    let call = Instant::now();
    match ctx.loader.load(table, &l, &h, Bytes::from(body.clone())).await {
        Ok(r) => {
            record_load(&ctx.stats, call, &r);
            ctx.stats.loads.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(shard = ctx.k, label = %l, rows, "Latest values loaded.");
        }
        Err(e) => keep_failed_batch(ctx, &l, &e, &body),
    }
}

/// Records a successful load's client-side time and the phases StarRocks
/// reported (one lock per load, never per reading).
fn record_load(stats: &Stats, call: Instant, r: &crate::sink::starrocks::service::LoadReport) {
    stats.record_load_ms(Stage::LoadCall, call.elapsed().as_millis() as u64);
    // A label an earlier attempt already loaded has no phases to report.
    if r.already_loaded {
        return;
    }
    let p = &r.reply;
    for (stage, ms) in [
        (Stage::LoadBeginTxn, p.begin_txn_ms),
        (Stage::LoadPlan, p.plan_ms),
        (Stage::LoadReadData, p.read_data_ms),
        (Stage::LoadWriteData, p.write_data_ms),
        (Stage::LoadCommitPublish, p.commit_publish_ms),
        (Stage::LoadTotal, p.load_time_ms),
    ] {
        stats.record_load_ms(stage, ms);
    }
}

/// A batch StarRocks refused for good: counted, logged, and written whole to
/// the dead-letter directory (synced) so no reading is dropped.
fn keep_failed_batch(ctx: &ShardCtx, label: &str, e: &crate::sink::starrocks::service::LoadError, body: &[u8]) {
    ctx.stats.loads_failed.fetch_add(1, Ordering::Relaxed);
    tracing::error!(shard = ctx.k, label, error = %e, "Stream load failed; the batch goes to the dead-letter directory.");
    let mut w = ctx.dead.lock().unwrap_or_else(|p| p.into_inner());
    let rec =
        DeadLetter { at_ms: now_ms(), reason: "load_failed", detail: &e.to_string(), source: label, payload: body };
    if let Err(io) = w.write(&rec).and_then(|_| w.flush(true)) {
        tracing::error!(label, error = %io, "Writing the failed batch to the dead-letter directory failed.");
    }
}

/// Writes one dead letter from a shard; a write failure is logged loudly.
fn dead_letter(ctx: &ShardCtx, reason: &str, detail: &str, source: &str, payload: &[u8]) {
    let mut w = ctx.dead.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = w.write(&DeadLetter { at_ms: now_ms(), reason, detail, source, payload }) {
        tracing::error!(error = %e, reason, "Cannot write a dead letter.");
    }
}
