//! The Kafka source: an rdkafka consumer in a consumer group, polled on its
//! own thread, feeding the pipeline's bounded channel, with offsets owned by
//! the epoch coordinator (`pipeline::epoch`).
//!
//! - **Offsets**: auto-commit and auto offset store are off. A message's
//!   position (topic, partition, offset) travels with it; the coordinator
//!   commits the positions of an epoch only once every shard has prepared
//!   it, with the decision (`rockfeed/1 <prefix> <epoch> <shards> <tables>`)
//!   as the offset metadata of every partition it commits. That commit *is*
//!   the epoch's decision; [`decisions`](crate::model::epoch::EpochSource::decisions) reads it back for every
//!   partition of the subscribed topics. Each partition's metadata also
//!   records where its range began and how many partitions the decision
//!   covers, so a decided epoch whose transactions StarRocks lost can be
//!   re-read ([`replay`](crate::model::epoch::EpochSource::replay): a consumer of its own, assigned
//!   outside the group) and rebuilt.
//! - **Backpressure**: a full pipeline channel is waited on with the next
//!   message in hand (librdkafka's prefetch is capped by
//!   `queued.max.messages.kbytes`, 16 MiB here); a stall longer than
//!   [`PAUSE_AFTER`] pauses every assigned partition and the thread goes on
//!   polling, so group membership and rebalances stay alive. The partitions
//!   resume once what was fetched is handed over. Nothing is buffered
//!   without bound.
//! - **Rebalances** (eager): on revoke, the coordinator finishes the open
//!   epoch (everything handed over is sealed, decided and committed) before
//!   the partitions go; if it cannot, the epoch is rolled back and the
//!   pipeline drops what it holds of the revoked partitions, then goes on
//!   with the same consumer (no restart). On assign, the
//!   coordinator recovers (commits prepared transactions of decided epochs,
//!   rolls back undecided ones) before a message of the new assignment is
//!   read.
//! - **Security**: any librdkafka property passes through `properties`
//!   (`security.protocol`, `sasl.mechanism`, `sasl.username`, …); the SASL
//!   password comes from [`PASSWORD_ENV`] or the file, and is never logged.
//!
//! Files: this one holds the consumer, its rebalance callbacks and the poll
//! loop; `config.rs` the settings and the preflight's probe; `epoch.rs` the
//! epoch protocol's side (decide, read decisions back, re-read a range).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset};
use tokio::sync::{mpsc, oneshot, watch};

mod config;
mod epoch;

pub use config::{KafkaConfig, PASSWORD_ENV};

use crate::model::RawMessage;
use crate::model::epoch::{Decision, Request};
use crate::util::now_ms;

/// State shared between the poll thread and the rebalance callbacks.
struct Shared {
    requests: mpsc::Sender<Request>,
    /// A revoke happened since the poll loop last looked.
    revoked: AtomicBool,
    /// The open epoch could not be finished or recovery failed: stop.
    failed: Mutex<Option<String>>,
    /// Set before the consumer is closed: callbacks do nothing.
    closing: AtomicBool,
    ready: watch::Sender<bool>,
    /// What rockfeed tracks per assigned partition ([`Partition`]);
    /// forgotten on every rebalance.
    partitions: Mutex<HashMap<(Arc<str>, i32), Partition>>,
    stats: Arc<crate::telemetry::Stats>,
}

/// One assigned partition's state.
#[derive(Debug, Default)]
struct Partition {
    /// The offset the next epoch's range begins at: the first message read
    /// after the assignment, then each decided position. A decision
    /// records it (`from`), so a lost transaction can be rebuilt from the
    /// range.
    start: Option<i64>,
    /// The offset the next message should have: the committed offset at
    /// the assignment, then the last one read + 1. A message past it, when
    /// the broker's log now starts past it too, means retention deleted
    /// what lay between: counted and logged.
    expected: Option<i64>,
    /// The decision the committed offset held at the assignment, recorded
    /// as `base` in this instance's decisions, so the previous owner can
    /// tell whether its last decision landed.
    base: Option<(String, u64)>,
}

impl Shared {
    fn partitions(&self) -> std::sync::MutexGuard<'_, HashMap<(Arc<str>, i32), Partition>> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Ctx(Arc<Shared>);

impl ClientContext for Ctx {}

impl Ctx {
    /// Sends a request to the coordinator and waits for its answer (on the
    /// poll thread, inside `poll`).
    fn ask(&self, make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Request) -> Option<Result<(), String>> {
        if self.0.closing.load(Ordering::Relaxed) || tokio::runtime::Handle::try_current().is_ok() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.0.requests.blocking_send(make(tx)).ok()?;
        rx.blocking_recv().ok()
    }

