//! The WAL's write path: append + group commit (write, fdatasync), with
//! plain positional writes and with io_uring side by side, in records/s and
//! MB/s. One group commit per iteration of `group` narrow (~120-byte) or
//! wide (~30 KB) records: what a 2 ms commit interval gathers at ~50k
//! narrow messages/s, or at ~500 wide ones.
//!
//! The numbers include the fsync, so they depend on the disk more than on
//! the CPU; compare the two backends within one run.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rockfeed::wal::Record;
use rockfeed::wal::io::{Backend, StdBackend, UringBackend};
use rockfeed::wal::segment::Log;

fn records(n: usize, payload: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            qos: 1,
            received_ms: 1_795_514_400_000 + i as i64,
            topic: format!("telemetry/RFVIN{:012}/speed", i % 300),
            payload: Bytes::from(vec![b'7'; payload]),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut backends = vec!["std"];
    if rockfeed::wal::io::probe_direct(dir.path()) {
        backends.push("std+direct");
    }
    match UringBackend::probe(dir.path()) {
        Ok(_) => backends.push("io_uring"),
        Err(e) => println!("wal: io_uring not usable here ({e}); plain files only"),
    }
    let make = |name: &str| -> Box<dyn Backend> {
        match name {
            "std" => Box::new(StdBackend::buffered()),
            "std+direct" => Box::new(StdBackend::probe(dir.path())),
            _ => Box::new(UringBackend::probe(dir.path()).unwrap()),
        }
    };
    for (label, group, payload) in [("narrow", 100usize, 60usize), ("wide", 16, 30_000)] {
        let recs = records(group, payload);
        let bytes: usize = recs.iter().map(|r| r.frame_len()).sum();
        let mut g = c.benchmark_group(format!("wal_group_commit_{label}"));
        g.throughput(Throughput::Elements(group as u64));
        for name in &backends {
            let d = tempfile::tempdir().unwrap();
            let (mut log, _) = Log::open(d.path(), 64 << 20, make(name), 0).unwrap();
            g.bench_function(*name, |b| {
                b.iter(|| {
                    for r in &recs {
                        black_box(log.append(r));
                    }
                    log.commit().unwrap();
                    // Keep the directory small: release all but the newest segment.
                    log.release(log.end()).unwrap();
                })
            });
        }
        g.finish();
        println!("wal_group_commit_{label}: {group} records, {bytes} frame bytes per group commit");
    }
}

/// The dedup horizon at its default size (100,000 identities), full, at
/// steady state: every message is remembered once, as `Wal::append` does
/// (one call, which also tells a redelivery).
fn horizon(c: &mut Criterion) {
    use rockfeed::wal::horizon::Horizon;
    let size = 100_000;
    let mut h = Horizon::new(size);
    // Identities are keyed digests: random 128-bit values.
    let mut x = 0x9E37_79B9_7F4A_7C15_u128;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for seq in 0..2 * size as u64 {
        h.remember(next(), seq);
    }
    let mut seq = 2 * size as u64;
    let mut g = c.benchmark_group("wal_horizon");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("remember_1000", |b| {
        b.iter(|| {
            for _ in 0..1000 {
                black_box(h.remember(next(), seq));
                seq += 1;
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench, horizon);
criterion_main!(benches);
