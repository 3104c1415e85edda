//! Decode throughput on rockfeed's payloads, and the parser choice.
//!
//! Wide: 1,000-metric samples (~30 KB each); narrow: one signal per message
//! (~40 bytes). For each, the same payloads go through:
//! - `serde_json_dom`, `sonic_dom`, `simd_json_dom`: parse into a DOM and sum
//!   every metric value (the parse-only baselines DESIGN.md §7 asks for);
//! - `rockfeed_decode`: the real decoder (lazy sonic-rs walk, catalog lookup,
//!   validation) into reused `Sample`s.
//!
//! Throughput is in metric values (elements); the printed ratio is
//! rockfeed_decode / sonic_dom, measured in the same run.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rockfeed::decode::catalog::MetricCatalog;
use rockfeed::decode::narrow::TopicTemplate;
use rockfeed::decode::{DecodeConfig, Decoded, narrow, wide};
use sonic_rs::JsonValueTrait;

mod support;

use support::NOW;

fn sum_serde(p: &[u8]) -> f64 {
    let v: serde_json::Value = serde_json::from_slice(p).unwrap();
    v["metrics"].as_object().unwrap().values().filter_map(|x| x.as_f64()).sum()
}

fn sum_simd(p: &mut [u8]) -> f64 {
    use simd_json::prelude::*;
    let v = simd_json::to_borrowed_value(p).unwrap();
    v.get("metrics").and_then(|m| m.as_object()).unwrap().values().filter_map(|x| x.as_f64()).sum()
}

fn bench_wide(c: &mut Criterion) {
    let payloads = support::wide_payloads(64, 1000, 64);
    let values = (payloads.len() * 1000) as u64;
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    let cfg = DecodeConfig::default();
    let mut g = c.benchmark_group("decode_wide_1000");
    g.throughput(Throughput::Elements(values));
    g.sample_size(20);
    g.bench_function("serde_json_dom", |b| b.iter(|| payloads.iter().map(|p| sum_serde(p)).sum::<f64>()));
    g.bench_function("sonic_dom", |b| b.iter(|| payloads.iter().map(|p| support::sum_sonic(p)).sum::<f64>()));
    let mut copies = payloads.clone();
    g.bench_function("simd_json_dom", |b| {
        b.iter(|| {
            // simd-json parses in place: restore the bytes outside the sum.
            copies
                .iter_mut()
                .zip(&payloads)
                .map(|(c, p)| {
                    c.copy_from_slice(p);
                    sum_simd(c)
                })
                .sum::<f64>()
        })
    });
    let mut cat = MetricCatalog::new(100_000);
    let mut out = Decoded::default();
    g.bench_function("rockfeed_decode", |b| {
        b.iter(|| {
            out.clear();
            for p in &payloads {
                wide::decode(p, NOW, &cfg, &mut cat, &mut out);
            }
            assert_eq!(out.readings(), payloads.len() * 1000);
            black_box(out.samples.len())
        })
    });
    g.finish();
    // The ratio DESIGN.md asks for, measured back to back.
    let base = support::mean_secs(20, || {
        black_box(payloads.iter().map(|p| support::sum_sonic(p)).sum::<f64>());
    });
    let ours = support::mean_secs(20, || {
        out.clear();
        for p in &payloads {
            wide::decode(p, NOW, &cfg, &mut cat, &mut out);
        }
    });
    println!(
        "decode_wide_1000: {:.1} MB/s; rockfeed_decode {:.1}M values/s vs sonic DOM baseline {:.1}M values/s: ratio {:.2}",
        bytes as f64 / ours / 1e6,
        values as f64 / ours / 1e6,
        values as f64 / base / 1e6,
        base / ours
    );
}

fn bench_narrow(c: &mut Criterion) {
    let n = 10_000;
    let topics: Vec<String> = (0..n).map(|i| format!("telemetry/RFVIN{:012}/sensor_{:04}", i % 500, i % 97)).collect();
    let payloads: Vec<Vec<u8>> =
        (0..n).map(|i| format!("{{\"ts\":{},\"v\":{}.5}}", NOW - (i as i64 % 1000), i % 300).into_bytes()).collect();
    let cfg = DecodeConfig::default();
    let t = TopicTemplate::parse(&cfg.topic_template).unwrap();
    let mut g = c.benchmark_group("decode_narrow");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("serde_json_dom", |b| {
        b.iter(|| {
            payloads
                .iter()
                .map(|p| serde_json::from_slice::<serde_json::Value>(p).unwrap()["v"].as_f64().unwrap())
                .sum::<f64>()
        })
    });
    g.bench_function("sonic_dom", |b| {
        b.iter(|| {
            payloads
                .iter()
                .map(|p| sonic_rs::from_slice::<sonic_rs::Value>(p).unwrap().get("v").unwrap().as_f64().unwrap())
                .sum::<f64>()
        })
    });
    let mut cat = MetricCatalog::new(100_000);
    let mut out = Decoded::default();
    g.bench_function("rockfeed_decode", |b| {
        b.iter(|| {
            out.clear();
            for (topic, p) in topics.iter().zip(&payloads) {
                narrow::decode(topic, p, NOW, &cfg, &t, &mut cat, &mut out);
            }
            assert_eq!(out.samples.len(), n);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_wide, bench_narrow);
criterion_main!(benches);
