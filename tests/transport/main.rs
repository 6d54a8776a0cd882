//! One transport suite, run against kpl-sim and against kinesis-mock (through
//! `AwsTransport`, the real aws-sdk-kinesis client).
//!
//! The kinesis-mock half is `#[ignore]`d in a plain `cargo test`: `cargo xtask ci`
//! starts kinesis-mock on loopback and runs it with `--include-ignored`.
//! Where kinesis-mock differs from AWS (it never throttles, accepts 501-record and
//! over-5 MiB requests), the cases run against kpl-sim alone; see `sim_only`.

mod answers;
mod cloudwatch;
mod peers;
mod sim_only;

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use bytes::Bytes;
use kpl_codec::HashKey;
use kpl_transport::{
    EntryResult, ErrorKind, ListShardsRequest, PutRecordsEntry, PutRecordsRequest,
    ShardDescription, ShardPosition, StreamId, Transport,
};

use crate::peers::{MockPeer, Peer, SimPeer, block_on};

/// Every page of open shards, `page` at a time, sorted by starting hash key.
async fn list_all(
    t: &dyn Transport,
    stream: &StreamId,
    page: u32,
) -> (Vec<ShardDescription>, usize) {
    let mut shards = Vec::new();
    let mut pages = 0;
    let mut request = ListShardsRequest::First {
        stream: stream.clone(),
        open_only: true,
        max_results: Some(page),
    };
    loop {
        let answer = t.list_shards(request).await.unwrap();
        pages += 1;
        assert!(answer.shards.len() <= page as usize);
        shards.extend(answer.shards);
        match answer.next_token {
            Some(token) => {
                request = ListShardsRequest::Next {
                    token,
                    max_results: Some(page),
                }
            }
            None => break,
        }
    }
    shards.sort_by_key(|s| s.starting_hash_key);
    (shards, pages)
}

fn owner(shards: &[ShardDescription], key: HashKey) -> &str {
    &shards
        .iter()
        .find(|s| s.starting_hash_key <= key && key <= s.ending_hash_key)
        .expect("the open shards cover the key space")
        .shard_id
}

async fn paging_with_small_pages(peer: &dyn Peer) {
    let (name, _) = peer.create_stream("paging", 7).await;
    let t = peer.transport();
    let (shards, pages) = list_all(&*t, &StreamId::parse(&name), 2).await;
    assert_eq!(shards.len(), 7, "{}", peer.name());
    assert_eq!(pages, 4);
    let ids: HashSet<_> = shards.iter().map(|s| &s.shard_id).collect();
    assert_eq!(ids.len(), 7, "no shard twice");
    // Contiguous ranges covering the whole key space (read from ListShards: the
    // mock's interior boundaries differ from AWS's by a few).
    assert_eq!(shards[0].starting_hash_key, HashKey::MIN);
    assert_eq!(shards[6].ending_hash_key, HashKey::MAX);
    for w in shards.windows(2) {
        assert_eq!(w[0].ending_hash_key.get() + 1, w[1].starting_hash_key.get());
    }
}

async fn routing_agrees_with_md5_prediction(peer: &dyn Peer) {
    let (name, _) = peer.create_stream("routing", 4).await;
    let stream = StreamId::parse(&name);
    let t = peer.transport();
    let (shards, _) = list_all(&*t, &stream, 1000).await;
    let entries: Vec<PutRecordsEntry> = (0..300)
        .map(|i| {
            let pk = format!("key-{i}-{}", i * 7919 % 1013);
            PutRecordsEntry::new(pk, None, Bytes::from(format!("data {i}")))
        })
        .collect();
    let response = t
        .put_records(PutRecordsRequest::new(stream.clone(), entries.clone()))
        .await
        .unwrap();
    assert_eq!(response.results.len(), entries.len());
    let mut reported = BTreeMap::new();
    for (entry, result) in entries.iter().zip(&response.results) {
        let EntryResult::Ok {
            shard_id,
            sequence_number,
        } = result
        else {
            panic!("{}: {result:?}", peer.name());
        };
        let predicted = owner(&shards, HashKey::from_partition_key(&entry.partition_key));
        assert_eq!(
            shard_id,
            predicted,
            "{}: {}",
            peer.name(),
            entry.partition_key
        );
        reported.insert(sequence_number.clone(), (shard_id.clone(), entry.clone()));
    }
    let stored = peer.read_all(&name).await;
    assert_eq!(stored.len(), entries.len());
    for r in stored {
        let (shard, entry) = reported
            .remove(&r.sequence_number)
            .expect("every stored record was reported once");
        assert_eq!(r.shard_id, shard);
        assert_eq!(r.partition_key, entry.partition_key);
        assert_eq!(r.data, entry.data);
    }
    assert!(reported.is_empty());
}

