//! End-to-end scenarios on the virtual clock: the producer against kpl-sim, seeded.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kpl_producer::{Config, ErrorCode, Hold, PutErrorKind, PutRecord, codes};
use kpl_sim::Faults;

#[test]
fn steady_load_within_limits() {
    let h = harness(Config::builder(), 4, 1);
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 20_000, 100, 2_000, 7);
    run_until_resolved(&h, &puts, 20_000, Duration::from_secs(60));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 20_000);
    let stored = h.kinesis.records(STREAM).unwrap();
    assert!(
        stored.len() < 20_000 / 10,
        "aggregated: {} Kinesis records",
        stored.len()
    );
    assert!(
        outcome
            .results
            .iter()
            .all(|(_, _, r)| r.attempts.len() == 1)
    );
}

#[test]
fn throttling_storm() {
    // One shard takes 1 MiB/s; offered: 10 KB × 500/s = 5 MB/s for 4 s.
    let h = harness(Config::builder().record_ttl(Duration::from_secs(3)), 1, 2);
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 2_000, 10_000, 500, 3);
    run_until_resolved(&h, &puts, 2_000, Duration::from_secs(60));
    let outcome = check_invariants(&h, &puts);
    let expired = outcome.failures_with(codes::EXPIRED);
    assert!(outcome.successes() > 300, "{} stored", outcome.successes());
    assert!(expired > 300, "{expired} expired");
    assert_eq!(outcome.successes() + expired, 2_000);
    // The limiter keeps most of the excess from ever reaching the service.
    let throttled = outcome.attempts_with("ProvisionedThroughputExceededException");
    assert!(throttled < 1_000, "{throttled} throttled attempts");
}

#[test]
fn fail_if_throttled_fails_at_once() {
    let h = harness(
        Config::builder().fail_if_throttled(true).rate_limit(1_000),
        1,
        4,
    );
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 3_000, 2_000, 3_000, 5);
    run_until_resolved(&h, &puts, 3_000, Duration::from_secs(60));
    let outcome = check_invariants(&h, &puts);
    let failed = outcome.failures_with("ProvisionedThroughputExceededException");
    assert!(failed > 0);
    assert!(
        outcome
            .results
            .iter()
            .filter(|(_, _, r)| !r.is_success())
            .all(|(_, _, r)| r.attempts.len() == 1)
    );
}

#[test]
fn bursts_of_500_503_and_timeouts() {
    let h = harness(Config::builder(), 2, 6);
    let mut faults = Faults::none();
    faults.request_500_rate = 0.2;
    faults.request_503_rate = 0.1;
    faults.timeout_rate = 0.05;
    faults.timeout_after = Duration::from_secs(1);
    h.kinesis.set_faults(faults);
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 5_000, 200, 1_000, 7);
    run_until_resolved(&h, &puts, 5_000, Duration::from_secs(120));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 5_000);
    assert!(outcome.attempts_with("InternalFailure") > 0);
    assert!(outcome.attempts_with("ServiceUnavailable") > 0);
    assert!(outcome.attempts_with("Timeout") > 0);
}

#[test]
fn per_record_internal_failures_are_retried() {
    let h = harness(Config::builder(), 2, 8);
    let mut faults = Faults::none();
    faults.record_internal_failure_rate = 0.3;
    h.kinesis.set_faults(faults);
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 5_000, 100, 1_000, 9);
    run_until_resolved(&h, &puts, 5_000, Duration::from_secs(60));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 5_000);
    assert!(outcome.results.iter().any(|(_, _, r)| r.attempts.len() > 1));
    assert!(outcome.attempts_with("InternalFailure") > 0);
}

#[test]
fn split_and_merge_mid_run() {
    let h = harness(Config::builder(), 2, 10);
    let rt = h.sim.runtime();
    let puts = spawn_load(&rt, &h.producer, 8_000, 100, 1_000, 11);
    h.sim.run_for(Duration::from_secs(2));
    let shards = h.kinesis.shards(STREAM).unwrap();
    let s0 = &shards[0];
    let middle =
        kpl_codec::HashKey::new(s0.starting_hash_key.get() / 2 + s0.ending_hash_key.get() / 2);
    let (a, b) = h.kinesis.split_shard(STREAM, &s0.shard_id, middle).unwrap();
    h.sim.run_for(Duration::from_secs(2));
    h.kinesis.merge_shards(STREAM, &a, &b).unwrap();
    run_until_resolved(&h, &puts, 8_000, Duration::from_secs(60));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 8_000);
}

