//! One batch into one table with plain Stream Load, exactly once through its
//! label (`starrocks-stream-load.md` §4.4). This is the at-least-once
//! delivery mode's load operation, and the retry core the 2PC mode reuses.
//!
//! The loop, for a batch that is byte-identical across attempts:
//! 1. PUT it under its label.
//! 2. `Success` / `Publish Timeout` → done. `Label Already Exists` +
//!    `FINISHED` → an earlier attempt landed: done.
//! 3. `Label Already Exists` + `RUNNING` → poll `get_load_state` (back-off
//!    1, 2, … 5 s, as the Flink SDK) until `VISIBLE`/`COMMITTED` (done) or
//!    `ABORTED`/`UNKNOWN` (resend, same label).
//! 4. A retryable failure or a transport error → back off (exponential with
//!    full jitter, longer when StarRocks asks for less load) and resend the
//!    same batch under the same label.
//! 5. Rows StarRocks refuses for what they contain → [`LoadError::Rejected`]:
//!    the caller keeps the batch (dead-lettered, replayable, never dropped).
//! 6. A destination error (credentials, schema, a refused request) →
//!    [`LoadError::Destination`] at once: the caller waits and retries the
//!    same label; the data is not at fault.
//!
//! Every attempt is reported to the loader's [`Health`] (`/ready`, one log
//! line per episode).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use rand::Rng;

use std::sync::Arc;

use super::client::{ClientError, StreamLoadClient};
use super::response::{LabelState, LoadReply};
use super::retry::{Backoff, Outcome, classify};
use crate::telemetry::health::{Health, Trouble};

/// Retry settings.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts before giving up on a retryable failure (0 = forever).
    pub max_attempts: u32,
    /// First back-off for transient failures.
    pub base: Duration,
    /// First back-off when StarRocks throttles (`too many versions`, …).
    pub throttle_base: Duration,
    /// Largest back-off.
    pub max: Duration,
    /// How long to poll a RUNNING label before resending.
    pub label_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(200),
            throttle_base: Duration::from_secs(2),
            max: Duration::from_secs(60),
            label_wait: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Full-jitter exponential back-off for attempt `n` (1-based).
    pub fn delay(&self, n: u32, kind: Backoff) -> Duration {
        let base = if kind == Backoff::Throttle { self.throttle_base } else { self.base };
        let cap = base.saturating_mul(1u32 << n.saturating_sub(1).min(16)).min(self.max);
        cap.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

/// How a batch ended.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    pub label: String,
    /// The reply that settled it.
    pub reply: LoadReply,
    /// True when an earlier attempt had already loaded it.
    pub already_loaded: bool,
    pub attempts: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("load {label}: StarRocks refuses these rows: {reason}")]
    Rejected { label: String, reason: String },
    #[error("load {label}: StarRocks refuses rockfeed's requests ({trouble:?}): {reason}")]
    Destination { label: String, reason: String, trouble: Trouble },
    #[error("load {label} still failing after {attempts} attempts: {last}")]
    Exhausted { label: String, attempts: u32, last: String },
}

/// Plain Stream Load of labelled batches into one database.
#[derive(Debug)]
pub struct StreamLoader {
    client: StreamLoadClient,
    db: String,
    policy: RetryPolicy,
    /// Whether StarRocks takes loads (shared with `/ready`).
    health: Arc<Health>,
    /// Where the transaction interface's phase times go.
    stats: Option<Arc<crate::telemetry::Stats>>,
    /// Replies asking for less load so far (the epoch pacer's signal).
    throttled: std::sync::atomic::AtomicU64,
    /// Time spent waiting on StarRocks' load calls so far, µs (the pacer's
    /// other signal: StarRocks' write and publish times).
    busy_us: std::sync::atomic::AtomicU64,
}

impl StreamLoader {
    pub fn new(client: StreamLoadClient, db: impl Into<String>, policy: RetryPolicy) -> Self {
        StreamLoader {
            client,
            db: db.into(),
            policy,
            health: Arc::default(),
            stats: None,
            throttled: Default::default(),
            busy_us: Default::default(),
        }
    }

