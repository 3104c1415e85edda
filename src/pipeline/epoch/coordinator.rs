//! The coordinator's loop: seals epochs, decides and commits them, and paces
//! their length (the module doc of `epoch` has the protocol). A decision
//! made durable is in `decide.rs`, the source's requests in `requests.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::requests::next_request;
use super::{Cut, CutReply, EpochError, PreparedTxn, Rebuilder, ShardDone, ShardError};
use crate::halt::Hook;
use crate::model::Delivery;
use crate::model::epoch::{Decision, EpochSource, Positions, Request};
use crate::pipeline::pace::{Pacer, Signals};
use crate::sink::starrocks::service::StreamLoader;
use crate::sink::starrocks::txn::{Committed, TxnError, TxnLoader, TxnTimeouts};
use crate::telemetry::{Local, Stage, Stats};
use crate::util::now_ms;

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
    pub(super) cfg: CoordinatorConfig,
    pub(super) source: Arc<S>,
    pub(super) loader: Arc<StreamLoader>,
    pub(super) cuts: mpsc::Sender<Cut>,
    pub(super) stats: Arc<Stats>,
    pub(super) next_epoch: u64,
    pub(super) hook: Hook,
    pub(super) received_to_committed: Local,
    pub(super) event_to_committed: Local,
    /// Positions of the last decision (an epoch that moves none and loads
    /// nothing is skipped).
    pub(super) last_decided: Positions,
    /// Each shard's watermark after the last decided epoch: where the next
    /// epoch begins (recorded in its decision).
    pub(super) watermarks: Vec<i64>,
    /// The pipeline a lost transaction of a decided epoch is rebuilt with.
    pub(super) rebuild: Option<Rebuilder>,
    /// The next epoch's length.
    pub(super) pacer: Pacer,
    /// When the coordinator started (the pacer's clock).
    pub(super) started: Instant,
    pub(super) archive: Option<Arc<crate::archive::Archive>>,
    /// The source's requests (revoke, assign), while `run` runs.
    pub(super) requests: Option<mpsc::Receiver<Request>>,
    /// A request that came in while a decision was being retried: the epoch
    /// is abandoned (rolled back) and the request answered only after that,
    /// so the partitions cannot go while its transactions are open.
    pub(super) deferred: Option<Request>,
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

    pub(super) fn exactly_once(&self) -> bool {
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
    pub(super) async fn epoch(&mut self, drain: bool, reset_positions: bool, last: bool) -> Result<(), EpochError> {
        let e = self.next_epoch;
        let (throttled, busy) = (self.loader.throttled(), self.loader.busy());
        let (tx, rx) = oneshot::channel();
        let cut = Cut { epoch: e, drain, reset_positions, last, discard: false, reply: tx };
        if self.cuts.send(cut).await.is_err() {
            return Ok(()); // the decoder has stopped: nothing more to seal
        }
        let Ok(CutReply { positions, shards }) = rx.await else { return Ok(()) };
        let Gathered { txns, received, archived, too_late, watermarks, failure } = gather(shards).await;
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
        if self.exactly_once() {
            self.commit_all(&txns).await?;
        }
        self.committed(e, &received, too_late, archived);
        self.source.committed(&positions);
        self.next_epoch = e + 1;
        self.last_decided = positions.clone();
        self.watermarks = watermarks;
        self.pace(throttled, busy);
        tracing::debug!(epoch = e, txns = txns.len(), partitions = positions.len(), "Epoch committed.");
        Ok(())
    }

    /// Commits a decided epoch's prepared transactions: the first alone
    /// (the test hook halts between two commits), then the rest side by
    /// side.
    async fn commit_all(&mut self, txns: &[PreparedTxn]) -> Result<(), EpochError> {
        let Some((first, rest)) = txns.split_first() else { return Ok(()) };
        let txn = TxnLoader::new(&self.loader, self.cfg.timeouts);
        commit_decided(&txn, &self.stats, first).await?;
        if !rest.is_empty() {
            self.hook.reach("mid_commit").await;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for t in rest {
            let t = t.clone();
            let (loader, stats, timeouts) = (self.loader.clone(), self.stats.clone(), self.cfg.timeouts);
            tasks.spawn(async move { commit_decided(&TxnLoader::new(&loader, timeouts), &stats, &t).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| EpochError::Fatal(format!("a commit task failed: {e}")))??;
        }
        Ok(())
    }

    /// Counts a committed epoch: its readings, their latencies (receive and
    /// event time to now), and the archive's reconciliation; the archive
    /// learns the epoch is decided.
    fn committed(&mut self, e: u64, received: &[crate::model::Received], too_late: u64, archived: u64) {
        let done = now_ms();
        let mut committed = 0u64;
        for r in received {
            let n = r.readings as u64;
            self.received_to_committed.record_ms(done - r.received_ms, n);
            self.event_to_committed.record_ms(done - r.event_ms, n);
            committed += n;
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
}

/// Commits one transaction of a decided epoch; an aborted one is loaded
/// again under its label and committed.
pub(super) async fn commit_decided(txn: &TxnLoader<'_>, stats: &Stats, t: &PreparedTxn) -> Result<(), EpochError> {
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

/// Every shard's part of one epoch, together.
struct Gathered {
    txns: Vec<PreparedTxn>,
    received: Vec<crate::model::Received>,
    archived: u64,
    too_late: u64,
    /// Each shard's newest event time after the epoch.
    watermarks: Vec<i64>,
    /// The first shard failure: the epoch is abandoned.
    failure: Option<ShardError>,
}

async fn gather(shards: Vec<oneshot::Receiver<ShardDone>>) -> Gathered {
    let mut g = Gathered {
        txns: Vec::new(),
        received: Vec::new(),
        archived: 0,
        too_late: 0,
        watermarks: Vec::with_capacity(shards.len()),
        failure: None,
    };
    for s in shards {
        let Ok(done) = s.await else {
            g.failure.get_or_insert(ShardError::Transient("a shard stopped".into()));
            continue;
        };
        g.txns.extend(done.txns);
        g.received.extend(done.received);
        g.archived += done.archived;
        g.too_late += done.too_late;
        g.watermarks.push(done.watermark_ms);
        if let Some(err) = done.error {
            g.failure.get_or_insert(err);
        }
    }
    g
}

pub(super) fn fatal_txn(e: &TxnError) -> EpochError {
    EpochError::Fatal(e.to_string())
}
