//! The BE listener: Stream Load itself, the BE side of the transaction API,
//! and `ErrorURL` logs.
//!
//! Every reply is HTTP 200 with JSON. Stream Load replies carry the
//! `StreamLoadContext::to_json` keys in order (`TxnId`, `Label`, `Status`,
//! [`ExistingJobStatus`], `Message`, counts, timings, [`ErrorURL`]) and the
//! statuses `Success`, `Publish Timeout`, `Label Already Exists`, `Fail`.
//! Transaction API replies carry the raw `TStatusCode` names (`OK`,
//! `LABEL_ALREADY_EXISTS`, `TXN_NOT_EXISTS`, `TXN_IN_PROCESSING`,
//! `INTERNAL_ERROR`, `PUBLISH_TIMEOUT`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::{Method, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value as J, json};

use super::core::BeCtx;
use super::engine::TabletKey;
use super::faults::{FaultKind, Point};
use super::fe::{commit_unknown_msg, fe_commit};
use super::http::{BodyError, Drop, Resp, basic_auth, json, query_param, read_body, text};
use super::load::{LoadSpec, Parsed, Plan, check_label, decompress, parse_body};
use super::registry::{BeginError, LoadCounts, TxnState};
use super::{Ctx, now_ms};

/// The fields of a Stream Load reply, filled as the load progresses.
#[derive(Default)]
struct Reply {
    txn_id: i64,
    label: String,
    status: &'static str,
    existing: Option<&'static str>,
    message: String,
    counts: LoadCounts,
    begin_ms: u64,
    plan_ms: u64,
    read_ms: u64,
    write_ms: u64,
    commit_ms: u64,
    error_url: Option<String>,
    started: Option<Instant>,
}

impl Reply {
    fn fail(mut self, msg: impl Into<String>) -> Resp {
        self.status = "Fail";
        self.message = msg.into();
        self.into_resp()
    }

    fn into_resp(self) -> Resp {
        let mut m = serde_json::Map::new();
        m.insert("TxnId".into(), json!(self.txn_id));
        m.insert("Label".into(), json!(self.label));
        m.insert("Status".into(), json!(self.status));
        if let Some(e) = self.existing {
            m.insert("ExistingJobStatus".into(), json!(e));
        }
        m.insert("Message".into(), json!(self.message));
        let c = &self.counts;
        m.insert("NumberTotalRows".into(), json!(c.total));
        m.insert("NumberLoadedRows".into(), json!(c.loaded));
        m.insert("NumberFilteredRows".into(), json!(c.filtered));
        m.insert("NumberUnselectedRows".into(), json!(c.unselected));
        m.insert("LoadBytes".into(), json!(c.bytes));
        m.insert("LoadTimeMs".into(), json!(self.started.map(|s| s.elapsed().as_millis() as u64).unwrap_or(0)));
        m.insert("BeginTxnTimeMs".into(), json!(self.begin_ms));
        m.insert("StreamLoadPlanTimeMs".into(), json!(self.plan_ms));
        m.insert("ReadDataTimeMs".into(), json!(self.read_ms));
        m.insert("WriteDataTimeMs".into(), json!(self.write_ms));
        m.insert("CommitAndPublishTimeMs".into(), json!(self.commit_ms));
        if let Some(u) = self.error_url {
            m.insert("ErrorURL".into(), json!(u));
        }
        json(StatusCode::OK, &J::Object(m))
    }
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

fn hdr(req: &hyper::Request<Incoming>, name: &str) -> String {
    req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").trim().to_string()
}

/// BE-side auth: the BE parses Basic itself; the password is checked by the
/// FE inside the begin RPC, so a wrong one comes back as an ordinary failure.
fn be_auth(ctx: &Ctx, req: &hyper::Request<Incoming>) -> Result<(), String> {
    match basic_auth(req.headers()) {
        None => Err("no valid Basic authorization".into()),
        Some((u, p)) if u == ctx.cfg.user && p == ctx.cfg.password => Ok(()),
        Some((u, _)) => Err(format!("Access denied for user '{u}'@'%' (using password: YES)")),
    }
}

pub async fn handle(ctx: Arc<Ctx>, be: usize, req: hyper::Request<Incoming>) -> Result<Resp, Drop> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), parts.as_slice()) {
        (&Method::PUT, ["api", db, table, "_stream_load"]) => {
            let (db, table) = (db.to_string(), table.to_string());
            stream_load(&ctx, be, &db, &table, req).await
        }
        (&Method::POST | &Method::PUT, ["api", "transaction", op]) => {
            let op = op.to_ascii_lowercase();
            txn(&ctx, be, &op, req).await
        }
        (&Method::GET, ["api", "_load_error_log"]) => {
            let file = query_param(req.uri().query(), "file").unwrap_or_default();
            match ctx.core.lock().error_logs.get(&file) {
                Some(t) => Ok(text(StatusCode::OK, t.clone())),
                None => Ok(text(StatusCode::NOT_FOUND, format!("error log {file} not found\n"))),
            }
        }
        _ => Ok(json(StatusCode::NOT_FOUND, &json!({"status": "FAILED", "msg": format!("Not Found: {path}")}))),
    }
}