    /// Reports to `health` (the pipeline's, which `/ready` reads).
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = health;
        self
    }

    /// Reports to the pipeline's stats: its health (`/ready`) and the
    /// transaction phases' latency histograms.
    pub fn with_stats(mut self, stats: Arc<crate::telemetry::Stats>) -> Self {
        self.health = stats.destination.clone();
        self.stats = Some(stats);
        self
    }

    pub fn stats(&self) -> Option<&Arc<crate::telemetry::Stats>> {
        self.stats.as_ref()
    }

    /// Counts a reply asking for less load (`too many versions`, the
    /// running-transaction cap, memory, HTTP concurrency).
    pub fn note_throttled(&self) {
        self.throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(s) = &self.stats {
            s.throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Adds the duration of one load call (Stream Load, or a transaction
    /// step) to [`StreamLoader::busy`].
    pub fn note_busy(&self, d: Duration) {
        self.busy_us.fetch_add(d.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Time spent in StarRocks' load calls so far, summed over calls.
    pub fn busy(&self) -> Duration {
        Duration::from_micros(self.busy_us.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Replies asking for less load so far.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    pub fn client(&self) -> &StreamLoadClient {
        &self.client
    }

    pub fn db(&self) -> &str {
        &self.db
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// `GET /api/{db}/get_load_state?label=` (its failures are reported to
    /// the health).
    pub async fn label_state(&self, label: &str) -> Result<LabelState, String> {
        let path = format!("/api/{}/get_load_state?label={label}", self.db);
        let r = match self.client.request(Method::GET, &path, &HeaderMap::new(), Bytes::new()).await {
            Ok(r) => r,
            Err(e) => {
                let (reason, trouble) = match transport_outcome(&e) {
                    Outcome::Destination { reason, trouble } => (reason, trouble),
                    _ => (e.to_string(), Trouble::Unavailable),
                };
                self.health.failure(trouble, &reason);
                return Err(reason);
            }
        };
        // A label's state read back is not a load taken: it ends no episode.
        match LabelState::parse(&r.body) {
            Ok(s) => Ok(s),
            Err(e) => {
                let e = if r.status == 200 { e } else { format!("HTTP {}: {e}", r.status) };
                let trouble = match r.status {
                    401 | 403 => Trouble::Auth,
                    _ => super::retry::destination_trouble(&e).unwrap_or(Trouble::Unavailable),
                };
                self.health.failure(trouble, &e);
                Err(e)
            }
        }
    }

    /// Loads `body` into `table` under `label`, exactly once (see module doc).
    /// `headers` are the format headers (`format`, `column_separator`,
    /// `columns`, …); `label` is added here.
    pub async fn load(
        &self,
        table: &str,
        label: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<LoadReport, LoadError> {
        let path = format!("/api/{}/{}/_stream_load", self.db, table);
        let mut h = headers.clone();
        let lv = HeaderValue::from_str(label).map_err(|_| LoadError::Destination {
            label: label.into(),
            reason: "label is not a valid header value".into(),
            trouble: Trouble::Client,
        })?;
        h.insert(HeaderName::from_static("label"), lv);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let call = std::time::Instant::now();
            let reply = self.client.request(Method::PUT, &path, &h, body.clone()).await;
            self.note_busy(call.elapsed());
            let outcome = match reply {
                Ok(r) => classify(r.status, LoadReply::parse(&r.body)),
                Err(e) => transport_outcome(&e),
            };
            let (reason, backoff) = match outcome {
                Outcome::Done(reply) => {
                    self.health.success();
                    return Ok(LoadReport { label: label.into(), reply, already_loaded: false, attempts: attempt });
                }
                Outcome::AlreadyLoaded(reply) => {
                    self.health.success();
                    return Ok(LoadReport { label: label.into(), reply, already_loaded: true, attempts: attempt });
                }
                Outcome::InFlight(reply) => match self.wait_for_label(label).await {
                    Ok(true) => {
                        return Ok(LoadReport { label: label.into(), reply, already_loaded: true, attempts: attempt });
                    }
                    Ok(false) => {
                        ("the earlier attempt was aborted; resending under the same label".to_string(), Backoff::Normal)
                    }
                    Err(e) => (e, Backoff::Normal),
                },
                Outcome::Retry { reason, backoff } => {
                    if backoff == Backoff::Throttle {
                        self.note_throttled();
                    }
                    (reason, backoff)
                }
                Outcome::Rejected { reason } => {
                    // The destination answered: it is up.
                    self.health.success();
                    return Err(LoadError::Rejected { label: label.into(), reason });
                }
                Outcome::Destination { reason, trouble } => {
                    self.health.failure(trouble, &reason);
                    return Err(LoadError::Destination { label: label.into(), reason, trouble });
                }
            };
            let episode = self.health.failure(Trouble::Unavailable, &reason);
            if self.policy.max_attempts != 0 && attempt >= self.policy.max_attempts {
                return Err(LoadError::Exhausted { label: label.into(), attempts: attempt, last: reason });
            }
            let delay = self.policy.delay(attempt, backoff);
            if episode {
                tracing::debug!(table, label, attempt, ?delay, reason = %reason, "Stream load failed; retrying with the same label.");
            } else {
                tracing::warn!(table, label, attempt, ?delay, reason = %reason, "Stream load failed; retrying with the same label.");
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// Polls a RUNNING label: `Ok(true)` once VISIBLE/COMMITTED, `Ok(false)`
    /// when ABORTED/UNKNOWN (safe to resend), `Err` when it stays running.
    async fn wait_for_label(&self, label: &str) -> Result<bool, String> {
        let deadline = tokio::time::Instant::now() + self.policy.label_wait;
        let mut wait = Duration::ZERO;
        loop {
            tokio::time::sleep(wait).await;
            match self.label_state(label).await {
                Ok(s) if s.state == "VISIBLE" || s.state == "COMMITTED" => return Ok(true),
                Ok(s) if s.state == "ABORTED" || s.state == "UNKNOWN" => return Ok(false),
                Ok(_) | Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!("label {label} still running after {:?}", self.policy.label_wait));
                }
                _ => {}
            }
            wait = (wait + Duration::from_secs(1)).min(Duration::from_secs(5));
        }
    }
}

pub(crate) fn transport_outcome(e: &ClientError) -> Outcome {
    match e {
        ClientError::Tls(_) | ClientError::NoEndpoints | ClientError::BadLocation(_) => {
            Outcome::Destination { reason: e.to_string(), trouble: Trouble::Config }
        }
        _ => Outcome::Retry { reason: e.to_string(), backoff: Backoff::Normal },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let p = RetryPolicy { base: Duration::from_millis(100), max: Duration::from_secs(1), ..Default::default() };
        for n in 1..20 {
            let d = p.delay(n, Backoff::Normal);
            let cap = Duration::from_millis(100).saturating_mul(1 << (n - 1).min(16)).min(Duration::from_secs(1));
            assert!(d <= cap && d >= cap / 2, "attempt {n}: {d:?} vs cap {cap:?}");
        }
        // Throttling starts from the longer base (2 s, capped at max = 1 s here).
        assert!(p.delay(1, Backoff::Throttle) >= Duration::from_millis(500));
    }
}