#[test]
fn stream_deleted_mid_run_fails_fast() {
    let h = harness(Config::builder(), 2, 12);
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 3_000, 100, 1_000, 13);
    h.sim.run_for(Duration::from_millis(1_500));
    let stored = h.kinesis.records(STREAM).unwrap();
    let shards = h.kinesis.shards(STREAM).unwrap();
    h.kinesis.delete_stream(STREAM).unwrap();
    run_until_resolved(&h, &puts, 3_000, Duration::from_secs(10));
    let outcome = check_invariants_against(&h, &puts, stored, shards);
    let not_found = outcome.failures_with("ResourceNotFoundException");
    assert!(not_found > 1_000, "{not_found}");
    assert_eq!(outcome.successes() + not_found, 3_000);
    // Failed at once, not after the 30 s TTL.
    for (_, _, r) in outcome.results.iter().filter(|(_, _, r)| !r.is_success()) {
        assert_eq!(r.attempts.len(), 1);
    }
}

#[test]
fn records_expire_where_they_wait() {
    let h = harness(
        Config::builder()
            .record_ttl(Duration::from_millis(300))
            .rate_limit(10),
        1,
        14,
    );
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 500, 50_000, 500, 15);
    run_until_resolved(&h, &puts, 500, Duration::from_secs(30));
    let outcome = check_invariants(&h, &puts);
    let expired = outcome.failures_with(codes::EXPIRED);
    assert!(expired > 400, "{expired}");
    for (_, _, r) in outcome.results.iter().filter(|(_, _, r)| !r.is_success()) {
        assert_eq!(
            r.attempts
                .last()
                .unwrap()
                .error_code()
                .map(ErrorCode::as_str),
            Some(codes::EXPIRED)
        );
    }
}

#[test]
fn shutdown_with_records_pending() {
    let h = harness(Config::builder().rate_limit(5), 1, 16);
    // 3 MB: all of it is admitted at once (the admission floor is 4 MiB).
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 150, 20_000, 100_000, 17);
    h.sim.run_for(Duration::from_millis(100));
    let producer = h.producer.clone();
    let failed = h
        .sim
        .block_on(async move { producer.shutdown(Duration::from_millis(500)).await })
        .unwrap();
    assert!(failed > 0);
    run_until_resolved(&h, &puts, 150, Duration::from_secs(10));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.failures_with(codes::SHUTDOWN), failed);
    assert_eq!(outcome.successes() + failed, 150);
    let p = h.producer.clone();
    let after = h.sim.block_on(async move {
        p.put_record(STREAM, PutRecord::new("late", Bytes::from_static(b"x")))
            .await
            .map(drop)
    });
    assert_eq!(
        after.map(|r| r.map_err(|e| e.kind())),
        Some(Err(PutErrorKind::ShuttingDown))
    );
}

#[test]
fn backpressure_caps_are_never_exceeded() {
    let h = harness(
        Config::builder()
            .max_outstanding_records(100)
            .max_outstanding_bytes(1 << 20),
        1,
        18,
    );
    let rt = h.sim.runtime();
    let producer = h.producer.clone();
    let peak = Arc::new(std::sync::Mutex::new(0usize));
    let full_seen = Arc::new(std::sync::Mutex::new(false));
    let (peak2, full2) = (peak.clone(), full_seen.clone());
    let puts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = puts.clone();
    rt.spawn(Box::pin(async move {
        for i in 0..2_000 {
            let data = Bytes::from(format!("record {i:08}"));
            let tried = producer
                .try_put_records(STREAM, vec![PutRecord::new(format!("k{i}"), Bytes::new())])
                .unwrap();
            if tried.held_by == Some(Hold::Caps) {
                assert_eq!(tried.rest.len(), 1, "the record handed back");
                *full2.lock().unwrap() = true;
            }
            let f = producer
                .put_record(STREAM, PutRecord::new(format!("k{i}"), data.clone()))
                .await
                .unwrap();
            let n = producer.outstanding_records();
            let mut p = peak2.lock().unwrap();
            *p = (*p).max(n);
            out.lock().unwrap().push(Put {
                partition_key: format!("k{i}"),
                data,
                source: Source::Future(f),
            });
        }
    }));
    run_until_resolved(&h, &puts, 2_000, Duration::from_secs(120));
    let _ = check_invariants(&h, &puts);
    assert!(
        *peak.lock().unwrap() <= 100,
        "peak {}",
        peak.lock().unwrap()
    );
    assert!(
        *full_seen.lock().unwrap(),
        "try_put_records saw the cap (Hold::Caps)"
    );
}