/// Header-time faults shared by stream load and txn load.
fn header_fault(ctx: &Ctx, label: &str, table: &str) -> Option<(FaultKind, String)> {
    let f = ctx.faults.check(Point::BeHeader, Some(label), Some(table))?;
    let msg = match f.kind {
        FaultKind::HttpConcurrencyLimit => {
            "Stream Load exceed http cuncurrent limit 100, please try again later".to_string()
        }
        FaultKind::ShuttingDown => "Service is shutting down, please retry later!".to_string(),
        FaultKind::TxnInProcessing => format!("Transaction with label {label} is in processing"),
        _ => return None,
    };
    Some((f.kind, msg))
}

/// Reads the body honouring body faults; `Err(Ok(msg))` is a load failure.
async fn body(
    ctx: &Ctx,
    req: hyper::Request<Incoming>,
    label: &str,
    table: &str,
) -> Result<bytes::Bytes, Result<String, Drop>> {
    let expected = req.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let mut drop_after = None;
    if let Some(f) = ctx.faults.check(Point::BeBody, Some(label), Some(table)) {
        match f.kind {
            FaultKind::Slow100Continue => tokio::time::sleep(std::time::Duration::from_millis(f.delay_ms)).await,
            FaultKind::ResetMidBody => drop_after = Some(expected.map(|n| (n / 2).max(1)).unwrap_or(1)),
            _ => {}
        }
    }
    let limit = ctx.cfg.max_body_bytes;
    match read_body(req.into_body(), limit, drop_after).await {
        Ok(b) => {
            if let Some(n) = expected
                && n != b.len() as u64
            {
                return Err(Ok(format!(
                    "receive body don't equal with body bytes, body_bytes={n}, receive_bytes={}",
                    b.len()
                )));
            }
            Ok(b)
        }
        Err(BodyError::Dropped) => Err(Err(Drop("reset_mid_body"))),
        Err(BodyError::TooLarge(n)) => Err(Ok(format!(
            "body size {n} exceed limit: {limit}, You can increase the limit by setting streaming_load_max_mb in be.conf."
        ))),
        Err(BodyError::Transport(e)) => Err(Ok(format!("receive body failed: {e}"))),
    }
}

fn write_fault(ctx: &Ctx, label: &str, table: &str, tablet: Option<i64>) -> Option<String> {
    let f = ctx.faults.check(Point::BeWrite, Some(label), Some(table))?;
    Some(match f.kind {
        FaultKind::TooManyVersions => format!(
            "Failed to load data into tablet {}, because of too many versions, current/limit: 1001/1000. You can reduce the loading job concurrency, or increase loading data batch size.",
            tablet.unwrap_or(10_001)
        ),
        FaultKind::MemLimit => "Memory of process exceed limit. QUERY Backend: 127.0.0.1, fragment: load, Used: 2147483648, Limit: 2147483648. Mem usage has exceed the limit of BE".to_string(),
        _ => return None,
    })
}

