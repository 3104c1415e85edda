//! The BE side of the transaction API: `/api/transaction/{begin, load,
//! prepare, commit, rollback}`. Replies carry the raw `TStatusCode` names;
//! a label's transaction context serves one request at a time (a second
//! one meanwhile gets `TXN_IN_PROCESSING`), and a commit runs the FE's
//! commit (`fe::fe_commit`) with the BE's context.

use std::time::Instant;

use http::StatusCode;
use hyper::body::Incoming;
use serde_json::{Value as J, json};

use super::{be_auth, body, check_write, hdr, header_fault, in_processing, keep_errors, ms, too_filtered};
use crate::starrocks_emulator::core::{BeCtx, Core};
use crate::starrocks_emulator::faults::{FaultKind, Point};
use crate::starrocks_emulator::fe::{commit_unknown_msg, fe_commit};
use crate::starrocks_emulator::http::{Drop, Resp, json};
use crate::starrocks_emulator::load::{LoadSpec, Plan, check_label, decompress, parse_body};
use crate::starrocks_emulator::registry::{BeginError, LoadCounts, TxnState};
use crate::starrocks_emulator::{Ctx, now_ms};

pub(super) fn be_txn(status: &str, msg: &str, label: &str, id: Option<i64>, extra: J) -> Resp {
    let mut m = serde_json::Map::new();
    m.insert("Status".into(), json!(status));
    m.insert("Message".into(), json!(msg));
    m.insert("Label".into(), json!(label));
    if let Some(id) = id {
        m.insert("TxnId".into(), json!(id));
    }
    if let J::Object(e) = extra {
        m.extend(e);
    }
    json(StatusCode::OK, &J::Object(m))
}

fn not_exists(label: &str) -> Resp {
    be_txn("TXN_NOT_EXISTS", &format!("transaction with label {label} not exists"), label, None, json!({}))
}

pub(super) async fn txn(ctx: &Ctx, be: usize, op: &str, req: hyper::Request<Incoming>) -> Result<Resp, Drop> {
    let label = hdr(&req, "label");
    let db = hdr(&req, "db");
    let table = hdr(&req, "table");
    if let Err(m) = be_auth(ctx, &req) {
        return Ok(be_txn("INTERNAL_ERROR", &m, &label, None, json!({})));
    }
    if label.is_empty() {
        return Ok(be_txn("INTERNAL_ERROR", "Empty label.", &label, None, json!({})));
    }
    if db.is_empty() {
        return Ok(be_txn("INTERNAL_ERROR", "No database selected.", &label, None, json!({})));
    }
    let key = (db.clone(), label.clone());
    match op {
        "begin" => begin(ctx, be, &req, key, &table),
        "load" => txn_load(ctx, be, key, &table, req).await,
        "prepare" => prepare(ctx, be, &req, key),
        "commit" => finish(ctx, be, key, Finish::Commit),
        "rollback" => rollback(ctx, key),
        other => {
            Ok(be_txn("INTERNAL_ERROR", &format!("Unknown transaction operation: {other}"), &label, None, json!({})))
        }
    }
}

/// `begin`: a transaction for the label, with the BE's context for its
/// loads (`timeout` and `idle_transaction_timeout` honoured).
fn begin(
    ctx: &Ctx,
    be: usize,
    req: &hyper::Request<Incoming>,
    key: (String, String),
    table: &str,
) -> Result<Resp, Drop> {
    let (db, label) = (key.0.clone(), key.1.clone());
    if table.is_empty() {
        return Ok(be_txn("INTERNAL_ERROR", "No table selected.", &label, None, json!({})));
    }
    if let Err(m) = check_label(&label) {
        return Ok(be_txn("INTERNAL_ERROR", &m, &label, None, json!({})));
    }
    let Some(def) = ctx.core.lock().def(&db, table) else {
        return Ok(be_txn("INTERNAL_ERROR", &format!("Unknown table '{table}'"), &label, None, json!({})));
    };
    let timeout_s = hdr(req, "timeout").parse::<u64>().ok().filter(|t| (1..=259_200).contains(t)).unwrap_or(600);
    let idle = hdr(req, "idle_transaction_timeout").parse::<u64>().ok().map(|s| s * 1000);
    let t0 = Instant::now();
    let now = now_ms();
    let mut core = ctx.core.lock();
    if core.be_ctx.contains_key(&key) {
        return Ok(be_txn(
            "LABEL_ALREADY_EXISTS",
            &format!("Label [{label}] has already been used."),
            &label,
            None,
            json!({"ExistingJobStatus": "RUNNING"}),
        ));
    }
    match core.begin(&db, &def.name, &label, timeout_s * 1000, be, now) {
        Ok(id) => {
            core.be_ctx.insert(
                key,
                BeCtx {
                    txn_id: id,
                    be,
                    table: def.name.clone(),
                    batches: Vec::new(),
                    counts: LoadCounts::default(),
                    errors: Vec::new(),
                    max_filter_ratio: 0.0,
                    loads: 0,
                    busy: false,
                    last_active_ms: now,
                    idle_timeout_ms: idle,
                },
            );
            Ok(be_txn("OK", "", &label, Some(id), json!({"BeginTxnTimeMs": ms(t0)})))
        }
        Err(BeginError::LabelExists { state, .. }) => Ok(be_txn(
            "LABEL_ALREADY_EXISTS",
            &format!("Label [{label}] has already been used."),
            &label,
            None,
            json!({"ExistingJobStatus": state.job_status()}),
        )),
        Err(e) => Ok(be_txn("INTERNAL_ERROR", &e.to_string(), &label, None, json!({}))),
    }
}

