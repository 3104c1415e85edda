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
//!
//! Files: this one holds the shard's state, its loop, the fold and the
//! seal; `load.rs` encoding, loading and preparing bodies (refused rows kept
//! as dead letters); `spill.rs` the raw samples' way to the archive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use http::HeaderMap;
use tokio::sync::{mpsc, oneshot};

use super::decoder::Routed;
use super::epoch::{ShardDone, ShardError};
use super::latest::LatestTracker;
use super::runner::RunnerConfig;
use super::window::{Added, WindowAggregator};
use crate::archive::{Archive, ArchiveSample};
use crate::budget::BodyBudget;
use crate::deadletter::{DeadLetter, DeadLetterWriter};
use crate::decode::catalog::MetricCatalog;
use crate::enrich::DimRow;
use crate::model::Delivery;
use crate::reject::RejectReason;
use crate::sink::starrocks::label::label;
use crate::sink::starrocks::service::StreamLoader;
use crate::sink::starrocks::txn::Chunk;
use crate::telemetry::{Local, Stats};
use crate::util::hash::FastHash;
use crate::util::now_ms;

mod load;
mod spill;

use load::{encode, load, prepare};
use spill::{MAX_SPILLS_IN_FLIGHT, RawHeld, raw_size, settle_spill, settle_spills, spool_raw};

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
    dims_index: HashMap<Option<usize>, u32, FastHash>,
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
            dims_index: HashMap::default(),
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
        work.push((table.clone(), vec![(Chunk { headers, body: BodyBudget::body(&ctx.stats.bodies, body) }, rows)]));
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
