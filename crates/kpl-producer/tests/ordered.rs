//! Ordered mode on kpl-sim: records put in order under one key are read in that
//! order by a KCL consumer (first copies only), through failures, lost answers and
//! reshards; the same loads unordered show why the mode exists.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kpl_codec::HashKey;
use kpl_producer::Config;
use kpl_sim::Faults;

/// Puts `count` records over `keys` keys at `rate` per second (virtual); each
/// record's data is `key counter` with a counter per key.
fn keyed_load(h: &Harness, count: usize, keys: usize, rate: u64) -> Arc<Mutex<Vec<Put>>> {
    let puts = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let out = puts.clone();
    let producer = h.producer.clone();
    let rt = h.sim.runtime();
    let rt2 = rt.clone();
    rt.spawn(Box::pin(async move {
        let start = rt2.now();
        let mut next = vec![0u64; keys];
        for i in 0..count {
            let due = start + Duration::from_nanos(i as u64 * 1_000_000_000 / rate.max(1));
            if due > rt2.now() {
                rt2.sleep_until(due).await;
            }
            let k = (i * 7 + i / keys) % keys;
            let partition_key = format!("key-{k}");
            let data = Bytes::from(format!("{partition_key} {:08}", next[k]));
            next[k] += 1;
            put_and_keep(&producer, partition_key, data, &out).await;
        }
    }));
    puts
}

fn run(ordered: bool, faults: Faults, keys: usize, reshard: bool, seed: u64) -> (usize, Outcome) {
    let config = Config::builder()
        .ordered(ordered)
        .record_max_buffered_time(Duration::from_millis(50))
        .request_timeout(Duration::from_millis(1_000));
    let h = harness(config, 2, seed);
    h.kinesis.set_faults(faults);
    let puts = keyed_load(&h, 2_000, keys, 1_000);
    if reshard {
        h.sim.run_for(Duration::from_millis(600));
        let shard = h.kinesis.shards(STREAM).unwrap()[0].clone();
        let (lo, hi) = (shard.starting_hash_key.get(), shard.ending_hash_key.get());
        h.kinesis
            .split_shard(STREAM, &shard.shard_id, HashKey::new(lo + (hi - lo) / 2))
            .unwrap();
        h.sim.run_for(Duration::from_millis(600));
        let open: Vec<_> = h
            .kinesis
            .shards(STREAM)
            .unwrap()
            .into_iter()
            .filter(|s| !s.closed)
            .collect();
        let mut open = open;
        open.sort_by_key(|s| s.starting_hash_key);
        h.kinesis
            .merge_shards(STREAM, &open[1].shard_id, &open[2].shard_id)
            .unwrap();
    }
    h.sim.run_for(Duration::from_secs(3));
    h.kinesis.set_faults(Faults::none());
    run_until_resolved(&h, &puts, 2_000, Duration::from_secs(600));
    h.sim.run_for(Duration::from_secs(10));
    let outcome = check_invariants(&h, &puts);
    let v = order_violations(
        &h.kinesis.records(STREAM).unwrap(),
        &h.kinesis.shards(STREAM).unwrap(),
    );
    (v, outcome)
}

fn failing_records() -> Faults {
    let mut f = Faults::none();
    f.record_internal_failure_rate = 0.2;
    // Several requests in flight at once.
    f.latency = Duration::from_millis(120);
    f
}

fn ambiguous_and_lost() -> Faults {
    let mut f = Faults::none();
    f.request_500_rate = 0.1;
    f.timeout_rate = 0.1;
    f.timeout_after = Duration::from_millis(1_500);
    f.stored_answer_lost_rate = 0.1;
    f.record_internal_failure_rate = 0.1;
    f.latency = Duration::from_millis(30);
    f
}

#[test]
fn one_key_through_failing_records_is_read_in_put_order() {
    for seed in 0..3 {
        let (violations, outcome) = run(true, failing_records(), 1, false, seed);
        assert_eq!(violations, 0, "seed {seed}");
        assert_eq!(outcome.successes(), 2_000, "seed {seed}");
    }
}

#[test]
fn keys_through_lost_answers_and_reshards_are_read_in_put_order() {
    for seed in 0..3 {
        let (violations, outcome) = run(true, ambiguous_and_lost(), 40, true, seed);
        assert_eq!(violations, 0, "seed {seed}");
        assert!(
            outcome.successes() > 1_900,
            "seed {seed}: {}",
            outcome.successes()
        );
    }
}

fn held_answers() -> Faults {
    let mut f = Faults::none();
    // Every answer comes after the request's timeout (1 s), within the transport's
    // wait for it (three timeouts).
    f.answer_delay = Duration::from_millis(1_800);
    f
}

/// A request past its timeout holds its range until its answer comes: its records
/// are settled by the late answer instead of being sent again.
#[test]
fn late_answers_settle_records_instead_of_duplicating_them() {
    let (violations, outcome) = run(true, held_answers(), 40, false, 7);
    assert_eq!(violations, 0);
    assert_eq!(outcome.successes(), 2_000);
    assert_eq!(outcome.duplicated, 0, "stored twice");
    let (_, unordered) = run(false, held_answers(), 40, false, 7);
    assert!(
        unordered.duplicated > 0,
        "unordered mode resends: {}",
        unordered.duplicated
    );
}

/// Today's unordered mode, for contrast: retried records go behind newer ones.
#[test]
fn unordered_mode_reorders_a_key_through_failing_records() {
    let (violations, _) = run(false, failing_records(), 1, false, 0);
    assert!(violations > 0, "unordered mode kept order: {violations}");
}
