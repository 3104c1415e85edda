//! Counters and latency histograms of a running pipeline, the `/metrics`,
//! `/health` and `/ready` endpoints ([`http`]), the end-of-run report
//! ([`report`]), and whether StarRocks takes the loads ([`health`], which
//! the loaders write and `/ready` reads). Every stage writes here and
//! nothing here reads a stage: the counters' label sets live in
//! [`model`](crate::model) and the memory bound in [`budget`](crate::budget).
//!
//! **Counters** ([`Stats`]) are relaxed atomics, bumped per message or per
//! batch. **Latency** is kept in HDR histograms (microseconds, 1 µs to 1 h,
//! three significant digits), one per stage ([`Stage`]):
//!
//! | stage | from → to | weight |
//! | --- | --- | --- |
//! | `event_to_received` | the sample's event time → rockfeed received the message | readings |
//! | `received_to_committed` | received → the Stream Load carrying its aggregate succeeded | readings |
//! | `event_to_committed` | event time → committed (end to end, broker included) | readings |
//! | `stream_load_call` | one load, client side, retries included | loads |
//! | `stream_load_begin_txn`, `_plan`, `_read_data`, `_write_data`, `_commit_publish`, `_total` | the phases StarRocks reports in the load reply (`BeginTxnTimeMs`, …, `LoadTimeMs`) | loads |
//! | `queue_wait_shard_{k}` | decoder hand-off → shard k picks the batch up | samples |
//! | `wal_commit` | a WAL group commit: its write begins → it is durable | commits |
//!
//! Nothing takes a lock per reading: the decoder and each shard record into
//! histograms they own ([`Local`]) and merge them into the shared ones
//! under a lock once per batch (shards, after each load) or once per epoch
//! (decoder). A reading "counts as committed" when the load that carries its
//! aggregate has succeeded, so committed latencies are recorded only then.

pub mod health;
pub mod http;
pub mod process;
pub mod report;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::model::{BadRow, UnknownVehicle};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// Largest latency a histogram holds: one hour, in microseconds.
pub const MAX_US: u64 = 3_600_000_000;

/// An empty latency histogram (µs).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("1 µs .. 1 h at 3 significant digits is valid")
}

/// The stages with a shared histogram (queue waits are per shard, apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    EventToReceived,
    ReceivedToCommitted,
    EventToCommitted,
    LoadCall,
    LoadBeginTxn,
    LoadPlan,
    LoadReadData,
    LoadWriteData,
    LoadCommitPublish,
    LoadTotal,
    /// Cutting an archive file: merge, encode, publish.
    ArchiveUpload,
    /// The transaction interface's calls (exactly-once), each as the client
    /// sees it: `begin`, one `load` per body, `prepare`, `commit`.
    TxnBegin,
    TxnLoad,
    TxnPrepare,
    TxnCommit,
    /// A WAL group commit, write to durable (the acks wait for it).
    WalCommit,
}

impl Stage {
    pub const ALL: [Stage; 16] = [
        Stage::EventToReceived,
        Stage::ReceivedToCommitted,
        Stage::EventToCommitted,
        Stage::LoadCall,
        Stage::LoadBeginTxn,
        Stage::LoadPlan,
        Stage::LoadReadData,
        Stage::LoadWriteData,
        Stage::LoadCommitPublish,
        Stage::LoadTotal,
        Stage::ArchiveUpload,
        Stage::TxnBegin,
        Stage::TxnLoad,
        Stage::TxnPrepare,
        Stage::TxnCommit,
        Stage::WalCommit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::EventToReceived => "event_to_received",
            Stage::ReceivedToCommitted => "received_to_committed",
            Stage::EventToCommitted => "event_to_committed",
            Stage::LoadCall => "stream_load_call",
            Stage::LoadBeginTxn => "stream_load_begin_txn",
            Stage::LoadPlan => "stream_load_plan",
            Stage::LoadReadData => "stream_load_read_data",
            Stage::LoadWriteData => "stream_load_write_data",
            Stage::LoadCommitPublish => "stream_load_commit_publish",
            Stage::LoadTotal => "stream_load_total",
            Stage::ArchiveUpload => "archive_upload",
            Stage::TxnBegin => "txn_begin",
            Stage::TxnLoad => "txn_load",
            Stage::TxnPrepare => "txn_prepare",
            Stage::TxnCommit => "txn_commit",
            Stage::WalCommit => "wal_commit",
        }
    }
}

/// A histogram a task owns and merges into [`Stats`] once per batch.
pub struct Local(pub Histogram<u64>);

impl Default for Local {
    fn default() -> Self {
        Local(histogram())
    }
}

impl Local {
    /// Records `n` occurrences of a latency of `ms` milliseconds (negative
    /// latencies, from clocks that disagree, count as zero).
    pub fn record_ms(&mut self, ms: i64, n: u64) {
        if n > 0 {
            self.0.saturating_record_n((ms.max(0) as u64).saturating_mul(1000), n);
        }
    }
}

