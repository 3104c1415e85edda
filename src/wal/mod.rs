//! The MQTT write-ahead log (DESIGN.md §4): the MQTT side's "Kafka".
//!
//! MQTT cannot replay, so every received message is appended here first,
//! and PUBACKed only once the group commit holding it is fsynced. The
//! pipeline reads the log, never the broker; the epoch protocol decides over
//! log positions, and its decisions live in the log's own ledger.
//!
//! - **On disk** (`wal.dir`): segment files of CRC'd frames (`record.rs`,
//!   `segment.rs`) named by logical position, and the ledger of decisions
//!   (`ledger.rs`). A position is the byte offset after a record in the log
//!   seen as one stream; it never goes back.
//! - **Writer thread** ([`Wal`]): takes what the source appended since its
//!   last pass, writes it and issues one `fdatasync` for all of it — at
//!   most every `commit_interval` (so a stream costs ≤ 500 fsyncs/s by
//!   default), sooner once `commit_bytes` wait — then publishes the count
//!   of durable records (the source acks up to it, in receive order) and
//!   hands the records to the in-memory tail (`writer.rs`). io_uring or
//!   plain files (`io.rs`).
//! - **Tail and feeder** ([`Wal::feed`]): the pipeline is fed from memory
//!   while it keeps up. The tail holds a contiguous run of the newest
//!   durable records, at most `memory_bytes`; when a group commit would
//!   pass that, the tail is emptied and restarts at the log's end. The
//!   feeder reads whatever is below the tail's start from disk, streaming
//!   (a StarRocks outage's backlog drains from disk, memory stays bounded;
//!   `feed.rs`).
//! - **Bounded by disk**: full once the next record would take the retained
//!   log past `max_bytes` ([`Wal::append_while_room`] takes none then); the
//!   source then stops taking messages and the broker holds them in the
//!   session.
//! - **Release**: after an epoch commits, segments wholly below its
//!   position are deleted by the writer thread ([`Wal::release`]).
//!
//! - **Redeliveries**: a broker resends a QoS 1 message whose PUBACK it did
//!   not get (a crash between fsync and PUBACK, a dropped connection). Its
//!   bytes are the same, so a message's identity is a 128-bit keyed digest
//!   of its topic and payload (topic-per-signal payloads carry the vin and
//!   metric in the topic, wide ones in the payload; the sample's vin, seq or
//!   event time are in those bytes). [`Wal::append`] remembers the
//!   identities of the last `dedup_horizon` messages; a message seen within
//!   them is not appended again, and is acknowledged once the first copy is
//!   durable (`rockfeed_mqtt_duplicates_total` counts them). The horizon
//!   survives restarts (`horizon.rs`): the retained segments are re-read at
//!   open, and the identities of durable records are saved before segments
//!   are deleted.
//!
//! Recovery (`Log::open`) cuts a torn tail by length and CRC; the ledger's
//! last decision says where replay starts ([`WalSource`], `source.rs`: the
//! WAL's side of the epoch protocol).

mod feed;
pub mod horizon;
pub mod io;
pub mod ledger;
pub mod record;
pub mod segment;
mod source;
mod writer;

use feed::feed_loop;
pub use source::WalSource;
use writer::write_loop;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::model::RawMessage;
use crate::util::Dur;
use horizon::{Horizon, Identity};
pub use io::IoMode;
use ledger::{Entry, Ledger};
pub use record::Record;
use segment::{Log, Reader};

/// `[wal]`: the MQTT write-ahead log.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// Segments and ledger. Put it on the disk that should absorb an outage.
    pub dir: PathBuf,
    /// A segment is closed past this size (bytes).
    pub segment_bytes: u64,
    /// The retained log's bound (bytes): past it the source stops reading
    /// and the broker holds the backlog.
    pub max_bytes: u64,
    /// At most one fdatasync per interval.
    pub commit_interval: Dur,
    /// Commit sooner once this many bytes wait.
    pub commit_bytes: u64,
    /// `auto` (io_uring where the kernel allows it), `uring` or `std`.
    pub io: IoMode,
    /// Durable records kept in memory for the pipeline (bytes); the rest is
    /// read back from disk.
    pub memory_bytes: u64,
    /// Messages whose identity is remembered to drop broker redeliveries
    /// (see "Redeliveries" above): at least the broker's in-flight window
    /// (`receive_maximum`, mosquitto `max_inflight_messages`).
    pub dedup_horizon: usize,
    /// Durable messages the feeder hands the decoder ahead of it (the
    /// source channel; memory: about this many payloads).
    pub feed_channel: usize,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            dir: PathBuf::from("rockfeed-data/wal"),
            segment_bytes: 64 << 20,
            max_bytes: 8 << 30,
            commit_interval: Dur(Duration::from_millis(2)),
            commit_bytes: 1 << 20,
            io: IoMode::Auto,
            memory_bytes: 64 << 20,
            dedup_horizon: 100_000,
            feed_channel: 1024,
        }
    }
}