    fn fail(&self, msg: String) {
        tracing::error!(error = %msg, "Kafka source stops.");
        self.0.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(msg);
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            tracing::info!(partitions = tpl.count(), "Kafka partitions revoked; finishing the open epoch.");
            self.0.revoked.store(true, Ordering::Relaxed);
            if let Some(Err(e)) = self.ask(Request::Finish) {
                self.fail(format!("could not finish the epoch on revoke: {e}"));
            }
            self.0.partitions().clear();
        }
    }

    fn post_rebalance(&self, c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "Kafka partitions assigned; recovering epochs.");
                let mut parts = self.0.partitions();
                parts.clear();
                // Where consumption resumes: the committed offsets (none,
                // for a partition the group never committed: where it
                // starts then is auto_offset_reset's choice, not a loss).
                match c.committed_offsets((*tpl).clone(), Duration::from_secs(30)) {
                    Ok(committed) => {
                        for e in committed.elements() {
                            let p = parts.entry((Arc::from(e.topic()), e.partition())).or_default();
                            if let Offset::Offset(o) = e.offset() {
                                p.expected = Some(o);
                            }
                            p.base = Decision::parse(e.metadata()).map(|d| (d.prefix, d.epoch));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Cannot read the committed offsets of the assignment; offsets retention skips over it are not counted.")
                    }
                }
                drop(parts);
                match self.ask(Request::Recover) {
                    Some(Err(e)) => self.fail(format!("recovery failed: {e}")),
                    Some(Ok(())) => {
                        let _ = self.0.ready.send(true);
                    }
                    None => {}
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "Kafka rebalance error."),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// The consumer, shared by the poll thread and the coordinator.
pub struct KafkaSource {
    consumer: BaseConsumer<Ctx>,
    /// Reads the group's committed offsets without being a member: a
    /// member's own offset fetch waits while the group rebalances (a dead
    /// member holds a rebalance for its whole session), and recovery at
    /// start must not wait for that.
    reader: BaseConsumer,
    cfg: KafkaConfig,
    topics: Vec<String>,
    timeout: Duration,
    shared: Arc<Shared>,
}

impl KafkaSource {
    /// Creates the consumer and subscribes. `requests` goes to the epoch
    /// coordinator; `ready` flips once the first assignment is recovered.
    pub fn new(
        cfg: &KafkaConfig,
        requests: mpsc::Sender<Request>,
        ready: watch::Sender<bool>,
        stats: Arc<crate::telemetry::Stats>,
    ) -> Result<Arc<KafkaSource>, String> {
        cfg.validate()?;
        let shared = Arc::new(Shared {
            requests,
            revoked: AtomicBool::new(false),
            failed: Mutex::new(None),
            closing: AtomicBool::new(false),
            ready,
            partitions: Mutex::new(HashMap::new()),
            stats,
        });
        let consumer: BaseConsumer<Ctx> =
            cfg.client_config().create_with_context(Ctx(shared.clone())).map_err(|e| format!("Kafka consumer: {e}"))?;
        let reader: BaseConsumer = cfg.client_config().create().map_err(|e| format!("Kafka consumer: {e}"))?;
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| format!("Kafka subscribe: {e}"))?;
        Ok(Arc::new(KafkaSource {
            consumer,
            reader,
            cfg: cfg.clone(),
            topics: cfg.topics.clone(),
            timeout: Duration::from_secs(30),
            shared,
        }))
    }

    /// Stops the callbacks from talking to the coordinator (before drop).
    pub fn close(&self) {
        self.shared.closing.store(true, Ordering::Relaxed);
    }

    /// Notes `offset` as read from `topic`/`partition` (the first since the
    /// assignment is where the next range starts). Offsets may skip
    /// (transaction markers); a skip is a loss only when the broker's log
    /// now starts past the offset expected: retention deleted the records
    /// between before rockfeed read them. Counted per partition
    /// (`rockfeed_kafka_offset_resets_total`, `…_offsets_skipped_total`)
    /// and logged as an ERROR naming how many.
    fn read(&self, topic: &Arc<str>, partition: i32, offset: i64) {
        let prev = {
            let mut parts = self.shared.partitions();
            let p = parts.entry((topic.clone(), partition)).or_default();
            p.start.get_or_insert(offset);
            p.expected.replace(offset + 1)
        };
        let Some(expected) = prev.filter(|&e| offset > e) else { return };
        let topic: &str = topic;
        let low = match self.reader.fetch_watermarks(topic, partition, self.timeout) {
            Ok((low, _)) => low,
            Err(e) => {
                tracing::warn!(topic, partition, expected, offset, error = %e, "Kafka offsets skipped; cannot read the partition's watermarks to tell a retention loss from transaction markers.");
                return;
            }
        };
        if low <= expected {
            return; // the records are there: markers, not a loss
        }
        let skipped = (low.min(offset) - expected) as u64;
        {
            let mut m = self.shared.stats.kafka_offset_resets.lock();
            let e = m.entry((topic.to_string(), partition)).or_default();
            e.0 += 1;
            e.1 += skipped;
        }
        tracing::error!(
            topic,
            partition,
            from = expected,
            to = low,
            skipped,
            "Kafka retention deleted offsets before rockfeed read them: those records are lost (rockfeed_kafka_offsets_skipped_total). Keep retention longer than the longest outage."
        );
    }

    /// Polls until `done` flips or the channel closes; hands messages to
    /// `tx` until `shutdown` flips (then only polls, so the last epoch's
    /// offset commit meets a live group member). A full channel is waited
    /// on for up to [`PAUSE_AFTER`] with the
    /// message in hand (librdkafka's own prefetch is bounded); past that the
    /// partitions are paused and polling goes on, so group membership and
    /// rebalances stay alive however long the pipeline stalls. Runs on its
    /// own thread.
    pub fn poll_loop(
        &self,
        tx: mpsc::Sender<RawMessage>,
        shutdown: watch::Receiver<bool>,
        done: watch::Receiver<bool>,
        max_buffered: usize,
        topic_from_key: bool,
    ) -> Result<(), String> {
        let mut tx = Some(tx);
        let mut pending: VecDeque<RawMessage> = VecDeque::new();
        let mut paused = false;
        let mut topics: HashMap<String, Arc<str>> = HashMap::new();
        let c = &self.consumer;
        let set_paused = |on: bool| {
            if let Ok(a) = c.assignment() {
                let r = if on { c.pause(&a) } else { c.resume(&a) };
                if let Err(e) = r {
                    tracing::warn!(error = %e, pause = on, "Kafka pause/resume failed.");
                }
            }
        };
        loop {
            if *done.borrow() {
                return Ok(());
            }
            if *shutdown.borrow() && tx.is_some() {
                // Stop reading, but keep the consumer polled (callbacks,
                // group membership) until the last epoch is decided.
                tx = None;
                pending.clear();
                set_paused(true);
                paused = true;
            }
            let Some(tx) = tx.as_ref() else {
                let _ = c.poll(Duration::from_millis(100));
                continue;
            };
            if let Some(e) = self.shared.failed.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                return Err(e);
            }
            if !hand_over(&mut pending, tx, paused, &shutdown) {
                return Ok(()); // the pipeline is gone
            }
            if pending.is_empty() && paused {
                set_paused(false);
                paused = false;
            } else if !pending.is_empty() && !paused {
                tracing::debug!(waiting = pending.len(), "Pipeline full; pausing the Kafka partitions.");
                set_paused(true);
                paused = true;
            }
            let wait = if pending.is_empty() { Duration::from_millis(100) } else { Duration::from_millis(20) };
            let polled = c.poll(wait);
            if self.shared.revoked.swap(false, Ordering::Relaxed) {
                // The open epoch was finished (or abandoned) in the callback;
                // what was fetched before is read again from the committed
                // offsets by whoever owns the partitions now.
                pending.clear();
                paused = false;
            }
            match polled {
                None => {}
                Some(Err(e)) => tracing::warn!(error = %e, "Kafka consumer error."),
                Some(Ok(m)) => {
                    let topic = topics.entry(m.topic().to_string()).or_insert_with(|| Arc::from(m.topic())).clone();
                    self.read(&topic, m.partition(), m.offset());
                    pending.push_back(raw(&m, topic, topic_from_key));
                    if pending.len() > max_buffered {
                        tracing::warn!(waiting = pending.len(), "Kafka messages keep arriving while paused.");
                    }
                }
            }
        }
    }
}

