//! The shard stage: one task per shard owns its aggregator, its latest
//! values and its raw rows outright (no locks on the hot path). It folds the
//! samples the decoder routes to it, and on the coordinator's seal of epoch
//! e loads what it holds under `{prefix}-{table}-{shard}-{e}`, one label per
//! table:
//! - **exactly-once**: begin → load → prepare on the 2PC interface; the
//!   coordinator decides and commits;
//! - **at-least-once** (StarRocks without the transaction API): a plain
//!   Stream Load per body (a body encoded early, at `max_rows_per_load`,
//!   gets the label with `_{n}` appended), before the decision.
//!
//! What a failure does:
//! - rows StarRocks refuses for what they hold (`too many filtered rows`):
//!   the body goes to the dead-letter directory as CSV with its table,
//!   label and column list, replayable with `rockfeed deadletter replay`;
//!   the epoch goes on;
//! - the destination refusing rockfeed (credentials, schema, a refused
//!   request): waited out here, retrying the same label (throttled
//!   back-off), never dead-lettered; the source holds the data meanwhile;
//! - transient failures past `max_attempts`: the epoch is abandoned (the
//!   pipeline restarts from the decided positions);
//! - a label another writer owns: stop.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use http::{HeaderMap, HeaderValue};
use tokio::sync::{mpsc, oneshot};

use super::budget::BodyBudget;
use super::decoder::Routed;
use super::epoch::{PreparedTxn, ShardDone, ShardError};
use super::latest::LatestTracker;
use super::runner::RunnerConfig;
use super::window::{Added, WindowAggregator};
use crate::archive::{Archive, ArchiveSample};
use crate::deadletter::{DeadLetter, DeadLetterWriter, LoadMeta};
use crate::decode::catalog::MetricCatalog;
use crate::enrich::DimRow;
use crate::model::Delivery;
use crate::reject::RejectReason;
use crate::sink::starrocks::encode::{Compression, TelemetryCsv};
use crate::sink::starrocks::label::label;
use crate::sink::starrocks::retry::Backoff;
use crate::sink::starrocks::service::{LoadError, LoadReport, StreamLoader};
use crate::sink::starrocks::txn::{Chunk, TxnError, TxnLoader};
use crate::telemetry::{Local, Stage, Stats};
use crate::util::now_ms;

pub(crate) enum ShardMsg {
    /// Samples, and when the decoder handed them over (for the shard's
    /// queue-wait histogram).
    Samples(Vec<Routed>, Instant),
    /// Load what the shard holds for the coordinator's epoch; answer once
    /// prepared (or loaded).
    Seal(u64, oneshot::Sender<ShardDone>),
    /// Drop everything held (an epoch rolled back on a revoke); the
    /// lateness watermark stays.
    Discard(oneshot::Sender<()>),
}

/// What a shard shares with the rest of the pipeline.
pub(crate) struct ShardCtx {
    pub k: u32,
    pub cfg: RunnerConfig,
    pub catalog: Arc<RwLock<MetricCatalog>>,
    pub dead: Arc<Mutex<DeadLetterWriter>>,
    pub loader: Arc<StreamLoader>,
    /// The telemetry table's format headers (separator, columns, format).
    pub headers: HeaderMap,
    pub stats: Arc<Stats>,
    pub archive: Option<Arc<Archive>>,
}

/// A shard's state within an epoch.
struct ShardState {
    agg: WindowAggregator,
    /// Dims tuples of this epoch, interned: the key carries their index.
    dims: Vec<Option<DimRow>>,
    /// Keyed by the snapshot row's address (`None` for unknown vehicles):
    /// rows are shared `Arc`s kept alive in `dims`, so equal rows of one
    /// snapshot share a key without hashing their strings per sample.
    dims_index: HashMap<Option<usize>, u32>,
    /// (receive time, event time, readings) of this epoch's samples, for
    /// the committed-latency histograms once the epoch commits.
    received: Vec<crate::model::Received>,
    queue_wait: Local,
    /// Latest values per vehicle for the latest table.
    latest: Option<LatestTracker>,
    /// Bodies encoded early in this epoch (at `max_rows_per_load` rows),
    /// with their row counts; the seal loads them with the rest.
    chunks: Vec<(Chunk, u64)>,
    /// Raw samples of this epoch, for the archive, and their estimated
    /// bytes (counted in the body budget until spooled).
    raw: Vec<ArchiveSample>,
    raw_bytes: RawHeld,
    /// Raw samples of this epoch spilled to the spool mid-epoch, with
    /// their bytes (let go once written); the seal waits for every one.
    spills: Vec<(oneshot::Receiver<Result<u64, String>>, RawHeld)>,
    /// Readings spilled this epoch (written).
    spilled: u64,
    /// A spill failed: the epoch cannot be archived whole.
    spill_error: Option<String>,
    /// Readings refused as too late this epoch (archived, not aggregated).
    too_late: u64,
}

