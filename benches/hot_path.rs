//! The hot path per core: decode → route → aggregate → encode (DESIGN.md §7),
//! for wide 1,000-metric samples and narrow one-signal messages, with the
//! parse-only baseline (sonic-rs DOM + sum) measured on the same payloads in
//! the same run and the ratio printed.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rockfeed::decode::catalog::MetricCatalog;
use rockfeed::decode::narrow::TopicTemplate;
use rockfeed::decode::{DecodeConfig, Decoded, narrow, wide};
use rockfeed::pipeline::route::shard_of;
use rockfeed::pipeline::window::{NO_DIMS, WindowAggregator, WindowConfig};
use rockfeed::sink::starrocks::encode::TelemetryCsv;
use sonic_rs::JsonValueTrait;

mod support;

use support::NOW;

/// decode → route → aggregate (one aggregator per shard) → encode every row.
struct Path {
    cfg: DecodeConfig,
    catalog: MetricCatalog,
    decoded: Decoded,
    shards: Vec<WindowAggregator>,
    csv: TelemetryCsv,
}

impl Path {
    fn new() -> Self {
        Path {
            cfg: DecodeConfig::default(),
            catalog: MetricCatalog::new(100_000),
            decoded: Decoded::default(),
            shards: (0..2).map(|_| WindowAggregator::new(WindowConfig::default())).collect(),
            csv: TelemetryCsv::default(),
        }
    }

    fn fold(&mut self) {
        for s in &self.decoded.samples {
            let k = shard_of(s.vin.as_bytes(), 16, 2) as usize;
            self.shards[k].add(s, NO_DIMS);
        }
    }

    fn flush(&mut self) -> u64 {
        self.csv.clear();
        let (csv, cat) = (&mut self.csv, &self.catalog);
        for a in &mut self.shards {
            a.drain(|g| csv.push_group(&g, &[None, None, None], |m| cat.name(m)).expect("safe fields"));
        }
        self.csv.rows
    }

    fn wide(&mut self, payloads: &[Vec<u8>]) -> u64 {
        for p in payloads {
            self.decoded.clear();
            wide::decode(p, NOW, &self.cfg, &mut self.catalog, &mut self.decoded);
            self.fold();
        }
        self.flush()
    }
}

fn bench(c: &mut Criterion) {
    let payloads = support::wide_payloads(64, 1000, 50);
    let values = (payloads.len() * 1000) as u64;
    let mut path = Path::new();
    let mut g = c.benchmark_group("hot_path_wide_1000");
    g.throughput(Throughput::Elements(values));
    g.sample_size(20);
    g.bench_function("parse_only_sonic_dom", |b| {
        b.iter(|| payloads.iter().map(|p| support::sum_sonic(p)).sum::<f64>())
    });
    g.bench_function("decode_route_aggregate_encode", |b| b.iter(|| black_box(path.wide(&payloads))));
    g.finish();
    let base = support::mean_secs(20, || {
        black_box(payloads.iter().map(|p| support::sum_sonic(p)).sum::<f64>());
    });
    let ours = support::mean_secs(20, || {
        black_box(path.wide(&payloads));
    });
    println!(
        "hot_path_wide_1000: {:.1}M values/s through decode→route→aggregate→encode vs {:.1}M parse-only: ratio {:.2}",
        values as f64 / ours / 1e6,
        values as f64 / base / 1e6,
        base / ours
    );

    let n = 20_000;
    let topics: Vec<String> = (0..n).map(|i| format!("telemetry/RFVIN{:012}/sensor_{:04}", i % 500, i % 97)).collect();
    let bodies: Vec<Vec<u8>> =
        (0..n).map(|i| format!("{{\"ts\":{},\"v\":{}.5}}", NOW - (i as i64 % 1000), i % 300).into_bytes()).collect();
    let t = TopicTemplate::parse("telemetry/{vin}/{metric}").unwrap();
    let mut g = c.benchmark_group("hot_path_narrow");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("parse_only_sonic_dom", |b| {
        b.iter(|| {
            bodies
                .iter()
                .map(|p| sonic_rs::from_slice::<sonic_rs::Value>(p).unwrap().get("v").unwrap().as_f64().unwrap())
                .sum::<f64>()
        })
    });
    g.bench_function("decode_route_aggregate_encode", |b| {
        b.iter(|| {
            for (topic, p) in topics.iter().zip(&bodies) {
                path.decoded.clear();
                narrow::decode(topic, p, NOW, &path.cfg, &t, &mut path.catalog, &mut path.decoded);
                path.fold();
            }
            black_box(path.flush())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
