//! The epoch coordinator (DESIGN.md §3): cuts the stream into epochs and
//! runs each one through seal → decide → commit.
//!
//! 1. **Seal** epoch e: the decoder hands every shard a seal after exactly
//!    the samples it routed before it, and reports the source positions
//!    after the last message it took. Each shard with rows for a table runs
//!    begin → load → prepare under `{prefix}-{table}-{shard}-{e}` (in
//!    at-least-once mode: a plain labelled Stream Load).
//! 2. **Decide**: once every shard has prepared, the source makes "epoch e
//!    committed at positions P_e" durable ([`EpochSource::decide`]; Kafka:
//!    the group's offset commit with the epoch in the offset metadata). An
//!    ambiguous decide (error or timeout) is resolved by reading the
//!    decision back ([`EpochSource::decided`]), never guessed.
//! 3. **Commit** every prepared transaction of e (idempotent on the FE).
//!    A transaction that ends ABORTED after the decision is loaded again
//!    from memory under the same label (an aborted label may be reused),
//!    so the tables still receive exactly the epoch's rows.
//!
//! Only then is epoch e+1 cut, so at any instant at most one epoch is
//! undecided: recovery knows where to look. **Recovery** (at start and on
//! every partition assignment) reads the decisions the source holds: the
//! PREPARED transactions of each decided epoch are committed (for this
//! instance's prefix and for any other prefix found, since a decided
//! epoch's commit is always right); one StarRocks lost (ABORTED, or a
//! re-load left in PREPARE, rolled back) is rebuilt: the source re-reads
//! the epoch's range ([`EpochSource::replay`], from the `from` position the
//! decision records), a [`Rebuilder`] runs it through a decoder and shards
//! of its own from the recorded watermarks, and only the lost labels are
//! prepared and committed (counted lost only when that cannot be done);
//! labels of this prefix above the last
//! decided epoch E are probed upward and rolled back while PREPARE or
//! PREPARED (cancelled if rollback fails); a COMMITTED one means another
//! writer uses this label prefix, and rockfeed refuses to go on.
//!
//! An epoch with no positions and no rows is skipped without using a
//! number. A source only supplies positions (through the messages) and the
//! three [`EpochSource`] operations; MQTT will supply WAL positions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::pace::{Pacer, Signals};
use crate::config::Delivery;
use crate::sink::starrocks::label::label;
use crate::sink::starrocks::retry::Backoff;
use crate::sink::starrocks::service::StreamLoader;
use crate::sink::starrocks::txn::{Chunk, Committed, TxnError, TxnLoader, TxnTimeouts};
use crate::telemetry::{Local, Stage, Stats};
use crate::util::now_ms;

/// Source positions: (stream, partition) → the next position to read.
pub type Positions = BTreeMap<(Arc<str>, i32), i64>;

/// "Epoch `epoch` of instance `prefix` (with `shards` shards writing
/// `tables`) is decided": what a source stores with its positions. It also
/// says how to rebuild the epoch's rows from the source, should StarRocks
/// lose a transaction of it (issue 14): where the epoch's range began
/// (`from`, a WAL position) and each shard's lateness watermark when it
/// began (`watermarks`, newest event time seen, ms).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub prefix: String,
    pub epoch: u64,
    pub shards: u32,
    pub tables: Vec<String>,
    /// The source position the epoch's range starts at (`None`: not
    /// recorded; the range cannot be re-read).
    pub from: Option<i64>,
    /// Per shard, the newest event time it had seen when the epoch began
    /// (empty, or `i64::MIN`: none).
    pub watermarks: Vec<i64>,
    /// How many partitions the decision was written to (Kafka: a rebuild
    /// must find every one of them still holding it).
    pub partitions: Option<u32>,
    /// The decision this partition held when this instance was assigned it
    /// (Kafka): (prefix, epoch). It tells a previous owner, recovering,
    /// whether its last decision landed before the hand-over.
    pub base: Option<(String, u64)>,
}

const MAGIC: &str = "rockfeed/1";

impl Decision {
    /// `rockfeed/1 <prefix> <epoch> <shards> <table>,<table>[ from=<pos>][ parts=<n>][ base=<prefix>:<epoch>][ wm=<ms>,<ms>]`
    /// (a watermark of none is written empty).
    pub fn encode(&self) -> String {
        let mut s = format!("{MAGIC} {} {} {} {}", self.prefix, self.epoch, self.shards, self.tables.join(","));
        if let Some(f) = self.from {
            s.push_str(&format!(" from={f}"));
        }
        if let Some(n) = self.partitions {
            s.push_str(&format!(" parts={n}"));
        }
        if let Some((p, e)) = &self.base {
            s.push_str(&format!(" base={p}:{e}"));
        }
        if self.watermarks.iter().any(|&w| w != i64::MIN) {
            let w: Vec<String> =
                self.watermarks.iter().map(|&w| if w == i64::MIN { String::new() } else { w.to_string() }).collect();
            s.push_str(&format!(" wm={}", w.join(",")));
        }
        s
    }

    /// `None` for metadata rockfeed did not write.
    pub fn parse(s: &str) -> Option<Decision> {
        let mut it = s.split(' ');
        if it.next()? != MAGIC {
            return None;
        }
        let prefix = it.next()?.to_string();
        let epoch = it.next()?.parse().ok()?;
        let shards = it.next()?.parse().ok()?;
        let tables = it.next()?.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect();
        let mut d = Decision { prefix, epoch, shards, tables, ..Default::default() };
        for field in it {
            if let Some(f) = field.strip_prefix("from=") {
                d.from = Some(f.parse().ok()?);
            } else if let Some(n) = field.strip_prefix("parts=") {
                d.partitions = Some(n.parse().ok()?);
            } else if let Some(b) = field.strip_prefix("base=") {
                let (p, e) = b.rsplit_once(':')?;
                d.base = Some((p.to_string(), e.parse().ok()?));
            } else if let Some(w) = field.strip_prefix("wm=") {
                d.watermarks = w
                    .split(',')
                    .map(|x| if x.is_empty() { Some(i64::MIN) } else { x.parse().ok() })
                    .collect::<Option<_>>()?;
            }
        }
        Some(d)
    }

