//! One transaction of Stream Load's 2PC interface (`starrocks-stream-load.md`
//! §5): begin → load (one PUT per chunk) → prepare under a deterministic
//! label, then commit — or rollback, with the FE's `_cancel` as the fallback
//! the Flink connector's lingering-transaction aborter uses.
//!
//! Every failure is classified (§5.2, §6.1) and the work is retried under the
//! **same label**, which only data of that label can ever use:
//! - `TXN_IN_PROCESSING` (another request holds the BE context): retry the
//!   same call after `min(retry, 500 ms · n)`, as the Flink SDK.
//! - `LABEL_ALREADY_EXISTS` on begin, `TXN_NOT_EXISTS`, a transport error or
//!   any other retryable failure: ask `get_load_state` what the label is.
//!   PREPARED after a prepare → done (the reply was lost). PREPARE → roll it
//!   back (cancel if the BE lost the context) and start over from begin: a
//!   half-loaded transaction is never prepared. ABORTED/UNKNOWN → start over
//!   (an aborted label may be reused). COMMITTED/VISIBLE before this process
//!   committed it → another writer owns the label: [`TxnError::Conflict`].
//! - `current running txns on db … larger than limit` (the FE's
//!   `max_running_txn_num_per_db`), `too many versions`, memory and HTTP
//!   concurrency limits: back off longer and retry (the Flink SDK gives up on
//!   the running-transaction cap; rockfeed's labels make waiting safe).
//! - Rows StarRocks refuses for what they contain: roll back and return
//!   [`TxnError::Rejected`]; the caller keeps the data (dead letters).
//! - Destination errors (credentials, schema, a refused request): roll back
//!   and return [`TxnError::Destination`] at once; the caller waits and
//!   retries the label (the data is not at fault).
//!
//! Attempts are reported to the loader's `Health` (`/ready`, one log line
//! per episode).
//!
//! Retryable failures are retried until `policy.max_attempts` (0 = forever,
//! the exactly-once default: Kafka keeps the data, so waiting out an outage
//! is backpressure, never loss).
//!
//! `prepare.rs` holds the prepare's phases; this file the calls, the
//! classification, commit and rollback.

mod prepare;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::client::HttpReply;
use super::response::{LabelState, LoadReply};
use super::retry::{Backoff, Outcome, classify};
use super::service::{StreamLoader, transport_outcome};
use crate::telemetry::Stage;
use crate::telemetry::health::Trouble;

/// Transaction timeouts sent as headers.
#[derive(Debug, Clone, Copy)]
pub struct TxnTimeouts {
    /// `timeout` on begin (PREPARE → PREPARED must happen within it), seconds.
    pub txn_timeout_s: u64,
    /// `prepared_timeout` on prepare (PREPARED → COMMITTED), seconds. Needs
    /// StarRocks 3.5.4+; `None` leaves the FE default
    /// (`prepared_transaction_default_timeout_second`, 86400).
    pub prepared_timeout_s: Option<u64>,
}

impl Default for TxnTimeouts {
    fn default() -> Self {
        TxnTimeouts { txn_timeout_s: 600, prepared_timeout_s: None }
    }
}

/// One `load` call's body and its format headers.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    #[error("transaction {label}: StarRocks refuses these rows at {step}: {reason}")]
    Rejected { label: String, step: &'static str, reason: String },
    #[error("transaction {label}: StarRocks refuses rockfeed's requests at {step} ({trouble:?}): {reason}")]
    Destination { label: String, step: &'static str, reason: String, trouble: Trouble },
    #[error("transaction {label} still failing after {attempts} attempts: {last}")]
    Exhausted { label: String, attempts: u32, last: String },
    #[error(
        "label {label} is already {state} in StarRocks, but this process never committed it: another writer uses the same label prefix"
    )]
    Conflict { label: String, state: String },
}

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// COMMITTED or VISIBLE.
    Yes,
    /// The transaction is ABORTED (or its label unknown): its data is not in
    /// StarRocks. `reason` is the FE's abort reason.
    Aborted { reason: String },
}