/// `prepare`: with an optional `prepared_timeout` (seconds).
fn prepare(ctx: &Ctx, be: usize, req: &hyper::Request<Incoming>, key: (String, String)) -> Result<Resp, Drop> {
    let label = key.1.clone();
    let prepared_timeout = hdr(req, "prepared_timeout");
    let prepared_timeout_ms = if prepared_timeout.is_empty() {
        None
    } else {
        match prepared_timeout.parse::<u64>() {
            Ok(s) if s > 0 => Some(s * 1000),
            _ => {
                return Ok(be_txn(
                    "INTERNAL_ERROR",
                    &format!("Invalid prepared_timeout: {prepared_timeout}"),
                    &label,
                    None,
                    json!({}),
                ));
            }
        }
    };
    finish(ctx, be, key, Finish::Prepare(prepared_timeout_ms))
}

/// `rollback`: the BE's context if it has one, else the FE's transaction
/// of the label.
fn rollback(ctx: &Ctx, key: (String, String)) -> Result<Resp, Drop> {
    let (db, label) = (&key.0, &key.1);
    let now = now_ms();
    let mut core = ctx.core.lock();
    match core.be_ctx.remove(&key) {
        Some(c) => {
            let _ = core.abort(c.txn_id, "transaction is aborted by user.", now);
            Ok(be_txn("OK", "", label, Some(c.txn_id), json!({})))
        }
        None => match core.registry.by_label(db, label).map(|t| t.id) {
            Some(id) => match core.abort(id, "transaction is aborted by user.", now) {
                Ok(_) => Ok(be_txn("OK", "", label, Some(id), json!({}))),
                Err(e) => Ok(be_txn("INTERNAL_ERROR", &e.to_string(), label, Some(id), json!({}))),
            },
            None => Ok(not_exists(label)),
        },
    }
}

/// Marks a context busy; `None` when absent, `Some(Err)` when already busy.
fn acquire(ctx: &Ctx, key: &(String, String)) -> Option<Result<(i64, String), ()>> {
    let mut core = ctx.core.lock();
    let c = core.be_ctx.get_mut(key)?;
    if c.busy {
        return Some(Err(()));
    }
    c.busy = true;
    Some(Ok((c.txn_id, c.table.clone())))
}

fn release(ctx: &Ctx, key: &(String, String)) {
    if let Some(c) = ctx.core.lock().be_ctx.get_mut(key) {
        c.busy = false;
        c.last_active_ms = now_ms();
    }
}

async fn txn_load(
    ctx: &Ctx,
    be: usize,
    key: (String, String),
    table_hdr: &str,
    req: hyper::Request<Incoming>,
) -> Result<Resp, Drop> {
    let label = key.1.clone();
    let (id, table) = match acquire(ctx, &key) {
        None => return Ok(not_exists(&label)),
        Some(Err(())) => {
            return Ok(in_processing(&label));
        }
        Some(Ok(x)) => x,
    };
    let res = txn_load_inner(ctx, be, &key, id, &table, table_hdr, req).await;
    release(ctx, &key);
    res
}