impl ShardState {
    /// Empty, with the lateness watermark at `newest_ms` (`i64::MIN`: none).
    fn new(ctx: &ShardCtx, newest_ms: i64) -> ShardState {
        let mut agg = WindowAggregator::new(ctx.cfg.window);
        agg.seed(newest_ms);
        ShardState {
            agg,
            dims: Vec::new(),
            dims_index: HashMap::new(),
            received: Vec::new(),
            queue_wait: Local::default(),
            latest: ctx.cfg.latest.as_ref().map(|(_, m)| LatestTracker::new(m)),
            chunks: Vec::new(),
            raw: Vec::new(),
            raw_bytes: RawHeld(ctx.stats.clone(), 0),
            spills: Vec::new(),
            spilled: 0,
            spill_error: None,
            too_late: 0,
        }
    }
}

pub(crate) async fn run(ctx: ShardCtx, mut rx: mpsc::Receiver<ShardMsg>) {
    // A rebuild starts from the watermark its decision recorded.
    let seed = ctx.cfg.rebuild.as_ref().and_then(|r| r.watermarks.get(ctx.k as usize).copied());
    let mut st = ShardState::new(&ctx, seed.unwrap_or(i64::MIN));
    while let Some(msg) = rx.recv().await {
        match msg {
            ShardMsg::Samples(batch, handed_over) => {
                fold(&ctx, &mut st, batch, handed_over);
                // Backpressure: a shard never has more than a few spills
                // on their way to disk (the spooler converts them more
                // slowly than the source can deliver).
                while st.spills.len() > MAX_SPILLS_IN_FLIGHT {
                    let (rx, held) = st.spills.remove(0);
                    let r = rx.await.unwrap_or_else(|_| Err("the archive spooler stopped".into()));
                    drop(held);
                    settle_spill(&mut st, r);
                }
            }
            ShardMsg::Seal(epoch, reply) => {
                let done = seal(&ctx, &mut st, epoch).await;
                let _ = reply.send(done);
            }
            ShardMsg::Discard(reply) => {
                let fresh = ShardState::new(&ctx, st.agg.newest_ms());
                let queue_wait = std::mem::take(&mut st.queue_wait);
                st = ShardState { queue_wait, ..fresh };
                let _ = reply.send(());
            }
        }
    }
}

/// Folds a batch into the aggregator (and the latest values and raw rows).
fn fold(ctx: &ShardCtx, st: &mut ShardState, batch: Vec<Routed>, handed_over: Instant) {
    st.queue_wait.0.saturating_record_n(handed_over.elapsed().as_micros() as u64, batch.len() as u64);
    if let Some(l) = st.latest.as_mut() {
        let cat = ctx.catalog.read().unwrap_or_else(|p| p.into_inner());
        l.bind(|id| (id.0 < cat.len() as u32).then(|| cat.name(id).to_string()), cat.len());
    }
    let mut raw_held = 0;
    for Routed { sample: s, dims: row, received_ms, source } in batch {
        let key = row.as_ref().map(|r| Arc::as_ptr(r) as *const () as usize);
        let dims = &mut st.dims;
        let d = *st.dims_index.entry(key).or_insert_with(|| {
            dims.push(row.clone());
            (dims.len() - 1) as u32
        });
        match st.agg.add(&s, d) {
            Added::Folded(_) => {
                st.received.push(crate::model::Received {
                    received_ms,
                    event_ms: s.ts_ms,
                    readings: s.readings.len() as u32,
                });
                if let Some(l) = st.latest.as_mut() {
                    l.add(&s);
                }
            }
            Added::TooLate { watermark_ms } => {
                st.too_late += s.readings.len() as u64;
                let detail =
                    format!("vin {} event time {} is older than the lateness bound {}", s.vin, s.ts_ms, watermark_ms);
                refuse(ctx, RejectReason::TooLate, 1, s.readings.len() as u64, &detail);
            }
        }
        if ctx.archive.is_some() {
            raw_held += raw_size(&s, &source);
            st.raw.push(ArchiveSample { sample: s, dims: row, received_ms, source });
        }
    }
    if raw_held > 0 {
        ctx.stats.bodies.hold(raw_held);
        st.raw_bytes.1 += raw_held;
    }
    if let Some(a) = &ctx.archive {
        settle_spills(st, false);
        if st.raw_bytes.1 >= a.spill_bytes() {
            let held = std::mem::replace(&mut st.raw_bytes, RawHeld(ctx.stats.clone(), 0));
            st.spills.push((a.spill(ctx.k, std::mem::take(&mut st.raw), ctx.catalog.clone()), held));
        }
    }
    // Size limit: a body never grows past max_rows_per_load.
    if st.agg.len() >= ctx.cfg.max_rows_per_load
        && let Some(c) = encode(ctx, st)
    {
        st.chunks.push(c);
    }
}

