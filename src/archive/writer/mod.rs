//! The archive at work: per shard, a **spooler** thread and an **uploader**
//! thread, off the pipeline's async workers.
//!
//! - At every seal the shard hands its epoch's raw samples to its spooler
//!   ([`Archive::spool`]), which splits them by event-time hour, sorts each
//!   hour's readings, appends one frame per hour to that hour's open
//!   segment and fsyncs before it answers. The shard's seal waits for that
//!   answer: an epoch is never decided before its raw rows are durable.
//! - When an epoch is decided ([`Archive::decided`]; at-least-once: as soon
//!   as it is spooled), segments whose every frame is decided may be cut:
//!   by size, age, idleness, a full spool, or a stop. A cut segment is
//!   renamed `sealed-…` and handed to the uploader.
//! - The uploader merges the sealed segment's runs into one Parquet file
//!   (bounded memory), publishes it under its deterministic name, and only
//!   then deletes the segment. Failures retry with back-off forever; the
//!   pipeline is not held up until the spool reaches its disk bound, and
//!   then spooling waits (backpressure).
//! - [`Archive::recover`] (start, and every Kafka assignment) cuts the open
//!   segments back to the last decided epoch (the coordinator's: the later
//!   of the source's decision and its local note).
//!
//! Files: this one holds the [`Archive`] handle and what the threads share;
//! `spooler.rs` the spooler thread, `upload.rs` the uploader thread and the
//! encode of a sealed segment.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as smpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use compact_str::CompactString;
use tokio::sync::oneshot;

use super::roll::RollPolicy;
use super::spool::OPEN_EPOCH;
use super::store::Store;
use super::{ArchiveFormat, Schema};
use crate::decode::Sample;
use crate::decode::catalog::MetricCatalog;
use crate::enrich::DimRow;
use crate::halt::Hook;
use crate::telemetry::Stats;

mod spooler;
mod upload;

use spooler::Spooler;
use upload::uploader;

/// One sample for the archive, as the shard had it.
#[derive(Debug)]
pub struct ArchiveSample {
    pub sample: Sample,
    pub dims: Option<DimRow>,
    pub received_ms: i64,
    /// `kafka:topic/partition@offset` or `mqtt:topic`.
    pub source: CompactString,
}

/// What the archive needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Names this instance's files and spool (`starrocks.label_prefix`).
    pub writer: String,
    pub table: String,
    pub dims: Vec<String>,
    /// `{archive.spool_dir}/{writer}`.
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub roll: RollPolicy,
    pub format: ArchiveFormat,
    /// Runs merged at once when a file is cut.
    pub fan_in: usize,
    /// A shard's raw samples spill to the spool mid-epoch past this many
    /// bytes (estimated).
    pub spill_bytes: u64,
    /// Epochs are decided by the coordinator (else each is final once
    /// spooled).
    pub exactly_once: bool,
}

