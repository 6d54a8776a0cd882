//! The facade: flushes, ages, events, the blocking producer, and drops.

// Tests hand record futures out of simulated tasks on purpose.
#![allow(clippy::async_yields_async)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kpl_producer::{
    Admitted, Config, ErrorCode, Event, EventSink, Hold, Outcomes, Producer, PutRecord, RecordId,
    SyncProducer,
};
use kpl_runtime::{Simulation, Timer};
use kpl_sim::{Faults, Simulator};

use common::user_records;

fn setup(config: Config) -> (Simulation, Simulator, Producer) {
    let sim = Simulation::new();
    let kinesis = Simulator::new(sim.runtime().timer().clone(), 5);
    kinesis.create_stream("a", 2).unwrap();
    kinesis.create_stream("b", 2).unwrap();
    let producer = Producer::builder(config, Arc::new(kinesis.clone())).build(sim.runtime());
    (sim, kinesis, producer)
}

/// A producer on one shard that holds records for a minute before sending them.
fn holding_producer() -> (Simulation, Producer) {
    let sim = Simulation::new();
    let timer: Arc<dyn Timer> = sim.runtime().timer().clone();
    let kinesis = Simulator::new(timer, 5);
    kinesis.create_stream("a", 1).unwrap();
    let p = Producer::builder(
        Config::builder()
            .record_max_buffered_time(Duration::from_secs(60))
            .build()
            .unwrap(),
        Arc::new(kinesis),
    )
    .build(sim.runtime());
    (sim, p)
}

#[test]
fn flush_waits_for_outcomes_and_flush_stream_for_one_stream() {
    let (sim, kinesis, p) = setup(
        Config::builder()
            .record_max_buffered_time(Duration::from_secs(60))
            .build()
            .unwrap(),
    );
    let p2 = p.clone();
    let (fa, fb) = sim
        .block_on(async move {
            let fa = p2
                .put_record("a", PutRecord::new("k", Bytes::from_static(b"1")))
                .await
                .unwrap();
            let fb = p2
                .put_record("b", PutRecord::new("k", Bytes::from_static(b"2")))
                .await
                .unwrap();
            p2.flush_stream("a").await;
            (fa, fb)
        })
        .unwrap();
    assert!(fa.is_resolved(), "flush_stream(a) resolved a's record");
    assert!(
        !fb.is_resolved(),
        "b's record waits for its 60 s buffering time"
    );
    assert!(sim.clock().elapsed() < Duration::from_secs(1));
    assert_eq!(p.outstanding_records(), 1);
    sim.run_for(Duration::from_secs(10));
    let age = p.oldest_record_age().unwrap();
    assert!(age >= Duration::from_secs(10), "{age:?}");
    let p3 = p.clone();
    sim.block_on(async move { p3.flush().await }).unwrap();
    assert!(fb.is_resolved());
    assert_eq!(p.oldest_record_age(), None);
    assert_eq!(kinesis.records("b").unwrap().len(), 1);
}

#[test]
fn put_records_reports_each_record() {
    let (sim, _, p) = setup(Config::default());
    let results = sim
        .block_on(async move {
            let out = p
                .put_records(
                    "a",
                    vec![
                        PutRecord::new("ok-1", Bytes::from_static(b"x")),
                        PutRecord::new("", Bytes::from_static(b"bad key")),
                        PutRecord::new("ok-2", Bytes::from_static(b"y")),
                    ],
                )
                .await
                .unwrap();
            let mut done = Vec::new();
            for r in out {
                match r {
                    Ok(f) => done.push(Some(f.await.is_success())),
                    Err(_) => done.push(None),
                }
            }
            done
        })
        .unwrap();
    assert_eq!(results, vec![Some(true), None, Some(true)]);
}

#[derive(Default)]
struct Counting {
    seen: Mutex<Vec<String>>,
}

impl EventSink for Counting {
    fn on_event(&self, event: &Event<'_>) {
        let name = match event {
            Event::Received { .. } => "Received",
            Event::Put { .. } => "Put",
            Event::Error { .. } => "Error",
            Event::Retry { .. } => "Retry",
            Event::Expired { .. } => "Expired",
            Event::BufferingTime { .. } => "BufferingTime",
            Event::Request { .. } => "Request",
            _ => "other",
        };
        self.seen.lock().unwrap().push(name.into());
    }
}