impl WalConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes < 1 << 20 {
            return Err("wal.segment_bytes must be at least 1 MiB".into());
        }
        if self.max_bytes < 2 * self.segment_bytes {
            return Err("wal.max_bytes must be at least twice wal.segment_bytes".into());
        }
        if self.commit_interval.0 > Duration::from_secs(1) {
            return Err("wal.commit_interval must be at most 1s (acks wait for it)".into());
        }
        if self.dedup_horizon < 1000 {
            return Err("wal.dedup_horizon must be at least 1000 messages (a broker's in-flight window)".into());
        }
        if self.commit_bytes == 0 || self.memory_bytes == 0 || self.feed_channel == 0 {
            return Err("wal.commit_bytes, wal.memory_bytes and wal.feed_channel must be positive".into());
        }
        Ok(())
    }
}

/// The stream name of WAL positions in [`Positions`](crate::model::epoch::Positions).
pub const STREAM: &str = "wal";

/// Records appended by the source, not yet taken by the writer.
struct Intake {
    records: Vec<Record>,
    /// Sequence number of the next record appended (records since start,
    /// from 1; 0 stands for "durable before this start").
    next_seq: u64,
    /// Identities of the last `dedup_horizon` records.
    horizon: Horizon,
    /// The writer waits for a first record (nothing pending, its interval
    /// over): the next append wakes it. Otherwise appends never signal; the
    /// writer looks again when its interval is over.
    writer_idle: bool,
}

/// Where a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Appended under this sequence number.
    New(u64),
    /// A redelivery of the record with this sequence number (0: durable
    /// before this start); acknowledge it once that one is durable.
    Duplicate(u64),
}

impl Appended {
    /// The sequence number whose durability the ack waits for.
    pub fn seq(self) -> u64 {
        match self {
            Appended::New(s) | Appended::Duplicate(s) => s,
        }
    }
}

/// Durable records for the feeder: `queue` holds exactly the records from
/// `start` up to the log's durable end, in order, each with its position.
#[derive(Default)]
struct Tail {
    queue: VecDeque<(Record, u64)>,
    bytes: u64,
    start: u64,
}

struct Shared {
    cfg: WalConfig,
    /// The digest keys (set by the writer thread at open, from the horizon file).
    identity: std::sync::OnceLock<Identity>,
    intake: Mutex<Intake>,
    intake_cv: Condvar,
    /// Records durable since start (sequence numbers below it).
    durable: watch::Sender<u64>,
    tail: Mutex<Tail>,
    /// Wakes the feeder task (a permit is kept when it is not waiting).
    tail_notify: tokio::sync::Notify,
    /// Bytes the retained segments hold (gauge, for `full`).
    retained: AtomicU64,
    /// Bytes appended and not yet taken by the writer (for `full`, without
    /// the intake's lock).
    pending_bytes: AtomicU64,
    /// Segments at or below this position may be deleted.
    release_to: AtomicU64,
    /// The writer failed (an I/O error): nothing more is durable.
    failed: Mutex<Option<String>>,
    stop: AtomicBool,
    /// Whether the log is at `max_bytes` (logged once per episode).
    full: AtomicBool,
    /// The first dropped redelivery was logged.
    reported_duplicate: AtomicBool,
    stats: Arc<crate::telemetry::Stats>,
}