#[allow(clippy::too_many_arguments)]
async fn txn_load_inner(
    ctx: &Ctx,
    be: usize,
    key: &(String, String),
    id: i64,
    table: &str,
    table_hdr: &str,
    req: hyper::Request<Incoming>,
) -> Result<Resp, Drop> {
    let label = &key.1;
    if !table_hdr.is_empty() && !table_hdr.eq_ignore_ascii_case(table) {
        return Ok(be_txn(
            "INTERNAL_ERROR",
            &format!("request table {table_hdr} transaction table {table} not match"),
            label,
            Some(id),
            json!({}),
        ));
    }
    if let Some((kind, msg)) = header_fault(ctx, label, table) {
        let status = if kind == FaultKind::TxnInProcessing { "TXN_IN_PROCESSING" } else { "INTERNAL_ERROR" };
        return Ok(be_txn(status, &msg, label, Some(id), json!({})));
    }
    let Some(def) = ctx.core.lock().def(&key.0, table) else {
        return Ok(not_exists(label));
    };
    let t0 = Instant::now();
    let spec =
        match LoadSpec::from_headers(req.headers(), &def).and_then(|s| Plan::new(&s, def.clone()).map(|p| (s, p))) {
            Ok(sp) => sp,
            Err(m) => return Ok(be_txn("INTERNAL_ERROR", &m, label, Some(id), json!({}))),
        };
    let plan_ms = ms(t0);
    let t1 = Instant::now();
    let raw = match body(ctx, req, label, table).await {
        Ok(b) => b,
        Err(Ok(m)) => return Ok(be_txn("INTERNAL_ERROR", &m, label, Some(id), json!({}))),
        Err(Err(d)) => return Err(d),
    };
    let parsed = match decompress(spec.0.codec, &raw).and_then(|b| parse_body(&spec.0, &spec.1, &b)) {
        Ok(p) => p,
        Err(m) => return Ok(be_txn("INTERNAL_ERROR", &m, label, Some(id), json!({}))),
    };
    let received_ms = ms(t1);
    let mut core = ctx.core.lock();
    core.stats.txn_loads += 1;
    core.stats.bytes_received += raw.len() as u64;
    let Some(c) = core.be_ctx.get_mut(key) else {
        return Ok(not_exists(label));
    };
    let mut counts = parsed.counts;
    counts.bytes = raw.len() as u64;
    c.counts.add(&counts);
    c.errors.extend(parsed.errors);
    c.max_filter_ratio = c.max_filter_ratio.max(spec.0.max_filter_ratio);
    c.loads += 1;
    c.batches.push(parsed.batch);
    let _ = be;
    Ok(be_txn(
        "OK",
        "",
        label,
        Some(id),
        json!({"LoadBytes": raw.len(), "StreamLoadPlanTimeMs": plan_ms, "ReceivedDataTimeMs": received_ms}),
    ))
}

enum Finish {
    Prepare(Option<u64>),
    Commit,
}

