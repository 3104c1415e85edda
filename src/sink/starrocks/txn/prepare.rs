//! A transaction prepared: begin → load every chunk → prepare, in phases,
//! each retried or started over as `txn` classifies its
//! failures; a failed step looks the label up before anything is redone,
//! so a half-loaded transaction is never prepared.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use super::{Chunk, Step, TxnError, TxnLoader};
use crate::sink::starrocks::retry::Backoff;
use crate::telemetry::health::Trouble;

/// Where one phase of a prepare left the transaction.
enum Phase {
    /// Go on to the next phase.
    Next,
    /// Prepared (perhaps by an earlier attempt whose reply was lost).
    Done,
    /// Start over after a back-off, for this reason.
    Retry(String, Backoff),
}

impl TxnLoader<'_> {
    /// begin → load every chunk → prepare, under `label`. Returns once the
    /// transaction is PREPARED (its data durable and invisible).
    pub async fn prepare(&self, table: &str, label: &str, chunks: &[Chunk]) -> Result<(), TxnError> {
        let policy = self.loader.policy();
        let mut attempt = 0u32;
        let (mut why, mut backoff) = (String::new(), Backoff::Normal);
        loop {
            if attempt > 0 {
                let episode = self.loader.health().failure(Trouble::Unavailable, &why);
                if self.give_up(attempt) {
                    return Err(TxnError::Exhausted { label: label.into(), attempts: attempt, last: why });
                }
                let d = policy.delay(attempt, backoff);
                if episode {
                    tracing::debug!(table, label, attempt, ?d, reason = %why, "Transaction failed; retrying with the same label.");
                } else {
                    tracing::warn!(table, label, attempt, ?d, reason = %why, "Transaction failed; retrying with the same label.");
                }
                tokio::time::sleep(d).await;
            }
            attempt += 1;
            match self.prepare_once(table, label, chunks).await? {
                Phase::Next | Phase::Done => return Ok(()),
                Phase::Retry(w, b) => (why, backoff) = (w, b),
            }
        }
    }

    /// One attempt at begin, load every chunk, prepare.
    async fn prepare_once(&self, table: &str, label: &str, chunks: &[Chunk]) -> Result<Phase, TxnError> {
        match self.begin_phase(table, label).await? {
            Phase::Next => {}
            other => return Ok(other),
        }
        match self.load_phase(table, label, chunks).await? {
            Phase::Next => {}
            other => return Ok(other),
        }
        if let Some(step) = self.halt_before_prepare {
            crate::halt::Hook::halt(step).await;
        }
        self.prepare_phase(table, label).await
    }

    async fn begin_phase(&self, table: &str, label: &str) -> Result<Phase, TxnError> {
        match self.busy_retry(|| self.begin(table, label)).await {
            Step::Ok => Ok(Phase::Next),
            Step::Rejected(reason) => Err(TxnError::Rejected { label: label.into(), step: "begin", reason }),
            Step::Destination(reason, trouble) => Err(self.destination(label, "begin", reason, trouble)),
            Step::Busy(r) | Step::Check(r, _) if r.contains("running txns") => Ok(Phase::Retry(r, Backoff::Throttle)),
            Step::Busy(r) | Step::Check(r, _) => {
                // The begin may have happened (reply lost) or an earlier
                // attempt's transaction may be open under this label.
                match self.settle_unfinished(table, label, false).await? {
                    true => Ok(Phase::Done),
                    false => Ok(Phase::Retry(r, Backoff::Normal)),
                }
            }
        }
    }

    /// Loads the chunks into the open transaction. A chunk that fails may
    /// have left part of its data in it: the transaction is never prepared
    /// then, but rolled back, and the whole batch loaded again.
    async fn load_phase(&self, table: &str, label: &str, chunks: &[Chunk]) -> Result<Phase, TxnError> {
        for chunk in chunks {
            match self.busy_retry(|| self.call("load", table, label, &chunk.headers, chunk.body.clone())).await {
                Step::Ok => {}
                Step::Rejected(reason) => {
                    self.abort(table, label).await;
                    return Err(TxnError::Rejected { label: label.into(), step: "load", reason });
                }
                Step::Destination(reason, trouble) => {
                    self.abort(table, label).await;
                    return Err(self.destination(label, "load", reason, trouble));
                }
                Step::Busy(r) | Step::Check(r, _) => {
                    self.settle_unfinished(table, label, false).await?;
                    return Ok(Phase::Retry(r, Backoff::Normal));
                }
            }
        }
        Ok(Phase::Next)
    }

    async fn prepare_phase(&self, table: &str, label: &str) -> Result<Phase, TxnError> {
        let mut prep = HeaderMap::new();
        if let Some(s) = self.timeouts.prepared_timeout_s
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            prep.insert("prepared_timeout", v);
        }
        let (why, backoff) = match self.busy_retry(|| self.call("prepare", table, label, &prep, Bytes::new())).await {
            Step::Ok => {
                self.loader.health().success();
                return Ok(Phase::Done);
            }
            Step::Rejected(reason) => {
                self.abort(table, label).await;
                self.loader.health().success();
                return Err(TxnError::Rejected { label: label.into(), step: "prepare", reason });
            }
            Step::Destination(reason, trouble) => {
                self.abort(table, label).await;
                return Err(self.destination(label, "prepare", reason, trouble));
            }
            Step::Busy(r) => (r, Backoff::Normal),
            Step::Check(r, b) => (r, b),
        };
        // Prepared with the reply lost → done; otherwise start over.
        match self.settle_unfinished(table, label, true).await? {
            true => Ok(Phase::Done),
            false => Ok(Phase::Retry(why, backoff)),
        }
    }

    /// After a failed step: looks the label up. `Ok(true)` when it is
    /// PREPARED and `prepared_ok` (our prepare landed), `Ok(false)` when the
    /// label is free again (rolled back here if it was open).
    async fn settle_unfinished(&self, table: &str, label: &str, prepared_ok: bool) -> Result<bool, TxnError> {
        let st = match self.state(label).await {
            Ok(s) => s,
            // Unknown state: roll back blindly (harmless when nothing is open).
            Err(_) => {
                self.abort(table, label).await;
                return Ok(false);
            }
        };
        match st.state.as_str() {
            "PREPARED" if prepared_ok => Ok(true),
            "PREPARE" | "PREPARED" => {
                self.abort(table, label).await;
                Ok(false)
            }
            "COMMITTED" | "VISIBLE" => Err(TxnError::Conflict { label: label.into(), state: st.state }),
            _ => Ok(false),
        }
    }
}