async fn explicit_hash_keys_at_range_edges(peer: &dyn Peer) {
    let (name, _) = peer.create_stream("edges", 3).await;
    let stream = StreamId::parse(&name);
    let t = peer.transport();
    let (shards, _) = list_all(&*t, &stream, 1000).await;
    let mut entries = Vec::new();
    let mut expected = Vec::new();
    for s in &shards {
        for key in [s.starting_hash_key, s.ending_hash_key] {
            entries.push(PutRecordsEntry::new(
                "edge",
                Some(key),
                Bytes::from_static(b"e"),
            ));
            expected.push(s.shard_id.clone());
        }
    }
    let response = t
        .put_records(PutRecordsRequest::new(stream, entries))
        .await
        .unwrap();
    for (result, want) in response.results.iter().zip(&expected) {
        match result {
            EntryResult::Ok { shard_id, .. } => assert_eq!(shard_id, want, "{}", peer.name()),
            other => panic!("{}: {other:?}", peer.name()),
        }
    }
}

async fn unknown_stream_is_not_found(peer: &dyn Peer) {
    let t = peer.transport();
    let missing = StreamId::parse("no-such-stream-anywhere");
    let err = t
        .put_records(PutRecordsRequest::new(
            missing.clone(),
            vec![PutRecordsEntry::new("k", None, Bytes::from_static(b"x"))],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{}: {err}", peer.name());
    assert_eq!(err.code(), Some("ResourceNotFoundException"));
    let err = t
        .list_shards(ListShardsRequest::First {
            stream: missing,
            open_only: true,
            max_results: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{}: {err}", peer.name());
}

async fn split_then_relist(peer: &dyn Peer) {
    let (name, _) = peer.create_stream("split", 1).await;
    let stream = StreamId::parse(&name);
    let t = peer.transport();
    let (before, _) = list_all(&*t, &stream, 1000).await;
    let parent = before[0].shard_id.clone();
    let middle = HashKey::new(u128::MAX / 2 + 1);
    peer.split(&name, &parent, middle).await;
    let (after, _) = list_all(&*t, &stream, 1000).await;
    assert_eq!(
        after.len(),
        2,
        "{}: open shards after the split",
        peer.name()
    );
    assert!(after.iter().all(|s| s.shard_id != parent && !s.closed));
    assert!(
        after
            .iter()
            .all(|s| s.parent_shard_id.as_deref() == Some(parent.as_str()))
    );
    assert_eq!(after[1].starting_hash_key, middle);
    let high = PutRecordsEntry::new("x", Some(HashKey::MAX), Bytes::from_static(b"h"));
    let response = t
        .put_records(PutRecordsRequest::new(stream.clone(), vec![high]))
        .await
        .unwrap();
    assert!(
        matches!(&response.results[0], EntryResult::Ok { shard_id, .. } if *shard_id == after[1].shard_id),
        "{}: {response:?}",
        peer.name()
    );
    // Without the filter, the closed parent is listed too.
    let all = t
        .list_shards(ListShardsRequest::First {
            stream,
            open_only: false,
            max_results: None,
        })
        .await
        .unwrap();
    assert!(all.shards.iter().any(|s| s.shard_id == parent));
}

async fn addressing_by_arn(peer: &dyn Peer) {
    let (name, arn) = peer.create_stream("arn", 2).await;
    let by_arn = StreamId::parse(&arn);
    assert!(matches!(by_arn, StreamId::Arn(_)));
    assert_eq!(by_arn.name(), name);
    let t = peer.transport();
    let (shards, _) = list_all(&*t, &by_arn, 1000).await;
    assert_eq!(shards.len(), 2);
    let response = t
        .put_records(PutRecordsRequest::new(
            by_arn,
            vec![PutRecordsEntry::new(
                "by-arn",
                None,
                Bytes::from_static(b"a"),
            )],
        ))
        .await
        .unwrap();
    assert!(
        matches!(response.results[0], EntryResult::Ok { .. }),
        "{}",
        peer.name()
    );
    assert_eq!(peer.read_all(&name).await.len(), 1);
    let other = arn.replace(&name, "no-such-stream-by-arn");
    let err = t
        .put_records(PutRecordsRequest::new(
            StreamId::parse(&other),
            vec![PutRecordsEntry::new("k", None, Bytes::from_static(b"x"))],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{}: {err}", peer.name());
}

/// The stream's record limit is read, by name and by ARN: the default until it is
/// raised (kinesis-mock says nothing, kpl-sim says 1 MiB), then the raised one.
async fn max_record_size_is_read_from_the_stream(peer: &dyn Peer) {
    let (name, arn) = peer.create_stream("max-record", 1).await;
    let t = peer.transport();
    let before = t.max_record_size(&StreamId::parse(&name)).await.unwrap();
    assert!(
        before.is_none_or(|b| b == kpl_codec::DEFAULT_MAX_RECORD_SIZE),
        "{}: {before:?}",
        peer.name()
    );
    peer.update_max_record_size(&name, &arn, 10_240).await;
    for id in [&name, &arn] {
        let after = t.max_record_size(&StreamId::parse(id)).await.unwrap();
        assert_eq!(after, Some(10 * 1024 * 1024), "{}", peer.name());
    }
}

/// A shard is read back from after a sequence number, from a time and from its
/// start, page by page: what verify before resend reads.
async fn shards_are_read_back(peer: &dyn Peer) {
    let (name, arn) = peer.create_stream("read-back", 1).await;
    let t = peer.transport();
    let shard = list_all(&*t, &StreamId::parse(&name), 1000).await.0[0]
        .shard_id
        .clone();
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(5);
    let entries: Vec<PutRecordsEntry> = (0..5)
        .map(|i| PutRecordsEntry::new(format!("k{i}"), None, Bytes::from(format!("data {i}"))))
        .collect();
    let response = t
        .put_records(PutRecordsRequest::new(StreamId::parse(&name), entries))
        .await
        .unwrap();
    let seqs: Vec<String> = response
        .results
        .iter()
        .map(|r| match r {
            EntryResult::Ok {
                sequence_number, ..
            } => sequence_number.clone(),
            EntryResult::Failed { code, .. } => panic!("{}: {code}", peer.name()),
        })
        .collect();
    for id in [&name, &arn] {
        let stream = StreamId::parse(id);
        let read = |position| {
            let (t, stream, shard) = (t.clone(), stream.clone(), shard.clone());
            async move {
                let mut iterator = t.shard_iterator(&stream, &shard, position).await.unwrap();
                let mut records = Vec::new();
                for _ in 0..10 {
                    let page = t.get_records(&stream, &iterator, Some(2)).await.unwrap();
                    assert!(page.records.len() <= 2);
                    records.extend(
                        page.records
                            .into_iter()
                            .map(|r| (r.sequence_number, r.partition_key, r.data)),
                    );
                    match page.next_iterator {
                        Some(next) if records.len() < 5 => iterator = next,
                        _ => break,
                    }
                }
                records
            }
        };
        let after = read(ShardPosition::AfterSequenceNumber(seqs[1].clone())).await;
        let keys: Vec<&str> = after.iter().map(|(_, k, _)| k.as_str()).collect();
        assert_eq!(keys, ["k2", "k3", "k4"], "{}", peer.name());
        assert_eq!(after[0].0, seqs[2]);
        assert_eq!(&after[2].2[..], b"data 4");
        assert_eq!(
            read(ShardPosition::AtTimestamp(before)).await.len(),
            5,
            "{}",
            peer.name()
        );
        assert_eq!(
            read(ShardPosition::TrimHorizon).await.len(),
            5,
            "{}",
            peer.name()
        );
    }
}

/// The shared suite: every case, timed, against one peer.
async fn suite(peer: &dyn Peer) {
    let started = Instant::now();
    paging_with_small_pages(peer).await;
    routing_agrees_with_md5_prediction(peer).await;
    explicit_hash_keys_at_range_edges(peer).await;
    unknown_stream_is_not_found(peer).await;
    split_then_relist(peer).await;
    addressing_by_arn(peer).await;
    max_record_size_is_read_from_the_stream(peer).await;
    shards_are_read_back(peer).await;
    println!(
        "transport suite: 8 cases against {} in {} ms",
        peer.name(),
        started.elapsed().as_millis()
    );
}

#[test]
fn shared_suite_against_kpl_sim() {
    block_on(async { suite(&SimPeer::new()).await });
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn shared_suite_against_kinesis_mock() {
    block_on(async { suite(&MockPeer::connect().await).await });
}

#[test]
#[ignore = "needs kinesis-mock: run by `cargo xtask ci`"]
fn shared_suite_against_kinesis_mock_over_the_async_io_client() {
    block_on(async {
        let peer = MockPeer::connect().await.with_async_io_client().await;
        suite(&peer).await;
    });
}
