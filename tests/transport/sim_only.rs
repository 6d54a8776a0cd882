//! Cases kinesis-mock cannot check (it never throttles and accepts 501-record and
//! over-5 MiB requests): kpl-sim alone, on virtual time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kpl_codec::HashKey;
use kpl_runtime::{Simulation, Timer};
use kpl_sim::{Faults, Simulator};
use kpl_transport::{
    EntryResult, ErrorKind, PutRecordsEntry, PutRecordsRequest, PutRecordsResponse, StreamId,
    Transport, TransportError,
};

fn setup(shards: usize) -> (Simulation, Simulator) {
    let sim = Simulation::new();
    let timer: Arc<dyn Timer> = sim.runtime().timer().clone();
    let kinesis = Simulator::new(timer, 9);
    kinesis.create_stream("s", shards).unwrap();
    (sim, kinesis)
}

fn put(
    sim: &Simulation,
    kinesis: &Simulator,
    entries: Vec<PutRecordsEntry>,
) -> Result<PutRecordsResponse, TransportError> {
    let k = kinesis.clone();
    sim.block_on(async move {
        k.put_records(PutRecordsRequest::new(StreamId::parse("s"), entries))
            .await
    })
    .expect("completes")
}

fn entries(n: usize, size: usize) -> Vec<PutRecordsEntry> {
    (0..n)
        .map(|i| {
            PutRecordsEntry::new(
                format!("k{i}"),
                Some(HashKey::MIN),
                Bytes::from(vec![0u8; size]),
            )
        })
        .collect()
}

fn throttled(r: &PutRecordsResponse) -> usize {
    r.results
        .iter()
        .filter(|e| matches!(e, EntryResult::Failed { code, .. } if code == "ProvisionedThroughputExceededException"))
        .count()
}

#[test]
fn a_shard_takes_1000_records_per_rolling_second() {
    let (sim, k) = setup(2);
    let r = put(&sim, &k, entries(500, 10)).unwrap();
    assert_eq!(throttled(&r), 0);
    let r = put(&sim, &k, entries(500, 10)).unwrap();
    assert_eq!(throttled(&r), 0);
    let r = put(&sim, &k, entries(10, 10)).unwrap();
    assert_eq!(
        throttled(&r),
        10,
        "the 1,001st record in a second is refused"
    );
    sim.run_for(Duration::from_millis(999));
    assert_eq!(throttled(&put(&sim, &k, entries(1, 10)).unwrap()), 1);
    sim.run_for(Duration::from_millis(1));
    assert_eq!(throttled(&put(&sim, &k, entries(500, 10)).unwrap()), 0);
}

#[test]
fn a_shard_takes_1_mib_per_rolling_second() {
    let (sim, k) = setup(1);
    let r = put(&sim, &k, entries(4, 262_142)).unwrap(); // 4 × (262,142 + 2) = 1 MiB
    assert_eq!(throttled(&r), 0);
    assert_eq!(throttled(&put(&sim, &k, entries(1, 1)).unwrap()), 1);
    k.set_limits(false);
    assert_eq!(throttled(&put(&sim, &k, entries(1, 1)).unwrap()), 0);
}

#[test]
fn acknowledge_only_answers_without_keeping_anything() {
    let (sim, k) = setup(2);
    k.set_acknowledge_only(true);
    // Over the limits and routed: every entry answered on its own shard.
    let mut all = entries(499, 10_000);
    all.push(PutRecordsEntry::new(
        "k",
        Some(HashKey::MAX),
        Bytes::from_static(b"x"),
    ));
    let r = put(&sim, &k, all).unwrap();
    let shards: Vec<&str> = r
        .results
        .iter()
        .map(|e| match e {
            EntryResult::Ok { shard_id, .. } => shard_id.as_str(),
            EntryResult::Failed { code, .. } => panic!("{code}"),
        })
        .collect();
    assert!(shards[..499].iter().all(|s| *s == "shardId-000000000000"));
    assert_eq!(shards[499], "shardId-000000000001");
    assert!(k.records("s").unwrap().is_empty(), "nothing kept");
    // Validation still applies.
    assert!(put(&sim, &k, entries(501, 1)).is_err());
    k.set_acknowledge_only(false);
    assert_eq!(throttled(&put(&sim, &k, entries(1, 1)).unwrap()), 0);
    assert_eq!(k.records("s").unwrap().len(), 1);
}

