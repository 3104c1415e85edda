//! The FE listener: authentication, the `Expect` rule, redirects to BEs,
//! `get_load_state`, the FE side of `/api/transaction/*`, `_cancel`, and the
//! emulator's own inspection and fault endpoints under `/_emulator/`.
//!
//! FE replies use the FE vocabulary: `Status` is `OK`/`FAILED`/
//! `LABEL_ALREADY_EXISTS`, failures carry `class <Exception>: <msg>` texts,
//! and every load reply closes the connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderValue, Method, StatusCode, Version, header};
use hyper::body::Incoming;
use serde_json::{Value as J, json};

use super::faults::{FaultKind, FaultRule, Point};
use super::http::{BodyError, Drop, Resp, basic_auth, close, json, query_param, read_body, redirect};
use super::registry::TxnState;
use super::{Ctx, now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

fn fe_failed(msg: &str) -> Resp {
    close(json(StatusCode::OK, &json!({"Status": "FAILED", "Message": msg})))
}

fn ddl_exception(msg: &str) -> Resp {
    fe_failed(&format!("class com.starrocks.common.DdlException: {msg}"))
}

/// `RestBaseResult` JSON, as the FE's REST actions answer errors.
fn rest_result(status: StatusCode, ok: bool, msg: &str) -> Resp {
    let body = if ok {
        json!({"status": "OK", "code": "0", "msg": "Success", "message": "OK"})
    } else {
        json!({"status": "FAILED", "code": "1", "msg": msg, "message": msg})
    };
    json(status, &body)
}

fn unauthorized(msg: &str) -> Resp {
    let mut r = rest_result(StatusCode::UNAUTHORIZED, false, msg);
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"\""));
    r
}

/// Checks Basic auth the way `RestBaseAction.checkPassword` does.
pub(crate) fn check_auth(ctx: &Ctx, req: &hyper::Request<Incoming>) -> Result<(), Box<Resp>> {
    if ctx.faults.check(Point::FeAuth, None, None).is_some() {
        return Err(Box::new(unauthorized("Access denied (injected fault)")));
    }
    match basic_auth(req.headers()) {
        None => Err(Box::new(unauthorized("Need auth information."))),
        Some((u, p)) if u == ctx.cfg.user && p == ctx.cfg.password => Ok(()),
        Some((u, _)) => Err(Box::new(unauthorized(&format!("Access denied for user '{u}'@'%' (using password: YES)")))),
    }
}

fn path_and_query(req: &hyper::Request<Incoming>) -> String {
    req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| req.uri().path().to_string())
}

fn header_str(req: &hyper::Request<Incoming>, name: &str) -> String {
    req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").trim().to_string()
}

/// 307 to a BE (or to where a fault says), counted.
fn to_be(ctx: &Ctx, be: usize, req: &hyper::Request<Incoming>, label: Option<&str>, table: Option<&str>) -> Resp {
    let pq = path_and_query(req);
    if let Some(f) = ctx.faults.check(Point::FeRedirect, label, table) {
        match f.kind {
            FaultKind::NoBackendAlive => return ddl_exception("No backend alive."),
            FaultKind::RedirectLoop => return redirect(&format!("{}{pq}", ctx.fe_base)),
            FaultKind::RedirectUnreachable => {
                return redirect(&format!("http://{}{pq}", ctx.cfg.unreachable));
            }
            _ => {}
        }
    }
    ctx.core.lock().stats.redirects += 1;
    redirect(&format!("http://{}{pq}", ctx.be_locations[be % ctx.be_locations.len()]))
}