#[test]
fn the_event_hook_sees_the_pipeline() {
    let sim = Simulation::new();
    let kinesis = Simulator::new(sim.runtime().timer().clone(), 5);
    kinesis.create_stream("a", 1).unwrap();
    let sink = Arc::new(Counting::default());
    let p = Producer::builder(Config::default(), Arc::new(kinesis))
        .event_sink(sink.clone())
        .build(sim.runtime());
    sim.block_on(async move {
        let f = p
            .put_record("a", PutRecord::new("k", Bytes::from_static(b"x")))
            .await
            .unwrap();
        p.flush().await;
        f.await
    })
    .unwrap();
    let seen = sink.seen.lock().unwrap().clone();
    for name in ["Received", "Put", "Request", "BufferingTime"] {
        assert!(seen.iter().any(|s| s == name), "{name} in {seen:?}");
    }
}

#[test]
fn dropping_the_producer_never_leaves_a_future_unresolved() {
    // The runtime goes away with the records still buffered.
    let (sim, p) = holding_producer();
    let p2 = p.clone();
    let future = sim
        .block_on(async move {
            p2.put_record("a", PutRecord::new("k", Bytes::from_static(b"x")))
                .await
                .unwrap()
        })
        .unwrap();
    assert!(!future.is_resolved());
    drop(p);
    drop(sim); // the worker task and everything it holds are dropped
    let result = future
        .wait(Duration::from_secs(1))
        .expect("resolved on drop");
    assert!(!result.is_success());
    assert_eq!(result.error_code(), Some(&ErrorCode::Shutdown));
}

#[test]
fn dropping_the_producer_finishes_what_it_holds() {
    let (sim, kinesis, p) = setup(Config::default());
    let p2 = p.clone();
    let future = sim
        .block_on(async move {
            p2.put_record("a", PutRecord::new("k", Bytes::from_static(b"x")))
                .await
                .unwrap()
        })
        .unwrap();
    drop(p);
    sim.run_for(Duration::from_secs(1));
    assert!(future.wait(Duration::ZERO).unwrap().is_success());
    assert_eq!(kinesis.records("a").unwrap().len(), 1);
}

