//! The Kafka source: an rdkafka consumer in a consumer group, polled on its
//! own thread, feeding the pipeline's bounded channel, with offsets owned by
//! the epoch coordinator (`pipeline::epoch`).
//!
//! - **Offsets**: auto-commit and auto offset store are off. A message's
//!   position (topic, partition, offset) travels with it; the coordinator
//!   commits the positions of an epoch only once every shard has prepared
//!   it, with the decision (`rockfeed/1 <prefix> <epoch> <shards> <tables>`)
//!   as the offset metadata of every partition it commits. That commit *is*
//!   the epoch's decision; [`KafkaSource::decisions`] reads it back for every
//!   partition of the subscribed topics. Each partition's metadata also
//!   records where its range began and how many partitions the decision
//!   covers, so a decided epoch whose transactions StarRocks lost can be
//!   re-read ([`EpochSource::replay`]: a consumer of its own, assigned
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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot, watch};

use super::RawMessage;
use crate::pipeline::epoch::{Decision, EpochSource, Positions, Replay, Request, SourceError};
use crate::util::now_ms;

/// Environment variable with the SASL password (`sasl.password`).
pub const PASSWORD_ENV: &str = "ROCKFEED_KAFKA_PASSWORD";

/// Kafka source settings (`[source.kafka]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, e.g. `"broker1:9092,broker2:9092"`.
    pub brokers: String,
    /// Consumer group; its committed offsets carry the epoch decisions.
    pub group_id: String,
    /// Topics to subscribe.
    pub topics: Vec<String>,
    /// Where a partition without a committed offset starts: `earliest`,
    /// `latest` or `error`.
    #[serde(default = "default_reset")]
    pub auto_offset_reset: String,
    /// librdkafka properties passed through as they are (TLS, SASL, fetch
    /// sizes, `client.id`, …). Offset handling properties are rockfeed's.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Use the message key as the colocation key (route by key, not by the
    /// decoded VIN). Producers keyed by VIN give the same shards.
    #[serde(default)]
    pub key_is_colocation_key: bool,
    /// Match `decode.topic_template` against the record key instead of the
    /// Kafka topic: MQTT-to-Kafka bridges (Kafka Connect's MQTT source,
    /// EMQX, HiveMQ) write the MQTT topic (`telemetry/{vin}/{metric}`) as
    /// the key, so narrow records decode as they would from MQTT.
    #[serde(default)]
    pub topic_from_key: bool,
    /// Messages fetched but not yet handed to the pipeline before the
    /// partitions are paused.
    #[serde(default = "default_buffer")]
    pub max_buffered: usize,
}

fn default_reset() -> String {
    "earliest".into()
}
fn default_buffer() -> usize {
    1024
}

/// Properties rockfeed sets itself; a config that sets them is refused.
const OWNED: [&str; 5] =
    ["enable.auto.commit", "enable.auto.offset.store", "group.id", "bootstrap.servers", "auto.offset.reset"];

impl KafkaConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.topics.is_empty() {
            return Err("source.kafka.topics is empty".into());
        }
        if !["earliest", "latest", "error"].contains(&self.auto_offset_reset.as_str()) {
            return Err(format!(
                "source.kafka.auto_offset_reset '{}' is not earliest, latest or error",
                self.auto_offset_reset
            ));
        }
        if self.properties.get("partition.assignment.strategy").is_some_and(|v| v.contains("cooperative")) {
            return Err("source.kafka: cooperative rebalancing is not supported (an epoch is finished on every revoke, which assumes eager assignment)".into());
        }
        if self.topic_from_key && self.key_is_colocation_key {
            return Err("source.kafka: topic_from_key and key_is_colocation_key exclude each other (the key is a topic, not a VIN)".into());
        }
        if let Some(k) = self.properties.keys().find(|k| OWNED.contains(&k.as_str())) {
            return Err(format!("source.kafka.properties may not set '{k}' (rockfeed owns offsets and the group)"));
        }
        Ok(())
    }

    /// `rockfeed check --connect`: the brokers answer a metadata request
    /// for every topic, and each exists with partitions. A consumer that
    /// never joins the group: nothing is assigned or committed.
    pub async fn probe(&self) -> Result<String, String> {
        let cfg = self.clone();
        tokio::task::spawn_blocking(move || {
            let c: BaseConsumer<ProbeContext> = cfg
                .client_config()
                .create_with_context(ProbeContext::default())
                .map_err(|e| format!("a Kafka client: {e}"))?;
            let mut found = Vec::new();
            for t in &cfg.topics {
                let md = c.fetch_metadata(Some(t), Duration::from_secs(10)).map_err(|e| {
                    // Serves the queued log lines and errors into the context.
                    let _ = c.poll(Duration::ZERO);
                    let why = c.context().first_error.lock().ok().and_then(|f| f.clone());
                    let why = why.map(|w| format!(" ({w})")).unwrap_or_default();
                    format!("{}: no metadata for topic {t}: {e}{why}", cfg.brokers)
                })?;
                let topic = md.topics().iter().find(|x| x.name() == t.as_str());
                match topic {
                    Some(x) if x.error().is_none() && !x.partitions().is_empty() => {
                        found.push(format!("{t} ({} partitions)", x.partitions().len()));
                    }
                    Some(x) if let Some(e) = x.error() => {
                        return Err(format!("{}: topic {t}: {e:?}", cfg.brokers));
                    }
                    _ => return Err(format!("{}: topic {t} does not exist", cfg.brokers)),
                }
            }
            Ok(format!("{} answered: {}", cfg.brokers, found.join(", ")))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &self.auto_offset_reset)
            .set("queued.max.messages.kbytes", "16384")
            // Latency at the edge: a fetch waits at most 100 ms for data.
            .set("fetch.wait.max.ms", "100")
            .set("partition.assignment.strategy", "range,roundrobin");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        if let Ok(p) = std::env::var(PASSWORD_ENV) {
            c.set("sasl.password", p);
        }
        c
    }
}

