//! A producer at its outstanding caps, on the virtual clock: a put that waits for
//! room sends what is buffered at once, so that a low cap costs round trips, not
//! `RecordMaxBufferedTime` per record; with room (or with the stream as the
//! bottleneck) the batching stays as it is.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use kpl_producer::{Config, ConfigBuilder, Outcomes, PutRecord};
use kpl_runtime::Timer;
use kpl_sim::Faults;

/// The simulated service's answer time (each way together): one round trip.
const ROUND_TRIP: Duration = Duration::from_millis(5);
const BUFFERED: Duration = Duration::from_millis(100);

fn harness_with_latency(config: ConfigBuilder, shards: usize, seed: u64) -> Harness {
    let h = harness(config.record_max_buffered_time(BUFFERED), shards, seed);
    let mut faults = Faults::none();
    faults.latency = ROUND_TRIP;
    h.kinesis.set_faults(faults);
    h
}

fn record(i: usize) -> PutRecord {
    PutRecord::new(format!("pk-{i}"), Bytes::from(format!("record {i:04}")))
}

/// Puts `n` records one after another with `put_record` (each awaits its
/// admission, not its outcome), then awaits every outcome; returns the virtual
/// time from the first put to the last outcome.
fn put_one_after_another(h: &Harness, n: usize) -> Duration {
    let producer = h.producer.clone();
    let clock = h.sim.clock().clone();
    let t0 = clock.now();
    let ends = h
        .sim
        .block_on(async move {
            let mut pending = Vec::with_capacity(n);
            for i in 0..n {
                pending.push(producer.put_record(STREAM, record(i)).await.unwrap());
            }
            let mut ends = Vec::with_capacity(n);
            for p in pending {
                let result = p.await;
                assert!(result.is_success(), "{:?}", result.attempts);
                ends.push(clock.now());
            }
            ends
        })
        .expect("the puts finish");
    last(&ends, t0)
}

/// Like [`put_one_after_another`], through `try_put_records_to` and
/// `wait_for_room` as `kpl put` does: all `n` records handed over at once, the
/// rest after each wait.
fn put_through_a_queue(h: &Harness, n: usize) -> Duration {
    let producer = h.producer.clone();
    let clock = h.sim.clock().clone();
    let t0 = clock.now();
    let ends = h
        .sim
        .block_on(async move {
            let outcomes = Outcomes::new();
            let mut records: Vec<PutRecord> = (0..n).map(record).collect();
            while !records.is_empty() {
                let kpl_producer::Admitted {
                    results: ids, rest, ..
                } = producer
                    .try_put_records_to(STREAM, records, &outcomes)
                    .unwrap();
                assert!(ids.iter().all(Result::is_ok));
                if let Some(first) = rest.first() {
                    producer.wait_for_room(STREAM, first.size()).await;
                }
                records = rest;
            }
            let mut ends = Vec::with_capacity(n);
            while outcomes.pending() > 0 {
                for (_, result) in outcomes.next().await {
                    assert!(result.is_success(), "{:?}", result.attempts);
                    ends.push(clock.now());
                }
            }
            ends
        })
        .expect("the puts finish");
    assert_eq!(ends.len(), n);
    last(&ends, t0)
}

fn last(ends: &[Instant], t0: Instant) -> Duration {
    ends.iter().max().map_or(Duration::ZERO, |t| *t - t0)
}

/// About `round_trips` round trips (and the first listing of the shards), with
/// room for a few more: far below a buffered time per round.
fn assert_round_trips(took: Duration, round_trips: u32) {
    let bound = ROUND_TRIP * 2 * (round_trips + 2);
    eprintln!("{took:?} for {round_trips} round trips of {ROUND_TRIP:?}");
    assert!(
        took <= bound,
        "{took:?} for {round_trips} round trips of {ROUND_TRIP:?} (bound {bound:?}; \
         with {BUFFERED:?} buffered per round it would be {:?})",
        BUFFERED * round_trips
    );
}

#[test]
fn one_record_outstanding_costs_a_round_trip_per_record() {
    let h = harness_with_latency(Config::builder().max_outstanding_records(1), 1, 1);
    let took = put_one_after_another(&h, 40);
    assert_round_trips(took, 40);
    assert_eq!(h.kinesis.put_requests(), 40, "one request per record");
}

#[test]
fn one_byte_outstanding_costs_a_round_trip_per_record() {
    let h = harness_with_latency(Config::builder().max_outstanding_bytes(1), 1, 2);
    let took = put_one_after_another(&h, 40);
    assert_round_trips(took, 40);
}

#[test]
fn ten_records_outstanding_go_ten_per_round_trip() {
    let h = harness_with_latency(Config::builder().max_outstanding_records(10), 1, 3);
    let took = put_one_after_another(&h, 200);
    assert_round_trips(took, 20);
}

#[test]
fn a_caller_waiting_for_room_gets_the_buffer_sent() {
    // kpl put's way: try_put_records_to, then wait_for_room.
    for (cap, n, rounds) in [(1, 40, 40), (10, 200, 20)] {
        let h = harness_with_latency(Config::builder().max_outstanding_records(cap), 2, 4);
        let took = put_through_a_queue(&h, n);
        assert_round_trips(took, rounds);
    }
}

#[test]
fn with_room_records_wait_for_their_buffered_time_and_are_batched() {
    // 200 records put at once, well under the caps: no flush, one aggregate after
    // the buffered time.
    let h = harness_with_latency(Config::builder(), 1, 5);
    let took = put_one_after_another(&h, 200);
    assert!(
        took >= BUFFERED,
        "{took:?}: sent before their buffered time"
    );
    assert_eq!(h.kinesis.put_requests(), 1);
    assert_eq!(h.kinesis.records(STREAM).unwrap().len(), 1, "one aggregate");
}

#[test]
fn a_stream_that_holds_the_records_back_keeps_them_aggregated() {
    // One shard with its limits (1 MiB/s), records offered far faster, and a cap
    // that is reached: the stream is the bottleneck, so a wait for room must not
    // send aggregates early (more, smaller aggregates would use up the shard's
    // 1,000 records per second instead of its bytes). 138 with nothing sent early;
    // 470 when a wait sends the aggregates whatever the limiter holds.
    let h = harness(
        Config::builder()
            .max_outstanding_records(5_000)
            .record_max_buffered_time(BUFFERED),
        1,
        6,
    );
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 30_000, 200, 1_000_000, 7);
    run_until_resolved(&h, &puts, 30_000, Duration::from_secs(120));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 30_000);
    let stored = h.kinesis.records(STREAM).unwrap().len();
    eprintln!("{stored} Kinesis records for 30,000 user records");
    assert!(
        stored <= 30_000 / 150,
        "{stored} Kinesis records for 30,000 user records: aggregates sent early"
    );
}
