//! Every row of the retry table (docs/retries.md), one test each.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::STREAM;
use kpl_producer::{Config, ErrorCode, Producer, PutRecord, RecordResult, codes};
use kpl_runtime::Simulation;
use kpl_sim::{Faults, Simulator};
use kpl_transport::{
    ErrorKind, ListShardsPage, ListShardsRequest, PutRecordsRequest, PutRecordsResponse, Transport,
    TransportError,
};

/// What the scripted transport does with the next PutRecords call.
enum Step {
    Fail(TransportError),
    DropLastResult,
}

/// kpl-sim, with scripted answers for the next PutRecords calls.
struct Scripted {
    sim: Simulator,
    script: Mutex<VecDeque<Step>>,
    puts: Mutex<usize>,
}

#[async_trait]
impl Transport for Scripted {
    async fn list_shards(&self, r: ListShardsRequest) -> Result<ListShardsPage, TransportError> {
        self.sim.list_shards(r).await
    }
    async fn put_records(
        &self,
        r: PutRecordsRequest,
    ) -> Result<PutRecordsResponse, TransportError> {
        *self.puts.lock().unwrap() += 1;
        let step = self.script.lock().unwrap().pop_front();
        match step {
            Some(Step::Fail(e)) => Err(e),
            Some(Step::DropLastResult) => {
                let mut response = self.sim.put_records(r).await?;
                response.results.pop();
                Ok(response)
            }
            None => self.sim.put_records(r).await,
        }
    }
}

fn setup(
    config: Config,
    shards: usize,
    script: Vec<Step>,
) -> (Simulation, Arc<Scripted>, Producer) {
    let sim = Simulation::new();
    let kinesis = Simulator::new(sim.runtime().timer().clone(), 3);
    kinesis.create_stream(STREAM, shards).unwrap();
    let scripted = Arc::new(Scripted {
        sim: kinesis,
        script: Mutex::new(script.into()),
        puts: Mutex::new(0),
    });
    let producer = Producer::builder(config, scripted.clone()).build(sim.runtime());
    (sim, scripted, producer)
}

/// Puts `n` records and waits for all outcomes.
fn put_all(sim: &Simulation, producer: &Producer, n: usize) -> Vec<RecordResult> {
    put_prefixed(sim, producer, n, "data")
}

fn put_prefixed(
    sim: &Simulation,
    producer: &Producer,
    n: usize,
    prefix: &'static str,
) -> Vec<RecordResult> {
    let p = producer.clone();
    sim.block_on(async move {
        let mut pending = Vec::new();
        for i in 0..n {
            pending.push(
                p.put_record(
                    STREAM,
                    PutRecord::new(format!("key-{i}"), Bytes::from(format!("{prefix} {i}"))),
                )
                .await
                .unwrap(),
            );
        }
        p.flush().await;
        futures::future::join_all(pending).await
    })
    .unwrap()
}

fn codes_of(r: &RecordResult) -> Vec<Option<&str>> {
    r.attempts
        .iter()
        .map(|a| a.error_code().map(ErrorCode::as_str))
        .collect()
}

#[test]
fn per_record_throttles_are_retried() {
    // 1 shard, rate limit far above the shard's: the service throttles.
    let (sim, s, p) = setup(
        Config::builder().rate_limit(10_000).build().unwrap(),
        1,
        vec![],
    );
    let p2 = p.clone();
    let results = sim
        .block_on(async move {
            let mut pending = Vec::new();
            for i in 0..3_000 {
                let data = Bytes::from(vec![b'x'; 1_000 + i % 10]);
                pending.push(
                    p2.put_record(STREAM, PutRecord::new(format!("k{i}"), data))
                        .await
                        .unwrap(),
                );
            }
            p2.flush().await;
            futures::future::join_all(pending).await
        })
        .unwrap();
    assert!(results.iter().all(|r| r.is_success()));
    assert!(
        results
            .iter()
            .any(|r| codes_of(r).contains(&Some("ProvisionedThroughputExceededException")))
    );
    assert!(*s.puts.lock().unwrap() > 1);
}

#[test]
fn throttles_fail_at_once_with_fail_if_throttled() {
    let (sim, _, p) = setup(
        Config::builder()
            .rate_limit(10_000)
            .fail_if_throttled(true)
            .build()
            .unwrap(),
        1,
        vec![Step::Fail(TransportError::from_code(
            "ProvisionedThroughputExceededException",
            "Rate exceeded",
            Some(400),
        ))],
    );
    let results = put_all(&sim, &p, 10);
    assert!(
        results
            .iter()
            .all(|r| !r.is_success() && r.attempts.len() == 1)
    );
    assert_eq!(
        results[0].error_code().map(ErrorCode::as_str),
        Some("ProvisionedThroughputExceededException")
    );
}

#[test]
fn per_record_internal_failures_are_retried() {
    let (sim, s, p) = setup(Config::default(), 1, vec![]);
    let mut faults = Faults::none();
    faults.record_internal_failure_rate = 0.5;
    s.sim.set_faults(faults);
    let results = put_all(&sim, &p, 200);
    assert!(results.iter().all(|r| r.is_success()));
    assert!(
        results
            .iter()
            .any(|r| codes_of(r).first() == Some(&Some("InternalFailure")))
    );
}

