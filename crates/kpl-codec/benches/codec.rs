//! Encode and decode throughput against the MD5 floor.
//!
//! Every aggregate must be hashed once when it is built and once when it is read,
//! so MD5 over the same bytes is the floor neither can beat. For 100 B, 1 KB and
//! 50 KB records with distinct partition keys this measures, in one run: MD5 alone
//! over an aggregate's body, building and encoding that aggregate, and decoding it
//! with its checksum verified. The summary at the end prints records/s and each
//! stage's speed as a fraction of the MD5 floor (1.0 = as fast as MD5 alone).
//!
//! It also hashes 1,000 partition keys of 16 characters (the bench's and many
//! users'), one at a time and four lanes at a time (`HashKey::from_partition_keys`),
//! and prints the ratio; and checksums eight aggregates of 50 KB (the records of a
//! busy request) one by one (`md-5`) and four at a time (`finish_aggregates`),
//! and prints the ratio.
//!
//! `cargo bench -p kpl-codec`

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput};
use kpl_codec::{
    AggregateBuilder, HashKey, UnfinishedAggregate, UserRecord, decode_aggregated,
    finish_aggregates,
};
use md5::{Digest, Md5};

/// Aggregates close near the KPL's default AggregationMaxSize.
const AGGREGATE_TARGET: usize = 51_200;
const SIZES: [usize; 3] = [100, 1024, 50 * 1024];

fn records(size: usize) -> Vec<UserRecord<Vec<u8>>> {
    let count = (AGGREGATE_TARGET / (size + 20)).max(1);
    (0..count)
        .map(|i| {
            let data = (0..size).map(|b| (b * 31 + i) as u8).collect();
            UserRecord::new(format!("partition-key-{i:010}"), data)
        })
        .collect()
}

fn output_directory() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("criterion");
    }
    // target/<profile>/deps/<bench binary>
    let exe = std::env::current_exe().expect("the bench binary has a path");
    exe.ancestors()
        .nth(3)
        .expect("the bench binary lives in target/<profile>/deps")
        .join("criterion")
}

fn group_name(size: usize) -> String {
    format!("codec-{size}B")
}

fn bench(c: &mut Criterion) {
    for size in SIZES {
        let input = records(size);
        let n = input.len();
        let mut builder = AggregateBuilder::new();
        for r in input.clone() {
            builder.add(r);
        }
        let mut aggregate = Vec::new();
        builder.encode_aggregate_into(&mut aggregate);
        let body = aggregate[4..aggregate.len() - 16].to_vec();

        let mut group = c.benchmark_group(group_name(size));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function("md5", |b| b.iter(|| Md5::digest(black_box(&body))));
        let mut out = Vec::with_capacity(aggregate.len());
        group.bench_function("encode", |b| {
            b.iter_batched(
                || input.clone(),
                |recs| {
                    for r in recs {
                        builder.add(r);
                    }
                    out.clear();
                    builder.encode_aggregate_into(&mut out);
                    black_box(&out);
                    builder.take_records()
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function("decode", |b| {
            b.iter(|| {
                let users = decode_aggregated(black_box(&aggregate)).expect("valid");
                assert_eq!(users.len(), n);
                users
            })
        });
        group.finish();
    }
    let keys: Vec<String> = (0..1000u64)
        .map(|i| format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect();
    let mut group = c.benchmark_group("hash-keys");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("one-by-one", |b| {
        b.iter(|| {
            black_box(&keys)
                .iter()
                .map(|k| HashKey::from_partition_key(k))
                .collect::<Vec<_>>()
        })
    });
    group.bench_function("four-lanes", |b| {
        b.iter(|| HashKey::from_partition_keys(black_box(&keys).iter().map(String::as_str)))
    });
    group.finish();

    // Eight aggregates of 100 B records, of slightly different sizes.
    let unfinished: Vec<UnfinishedAggregate> = (0..8)
        .map(|n| {
            let mut builder = AggregateBuilder::new();
            for r in records(100).into_iter().skip(n) {
                builder.add(r);
            }
            builder.encode_unfinished_aggregate(Vec::new())
        })
        .collect();
    let bodies: Vec<Vec<u8>> = unfinished
        .iter()
        .map(|a| a.clone().finish()[4..a.len() - 16].to_vec())
        .collect();
    let mut group = c.benchmark_group("checksums");
    group.throughput(Throughput::Bytes(
        bodies.iter().map(|b| b.len() as u64).sum(),
    ));
    group.bench_function("md-5", |b| {
        b.iter(|| {
            black_box(&bodies)
                .iter()
                .map(Md5::digest)
                .collect::<Vec<_>>()
        })
    });
    group.bench_function("four-lanes", |b| {
        b.iter_batched(
            || unfinished.clone(),
            finish_aggregates,
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Reads criterion's mean estimate (ns per iteration) for one bench.
fn mean_ns(dir: &std::path::Path, group: &str, function: &str) -> Option<f64> {
    let path = dir.join(group).join(function).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn summary(dir: &std::path::Path) {
    println!();
    println!(
        "record size | records/aggregate | MD5 floor rec/s | encode rec/s (x floor) | decode rec/s (x floor)"
    );
    for size in SIZES {
        let n = records(size).len() as f64;
        let group = group_name(size);
        let (Some(md5), Some(enc), Some(dec)) = (
            mean_ns(dir, &group, "md5"),
            mean_ns(dir, &group, "encode"),
            mean_ns(dir, &group, "decode"),
        ) else {
            println!("{size:>8} B | (not measured in this run)");
            continue;
        };
        let rate = |ns: f64| n / ns * 1e9;
        println!(
            "{size:>9} B | {n:>17} | {:>15.0} | {:>12.0} ({:.2}) | {:>12.0} ({:.2})",
            rate(md5),
            rate(enc),
            md5 / enc,
            rate(dec),
            md5 / dec,
        );
    }
}

/// Prints how much faster four lanes at a time were than one by one (the bench
/// `one`, described as `how`) in `group`, for `what`.
fn lanes_summary(dir: &std::path::Path, what: &str, group: &str, one: &str, how: &str) {
    if let (Some(one_ns), Some(four)) =
        (mean_ns(dir, group, one), mean_ns(dir, group, "four-lanes"))
    {
        println!(
            "{what}: {one_ns:.0} ns {how}, {four:.0} ns four lanes at a time ({:.2}x)",
            one_ns / four
        );
    }
}

fn main() {
    let dir = output_directory();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
    summary(&dir);
    lanes_summary(
        &dir,
        "1,000 partition keys of 16 characters",
        "hash-keys",
        "one-by-one",
        "one by one",
    );
    lanes_summary(
        &dir,
        "8 aggregates of 50 KB",
        "checksums",
        "md-5",
        "one by one (md-5)",
    );
}