/// Whether a load may write its tablets: an injected write fault, or a
/// tablet with no room for one more version (genuine `too many versions`).
fn check_write(ctx: &Ctx, db: &str, table: &str, label: &str, touched: &[TabletKey], now: u64) -> Result<(), String> {
    let first_tablet = touched.first().and_then(|k| {
        ctx.core.lock().table(db, table).and_then(|t| t.tablets.get(&(k.0.to_string(), k.1)).map(|x| x.id))
    });
    if let Some(msg) = write_fault(ctx, label, table, first_tablet) {
        return Err(msg);
    }
    let mut core = ctx.core.lock();
    let policy = core.policy;
    let mut next = core.next_tablet_id;
    let check = core.table_mut(db, table).map(|t| t.check_versions(touched, &policy, now, &mut next));
    core.next_tablet_id = next;
    check.unwrap_or(Ok(()))
}

/// The BE's answer when another request holds the label's context.
fn in_processing(label: &str) -> Resp {
    be_txn("TXN_IN_PROCESSING", &format!("Transaction with label {label} is in processing"), label, None, json!({}))
}

/// Filter-ratio check: `filtered / (total - unselected) > ratio` fails the load.
fn too_filtered(c: &LoadCounts, ratio: f64) -> bool {
    let considered = c.total.saturating_sub(c.unselected);
    c.filtered > 0 && considered > 0 && (c.filtered as f64 / considered as f64) > ratio
}

fn keep_errors(ctx: &Ctx, be: usize, errors: &[String]) -> Option<String> {
    if errors.is_empty() {
        return None;
    }
    let name = format!("error_log_{}_{:x}", be, ctx.seq.fetch_add(1, Ordering::Relaxed));
    ctx.core.lock().keep_error_log(name.clone(), errors);
    Some(format!("http://{}/api/_load_error_log?file={name}", ctx.be_locations[be]))
}