pub async fn handle(ctx: Arc<Ctx>, role: Role, req: hyper::Request<Incoming>) -> Result<Resp, Drop> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let Err(r) = check_auth(&ctx, &req) {
        return Ok(if parts.last() == Some(&"_stream_load") { close(*r) } else { *r });
    }
    match (req.method(), parts.as_slice()) {
        (&Method::PUT, ["api", db, table, "_stream_load"]) => Ok(stream_load(&ctx, db, table, &req)),
        (_, ["api", _, _, "_stream_load"]) => {
            Ok(json(StatusCode::METHOD_NOT_ALLOWED, &json!({"status": "FAILED", "msg": "Only PUT is supported"})))
        }
        (&Method::GET, ["api", db, "get_load_state"]) => {
            if role == Role::Follower {
                return Ok(redirect(&format!("{}{}", ctx.fe_base, path_and_query(&req))));
            }
            Ok(load_state(&ctx, db, query_param(req.uri().query(), "label")))
        }
        (&Method::POST | &Method::PUT, ["api", "transaction", op]) => {
            if role == Role::Follower {
                return Ok(redirect(&format!("{}{}", ctx.fe_base, path_and_query(&req))));
            }
            Ok(transaction(&ctx, op, &req))
        }
        (&Method::POST, ["api", db, table, "_cancel"]) => {
            Ok(cancel(&ctx, db, table, query_param(req.uri().query(), "label")))
        }
        (_, ["_emulator", ..]) => admin(&ctx, &parts[1..], req).await,
        _ => Ok(json(StatusCode::NOT_FOUND, &json!({"status": "FAILED", "msg": format!("Not Found: {path}")}))),
    }
}

fn stream_load(ctx: &Ctx, db: &str, table: &str, req: &hyper::Request<Incoming>) -> Resp {
    let expects = req
        .headers()
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if req.version() >= Version::HTTP_11 && !expects {
        return ddl_exception("There is no 100-continue header");
    }
    if db.is_empty() {
        return ddl_exception("No database selected.");
    }
    if table.is_empty() {
        return ddl_exception("No table selected.");
    }
    let label = header_str(req, "label");
    let be = ctx.rr.fetch_add(1, Ordering::Relaxed);
    to_be(ctx, be, req, Some(&label).filter(|l| !l.is_empty()).map(|s| s.as_str()), Some(table))
}

fn load_state(ctx: &Ctx, db: &str, label: Option<String>) -> Resp {
    if db.is_empty() {
        return rest_result(StatusCode::OK, false, "No database selected.");
    }
    let Some(label) = label.filter(|l| !l.is_empty()) else {
        return rest_result(StatusCode::OK, false, "No label selected.");
    };
    let mut core = ctx.core.lock();
    if !ctx.cfg.catalog.databases.iter().any(|d| d == db) {
        return rest_result(StatusCode::OK, false, &format!("unknown database, database={db}"));
    }
    core.tick(now_ms());
    let (state, reason) = match core.registry.by_label(db, &label) {
        Some(t) => (t.state.name(), t.reason.clone()),
        None => ("UNKNOWN", String::new()),
    };
    json(
        StatusCode::OK,
        &json!({"state": state, "reason": reason, "status": "OK", "code": "0", "msg": "Success", "message": "OK"}),
    )
}

/// FE-style transaction reply.
pub(crate) fn txn_reply(status: &str, msg: &str, id: i64, label: &str) -> Resp {
    json(StatusCode::OK, &json!({"Status": status, "Message": msg, "TxnId": id, "Label": label}))
}