/// prepare (→ PREPARED) or one-phase commit of a context still in PREPARE.
fn finish(ctx: &Ctx, be: usize, key: (String, String), what: Finish) -> Result<Resp, Drop> {
    let label = key.1.clone();
    let now = now_ms();
    let table_of = |ctx: &Ctx| ctx.core.lock().be_ctx.get(&key).map(|c| c.table.clone());
    if let Finish::Prepare(_) = what
        && let Some(f) = ctx.faults.check(Point::BeBeforePrepare, Some(&label), table_of(ctx).as_deref())
        && f.kind == FaultKind::ContextLost
    {
        ctx.core.lock().be_ctx.remove(&key);
    }
    let (id, table) = match acquire(ctx, &key) {
        Some(Ok(x)) => x,
        Some(Err(())) => {
            return Ok(in_processing(&label));
        }
        None => {
            // No BE context: a PREPARED/finished txn is the FE's to answer.
            let mut core = ctx.core.lock();
            let Some(t) = core.registry.by_label(&key.0, &label) else {
                return Ok(not_exists(&label));
            };
            let (id, state) = (t.id, t.state);
            return Ok(match what {
                Finish::Commit if state != TxnState::Prepare => fe_commit(ctx, &mut core, id, &label, state, now),
                _ => not_exists(&label),
            });
        }
    };
    let t0 = Instant::now();
    let mut core = ctx.core.lock();
    let Some(c) = core.be_ctx.remove(&key) else {
        return Ok(not_exists(&label));
    };
    if c.loads == 0 {
        core.be_ctx.insert(key, BeCtx { busy: false, ..c });
        return Ok(be_txn(
            "INTERNAL_ERROR",
            &format!("transaction {id} hasn't send any data yet"),
            &label,
            Some(id),
            json!({}),
        ));
    }
    drop(core);
    let error_url = keep_errors(ctx, be, &c.errors);
    let fail = |msg: String| {
        let _ = ctx.core.lock().abort(id, &msg, now_ms());
        let mut extra = json!({});
        if let Some(u) = &error_url {
            extra = json!({"ErrorURL": u});
        }
        Ok(be_txn("INTERNAL_ERROR", &msg, &label, Some(id), extra))
    };
    if too_filtered(&c.counts, c.max_filter_ratio) {
        return fail("too many filtered rows".into());
    }
    let mut touched: Vec<_> = c.batches.iter().flat_map(|b| b.rows.iter().map(|r| r.tablet.clone())).collect();
    touched.sort();
    touched.dedup();
    if let Err(msg) = check_write(ctx, &key.0, &table, &label, &touched, now) {
        return fail(msg);
    }
    let mut core = ctx.core.lock();
    core.stage(id, c.batches, &c.counts);
    core.stats.rows_loaded += c.counts.loaded;
    core.stats.rows_filtered += c.counts.filtered;
    let write_ms = ms(t0);
    let counts = c.counts.clone();
    let mut extra = json!({
        "NumberTotalRows": counts.total, "NumberLoadedRows": counts.loaded, "NumberFilteredRows": counts.filtered,
        "NumberUnselectedRows": counts.unselected, "LoadBytes": counts.bytes, "LoadTimeMs": write_ms,
        "StreamLoadPlanTimeMs": 0, "ReceivedDataTimeMs": 0, "WriteDataTimeMs": write_ms, "CommitAndPublishTimeMs": 0,
    });
    if let Some(u) = &error_url {
        extra["ErrorURL"] = json!(u);
    }
    match what {
        Finish::Prepare(timeout) => prepare_staged(ctx, core, (id, &label, &table), timeout, now, extra),
        Finish::Commit => Ok(commit_staged(ctx, &mut core, (id, &label, &table), now, extra)),
    }
}

/// Prepares a transaction whose rows were just staged (under the same
/// lock); an injected BE crash after the prepare drops the connection.
fn prepare_staged(
    ctx: &Ctx,
    mut core: parking_lot::MutexGuard<'_, Core>,
    (id, label, table): (i64, &str, &str),
    timeout: Option<u64>,
    now: u64,
    extra: J,
) -> Result<Resp, Drop> {
    if let Err(e) = core.prepare(id, timeout, now) {
        return Ok(be_txn("INTERNAL_ERROR", &e.to_string(), label, Some(id), json!({})));
    }
    drop(core);
    if let Some(f) = ctx.faults.check(Point::BeAfterPrepare, Some(label), Some(table))
        && f.kind == FaultKind::CrashAfterPrepare
    {
        ctx.core.lock().be_ctx.clear();
        return Err(Drop("crash_after_prepare"));
    }
    Ok(be_txn("OK", "", label, Some(id), extra))
}

/// Commits in one phase a transaction whose rows were just staged, with
/// the commit's injected faults (an unknown outcome, a publish timeout).
fn commit_staged(ctx: &Ctx, core: &mut Core, (id, label, table): (i64, &str, &str), now: u64, extra: J) -> Resp {
    let fault = ctx.faults.check(Point::BeCommit, Some(label), Some(table));
    let kind = fault.map(|f| f.kind);
    if kind == Some(FaultKind::CommitUnknownAborted) {
        let _ = core.abort(id, "commit transport error (injected)", now);
        return be_txn("INTERNAL_ERROR", &commit_unknown_msg(id), label, Some(id), json!({}));
    }
    let delay = fault.filter(|f| f.kind == FaultKind::PublishTimeout).map(|f| f.delay_ms);
    match core.commit(id, delay, now) {
        Err(e) => be_txn("INTERNAL_ERROR", &e.to_string(), label, Some(id), json!({})),
        Ok(_) if kind == Some(FaultKind::CommitUnknownCommitted) => {
            be_txn("INTERNAL_ERROR", &commit_unknown_msg(id), label, Some(id), json!({}))
        }
        Ok(_) if delay.is_some() => be_txn("PUBLISH_TIMEOUT", "publish timeout", label, Some(id), extra),
        Ok(_) => be_txn("OK", "", label, Some(id), extra),
    }
}
