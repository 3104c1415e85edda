//! The BE listener: Stream Load itself and `ErrorURL` logs here, the BE
//! side of the transaction API in `txn.rs`.
//!
//! Every reply is HTTP 200 with JSON. Stream Load replies carry the
//! `StreamLoadContext::to_json` keys in order (`TxnId`, `Label`, `Status`,
//! [`ExistingJobStatus`], `Message`, counts, timings, [`ErrorURL`]) and the
//! statuses `Success`, `Publish Timeout`, `Label Already Exists`, `Fail`.
//! Transaction API replies carry the raw `TStatusCode` names (`OK`,
//! `LABEL_ALREADY_EXISTS`, `TXN_NOT_EXISTS`, `TXN_IN_PROCESSING`,
//! `INTERNAL_ERROR`, `PUBLISH_TIMEOUT`).

mod txn;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::{Method, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value as J, json};

use super::engine::TabletKey;
use super::faults::{FaultKind, Point};
use super::fe::commit_unknown_msg;
use super::http::{BodyError, Drop, Resp, basic_auth, json, query_param, read_body, text};
use super::load::{LoadSpec, Parsed, Plan, check_label, decompress, parse_body};
use super::registry::{BeginError, LoadCounts};
use super::{Ctx, now_ms};
use crate::starrocks::ddl::TableDef;
use txn::{be_txn, txn};

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

/// A Stream Load's request checked (label, auth, header faults, the
/// table) and planned from its headers; the refusal's message otherwise.
fn plan_load(
    ctx: &Ctx,
    db: &str,
    table: &str,
    req: &hyper::Request<Incoming>,
    r: &mut Reply,
) -> Result<(Arc<TableDef>, LoadSpec, Plan), String> {
    let label = hdr(req, "label");
    r.label = if label.is_empty() {
        format!("{:032x}", ctx.seq.fetch_add(1, Ordering::Relaxed) as u128 * 0x9e37_79b9_7f4a_7c15)
    } else {
        label
    };
    be_auth(ctx, req)?;
    if let Some((_, msg)) = header_fault(ctx, &r.label, table) {
        return Err(msg);
    }
    check_label(&r.label)?;
    let Some(def) = ctx.core.lock().def(db, table) else {
        return Err(if ctx.cfg.catalog.databases.iter().any(|d| d == db) {
            format!("Unknown table '{table}'")
        } else {
            format!("Unknown database '{db}'")
        });
    };
    let plan_start = Instant::now();
    let spec = LoadSpec::from_headers(req.headers(), &def)?;
    let plan = Plan::new(&spec, def.clone())?;
    r.plan_ms = ms(plan_start);
    Ok((def, spec, plan))
}

async fn stream_load(ctx: &Ctx, be: usize, db: &str, table: &str, req: hyper::Request<Incoming>) -> Result<Resp, Drop> {
    let mut r = Reply { txn_id: -1, started: Some(Instant::now()), ..Default::default() };
    let (def, spec, plan) = match plan_load(ctx, db, table, &req, &mut r) {
        Ok(p) => p,
        Err(m) => return Ok(r.fail(m)),
    };
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
    Ok(commit_load(ctx, r, id, table, parsed, now, write))
}

/// A checked Stream Load's rows staged and committed (or the commit's
/// injected faults), and the reply.
fn commit_load(ctx: &Ctx, mut r: Reply, id: i64, table: &str, parsed: Parsed, now: u64, write: Instant) -> Resp {
    let mut core = ctx.core.lock();
    core.stage(id, vec![parsed.batch], &parsed.counts);
    r.write_ms = ms(write);
    let commit = Instant::now();
    let fault = ctx.faults.check(Point::BeCommit, Some(&r.label), Some(table));
    let kind = fault.map(|f| f.kind);
    if kind == Some(FaultKind::CommitUnknownAborted) {
        let _ = core.abort(id, "commit transport error (injected)", now);
        drop(core);
        return count_fail(ctx, r, commit_unknown_msg(id));
    }
    let delay = fault.filter(|f| f.kind == FaultKind::PublishTimeout).map(|f| f.delay_ms);
    let res = core.commit(id, delay, now);
    core.stats.rows_loaded += r.counts.loaded;
    core.stats.rows_filtered += r.counts.filtered;
    core.stats.bytes_received += r.counts.bytes;
    drop(core);
    r.commit_ms = ms(commit);
    match res {
        Err(e) => count_fail(ctx, r, e.to_string()),
        Ok(_) if kind == Some(FaultKind::CommitUnknownCommitted) => count_fail(ctx, r, commit_unknown_msg(id)),
        Ok(_) if delay.is_some() => {
            r.status = "Publish Timeout";
            r.message = "publish timeout".into();
            count(ctx, r)
        }
        Ok(_) => {
            r.status = "Success";
            r.message = "OK".into();
            count(ctx, r)
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
