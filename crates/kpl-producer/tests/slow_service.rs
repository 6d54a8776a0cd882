//! Delivery when the service is slow or failing, on the virtual clock: a slow
//! emulator, a narrow uplink, a brownout, lost answers. The congestion window keeps
//! what is unanswered to what the path carries, timeouts fit the request, and every
//! outcome is true to what was stored.

mod common;

use std::time::Duration;

use common::*;
use kpl_producer::Config;
use kpl_runtime::Timer;
use kpl_sim::Faults;

/// Bytes a consumer-side count of the stream holds (data plus partition key).
fn stored_bytes(h: &Harness) -> usize {
    h.kinesis
        .records(STREAM)
        .unwrap()
        .iter()
        .map(|r| r.data.len() + r.partition_key.len())
        .sum()
}

fn slow(bytes_per_second: u64, per_request: Duration) -> Faults {
    let mut f = Faults::none();
    f.service_bytes_per_second = Some(bytes_per_second);
    f.service_time_per_request = per_request;
    f
}

#[test]
fn a_slow_emulator_at_default_settings_stores_everything_once() {
    // kinesis-mock stores 60,000 JSON lines in about 12 s with two connections
    // (about 0.7 MB/s of aggregates); 60,000 records of 100 B as fast as they
    // can be put, with the KPL's defaults (24 connections, 6 s timeouts).
    let h = harness(Config::builder(), 4, 21);
    h.kinesis.set_limits(false);
    h.kinesis
        .set_faults(slow(700_000, Duration::from_millis(20)));
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 60_000, 100, 1_000_000, 22);
    run_until_resolved(&h, &puts, 60_000, Duration::from_secs(120));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 60_000);
    assert_eq!(outcome.duplicated, 0, "no copies");
    assert_eq!(outcome.attempts_with("Timeout"), 0, "no request timed out");
    assert_eq!(h.kinesis.stored_requests(), h.kinesis.put_requests());
}

#[test]
fn a_narrow_uplink_is_used_without_collapse() {
    // 300 kB/s shared by every connection; 30,000 records.
    let rate = 300_000u64;
    let h = harness(Config::builder(), 4, 23);
    h.kinesis.set_limits(false);
    h.kinesis.set_faults(slow(rate, Duration::from_millis(20)));
    let t0 = h.sim.clock().now();
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 30_000, 100, 1_000_000, 24);
    run_until_resolved(&h, &puts, 30_000, Duration::from_secs(300));
    let took = h.sim.clock().now() - t0;
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 30_000);
    assert_eq!(outcome.duplicated, 0);
    assert_eq!(outcome.attempts_with("Timeout"), 0);
    // Within 1.3× the time the link needs for the bytes (plus the harness's 100 ms
    // polling step).
    let needed = Duration::from_secs_f64(stored_bytes(&h) as f64 / rate as f64);
    assert!(
        took <= needed.mul_f64(1.3) + Duration::from_millis(200),
        "{took:?} for {needed:?} of bytes"
    );
}

#[test]
fn a_brownout_duplicates_at_most_the_window_and_says_so() {
    // Answers held 8 s (over the 6 s timeout) for 3 s while the service stores.
    let h = harness(Config::builder(), 4, 25);
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 12_000, 100, 1_000, 26);
    h.sim.run_for(Duration::from_secs(3));
    let mut held = Faults::none();
    held.answer_delay = Duration::from_secs(8);
    h.kinesis.set_faults(held);
    h.sim.run_for(Duration::from_secs(3));
    h.kinesis.set_faults(Faults::none());
    run_until_resolved(&h, &puts, 12_000, Duration::from_secs(120));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 12_000, "nothing fails");
    // The brownout was seen: answers came after the 6 s timeout, and settled the
    // records that had not been resent yet.
    assert!(
        outcome
            .results
            .iter()
            .any(|(_, _, r)| r.attempts.last().unwrap().duration > Duration::from_secs(6)),
        "the brownout was seen"
    );
    eprintln!("stored twice: {}", outcome.duplicated);
    assert!(
        outcome.duplicated <= 12_000 / 100,
        "{} stored twice",
        outcome.duplicated
    );
    // Every copy is reported; nothing else is (the invariants check the first half).
    assert!(outcome.flagged_duplicates() >= outcome.duplicated);
}

#[test]
fn lost_answers_are_reported_as_possible_duplicates() {
    let h = harness(Config::builder(), 2, 27);
    let mut faults = Faults::none();
    faults.stored_answer_lost_rate = 0.05;
    h.kinesis.set_faults(faults);
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 5_000, 100, 1_000, 28);
    run_until_resolved(&h, &puts, 5_000, Duration::from_secs(120));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 5_000);
    assert!(
        outcome.duplicated > 0,
        "some answers were lost after storing"
    );
    assert!(outcome.flagged_duplicates() >= outcome.duplicated);
}

#[test]
fn a_record_that_expires_after_a_timeout_says_it_may_have_been_stored() {
    // Every answer held past the timeout, and a time to live shorter than the
    // backed-off retries: records fail, and say they may be in the stream.
    let h = harness(
        Config::builder()
            .record_ttl(Duration::from_secs(3))
            .request_timeout(Duration::from_secs(1)),
        1,
        29,
    );
    let mut faults = Faults::none();
    faults.answer_delay = Duration::from_secs(30);
    h.kinesis.set_faults(faults);
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 200, 100, 1_000, 30);
    run_until_resolved(&h, &puts, 200, Duration::from_secs(120));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 0);
    assert!(outcome.failed_but_stored > 0);
    for (_, _, r) in outcome
        .results
        .iter()
        .filter(|(_, _, r)| r.attempts.len() > 1)
    {
        assert!(r.may_have_been_stored(), "{:?}", r.attempts);
        let last = r.attempts.last().unwrap();
        let message = last.error().map(|e| e.message.as_str()).unwrap_or_default();
        assert!(
            !message.contains("before it was stored"),
            "a record that may be stored must not say it was not: {message}"
        );
    }
}