/// The WAL service: the writer thread and the handles to it.
pub struct Wal {
    /// Holds the directory's exclusive lock until closed.
    lock: Mutex<Option<std::fs::File>>,
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    ledger: Mutex<Ledger>,
    /// The backend in use (`io_uring` or `std`).
    pub io_name: &'static str,
    feeder: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Wal {
    /// Opens the log (recovering a torn tail) and starts the writer thread.
    pub fn open(cfg: WalConfig, stats: Arc<crate::telemetry::Stats>) -> Result<Arc<Wal>, String> {
        cfg.validate()?;
        let ctx = |e: std::io::Error| format!("WAL {}: {e}", cfg.dir.display());
        // One process per WAL: a second one would interleave its writes.
        let lock = lock_dir(&cfg.dir)?;
        let ledger = Ledger::open(&cfg.dir).map_err(ctx)?;
        let floor = ledger.last().map(|e| e.position).unwrap_or(0);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            identity: std::sync::OnceLock::new(),
            intake: Mutex::new(Intake {
                records: Vec::new(),
                next_seq: 1,
                horizon: Horizon::new(cfg.dedup_horizon),
                writer_idle: false,
            }),
            intake_cv: Condvar::new(),
            durable: watch::channel(1).0,
            tail: Mutex::new(Tail::default()),
            tail_notify: tokio::sync::Notify::new(),
            retained: AtomicU64::new(0),
            pending_bytes: AtomicU64::new(0),
            release_to: AtomicU64::new(floor),
            failed: Mutex::new(None),
            stop: AtomicBool::new(false),
            full: AtomicBool::new(false),
            reported_duplicate: AtomicBool::new(false),
            stats,
        });
        shared.stats.wal_max_bytes.store(cfg.max_bytes, Ordering::Relaxed);
        let sh = shared.clone();
        // The log (and an io_uring runtime) lives on the writer thread.
        let writer = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || {
                let opened = io::backend(sh.cfg.io, &sh.cfg.dir)
                    .and_then(|b| Log::open(&sh.cfg.dir, sh.cfg.segment_bytes, b, floor));
                let opened = opened.and_then(|(log, rec)| rebuild_horizon(&sh, &log).map(|()| (log, rec)));
                match opened {
                    Ok((log, rec)) => {
                        let _ = ready_tx.send(Ok((log.io_name(), log.end(), rec)));
                        write_loop(&sh, log);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(ctx)?;
        let (io_name, end, rec) =
            ready_rx.recv().map_err(|_| "the WAL writer thread died".to_string())?.map_err(ctx)?;
        if rec != segment::Recovered::default() {
            tracing::warn!(dir = %cfg.dir.display(), torn_bytes = rec.torn_bytes, removed_segments = rec.removed_segments, "WAL recovery cut a torn tail (records never acknowledged).");
        }
        shared.tail.lock().unwrap_or_else(|p| p.into_inner()).start = end;
        tracing::info!(dir = %cfg.dir.display(), io = io_name, end, decided = floor, "WAL open.");
        Ok(Arc::new(Wal {
            lock: Mutex::new(Some(lock)),
            shared,
            writer: Mutex::new(Some(writer)),
            ledger: Mutex::new(ledger),
            io_name,
            feeder: Mutex::new(None),
        }))
    }

    /// Whether [`Wal::open`] could take the directory's lock now (another
    /// process holds it: an error naming it). The lock is let go at once.
    pub fn probe_lock(dir: &std::path::Path) -> Result<(), String> {
        lock_dir(dir).map(drop)
    }

    /// Appends a record unless it is a redelivery of one within the dedup
    /// horizon; either way, the answer's sequence number says when the
    /// message may be acknowledged ([`Wal::durable`] passes it).
    pub fn append(&self, r: Record) -> Appended {
        let mut one = VecDeque::from([(r, ())]);
        let mut out = None;
        self.append_from(&mut one, false, |a, ()| out = Some(a));
        out.expect("one record, always taken")
    }

    /// Takes records from the front of `batch` (one socket read's
    /// publishes, in receive order) while the log has room for the next,
    /// each as [`Wal::append`] would, and gives `done` each one's answer
    /// with its tag; what is left stays in `batch`. One lock for the batch,
    /// and the dedup horizon's lines are read for all of it first.
    pub fn append_while_room<T>(&self, batch: &mut VecDeque<(Record, T)>, done: impl FnMut(Appended, T)) {
        self.append_from(batch, true, done);
    }

    fn append_from<T>(&self, batch: &mut VecDeque<(Record, T)>, until_full: bool, mut done: impl FnMut(Appended, T)) {
        let identity = self.shared.identity.get().expect("set before open returns");
        let ids: Vec<u128> = batch.iter().map(|(r, _)| identity.of(&r.topic, &r.payload)).collect();
        let limit = self.shared.cfg.commit_bytes;
        let (mut wake, mut duplicates) = (false, 0u64);
        let mut i = self.shared.intake.lock().unwrap_or_else(|p| p.into_inner());
        i.horizon.warm(&ids);
        for id in ids {
            if until_full && self.full_with(batch.front().map_or(0, |(r, _)| r.frame_len() as u64)) {
                break;
            }
            let (r, tag) = batch.pop_front().expect("an identity per record");
            let seq = i.next_seq;
            if let Some(first) = i.horizon.remember(id, seq) {
                duplicates += 1;
                done(Appended::Duplicate(first), tag);
                continue;
            }
            i.next_seq += 1;
            let len = r.frame_len() as u64;
            let before = self.shared.pending_bytes.fetch_add(len, Ordering::Relaxed);
            // Wake the writer only when it waits for a first record, or when
            // this record makes `commit_bytes` wait (a commit before the
            // interval is over); otherwise it looks when its interval ends.
            wake |= std::mem::take(&mut i.writer_idle) || (before < limit && before + len >= limit);
            i.records.push(r);
            done(Appended::New(seq), tag);
        }
        drop(i);
        if wake {
            self.shared.intake_cv.notify_one();
        }
        if duplicates > 0 {
            self.shared.stats.mqtt_duplicates.fetch_add(duplicates, Ordering::Relaxed);
            if !self.shared.reported_duplicate.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    "An MQTT redelivery of a message already in the WAL was dropped (rockfeed_mqtt_duplicates_total counts them)."
                );
            }
        }
    }

