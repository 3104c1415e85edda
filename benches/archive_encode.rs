//! The archive's CPU per core:
//! - `archive_encode`: raw readings (interned column-wise as the archive
//!   collects them) sorted by (vin, metric, ts) and written as one zstd
//!   Parquet file with dictionaries and page statistics, in readings/s;
//! - `archive_spool_frame`: one epoch's readings sorted and framed for the
//!   spool (LZ4 blocks with CRCs), the work on every seal;
//! - `archive_cut`: a file cut from 20 spooled epochs: the runs merged and
//!   encoded as Parquet, the work when a file rolls.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rockfeed::archive::merge::{Run, merge};
use rockfeed::archive::parquet::ParquetWriter;
use rockfeed::archive::spool::frame;
use rockfeed::archive::spool::segment::Segment;
use rockfeed::archive::{ArchiveFormat, Raw, RawRows, Schema, ValueKind, encode};

fn rows(vehicles: usize, metrics: usize, samples: usize) -> RawRows {
    let names: Vec<String> = (0..metrics).map(|m| format!("powertrain.sensor_{m:04}")).collect();
    let vins: Vec<String> = (0..vehicles).map(|v| format!("RFVIN{v:012}")).collect();
    let mut r = RawRows::new(3);
    for s in 0..samples {
        for (v, vin) in vins.iter().enumerate() {
            let ts = 1_795_514_400_000 + s as i64 * 1000 + v as i64;
            let source = format!("kafka:telemetry/{}@{}", v % 6, s * vehicles + v);
            let dims = [Some("fleet-1"), if v % 3 == 0 { None } else { Some("model-x") }, Some("eu-west")];
            for (m, name) in names.iter().enumerate() {
                let is_bool = m % 10 == 9;
                r.push(
                    Raw {
                        vin,
                        ts_ms: ts,
                        seq: Some(s as i64),
                        metric: name,
                        value: if is_bool { (s % 2) as f64 } else { ((m * 17 + s * 3) % 10_000) as f64 / 8.0 },
                        kind: if is_bool { ValueKind::Bool } else { ValueKind::Number },
                        received_ms: ts + 120,
                        source: &source,
                    },
                    &dims,
                );
            }
        }
    }
    r
}

fn bench(c: &mut Criterion) {
    let dims: Vec<String> = ["fleet", "model", "region"].iter().map(|s| s.to_string()).collect();
    let schema = Schema::new(&dims);
    // 100 vehicles × 100 metrics × 20 samples = 200k readings per file.
    let r = rows(100, 100, 20);
    let n = r.len() as u64;
    let f = ArchiveFormat::default();
    let size = encode(&r, &schema, f).unwrap().len();
    println!("archive_encode: {n} readings -> {size} bytes of Parquet ({:.2} per reading)", size as f64 / n as f64);
    let mut g = c.benchmark_group("archive_encode");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.bench_function("parquet_zstd_200k_readings", |b| b.iter(|| black_box(encode(&r, &schema, f).unwrap().len())));
    // Side by side: every zstd level the archive might default to.
    for level in [1, 3] {
        let f = ArchiveFormat { zstd_level: level, ..f };
        let size = encode(&r, &schema, f).unwrap().len();
        println!("archive_encode zstd {level}: {size} bytes of Parquet ({:.2} per reading)", size as f64 / n as f64);
        g.bench_function(format!("parquet_zstd{level}_200k_readings"), |b| {
            b.iter(|| black_box(encode(&r, &schema, f).unwrap().len()))
        });
    }
    g.finish();

    let spooled = frame(1, &r, &r.sorted_order()).len();
    println!(
        "archive_spool_frame: {n} readings -> {spooled} spool bytes ({:.2} per reading)",
        spooled as f64 / n as f64
    );
    let mut g = c.benchmark_group("archive_spool_frame");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.bench_function("sort_and_frame_200k_readings", |b| b.iter(|| black_box(frame(1, &r, &r.sorted_order()).len())));
    g.finish();

    // 20 epochs of 10k readings spooled, then cut.
    let dir = tempfile::tempdir().unwrap();
    let mut seg = Segment::create(dir.path(), 0, 1).unwrap();
    let per = rows(100, 100, 1);
    for e in 1..=20u64 {
        seg.append(e, &frame(e, &per, &per.sorted_order()), per.len() as u64).unwrap();
    }
    seg.sync().unwrap();
    let runs: Vec<Run> = seg.frames.iter().map(|fr| Run { path: seg.path.clone(), frame: *fr }).collect();
    let total: u64 = runs.iter().map(|r| r.frame.rows).sum();
    let mut g = c.benchmark_group("archive_cut");
    g.throughput(Throughput::Elements(total));
    g.sample_size(10);
    g.bench_function("merge_20_runs_to_parquet", |b| {
        b.iter(|| {
            let mut w = ParquetWriter::new(Vec::new(), &schema, f).unwrap();
            merge(runs.clone(), dims.len(), 64, 65_536, dir.path(), &mut |rows| {
                w.write(rows).map_err(std::io::Error::other)
            })
            .unwrap();
            black_box(w.finish().unwrap().len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