/// One published archive file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArchivedFile {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub first_epoch: u64,
    pub last_epoch: u64,
}

/// One epoch (or at-least-once load) of one shard: readings aggregated into
/// StarRocks, readings refused as too late, readings archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Reconciliation {
    pub epoch: u64,
    pub shard: Option<u32>,
    pub aggregated: u64,
    pub too_late: u64,
    pub archived: u64,
}

impl Reconciliation {
    pub fn agrees(&self) -> bool {
        self.aggregated + self.too_late == self.archived
    }
}

/// The last files and epochs kept for the report (bounded).
#[derive(Debug, Default)]
pub struct ArchiveLog {
    pub files: std::collections::VecDeque<ArchivedFile>,
    pub epochs: std::collections::VecDeque<Reconciliation>,
    pub epochs_total: u64,
}

const ARCHIVE_LOG_MAX: usize = 1000;

/// Appends to a log that keeps its last [`ARCHIVE_LOG_MAX`] entries.
fn push_bounded<T>(log: &mut std::collections::VecDeque<T>, item: T) {
    if log.len() == ARCHIVE_LOG_MAX {
        log.pop_front();
    }
    log.push_back(item);
}

/// Counters and histograms, shared by the pipeline's tasks, the metrics
/// endpoint and the report.
#[derive(Debug)]
pub struct Stats {
    pub messages: AtomicU64,
    pub samples: AtomicU64,
    /// Readings accepted by decode (and enrichment).
    pub readings: AtomicU64,
    /// Readings whose aggregate rows were loaded.
    pub readings_committed: AtomicU64,
    /// Stream Load bodies held in memory, and their bound.
    pub bodies: Arc<crate::budget::BodyBudget>,
    /// Refusals by reason (dead-lettered input and rows).
    pub rejected: crate::reject::Rejections,
    pub rows_loaded: AtomicU64,
    pub loads: AtomicU64,
    pub loads_failed: AtomicU64,
    pub epochs: AtomicU64,
    /// Exactly-once / coordinated epochs whose decision is durable.
    pub epochs_decided: AtomicU64,
    /// 2PC transactions committed after their epoch's decision.
    pub txns_committed: AtomicU64,
    /// Decided transactions found ABORTED and loaded again under their label.
    pub txns_reloaded: AtomicU64,
    /// Lost transactions of a decided epoch that recovery rebuilt from the
    /// source's range and committed under their label.
    pub txns_rebuilt: AtomicU64,
    /// Epochs rolled back on a Kafka revoke while the pipeline went on.
    pub epochs_abandoned_on_revoke: AtomicU64,
    /// Pipeline restarts after an abandoned epoch (the source reconnects).
    pub pipeline_restarts: AtomicU64,
    /// StarRocks replies asking for less load (too many versions, the
    /// running-transaction cap, memory, HTTP concurrency).
    pub throttled: AtomicU64,
    /// The epoch length the pacer set last (ms), and each change: (unix
    /// ms, epoch ms), the first 10,000.
    pub epoch_ms: AtomicU64,
    pub epoch_changes: Mutex<Vec<(i64, u64)>>,
    /// Kafka partitions whose consumption jumped past offsets the broker
    /// deleted (retention): (topic, partition) → (resets, offsets skipped).
    pub kafka_offset_resets: Mutex<std::collections::BTreeMap<(String, i32), (u64, u64)>>,
    /// Transactions of undecided epochs rolled back (abandon or recovery).
    pub txns_rolled_back: AtomicU64,
    /// PREPARED transactions of decided epochs committed by recovery.
    pub txns_recovered: AtomicU64,
    /// Decided transactions StarRocks aborted before they could be committed.
    pub txns_lost: AtomicU64,
    /// Dead-letter files removed to respect `dead_letter.max_files`.
    pub dead_letter_files_evicted: AtomicU64,
    /// Batches waiting in each shard's channel, sampled every epoch.
    pub queue_depth: Mutex<Vec<u64>>,
    /// Raw readings fsynced into the archive spool.
    pub archive_readings_spooled: AtomicU64,
    /// Raw readings in published archive files.
    pub archive_readings_published: AtomicU64,
    pub archive_files_published: AtomicU64,
    pub archive_bytes_published: AtomicU64,
    pub archive_upload_failures: AtomicU64,
    /// Files refused because their name holds other content.
    pub archive_conflicts: AtomicU64,
    /// Times spooling waited for the spool's disk bound.
    pub archive_spool_full: AtomicU64,
    /// Raw samples spilled to the spool mid-epoch (`archive.spill_bytes`).
    pub archive_spills: AtomicU64,
    /// Spool writes that failed (at-least-once: those raw readings are not archived).
    pub archive_spool_failures: AtomicU64,
    /// Spool bytes on disk (gauge).
    pub archive_spool_bytes: AtomicU64,
    /// The spool's bound, `archive.spool_max_bytes` (gauge; 0 without an archive).
    pub archive_spool_max_bytes: AtomicU64,
    /// Epochs whose archived and aggregated reading counts disagreed.
    pub reconcile_mismatches: AtomicU64,
    /// The last published files and the last epochs' reconciliation.
    pub archive_log: Mutex<ArchiveLog>,
    /// WAL group commits (one fdatasync each).
    pub wal_commits: AtomicU64,
    /// Records made durable in the WAL.
    pub wal_records: AtomicU64,
    /// Bytes written to the WAL's segment files: frames, the whole blocks
    /// around them, zeros ahead (write amplification = this / payload bytes).
    pub wal_bytes_written: AtomicU64,
    /// Bytes the retained WAL segments hold (gauge).
    pub wal_bytes: AtomicU64,
    /// The WAL's bound, `wal.max_bytes` (gauge; 0 without a WAL).
    pub wal_max_bytes: AtomicU64,
    /// Times the WAL reached `wal.max_bytes` and MQTT intake stopped.
    pub wal_full: AtomicU64,
    /// MQTT messages received (before the WAL), and their payload bytes.
    pub mqtt_received: AtomicU64,
    pub mqtt_payload_bytes: AtomicU64,
    /// MQTT redeliveries dropped by the WAL's dedup horizon.
    pub mqtt_duplicates: AtomicU64,
    /// Socket writes that carried PUBACKs (one per group commit's worth).
    pub mqtt_ack_writes: AtomicU64,
    /// Vehicle dims: refreshes, bad rows, unknown vehicles.
    pub enrich: EnrichStats,
    /// Whether StarRocks takes loads (`/ready`; the loaders report to it).
    pub destination: Arc<crate::telemetry::health::Health>,
    stages: [Mutex<Histogram<u64>>; Stage::ALL.len()],
    queue_wait: Mutex<Vec<Histogram<u64>>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            messages: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            readings: AtomicU64::new(0),
            readings_committed: AtomicU64::new(0),
            rejected: Default::default(),
            bodies: Default::default(),
            rows_loaded: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            loads_failed: AtomicU64::new(0),
            epochs: AtomicU64::new(0),
            epochs_decided: AtomicU64::new(0),
            txns_committed: AtomicU64::new(0),
            txns_reloaded: AtomicU64::new(0),
            txns_rebuilt: AtomicU64::new(0),
            epochs_abandoned_on_revoke: AtomicU64::new(0),
            pipeline_restarts: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            epoch_ms: AtomicU64::new(0),
            epoch_changes: Mutex::default(),
            kafka_offset_resets: Mutex::default(),
            txns_rolled_back: AtomicU64::new(0),
            txns_recovered: AtomicU64::new(0),
            txns_lost: AtomicU64::new(0),
            dead_letter_files_evicted: AtomicU64::new(0),
            queue_depth: Mutex::new(Vec::new()),
            archive_readings_spooled: AtomicU64::new(0),
            archive_readings_published: AtomicU64::new(0),
            archive_files_published: AtomicU64::new(0),
            archive_bytes_published: AtomicU64::new(0),
            archive_upload_failures: AtomicU64::new(0),
            archive_conflicts: AtomicU64::new(0),
            archive_spool_full: AtomicU64::new(0),
            archive_spills: AtomicU64::new(0),
            archive_spool_bytes: AtomicU64::new(0),
            archive_spool_max_bytes: AtomicU64::new(0),
            archive_spool_failures: AtomicU64::new(0),
            reconcile_mismatches: AtomicU64::new(0),
            archive_log: Mutex::new(ArchiveLog::default()),
            wal_commits: AtomicU64::new(0),
            wal_records: AtomicU64::new(0),
            wal_bytes_written: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(0),
            wal_max_bytes: AtomicU64::new(0),
            wal_full: AtomicU64::new(0),
            mqtt_received: AtomicU64::new(0),
            mqtt_payload_bytes: AtomicU64::new(0),
            mqtt_duplicates: AtomicU64::new(0),
            enrich: Default::default(),
            mqtt_ack_writes: AtomicU64::new(0),
            destination: Arc::default(),
            stages: std::array::from_fn(|_| Mutex::new(histogram())),
            queue_wait: Mutex::new(Vec::new()),
        }
    }
}

