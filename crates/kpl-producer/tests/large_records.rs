//! Records larger than 1 MiB on kpl-sim, a stream whose maximum record size was
//! raised: each is stored exactly once, alone, within the shard's write limits
//! (the model of `kpl_codec::shard_write_hold`, which the simulator enforces).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kpl_codec::{DEFAULT_MAX_RECORD_SIZE, MAX_RECORD_SIZE_CEILING, shard_write_hold};
use kpl_producer::Config;

const MIB: usize = 1024 * 1024;

/// Puts records of the given sizes, one every `gap` (virtual), each named by its
/// index at the start of its data.
fn sized_load(h: &Harness, sizes: Vec<usize>, gap: Duration) -> Arc<Mutex<Vec<Put>>> {
    let puts = Arc::new(Mutex::new(Vec::with_capacity(sizes.len())));
    let out = puts.clone();
    let producer = h.producer.clone();
    let rt = h.sim.runtime();
    let rt2 = rt.clone();
    rt.spawn(Box::pin(async move {
        for (i, size) in sizes.into_iter().enumerate() {
            let mut data = format!("record-{i:08} ").into_bytes();
            data.resize(size.max(data.len()), b'x');
            let data = Bytes::from(data);
            let partition_key = format!("key-{}", i % 16);
            put_and_keep(&producer, partition_key, data, &out).await;
            rt2.sleep(gap).await;
        }
    }));
    puts
}

fn large_harness(shards: usize, ordered: bool) -> Harness {
    let config = Config::builder()
        .max_user_record_size(MAX_RECORD_SIZE_CEILING)
        .ordered(ordered);
    let h = harness(config, shards, 11);
    h.kinesis
        .update_max_record_size(STREAM, MAX_RECORD_SIZE_CEILING / 1024)
        .unwrap();
    h
}

/// No record on a shard is stored while a large one counts against it, and a
/// large one only when nothing else counts: the model the simulator enforces,
/// checked here on what was stored.
fn assert_within_write_limits(h: &Harness) {
    let records = h.kinesis.records(STREAM).unwrap();
    let mut by_shard: std::collections::BTreeMap<&str, Vec<_>> = Default::default();
    for r in &records {
        by_shard.entry(&r.shard_id).or_default().push(r);
    }
    for (shard, mut rs) in by_shard {
        rs.sort_by_key(|r| r.arrival);
        for (i, r) in rs.iter().enumerate() {
            let size = r.data.len() + r.partition_key.len();
            if size <= DEFAULT_MAX_RECORD_SIZE {
                continue;
            }
            if let Some(next) = rs.get(i + 1) {
                assert!(
                    next.arrival >= r.arrival + shard_write_hold(size),
                    "{shard}: a record stored {:?} after one of {size} bytes",
                    next.arrival - r.arrival
                );
            }
            if i > 0 {
                assert!(
                    r.arrival >= rs[i - 1].arrival + Duration::from_secs(1),
                    "{shard}: a record of {size} bytes stored within a second of another"
                );
            }
        }
    }
}

#[test]
fn a_9_mib_record_is_stored_once() {
    for ordered in [false, true] {
        a_9_mib_record(ordered);
    }
}

fn a_9_mib_record(ordered: bool) {
    let h = large_harness(1, ordered);
    let puts = sized_load(&h, vec![9 * MIB], Duration::ZERO);
    run_until_resolved(&h, &puts, 1, Duration::from_secs(60));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 1);
    assert_eq!(outcome.duplicated, 0);
    let stored = h.kinesis.records(STREAM).unwrap();
    assert_eq!(stored.len(), 1, "stored alone, not aggregated");
    assert_eq!(stored[0].data.len(), 9 * MIB);
}

#[test]
fn mixed_100_b_and_5_mib_records_are_stored_once_within_the_write_limits() {
    for ordered in [false, true] {
        mixed(ordered);
    }
}

fn mixed(ordered: bool) {
    let h = large_harness(2, ordered);
    // 2,000 records of 100 B and 10 of 5 MiB among them, over 4 s.
    let sizes: Vec<usize> = (0..2_010)
        .map(|i| if i % 201 == 100 { 5 * MIB } else { 100 })
        .collect();
    let puts = sized_load(&h, sizes, Duration::from_millis(2));
    run_until_resolved(&h, &puts, 2_010, Duration::from_secs(600));
    h.sim.run_for(Duration::from_secs(5));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 2_010, "ordered: {ordered}");
    assert_eq!(outcome.duplicated, 0, "stored twice");
    assert_within_write_limits(&h);
    // The limiter admits by the same model: nothing was throttled.
    assert_eq!(
        outcome.attempts_with("ProvisionedThroughputExceededException"),
        0,
        "records throttled"
    );
}

/// The stream's own limit is read: a record over it fails as "Record Too Large",
/// naming the limit, without being sent; one under it is stored. (Without the read,
/// the service refused its request: a ValidationException.)
#[test]
fn a_record_over_the_streams_limit_fails_unsent_naming_the_limit() {
    let config = Config::builder().max_user_record_size(MAX_RECORD_SIZE_CEILING);
    let h = harness(config, 1, 3);
    h.kinesis.update_max_record_size(STREAM, 2_048).unwrap();
    let puts = sized_load(&h, vec![3 * MIB, 3 * MIB / 2], Duration::from_millis(10));
    run_until_resolved(&h, &puts, 2, Duration::from_secs(60));
    let puts = puts.lock().unwrap();
    let over = puts[0].result().unwrap();
    assert!(!over.is_success());
    assert_eq!(over.attempts.len(), 1, "{:?}", over.attempts);
    assert_eq!(
        over.error_code(),
        Some(&kpl_producer::ErrorCode::RecordTooLarge),
        "{:?}",
        over.error_message()
    );
    let message = over.error_message().unwrap();
    assert!(
        message.contains("2097152 bytes") && message.contains("UpdateMaxRecordSize"),
        "{message}"
    );
    assert!(!over.may_have_been_stored());
    assert!(puts[1].result().unwrap().is_success());
    assert_eq!(
        h.kinesis.put_requests(),
        1,
        "the record over the limit was not sent"
    );
}