/// What a reply to one transaction call means.
#[derive(Debug)]
enum Step {
    Ok,
    /// Retry the same call (TXN_IN_PROCESSING).
    Busy(String),
    /// Look at the label's state before deciding.
    Check(String, Backoff),
    Rejected(String),
    Destination(String, Trouble),
}

fn step_of(r: Result<HttpReply, super::client::ClientError>) -> Step {
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            return match transport_outcome(&e) {
                Outcome::Destination { reason, trouble } => Step::Destination(reason, trouble),
                _ => Step::Check(e.to_string(), Backoff::Normal),
            };
        }
    };
    let reply = LoadReply::parse(&r.body);
    if let Some(p) = &reply {
        match p.status.as_str() {
            "OK" => return Step::Ok,
            "TXN_IN_PROCESSING" => return Step::Busy(format!("TXN_IN_PROCESSING: {}", p.message)),
            "LABEL_ALREADY_EXISTS" | "Label Already Exists" | "TXN_NOT_EXISTS" => {
                return Step::Check(format!("{}: {}", p.status, p.message), Backoff::Normal);
            }
            _ => {}
        }
    }
    match classify(r.status, reply) {
        Outcome::Rejected { reason } => Step::Rejected(reason),
        Outcome::Destination { reason, trouble } => Step::Destination(reason, trouble),
        Outcome::Retry { reason, backoff } => Step::Check(reason, backoff),
        // Plain Stream Load statuses never answer the transaction API; if one
        // does, the label's state decides.
        o => Step::Check(format!("unexpected reply {o:?}"), Backoff::Normal),
    }
}

/// The transaction interface over one database.
#[derive(Debug, Clone)]
pub struct TxnLoader<'a> {
    loader: &'a StreamLoader,
    timeouts: TxnTimeouts,
    /// Test hook: halt once every chunk is loaded, before the prepare.
    halt_before_prepare: Option<&'static str>,
}

impl<'a> TxnLoader<'a> {
    pub fn new(loader: &'a StreamLoader, timeouts: TxnTimeouts) -> Self {
        TxnLoader { loader, timeouts, halt_before_prepare: None }
    }

    /// This loader halts the process (the test hook, as `step`) once a
    /// transaction is begun and loaded, before it is prepared: what a crash
    /// there leaves behind (a label in PREPARE).
    pub fn halting_before_prepare(&self, step: &'static str) -> Self {
        TxnLoader { halt_before_prepare: Some(step), ..self.clone() }
    }