#[test]
fn transient_request_errors_are_retried_with_backoff() {
    let (sim, _, p) = setup(
        Config::default(),
        1,
        vec![
            Step::Fail(TransportError::from_code(
                "InternalFailure",
                "boom",
                Some(500),
            )),
            Step::Fail(TransportError::from_code(
                "ServiceUnavailable",
                "busy",
                Some(503),
            )),
            Step::Fail(TransportError::new(ErrorKind::Transient, "timed out").with_code("Timeout")),
        ],
    );
    let results = put_all(&sim, &p, 5);
    for r in &results {
        assert!(r.is_success());
        assert_eq!(
            codes_of(r),
            vec![
                Some("InternalFailure"),
                Some("ServiceUnavailable"),
                Some("Timeout"),
                None
            ]
        );
        // Backoff grows between request-level failures.
        assert!(
            r.attempts[2].delay > r.attempts[1].delay
                || r.attempts[2].delay >= Duration::from_millis(100)
        );
        assert!(r.attempts[1].delay >= Duration::from_millis(50));
    }
}

#[test]
fn errors_retrying_cannot_fix_fail_at_once() {
    for (code, status) in [
        ("ResourceNotFoundException", 400),
        ("AccessDeniedException", 400),
        ("ExpiredTokenException", 400),
        ("ValidationException", 400),
        ("InvalidArgumentException", 400),
    ] {
        let (sim, s, p) = setup(
            Config::default(),
            1,
            vec![Step::Fail(TransportError::from_code(
                code,
                "no",
                Some(status),
            ))],
        );
        let results = put_all(&sim, &p, 20);
        for r in &results {
            assert!(!r.is_success(), "{code}");
            assert_eq!(
                codes_of(r),
                vec![Some(code)],
                "{code}: one attempt, no retry"
            );
        }
        assert_eq!(*s.puts.lock().unwrap(), 1, "{code}");
    }
}

#[test]
fn a_success_on_a_child_shard_is_accepted_and_a_wrong_shard_is_retried() {
    let (sim, s, p) = setup(Config::default(), 1, vec![]);
    // The producer learns the one-shard map.
    assert!(put_prefixed(&sim, &p, 1, "primer")[0].is_success());
    let parent = s.sim.shards(STREAM).unwrap()[0].shard_id.clone();
    s.sim
        .split_shard(STREAM, &parent, kpl_codec::HashKey::new(u128::MAX / 2 + 1))
        .unwrap();
    // Aggregates predicted for the parent land on one child; user records of the
    // other child's range are retried, re-predicted, and land right.
    let results = put_all(&sim, &p, 400);
    assert!(results.iter().all(|r| r.is_success()));
    let wrong: Vec<_> = results
        .iter()
        .filter(|r| codes_of(r).contains(&Some(codes::WRONG_SHARD)))
        .collect();
    assert!(!wrong.is_empty(), "some records landed outside their range");
    assert!(wrong.iter().all(|r| r.attempts.len() == 2));
    assert!(
        results.iter().any(|r| r.attempts.len() == 1),
        "the others landed in range"
    );
    // As a consumer sees it: every record exactly once, on a shard holding its key.
    let shards = s.sim.shards(STREAM).unwrap();
    let mut seen = std::collections::HashMap::new();
    for rec in s.sim.records(STREAM).unwrap() {
        let shard = shards.iter().find(|x| x.shard_id == rec.shard_id).unwrap();
        let users = kpl_codec::deaggregate(&rec.partition_key, None, &rec.data).unwrap();
        for u in users {
            let k = u.hash_key().unwrap();
            if shard.starting_hash_key <= k && k <= shard.ending_hash_key {
                *seen.entry(u.data.to_vec()).or_insert(0) += 1;
            }
        }
    }
    for i in 0..400 {
        assert_eq!(
            seen.get(format!("data {i}").as_bytes()),
            Some(&1),
            "record {i}"
        );
    }
}

#[test]
fn a_response_count_mismatch_fails_the_request_s_records() {
    let (sim, _, p) = setup(Config::default(), 1, vec![Step::DropLastResult]);
    let results = put_all(&sim, &p, 3);
    for r in &results {
        assert!(!r.is_success());
        assert_eq!(r.error_code(), Some(&ErrorCode::RecordCountMismatch));
        assert!(
            r.attempts[0]
                .error()
                .unwrap()
                .message
                .contains("may have been stored")
        );
    }
}

#[test]
fn the_ttl_bounds_retries() {
    let (sim, s, p) = setup(
        Config::builder()
            .record_ttl(Duration::from_secs(2))
            .build()
            .unwrap(),
        1,
        vec![],
    );
    let mut faults = Faults::none();
    faults.request_503_rate = 1.0;
    s.sim.set_faults(faults);
    let results = put_all(&sim, &p, 5);
    for r in &results {
        assert!(!r.is_success());
        assert_eq!(r.error_code(), Some(&ErrorCode::Expired));
        assert!(
            r.attempts.len() > 3,
            "retried until the TTL: {:?}",
            codes_of(r)
        );
        let last = r.attempts.last().unwrap();
        assert!(last.started.duration_since(r.attempts[0].started) <= Duration::from_secs(2));
    }
}