/// The preflight's client context: librdkafka's errors and logs, which it
/// repeats for every broker state change while the brokers are down, are
/// not logged; the first error goes into the check's FAIL line instead.
#[derive(Default)]
struct ProbeContext {
    first_error: Mutex<Option<String>>,
}

impl ClientContext for ProbeContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(fac, "librdkafka: {log_message}");
        use rdkafka::config::RDKafkaLogLevel as L;
        if matches!(level, L::Emerg | L::Alert | L::Critical | L::Error)
            && let Ok(mut f) = self.first_error.lock()
        {
            f.get_or_insert_with(|| log_message.to_string());
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if let Ok(mut f) = self.first_error.lock() {
            f.get_or_insert_with(|| format!("{error}: {reason}"));
        }
    }
}

impl ConsumerContext for ProbeContext {}

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

    fn all_partitions(&self) -> Result<TopicPartitionList, SourceError> {
        let mut tpl = TopicPartitionList::new();
        for t in &self.topics {
            let md = self
                .reader
                .fetch_metadata(Some(t), self.timeout)
                .map_err(|e| failed(&format!("metadata of {t}"), e))?;
            for mt in md.topics() {
                if let Some(e) = mt.error() {
                    return Err(SourceError::retry(format!("metadata of {t}: {e:?}")));
                }
                for p in mt.partitions() {
                    tpl.add_partition(mt.name(), p.id());
                }
            }
        }
        Ok(tpl)
    }

    fn decisions_blocking(&self) -> Result<Vec<Decision>, SourceError> {
        let tpl = self.all_partitions()?;
        let c = self.reader.committed_offsets(tpl, self.timeout).map_err(|e| failed("committed offsets", e))?;
        Ok(c.elements().iter().filter_map(|e| Decision::parse(e.metadata())).collect())
    }

    /// Commits `positions` with the decision as every partition's
    /// metadata, each with where that partition's range began and how many
    /// partitions the decision covers.
    fn decide_blocking(&self, d: &Decision, positions: &Positions) -> Result<(), SourceError> {
        let mut tpl = TopicPartitionList::new();
        {
            let parts = self.shared.partitions();
            for ((topic, partition), next) in positions {
                let p = parts.get(&(topic.clone(), *partition));
                let meta = Decision {
                    from: p.and_then(|p| p.start),
                    partitions: Some(positions.len() as u32),
                    base: p.and_then(|p| p.base.clone()),
                    ..d.clone()
                }
                .encode();
                let mut e = tpl.add_partition(topic, *partition);
                e.set_offset(Offset::Offset(*next)).map_err(|e| failed("offset commit", e))?;
                e.set_metadata(meta);
            }
        }
        self.consumer.commit(&tpl, CommitMode::Sync).map_err(|e| failed("offset commit", e))?;
        let mut parts = self.shared.partitions();
        for (k, next) in positions {
            parts.entry(k.clone()).or_default().start = Some(*next);
        }
        Ok(())
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

    /// Where each partition of `d` (a decision this prefix wrote) began and
    /// ended: every partition it was written to must still hold it, and
    /// the broker must still hold the range.
    fn ranges_blocking(&self, d: &Decision) -> Result<Vec<(String, i32, i64, i64)>, SourceError> {
        let tpl = self.all_partitions()?;
        let c = self.reader.committed_offsets(tpl, self.timeout).map_err(|e| failed("committed offsets", e))?;
        let mut ranges = Vec::new();
        let mut covers = None;
        for e in c.elements() {
            let Some(pd) = Decision::parse(e.metadata()) else { continue };
            if pd.prefix != d.prefix || pd.epoch != d.epoch {
                continue;
            }
            let (Offset::Offset(to), Some(from)) = (e.offset(), pd.from) else {
                return Err(SourceError::gone(format!(
                    "{}/{} holds the decision without where its range began",
                    e.topic(),
                    e.partition()
                )));
            };
            covers = pd.partitions;
            ranges.push((e.topic().to_string(), e.partition(), from, to));
        }
        match covers {
            Some(n) if n as usize == ranges.len() => {}
            Some(n) => {
                return Err(SourceError::gone(format!(
                    "only {} of the {n} partitions it was written to still hold it (another instance committed over the others)",
                    ranges.len()
                )));
            }
            None => return Err(SourceError::gone("no partition holds it with its range")),
        }
        for (topic, partition, from, to) in &ranges {
            if from >= to {
                continue;
            }
            let (low, _) = self
                .consumer
                .fetch_watermarks(topic, *partition, self.timeout)
                .map_err(|e| failed(&format!("watermarks of {topic}/{partition}"), e))?;
            if low > *from {
                return Err(SourceError::gone(format!(
                    "Kafka no longer holds offsets {from}..{low} of {topic}/{partition} (retention deleted them)"
                )));
            }
        }
        Ok(ranges)
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
            // Hand over what waits, waiting a little for room.
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
                    Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                }
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

/// Reads `ranges` (topic, partition, from, to) with a consumer of its own
/// (assigned, outside the group: it joins nothing and commits nothing)
/// into `tx`, each partition from `from` up to `to`. An error if a range
/// cannot be read whole (its start deleted meanwhile, or no progress for a
/// minute).
fn read_ranges(
    cfg: &KafkaConfig,
    ranges: &[(String, i32, i64, i64)],
    tx: &mpsc::Sender<RawMessage>,
) -> Result<u64, String> {
    let mut cc = cfg.client_config();
    cc.set("group.id", format!("{}-rebuild", cfg.group_id)).set("auto.offset.reset", "error");
    let consumer: BaseConsumer = cc.create().map_err(|e| format!("Kafka consumer for the rebuild: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    // (topic, partition) → (next offset wanted, end).
    let mut open: HashMap<(String, i32), (i64, i64)> = HashMap::new();
    for (topic, partition, from, to) in ranges.iter().filter(|r| r.2 < r.3) {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*from)).map_err(|e| e.to_string())?;
        open.insert((topic.clone(), *partition), (*from, *to));
    }
    if open.is_empty() {
        return Ok(0);
    }
    consumer.assign(&tpl).map_err(|e| format!("assign for the rebuild: {e}"))?;
    let mut topics: HashMap<String, Arc<str>> = HashMap::new();
    let mut n = 0u64;
    let mut progress = std::time::Instant::now();
    while !open.is_empty() {
        if progress.elapsed() > Duration::from_secs(60) {
            return Err(format!("no progress re-reading {:?} for a minute", open.keys().collect::<Vec<_>>()));
        }
        let m = match consumer.poll(Duration::from_millis(100)) {
            // Nothing: a range may end in records the consumer never hands
            // out (transaction markers); its fetch position says so.
            None => {
                if let Ok(at) = consumer.position() {
                    for e in at.elements() {
                        if let Offset::Offset(p) = e.offset()
                            && open.get(&(e.topic().to_string(), e.partition())).is_some_and(|&(_, to)| p >= to)
                        {
                            open.remove(&(e.topic().to_string(), e.partition()));
                        }
                    }
                }
                continue;
            }
            Some(Err(e)) => return Err(format!("re-reading the range: {e}")),
            Some(Ok(m)) => m,
        };
        let key = (m.topic().to_string(), m.partition());
        let Some(&(next, to)) = open.get(&key) else { continue };
        // Offsets may skip (transaction markers); the range's start was
        // checked against the broker's low watermark, and a start deleted
        // since fails the read (`auto.offset.reset = error`).
        if m.offset() < next {
            continue;
        }
        progress = std::time::Instant::now();
        if m.offset() < to {
            let topic = topics.entry(key.0.clone()).or_insert_with(|| Arc::from(m.topic())).clone();
            if tx.blocking_send(raw(&m, topic, cfg.topic_from_key)).is_err() {
                return Err("the rebuild stopped reading".into());
            }
            n += 1;
        }
        if m.offset() + 1 >= to {
            open.remove(&key);
        } else {
            open.insert(key, (m.offset() + 1, to));
        }
    }
    Ok(n)
}

/// How long a full pipeline channel is waited on before the partitions
/// are paused.
pub const PAUSE_AFTER: Duration = Duration::from_secs(1);

impl EpochSource for KafkaSource {
    // librdkafka's commit and offset fetch block: off the async workers
    // (needs the multi-threaded runtime `rockfeed run` uses).
    async fn decide(&self, d: &Decision, positions: &Positions) -> Result<(), SourceError> {
        tokio::task::block_in_place(|| self.decide_blocking(d, positions))
    }

    async fn decisions(&self) -> Result<Vec<Decision>, SourceError> {
        tokio::task::block_in_place(|| self.decisions_blocking())
    }

    /// Every partition's range of `d` (from its committed offset's
    /// metadata), read by a consumer of its own on a blocking thread.
    fn replay(&self, d: &Decision) -> Result<Replay, SourceError> {
        let ranges = tokio::task::block_in_place(|| self.ranges_blocking(d))?;
        let (tx, rx) = mpsc::channel(1024);
        let cfg = self.cfg.clone();
        let done = tokio::task::spawn_blocking(move || read_ranges(&cfg, &ranges, &tx));
        Ok(Replay { messages: rx, done })
    }
}

/// A librdkafka failure of `what`, classified by its error code. A group
/// that is rebalancing refuses a commit until this member rejoins, and
/// rejoining starts with the revoke callback, which waits for the
/// coordinator, which is deciding: retrying cannot succeed, so it is
/// [`Refused`](crate::pipeline::epoch::SourceErrorKind::Refused) (the epoch is rolled back after a few
/// seconds and replayed from the decided offsets). Anything else may pass.
fn failed(what: &str, e: KafkaError) -> SourceError {
    use rdkafka::types::RDKafkaErrorCode as C;
    let message = format!("{what}: {e}");
    match e.rdkafka_error_code() {
        Some(C::RebalanceInProgress | C::IllegalGeneration | C::UnknownMemberId) => SourceError::refused(message),
        _ => SourceError::retry(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(props: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            group_id: "g".into(),
            topics: vec!["t".into()],
            auto_offset_reset: "earliest".into(),
            properties: props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            key_is_colocation_key: false,
            topic_from_key: false,
            max_buffered: 16,
        }
    }

    #[test]
    fn tls_and_scram_are_built_in() {
        // librdkafka refuses these at creation when built without OpenSSL
        // ("OpenSSL not available at build time").
        for props in [
            vec![("security.protocol", "ssl")],
            vec![
                ("security.protocol", "sasl_ssl"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ],
        ] {
            let (tx, _rx) = mpsc::channel(1);
            let r = KafkaSource::new(&cfg(&props), tx, watch::channel(false).0, Default::default());
            assert!(r.is_ok(), "{props:?}: {:?}", r.err());
            r.unwrap().close();
        }
    }

    #[test]
    fn owned_properties_and_cooperative_rebalancing_are_refused() {
        assert!(cfg(&[("enable.auto.commit", "true")]).validate().is_err());
        assert!(cfg(&[("partition.assignment.strategy", "cooperative-sticky")]).validate().is_err());
        assert!(cfg(&[("fetch.wait.max.ms", "50")]).validate().is_ok());
        let mut c = cfg(&[]);
        c.auto_offset_reset = "smallest-ish".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_commit_refused_for_the_members_generation_is_told_by_its_code() {
        use crate::pipeline::epoch::SourceErrorKind;
        use rdkafka::types::RDKafkaErrorCode as C;
        for code in [C::RebalanceInProgress, C::IllegalGeneration, C::UnknownMemberId] {
            let e = failed("offset commit", KafkaError::ConsumerCommit(code));
            assert_eq!(e.kind, SourceErrorKind::Refused, "{e}");
            assert!(e.message.starts_with("offset commit: "), "{e}");
            assert_eq!(e.retry_for(), Duration::from_secs(5));
        }
        for e in [
            KafkaError::ConsumerCommit(C::RequestTimedOut),
            KafkaError::ConsumerCommit(C::BrokerTransportFailure),
            KafkaError::MetadataFetch(C::UnknownTopicOrPartition),
        ] {
            let e = failed("offset commit", e);
            assert_eq!((e.kind, e.retry_for()), (SourceErrorKind::Retry, Duration::from_secs(60)), "{e}");
        }
    }
}