#[test]
fn invalid_records_are_refused_and_nothing_is_enqueued() {
    let h = harness(Config::builder().max_user_record_size(1_000), 1, 19);
    let p = h.producer.clone();
    let errors = h
        .sim
        .block_on(async move {
            vec![
                p.put_record(STREAM, PutRecord::new("", Bytes::new()))
                    .await
                    .map(drop),
                p.put_record(STREAM, PutRecord::new("k".repeat(257), Bytes::new()))
                    .await
                    .map(drop),
                p.put_record(
                    STREAM,
                    PutRecord::new("k", Bytes::new()).explicit_hash_key("-1"),
                )
                .await
                .map(drop),
                p.put_record(STREAM, PutRecord::new("k", Bytes::from(vec![0; 1_000])))
                    .await
                    .map(drop),
            ]
        })
        .unwrap();
    assert!(
        errors.iter().all(|e| matches!(e, Err(e) if e.is_invalid())),
        "{errors:?}"
    );
    assert_eq!(h.producer.outstanding_records(), 0);
}

#[test]
fn a_fast_reader_into_a_slow_stream_waits_instead_of_expiring() {
    // One shard (1 MiB/s) and 150,000 records of 100 B offered at once: about 18 s
    // of the shard's time, with a 10 s time to live. Admission follows what the
    // stream drains, so the reader waits and no record expires unsent.
    let h = harness(Config::builder().record_ttl(Duration::from_secs(10)), 1, 40);
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 150_000, 100, 10_000_000, 41);
    h.sim.run_for(Duration::from_secs(3));
    let waiting = h.producer.outstanding_records();
    assert!(
        waiting < 100_000,
        "{waiting} records accepted in 3 s: admission did not follow the drain"
    );
    run_until_resolved(&h, &puts, 150_000, Duration::from_secs(120));
    let outcome = check_invariants(&h, &puts);
    let never_tried = outcome
        .results
        .iter()
        .filter(|(_, _, r)| !r.is_success() && r.attempts.len() == 1)
        .count();
    assert_eq!(never_tried, 0, "records expired without an attempt");
    // What fails was throttled first: the limiter's overshoot of the shard's
    // rolling second (the pipeline issue's work), not admission.
    assert!(
        outcome.successes() >= 150_000 * 98 / 100,
        "{} stored",
        outcome.successes()
    );
}

#[test]
fn try_put_records_holds_back_what_the_stream_cannot_drain_in_time() {
    let h = harness(Config::builder().record_ttl(Duration::from_secs(2)), 1, 42);
    let _puts = spawn_load(
        &h.sim.runtime(),
        &h.producer,
        100_000,
        1_000,
        10_000_000,
        43,
    );
    h.sim.run_for(Duration::from_secs(3));
    // The reader keeps the stream at its limit: a put of the same size is held
    // back (within a few steps: the reader may not have refilled yet).
    let record = PutRecord::new("k", Bytes::from(vec![b'x'; 1_000]));
    let mut held = None;
    for _ in 0..100 {
        h.sim.run_for(Duration::from_millis(1));
        let tried = h
            .producer
            .try_put_records(STREAM, vec![record.clone()])
            .unwrap();
        if tried.held_by.is_some() {
            held = Some(tried);
            break;
        }
    }
    let held = held.expect("held back within 100 ms");
    assert_eq!(held.held_by, Some(Hold::Backlog), "{held:?}");
    assert!(held.results.is_empty());
    assert_eq!(held.rest, vec![record.clone()], "handed back untouched");
    // The stream, not the caps (which come first): the same record is let into
    // another stream at once.
    let other = h.producer.try_put_records("another", vec![record]).unwrap();
    assert_eq!((other.results.len(), other.held_by), (1, None));
}

/// The stream's open shards, by starting hash key.
fn open_shards(h: &Harness) -> Vec<kpl_transport::ShardDescription> {
    let mut open: Vec<_> = h
        .kinesis
        .shards(STREAM)
        .unwrap()
        .into_iter()
        .filter(|s| !s.closed)
        .collect();
    open.sort_by_key(|s| s.starting_hash_key);
    open
}

