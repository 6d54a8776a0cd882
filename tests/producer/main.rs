//! The producer end to end against kinesis-mock: the real aws-sdk-kinesis client on
//! tokio, records read back with GetRecords and de-aggregated with kpl-codec.
//!
//! `#[ignore]`d in a plain `cargo test`; `cargo xtask ci` runs them with kinesis-mock up.

#[allow(dead_code)]
#[path = "../transport/peers.rs"]
mod peers;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kpl_codec::{HashKey, deaggregate};
use kpl_producer::{Config, Producer, RecordFuture};
use kpl_runtime::Runtime;
use kpl_transport::{ListShardsRequest, ShardDescription, StreamId, Transport};

use crate::peers::{MockPeer, Peer, block_on};

async fn all_shards(t: &dyn Transport, stream: &str) -> Vec<ShardDescription> {
    let page = t
        .list_shards(ListShardsRequest::First {
            stream: StreamId::parse(stream),
            open_only: false,
            max_results: None,
        })
        .await
        .unwrap();
    assert!(page.next_token.is_none());
    page.shards
}

/// Reads the stream back: data → (shard, count), user records outside their shard's
/// range dropped as a KCL consumer drops them.
async fn consumed(peer: &MockPeer, stream: &str) -> HashMap<Bytes, Vec<String>> {
    let shards = all_shards(&*peer.transport(), stream).await;
    let range: HashMap<_, _> = shards
        .iter()
        .map(|s| (s.shard_id.clone(), (s.starting_hash_key, s.ending_hash_key)))
        .collect();
    let mut out: HashMap<Bytes, Vec<String>> = HashMap::new();
    for r in peer.read_all(stream).await {
        let (start, end) = range[&r.shard_id];
        for u in deaggregate(&r.partition_key, None, &r.data).unwrap() {
            let k = u.hash_key().unwrap();
            if start <= k && k <= end {
                out.entry(Bytes::copy_from_slice(u.data))
                    .or_default()
                    .push(r.shard_id.clone());
            }
        }
    }
    out
}

/// The KPL defaults, with time for a slow kinesis-mock (see `MockPeer::connect`):
/// records live long enough to outlast the one-minute request timeout.
fn config() -> Config {
    Config::builder()
        .request_timeout(Duration::from_secs(60))
        .record_ttl(Duration::from_secs(300))
        .build()
        .unwrap()
}

struct Sent {
    partition_key: String,
    data: Bytes,
    future: RecordFuture,
}

async fn put_range(p: &Producer, stream: &str, from: usize, to: usize, seed: u64) -> Vec<Sent> {
    let mut sent = Vec::new();
    for i in from..to {
        let partition_key = format!(
            "{:x}",
            HashKey::from_partition_key(&format!("{seed}-{i}")).get() as u64
        );
        let data = Bytes::from(format!("record {i:06} of {stream}"));
        let future = p
            .put_record(stream, partition_key.clone(), data.clone(), None)
            .await
            .unwrap();
        sent.push(Sent {
            partition_key,
            data,
            future,
        });
    }
    sent
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn ten_thousand_records_over_four_shards_each_once_on_its_predicted_shard() {
    block_on(async {
        let started = Instant::now();
        let peer = MockPeer::connect().await;
        let (stream, _) = peer.create_stream("producer", 4).await;
        let producer = Producer::builder(config(), peer.transport()).build(Runtime::tokio());
        let sent = put_range(&producer, &stream, 0, 10_000, 1).await;
        producer.flush().await;
        let shards = all_shards(&*peer.transport(), &stream).await;
        let seen = consumed(&peer, &stream).await;
        for s in &sent {
            let r = s
                .future
                .wait(Duration::ZERO)
                .expect("resolved by the flush");
            assert!(r.success, "{:?}", r.attempts);
            let key = HashKey::from_partition_key(&s.partition_key);
            let predicted = shards
                .iter()
                .find(|x| x.starting_hash_key <= key && key <= x.ending_hash_key)
                .unwrap();
            assert_eq!(
                seen.get(&s.data).map(Vec::as_slice),
                Some(&[predicted.shard_id.clone()][..])
            );
            assert_eq!(r.shard_id.as_deref(), Some(predicted.shard_id.as_str()));
        }
        let total: usize = seen.values().map(Vec::len).sum();
        assert_eq!(total, 10_000, "nothing else was stored");
        println!(
            "10,000 records through kinesis-mock in {} ms",
            started.elapsed().as_millis()
        );
    });
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn a_split_while_records_flow_loses_nothing() {
    block_on(async {
        let peer = MockPeer::connect().await;
        let (stream, _) = peer.create_stream("producer-split", 2).await;
        let producer = Producer::builder(config(), peer.transport()).build(Runtime::tokio());
        let mut sent = put_range(&producer, &stream, 0, 1_500, 2).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let shards = all_shards(&*peer.transport(), &stream).await;
        let s0 = &shards[0];
        let middle = HashKey::new(s0.starting_hash_key.get() / 2 + s0.ending_hash_key.get() / 2);
        let flowing = {
            let p = producer.clone();
            let stream = stream.clone();
            tokio::spawn(async move { put_range(&p, &stream, 1_500, 3_000, 2).await })
        };
        peer.split(&stream, &s0.shard_id, middle).await;
        sent.extend(flowing.await.unwrap());
        sent.extend(put_range(&producer, &stream, 3_000, 4_000, 2).await);
        producer.flush().await;
        let seen = consumed(&peer, &stream).await;
        for s in &sent {
            let r = s
                .future
                .wait(Duration::ZERO)
                .expect("resolved by the flush");
            assert!(r.success, "{:?}", r.attempts);
            assert_eq!(
                seen.get(&s.data).map(Vec::len),
                Some(1),
                "{}",
                s.partition_key
            );
        }
        let total: usize = seen.values().map(Vec::len).sum();
        assert_eq!(total, 4_000);
    });
}