impl Stats {
    /// Merges a task's local histogram into `stage` and clears it.
    pub fn merge(&self, stage: Stage, local: &mut Local) {
        if local.0.is_empty() {
            return;
        }
        let _ = self.stages[stage as usize].lock().add(&local.0);
        local.0.reset();
    }

    /// Records one value (ms) of a per-load stage directly (one lock per load).
    pub fn record_load_ms(&self, stage: Stage, ms: u64) {
        self.record_us(stage, ms.saturating_mul(1000));
    }

    /// Records one value (µs) of a stage directly (one lock per value).
    pub fn record_us(&self, stage: Stage, us: u64) {
        self.stages[stage as usize].lock().saturating_record(us);
    }

    /// Merges shard `k`'s queue-wait histogram and clears it.
    pub fn merge_queue_wait(&self, k: usize, local: &mut Local) {
        if local.0.is_empty() {
            return;
        }
        let mut q = self.queue_wait.lock();
        if q.len() <= k {
            q.resize_with(k + 1, histogram);
        }
        let _ = q[k].add(&local.0);
        local.0.reset();
    }

    /// Notes a published archive file.
    pub fn archive_file(&self, f: ArchivedFile) {
        push_bounded(&mut self.archive_log.lock().files, f);
    }

    /// Notes an epoch's reconciliation (counted when the sides disagree).
    pub fn reconcile(&self, r: Reconciliation) {
        if !r.agrees() {
            self.reconcile_mismatches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(epoch = r.epoch, shard = ?r.shard, aggregated = r.aggregated, too_late = r.too_late, archived = r.archived, "Archived and aggregated readings disagree.");
        }
        let mut l = self.archive_log.lock();
        push_bounded(&mut l.epochs, r);
        l.epochs_total += 1;
    }