    /// Shard `k`'s watermark when the epoch began (`i64::MIN`: none).
    pub fn watermark(&self, k: u32) -> i64 {
        self.watermarks.get(k as usize).copied().unwrap_or(i64::MIN)
    }

    fn labels(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.tables.iter().flat_map(move |t| {
            (0..self.shards).filter_map(move |k| label(&self.prefix, t, k, self.epoch).ok().map(|l| (t.clone(), l)))
        })
    }
}

/// What a source does for the epoch protocol.
pub trait EpochSource: Send + Sync + 'static {
    /// Makes `d` durable together with `positions`.
    fn decide(&self, d: &Decision, positions: &Positions) -> impl Future<Output = Result<(), String>> + Send;
    /// Every decision the source holds (Kafka: the offset metadata of every
    /// partition of the subscribed topics, not only the assigned ones).
    fn decisions(&self) -> impl Future<Output = Result<Vec<Decision>, String>> + Send;
    /// Whether `err` says the decision was refused (nothing to read back).
    fn refused(&self, _err: &str) -> bool {
        false
    }
    /// How long a failing decision is retried before the epoch is
    /// abandoned (`err`: the last failure).
    fn retry_for(&self, _err: &str) -> Duration {
        Duration::from_secs(60)
    }
    /// Every transaction of the epoch decided at `positions` is committed:
    /// what lies before them is no longer needed (the WAL deletes segments).
    fn committed(&self, _positions: &Positions) {}
    /// Re-reads the range of `d`, this instance's last decision, into a
    /// channel, for a rebuild of its lost transactions; an error says why
    /// the source cannot (no range recorded, or no longer held).
    fn replay(&self, _d: &Decision) -> Result<Replay, String> {
        Err("this source cannot re-read a decided epoch's range".into())
    }
    /// Whether `d` (or a later epoch of its prefix) is durable.
    fn decided(&self, d: &Decision) -> impl Future<Output = Result<bool, String>> + Send {
        async move { Ok(self.decisions().await?.iter().any(|x| x.prefix == d.prefix && x.epoch >= d.epoch)) }
    }
}

/// A decided epoch's range, re-read from the source: its messages, then
/// the reader's end (how many it read, or why it failed; a failed range is
/// never loaded).
pub struct Replay {
    pub messages: mpsc::Receiver<crate::source::RawMessage>,
    pub done: tokio::task::JoinHandle<Result<u64, String>>,
}

/// Rebuilds lost transactions of a decided epoch: runs the epoch's
/// messages (a channel the source fills, then closes) through a private
/// decoder and shards that prepare only the given labels, and returns
/// those transactions, prepared (`runner::rebuild`).
pub type Rebuilder = Arc<
    dyn Fn(
            Decision,
            Vec<String>,
            mpsc::Receiver<crate::source::RawMessage>,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<Rebuilt, String>> + Send>>
        + Send
        + Sync,
>;

/// What a rebuild prepared: the lost transactions, and the readings the
/// rebuilt telemetry rows aggregate (committed with them).
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub txns: Vec<PreparedTxn>,
    pub readings: u64,
}

/// One table's share of a shard's epoch, prepared (or, at-least-once,
/// already loaded).
#[derive(Debug, Clone)]
pub struct PreparedTxn {
    pub table: String,
    pub label: String,
    /// The body chunks with their format headers, kept until the commit,
    /// so an aborted transaction can be loaded again.
    pub chunks: Vec<Chunk>,
    pub rows: u64,
}

/// A shard's answer to a seal.
#[derive(Debug, Default)]
pub struct ShardDone {
    pub txns: Vec<PreparedTxn>,
    /// (received ms, event ms, readings) of the samples in the epoch.
    pub received: Vec<(i64, i64, u32)>,
    /// Readings archived (spooled) and refused as too late in this epoch.
    pub archived: u64,
    pub too_late: u64,
    /// The shard's newest event time after the epoch (`i64::MIN`: none).
    pub watermark_ms: i64,
    /// Set when the shard could not prepare: the epoch is abandoned.
    pub error: Option<ShardError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// Retryable failures outlasted the attempts: abandon the epoch, replay.
    #[error("{0}")]
    Transient(String),
    /// Another writer owns a label: stop.
    #[error("{0}")]
    Conflict(String),
}

/// A seal request from the coordinator to the decoder.
pub struct Cut {
    pub epoch: u64,
    /// Take everything already queued from the source before sealing (a
    /// rebalance or stop: the source is not sending).
    pub drain: bool,
    /// Forget positions after this cut (partitions were revoked).
    pub reset_positions: bool,
    /// The last cut: the decoder closes the source channel, drains it, seals
    /// and stops.
    pub last: bool,
    /// Seal nothing: drop what the source queued and what the shards hold,
    /// and forget the positions (an epoch was rolled back on a revoke; the
    /// partitions' next owner reads it again from the decided offsets).
    pub discard: bool,
    pub reply: oneshot::Sender<CutReply>,
}

pub struct CutReply {
    pub positions: Positions,
    pub shards: Vec<oneshot::Receiver<ShardDone>>,
}

