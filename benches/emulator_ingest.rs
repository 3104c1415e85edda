//! Emulator ingest throughput, in MB/s of CSV, so we know it is never the
//! bottleneck of an end-to-end benchmark.
//!
//! The body is what rockfeed sends to `telemetry_1m`: `\x01`-separated
//! partial aggregates, 10,000 vehicles × 100 metrics per minute window.
//! Two measurements: parsing (headers → typed, partitioned, bucketed rows)
//! and parsing plus applying the rows as one aggregate-table version.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::HeaderMap;
use rockfeed::starrocks::ddl::parse_ddl;
use rockfeed::starrocks_emulator::engine::{Table, VersionPolicy};
use rockfeed::starrocks_emulator::load::{LoadSpec, Plan, parse_body};

const DDL: &str = include_str!("../deploy/emulator/docs_examples.sql");

fn body(rows: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * 96);
    for i in 0..rows {
        let vin = i % 10_000;
        let metric = i / 10_000;
        let v = (i % 977) as f64 * 0.25;
        out.extend_from_slice(
            format!(
                "VIN{vin:014}\x012024-05-06 07:{:02}:00\x01metric_{metric:04}\x01fleet_{}\x01model_{}\x01eu-{}\x01{}\x01{v}\x01{v}\x01{v}\n",
                i % 60,
                vin % 20,
                vin % 7,
                vin % 3,
                1 + i % 5
            )
            .as_bytes(),
        );
    }
    out
}

fn bench(c: &mut Criterion) {
    let cat = parse_ddl(DDL).unwrap();
    let def = Arc::new(cat.table("rockfeed", "telemetry_1m").unwrap().clone());
    let mut h = HeaderMap::new();
    h.insert("column_separator", "\\x01".parse().unwrap());
    h.insert("columns", "vehicle_id,window_start,metric,fleet,model,region,cnt,total,min,max".parse().unwrap());
    let spec = LoadSpec::from_headers(&h, &def).unwrap();
    let plan = Plan::new(&spec, def.clone()).unwrap();
    let data = body(100_000);

    let mut g = c.benchmark_group("emulator_ingest");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("parse_csv_telemetry", |b| {
        b.iter(|| {
            let p = parse_body(&spec, &plan, &data).unwrap();
            assert_eq!(p.counts.loaded, 100_000);
            p
        })
    });
    g.bench_function("parse_and_apply_aggregate", |b| {
        b.iter(|| {
            let p = parse_body(&spec, &plan, &data).unwrap();
            let mut t = Table::new(def.clone());
            let mut next = 0;
            t.apply(vec![p.batch], &VersionPolicy::default(), 0, &mut next);
            t.row_count()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