enum Msg {
    Spool {
        epoch: u64,
        samples: Vec<ArchiveSample>,
        catalog: Arc<RwLock<MetricCatalog>>,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    Decided(u64),
    Recover {
        decided: Option<u64>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Flush(oneshot::Sender<()>),
}

struct Shared {
    settings: Settings,
    schema: Schema,
    store: Store,
    stats: Arc<Stats>,
    rt: tokio::runtime::Handle,
    stopping: AtomicBool,
    /// Segments waiting for (or in) upload.
    pending: AtomicU64,
    /// Bytes of every shard's spool segments: the disk bound's measure.
    spool_bytes: AtomicU64,
    /// Parquet bytes per spool byte of the last file (for the size roll).
    ratio: Mutex<f64>,
    hook: Mutex<Hook>,
    /// The store refuses rockfeed
    /// ([`Destination`](super::store::PublishError::Destination)): logged
    /// once per episode, across shards.
    store_refuses: AtomicBool,
    /// The encoder thread: files are merged and encoded there, one at a
    /// time per instance, so the merge's memory (a block per run, the row
    /// group being encoded) is paid once, and the next file reuses it
    /// (one thread, one allocator arena), instead of once per uploader
    /// thread. Uploads still run side by side.
    encoder: smpsc::Sender<EncodeJob>,
}

type EncodeJob = Box<dyn FnOnce() + Send>;

/// The archive of one rockfeed instance (all shards).
pub struct Archive {
    senders: Vec<smpsc::Sender<Msg>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    shared: Arc<Shared>,
}

impl Archive {
    /// Opens the spool and starts the threads (from within a tokio
    /// runtime). Sealed segments left by an earlier run are uploaded at
    /// once; open ones wait for [`Archive::recover`] with exactly-once, and
    /// are kept whole otherwise.
    pub fn open(settings: Settings, shards: u32, store: Store, stats: Arc<Stats>) -> Result<Arc<Archive>, String> {
        let spool_dir = settings.spool_dir.clone();
        let io = |e: std::io::Error| format!("archive spool {}: {e}", spool_dir.display());
        std::fs::create_dir_all(&settings.spool_dir).map_err(io)?;
        // Workers for every shard directory found too: a shard count that
        // shrank still publishes what its old shards spooled.
        let mut workers = shards;
        for e in std::fs::read_dir(&settings.spool_dir).map_err(io)? {
            let name = e.map_err(io)?.file_name();
            if let Some(k) = name.to_str().and_then(|n| n.strip_prefix("shard-")).and_then(|k| k.parse::<u32>().ok()) {
                workers = workers.max(k + 1);
            }
        }
        let rt = tokio::runtime::Handle::try_current().map_err(|e| format!("archive: {e}"))?;
        stats.archive_spool_max_bytes.store(settings.spool_max_bytes, Ordering::Relaxed);
        // Ends once `Shared` (the only sender) is gone.
        let (encoder, jobs) = smpsc::channel::<EncodeJob>();
        std::thread::Builder::new()
            .name("archive-encode".into())
            .spawn(move || {
                while let Ok(job) = jobs.recv() {
                    job();
                }
            })
            .map_err(io)?;
        let shared = Arc::new(Shared {
            schema: Schema::new(&settings.dims),
            settings,
            store,
            stats,
            rt,
            stopping: AtomicBool::new(false),
            pending: AtomicU64::new(0),
            spool_bytes: AtomicU64::new(0),
            ratio: Mutex::new(0.3),
            hook: Mutex::new(Hook::from_env()),
            store_refuses: AtomicBool::new(false),
            encoder,
        });
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for k in 0..workers {
            let dir = shared.settings.spool_dir.join(format!("shard-{k}"));
            std::fs::create_dir_all(&dir).map_err(io)?;
            let (tx, rx) = smpsc::channel();
            let (up_tx, up_rx) = smpsc::channel();
            let mut sp = Spooler::start(k, dir.clone(), shared.clone(), up_tx).map_err(io)?;
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new().name(format!("archive-spool-{k}")).spawn(move || sp.run(rx)).map_err(io)?,
            );
            threads.push(
                std::thread::Builder::new()
                    .name(format!("archive-upload-{k}"))
                    .spawn(move || uploader(k, dir, s, up_rx))
                    .map_err(io)?,
            );
            senders.push(tx);
        }
        Ok(Arc::new(Archive { senders, threads: Mutex::new(threads), shared }))
    }

    /// Spools shard `k`'s raw samples of `epoch` (the seal: frames spilled
    /// earlier in the epoch get its number); the answer (readings spooled)
    /// comes once they are fsynced.
    pub fn spool(
        &self,
        k: u32,
        epoch: u64,
        samples: Vec<ArchiveSample>,
        catalog: Arc<RwLock<MetricCatalog>>,
    ) -> oneshot::Receiver<Result<u64, String>> {
        let (reply, rx) = oneshot::channel();
        if let Some(s) = self.senders.get(k as usize)
            && let Err(smpsc::SendError(Msg::Spool { reply, .. })) =
                s.send(Msg::Spool { epoch, samples, catalog, reply })
        {
            let _ = reply.send(Err("the archive spooler stopped".into()));
        }
        rx
    }

    /// Spills shard `k`'s raw samples mid-epoch (past `spill_bytes`): spooled
    /// as frames of the open epoch, numbered by the epoch's
    /// [`Archive::spool`]. The answer (readings spooled) comes once they are
    /// written, not synced: the seal syncs.
    pub fn spill(
        &self,
        k: u32,
        samples: Vec<ArchiveSample>,
        catalog: Arc<RwLock<MetricCatalog>>,
    ) -> oneshot::Receiver<Result<u64, String>> {
        self.spool(k, OPEN_EPOCH, samples, catalog)
    }

    /// Raw sample bytes (estimated) past which a shard spills mid-epoch.
    pub fn spill_bytes(&self) -> u64 {
        self.shared.settings.spill_bytes
    }

    /// Epoch `e` is decided: its files may be cut.
    pub fn decided(&self, e: u64) {
        for s in &self.senders {
            let _ = s.send(Msg::Decided(e));
        }
    }

    /// Cuts every open segment back to `decided` (exactly-once; `None`:
    /// keep everything) and resumes.
    pub async fn recover(&self, decided: Option<u64>) -> Result<(), String> {
        let mut replies = Vec::new();
        for s in &self.senders {
            let (reply, rx) = oneshot::channel();
            s.send(Msg::Recover { decided, reply }).map_err(|_| "the archive spooler stopped".to_string())?;
            replies.push(rx);
        }
        for r in replies {
            r.await.map_err(|_| "the archive spooler stopped".to_string())??;
        }
        Ok(())
    }

    /// Stop: cuts every decided segment, waits up to `grace` for the
    /// uploads, then ends the threads. What is not published by then stays
    /// in the spool for the next start.
    pub async fn stop(&self, grace: Duration) {
        let mut replies = Vec::new();
        for s in &self.senders {
            let (reply, rx) = oneshot::channel();
            if s.send(Msg::Flush(reply)).is_ok() {
                replies.push(rx);
            }
        }
        for r in replies {
            let _ = r.await;
        }
        let deadline = Instant::now() + grace;
        while self.shared.pending.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.shared.pending.load(Ordering::Acquire);
        if left > 0 {
            tracing::warn!(
                files = left,
                "Archive files not yet published at stop; they are published at the next start."
            );
        }
        // Spoolers see `stopping` within 250 ms and return, dropping the
        // uploaders' channels; an uploader ends after its current file.
        self.shared.stopping.store(true, Ordering::Release);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let join = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(10), join).await;
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Release);
    }
}