/// Requests from a source (its rebalance callbacks) to the coordinator.
pub enum Request {
    /// Finish the open epoch now (partitions are being revoked).
    Finish(oneshot::Sender<Result<(), String>>),
    /// Recover after an assignment, before any message of it is read.
    Recover(oneshot::Sender<Result<(), String>>),
}

#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    /// The epoch was rolled back; the pipeline must restart from the
    /// decided positions.
    #[error("epoch {epoch} abandoned: {reason}")]
    Abandoned { epoch: u64, reason: String },
    /// Refuse to go on (another writer, StarRocks says no for good).
    #[error("{0}")]
    Fatal(String),
}

/// Test hook: `ROCKFEED_TEST_HALT_AT=<step>:<n>` stops the process (it logs
/// the step and sleeps, to be killed) the n-th time it reaches `step`:
/// `after_prepare`, `before_note` (decided, not yet noted locally),
/// `after_decide`, `mid_commit` or `mid_reload` (a decided transaction
/// found aborted at commit, its rows loaded again, not yet prepared); in
/// the archive,
/// `archive_mid_frame` (half a spool frame written), `archive_after_seal`,
/// `archive_mid_upload` (file encoded, not published) and
/// `archive_after_publish` (published, spool segment not yet deleted).
#[derive(Debug, Default)]
pub struct Hook {
    at: Option<(String, u64)>,
    seen: BTreeMap<&'static str, u64>,
}

pub const HOOK_ENV: &str = "ROCKFEED_TEST_HALT_AT";

impl Hook {
    pub fn from_env() -> Hook {
        let at = std::env::var(HOOK_ENV).ok().and_then(|v| {
            let (s, n) = v.split_once(':')?;
            Some((s.to_string(), n.parse().ok()?))
        });
        Hook { at, seen: BTreeMap::new() }
    }

    /// [`Hook::reach`] for threads outside the runtime.
    pub fn reach_blocking(&mut self, step: &'static str) {
        if self.hits(step) {
            Hook::halt_blocking(step);
        }
    }

    /// Counts a visit of `step`; true when the hook halts here (the caller
    /// then does its partial work and calls [`Hook::halt_blocking`]).
    pub fn hits(&mut self, step: &'static str) -> bool {
        let Some((s, n)) = &self.at else { return false };
        if s != step {
            return false;
        }
        let c = self.seen.entry(step).or_default();
        *c += 1;
        *c == *n
    }

    pub fn halt_blocking(step: &str) -> ! {
        eprintln!("rockfeed test hook: halted at {step}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    async fn reach(&mut self, step: &'static str) {
        if self.hits(step) {
            Hook::halt(step).await;
        }
    }

    /// [`Hook::hits`] for a step reached from tasks without a hook of
    /// their own (one process-wide count).
    pub fn hits_anywhere(step: &'static str) -> bool {
        static HOOK: std::sync::LazyLock<parking_lot::Mutex<Hook>> =
            std::sync::LazyLock::new(|| parking_lot::Mutex::new(Hook::from_env()));
        HOOK.lock().hits(step)
    }

    /// [`Hook::halt_blocking`] inside the runtime.
    pub async fn halt(step: &str) -> ! {
        eprintln!("rockfeed test hook: halted at {step}");
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}

/// Coordinator settings.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub delivery: Delivery,
    pub prefix: String,
    pub tables: Vec<String>,
    pub shards: u32,
    pub epoch: Duration,
    /// Pacing stretches epochs up to this while StarRocks shows pressure.
    pub max_epoch: Duration,
    pub timeouts: TxnTimeouts,
    /// Where the last decided epoch is noted (`None`: nowhere).
    pub state_dir: Option<std::path::PathBuf>,
}

pub struct Coordinator<S> {
    cfg: CoordinatorConfig,
    source: Arc<S>,
    loader: Arc<StreamLoader>,
    cuts: mpsc::Sender<Cut>,
    stats: Arc<Stats>,
    next_epoch: u64,
    hook: Hook,
    received_to_committed: Local,
    event_to_committed: Local,
    /// Positions of the last decision (an epoch that moves none and loads
    /// nothing is skipped).
    last_decided: Positions,
    /// Each shard's watermark after the last decided epoch: where the next
    /// epoch begins (recorded in its decision).
    watermarks: Vec<i64>,
    /// The pipeline a lost transaction of a decided epoch is rebuilt with.
    rebuild: Option<Rebuilder>,
    /// The next epoch's length.
    pacer: Pacer,
    /// When the coordinator started (the pacer's clock).
    started: Instant,
    archive: Option<Arc<crate::archive::Archive>>,
    /// The source's requests (revoke, assign), while `run` runs.
    requests: Option<mpsc::Receiver<Request>>,
    /// A request that came in while a decision was being retried: the epoch
    /// is abandoned (rolled back) and the request answered only after that,
    /// so the partitions cannot go while its transactions are open.
    deferred: Option<Request>,
}

impl<S: EpochSource> Coordinator<S> {
    pub fn new(
        cfg: CoordinatorConfig,
        source: Arc<S>,
        loader: Arc<StreamLoader>,
        cuts: mpsc::Sender<Cut>,
        stats: Arc<Stats>,
    ) -> Self {
        stats.epoch_ms.store(cfg.epoch.as_millis() as u64, Ordering::Relaxed);
        let pacer = Pacer::new(cfg.epoch, cfg.max_epoch);
        Coordinator {
            cfg,
            source,
            loader,
            cuts,
            stats,
            next_epoch: 1,
            hook: Hook::from_env(),
            received_to_committed: Local::default(),
            event_to_committed: Local::default(),
            last_decided: Positions::new(),
            watermarks: Vec::new(),
            rebuild: None,
            pacer,
            started: Instant::now(),
            archive: None,
            requests: None,
            deferred: None,
        }
    }