#[test]
fn sync_producer_from_many_threads() {
    let timer: Arc<dyn Timer> = Arc::new(kpl_runtime::TokioTimer);
    let kinesis = Simulator::new(timer, 5);
    kinesis.create_stream("a", 4).unwrap();
    let producer =
        Arc::new(SyncProducer::new(Config::default(), Arc::new(kinesis.clone())).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let producer = producer.clone();
            std::thread::spawn(move || {
                (0..250)
                    .map(|i| {
                        producer
                            .put_record(
                                "a",
                                PutRecord::new(
                                    format!("t{t}-{i}"),
                                    Bytes::from(format!("{t}/{i}")),
                                ),
                            )
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let futures: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert!(producer.flush_timeout(Duration::from_secs(10)));
    for f in &futures {
        assert!(f.wait(Duration::from_secs(1)).unwrap().is_success());
    }
    let count = user_records(&kinesis, "a");
    assert_eq!(count, 1_000);
    let producer = Arc::try_unwrap(producer).unwrap();
    assert_eq!(producer.shutdown(Duration::from_secs(1)), 0);
}

#[test]
fn sync_producer_puts_many_flushes_one_stream_and_tells_the_oldest_age() {
    let timer: Arc<dyn Timer> = Arc::new(kpl_runtime::TokioTimer);
    let kinesis = Simulator::new(timer, 6);
    kinesis.create_stream("a", 2).unwrap();
    kinesis.create_stream("b", 1).unwrap();
    // Records wait up to a minute in their aggregates: only a flush sends them.
    let config = Config::builder()
        .record_max_buffered_time(Duration::from_secs(60))
        .build()
        .unwrap();
    let producer = SyncProducer::new(config, Arc::new(kinesis.clone())).unwrap();
    assert_eq!(producer.oldest_record_age(), None);
    let a: Vec<_> = producer
        .put_records(
            "a",
            (0..100)
                .map(|i| PutRecord::new(format!("k{i}"), format!("a{i}")))
                .collect(),
        )
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let b = producer.put_record("b", PutRecord::new("k", "b")).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(producer.oldest_record_age().unwrap() >= Duration::from_millis(20));
    assert!(producer.flush_stream_timeout("a", Duration::from_secs(10)));
    for f in &a {
        assert!(f.wait(Duration::ZERO).expect("flushed").is_success());
    }
    assert_eq!(user_records(&kinesis, "a"), 100);
    assert!(b.wait(Duration::ZERO).is_none(), "stream b was not flushed");
    assert_eq!(producer.outstanding_records(), 1);
    assert!(producer.flush_timeout(Duration::from_secs(10)));
    assert!(b.wait(Duration::ZERO).unwrap().is_success());
    assert_eq!(producer.oldest_record_age(), None);
    assert_eq!(producer.shutdown(Duration::from_secs(1)), 0);
}

#[test]
fn outcomes_in_batches_settle_each_record_once() {
    let (sim, kinesis, p) = setup(Config::default());
    let outcomes = Outcomes::new();
    let o2 = outcomes.clone();
    let p2 = p.clone();
    let (ids, results) = sim
        .block_on(async move {
            let mut records: Vec<PutRecord> = (0..1_000)
                .map(|i| PutRecord::new(format!("key-{i}"), vec![7u8; 50]))
                .collect();
            // One invalid record: an error for it, the others go on.
            records.push(PutRecord::new("", vec![1u8]));
            let Admitted {
                results: ids,
                rest,
                held_by,
            } = p2.try_put_records_to("a", records, &o2).unwrap();
            assert!(rest.is_empty());
            assert_eq!(held_by, None);
            assert!(ids[1_000].is_err());
            let ids: Vec<RecordId> = ids.into_iter().take(1_000).map(Result::unwrap).collect();
            assert_eq!(o2.pending(), 1_000);
            let mut results = Vec::new();
            while o2.pending() > 0 {
                results.extend(o2.next().await);
            }
            // Nothing pending: an empty batch at once.
            assert!(o2.next().await.is_empty());
            (ids, results)
        })
        .unwrap();
    assert_eq!(results.len(), 1_000);
    let mut settled: Vec<RecordId> = results.iter().map(|(id, _)| *id).collect();
    settled.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(settled, expected, "each admitted record once");
    assert!(
        results
            .iter()
            .all(|(_, r)| r.is_success() && r.attempts.len() == 1)
    );
    let stored = user_records(&kinesis, "a");
    assert_eq!(stored, 1_000);
    assert_eq!(outcomes.pending(), 0);
    assert_eq!(p.outstanding_records(), 0);
}

#[test]
fn outcomes_of_records_held_at_shutdown_or_drop_still_come() {
    let (sim, p) = holding_producer();
    let outcomes = Outcomes::new();
    let (o2, p2) = (outcomes.clone(), p.clone());
    sim.block_on(async move {
        let records = (0..10)
            .map(|i| PutRecord::new(format!("k{i}"), vec![1u8]))
            .collect();
        let Admitted { results: ids, .. } = p2.try_put_records_to("a", records, &o2).unwrap();
        assert_eq!(ids.len(), 10);
        // Shut down: what is held fails as shut down, through the queue.
        assert_eq!(p2.shutdown(Duration::ZERO).await, 10);
    })
    .unwrap();
    let results: Vec<_> = outcomes.wait(Duration::from_secs(1)).collect();
    assert_eq!(results.len(), 10);
    assert!(
        results
            .iter()
            .all(|(_, r)| r.error_code() == Some(&ErrorCode::Shutdown))
    );
    assert_eq!(outcomes.pending(), 0);
    // The runtime goes away with records still held: their outcomes come anyway.
    let later = Outcomes::new();
    let (sim, p) = holding_producer();
    let (l2, p2) = (later.clone(), p.clone());
    sim.block_on(async move {
        let Admitted { results: ids, .. } = p2
            .try_put_records_to("a", vec![PutRecord::new("k", vec![1u8])], &l2)
            .unwrap();
        assert_eq!(ids.len(), 1);
    })
    .unwrap();
    drop(p);
    drop(sim);
    let results: Vec<_> = later.wait(Duration::from_secs(1)).collect();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].1.error_code(), Some(&ErrorCode::Shutdown));
}

/// A shutdown while every request fails (a 503, retryable) ends when the request
/// in flight does: the records it hands back fail as shut down, with its attempt,
/// instead of going round again until their time to live while the caller waits.
#[test]
fn a_shutdown_does_not_wait_for_records_a_failing_service_hands_back() {
    let sim = Simulation::new();
    let kinesis = Simulator::new(sim.runtime().timer().clone(), 5);
    kinesis.create_stream("a", 1).unwrap();
    let mut faults = Faults::none();
    faults.request_503_rate = 1.0;
    faults.latency = Duration::from_secs(2);
    kinesis.set_faults(faults);
    let config = Config::builder()
        .record_max_buffered_time(Duration::from_millis(10))
        .record_ttl(Duration::from_secs(120))
        .build()
        .unwrap();
    let p = Producer::builder(config, Arc::new(kinesis)).build(sim.runtime());
    let outcomes = Outcomes::new();
    let (o2, runtime) = (outcomes.clone(), sim.runtime().clone());
    let waited = sim
        .block_on(async move {
            let records = (0..10)
                .map(|i| PutRecord::new(format!("k{i}"), vec![1u8]))
                .collect();
            let Admitted { results, .. } = p.try_put_records_to("a", records, &o2).unwrap();
            assert_eq!(results.len(), 10);
            // The listing answers at 2 s; the request then goes, and is in flight
            // until its 503 at 4 s.
            runtime.sleep(Duration::from_secs(3)).await;
            let t0 = runtime.now();
            assert_eq!(p.shutdown(Duration::ZERO).await, 0, "all in flight");
            runtime.now() - t0
        })
        .unwrap();
    assert!(waited < Duration::from_secs(2), "shutdown took {waited:?}");
    let results: Vec<_> = outcomes.wait(Duration::from_secs(1)).collect();
    assert_eq!(results.len(), 10);
    for (_, r) in &results {
        assert_eq!(r.error_code(), Some(&ErrorCode::Shutdown));
        let first = r.attempts.first().and_then(|a| a.error_code());
        assert_eq!(first.map(ErrorCode::as_str), Some("ServiceUnavailable"));
    }
}

/// A put racing a shutdown from another thread is either refused or admitted
/// before the shutdown began, and then settled by it: once `shutdown` returned and
/// the putting thread stopped, nothing is outstanding. (A put that had passed the
/// closed check before the lock once admitted its records after the shutdown had
/// returned: records nobody waited for, dropped without an outcome delivered when
/// the runtime went next, as kpl_rs' close does.)
#[test]
fn a_put_racing_a_shutdown_is_refused_or_settled_by_it() {
    for round in 0..10 {
        let (sim, _kinesis, p) = setup(Config::default());
        let outcomes = Outcomes::new();
        let started = Arc::new(std::sync::Barrier::new(2));
        let putter = {
            let (p, outcomes, started) = (p.clone(), outcomes.clone(), started.clone());
            std::thread::spawn(move || {
                let batch = || -> Vec<PutRecord> {
                    (0..20_000)
                        .map(|i| PutRecord::new(format!("key-{i}"), vec![7u8; 8]))
                        .collect()
                };
                let mut admitted = p.try_put_records_to("a", batch(), &outcomes).unwrap();
                started.wait();
                let mut puts = 1;
                while admitted.results.iter().all(Result::is_ok) {
                    match p.try_put_records_to("a", batch(), &outcomes) {
                        Ok(a) => admitted = a,
                        Err(e) => {
                            assert!(e.is_shutting_down(), "{e}");
                            break;
                        }
                    }
                    puts += 1;
                }
                puts
            })
        };
        started.wait();
        // The putting thread may hand its admitted records over a moment after the
        // shutdown waits for them: virtual time goes on meanwhile (a simulation with
        // nothing to do would end, as it could never go on by itself).
        let (closing, runtime) = (p.clone(), sim.runtime().clone());
        sim.block_on(async move {
            let shutdown = std::pin::pin!(closing.shutdown(Duration::ZERO));
            let ticking = std::pin::pin!(async {
                for _ in 0..100_000 {
                    runtime.sleep(Duration::from_millis(1)).await;
                    std::thread::yield_now();
                }
            });
            match futures::future::select(shutdown, ticking).await {
                futures::future::Either::Left(_) => {}
                futures::future::Either::Right(_) => panic!("round {round}: no end"),
            }
        })
        .unwrap();
        let puts = putter.join().unwrap();
        assert_eq!(
            p.outstanding_records(),
            0,
            "round {round}: records admitted after the shutdown returned ({puts} puts)"
        );
    }
}

#[test]
fn a_caller_that_can_wait_waits_while_the_pipeline_takes_records_in() {
    // The simulated runtime runs the pipeline only inside `block_on`: records put
    // outside it are handed over and not taken in, as when a caller puts faster
    // than the pipeline takes records in.
    let (sim, kinesis, p) = setup(Config::default());
    let outcomes = Outcomes::new();
    let records: Vec<PutRecord> = (0..20_000)
        .map(|i| PutRecord::new(format!("key-{i}"), vec![7u8; 20]))
        .collect();
    let Admitted {
        results: ids,
        rest,
        held_by,
    } = p.try_put_records_to("a", records, &outcomes).unwrap();
    assert_eq!(ids.len(), 16_384, "at most 16,384 not taken in");
    assert_eq!(held_by, Some(Hold::Intake));
    assert_eq!(
        rest.len(),
        20_000 - 16_384,
        "the rest handed back, untouched"
    );
    assert_eq!(rest[0].partition_key, "key-16384");
    // Another stream is not held up by this one's pipeline.
    let Admitted {
        results: other,
        rest: none,
        ..
    } = p
        .try_put_records_to("b", vec![PutRecord::new("k", vec![1u8])], &outcomes)
        .unwrap();
    assert_eq!((other.len(), none.len()), (1, 0));
    let (o2, p2) = (outcomes.clone(), p.clone());
    let admitted = sim
        .block_on(async move {
            // Room comes back once the pipeline took records in.
            p2.wait_for_room("a", rest[0].size()).await;
            let Admitted {
                results: ids, rest, ..
            } = p2.try_put_records_to("a", rest, &o2).unwrap();
            assert!(rest.is_empty());
            p2.flush().await;
            ids.len()
        })
        .unwrap();
    assert_eq!(admitted, 20_000 - 16_384);
    let results: Vec<_> = outcomes.take().collect();
    assert_eq!(results.len(), 20_001);
    assert!(results.iter().all(|(_, r)| r.is_success()));
    let stored = user_records(&kinesis, "a");
    assert_eq!(stored, 20_000);
    assert_eq!(p.outstanding_records(), 0);
}

/// The KPL's metrics, end to end on kpl-sim: what was received, stored and
/// retried, per shard, per stream and for all streams, agrees with what the
/// simulated service stored.
#[test]
fn metrics_agree_with_what_the_service_stored() {
    use kpl_producer::{MetricName, MetricsLevel};
    let config = Config::builder()
        .metrics_level(MetricsLevel::Detailed)
        .build()
        .unwrap();
    let (sim, kinesis, producer) = setup(config);
    let mut faults = Faults::none();
    faults.record_internal_failure_rate = 0.2;
    kinesis.set_faults(faults);
    let p = producer.clone();
    sim.block_on(async move {
        for stream in ["a", "b"] {
            let records = (0..500)
                .map(|i| PutRecord::new(format!("k{i}"), format!("{stream}{i}")))
                .collect();
            for f in p.put_records(stream, records).await.unwrap() {
                drop(f.unwrap());
            }
        }
        p.flush().await;
    })
    .unwrap();
    let sum = |name, stream: Option<&str>| -> f64 {
        producer
            .metrics(Some(name), Duration::ZERO)
            .iter()
            .filter(|m| m.dimension("StreamName") == stream && m.dimension("ShardId").is_none())
            .map(|m| m.sum)
            .sum()
    };
    assert_eq!(sum(MetricName::UserRecordsReceived, None), 1000.0);
    assert_eq!(sum(MetricName::UserRecordsPut, None), 1000.0);
    assert_eq!(sum(MetricName::UserRecordsPut, Some("a")), 500.0);
    let stored = kinesis.records("a").unwrap().len() + kinesis.records("b").unwrap().len();
    assert_eq!(sum(MetricName::KinesisRecordsPut, None), stored as f64);
    // Per shard, the two shards of a stream add up to the stream.
    let per_shard: f64 = producer
        .metrics(Some(MetricName::UserRecordsPut), Duration::ZERO)
        .iter()
        .filter(|m| m.dimension("StreamName") == Some("b") && m.dimension("ShardId").is_some())
        .map(|m| m.sum)
        .sum();
    assert_eq!(per_shard, 500.0);
    // The injected failures: counted by code, and as retries of the records they hit.
    let errors = sum(MetricName::AllErrors, None);
    assert!(errors > 0.0);
    let by_code = producer.metrics(Some(MetricName::ErrorsByCode), Duration::ZERO);
    let internal: f64 = by_code
        .iter()
        .filter(|m| m.dimensions.len() == 1 && m.dimension("ErrorCode") == Some("InternalFailure"))
        .map(|m| m.sum)
        .sum();
    assert_eq!(internal, errors);
    assert!(sum(MetricName::RetriesPerRecord, None) > 0.0);
    let buffering = producer.metrics(Some(MetricName::BufferingTime), Duration::ZERO);
    assert_eq!(buffering[0].sample_count, 1000);
    let pending = producer.metrics(Some(MetricName::UserRecordsPending), Duration::ZERO);
    assert_eq!(pending[0].max, 0.0, "nothing pending after the flush");
    // Off (the default): nothing kept.
    let (_, _, off) = setup(Config::default());
    assert!(off.metrics(None, Duration::ZERO).is_empty());
}

/// The `metrics` crate sees the KPL's names, with the KPL's dimensions as labels,
/// and the same counts as the producer's own metrics.
#[cfg(feature = "metrics")]
#[test]
fn a_metrics_recorder_sees_the_kpl_names() {
    use kpl_producer::{MetricName, MetricsExporter, MetricsLevel};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let config = Config::builder()
        .metrics_level(MetricsLevel::Detailed)
        .build()
        .unwrap();
    let (sim, _kinesis, _) = setup(config.clone());
    let kinesis = Simulator::new(sim.runtime().timer().clone(), 9);
    kinesis.create_stream("a", 2).unwrap();
    let producer = Producer::builder(config, Arc::new(kinesis.clone()))
        .event_sink(Arc::new(MetricsExporter))
        .build(sim.runtime());
    let p = producer.clone();
    metrics::with_local_recorder(&recorder, || {
        sim.block_on(async move {
            let records = (0..300)
                .map(|i| PutRecord::new(format!("k{i}"), format!("v{i}")))
                .collect();
            for f in p.put_records("a", records).await.unwrap() {
                drop(f.unwrap());
            }
            p.flush().await;
        })
        .unwrap();
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let names: std::collections::BTreeSet<String> = snapshot
        .iter()
        .map(|(key, ..)| key.key().name().to_owned())
        .collect();
    for name in [
        "UserRecordsReceived",
        "UserRecordsPut",
        "UserRecordsDataPut",
        "KinesisRecordsPut",
        "KinesisRecordsDataPut",
        "BufferingTime",
        "RetriesPerRecord",
        "RequestTime",
        "UserRecordsPerKinesisRecord",
        "KinesisRecordsPerPutRecordsRequest",
        "UserRecordsPerPutRecordsRequest",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
        // Every name is one of the producer's own.
        assert!(MetricName::ALL.iter().any(|m| m.as_str() == name));
    }
    let put: u64 = snapshot
        .iter()
        .filter(|(key, ..)| key.key().name() == "UserRecordsPut")
        .map(|(key, _, _, value)| {
            assert!(key.key().labels().any(|l| l.key() == "ShardId"));
            match value {
                DebugValue::Counter(n) => *n,
                other => panic!("UserRecordsPut is a counter, not {other:?}"),
            }
        })
        .sum();
    assert_eq!(put, 300);
    let own = producer.metrics(Some(MetricName::UserRecordsPut), Duration::ZERO);
    assert_eq!(
        own[0].sum, 300.0,
        "the same count as the producer's own metrics"
    );
}

/// Our own metrics: records that may be stored twice (after answers that never
/// came) agree with the outcomes that say so; the congestion window is sampled.
#[test]
fn possibly_duplicated_records_and_the_window_are_metrics_too() {
    use kpl_producer::{MetricName, MetricsLevel};
    let config = Config::builder()
        .metrics_level(MetricsLevel::Detailed)
        .record_ttl(Duration::from_secs(300))
        .build()
        .unwrap();
    let (sim, kinesis, producer) = setup(config);
    let mut faults = Faults::none();
    faults.stored_answer_lost_rate = 0.3;
    kinesis.set_faults(faults);
    let p = producer.clone();
    let outcomes = sim
        .block_on(async move {
            let mut futures = Vec::new();
            for i in 0..200 {
                futures.push(
                    p.put_record("a", PutRecord::new(format!("k{i}"), format!("{i}")))
                        .await
                        .unwrap(),
                );
                // Spread over several requests.
                if i % 20 == 19 {
                    p.flush().await;
                }
            }
            p.flush().await;
            let mut out = Vec::new();
            for f in futures {
                out.push(f.await);
            }
            out
        })
        .unwrap();
    assert!(outcomes.iter().all(|r| r.is_success()));
    let flagged = outcomes.iter().filter(|r| r.may_be_duplicated()).count();
    assert!(flagged > 0, "some answers were lost");
    let metric = producer.metrics(
        Some(MetricName::KplRsUserRecordsPossiblyDuplicated),
        Duration::ZERO,
    );
    assert_eq!(metric[0].dimensions, vec![]);
    assert_eq!(metric[0].sum, flagged as f64);
    let window = producer.metrics(Some(MetricName::KplRsCongestionWindow), Duration::ZERO);
    assert!(window[0].sample_count > 0 && window[0].min >= 1.0);
}

/// A destination of metrics batches for tests: keeps what it is given, failing
/// the first `fail` uploads (retryably).
#[derive(Default)]
struct Collect {
    batches: Mutex<Vec<kpl_producer::MetricsBatch>>,
    fail: std::sync::atomic::AtomicUsize,
}

impl kpl_producer::MetricsUploader for Collect {
    fn upload(&self, batch: kpl_producer::MetricsBatch) -> kpl_producer::UploadFuture {
        use std::sync::atomic::Ordering;
        let failing = self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Box::pin(std::future::ready(Err(
                kpl_producer::UploadError::retryable("throttled"),
            )));
        }
        self.batches.lock().unwrap().push(batch);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Global `UserRecordsPut` over every batch uploaded.
fn uploaded_put(c: &Collect) -> f64 {
    c.batches
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| b.metrics.iter())
        .filter(|m| m.name == kpl_producer::MetricName::UserRecordsPut && m.dimensions.is_empty())
        .map(|m| m.sum)
        .sum()
}

fn uploading(upload_delay: Duration, sink: Arc<Collect>) -> (Simulation, Producer) {
    let config = Config::builder()
        .metrics_level(kpl_producer::MetricsLevel::Summary)
        .metrics_namespace("kpl-test")
        .metrics_upload_delay(upload_delay)
        .build()
        .unwrap();
    let sim = Simulation::new();
    let kinesis = Simulator::new(sim.runtime().timer().clone(), 11);
    kinesis.create_stream("a", 2).unwrap();
    let producer = Producer::builder(config, Arc::new(kinesis))
        .metrics_uploader(sink)
        .build(sim.runtime());
    (sim, producer)
}

#[test]
fn metrics_are_uploaded_every_interval_and_once_more_at_shutdown() {
    let sink = Arc::new(Collect::default());
    let (sim, producer) = uploading(Duration::from_secs(10), sink.clone());
    let p = producer.clone();
    let rt = sim.runtime();
    sim.block_on(async move {
        for i in 0..100 {
            drop(
                p.put_record("a", PutRecord::new(format!("k{i}"), "x"))
                    .await
                    .unwrap(),
            );
        }
        p.flush().await;
        rt.sleep(Duration::from_secs(25)).await;
    })
    .unwrap();
    let periodic = sink.batches.lock().unwrap().len();
    assert!(periodic >= 1, "an upload every 10 s");
    assert_eq!(uploaded_put(&sink), 100.0);
    assert!(
        sink.batches
            .lock()
            .unwrap()
            .iter()
            .all(|b| b.namespace == "kpl-test")
    );
    // Records put after the last interval reach the destination at shutdown.
    let p = producer.clone();
    sim.block_on(async move {
        for i in 0..50 {
            drop(
                p.put_record("a", PutRecord::new(format!("l{i}"), "y"))
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(p.shutdown(Duration::from_secs(5)).await, 0);
    })
    .unwrap();
    assert_eq!(
        uploaded_put(&sink),
        150.0,
        "no second missed or counted twice"
    );
    assert_eq!(producer.metrics_upload_stats().dropped, 0);
}

#[test]
fn a_failing_destination_is_retried_and_never_holds_up_records() {
    let sink = Arc::new(Collect::default());
    sink.fail.store(2, std::sync::atomic::Ordering::SeqCst);
    let (sim, producer) = uploading(Duration::from_secs(5), sink.clone());
    let p = producer.clone();
    let rt = sim.runtime();
    let stored = sim
        .block_on(async move {
            let mut futures = Vec::new();
            for i in 0..60 {
                futures.push(
                    p.put_record("a", PutRecord::new(format!("k{i}"), "x"))
                        .await
                        .unwrap(),
                );
                rt.sleep(Duration::from_millis(500)).await;
            }
            p.shutdown(Duration::from_secs(30)).await;
            let mut ok = 0;
            for f in futures {
                ok += usize::from(f.await.is_success());
            }
            ok
        })
        .unwrap();
    assert_eq!(stored, 60);
    let stats = producer.metrics_upload_stats();
    assert_eq!(stats.failed_attempts, 2);
    assert_eq!(stats.dropped, 0);
    assert_eq!(uploaded_put(&sink), 60.0, "the failed batches went later");
}

#[test]
fn a_destination_that_never_answers_yes_costs_the_oldest_batches() {
    let sink = Arc::new(Collect::default());
    sink.fail
        .store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    let (sim, producer) = uploading(Duration::from_secs(1), sink.clone());
    let p = producer.clone();
    let rt = sim.runtime();
    sim.block_on(async move {
        for i in 0..40 {
            drop(
                p.put_record("a", PutRecord::new(format!("k{i}"), "x"))
                    .await
                    .unwrap(),
            );
            rt.sleep(Duration::from_secs(1)).await;
        }
        p.flush().await;
    })
    .unwrap();
    let stats = producer.metrics_upload_stats();
    assert!(stats.dropped > 0, "{stats:?}");
    assert_eq!(stats.uploaded, 0);
}

/// A destination that stores part of a batch before failing (several requests):
/// stores the first half of the first `partial` batches, then fails retryably
/// saying so.
#[derive(Default)]
struct Halves {
    stored: Mutex<Vec<kpl_producer::Metric>>,
    partial: std::sync::atomic::AtomicUsize,
}

impl kpl_producer::MetricsUploader for Halves {
    fn upload(&self, batch: kpl_producer::MetricsBatch) -> kpl_producer::UploadFuture {
        use std::sync::atomic::Ordering;
        let partial = self
            .partial
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let mut stored = self.stored.lock().unwrap();
        if partial && batch.metrics.len() > 1 {
            let half = batch.metrics.len() / 2;
            stored.extend_from_slice(&batch.metrics[..half]);
            let e = kpl_producer::UploadError::retryable("the second request failed")
                .with_uploaded(half);
            return Box::pin(std::future::ready(Err(e)));
        }
        stored.extend(batch.metrics);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[test]
fn what_a_failed_upload_stored_is_not_sent_again() {
    use kpl_producer::MetricName;
    let sink = Arc::new(Halves::default());
    sink.partial.store(2, std::sync::atomic::Ordering::SeqCst);
    let config = Config::builder()
        .metrics_level(kpl_producer::MetricsLevel::Detailed)
        .metrics_upload_delay(Duration::from_secs(5))
        .build()
        .unwrap();
    let sim = Simulation::new();
    let kinesis = Simulator::new(sim.runtime().timer().clone(), 11);
    kinesis.create_stream("a", 4).unwrap();
    let producer = Producer::builder(config, Arc::new(kinesis))
        .metrics_uploader(sink.clone())
        .build(sim.runtime());
    let p = producer.clone();
    let rt = sim.runtime();
    sim.block_on(async move {
        for i in 0..300 {
            drop(
                p.put_record("a", PutRecord::new(format!("k{i}"), "x"))
                    .await
                    .unwrap(),
            );
            if i % 20 == 19 {
                rt.sleep(Duration::from_millis(500)).await;
            }
        }
        p.shutdown(Duration::from_secs(10)).await;
    })
    .unwrap();
    assert_eq!(producer.metrics_upload_stats().failed_attempts, 2);
    let stored = sink.stored.lock().unwrap();
    // Each level's UserRecordsPut adds up to what was put: nothing twice, nothing
    // missed.
    let put = |dims: usize| -> f64 {
        stored
            .iter()
            .filter(|m| m.name == MetricName::UserRecordsPut && m.dimensions.len() == dims)
            .map(|m| m.sum)
            .sum()
    };
    assert_eq!(put(0), 300.0);
    assert_eq!(put(1), 300.0);
    assert_eq!(put(2), 300.0);
    // And UserRecordsPending was sampled (every second by the upload task).
    let pending: Vec<_> = stored
        .iter()
        .filter(|m| m.name == MetricName::UserRecordsPending)
        .collect();
    let samples: u64 = pending.iter().map(|m| m.sample_count).sum();
    // About one a second over the run's 7.5 s, each uploaded once.
    assert!((6..=9).contains(&samples), "{samples}");
}

/// A destination that never answers.
struct Silent;

impl kpl_producer::MetricsUploader for Silent {
    fn upload(&self, _: kpl_producer::MetricsBatch) -> kpl_producer::UploadFuture {
        Box::pin(std::future::pending())
    }
}

#[test]
fn a_metrics_destination_that_never_answers_holds_up_shutdown_five_seconds_at_most() {
    let config = Config::builder()
        .metrics_level(kpl_producer::MetricsLevel::Summary)
        .build()
        .unwrap();
    let sim = Simulation::new();
    let kinesis = Simulator::new(sim.runtime().timer().clone(), 11);
    kinesis.create_stream("a", 1).unwrap();
    let producer = Producer::builder(config, Arc::new(kinesis))
        .metrics_uploader(Arc::new(Silent))
        .build(sim.runtime());
    let rt = sim.runtime();
    let waited = sim
        .block_on(async move {
            let f = producer
                .put_record("a", PutRecord::new("k", "x"))
                .await
                .unwrap();
            assert!(f.await.is_success());
            let before = rt.now();
            assert_eq!(producer.shutdown(Duration::from_secs(60)).await, 0);
            rt.now() - before
        })
        .unwrap();
    assert!(
        waited >= Duration::from_secs(1) && waited <= Duration::from_secs(6),
        "{waited:?}"
    );
}