    /// A copy of one stage's histogram.
    pub fn stage(&self, stage: Stage) -> Histogram<u64> {
        self.stages[stage as usize].lock().clone()
    }

    /// Every histogram with its name: the stages, then the shards' queue waits.
    pub fn histograms(&self) -> Vec<(String, Histogram<u64>)> {
        let mut out: Vec<(String, Histogram<u64>)> =
            Stage::ALL.iter().map(|s| (s.name().to_string(), self.stage(*s))).collect();
        for (k, h) in self.queue_wait.lock().iter().enumerate() {
            out.push((format!("queue_wait_shard_{k}"), h.clone()));
        }
        out
    }

    /// (p50, p99, max) of received → committed in ms, if anything landed.
    pub fn latency(&self) -> Option<(u64, u64, u64)> {
        let h = self.stage(Stage::ReceivedToCommitted);
        (!h.is_empty()).then(|| (h.value_at_quantile(0.5) / 1000, h.value_at_quantile(0.99) / 1000, h.max() / 1000))
    }
}

/// Enrichment's counters (`/metrics`, the report).
#[derive(Debug, Default)]
pub struct EnrichStats {
    /// Samples of vehicles not in the dims, by the policy applied.
    pub unknown: [AtomicU64; UnknownVehicle::ALL.len()],
    /// Database refreshes that worked / failed.
    pub refreshes: AtomicU64,
    pub refresh_failures: AtomicU64,
    /// Rows of the dims table left out or used with NULLs, by [`BadRow`].
    pub bad_rows: [AtomicU64; BadRow::ALL.len()],
    /// Vehicles in the current snapshot (gauge).
    pub vehicles: AtomicU64,
}

impl EnrichStats {
    pub fn unknown(&self, p: UnknownVehicle) -> &AtomicU64 {
        &self.unknown[UnknownVehicle::ALL.iter().position(|x| *x == p).expect("listed")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_histograms_merge_into_the_shared_stage_and_start_over() {
        let stats = Stats::default();
        let mut l = Local::default();
        l.record_ms(250, 1000);
        l.record_ms(-5, 10);
        l.record_ms(7, 0);
        stats.merge(Stage::ReceivedToCommitted, &mut l);
        assert!(l.0.is_empty());
        let h = stats.stage(Stage::ReceivedToCommitted);
        assert_eq!(h.len(), 1010, "weights count, negative latencies count as 0");
        assert_eq!(h.min(), 0);
        assert_eq!(stats.latency(), Some((250, 250, 250)));
        l.record_ms(1000, 1);
        stats.merge(Stage::ReceivedToCommitted, &mut l);
        assert_eq!(stats.stage(Stage::ReceivedToCommitted).len(), 1011);
    }

    #[test]
    fn queue_waits_are_kept_per_shard() {
        let stats = Stats::default();
        let mut l = Local::default();
        l.record_ms(3, 2);
        stats.merge_queue_wait(2, &mut l);
        let names: Vec<String> = stats.histograms().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"queue_wait_shard_2".to_string()) && names.contains(&"queue_wait_shard_0".to_string()));
        assert_eq!(stats.histograms().last().unwrap().1.len(), 2);
    }

    #[test]
    fn latencies_beyond_an_hour_saturate_instead_of_failing() {
        let mut l = Local::default();
        l.record_ms(10 * 3_600_000, 1);
        assert!(l.0.max() >= MAX_US - MAX_US / 1000);
    }
}
