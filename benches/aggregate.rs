//! Pre-aggregation per core: decoded samples folded into tumbling windows
//! (count/sum/min/max per vehicle, window, metric) and drained, for wide
//! 1,000-metric samples and for narrow one-reading samples. Decoding is done
//! once, outside the measurement.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rockfeed::decode::catalog::MetricCatalog;
use rockfeed::decode::narrow::TopicTemplate;
use rockfeed::decode::{DecodeConfig, Decoded, Sample, narrow, wide};
use rockfeed::pipeline::window::{NO_DIMS, WindowAggregator, WindowConfig};

mod support;

use support::NOW;

fn fold(agg: &mut WindowAggregator, samples: &[Sample]) -> u64 {
    for s in samples {
        agg.add(s, NO_DIMS);
    }
    let mut rows = 0u64;
    agg.drain(|g| rows += g.aggs.len() as u64);
    rows
}

fn bench(c: &mut Criterion) {
    let cfg = DecodeConfig::default();
    let mut catalog = MetricCatalog::new(100_000);
    let mut d = Decoded::default();
    for p in support::wide_payloads(64, 1000, 50) {
        wide::decode(&p, NOW, &cfg, &mut catalog, &mut d);
    }
    let wide_samples = std::mem::take(&mut d.samples);
    let readings: u64 = wide_samples.iter().map(|s| s.readings.len() as u64).sum();
    let mut agg = WindowAggregator::new(WindowConfig::default());
    let mut g = c.benchmark_group("aggregate_wide_1000");
    g.throughput(Throughput::Elements(readings));
    g.bench_function("add_and_drain", |b| b.iter(|| black_box(fold(&mut agg, &wide_samples))));
    g.finish();

    let t = TopicTemplate::parse("telemetry/{vin}/{metric}").unwrap();
    let mut d = Decoded::default();
    for i in 0..20_000 {
        let topic = format!("telemetry/RFVIN{:012}/sensor_{:04}", i % 500, i % 97);
        let body = format!("{{\"ts\":{},\"v\":{}.5}}", NOW - (i as i64 % 1000), i % 300);
        narrow::decode(&topic, body.as_bytes(), NOW, &cfg, &t, &mut catalog, &mut d);
    }
    let narrow_samples = std::mem::take(&mut d.samples);
    let mut g = c.benchmark_group("aggregate_narrow");
    g.throughput(Throughput::Elements(narrow_samples.len() as u64));
    g.bench_function("add_and_drain", |b| b.iter(|| black_box(fold(&mut agg, &narrow_samples))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