#[test]
fn request_validation_uses_the_service_codes() {
    let (sim, k) = setup(1);
    let err = put(&sim, &k, entries(501, 1)).unwrap_err();
    assert_eq!(
        (err.kind(), err.code()),
        (ErrorKind::InvalidRequest, Some("ValidationException"))
    );
    let err = put(&sim, &k, entries(6, 1_000_000)).unwrap_err();
    assert_eq!(err.code(), Some("InvalidArgumentException"), "{err}");
    let err = put(
        &sim,
        &k,
        vec![PutRecordsEntry::new("k".repeat(257), None, Bytes::new())],
    )
    .unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"));
    let err = put(
        &sim,
        &k,
        vec![PutRecordsEntry::new(
            "kk",
            None,
            Bytes::from(vec![0u8; 1_048_575]),
        )],
    )
    .unwrap_err();
    assert_eq!(
        err.code(),
        Some("InvalidArgumentException"),
        "data plus key over 1 MiB"
    );
    assert_eq!(
        k.records("s").unwrap().len(),
        0,
        "a refused request stores nothing"
    );
}

#[test]
fn faults_are_seeded_and_switchable() {
    let (sim, k) = setup(1);
    let mut faults = Faults::none();
    faults.record_internal_failure_rate = 0.5;
    k.set_faults(faults);
    let r = put(&sim, &k, entries(200, 1)).unwrap();
    let failed = r.failed_count();
    assert!((60..140).contains(&failed), "{failed}");
    assert!(r.results.iter().all(|e| match e {
        EntryResult::Failed { code, .. } => code == "InternalFailure",
        EntryResult::Ok { .. } => true,
    }));
    assert_eq!(k.records("s").unwrap().len(), 200 - failed);

    let mut faults = Faults::none();
    faults.request_503_rate = 1.0;
    k.set_faults(faults);
    let err = put(&sim, &k, entries(1, 1)).unwrap_err();
    assert_eq!(
        (err.kind(), err.status()),
        (ErrorKind::Transient, Some(503))
    );

    let mut faults = Faults::none();
    faults.timeout_rate = 1.0;
    faults.timeout_after = Duration::from_secs(6);
    k.set_faults(faults);
    let before = sim.clock().elapsed();
    let err = put(&sim, &k, entries(1, 1)).unwrap_err();
    assert_eq!(err.code(), Some("Timeout"));
    assert_eq!(
        sim.clock().elapsed() - before,
        Duration::from_secs(6),
        "virtual time"
    );

    let mut faults = Faults::none();
    faults.latency = Duration::from_millis(40);
    k.set_faults(faults);
    let before = sim.clock().elapsed();
    assert_eq!(put(&sim, &k, entries(1, 1)).unwrap().failed_count(), 0);
    assert_eq!(sim.clock().elapsed() - before, Duration::from_millis(40));

    // The same seed draws the same faults.
    let replay = |seed| {
        let sim = Simulation::new();
        let kinesis = Simulator::new(sim.runtime().timer().clone(), seed);
        kinesis.create_stream("s", 1).unwrap();
        let mut f = Faults::none();
        f.record_internal_failure_rate = 0.3;
        kinesis.set_faults(f);
        put(&sim, &kinesis, entries(100, 1)).unwrap()
    };
    assert_eq!(replay(5), replay(5));
    assert_ne!(replay(5), replay(6));
}

