//! Cost of the limiter per admitted item (add + poll), over 4 and 1,000 shards.
//!
//! `cargo bench -p kpl-limiter`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kpl_limiter::{LimitItem, Limiter, LimiterConfig};

struct It {
    deadline: Instant,
}

impl LimitItem for It {
    fn bytes(&self) -> u64 {
        1000
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
    fn expiration(&self) -> Instant {
        self.deadline + Duration::from_secs(30)
    }
}

fn admit(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter");
    const N: u64 = 1_000;
    group.throughput(Throughput::Elements(N));
    for shards in [4u32, 1000] {
        group.bench_function(format!("admit ({shards} shards)"), |b| {
            let mut now = Instant::now();
            let mut limiter: Limiter<u32, It> =
                Limiter::new(LimiterConfig::new(100_000, [1_000, 1_048_576]));
            b.iter(|| {
                // Time moves on so tokens are always there: this measures the
                // bookkeeping of admitting, not waiting.
                now += Duration::from_secs(1);
                for i in 0..N {
                    limiter.add(i as u32 % shards, It { deadline: now }, now);
                }
                black_box(limiter.poll(now).len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, admit);
criterion_main!(benches);