fn transaction(ctx: &Ctx, op: &str, req: &hyper::Request<Incoming>) -> Resp {
    let op = op.to_ascii_lowercase();
    if !["begin", "load", "prepare", "commit", "rollback"].contains(&op.as_str()) {
        return fe_failed(&format!("class com.starrocks.common.UserException: Unknown transaction operation: {op}"));
    }
    let label = header_str(req, "label");
    if label.is_empty() {
        return fe_failed("class com.starrocks.common.UserException: Empty label.");
    }
    let db = header_str(req, "db");
    if db.is_empty() {
        return fe_failed("class com.starrocks.common.UserException: No database selected.");
    }
    let table = header_str(req, "table");
    let key = (db.clone(), label.clone());
    match op.as_str() {
        "begin" => {
            let be = {
                let mut core = ctx.core.lock();
                let n = ctx.be_locations.len();
                let be = ctx.rr.fetch_add(1, Ordering::Relaxed) % n;
                *core.coordinators.entry(key).or_insert(be)
            };
            to_be(ctx, be, req, Some(&label), Some(&table))
        }
        "load" | "prepare" => {
            let be = ctx.core.lock().coordinators.get(&key).copied().unwrap_or(0);
            to_be(ctx, be, req, Some(&label), Some(&table))
        }
        _ => {
            let now = now_ms();
            let mut core = ctx.core.lock();
            core.tick(now);
            let Some(t) = core.registry.by_label(&db, &label) else {
                return fe_failed(&format!(
                    "class com.starrocks.common.UserException: transaction with label {label} not exists"
                ));
            };
            let (id, state) = (t.id, t.state);
            if state == TxnState::Prepare {
                // Still writing: the coordinator BE commits or aborts it.
                let be = core.coordinators.get(&key).copied().unwrap_or(t.be);
                drop(core);
                return to_be(ctx, be, req, Some(&label), Some(&table));
            }
            if op == "commit" {
                fe_commit(ctx, &mut core, id, &label, state, now)
            } else {
                match core.abort(id, "transaction is aborted by user.", now) {
                    Ok(true) => txn_reply("OK", "", id, &label),
                    Ok(false) => {
                        txn_reply("OK", &format!("Transaction {id} has already aborted, label is {label}"), id, &label)
                    }
                    Err(e) => {
                        txn_reply("FAILED", &format!("class com.starrocks.common.UserException: {e}"), id, &label)
                    }
                }
            }
        }
    }
}

/// FE commit of a PREPARED (or finished) transaction, with commit faults.
pub(crate) fn fe_commit(
    ctx: &Ctx,
    core: &mut super::core::Core,
    id: i64,
    label: &str,
    state: TxnState,
    now: u64,
) -> Resp {
    let table = core.registry.get(id).map(|t| t.table.clone());
    let mut state = state;
    if state == TxnState::Prepared && ctx.faults.check(Point::TxnCommit, Some(label), table.as_deref()).is_some() {
        let _ = core.abort(id, "transaction is aborted by user.", now);
        state = TxnState::Aborted;
    }
    if matches!(state, TxnState::Committed | TxnState::Visible) {
        return txn_reply("OK", &format!("Transaction {id} has already committed, label is {label}"), id, label);
    }
    if state == TxnState::Aborted {
        let reason = core.registry.get(id).map(|t| t.reason.clone()).unwrap_or_default();
        return txn_reply(
            "FAILED",
            &format!(
                "class com.starrocks.common.UserException: Can not commit ABORTED transaction {id}, label is {label}, reason: {reason}"
            ),
            id,
            label,
        );
    }
    let fault = ctx.faults.check(Point::BeCommit, Some(label), table.as_deref());
    let delay = fault.filter(|f| f.kind == FaultKind::PublishTimeout).map(|f| f.delay_ms);
    if fault.is_some_and(|f| f.kind == FaultKind::CommitUnknownAborted) {
        let _ = core.abort(id, "commit transport error (injected)", now);
        return txn_reply("FAILED", &commit_unknown_msg(id), id, label);
    }
    match core.commit(id, delay, now) {
        Ok(_) if fault.is_some_and(|f| f.kind == FaultKind::CommitUnknownCommitted) => {
            txn_reply("FAILED", &commit_unknown_msg(id), id, label)
        }
        Ok(_) if delay.is_some() => json(
            StatusCode::OK,
            &json!({"Status": "FAILED", "Message": "publish timeout", "TxnId": id, "Label": label, "CommitAndPublishTimeMs": delay}),
        ),
        Ok(_) => txn_reply("OK", "", id, label),
        Err(e) => txn_reply("FAILED", &format!("class com.starrocks.common.UserException: {e}"), id, label),
    }
}

pub(crate) fn commit_unknown_msg(id: i64) -> String {
    format!(
        "Commit transaction fail cause Failed to commit txn {id}. Tablet writer RPC to FE failed: connection reset, Transaction status unknown, you can retry with same label."
    )
}

