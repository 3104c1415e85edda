//! The WAL against a model (proptest), and the service end to end.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::io::StdBackend;
use super::ledger::{Entry, Ledger};
use super::segment::{Log, Reader};
use super::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        topic: u8,
        payload: usize,
    },
    Commit,
    /// A crash after this share (‰) of the unsynced bytes reached the files.
    Crash {
        per_mille: u16,
    },
    /// Decide the position of the committed record this far (‰) between the
    /// last decision and the durable end.
    Decide {
        per_mille: u16,
    },
    Release,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 0usize..3000).prop_map(|(topic, payload)| Op::Append { topic, payload }),
        3 => Just(Op::Commit),
        1 => (0u16..=1000).prop_map(|per_mille| Op::Crash { per_mille }),
        2 => (0u16..=1000).prop_map(|per_mille| Op::Decide { per_mille }),
        1 => Just(Op::Release),
    ]
}

fn record(n: usize, topic: u8, payload: usize) -> Record {
    let payload: Vec<u8> = (0..payload).map(|i| (i * 31 + n) as u8).collect();
    Record { qos: (n % 2) as u8, received_ms: n as i64 * 7, topic: format!("t/{topic}/{n}"), payload: payload.into() }
}

/// Everything from `from` to the log's end, read back.
fn replay(dir: &std::path::Path, from: u64, end: u64) -> Vec<(Record, u64)> {
    let mut r = Reader::new(dir, from, end);
    let mut out = Vec::new();
    while let Some(x) = r.next_record().expect("a durable record reads back") {
        out.push(x);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Invariant: after any sequence of appends, group commits, torn crashes,
    /// recoveries, decisions and releases, replay from the last decision
    /// yields exactly the records whose commit completed (plus those a crash
    /// happened to write whole: never acknowledged, redelivered by the
    /// broker, harmless) after that decision, once each, in order — and
    /// nothing else.
    #[test]
    fn replay_after_the_last_decision_is_exactly_what_was_made_durable(ops in prop::collection::vec(op(), 1..120), direct in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let seg = 4096;
        // Direct I/O where the filesystem takes it, else the page cache.
        let backend = || -> Box<dyn io::Backend> {
            if direct { Box::new(StdBackend::probe(dir.path())) } else { Box::new(StdBackend::buffered()) }
        };
        let (mut log, _) = Log::open(dir.path(), seg, backend(), 0).unwrap();
        let mut ledger = Ledger::open(dir.path()).unwrap();
        // The model: durable records with their positions, appended ones
        // not yet committed, the decided position.
        let mut durable: Vec<(Record, u64)> = Vec::new();
        let mut pending: Vec<Record> = Vec::new();
        let mut decided = 0u64;
        let mut n = 0usize;
        for op in ops {
            match op {
                Op::Append { topic, payload } => {
                    let r = record(n, topic, payload);
                    n += 1;
                    let end = durable.last().map(|d| d.1).unwrap_or(decided)
                        + pending.iter().map(|p| p.frame_len() as u64).sum::<u64>()
                        + r.frame_len() as u64;
                    prop_assert_eq!(log.append(&r), end);
                    pending.push(r);
                }
                Op::Commit => {
                    let mut end = durable.last().map(|d| d.1).unwrap_or(decided);
                    for r in pending.drain(..) {
                        end += r.frame_len() as u64;
                        durable.push((r, end));
                    }
                    prop_assert_eq!(log.commit().unwrap(), end);
                }
                Op::Crash { per_mille } => {
                    let bytes: usize = pending.iter().map(|p| p.frame_len()).sum();
                    let written = bytes * per_mille as usize / 1000;
                    log.crash(written).unwrap();
                    // Whole records within the written bytes survive.
                    let mut end = durable.last().map(|d| d.1).unwrap_or(decided);
                    let mut left = written;
                    for r in pending.drain(..) {
                        if r.frame_len() > left {
                            break;
                        }
                        left -= r.frame_len();
                        end += r.frame_len() as u64;
                        durable.push((r, end));
                    }
                    drop(ledger);
                    ledger = Ledger::open(dir.path()).unwrap();
                    let floor = ledger.last().map(|e| e.position).unwrap_or(0);
                    prop_assert_eq!(floor, decided);
                    log = Log::open(dir.path(), seg, backend(), floor).unwrap().0;
                    prop_assert_eq!(log.end(), end);
                    let want: Vec<_> = durable.iter().filter(|d| d.1 > decided).cloned().collect();
                    prop_assert_eq!(replay(dir.path(), decided, log.end()), want);
                }
                Op::Decide { per_mille } => {
                    let after: Vec<u64> = durable.iter().map(|d| d.1).filter(|&p| p > decided).collect();
                    if let Some(&p) = after.get((after.len() * per_mille as usize / 1001).min(after.len().saturating_sub(1))) {
                        ledger.record(Entry { position: p, decision: format!("rockfeed/1 t {p} 1 x") }).unwrap();
                        decided = p;
                    }
                }
                Op::Release => {
                    log.release(decided).unwrap();
                }
            }
        }
        // The log as it stands also replays exactly.
        log.commit().unwrap();
        let mut end = durable.last().map(|d| d.1).unwrap_or(decided);
        for r in pending.drain(..) {
            end += r.frame_len() as u64;
            durable.push((r, end));
        }
        let want: Vec<_> = durable.iter().filter(|d| d.1 > decided).cloned().collect();
        prop_assert_eq!(replay(dir.path(), decided, log.end()), want);
    }
}

#[test]
fn a_torn_segment_before_a_newer_one_cuts_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), 1 << 20, Box::new(StdBackend::probe(dir.path())), 0).unwrap();
    let a = log.append(&record(0, 0, 100));
    log.commit().unwrap();
    let torn_at = log.append(&record(1, 0, 100));
    log.commit().unwrap();
    drop(log);
    // The first segment lost its last record's tail; a newer segment exists.
    let first = segment::segment_path(dir.path(), 0);
    std::fs::OpenOptions::new().write(true).open(&first).unwrap().set_len(torn_at - 10).unwrap();
    std::fs::write(segment::segment_path(dir.path(), torn_at), b"anything").unwrap();
    let (log, rec) = Log::open(dir.path(), 1 << 20, Box::new(StdBackend::probe(dir.path())), 0).unwrap();
    assert_eq!(log.end(), a);
    assert_eq!(rec.removed_segments, 1);
    assert_eq!(rec.torn_bytes, torn_at - 10 - a);
    assert_eq!(replay(dir.path(), 0, log.end()).len(), 1);
}