#[test]
fn a_storm_of_splits_and_merges_leaves_few_copies_outside_shard_ranges() {
    // 60,000 records over 15 s while shards are split and merged 8 times, on a path
    // with 300 ms of latency (a refresh of the shard map takes that long, as against
    // a slow emulator).
    let h = harness(Config::builder(), 4, 44);
    h.kinesis.set_limits(false);
    let mut faults = Faults::none();
    faults.latency = Duration::from_millis(300);
    h.kinesis.set_faults(faults);
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 60_000, 100, 4_000, 45);
    for i in 0..8 {
        h.sim.run_for(Duration::from_millis(1_500));
        let open = open_shards(&h);
        if i % 2 == 0 {
            let s = &open[i % open.len()];
            let (lo, hi) = (s.starting_hash_key.get(), s.ending_hash_key.get());
            h.kinesis
                .split_shard(
                    STREAM,
                    &s.shard_id,
                    kpl_codec::HashKey::new(lo + (hi - lo) / 2),
                )
                .unwrap();
        } else {
            let j = i % (open.len() - 1);
            h.kinesis
                .merge_shards(STREAM, &open[j].shard_id, &open[j + 1].shard_id)
                .unwrap();
        }
    }
    run_until_resolved(&h, &puts, 60_000, Duration::from_secs(120));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 60_000);
    let outside = copies_outside_ranges(&h);
    eprintln!("copies outside their shard's range: {outside} of 60000");
    // The issue asks for at most 10 %; taking aggregates apart when a split is seen
    // keeps it under 1 % here (about 1.7 % without).
    assert!(
        outside <= 60_000 / 100,
        "{outside} copies outside their shard's range"
    );
}

/// Copies stored outside their shard's range by the second of two splits of a busy
/// stream, the second `1/divisor` of the way into its shard's range while half a second of
/// aggregates is in flight.
fn copies_after_second_split(divisor: u128, seed: u64) -> usize {
    let h = harness(Config::builder(), 1, seed);
    h.kinesis.set_limits(false);
    let mut faults = Faults::none();
    faults.latency = Duration::from_millis(500);
    h.kinesis.set_faults(faults);
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 50_000, 100, 10_000, seed + 1);
    let split = |divisor: u128| {
        let mut open = open_shards(&h);
        let s = open.pop().unwrap();
        let (lo, hi) = (s.starting_hash_key.get(), s.ending_hash_key.get());
        h.kinesis
            .split_shard(
                STREAM,
                &s.shard_id,
                kpl_codec::HashKey::new(lo + (hi - lo) / divisor + 1),
            )
            .unwrap();
    };
    h.sim.run_for(Duration::from_millis(1_500));
    split(2);
    h.sim.run_for(Duration::from_millis(2_000));
    let before = copies_outside_ranges(&h);
    split(divisor);
    run_until_resolved(&h, &puts, 50_000, Duration::from_secs(60));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 50_000);
    copies_outside_ranges(&h) - before
}

#[test]
fn aggregates_in_flight_at_a_split_at_the_midpoint_leave_no_copies() {
    // Once the stream reshards, big aggregates of a busy shard are cut at its
    // midpoint, so none of those in flight holds records of both children of the
    // next split there (UpdateShardCount's).
    let at_midpoint = copies_after_second_split(2, 48);
    assert_eq!(
        at_midpoint, 0,
        "copies outside ranges after a midpoint split"
    );
    // A split elsewhere does leave copies (what was in flight of the part cut off),
    // which the resends make good for a KCL consumer.
    let at_a_third = copies_after_second_split(3, 50);
    assert!(
        at_a_third > 0,
        "a split at a third left no copies: nothing was in flight"
    );
}

#[test]
fn records_wait_for_a_slow_first_map_instead_of_going_out_raw() {
    // The first ListShards takes 300 ms (three times record_max_buffered_time):
    // records put meanwhile wait for the map and are aggregated.
    let h = harness(Config::builder(), 4, 46);
    let mut faults = Faults::none();
    faults.latency = Duration::from_millis(300);
    h.kinesis.set_faults(faults);
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 5_000, 100, 1_000_000, 47);
    run_until_resolved(&h, &puts, 5_000, Duration::from_secs(60));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 5_000);
    let stored = h.kinesis.records(STREAM).unwrap().len();
    assert!(
        stored < 100,
        "{stored} Kinesis records for 5,000 user records"
    );
}
