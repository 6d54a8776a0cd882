//! Verify before resend on kpl-sim: records of requests that may have stored them
//! (answers lost after the request was stored, held past the timeout, 500s) are
//! looked for in their shard before they are resent. With it, nothing is stored
//! twice; without it, the same load is.

mod common;

use std::time::Duration;

use common::*;
use kpl_producer::Config;
use kpl_sim::Faults;

/// Answers lost after the request was stored, and 500s (nothing stored).
fn lost_answers() -> Faults {
    let mut f = Faults::none();
    f.stored_answer_lost_rate = 0.1;
    f.request_500_rate = 0.05;
    // Several requests in flight at once.
    f.latency = Duration::from_millis(40);
    f
}

struct Run {
    outcome: Outcome,
    reads: u64,
    stats: kpl_producer::VerifyStats,
    violations: usize,
}

fn run(verify: bool, ordered: bool, aggregated: bool, seed: u64) -> Run {
    let config = Config::builder()
        .verify_before_resend(verify)
        .ordered(ordered)
        .aggregation_enabled(aggregated)
        .record_max_buffered_time(Duration::from_millis(50))
        .request_timeout(Duration::from_millis(1_000));
    let h = harness(config, 2, seed);
    h.kinesis.set_faults(lost_answers());
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 2_000, 100, 1_000, seed);
    run_until_resolved(&h, &puts, 2_000, Duration::from_secs(600));
    h.sim.run_for(Duration::from_secs(10));
    let violations = order_violations(
        &h.kinesis.records(STREAM).unwrap(),
        &h.kinesis.shards(STREAM).unwrap(),
    );
    Run {
        outcome: check_invariants(&h, &puts),
        reads: h.kinesis.reads(),
        stats: h.producer.verify_stats(),
        violations,
    }
}

#[test]
fn records_found_stored_are_not_sent_again() {
    for seed in 0..3 {
        let on = run(true, false, true, seed);
        assert_eq!(on.outcome.successes(), 2_000, "seed {seed}");
        assert_eq!(on.outcome.duplicated, 0, "seed {seed}: stored twice");
        assert!(on.stats.found > 0, "seed {seed}: {:?}", on.stats);
        assert!(
            on.stats.not_found > 0,
            "seed {seed}: the 500s stored nothing"
        );
        assert_eq!(on.stats.reads, on.reads, "seed {seed}: every read counted");
        assert_eq!(
            on.outcome.flagged_duplicates(),
            0,
            "seed {seed}: a record found, or not found after the wait, is not flagged"
        );
        // The same load without it.
        let off = run(false, false, true, seed);
        assert!(
            off.outcome.duplicated > 0,
            "seed {seed}: nothing resent twice without verifying"
        );
        assert_eq!((off.reads, off.stats.reads), (0, 0));
    }
}

#[test]
fn raw_records_are_found_by_their_bytes() {
    let on = run(true, false, false, 5);
    assert_eq!(on.outcome.successes(), 2_000);
    assert_eq!(on.outcome.duplicated, 0);
    assert!(on.stats.found > 0, "{:?}", on.stats);
}

#[test]
fn ordered_mode_waits_for_the_read_and_keeps_order() {
    let mut found = 0;
    for seed in 0..3 {
        let on = run(true, true, true, seed);
        assert_eq!(on.outcome.successes(), 2_000, "seed {seed}");
        assert_eq!(on.outcome.duplicated, 0, "seed {seed}");
        assert_eq!(on.violations, 0, "seed {seed}");
        found += on.stats.found;
    }
    assert!(found > 0, "nothing found stored");
}

/// Answers held past the request's timeout: the records wait for the late answer,
/// which settles them without a read.
#[test]
fn late_answers_settle_records_waiting_to_be_looked_for() {
    let config = Config::builder()
        .verify_before_resend(true)
        .record_max_buffered_time(Duration::from_millis(50))
        .request_timeout(Duration::from_millis(1_000));
    let h = harness(config, 2, 3);
    let mut f = Faults::none();
    f.answer_delay = Duration::from_millis(1_800);
    h.kinesis.set_faults(f);
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 2_000, 100, 1_000, 3);
    run_until_resolved(&h, &puts, 2_000, Duration::from_secs(600));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 2_000);
    assert_eq!(outcome.duplicated, 0);
    assert_eq!(h.kinesis.reads(), 0, "no read: every answer came");
    assert!(
        outcome.attempts_with("Timeout") == 0,
        "the late answer's attempt is the success"
    );
}

/// kpl-sim with reads refused, as a producer without kinesis:GetRecords sees it.
struct NoReads(kpl_sim::Simulator);

#[async_trait::async_trait]
impl kpl_transport::Transport for NoReads {
    async fn list_shards(
        &self,
        request: kpl_transport::ListShardsRequest,
    ) -> Result<kpl_transport::ListShardsPage, kpl_transport::TransportError> {
        self.0.list_shards(request).await
    }
    async fn put_records(
        &self,
        request: kpl_transport::PutRecordsRequest,
    ) -> Result<kpl_transport::PutRecordsResponse, kpl_transport::TransportError> {
        self.0.put_records(request).await
    }
    async fn shard_iterator(
        &self,
        _: &kpl_transport::StreamId,
        _: &str,
        _: kpl_transport::ShardPosition,
    ) -> Result<String, kpl_transport::TransportError> {
        Err(kpl_transport::TransportError::from_code(
            "AccessDeniedException",
            "not authorized to perform: kinesis:GetShardIterator",
            Some(400),
        ))
    }
}

/// Reads refused: the records are resent as without the setting, flagged, and
/// nothing is lost or hangs.
#[test]
fn when_reads_are_refused_records_are_resent_with_their_flag() {
    let sim = kpl_runtime::Simulation::new();
    let kinesis = kpl_sim::Simulator::new(sim.runtime().timer().clone(), 4);
    kinesis.create_stream(STREAM, 2).unwrap();
    kinesis.set_faults(lost_answers());
    let config = Config::builder()
        .verify_before_resend(true)
        .record_max_buffered_time(Duration::from_millis(50))
        .request_timeout(Duration::from_millis(1_000))
        .seed(4)
        .build()
        .unwrap();
    let producer =
        kpl_producer::Producer::builder(config, std::sync::Arc::new(NoReads(kinesis.clone())))
            .build(sim.runtime());
    let h = Harness {
        sim,
        kinesis,
        producer,
    };
    let puts = spawn_load(&h.sim.runtime(), &h.producer, 2_000, 100, 1_000, 4);
    run_until_resolved(&h, &puts, 2_000, Duration::from_secs(600));
    h.sim.run_for(Duration::from_secs(10));
    let outcome = check_invariants(&h, &puts);
    assert_eq!(outcome.successes(), 2_000);
    assert!(outcome.duplicated > 0, "resent as without verifying");
    let stats = h.producer.verify_stats();
    assert_eq!(stats.reads, 0);
    assert!(stats.unsettled > 0, "{stats:?}");
}