#[test]
fn merge_and_update_shard_count_while_traffic_runs() {
    let (sim, k) = setup(2);
    let shards = k.shards("s").unwrap();
    let child = k
        .merge_shards("s", &shards[0].shard_id, &shards[1].shard_id)
        .unwrap();
    let r = put(&sim, &k, entries(1, 1)).unwrap();
    assert!(matches!(&r.results[0], EntryResult::Ok { shard_id, .. } if *shard_id == child));
    let new = k.update_shard_count("s", 4).unwrap();
    assert_eq!(new.len(), 4);
    let open: Vec<_> = k
        .shards("s")
        .unwrap()
        .into_iter()
        .filter(|s| !s.closed)
        .collect();
    assert_eq!(open.len(), 4);
    assert!(
        open.iter()
            .all(|s| s.parent_shard_id.as_deref() == Some(child.as_str()))
    );
    k.delete_stream("s").unwrap();
    let err = put(&sim, &k, entries(1, 1)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

fn put_with_timeout(
    sim: &Simulation,
    kinesis: &Simulator,
    entries: Vec<PutRecordsEntry>,
    timeout: Duration,
) -> Result<PutRecordsResponse, TransportError> {
    let k = kinesis.clone();
    sim.block_on(async move {
        k.put_records(PutRecordsRequest::new(StreamId::parse("s"), entries).with_timeout(timeout))
            .await
    })
    .expect("completes")
}

#[test]
fn a_slow_service_serves_requests_one_at_a_time_and_stores_after_its_caller_gave_up() {
    let (sim, k) = setup(1);
    k.set_limits(false);
    let mut faults = Faults::none();
    faults.service_bytes_per_second = Some(100_000);
    k.set_faults(faults);
    // 10 × 10,000 B = 100 kB: one second of service.
    let t0 = sim.runtime().now();
    let r = put_with_timeout(&sim, &k, entries(10, 10_000 - 2), Duration::from_secs(5)).unwrap();
    assert_eq!(r.failed_count(), 0);
    let took = sim.runtime().now() - t0;
    assert!(
        took >= Duration::from_millis(999) && took <= Duration::from_millis(1001),
        "{took:?}"
    );
    // Two requests at once share the bottleneck: the second waits for the first.
    let (a, b) = (k.clone(), k.clone());
    let t1 = sim.runtime().now();
    let both = sim
        .block_on(async move {
            let ra = a.put_records(
                PutRecordsRequest::new(StreamId::parse("s"), entries(10, 10_000 - 2))
                    .with_timeout(Duration::from_millis(1500)),
            );
            let rb = b.put_records(
                PutRecordsRequest::new(StreamId::parse("s"), entries(10, 10_000 - 2))
                    .with_timeout(Duration::from_millis(1500)),
            );
            futures::future::join(ra, rb).await
        })
        .unwrap();
    assert!(both.0.is_ok());
    let e = both.1.unwrap_err();
    assert!(e.is_timeout() && e.may_have_been_stored(), "{e}");
    assert_eq!(sim.runtime().now() - t1, Duration::from_millis(1500));
    // The timed-out request is still stored when its service ends.
    assert_eq!(k.records("s").unwrap().len(), 20);
    sim.run_for(Duration::from_millis(600));
    assert_eq!(
        k.records("s").unwrap().len(),
        30,
        "stored after the caller gave up"
    );
}

#[test]
fn held_answers_and_lost_answers_time_out_for_stored_requests() {
    let (sim, k) = setup(1);
    let mut faults = Faults::none();
    faults.answer_delay = Duration::from_secs(8);
    k.set_faults(faults.clone());
    let e = put_with_timeout(&sim, &k, entries(3, 10), Duration::from_secs(6)).unwrap_err();
    assert!(e.is_timeout() && e.may_have_been_stored());
    assert_eq!(
        k.records("s").unwrap().len(),
        3,
        "stored although it timed out"
    );
    // A longer timeout sees the held answer.
    let r = put_with_timeout(&sim, &k, entries(3, 10), Duration::from_secs(9)).unwrap();
    assert_eq!(r.failed_count(), 0);
    faults.answer_delay = Duration::ZERO;
    faults.stored_answer_lost_rate = 1.0;
    k.set_faults(faults);
    let t0 = sim.runtime().now();
    let e = put_with_timeout(&sim, &k, entries(2, 10), Duration::from_secs(2)).unwrap_err();
    assert!(e.is_timeout());
    assert_eq!(sim.runtime().now() - t0, Duration::from_secs(2));
    assert_eq!(k.records("s").unwrap().len(), 8);
    assert_eq!(k.stored_requests(), 3);
}
