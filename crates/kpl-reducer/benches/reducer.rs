//! Cost of `Reducer::add` (ns per item), batches closing on count as the
//! aggregator's and collector's do.
//!
//! `cargo bench -p kpl-reducer`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kpl_reducer::{Item, Policy, Reducer};

struct It {
    size: usize,
    deadline: Instant,
}

impl Item for It {
    fn size(&self) -> usize {
        self.size
    }
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

fn add(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut group = c.benchmark_group("reducer");
    const N: u64 = 10_000;
    group.throughput(Throughput::Elements(N));
    group.bench_function("add (500 per batch)", |b| {
        let mut r = Reducer::new(Policy::new(500, 5 << 20));
        b.iter(|| {
            for i in 0..N {
                let item = It {
                    size: 120,
                    deadline: t0 + Duration::from_micros(i % 997),
                };
                black_box(r.add(item, t0));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, add);
criterion_main!(benches);