    /// The count of durable records (every sequence number below it).
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.shared.durable.subscribe()
    }

    /// Whether the log is at `wal.max_bytes`, or a record of `next` bytes
    /// would take it past (an empty log takes any record: one larger than
    /// the bound would otherwise stop intake for good); the source then
    /// stops taking messages. Once full, it stays so until the log is below
    /// 90% of the bound (a released segment), so intake does not flap.
    /// Counted and logged once per episode.
    fn full_with(&self, next: u64) -> bool {
        let waiting = self.shared.pending_bytes.load(Ordering::Relaxed);
        let used = self.shared.retained.load(Ordering::Relaxed) + waiting;
        let max = self.shared.cfg.max_bytes;
        let was = self.shared.full.load(Ordering::Relaxed);
        let full = if was { used >= max / 10 * 9 } else { used >= max || (used > 0 && used + next > max) };
        if full != was {
            self.shared.full.store(full, Ordering::Relaxed);
            if full {
                self.shared.stats.wal_full.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(max_bytes = max, dir = %self.shared.cfg.dir.display(), "The WAL is full: MQTT intake stops until StarRocks takes the backlog (the broker holds new messages in the session).");
            } else {
                tracing::info!("The WAL has room again; MQTT intake resumes.");
            }
        }
        full
    }

    /// The writer's failure, if it failed.
    pub fn failed(&self) -> Option<String> {
        self.shared.failed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Segments wholly below `pos` may go (an epoch up to it committed).
    pub fn release(&self, pos: u64) {
        self.shared.release_to.fetch_max(pos, Ordering::Relaxed);
    }

    /// The last decision and its position.
    pub fn decided(&self) -> Option<Entry> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner()).last().cloned()
    }

    /// Starts feeding `tx` with every durable record from `from` on (disk,
    /// then the in-memory tail), as a task of the current runtime that ends
    /// when `tx` closes. A previous feeder is stopped first.
    pub fn feed(self: &Arc<Self>, from: u64, tx: mpsc::Sender<RawMessage>) -> std::io::Result<()> {
        let mut slot = self.feeder.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            old.abort();
        }
        let sh = self.shared.clone();
        *slot = Some(tokio::spawn(async move {
            if let Err(e) = feed_loop(&sh, from, &tx).await {
                tracing::error!(error = %e, "Reading the WAL failed; the pipeline stops here.");
                sh.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(format!("reading the WAL: {e}"));
            }
        }));
        Ok(())
    }

    /// Stops the writer (after committing what was appended) and the feeder.
    pub fn close(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.intake_cv.notify_all();
        if let Some(f) = self.feeder.lock().unwrap_or_else(|p| p.into_inner()).take() {
            f.abort();
        }
        if let Some(h) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
        // Released last: the directory is free once nothing writes to it.
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}

/// Creates `dir` and takes the exclusive lock on `dir/lock` (held as long
/// as the file stays open); another holder is an error naming the directory.
fn lock_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    let ctx = |e: std::io::Error| format!("WAL {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(ctx)?;
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("lock")).map_err(ctx)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(format!("WAL {} is in use by another process (another rockfeed with the same wal.dir?)", dir.display()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(ctx(e)),
    }
}

/// Loads the horizon file (keys and the identities of released records),
/// then re-reads the retained log (streaming) for the identities of its
/// records, oldest first.
fn rebuild_horizon(sh: &Shared, log: &Log) -> std::io::Result<()> {
    let (keys, saved) = match horizon::load(&sh.cfg.dir) {
        Ok(Some(x)) => x,
        Ok(None) => (Identity::random(), Vec::new()),
        Err(e) => {
            tracing::warn!(error = %e, "The WAL's dedup horizon file is unreadable; redeliveries of records already released cannot be recognised until the horizon fills again.");
            (Identity::random(), Vec::new())
        }
    };
    let mut i = sh.intake.lock().unwrap_or_else(|p| p.into_inner());
    for id in saved {
        let _ = i.horizon.remember(id, 0);
    }
    let mut rd = Reader::new(&sh.cfg.dir, log.start(), log.end());
    while let Some((r, _)) = rd.next_record()? {
        let _ = i.horizon.remember(keys.of(&r.topic, &r.payload), 0);
    }
    let _ = sh.identity.set(keys);
    Ok(())
}

#[cfg(test)]
mod tests;