/// Seals epoch `epoch`: spools the raw rows, loads every table's rows under
/// the epoch's labels (module doc).
async fn seal(ctx: &ShardCtx, st: &mut ShardState, epoch: u64) -> ShardDone {
    ctx.stats.merge_queue_wait(ctx.k as usize, &mut st.queue_wait);
    let too_late = std::mem::take(&mut st.too_late);
    let spool = spool_raw(ctx, st, epoch);
    let raw_bytes = std::mem::replace(&mut st.raw_bytes, RawHeld(ctx.stats.clone(), 0));
    let mut done = ShardDone {
        received: std::mem::take(&mut st.received),
        too_late,
        watermark_ms: st.agg.newest_ms(),
        ..Default::default()
    };
    if let Some(c) = encode(ctx, st) {
        st.chunks.push(c);
    }
    let mut work = Vec::new();
    if !st.chunks.is_empty() {
        work.push((ctx.cfg.table.clone(), std::mem::take(&mut st.chunks)));
    }
    if let (Some(tracker), Some((table, _))) = (st.latest.as_mut(), ctx.cfg.latest.as_ref())
        && !tracker.is_empty()
    {
        let headers = crate::sink::starrocks::encode::LatestCsv::headers(&ctx.headers);
        let (body, rows) = tracker.drain();
        work.push((table.clone(), vec![(Chunk { headers, body: BodyBudget::body(&ctx.stats, body) }, rows)]));
    }
    for (table, chunks) in work {
        let l = match label(&ctx.cfg.label_prefix, &table, ctx.k, epoch) {
            Ok(l) => l,
            Err(e) => {
                done.error = Some(ShardError::Conflict(e));
                break;
            }
        };
        // A rebuild prepares only the labels StarRocks lost.
        if ctx.cfg.rebuild.as_ref().is_some_and(|r| !r.labels.contains(&l)) {
            continue;
        }
        let r = match ctx.cfg.delivery {
            Delivery::ExactlyOnce => prepare(ctx, &table, &l, chunks).await.map(|t| done.txns.extend(t)),
            Delivery::AtLeastOnce => load(ctx, &table, &l, chunks).await,
        };
        if let Err(e) = r {
            done.error = Some(e);
            break;
        }
    }
    if let Some(rx) = spool {
        let spooled = rx.await;
        drop(raw_bytes);
        match spooled {
            Ok(Ok(n)) => done.archived = n,
            Ok(Err(e)) => {
                done.error.get_or_insert(ShardError::Transient(format!("archive spool: {e}")));
            }
            Err(_) => {
                done.error.get_or_insert(ShardError::Transient("the archive spooler stopped".into()));
            }
        }
    }
    // The spills went before the seal on the same spooler: all answered.
    settle_spills(st, true);
    done.archived += std::mem::take(&mut st.spilled);
    if let Some(e) = st.spill_error.take() {
        done.error.get_or_insert(ShardError::Transient(format!("archive spill: {e}")));
    }
    done
}

/// Spills a shard may have on their way to the spool before it waits.
const MAX_SPILLS_IN_FLIGHT: usize = 2;

/// Collects the answers of this epoch's spills (`all`: every one, else
/// those in), letting go of their bytes.
fn settle_spills(st: &mut ShardState, all: bool) {
    let mut answers = Vec::new();
    st.spills.retain_mut(|(rx, _)| {
        answers.push(match rx.try_recv() {
            Ok(r) => r,
            Err(oneshot::error::TryRecvError::Empty) if !all => return true,
            Err(oneshot::error::TryRecvError::Empty) => Err("a spill was not answered before its seal".into()),
            Err(oneshot::error::TryRecvError::Closed) => Err("the archive spooler stopped".into()),
        });
        false
    });
    for r in answers {
        settle_spill(st, r);
    }
}