async fn stream_load(ctx: &Ctx, be: usize, db: &str, table: &str, req: hyper::Request<Incoming>) -> Result<Resp, Drop> {
    let mut r = Reply { txn_id: -1, started: Some(Instant::now()), ..Default::default() };
    let label = hdr(&req, "label");
    r.label = if label.is_empty() {
        format!("{:032x}", ctx.seq.fetch_add(1, Ordering::Relaxed) as u128 * 0x9e37_79b9_7f4a_7c15)
    } else {
        label
    };
    if let Err(m) = be_auth(ctx, &req) {
        return Ok(r.fail(m));
    }
    if let Some((_, msg)) = header_fault(ctx, &r.label, table) {
        return Ok(r.fail(msg));
    }
    if let Err(m) = check_label(&r.label) {
        return Ok(r.fail(m));
    }
    let Some(def) = ctx.core.lock().def(db, table) else {
        let msg = if ctx.cfg.catalog.databases.iter().any(|d| d == db) {
            format!("Unknown table '{table}'")
        } else {
            format!("Unknown database '{db}'")
        };
        return Ok(r.fail(msg));
    };
    let plan_start = Instant::now();
    let spec = match LoadSpec::from_headers(req.headers(), &def) {
        Ok(s) => s,
        Err(m) => return Ok(r.fail(m)),
    };
    let plan = match Plan::new(&spec, def.clone()) {
        Ok(p) => p,
        Err(m) => return Ok(r.fail(m)),
    };
    r.plan_ms = ms(plan_start);
    let begin = Instant::now();
    let id = {
        let mut core = ctx.core.lock();
        core.stats.stream_loads += 1;
        core.begin(db, &def.name, &r.label, spec.timeout_s * 1000, be, now_ms())
    };
    r.begin_ms = ms(begin);
    match id {
        Ok(id) => r.txn_id = id,
        Err(BeginError::LabelExists { state, .. }) => {
            r.status = "Label Already Exists";
            r.existing = Some(state.job_status());
            r.message = format!("Label [{}] has already been used.", r.label);
            return Ok(count(ctx, r));
        }
        Err(e @ BeginError::TooManyRunning { .. }) => return Ok(count_fail(ctx, r, e.to_string())),
    }
    let id = r.txn_id;
    let read = Instant::now();
    let raw = match body(ctx, req, &r.label, table).await {
        Ok(b) => b,
        Err(Ok(msg)) => return Ok(abort_fail(ctx, r, msg)),
        Err(Err(d)) => {
            let _ = ctx.core.lock().abort(id, "connection reset", now_ms());
            return Err(d);
        }
    };
    r.read_ms = ms(read);
    let write = Instant::now();
    let parsed: Parsed = match decompress(spec.codec, &raw).and_then(|b| parse_body(&spec, &plan, &b)) {
        Ok(p) => p,
        Err(msg) => return Ok(abort_fail(ctx, r, msg)),
    };
    r.counts = parsed.counts.clone();
    r.counts.bytes = raw.len() as u64;
    r.error_url = keep_errors(ctx, be, &parsed.errors);
    if too_filtered(&parsed.counts, spec.max_filter_ratio) {
        return Ok(abort_fail(ctx, r, "too many filtered rows".into()));
    }
    let now = now_ms();
    if let Err(msg) = check_write(ctx, db, table, &r.label, &parsed.touched, now) {
        return Ok(abort_fail(ctx, r, msg));
    }
    let mut core = ctx.core.lock();
    core.stage(id, vec![parsed.batch], &parsed.counts);
    r.write_ms = ms(write);
    let commit = Instant::now();
    let fault = ctx.faults.check(Point::BeCommit, Some(&r.label), Some(table));
    let kind = fault.map(|f| f.kind);
    if kind == Some(FaultKind::CommitUnknownAborted) {
        let _ = core.abort(id, "commit transport error (injected)", now);
        drop(core);
        return Ok(count_fail(ctx, r, commit_unknown_msg(id)));
    }
    let delay = fault.filter(|f| f.kind == FaultKind::PublishTimeout).map(|f| f.delay_ms);
    let res = core.commit(id, delay, now);
    core.stats.rows_loaded += r.counts.loaded;
    core.stats.rows_filtered += r.counts.filtered;
    core.stats.bytes_received += r.counts.bytes;
    drop(core);
    r.commit_ms = ms(commit);
    match res {
        Err(e) => Ok(count_fail(ctx, r, e.to_string())),
        Ok(_) if kind == Some(FaultKind::CommitUnknownCommitted) => Ok(count_fail(ctx, r, commit_unknown_msg(id))),
        Ok(_) if delay.is_some() => {
            r.status = "Publish Timeout";
            r.message = "publish timeout".into();
            Ok(count(ctx, r))
        }
        Ok(_) => {
            r.status = "Success";
            r.message = "OK".into();
            Ok(count(ctx, r))
        }
    }
}

fn count(ctx: &Ctx, r: Reply) -> Resp {
    *ctx.core.lock().stats.loads_by_status.entry(r.status.to_string()).or_insert(0) += 1;
    r.into_resp()
}

fn count_fail(ctx: &Ctx, mut r: Reply, msg: String) -> Resp {
    r.status = "Fail";
    r.message = msg;
    count(ctx, r)
}

fn abort_fail(ctx: &Ctx, r: Reply, msg: String) -> Resp {
    if r.txn_id >= 0 {
        let _ = ctx.core.lock().abort(r.txn_id, &msg, now_ms());
    }
    count_fail(ctx, r, msg)
}

// ---- transaction API, BE side ---------------------------------------------