impl Shared {
    /// The test hook (a poisoned lock is still usable).
    fn hook(&self) -> std::sync::MutexGuard<'_, Hook> {
        self.hook.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn account(&self, delta: i64) {
        let now = if delta >= 0 {
            self.spool_bytes.fetch_add(delta as u64, Ordering::AcqRel) + delta as u64
        } else {
            let d = delta.unsigned_abs();
            let mut cur = self.spool_bytes.load(Ordering::Acquire);
            loop {
                let next = cur.saturating_sub(d);
                match self.spool_bytes.compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => break next,
                    Err(c) => cur = c,
                }
            }
        };
        self.stats.archive_spool_bytes.store(now, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::decode::Reading;

    fn sample(ts_ms: i64, metric: crate::model::MetricId, value: f64) -> ArchiveSample {
        ArchiveSample {
            sample: Sample {
                vin: "VIN1".into(),
                ts_ms,
                seq: Some(1),
                readings: vec![Reading { metric, value, is_bool: false }],
            },
            dims: None,
            received_ms: ts_ms,
            source: "mqtt:t".into(),
        }
    }

    async fn files(store: &Store) -> Vec<String> {
        store.list("raw").await.unwrap().into_iter().map(|(p, _)| p).collect()
    }

    fn settings(dir: &Path) -> Settings {
        Settings {
            writer: "w".into(),
            table: "raw".into(),
            dims: vec![],
            spool_dir: dir.to_path_buf(),
            spool_max_bytes: 1 << 30,
            roll: RollPolicy { max_bytes: 1 << 30, max_age: Duration::from_secs(3600), idle: Duration::from_secs(1) },
            format: ArchiveFormat::default(),
            fan_in: 64,
            spill_bytes: 1 << 20,
            exactly_once: true,
        }
    }

    fn spool_files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("shard-0"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// An archive of one shard over a memory store, recovered to
    /// `decided`, and a catalog with one metric.
    struct Fixture {
        a: Arc<Archive>,
        store: Store,
        catalog: Arc<RwLock<MetricCatalog>>,
        m: crate::model::MetricId,
    }

    async fn open(settings: Settings, stats: Arc<Stats>, decided: u64) -> Fixture {
        let store = Store::memory();
        let a = Archive::open(settings, 1, store.clone(), stats).unwrap();
        a.recover(Some(decided)).await.unwrap();
        let catalog = Arc::new(RwLock::new(MetricCatalog::new(10)));
        let m = catalog.write().unwrap().admit("V", "speed", 0).unwrap();
        Fixture { a, store, catalog, m }
    }

    /// Spills mid-epoch: frames of the open epoch, numbered by its seal. A
    /// segment a spill opened under a guessed first epoch is renamed to the
    /// epoch the seal gives it; spills of an epoch never sealed are cut by
    /// recovery; every spilled reading of a sealed epoch is in the file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spills_are_numbered_by_their_seal_and_cut_by_recovery_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let Fixture { a, store, catalog, m } = open(settings(dir.path()), Arc::new(Stats::default()), 4).await;
        // Epoch numbers are not known mid-epoch: the spill's segment is
        // named after the next one it could be (5); the seal says 7.
        assert_eq!(a.spill(0, vec![sample(10, m, 1.0), sample(11, m, 2.0)], catalog.clone()).await.unwrap(), Ok(2));
        assert_eq!(a.spill(0, vec![sample(5, m, 3.0)], catalog.clone()).await.unwrap(), Ok(1));
        assert_eq!(spool_files(dir.path()), ["open-0-5.seg"]);
        assert_eq!(a.spool(0, 7, vec![sample(12, m, 4.0)], catalog.clone()).await.unwrap(), Ok(1));
        assert_eq!(spool_files(dir.path()), ["open-0-7.seg"]);
        let (frames, _) = super::super::spool::scan(&dir.path().join("shard-0/open-0-7.seg")).unwrap();
        assert_eq!(frames.iter().map(|f| (f.epoch, f.rows)).collect::<Vec<_>>(), [(7, 2), (7, 1), (7, 1)]);
        // Epoch 8 spills, then the process dies before its seal: recovery
        // to the decided epoch 7 cuts the spill and keeps epoch 7 whole.
        assert_eq!(a.spill(0, vec![sample(20, m, 5.0)], catalog.clone()).await.unwrap(), Ok(1));
        a.recover(Some(7)).await.unwrap();
        let (frames, _) = super::super::spool::scan(&dir.path().join("shard-0/open-0-7.seg")).unwrap();
        assert_eq!(frames.iter().map(|f| (f.epoch, f.rows)).collect::<Vec<_>>(), [(7, 2), (7, 1), (7, 1)]);
        // Undecided spills keep the segment from being cut; decided, it is.
        assert_eq!(a.spill(0, vec![sample(30, m, 6.0)], catalog.clone()).await.unwrap(), Ok(1));
        a.decided(7);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(files(&store).await.is_empty(), "an open epoch's spill is in the segment");
        assert_eq!(a.spool(0, 8, vec![], catalog).await.unwrap(), Ok(0));
        a.decided(8);
        a.stop(Duration::from_secs(30)).await;
        assert_eq!(files(&store).await, ["raw/dt=1970-01-01/hour=00/part-w-0-7-8.parquet"]);
        assert_eq!(store.rows("raw/dt=1970-01-01/hour=00/part-w-0-7-8.parquet").await.unwrap(), 5);
    }

    /// A full spool whose only uncuttable bytes are the sealing epoch's own
    /// spills: the seal goes on (waiting could never end), counts the full
    /// spool, and the file is cut and published once the epoch is decided.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_seal_does_not_wait_for_room_its_own_spills_hold() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::default());
        let Fixture { a, store, catalog, m } =
            open(Settings { spool_max_bytes: 4000, ..settings(dir.path()) }, stats.clone(), 0).await;
        let many = |from: usize| -> Vec<ArchiveSample> {
            (from..from + 200)
                .map(|i| ArchiveSample {
                    sample: Sample { vin: format!("VIN{i:06}").into(), ..sample(i as i64, m, 1.0).sample },
                    ..sample(i as i64, m, 1.0)
                })
                .collect()
        };
        assert_eq!(a.spool(0, 1, vec![sample(1, m, 1.0)], catalog.clone()).await.unwrap(), Ok(1));
        a.decided(1);
        assert_eq!(a.spill(0, many(0), catalog.clone()).await.unwrap(), Ok(200));
        // About 3 kB spooled: the seal's 200 readings do not fit in 4 kB.
        let seal = tokio::time::timeout(Duration::from_secs(10), a.spool(0, 2, many(200), catalog)).await;
        assert_eq!(seal.expect("the seal went on").unwrap(), Ok(200));
        assert!(stats.archive_spool_full.load(Ordering::Relaxed) > 0, "the spool was full");
        a.decided(2);
        a.stop(Duration::from_secs(30)).await;
        assert_eq!(store.rows("raw/dt=1970-01-01/hour=00/part-w-0-1-2.parquet").await.unwrap(), 401);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_reading_for_a_cut_hour_goes_into_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let Fixture { a, store, catalog, m } = open(settings(dir.path()), Arc::new(Stats::default()), 0).await;
        const H: i64 = 3_600_000;
        assert_eq!(a.spool(0, 1, vec![sample(10, m, 1.0)], catalog.clone()).await.unwrap(), Ok(1));
        // Undecided, the hour's file is never cut, however idle.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(files(&store).await.is_empty());
        a.decided(1);
        for _ in 0..100 {
            if !files(&store).await.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(files(&store).await, ["raw/dt=1970-01-01/hour=00/part-w-0-1-1.parquet"]);
        // A late reading for hour 0 and one for hour 1: the cut file stays
        // as it is, hour 0 gets a second file from epoch 2.
        let late = vec![sample(20, m, 2.0), sample(H + 5, m, 3.0)];
        assert_eq!(a.spool(0, 2, late, catalog).await.unwrap(), Ok(2));
        a.decided(2);
        a.stop(Duration::from_secs(30)).await;
        assert_eq!(
            files(&store).await,
            [
                "raw/dt=1970-01-01/hour=00/part-w-0-1-1.parquet",
                "raw/dt=1970-01-01/hour=00/part-w-0-2-2.parquet",
                "raw/dt=1970-01-01/hour=01/part-w-0-2-2.parquet",
            ]
        );
        for (f, rows) in [("hour=00/part-w-0-1-1", 1), ("hour=00/part-w-0-2-2", 1), ("hour=01/part-w-0-2-2", 1)] {
            assert_eq!(store.rows(&format!("raw/dt=1970-01-01/{f}.parquet")).await.unwrap(), rows);
        }
    }
}
