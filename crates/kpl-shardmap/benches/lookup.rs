//! Shard-map lookup (ns per lookup) with 4, 1,000 and 10,000 shards.
//!
//! `cargo bench -p kpl-shardmap`

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kpl_codec::HashKey;
use kpl_shardmap::{ShardInfo, ShardMap};

/// `n` shards splitting the key space evenly, as CreateStream does.
fn even_shards(n: u128) -> Vec<ShardInfo> {
    let width = u128::MAX / n;
    (0..n)
        .map(|i| {
            let start = i * width;
            let end = if i == n - 1 {
                u128::MAX
            } else {
                start + width - 1
            };
            ShardInfo::new(
                format!("shardId-{i:012}"),
                HashKey::new(start),
                HashKey::new(end),
            )
        })
        .collect()
}

fn lookup(c: &mut Criterion) {
    let keys: Vec<HashKey> = (0..1024)
        .map(|i| HashKey::from_partition_key(&format!("key-{i}")))
        .collect();
    let mut group = c.benchmark_group("shardmap");
    group.throughput(Throughput::Elements(keys.len() as u64));
    for n in [4u128, 1_000, 10_000] {
        let now = Instant::now();
        let mut map = ShardMap::new(1);
        let refresh = map.poll_refresh(now).expect("refresh due");
        map.on_refresh_succeeded(refresh, even_shards(n), now);
        group.bench_function(format!("lookup ({n} shards)"), |b| {
            b.iter(|| {
                for &k in &keys {
                    black_box(map.lookup(black_box(k)).ok());
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