#[test]
fn an_empty_log_continues_at_the_decided_position_and_refuses_to_end_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), 1 << 20, Box::new(StdBackend::probe(dir.path())), 5000).unwrap();
    assert_eq!(log.append(&record(0, 0, 10)), 5000 + record(0, 0, 10).frame_len() as u64);
    log.commit().unwrap();
    assert!(segment::segment_path(dir.path(), 5000).exists());
    drop(log);
    let err = Log::open(dir.path(), 1 << 20, Box::new(StdBackend::probe(dir.path())), 9000).err().expect("refused");
    assert!(err.to_string().contains("below the decided position 9000"), "{err}");
}

fn wal_cfg(dir: &std::path::Path, io: IoMode, memory_bytes: u64) -> WalConfig {
    WalConfig {
        dir: dir.into(),
        segment_bytes: 1 << 20,
        max_bytes: 4 << 20,
        commit_interval: crate::util::Dur(Duration::from_millis(2)),
        commit_bytes: 1 << 20,
        io,
        memory_bytes,
        dedup_horizon: 1000,
        feed_channel: 1024,
    }
}

/// Appends, waits for durability, and feeds from `from`: what comes out,
/// with positions.
async fn round_trip(io: IoMode, memory_bytes: u64) {
    let dir = tempfile::tempdir().unwrap();
    let stats = Arc::new(crate::telemetry::Stats::default());
    let wal = Wal::open(wal_cfg(dir.path(), io, memory_bytes), stats.clone()).unwrap();
    let mut durable = wal.durable();
    let n = 3000u64;
    for i in 0..n {
        wal.append(record(i as usize, 1, 700));
    }
    // Sequence numbers run from 1: every one below `durable` is durable.
    tokio::time::timeout(Duration::from_secs(10), durable.wait_for(|&d| d == n + 1)).await.unwrap().unwrap();
    // Several segments, several group commits.
    assert!(stats.wal_commits.load(Ordering::Relaxed) >= 1);
    // Each group commit's time is in the `wal_commit` histogram.
    assert_eq!(stats.stage(crate::telemetry::Stage::WalCommit).len(), stats.wal_commits.load(Ordering::Relaxed));
    let (tx, mut rx) = mpsc::channel(16);
    wal.feed(0, tx).unwrap();
    let mut last = 0i64;
    for i in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        let r = record(i as usize, 1, 700);
        assert_eq!((m.topic.as_str(), &m.payload[..]), (r.topic.as_str(), &r.payload[..]));
        let pos = m.position.unwrap().offset;
        assert_eq!(pos + 1 - last, r.frame_len() as i64);
        last = pos + 1;
    }
    drop(rx);
    wal.close();
    // Reopened, the log ends where it did; release drops the old segments
    // (the dedup horizon's identities are saved first).
    let wal = Wal::open(wal_cfg(dir.path(), io, memory_bytes), stats).unwrap();
    let before = segment::list(dir.path()).unwrap();
    assert!(before.len() > 2, "{before:?}");
    wal.release(last as u64);
    assert_eq!(wal.append(record(0, 0, 1)), Appended::New(1));
    let mut durable = wal.durable();
    durable.wait_for(|&d| d == 2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = segment::list(dir.path()).unwrap();
    assert_eq!(after.len(), 1, "{before:?} → {after:?}");
    // A reopened WAL still knows the last 1,000 records, released or not,
    // as already durable: their redeliveries are dropped.
    drop(wal);
    let wal = Wal::open(wal_cfg(dir.path(), io, memory_bytes), Arc::new(Default::default())).unwrap();
    assert_eq!(wal.append(record(n as usize - 1, 1, 700)), Appended::Duplicate(0));
    assert_eq!(wal.append(record(0, 0, 1)), Appended::Duplicate(0));
    // The horizon is the last 1,000 messages: the old 999 and the new one.
    assert_eq!(wal.append(record(n as usize - 999, 1, 700)), Appended::Duplicate(0));
    assert_eq!(wal.append(record(n as usize - 1000, 1, 700)), Appended::New(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_within_the_horizon_is_not_appended_twice_and_acks_with_its_first_copy() {
    let dir = tempfile::tempdir().unwrap();
    let stats = Arc::new(crate::telemetry::Stats::default());
    let wal = Wal::open(wal_cfg(dir.path(), IoMode::Std, 1 << 20), stats.clone()).unwrap();
    let first = wal.append(record(7, 0, 10));
    assert_eq!(first, Appended::New(1));
    assert_eq!(wal.append(record(7, 0, 10)), Appended::Duplicate(1), "the same bytes again");
    assert_eq!(wal.append(record(7, 1, 10)), Appended::New(2), "another topic is another message");
    // Past the horizon (1,000 messages) the first is forgotten.
    for i in 0..1000 {
        wal.append(record(10_000 + i, 2, 1));
    }
    assert_eq!(wal.append(record(7, 0, 10)), Appended::New(1003));
    assert_eq!(stats.mqtt_duplicates.load(Ordering::Relaxed), 1);
    wal.durable().wait_for(|&d| d == 1004).await.unwrap();
    let (tx, mut rx) = mpsc::channel(2000);
    wal.feed(0, tx).unwrap();
    let mut n = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        n += 1;
    }
    assert_eq!(n, 1003, "the duplicate never reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_come_back_in_order_from_memory_with_plain_files() {
    round_trip(IoMode::Std, 64 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_come_back_in_order_from_disk_when_memory_is_short() {
    round_trip(IoMode::Std, 4096).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_come_back_in_order_through_io_uring_where_the_kernel_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    // Probed on a thread of its own: an io_uring runtime cannot start inside this one.
    let path = dir.path().to_path_buf();
    let probe = std::thread::spawn(move || io::UringBackend::probe(&path).map(|_| ())).join().unwrap();
    if let Err(e) = probe {
        eprintln!("skipped: io_uring is not usable here ({e})");
        return;
    }
    round_trip(IoMode::Uring, 64 << 20).await;
    round_trip(IoMode::Uring, 4096).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_cannot_open_a_wal_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let stats = Arc::new(crate::telemetry::Stats::default());
    let wal = Wal::open(wal_cfg(dir.path(), IoMode::Std, 1 << 20), stats.clone()).unwrap();
    // flock is per open file description: a second open, as a second
    // process would do, is refused with a reason.
    let err = Wal::open(wal_cfg(dir.path(), IoMode::Std, 1 << 20), stats.clone()).err().expect("refused");
    assert!(err.contains("in use by another process"), "{err}");
    wal.close();
    Wal::open(wal_cfg(dir.path(), IoMode::Std, 1 << 20), stats).expect("free again once closed");
}

#[test]
fn the_active_segment_is_kept_zero_filled_ahead_and_a_clean_reopen_cuts_no_torn_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let seg = 64 << 10;
    let (mut log, _) = Log::open(dir.path(), seg, Box::new(StdBackend::probe(dir.path())), 0).unwrap();
    let mut end = 0;
    for n in 0..200 {
        end = log.append(&record(n, 0, 500));
        if n % 10 == 9 {
            log.commit().unwrap();
        }
    }
    log.commit().unwrap();
    let files = segment::list(dir.path()).unwrap();
    assert!(files.len() > 1);
    // Closed segments end exactly where the next begins; the newest is
    // zero-filled ahead of its frames.
    for w in files.windows(2) {
        assert_eq!(std::fs::metadata(segment::segment_path(dir.path(), w[0])).unwrap().len(), w[1] - w[0]);
    }
    let newest = *files.last().unwrap();
    let on_disk = std::fs::metadata(segment::segment_path(dir.path(), newest)).unwrap().len();
    assert!(on_disk > end - newest, "{on_disk} vs {}", end - newest);
    drop(log);
    let (log, rec) = Log::open(dir.path(), seg, Box::new(StdBackend::probe(dir.path())), 0).unwrap();
    assert_eq!(rec, segment::Recovered::default());
    assert_eq!(log.end(), end);
    assert_eq!(replay(dir.path(), 0, end).len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reads_publishes_are_taken_in_order_until_the_wal_is_full_and_redeliveries_among_them_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let stats = Arc::new(crate::telemetry::Stats::default());
    // 4 MiB at most: 100 records of ~64 KiB do not all fit.
    let wal = Wal::open(wal_cfg(dir.path(), IoMode::Std, 1 << 20), stats.clone()).unwrap();
    let mut batch: VecDeque<(Record, usize)> = (0..100).map(|n| (record(n, 0, 64 << 10), n)).collect();
    // A redelivery of the first, within the same read.
    batch.insert(1, (record(0, 0, 64 << 10), 1000));
    let mut answers = Vec::new();
    wal.append_while_room(&mut batch, |a, tag| answers.push((tag, a)));
    let taken = answers.len();
    assert!(taken > 40 && !batch.is_empty(), "{taken} taken, {} left", batch.len());
    assert!(wal.full_with(0));
    assert_eq!(answers[..3], [(0, Appended::New(1)), (1000, Appended::Duplicate(1)), (1, Appended::New(2))]);
    // New ones numbered in receive order; what did not fit stays, in order, after them.
    let news: Vec<usize> = answers.iter().filter(|(t, _)| *t != 1000).map(|(t, _)| *t).collect();
    assert_eq!(news, (0..taken - 1).collect::<Vec<_>>());
    assert_eq!(answers.last(), Some(&(taken - 2, Appended::New(taken as u64 - 1))));
    let left: Vec<usize> = batch.iter().map(|(_, t)| *t).collect();
    assert_eq!(left, (taken - 1..100).collect::<Vec<_>>());
    assert_eq!(stats.mqtt_duplicates.load(Ordering::Relaxed), 1);
    // The bound holds to the byte: what was taken fits, and the next would not.
    let frames = |n: usize| record(n, 0, 64 << 10).frame_len() as u64;
    let used: u64 = news.iter().map(|&n| frames(n)).sum();
    assert!(used <= 4 << 20 && used + frames(taken - 1) > 4 << 20, "{used} bytes taken");
}