fn settle_spill(st: &mut ShardState, r: Result<u64, String>) {
    match r {
        Ok(n) => st.spilled += n,
        Err(e) => {
            st.spill_error.get_or_insert(e);
        }
    }
}

/// Bytes of raw samples counted in the body budget, let go when dropped
/// (spooled, discarded, or the shard gone with a pipeline restart).
struct RawHeld(Arc<crate::telemetry::Stats>, u64);

impl Drop for RawHeld {
    fn drop(&mut self) {
        self.0.bodies.let_go(self.1);
    }
}

/// The memory a raw sample holds for the archive, estimated.
fn raw_size(s: &crate::decode::Sample, source: &compact_str::CompactString) -> u64 {
    (std::mem::size_of::<ArchiveSample>() + std::mem::size_of_val(&s.readings[..]) + s.vin.len() + source.len()) as u64
}

/// Hands the raw samples of the epoch to the archive spooler; their bytes
/// stay counted until it has written them (`seal` lets go).
fn spool_raw(ctx: &ShardCtx, st: &mut ShardState, epoch: u64) -> Option<oneshot::Receiver<Result<u64, String>>> {
    let a = ctx.archive.as_ref()?;
    // A spill of this epoch needs the seal (it numbers the spilled frames),
    // even with nothing left to spool.
    let spilled = !st.spills.is_empty() || st.spilled > 0 || st.spill_error.is_some();
    if st.raw.is_empty() && !spilled {
        return None;
    }
    Some(a.spool(ctx.k, epoch, std::mem::take(&mut st.raw), ctx.catalog.clone()))
}

/// Waits before retrying a label the destination refused (the health
/// episode logs why).
async fn wait_for_destination(ctx: &ShardCtx, attempt: u32) {
    tokio::time::sleep(ctx.loader.policy().delay(attempt, Backoff::Throttle)).await;
}

/// Exactly-once: one transaction for the table's bodies, prepared; `None`
/// when StarRocks refused the rows (dead-lettered).
async fn prepare(
    ctx: &ShardCtx,
    table: &str,
    l: &str,
    chunks: Vec<(Chunk, u64)>,
) -> Result<Option<PreparedTxn>, ShardError> {
    let (chunks, each): (Vec<Chunk>, Vec<u64>) = chunks.into_iter().unzip();
    let rows = each.iter().sum();
    let txn = TxnLoader::new(&ctx.loader, ctx.cfg.timeouts);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let call = Instant::now();
        match txn.prepare(table, l, &chunks).await {
            Ok(()) => {
                ctx.stats.record_load_ms(Stage::LoadCall, call.elapsed().as_millis() as u64);
                return Ok(Some(PreparedTxn { table: table.into(), label: l.into(), chunks, rows }));
            }
            Err(TxnError::Rejected { reason, .. }) => {
                for (c, &r) in chunks.iter().zip(&each) {
                    keep_rejected(ctx, table, l, &reason, c, r);
                }
                return Ok(None);
            }
            Err(TxnError::Destination { .. }) => wait_for_destination(ctx, attempt).await,
            Err(e @ TxnError::Conflict { .. }) => return Err(ShardError::Conflict(e.to_string())),
            Err(e @ TxnError::Exhausted { .. }) => return Err(ShardError::Transient(e.to_string())),
        }
    }
}

/// At-least-once: each body with plain Stream Load under the epoch's label
/// (`_{n}` appended from the second body on).
async fn load(ctx: &ShardCtx, table: &str, l: &str, chunks: Vec<(Chunk, u64)>) -> Result<(), ShardError> {
    for (n, (chunk, rows)) in chunks.into_iter().enumerate() {
        let label = if n == 0 { l.to_string() } else { format!("{l}_{n}") };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let call = Instant::now();
            match ctx.loader.load(table, &label, &chunk.headers, chunk.body.clone()).await {
                Ok(r) => {
                    record_load(&ctx.stats, call, &r);
                    ctx.stats.loads.fetch_add(1, Ordering::Relaxed);
                    ctx.stats.rows_loaded.fetch_add(rows, Ordering::Relaxed);
                    break;
                }
                Err(LoadError::Rejected { reason, .. }) => {
                    keep_rejected(ctx, table, &label, &reason, &chunk, rows);
                    break;
                }
                Err(LoadError::Destination { .. }) => wait_for_destination(ctx, attempt).await,
                Err(e @ LoadError::Exhausted { .. }) => return Err(ShardError::Transient(e.to_string())),
            }
        }
    }
    Ok(())
}

