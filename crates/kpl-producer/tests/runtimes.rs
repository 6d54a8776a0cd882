//! The happy path and a split mid-run on real time, on tokio and on smol.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kpl_codec::{HashKey, deaggregate};
use kpl_producer::{Config, Producer, PutRecord, RecordResult};
use kpl_runtime::Runtime;
use kpl_sim::Simulator;

const STREAM: &str = "rt";

async fn put_batch(
    p: &Producer,
    from: usize,
    to: usize,
) -> Vec<(String, Bytes, kpl_producer::RecordFuture)> {
    let mut out = Vec::new();
    for i in from..to {
        let pk = format!("user-{i}");
        let data = Bytes::from(format!("event {i:06}"));
        let f = p
            .put_record(STREAM, PutRecord::new(pk.clone(), data.clone()))
            .await
            .unwrap();
        out.push((pk, data, f));
    }
    out
}

/// Every success stored exactly once, as a consumer sees it, on a shard holding its key.
fn check(kinesis: &Simulator, results: &[(String, Bytes, RecordResult)]) {
    let shards: HashMap<String, (HashKey, HashKey)> = kinesis
        .shards(STREAM)
        .unwrap()
        .into_iter()
        .map(|s| (s.shard_id, (s.starting_hash_key, s.ending_hash_key)))
        .collect();
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for rec in kinesis.records(STREAM).unwrap() {
        let ehk = rec.explicit_hash_key.map(|k| k.to_string());
        let (start, end) = shards[&rec.shard_id];
        for u in deaggregate(&rec.partition_key, ehk.as_deref(), &rec.data).unwrap() {
            let k = u.hash_key().unwrap();
            if start <= k && k <= end {
                *seen.entry(u.data.to_vec()).or_default() += 1;
            }
        }
    }
    for (pk, data, r) in results {
        assert!(r.is_success(), "{pk}: {:?}", r.attempts);
        assert_eq!(seen.get(data.as_ref()), Some(&1), "{pk}");
    }
}

async fn happy_path(rt: Runtime) {
    let kinesis = Simulator::new(rt.timer().clone(), 1);
    kinesis.create_stream(STREAM, 4).unwrap();
    let p = Producer::builder(Config::default(), Arc::new(kinesis.clone())).build(rt);
    let pending = put_batch(&p, 0, 2_000).await;
    p.flush().await;
    let mut results = Vec::new();
    for (pk, data, f) in pending {
        results.push((pk, data, f.await));
    }
    check(&kinesis, &results);
    assert!(kinesis.records(STREAM).unwrap().len() < 200, "aggregated");
    assert_eq!(p.shutdown(Duration::from_secs(1)).await, 0);
}

async fn split_mid_run(rt: Runtime) {
    let kinesis = Simulator::new(rt.timer().clone(), 2);
    kinesis.create_stream(STREAM, 2).unwrap();
    let p = Producer::builder(Config::default(), Arc::new(kinesis.clone())).build(rt.clone());
    let mut pending = put_batch(&p, 0, 1_000).await;
    rt.sleep(Duration::from_millis(150)).await;
    let s0 = kinesis.shards(STREAM).unwrap()[0].clone();
    let middle = HashKey::new(s0.ending_hash_key.get() / 2);
    kinesis.split_shard(STREAM, &s0.shard_id, middle).unwrap();
    pending.extend(put_batch(&p, 1_000, 2_000).await);
    p.flush().await;
    let mut results = Vec::new();
    for (pk, data, f) in pending {
        results.push((pk, data, f.await));
    }
    check(&kinesis, &results);
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn happy_path_on_tokio() {
    tokio_rt().block_on(async { happy_path(Runtime::tokio()).await });
}

#[test]
fn split_on_tokio() {
    tokio_rt().block_on(async { split_mid_run(Runtime::tokio()).await });
}

#[test]
fn happy_path_on_smol() {
    smol::block_on(happy_path(Runtime::smol()));
}

#[test]
fn split_on_smol() {
    smol::block_on(split_mid_run(Runtime::smol()));
}