fn cancel(ctx: &Ctx, db: &str, table: &str, label: Option<String>) -> Resp {
    let Some(label) = label.filter(|l| !l.is_empty()) else {
        return rest_result(StatusCode::OK, false, "No label selected.");
    };
    let now = now_ms();
    let mut core = ctx.core.lock();
    let Some(t) = core.registry.by_label(db, &label) else {
        return rest_result(StatusCode::OK, false, &format!("Load job with label {label} not found in table {table}"));
    };
    let id = t.id;
    match core.abort(id, "user cancel", now) {
        Ok(_) => rest_result(StatusCode::OK, true, ""),
        Err(e) => rest_result(StatusCode::OK, false, &e.to_string()),
    }
}

/// `/_emulator/...`: inspection and fault switchboard.
async fn admin(ctx: &Ctx, rest: &[&str], req: hyper::Request<Incoming>) -> Result<Resp, Drop> {
    match (req.method().clone(), rest) {
        (Method::GET, ["stats"]) => Ok(json(StatusCode::OK, &stats(ctx))),
        (Method::GET, ["faults"]) => Ok(json(
            StatusCode::OK,
            &json!({"rules": ctx.faults.list(), "fired": ctx.faults.fired().iter().map(|(k, l)| json!({"fault": k, "label": l})).collect::<Vec<_>>()}),
        )),
        (Method::DELETE, ["faults"]) => {
            ctx.faults.clear();
            Ok(json(StatusCode::OK, &json!({"status": "OK"})))
        }
        (Method::POST, ["faults"]) => {
            let body = match read_body(req.into_body(), 1 << 20, None).await {
                Ok(b) => b,
                Err(BodyError::Dropped) => return Err(Drop("admin")),
                Err(_) => {
                    return Ok(json(StatusCode::BAD_REQUEST, &json!({"status": "FAILED", "msg": "bad body"})));
                }
            };
            let rule: Result<FaultRule, String> = serde_json::from_slice(&body).map_err(|e| e.to_string());
            match rule.and_then(|r| ctx.faults.add(r)) {
                Ok(()) => Ok(json(StatusCode::OK, &json!({"status": "OK"}))),
                Err(e) => Ok(json(StatusCode::BAD_REQUEST, &json!({"status": "FAILED", "msg": e}))),
            }
        }
        (Method::GET, [db, table]) => {
            let mut core = ctx.core.lock();
            core.tick(now_ms());
            let Some(t) = core.table(db, table) else {
                return Ok(json(
                    StatusCode::NOT_FOUND,
                    &json!({"status": "FAILED", "msg": format!("Unknown table '{db}.{table}'")}),
                ));
            };
            let rows: Vec<J> = t
                .rows()
                .iter()
                .map(|r| {
                    let mut m = serde_json::Map::new();
                    for (c, v) in t.def.columns.iter().zip(r) {
                        m.insert(c.name.clone(), v.to_json(&c.ty));
                    }
                    J::Object(m)
                })
                .collect();
            Ok(json(StatusCode::OK, &J::Array(rows)))
        }
        _ => Ok(json(StatusCode::NOT_FOUND, &json!({"status": "FAILED", "msg": "unknown emulator endpoint"}))),
    }
}

fn stats(ctx: &Ctx) -> J {
    let mut core = ctx.core.lock();
    core.tick(now_ms());
    let tables: serde_json::Map<String, J> = core
        .tables
        .values()
        .map(|t| {
            let tablets: Vec<J> = t
                .tablets
                .values()
                .map(|tb| json!({"tablet_id": tb.id, "partition": tb.partition, "bucket": tb.bucket, "versions_total": tb.versions_total, "versions_live": tb.versions_live.ceil() as u64}))
                .collect();
            (format!("{}.{}", t.def.db, t.def.name), json!({"rows": t.row_count(), "tablets": tablets}))
        })
        .collect();
    json!({
        "loads": core.stats,
        "labels_by_state": core.registry.state_counts(),
        "running_txns": core.registry.all().filter(|t| t.state.is_running()).count(),
        "tables": tables,
    })
}