/// Hands what waits to the pipeline, waiting for room up to
/// [`PAUSE_AFTER`] (not while paused or stopping). `false` once the
/// pipeline's channel is closed.
fn hand_over(
    pending: &mut VecDeque<RawMessage>,
    tx: &mpsc::Sender<RawMessage>,
    paused: bool,
    shutdown: &watch::Receiver<bool>,
) -> bool {
    let started = std::time::Instant::now();
    while let Some(m) = pending.pop_front() {
        match tx.try_send(m) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(m)) => {
                pending.push_front(m);
                if paused || started.elapsed() >= PAUSE_AFTER || *shutdown.borrow() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
        }
    }
    true
}

/// The pipeline's message for a Kafka record.
fn raw(m: &rdkafka::message::BorrowedMessage<'_>, topic: Arc<str>, topic_from_key: bool) -> RawMessage {
    let name = match (topic_from_key, m.key()) {
        (true, Some(k)) => String::from_utf8_lossy(k).into_owned(),
        _ => m.topic().to_string(),
    };
    RawMessage {
        topic: name,
        payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
        received_ms: now_ms(),
        key: m.key().map(Bytes::copy_from_slice),
        position: Some(crate::model::Position { stream: topic, partition: m.partition(), offset: m.offset() }),
    }
}

/// How long a full pipeline channel is waited on before the partitions
/// are paused.
pub const PAUSE_AFTER: Duration = Duration::from_secs(1);