/// Drains the aggregator into one CSV body (compressed as configured) with
/// its headers and row count; `None` when the shard holds no rows.
fn encode(ctx: &ShardCtx, st: &mut ShardState) -> Option<(Chunk, u64)> {
    if st.agg.is_empty() {
        return None;
    }
    let mut csv = TelemetryCsv::default();
    // (detail, rows, readings) of groups the CSV cannot carry.
    let mut refused: Vec<(String, u64, u64)> = Vec::new();
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
                let readings = g.aggs.iter().map(|a| a.cnt).sum();
                refused.push((
                    format!("vin {} window {}: {e}", g.vin, g.window_start_ms),
                    g.metrics.len() as u64,
                    readings,
                ));
            }
        });
    }
    // Rows the CSV cannot carry (a separator or `\N` in a text field) are
    // kept as dead letters, never dropped silently.
    for (detail, rows, readings) in refused {
        refuse(ctx, RejectReason::UnsafeField, rows, readings, &detail);
    }
    st.dims.clear();
    st.dims_index.clear();
    let rows = csv.rows;
    // The label is bound to these exact bytes: compress once, and should
    // compression ever fail, send the plain CSV rather than drop the batch.
    let mut headers = ctx.headers.clone();
    let body = match ctx.cfg.compression {
        Compression::None => csv.buf,
        c => match c.apply(&csv.buf) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "Compressing a body failed; sending it uncompressed.");
                headers.insert("format", HeaderValue::from_static("csv"));
                csv.buf
            }
        },
    };
    // Counted against pipeline.max_epoch_bytes until the epoch lets it go.
    let body = BodyBudget::body(&ctx.stats, body);
    Some((Chunk { headers, body }, rows))
}

/// Records a plain load's client-side time and the phases StarRocks
/// reported (one lock per load, never per reading).
fn record_load(stats: &Stats, call: Instant, r: &LoadReport) {
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

/// A body StarRocks refused for its rows: counted, logged, and written to
/// the dead-letter directory as plain CSV with its table, label and column
/// list (synced), so `rockfeed deadletter replay` can send it again.
fn keep_rejected(ctx: &ShardCtx, table: &str, label: &str, reason: &str, chunk: &Chunk, rows: u64) {
    ctx.stats.loads_failed.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        shard = ctx.k,
        table,
        label,
        reason,
        "StarRocks refuses these rows; they go to the dead-letter directory (replay: rockfeed deadletter replay)."
    );
    let header = |k: &str| chunk.headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let csv = match Compression::undo(&header("format"), &chunk.body) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(label, error = %e, "Cannot decompress the refused body; keeping it as sent.");
            chunk.body.to_vec()
        }
    };
    let meta = LoadMeta {
        table: table.into(),
        label: label.into(),
        columns: header("columns"),
        column_separator: header("column_separator"),
    };
    let source = format!("starrocks:{table}/{label}");
    ctx.stats.rejected.add(RejectReason::LoadRejected, rows, 0);
    let rec = DeadLetter {
        at_ms: now_ms(),
        reason: RejectReason::LoadRejected.as_str(),
        detail: reason,
        source: &source,
        payload: &csv,
    };
    let mut w = ctx.dead.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(io) = w.write_load(&rec, &meta).and_then(|_| w.flush(true)) {
        tracing::error!(label, error = %io, "Writing the refused body to the dead-letter directory failed.");
    }
}

/// Counts a refusal made in a shard (`count` in the reason's unit, with
/// the readings it took out) and writes its dead letter; a write failure
/// is logged loudly.
fn refuse(ctx: &ShardCtx, reason: RejectReason, count: u64, readings: u64, detail: &str) {
    ctx.stats.rejected.add(reason, count, readings);
    let reason = reason.as_str();
    let mut w = ctx.dead.lock().unwrap_or_else(|p| p.into_inner());
    let d = DeadLetter { at_ms: now_ms(), reason, detail, source: "pipeline", payload: b"" };
    if let Err(e) = w.write(&d) {
        tracing::error!(error = %e, reason, "Cannot write a dead letter.");
    }
}
