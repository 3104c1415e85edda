//! CSV encoding per core: drained partial rows into a `telemetry_1m` Stream
//! Load body (`\x01`-separated, `\N` for NULL dims), for rows holding one
//! reading (short epochs: sum = min = max, formatted once) and rows folding
//! several.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rockfeed::model::MetricId;
use rockfeed::model::{Agg, PartialGroup};
use rockfeed::pipeline::window::NO_DIMS;
use rockfeed::sink::starrocks::encode::TelemetryCsv;

fn bench(c: &mut Criterion) {
    let names: Vec<String> = (0..1000).map(|m| format!("powertrain.sensor_{m:04}")).collect();
    let metrics: Vec<MetricId> = (0..1000).map(MetricId).collect();
    let vins: Vec<String> = (0..64).map(|v| format!("RFVIN{v:012}")).collect();
    let single: Vec<Agg> = (0..1000)
        .map(|m| {
            let x = (m * 17 % 10_000) as f64 / 7.0;
            Agg { cnt: 1, sum: x, min: x, max: x }
        })
        .collect();
    let folded: Vec<Agg> = (0..1000)
        .map(|m| {
            let x = (m * 17 % 10_000) as f64 / 7.0;
            Agg { cnt: 60, sum: x * 60.0, min: x - 1.5, max: x + 2.25 }
        })
        .collect();
    let dims = [Some("fleet-1"), None, Some("eu-west")];
    let rows = (vins.len() * metrics.len()) as u64;
    let mut csv = TelemetryCsv::default();
    let mut encode = |aggs: &[Agg]| {
        csv.clear();
        for vin in &vins {
            let g = PartialGroup { vin, window_start_ms: 1_714_979_280_000, dims: NO_DIMS, metrics: &metrics, aggs };
            csv.push_group(&g, &dims, |m| names[m.0 as usize].as_str()).expect("safe fields");
        }
        csv.buf.len()
    };
    let bytes = encode(&single) as u64;
    let mut g = c.benchmark_group("encode_csv");
    g.throughput(Throughput::Elements(rows));
    g.bench_function("rows_of_one_reading", |b| b.iter(|| black_box(encode(&single))));
    g.bench_function("rows_of_sixty_readings", |b| b.iter(|| black_box(encode(&folded))));
    g.finish();
    let mut g = c.benchmark_group("encode_csv_bytes");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("rows_of_one_reading", |b| b.iter(|| black_box(encode(&single))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
