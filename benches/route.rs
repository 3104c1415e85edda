//! Routing per core: StarRocks' bucket of the colocation key (CRC-32 of the
//! VIN, `% buckets`) folded onto the shards — once per sample on the hot path.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rockfeed::pipeline::route::shard_of;

fn bench(c: &mut Criterion) {
    let vins: Vec<String> = (0..100_000).map(|i| format!("RFVIN{i:012}")).collect();
    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(vins.len() as u64));
    g.bench_function("shard_of_16_buckets_2_shards", |b| {
        b.iter(|| vins.iter().map(|v| shard_of(black_box(v.as_bytes()), 16, 2) as u64).sum::<u64>())
    });
    g.bench_function("shard_of_1024_buckets_8_shards", |b| {
        b.iter(|| vins.iter().map(|v| shard_of(black_box(v.as_bytes()), 1024, 8) as u64).sum::<u64>())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
