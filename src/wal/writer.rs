//! The writer thread: group commits (append, write, one `fdatasync`),
//! then the durable count the source acks up to, the in-memory tail the
//! feeder reads, and the release of segments below a committed epoch.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::segment::Log;
use super::{Record, Shared, horizon};
use crate::telemetry::Stage;

/// The writer thread: group commits until stopped.
pub(super) fn write_loop(sh: &Shared, mut log: Log) {
    let mut last_sync = Instant::now() - sh.cfg.commit_interval.0;
    let mut seq = 1u64;
    let mut batch: Vec<Record> = Vec::new();
    let mut hook = crate::halt::Hook::from_env();
    while next_group(sh, &mut log, last_sync, seq, &mut batch) {
        let frame_bytes: u64 = batch.iter().map(|r| r.frame_len() as u64).sum();
        // No longer waiting; counted in `retained` once written (below).
        sh.pending_bytes.fetch_sub(frame_bytes, Ordering::Relaxed);
        let positions: Vec<u64> = batch.iter().map(|r| log.append(r)).collect();
        last_sync = Instant::now();
        let r = log.write().and_then(|()| {
            // Test hook: a kill with this group written, not synced.
            hook.reach_blocking("wal_before_fsync");
            log.sync()
        });
        if let Err(e) = r {
            let msg = format!("WAL write failed in {}: {e}", sh.cfg.dir.display());
            tracing::error!(error = %msg, "Nothing more is acknowledged; restart rockfeed once the disk is fixed.");
            sh.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(msg);
            return;
        }
        sh.stats.record_us(Stage::WalCommit, last_sync.elapsed().as_micros() as u64);
        // Test hook: a kill with the group durable, not acknowledged.
        hook.reach_blocking("wal_after_fsync");
        seq += batch.len() as u64;
        sh.stats.wal_bytes_written.fetch_add(log.take_written(), Ordering::Relaxed);
        durable(sh, &log, seq, frame_bytes, &mut batch, positions);
        release(sh, &mut log, seq);
    }
}

/// Takes the next group into `batch`: whatever arrives until the interval
/// since the last fsync is over, or until `commit_bytes` wait. The writer
/// sleeps out its interval unasked (appends do not signal it), and only
/// past it, with nothing pending, waits to be woken by the next append: a
/// steady stream costs one wake-up per group commit. `false` when stopping
/// with nothing left.
fn next_group(sh: &Shared, log: &mut Log, last_sync: Instant, seq: u64, batch: &mut Vec<Record>) -> bool {
    let interval = sh.cfg.commit_interval.0;
    let mut i = sh.intake.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        let due = last_sync + interval;
        if now < due && sh.pending_bytes.load(Ordering::Relaxed) < sh.cfg.commit_bytes {
            i = sh.intake_cv.wait_timeout(i, due - now).unwrap_or_else(|p| p.into_inner()).0;
            continue;
        }
        if !i.records.is_empty() {
            break;
        }
        // Idle: wait for work; wake up now and then to release segments.
        i.writer_idle = true;
        i = sh.intake_cv.wait_timeout(i, Duration::from_millis(100)).unwrap_or_else(|p| p.into_inner()).0;
        i.writer_idle = false;
        if i.records.is_empty() {
            drop(i);
            release(sh, log, seq);
            i = sh.intake.lock().unwrap_or_else(|p| p.into_inner());
        }
    }
    if i.records.is_empty() {
        return false;
    }
    std::mem::swap(batch, &mut i.records);
    true
}

/// A group is durable: the count the source acks up to, the counters, and
/// the records for the feeder's tail (or, when the tail would pass
/// `memory_bytes`, an empty tail from the log's end: the feeder reads them
/// from disk).
fn durable(sh: &Shared, log: &Log, seq: u64, frame_bytes: u64, batch: &mut Vec<Record>, positions: Vec<u64>) {
    let bytes = log.retained();
    sh.stats.wal_commits.fetch_add(1, Ordering::Relaxed);
    sh.stats.wal_records.fetch_add(batch.len() as u64, Ordering::Relaxed);
    sh.retained.store(bytes, Ordering::Relaxed);
    sh.stats.wal_bytes.store(bytes, Ordering::Relaxed);
    sh.durable.send_replace(seq);
    {
        let mut t = sh.tail.lock().unwrap_or_else(|p| p.into_inner());
        if t.bytes + frame_bytes > sh.cfg.memory_bytes {
            t.queue.clear();
            t.bytes = 0;
            t.start = log.end();
            batch.clear();
        } else {
            t.bytes += frame_bytes;
            t.queue.extend(batch.drain(..).zip(positions));
        }
    }
    sh.tail_notify.notify_one();
}

/// Deletes the segments below the released position, after saving the
/// identities of the durable records (sequence numbers below `durable`) of
/// the dedup horizon.
fn release(sh: &Shared, log: &mut Log, durable: u64) {
    let to = sh.release_to.load(Ordering::Relaxed);
    if log.releasable(to) == 0 {
        return;
    }
    let ids = sh.intake.lock().unwrap_or_else(|p| p.into_inner()).horizon.durable(durable);
    if let Err(e) = horizon::save(&sh.cfg.dir, *sh.identity.get().expect("set at open"), &ids) {
        tracing::warn!(error = %e, "Cannot save the WAL's dedup horizon; keeping the segments for now.");
        return;
    }
    match log.release(to) {
        Ok(0) => {}
        Ok(n) => {
            sh.retained.store(log.retained(), Ordering::Relaxed);
            sh.stats.wal_bytes.store(log.retained(), Ordering::Relaxed);
            tracing::debug!(segments = n, below = to, "WAL segments released.");
        }
        Err(e) => tracing::warn!(error = %e, "Cannot delete a released WAL segment; retrying later."),
    }
}
