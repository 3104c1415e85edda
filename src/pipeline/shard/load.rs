//! A shard's loads: bodies encoded from what it holds, loaded (plain
//! Stream Load) or prepared (2PC) under the epoch's labels, refused rows
//! kept as dead letters, and the destination waited out.

use std::sync::atomic::Ordering;
use std::time::Instant;

use http::HeaderValue;

use super::{ShardCtx, ShardState, refuse};
use crate::budget::BodyBudget;
use crate::deadletter::{DeadLetter, LoadMeta};
use crate::pipeline::epoch::{PreparedTxn, ShardError};
use crate::reject::RejectReason;
use crate::sink::starrocks::encode::{Compression, TelemetryCsv};
use crate::sink::starrocks::retry::Backoff;
use crate::sink::starrocks::service::{LoadError, LoadReport};
use crate::sink::starrocks::txn::{Chunk, TxnError, TxnLoader};
use crate::telemetry::{Stage, Stats};
use crate::util::now_ms;

/// Waits before retrying a label the destination refused (the health
/// episode logs why).
pub(super) async fn wait_for_destination(ctx: &ShardCtx, attempt: u32) {
    tokio::time::sleep(ctx.loader.policy().delay(attempt, Backoff::Throttle)).await;
}

/// Exactly-once: one transaction for the table's bodies, prepared; `None`
/// when StarRocks refused the rows (dead-lettered).
pub(super) async fn prepare(
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
pub(super) async fn load(ctx: &ShardCtx, table: &str, l: &str, chunks: Vec<(Chunk, u64)>) -> Result<(), ShardError> {
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
pub(super) fn encode(ctx: &ShardCtx, st: &mut ShardState) -> Option<(Chunk, u64)> {
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
    let body = BodyBudget::body(&ctx.stats.bodies, body);
    Some((Chunk { headers, body }, rows))
}

/// Records a plain load's client-side time and the phases StarRocks
/// reported (one lock per load, never per reading).
pub(super) fn record_load(stats: &Stats, call: Instant, r: &LoadReport) {
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