    async fn call(
        &self,
        op: &str,
        table: &str,
        label: &str,
        extra: &HeaderMap,
        body: Bytes,
    ) -> Result<HttpReply, super::client::ClientError> {
        let mut h = extra.clone();
        let v = |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""));
        h.insert(HeaderName::from_static("label"), v(label));
        h.insert(HeaderName::from_static("db"), v(self.loader.db()));
        h.insert(HeaderName::from_static("table"), v(table));
        let method = if op == "load" { Method::PUT } else { Method::POST };
        let t = std::time::Instant::now();
        let r = self.loader.client().request(method, &format!("/api/transaction/{op}"), &h, body).await;
        if op != "get_load_state" {
            self.loader.note_busy(t.elapsed());
        }
        // Every call's time, answered or not (a slow failure is a slow phase).
        let stage = match op {
            "begin" => Some(Stage::TxnBegin),
            "load" => Some(Stage::TxnLoad),
            "prepare" => Some(Stage::TxnPrepare),
            "commit" => Some(Stage::TxnCommit),
            _ => None,
        };
        if let Ok(reply) = &r
            && LoadReply::parse(&reply.body).is_some_and(|p| super::retry::is_throttle(&p.message))
        {
            self.loader.note_throttled();
        }
        if let (Some(stage), Some(stats)) = (stage, self.loader.stats()) {
            stats.record_load_ms(stage, t.elapsed().as_millis() as u64);
        }
        r
    }

    /// One `begin` of `label` on `table`, the FE's answer as it is (the
    /// preflight, `rockfeed check --connect`, reads it; [`Self::prepare`]
    /// retries it).
    pub async fn begin(&self, table: &str, label: &str) -> Result<HttpReply, super::client::ClientError> {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&self.timeouts.txn_timeout_s.to_string()) {
            h.insert("timeout", v);
        }
        self.call("begin", table, label, &h, Bytes::new()).await
    }

    /// `get_load_state`, retried a few times on transport errors.
    pub async fn state(&self, label: &str) -> Result<LabelState, String> {
        let mut last = String::new();
        for n in 0..5u32 {
            if n > 0 {
                tokio::time::sleep(self.loader.policy().delay(n, Backoff::Normal)).await;
            }
            match self.loader.label_state(label).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn give_up(&self, attempt: u32) -> bool {
        let max = self.loader.policy().max_attempts;
        max != 0 && attempt >= max
    }

    /// A destination error, reported to the loader's health.
    fn destination(&self, label: &str, step: &'static str, reason: String, trouble: Trouble) -> TxnError {
        self.loader.health().failure(trouble, &reason);
        TxnError::Destination { label: label.into(), step, reason, trouble }
    }

    /// Repeats a call while the BE answers TXN_IN_PROCESSING (up to 10 times,
    /// `min(1 s, 500 ms · n)` apart), then returns its last step.
    async fn busy_retry<F, Fut>(&self, mut f: F) -> Step
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<HttpReply, super::client::ClientError>>,
    {
        let mut n = 0u64;
        loop {
            let s = step_of(f().await);
            match s {
                Step::Busy(_) if n < 10 => {
                    n += 1;
                    tokio::time::sleep(Duration::from_millis((500 * n).min(1000))).await;
                }
                s => return s,
            }
        }
    }

    /// Rolls `label` back (PREPARE or PREPARED); when the rollback fails,
    /// cancels it through the FE (`POST /api/{db}/{table}/_cancel`). Returns
    /// the label's final state as far as it is known.
    pub async fn abort(&self, table: &str, label: &str) -> Option<String> {
        let none = HeaderMap::new();
        let r = self.busy_retry(|| self.call("rollback", table, label, &none, Bytes::new())).await;
        if matches!(r, Step::Ok) {
            return Some("ABORTED".into());
        }
        let st = self.state(label).await.ok().map(|s| s.state);
        if !matches!(st.as_deref(), Some("PREPARE") | Some("PREPARED")) {
            return st;
        }
        let path = format!("/api/{}/{}/_cancel?label={label}", self.loader.db(), table);
        if let Err(e) = self.loader.client().request(Method::POST, &path, &HeaderMap::new(), Bytes::new()).await {
            tracing::warn!(label, error = %e, "Cancelling a transaction failed.");
        }
        let st = self.state(label).await.ok().map(|s| s.state);
        if matches!(st.as_deref(), Some("PREPARE") | Some("PREPARED")) {
            tracing::error!(label, state = ?st, "Cannot roll back or cancel a transaction; it stays open until its timeout.");
        }
        st
    }

    /// Commits a PREPARED `label` (idempotent on the FE). A non-OK reply is
    /// checked with `get_load_state`: COMMITTED/VISIBLE is success, ABORTED
    /// or UNKNOWN is reported, anything else is retried.
    pub async fn commit(&self, table: &str, label: &str) -> Result<Committed, TxnError> {
        let none = HeaderMap::new();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let step = self.busy_retry(|| self.call("commit", table, label, &none, Bytes::new())).await;
            let (why, backoff) = match step {
                Step::Ok => {
                    self.loader.health().success();
                    return Ok(Committed::Yes);
                }
                Step::Rejected(r) => (r, Backoff::Normal),
                Step::Destination(r, trouble) => {
                    self.loader.health().failure(trouble, &r);
                    (r, Backoff::Throttle)
                }
                Step::Busy(r) => (r, Backoff::Normal),
                Step::Check(r, b) => (r, b),
            };
            match self.state(label).await {
                Ok(s) if s.state == "COMMITTED" || s.state == "VISIBLE" => return Ok(Committed::Yes),
                Ok(s) if s.state == "ABORTED" || s.state == "UNKNOWN" => {
                    let reason = if s.reason.is_empty() { format!("{} ({why})", s.state) } else { s.reason };
                    return Ok(Committed::Aborted { reason });
                }
                _ => {}
            }
            let episode = self.loader.health().failure(Trouble::Unavailable, &why);
            if self.give_up(attempt) {
                return Err(TxnError::Exhausted { label: label.into(), attempts: attempt, last: why });
            }
            let d = self.loader.policy().delay(attempt, backoff);
            if episode {
                tracing::debug!(table, label, attempt, ?d, reason = %why, "Commit failed; retrying.");
            } else {
                tracing::warn!(table, label, attempt, ?d, reason = %why, "Commit failed; retrying.");
            }
            tokio::time::sleep(d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::starrocks::client::ClientError;

    fn reply(status: u16, body: &str) -> Result<HttpReply, ClientError> {
        Ok(HttpReply {
            status,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
            url: "http://be".into(),
        })
    }

    #[test]
    fn every_transaction_reply_is_classified() {
        assert!(matches!(step_of(reply(200, r#"{"Status":"OK","Label":"l","TxnId":1}"#)), Step::Ok));
        assert!(matches!(
            step_of(reply(
                200,
                r#"{"Status":"TXN_IN_PROCESSING","Message":"Transaction with label l is in processing"}"#
            )),
            Step::Busy(_)
        ));
        for s in ["LABEL_ALREADY_EXISTS", "TXN_NOT_EXISTS"] {
            assert!(
                matches!(
                    step_of(reply(200, &format!(r#"{{"Status":"{s}","Message":"m"}}"#))),
                    Step::Check(_, Backoff::Normal)
                ),
                "{s}"
            );
        }
        // The running-transaction cap and too many versions: retried, longer back-off.
        for m in [
            "current running txns on db 10001 is 6, larger than limit 6",
            "Failed to load data into tablet 1, because of too many versions, current/limit: 1001/1000",
        ] {
            let j = format!(r#"{{"Status":"FAILED","Message":"class com.starrocks.common.UserException: {m}"}}"#);
            assert!(matches!(step_of(reply(200, &j)), Step::Check(_, Backoff::Throttle)), "{m}");
        }
        // FE failures, commit status unknown, BE internal errors: look at the label.
        for j in [
            r#"{"Status":"FAILED","Message":"class com.starrocks.common.DdlException: No backend alive."}"#,
            r#"{"Status":"FAILED","Message":"Commit transaction fail cause x, Transaction status unknown, you can retry with same label."}"#,
            r#"{"Status":"INTERNAL_ERROR","Message":"boom"}"#,
        ] {
            assert!(matches!(step_of(reply(200, j)), Step::Check(_, Backoff::Normal)), "{j}");
        }
        assert!(matches!(
            step_of(Err(ClientError::Http { endpoint: "be".into(), reason: "connection reset".into() })),
            Step::Check(..)
        ));
        assert!(matches!(step_of(reply(502, "bad gateway")), Step::Check(..)));
        // Rows refused for what they hold; the destination refusing rockfeed.
        let j = r#"{"Status":"Fail","Message":"too many filtered rows"}"#;
        assert!(matches!(step_of(reply(200, j)), Step::Rejected(_)), "{j}");
        let j = r#"{"Status":"FAILED","Message":"Access denied for user 'x'"}"#;
        assert!(matches!(step_of(reply(200, j)), Step::Destination(_, Trouble::Auth)), "{j}");
        assert!(matches!(step_of(reply(401, "")), Step::Destination(_, Trouble::Auth)));
        assert!(matches!(step_of(Err(ClientError::Tls("no CA".into()))), Step::Destination(_, Trouble::Config)));
    }
}