    /// The raw archive takes part: told of every decision, cut back at
    /// recovery.
    pub fn with_archive(mut self, archive: Option<Arc<crate::archive::Archive>>) -> Self {
        self.archive = archive;
        self
    }

    /// Lost transactions of this instance's last decided epoch are rebuilt
    /// from the source with this pipeline (without one, they are counted
    /// as lost).
    pub fn with_rebuild(mut self, rebuild: Option<Rebuilder>) -> Self {
        self.rebuild = rebuild;
        self
    }

    fn exactly_once(&self) -> bool {
        self.cfg.delivery == Delivery::ExactlyOnce
    }

    /// Runs epochs until `shutdown` flips (then one last, draining epoch) or
    /// an epoch fails.
    pub async fn run(
        mut self,
        requests: mpsc::Receiver<Request>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), EpochError> {
        self.requests = Some(requests);
        let mut next_cut = tokio::time::Instant::now() + self.pacer.epoch();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                req = next_request(&mut self.requests) => match req {
                    Some(req) => {
                        self.request(req).await?;
                        next_cut = tokio::time::Instant::now() + self.pacer.epoch();
                    }
                    None => break,
                },
                // Bodies reached pipeline.max_epoch_bytes: cut now, so they
                // are loaded, committed and let go (the decoder waits).
                _ = self.stats.bodies.cut_requested() => {
                    let r = self.epoch(false, false, false).await;
                    self.answer_deferred(r).await?;
                    next_cut = tokio::time::Instant::now() + self.pacer.epoch();
                }
                _ = tokio::time::sleep_until(next_cut) => {
                    let r = self.epoch(false, false, false).await;
                    self.answer_deferred(r).await?;
                    // A fixed cadence: the time an epoch takes to commit
                    // does not stretch the next one (the pacer may).
                    next_cut = (next_cut + self.pacer.epoch()).max(tokio::time::Instant::now());
                }
            }
        }
        self.epoch(true, false, true).await
    }

    /// Seal, decide and commit one epoch.
    async fn epoch(&mut self, drain: bool, reset_positions: bool, last: bool) -> Result<(), EpochError> {
        let e = self.next_epoch;
        let (throttled, busy) = (self.loader.throttled(), self.loader.busy());
        let (tx, rx) = oneshot::channel();
        let cut = Cut { epoch: e, drain, reset_positions, last, discard: false, reply: tx };
        if self.cuts.send(cut).await.is_err() {
            return Ok(()); // the decoder has stopped: nothing more to seal
        }
        let Ok(CutReply { positions, shards }) = rx.await else { return Ok(()) };
        let mut txns = Vec::new();
        let mut received = Vec::new();
        let mut failure = None;
        let (mut archived, mut too_late) = (0u64, 0u64);
        let mut watermarks = Vec::with_capacity(shards.len());
        for s in shards {
            let Ok(done) = s.await else {
                failure.get_or_insert(ShardError::Transient("a shard stopped".into()));
                continue;
            };
            txns.extend(done.txns);
            received.extend(done.received);
            archived += done.archived;
            too_late += done.too_late;
            watermarks.push(done.watermark_ms);
            if let Some(err) = done.error {
                failure.get_or_insert(err);
            }
        }
        if let Some(f) = failure {
            self.roll_back(&txns).await;
            return Err(match f {
                ShardError::Conflict(m) => EpochError::Fatal(m),
                ShardError::Transient(reason) => EpochError::Abandoned { epoch: e, reason },
            });
        }
        if txns.is_empty() && positions == self.last_decided && archived == 0 {
            return Ok(()); // nothing new: no decision, no epoch number used
        }
        self.hook.reach("after_prepare").await;
        if self.exactly_once() {
            self.note(&self.note_path("intent"), e);
        }
        let d = Decision {
            prefix: self.cfg.prefix.clone(),
            epoch: e,
            shards: self.cfg.shards,
            tables: self.cfg.tables.clone(),
            watermarks: self.watermarks.clone(),
            ..Default::default()
        };
        if let Err(reason) = self.decide(&d, &positions).await {
            self.roll_back(&txns).await;
            return Err(EpochError::Abandoned { epoch: e, reason });
        }
        self.stats.epochs_decided.fetch_add(1, Ordering::Relaxed);
        self.hook.reach("before_note").await;
        if self.exactly_once() {
            self.note(&self.note_path("decided"), e);
        }
        self.hook.reach("after_decide").await;
        if self.exactly_once() && !txns.is_empty() {
            // The first alone (the test hook halts between two commits),
            // then the rest concurrently.
            let txn = TxnLoader::new(&self.loader, self.cfg.timeouts);
            commit_decided(&txn, &self.stats, &txns[0]).await?;
            if txns.len() > 1 {
                self.hook.reach("mid_commit").await;
            }
            let mut rest = tokio::task::JoinSet::new();
            for t in &txns[1..] {
                let t = t.clone();
                let (loader, stats, timeouts) = (self.loader.clone(), self.stats.clone(), self.cfg.timeouts);
                rest.spawn(async move { commit_decided(&TxnLoader::new(&loader, timeouts), &stats, &t).await });
            }
            while let Some(r) = rest.join_next().await {
                r.map_err(|e| EpochError::Fatal(format!("a commit task failed: {e}")))??;
            }
        }
        let done = now_ms();
        let mut committed = 0u64;
        for (rx, ts, n) in received {
            self.received_to_committed.record_ms(done - rx, n as u64);
            self.event_to_committed.record_ms(done - ts, n as u64);
            committed += n as u64;
        }
        if let Some(a) = &self.archive {
            if self.exactly_once() {
                a.decided(e);
            }
            self.stats.reconcile(crate::telemetry::Reconciliation {
                epoch: e,
                shard: None,
                aggregated: committed,
                too_late,
                archived,
            });
        }
        self.stats.readings_committed.fetch_add(committed, Ordering::Relaxed);
        self.stats.merge(Stage::ReceivedToCommitted, &mut self.received_to_committed);
        self.stats.merge(Stage::EventToCommitted, &mut self.event_to_committed);
        self.source.committed(&positions);
        self.next_epoch = e + 1;
        self.last_decided = positions.clone();
        self.watermarks = watermarks;
        self.pace(throttled, busy);
        tracing::debug!(epoch = e, txns = txns.len(), partitions = positions.len(), "Epoch committed.");
        Ok(())
    }

    /// A source's request: finish the open epoch (a revoke), or recover (an
    /// assignment). An error ends this life of the pipeline.
    async fn request(&mut self, req: Request) -> Result<(), EpochError> {
        match req {
            Request::Finish(reply) => {
                let r = self.epoch(true, true, false).await;
                self.last_decided.clear();
                let r = self.revoked(r).await;
                let _ = reply.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                r
            }
            Request::Recover(reply) => {
                let r = self.recover().await;
                let _ = reply.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                r
            }
        }
    }

    /// An epoch's outcome when a request arrived while it was being decided
    /// (`deferred`): the epoch was abandoned for it, and the request is
    /// served now.
    async fn answer_deferred(&mut self, r: Result<(), EpochError>) -> Result<(), EpochError> {
        let Some(req) = self.deferred.take() else { return r };
        let r = self.revoked(r).await;
        match (req, r) {
            (req, Ok(())) => self.request(req).await,
            (Request::Finish(reply) | Request::Recover(reply), Err(e)) => {
                let _ = reply.send(Err(e.to_string()));
                Err(e)
            }
        }
    }

    /// After a revoke: an epoch that could not be decided was rolled back
    /// (its transactions aborted); what the pipeline still holds of the
    /// revoked partitions is discarded, and so are the archive frames of
    /// the epoch, while the consumer and the pipeline go on (the
    /// partitions' next owner, maybe this one, reads them again from the
    /// decided offsets). If the pipeline cannot discard (a stage stopped),
    /// the error stands and this life ends.
    async fn revoked(&mut self, r: Result<(), EpochError>) -> Result<(), EpochError> {
        let Err(EpochError::Abandoned { epoch, reason }) = r else { return r };
        let (tx, rx) = oneshot::channel();
        let cut = Cut { epoch, drain: true, reset_positions: true, last: false, discard: true, reply: tx };
        if self.cuts.send(cut).await.is_err() || rx.await.is_err() {
            return Err(EpochError::Abandoned { epoch, reason });
        }
        self.last_decided.clear();
        if let Some(a) = &self.archive
            && self.exactly_once()
        {
            a.recover(Some(self.next_epoch - 1)).await.map_err(EpochError::Fatal)?;
        }
        self.stats.epochs_abandoned_on_revoke.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(epoch, %reason, "The open epoch was rolled back on a revoke; the pipeline goes on without it (the partitions' next owner reads it again).");
        Ok(())
    }

    /// Feeds the pacer a committed epoch: replies asking for less load
    /// since `throttled_before`, and the time StarRocks took over its
    /// load calls since `busy_before` (per shard: the shards load side by
    /// side). Only StarRocks' own time counts, not rockfeed's encoding or
    /// fsyncs: a busy rockfeed is not StarRocks' pressure.
    fn pace(&mut self, throttled_before: u64, busy_before: Duration) {
        let before = self.pacer.epoch();
        let throttled = self.loader.throttled().saturating_sub(throttled_before);
        let loading = self.loader.busy().saturating_sub(busy_before) / self.cfg.shards.max(1);
        let next = self.pacer.committed(Signals { throttled, loading }, self.started.elapsed());
        if next != before {
            let ms = next.as_millis() as u64;
            self.stats.epoch_ms.store(ms, Ordering::Relaxed);
            let mut changes = self.stats.epoch_changes.lock();
            if changes.len() < 10_000 {
                changes.push((now_ms(), ms));
            }
            if next > before {
                tracing::info!(epoch = ?next, throttled, ?loading, "StarRocks shows pressure; epochs are stretched.");
            } else {
                tracing::info!(epoch = ?next, "No pressure from StarRocks for a while; epochs shrink back.");
            }
        }
    }

    /// Makes the decision durable; an ambiguous failure is resolved by
    /// reading it back. Gives up (so the epoch is abandoned) after the
    /// source's retry budget of failures that leave it undecided. A request
    /// arriving meanwhile (a revoke's Finish: the group is rebalancing and
    /// waits for this member) abandons the epoch at once, so the rebalance
    /// is not held up longer than the rollback; the request is answered
    /// after it (`deferred`).
    async fn decide(&mut self, d: &Decision, positions: &Positions) -> Result<(), String> {
        let policy = self.loader.policy();
        let started = Instant::now();
        let mut n = 0;
        loop {
            n += 1;
            let err = match self.source.decide(d, positions).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            // A refusal leaves nothing to read back.
            let undecided = if self.source.refused(&err) {
                true
            } else {
                match self.source.decided(d).await {
                    Ok(true) => return Ok(()),
                    Ok(false) => true,
                    // Cannot even read it back: keep trying, the outcome matters.
                    Err(e) => {
                        tracing::warn!(epoch = d.epoch, error = %e, "Cannot read the decision back.");
                        false
                    }
                }
            };
            if undecided && started.elapsed() > self.source.retry_for(&err) {
                return Err(err);
            }
            let delay = policy.delay(n, Backoff::Normal);
            tracing::warn!(epoch = d.epoch, error = %err, ?delay, "Deciding the epoch failed; retrying.");
            let wait = tokio::time::sleep(delay);
            match self.requests.as_mut() {
                Some(rq) => tokio::select! {
                    _ = wait => {}
                    req = rq.recv() => {
                        let why = "the open epoch could not be decided while the group rebalances; it is rolled back";
                        self.deferred = req;
                        return Err(format!("{err}; {why}"));
                    }
                },
                None => wait.await,
            }
        }
    }

    /// `{state_dir}/{prefix}.{what}`: `decided` notes this instance's last
    /// decided epoch, `intent` the epoch it is about to decide (written
    /// first: a crash between a decision and its note leaves the intent).
    fn note_path(&self, what: &str) -> Option<std::path::PathBuf> {
        self.cfg.state_dir.as_ref().map(|d| d.join(format!("{}.{what}", self.cfg.prefix)))
    }

    /// Notes epoch `e` at `path` (fsynced; a failure is logged: the
    /// source's decisions still say what was decided).
    fn note(&self, path: &Option<std::path::PathBuf>, e: u64) {
        let Some(path) = path else { return };
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d)?;
            }
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(format!("{e}\n").as_bytes())?;
            f.sync_data()?;
            std::fs::rename(&tmp, path)
        };
        if let Err(err) = write() {
            tracing::warn!(path = %path.display(), error = %err, "Cannot note the epoch locally.");
        }
    }

    /// The epoch noted at `path`.
    fn noted(&self, path: &Option<std::path::PathBuf>) -> Result<Option<u64>, EpochError> {
        let Some(path) = path else { return Ok(None) };
        match std::fs::read_to_string(path) {
            Ok(t) => t
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| EpochError::Fatal(format!("{} does not hold an epoch number", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(EpochError::Fatal(format!("{}: {e}", path.display()))),
        }
    }

    async fn roll_back(&self, txns: &[PreparedTxn]) {
        if !self.exactly_once() {
            return;
        }
        let txn = TxnLoader::new(&self.loader, self.cfg.timeouts);
        for t in txns {
            txn.abort(&t.table, &t.label).await;
            self.stats.txns_rolled_back.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Recovery (module doc). At-least-once only finds the first epoch
    /// number no label of this prefix has used: its loads commit at once,
    /// so a used label holds data, and a replay must not reuse it.
    pub async fn recover(&mut self) -> Result<(), EpochError> {
        let decisions = loop {
            match self.source.decisions().await {
                Ok(d) => break d,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot read the source's decisions; retrying.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let txn = TxnLoader::new(&self.loader, self.cfg.timeouts);
        // Latest decision per prefix.
        let mut latest: BTreeMap<String, Decision> = BTreeMap::new();
        for d in &decisions {
            if latest.get(&d.prefix).is_none_or(|x| x.epoch < d.epoch) {
                latest.insert(d.prefix.clone(), d.clone());
            }
        }
        // This instance's own note: later than the group's offsets when
        // another instance has since committed over its partitions. Only
        // then: offsets that hold no decision at all (a deleted or reset
        // group) are still refused below, since consumption would restart
        // from the reset position.
        let mut noted = self.noted(&self.note_path("decided"))?;
        // A crash between deciding an epoch and noting it leaves only the
        // intent. If another instance has since committed over every
        // partition that held the decision, the offsets no longer show it;
        // but an instance records the decision it found on a partition when
        // it was assigned it (`base`): one that found this intent's epoch
        // proves the decision landed. Without that proof it did not land
        // where anyone could see it, and the epoch is rolled back below.
        if let Some(intent) = self.noted(&self.note_path("intent"))?
            && intent > noted.unwrap_or(0)
            && latest.get(&self.cfg.prefix).is_none_or(|x| x.epoch < intent)
            && decisions.iter().any(|d| d.base.as_ref().is_some_and(|(p, e)| *p == self.cfg.prefix && *e >= intent))
        {
            tracing::warn!(prefix = %self.cfg.prefix, epoch = intent, "Epoch {intent} was decided but not noted before a crash; another instance took its partitions over after the decision, so it is recovered as decided.");
            self.note(&self.note_path("decided"), intent);
            noted = Some(intent);
        }
        if !latest.is_empty()
            && let Some(noted) = noted
            && latest.get(&self.cfg.prefix).is_none_or(|x| x.epoch < noted)
        {
            tracing::info!(prefix = %self.cfg.prefix, noted, "The group's offsets hold an older decision of this prefix; recovering from the local note.");
            let d = Decision {
                prefix: self.cfg.prefix.clone(),
                epoch: noted,
                shards: self.cfg.shards,
                tables: self.cfg.tables.clone(),
                ..Default::default()
            };
            latest.insert(d.prefix.clone(), d);
        }
        // At-least-once has no prepared transactions to finish.
        let decided_to_finish = if self.exactly_once() { latest.values().collect() } else { Vec::new() };
        for d in decided_to_finish {
            // Transactions of this decided epoch StarRocks no longer holds
            // prepared: (table, label, why).
            let mut gone = Vec::new();
            for (table, l) in d.labels() {
                let st = state_patiently(&txn, &l).await;
                match st.state.as_str() {
                    "PREPARED" => match txn.commit(&table, &l).await.map_err(|e| fatal_txn(&e))? {
                        Committed::Yes => {
                            self.stats.txns_recovered.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(label = %l, epoch = d.epoch, "Recovery committed a prepared transaction of a decided epoch.");
                        }
                        Committed::Aborted { reason } => gone.push((table, l, reason)),
                    },
                    "ABORTED" => gone.push((table, l, st.reason)),
                    // StarRocks aborted the decided epoch's prepared
                    // transaction, rockfeed began loading its rows again
                    // under the label, and stopped (a crash) before that
                    // re-load was prepared. Roll it back (it holds a
                    // running-transaction slot until its timeout), then
                    // rebuild it like an aborted one.
                    "PREPARE" => {
                        let fin = txn.abort(&table, &l).await;
                        self.stats.txns_rolled_back.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(label = %l, now = ?fin, "Recovery rolled back an interrupted re-load of a decided epoch.");
                        gone.push((
                            table,
                            l,
                            "a re-load of the decided epoch's rows was interrupted before it was prepared".into(),
                        ));
                    }
                    _ => {}
                }
            }
            if gone.is_empty() {
                continue;
            }
            // Only this instance's own epoch can be re-read: another
            // prefix's range belongs to another instance's source.
            let rebuilt = if d.prefix == self.cfg.prefix {
                self.rebuild_lost(d, &gone).await?
            } else {
                Err("the epoch belongs to another instance (prefix), whose source this one cannot re-read".into())
            };
            match rebuilt {
                Ok(missing) => {
                    for (_, l, reason) in gone.iter().filter(|g| missing.contains(&g.1)) {
                        lost(
                            l,
                            &format!("{reason}; its rebuild from the source produced no rows to load"),
                            &self.stats,
                        );
                    }
                }
                Err(why) => {
                    for (_, l, reason) in &gone {
                        lost(l, &format!("{reason}; not rebuilt: {why}"), &self.stats);
                    }
                }
            }
        }
        let ours = latest.get(&self.cfg.prefix);
        let decided = ours.map(|d| d.epoch).unwrap_or(0);
        let shards = ours.map(|d| d.shards).unwrap_or(0).max(self.cfg.shards);
        let mut tables = self.cfg.tables.clone();
        for t in ours.map(|d| d.tables.clone()).unwrap_or_default() {
            if !tables.contains(&t) {
                tables.push(t);
            }
        }
        // Probe upward: only decided+1 can hold transactions (the next epoch
        // is cut after the previous commit), the one above is checked too.
        let mut e = decided + 1;
        let mut last_used = None;
        loop {
            let probe = Decision {
                prefix: self.cfg.prefix.clone(),
                epoch: e,
                shards,
                tables: tables.clone(),
                ..Default::default()
            };
            let mut used = false;
            for (table, l) in probe.labels() {
                let st = state_patiently(&txn, &l).await;
                if !self.exactly_once() {
                    // Any state but UNKNOWN: the label is used.
                    used |= st.state != "UNKNOWN";
                    continue;
                }
                match st.state.as_str() {
                    "PREPARE" | "PREPARED" => {
                        used = true;
                        let fin = txn.abort(&table, &l).await;
                        self.stats.txns_rolled_back.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(label = %l, state = %st.state, now = ?fin, "Recovery rolled back a transaction of an undecided epoch.");
                    }
                    "COMMITTED" | "VISIBLE" => {
                        return Err(EpochError::Fatal(format!(
                            "label {l} (epoch {e}) is {} in StarRocks, but the last epoch decided for prefix '{}' is {decided}: \
                             another rockfeed instance uses this label prefix, or the consumer group's offsets were reset. \
                             Give each instance its own starrocks.label_prefix.",
                            st.state, self.cfg.prefix
                        )));
                    }
                    "ABORTED" => used = true,
                    _ => {}
                }
            }
            if used {
                last_used = Some(e);
            }
            if !used && e > decided + 1 {
                break;
            }
            e += 1;
        }
        if !self.exactly_once() {
            // The first epoch after the last one whose labels are used.
            self.next_epoch = self.next_epoch.max(last_used.map_or(decided + 1, |u| u + 1));
            tracing::info!(prefix = %self.cfg.prefix, decided, next = self.next_epoch, "Epoch recovery done (at-least-once: epoch numbers past the used labels).");
            return Ok(());
        }
        self.next_epoch = self.next_epoch.max(decided + 1);
        if let Some(a) = &self.archive {
            // The archive keeps every frame the note calls decided, even
            // when the group's offsets no longer say so.
            let keep = decided.max(noted.unwrap_or(0));
            a.recover(Some(keep)).await.map_err(EpochError::Fatal)?;
        }
        tracing::info!(prefix = %self.cfg.prefix, decided, next = self.next_epoch, "Epoch recovery done.");
        Ok(())
    }
}

impl<S: EpochSource> Coordinator<S> {
    /// Rebuilds the transactions of decided epoch `d` that StarRocks lost
    /// (`gone`: table, label, why) from the source's range, under the same
    /// labels, and commits them. `Err`: why it could not (the rows are
    /// lost); `Ok`: the labels the rebuild had no rows for.
    async fn rebuild_lost(
        &self,
        d: &Decision,
        gone: &[(String, String, String)],
    ) -> Result<Result<Vec<String>, String>, EpochError> {
        let Some(rebuild) = &self.rebuild else { return Ok(Err("no pipeline to rebuild it with".into())) };
        let Replay { messages, done } = match self.source.replay(d) {
            Ok(r) => r,
            Err(why) => return Ok(Err(format!("the source cannot re-read the epoch's range: {why}"))),
        };
        let labels: Vec<String> = gone.iter().map(|g| g.1.clone()).collect();
        tracing::warn!(
            epoch = d.epoch,
            ?labels,
            "StarRocks lost transactions of a decided epoch; rebuilding their rows from the source's range."
        );
        let built = rebuild(d.clone(), labels.clone(), messages).await;
        let read = done.await.map_err(|e| e.to_string()).and_then(|r| r);
        let txn = TxnLoader::new(&self.loader, self.cfg.timeouts);
        let Rebuilt { txns, readings } = match (built, read) {
            (Ok(t), Ok(n)) => {
                tracing::info!(epoch = d.epoch, messages = n, "Re-read the decided epoch's range.");
                t
            }
            (built, read) => {
                // Never load part of a range: roll back what was prepared.
                for t in built.as_ref().map(|b| &b.txns[..]).unwrap_or_default() {
                    txn.abort(&t.table, &t.label).await;
                    self.stats.txns_rolled_back.fetch_add(1, Ordering::Relaxed);
                }
                let why = [built.err(), read.err()].into_iter().flatten().collect::<Vec<_>>().join("; ");
                return Ok(Err(format!("the rebuild failed: {why}")));
            }
        };
        for t in &txns {
            commit_decided(&txn, &self.stats, t).await?;
            self.stats.txns_rebuilt.fetch_add(1, Ordering::Relaxed);
            tracing::info!(label = %t.label, rows = t.rows, epoch = d.epoch, "Recovery rebuilt a lost transaction of a decided epoch and committed it.");
        }
        self.stats.readings_committed.fetch_add(readings, Ordering::Relaxed);
        Ok(Ok(labels.into_iter().filter(|l| !txns.iter().any(|t| &t.label == l)).collect()))
    }
}

/// `get_load_state`, retried until StarRocks answers: recovery cannot
/// decide without it. The loader's health says why it waits (`/ready`).
async fn state_patiently(txn: &TxnLoader<'_>, label: &str) -> crate::sink::starrocks::response::LabelState {
    let mut n = 0;
    loop {
        match txn.state(label).await {
            Ok(s) => return s,
            Err(e) => {
                n += 1;
                tracing::debug!(label, error = %e, "get_load_state failed during recovery; retrying.");
                tokio::time::sleep(Duration::from_secs((1u64 << n.min(5)).min(30))).await;
            }
        }
    }
}

async fn next_request(r: &mut Option<mpsc::Receiver<Request>>) -> Option<Request> {
    match r {
        Some(r) => r.recv().await,
        None => None,
    }
}

/// Commits one transaction of a decided epoch; an aborted one is loaded
/// again under its label and committed.
async fn commit_decided(txn: &TxnLoader<'_>, stats: &Stats, t: &PreparedTxn) -> Result<(), EpochError> {
    loop {
        match txn.commit(&t.table, &t.label).await {
            Ok(Committed::Yes) => {
                stats.txns_committed.fetch_add(1, Ordering::Relaxed);
                stats.loads.fetch_add(1, Ordering::Relaxed);
                stats.rows_loaded.fetch_add(t.rows, Ordering::Relaxed);
                return Ok(());
            }
            Ok(Committed::Aborted { reason }) => {
                stats.txns_reloaded.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(label = %t.label, %reason, "A decided transaction was aborted; loading its rows again under the same label.");
                let reload = if Hook::hits_anywhere("mid_reload") {
                    txn.halting_before_prepare("mid_reload")
                } else {
                    txn.clone()
                };
                reload.prepare(&t.table, &t.label, &t.chunks).await.map_err(|e| fatal_txn(&e))?;
            }
            Err(e) => return Err(fatal_txn(&e)),
        }
    }
}

fn lost(label: &str, reason: &str, stats: &Stats) {
    stats.txns_lost.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        label,
        reason,
        "A transaction of a decided epoch did not commit in StarRocks: its rows are lost (rockfeed_txns_lost_total; a prepared timeout shorter than the outage?)."
    );
}

fn fatal_txn(e: &TxnError) -> EpochError {
    EpochError::Fatal(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_round_trip_and_foreign_metadata_is_ignored() {
        let d = Decision {
            prefix: "edge_7".into(),
            epoch: 42,
            shards: 4,
            tables: vec!["t1".into(), "latest".into()],
            ..Default::default()
        };
        assert_eq!(d.encode(), "rockfeed/1 edge_7 42 4 t1,latest");
        assert_eq!(Decision::parse(&d.encode()), Some(d.clone()));
        // The range and the watermarks a rebuild needs; older decisions
        // without them still parse.
        let full =
            Decision { from: Some(9000), watermarks: vec![i64::MIN, 1_700_000_000_000, -5, i64::MIN], ..d.clone() };
        assert_eq!(full.encode(), "rockfeed/1 edge_7 42 4 t1,latest from=9000 wm=,1700000000000,-5,");
        assert_eq!(Decision::parse(&full.encode()), Some(full.clone()));
        assert_eq!(full.watermark(1), 1_700_000_000_000);
        assert_eq!(full.watermark(7), i64::MIN);
        assert_eq!(Decision::parse("rockfeed/1 p 1 1 t from=x"), None);
        assert_eq!(Decision::parse(""), None);
        assert_eq!(Decision::parse("some other consumer"), None);
        assert_eq!(Decision::parse("rockfeed/1 p notanumber 1 t"), None);
        let labels: Vec<_> = d.labels().map(|(_, l)| l).collect();
        assert_eq!(labels.len(), 8);
        assert!(labels.contains(&"edge_7-latest-3-42".to_string()));
    }
}