fn be_txn(status: &str, msg: &str, label: &str, id: Option<i64>, extra: J) -> Resp {
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

async fn txn(ctx: &Ctx, be: usize, op: &str, req: hyper::Request<Incoming>) -> Result<Resp, Drop> {
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
        "begin" => {
            if table.is_empty() {
                return Ok(be_txn("INTERNAL_ERROR", "No table selected.", &label, None, json!({})));
            }
            if let Err(m) = check_label(&label) {
                return Ok(be_txn("INTERNAL_ERROR", &m, &label, None, json!({})));
            }
            let Some(def) = ctx.core.lock().def(&db, &table) else {
                return Ok(be_txn("INTERNAL_ERROR", &format!("Unknown table '{table}'"), &label, None, json!({})));
            };
            let timeout_s =
                hdr(&req, "timeout").parse::<u64>().ok().filter(|t| (1..=259_200).contains(t)).unwrap_or(600);
            let idle = hdr(&req, "idle_transaction_timeout").parse::<u64>().ok().map(|s| s * 1000);
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
        "load" => txn_load(ctx, be, key, &table, req).await,
        "prepare" => {
            let prepared_timeout = hdr(&req, "prepared_timeout");
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
        "commit" => finish(ctx, be, key, Finish::Commit),
        "rollback" => {
            let now = now_ms();
            let mut core = ctx.core.lock();
            match core.be_ctx.remove(&key) {
                Some(c) => {
                    let _ = core.abort(c.txn_id, "transaction is aborted by user.", now);
                    Ok(be_txn("OK", "", &label, Some(c.txn_id), json!({})))
                }
                None => match core.registry.by_label(&db, &label).map(|t| t.id) {
                    Some(id) => match core.abort(id, "transaction is aborted by user.", now) {
                        Ok(_) => Ok(be_txn("OK", "", &label, Some(id), json!({}))),
                        Err(e) => Ok(be_txn("INTERNAL_ERROR", &e.to_string(), &label, Some(id), json!({}))),
                    },
                    None => Ok(not_exists(&label)),
                },
            }
        }
        other => {
            Ok(be_txn("INTERNAL_ERROR", &format!("Unknown transaction operation: {other}"), &label, None, json!({})))
        }
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
        Finish::Prepare(timeout) => {
            if let Err(e) = core.prepare(id, timeout, now) {
                return Ok(be_txn("INTERNAL_ERROR", &e.to_string(), &label, Some(id), json!({})));
            }
            drop(core);
            if let Some(f) = ctx.faults.check(Point::BeAfterPrepare, Some(&label), Some(&table))
                && f.kind == FaultKind::CrashAfterPrepare
            {
                ctx.core.lock().be_ctx.clear();
                return Err(Drop("crash_after_prepare"));
            }
            Ok(be_txn("OK", "", &label, Some(id), extra))
        }
        Finish::Commit => {
            let fault = ctx.faults.check(Point::BeCommit, Some(&label), Some(&table));
            let kind = fault.map(|f| f.kind);
            if kind == Some(FaultKind::CommitUnknownAborted) {
                let _ = core.abort(id, "commit transport error (injected)", now);
                return Ok(be_txn("INTERNAL_ERROR", &commit_unknown_msg(id), &label, Some(id), json!({})));
            }
            let delay = fault.filter(|f| f.kind == FaultKind::PublishTimeout).map(|f| f.delay_ms);
            match core.commit(id, delay, now) {
                Err(e) => Ok(be_txn("INTERNAL_ERROR", &e.to_string(), &label, Some(id), json!({}))),
                Ok(_) if kind == Some(FaultKind::CommitUnknownCommitted) => {
                    Ok(be_txn("INTERNAL_ERROR", &commit_unknown_msg(id), &label, Some(id), json!({})))
                }
                Ok(_) if delay.is_some() => Ok(be_txn("PUBLISH_TIMEOUT", "publish timeout", &label, Some(id), extra)),
                Ok(_) => Ok(be_txn("OK", "", &label, Some(id), extra)),
            }
        }
    }
}
