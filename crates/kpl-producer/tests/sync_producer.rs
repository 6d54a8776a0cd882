//! `SyncProducer` has `Producer`'s names and capabilities, blocking: shutdown,
//! flush with and without a timeout, the non-blocking batch puts, waiting for room,
//! metrics and upload stats (kpl-sim on the producer's own tokio runtime).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kpl_producer::{
    Admitted, Config, ErrorCode, Hold, MetricName, MetricsBatch, MetricsLevel, MetricsUploader,
    Outcomes, PutRecord, PutRecordRef, SyncProducer, UploadFuture, UploadStats,
};
use kpl_runtime::{Timer, TokioTimer};
use kpl_sim::{Faults, Simulator};

fn kinesis() -> Simulator {
    let timer: Arc<dyn Timer> = Arc::new(TokioTimer);
    let kinesis = Simulator::new(timer, 21);
    kinesis.create_stream("a", 2).unwrap();
    kinesis.create_stream("b", 1).unwrap();
    kinesis
}

/// Records wait up to a minute in their aggregates: only a flush sends them.
fn holding() -> Config {
    Config::builder()
        .record_max_buffered_time(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// As [`holding`], with at most `records` outstanding.
fn holding_at_most(records: usize) -> Config {
    holding()
        .to_builder()
        .max_outstanding_records(records)
        .build()
        .unwrap()
}

fn records(prefix: &str, n: usize) -> Vec<PutRecord> {
    (0..n)
        .map(|i| PutRecord::new(format!("{prefix}{i}"), format!("{prefix}/{i}")))
        .collect()
}

#[test]
fn flush_blocks_until_every_record_has_its_outcome() {
    let kinesis = kinesis();
    let producer = SyncProducer::new(holding(), Arc::new(kinesis.clone())).unwrap();
    let a = producer.put_record("a", PutRecord::new("k", "v")).unwrap();
    let b = producer.put_record("b", PutRecord::new("k", "w")).unwrap();
    producer.flush_stream("a");
    assert!(a.wait(Duration::ZERO).expect("flushed").is_success());
    assert!(b.wait(Duration::ZERO).is_none(), "stream b was not flushed");
    producer.flush();
    assert!(b.wait(Duration::ZERO).expect("flushed").is_success());
    assert_eq!(producer.outstanding_records(), 0);
    assert_eq!(producer.shutdown(Duration::from_secs(1)), 0);
}

#[test]
fn flush_timeout_says_whether_everything_resolved() {
    let kinesis = kinesis();
    // Every request is held longer than the flush waits.
    let mut faults = Faults::none();
    faults.latency = Duration::from_millis(500);
    kinesis.set_faults(faults);
    let producer = SyncProducer::new(holding(), Arc::new(kinesis.clone())).unwrap();
    let f = producer.put_record("a", PutRecord::new("k", "v")).unwrap();
    assert!(!producer.flush_timeout(Duration::from_millis(10)));
    assert!(!producer.flush_stream_timeout("a", Duration::from_millis(10)));
    assert!(producer.flush_timeout(Duration::from_secs(10)));
    assert!(f.wait(Duration::ZERO).unwrap().is_success());
    assert!(producer.flush_stream_timeout("b", Duration::ZERO));
}

#[test]
fn shutdown_fails_what_it_could_not_store_and_counts_it() {
    let kinesis = kinesis();
    // Every request fails and is retried: only the shutdown ends the record.
    let mut faults = Faults::none();
    faults.request_500_rate = 1.0;
    kinesis.set_faults(faults);
    let config = Config::builder()
        .record_ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
    let producer = SyncProducer::new(config, Arc::new(kinesis.clone())).unwrap();
    let lost = producer.put_record("a", PutRecord::new("k", "v")).unwrap();
    assert_eq!(producer.shutdown(Duration::from_millis(300)), 1);
    let lost = lost.wait(Duration::ZERO).unwrap();
    assert!(!lost.is_success());
    assert_eq!(lost.error_code(), Some(&ErrorCode::Shutdown));
}

#[test]
fn put_record_blocks_until_there_is_room_and_gives_the_records_future() {
    let kinesis = kinesis();
    let config = holding_at_most(1);
    let producer = SyncProducer::new(config, Arc::new(kinesis.clone())).unwrap();
    let first = producer
        .put_record("a", PutRecord::new("k0", "v0"))
        .unwrap();
    // The cap is reached: this blocks until the first settles (sent at once, not
    // after its minute in the buffer).
    let second = producer
        .put_record("a", PutRecord::new("k1", "v1"))
        .unwrap();
    assert!(
        first
            .wait(Duration::ZERO)
            .expect("settled first")
            .is_success(),
        "the first settled before the second went in"
    );
    assert!(
        producer
            .put_record("a", PutRecord::new("", "v"))
            .map(drop)
            .unwrap_err()
            .is_invalid()
    );
    producer.flush();
    assert!(second.wait(Duration::ZERO).unwrap().is_success());
}

#[test]
fn put_records_blocks_through_the_holds_and_gives_each_record_its_result() {
    let kinesis = kinesis();
    let config = holding_at_most(10);
    let producer = SyncProducer::new(config, Arc::new(kinesis.clone())).unwrap();
    let mut batch = records("k", 25);
    batch.insert(5, PutRecord::new("", "invalid"));
    let results = producer.put_records("a", batch).unwrap();
    assert_eq!(results.len(), 26, "one result per record, in order");
    producer.flush();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Err(e) => assert!(i == 5 && e.is_invalid(), "{i}: {e:?}"),
            Ok(f) => assert!(f.wait(Duration::ZERO).unwrap().is_success()),
        }
    }
}

#[test]
fn try_put_records_admits_what_fits_and_hands_back_the_rest() {
    let kinesis = kinesis();
    let config = holding_at_most(10);
    let producer = SyncProducer::new(config, Arc::new(kinesis.clone())).unwrap();
    let Admitted {
        results: admitted,
        rest,
        held_by,
    } = producer.try_put_records("a", records("k", 25)).unwrap();
    assert_eq!(admitted.len(), 10);
    assert_eq!(rest.len(), 15);
    assert_eq!(held_by, Some(Hold::Caps), "the caps held the rest back");
    assert_eq!(rest[0].partition_key, "k10", "the rest untouched, in order");
    let mut futures: Vec<_> = admitted.into_iter().map(Result::unwrap).collect();
    // Waiting for room sends what is buffered: the rest goes in, in steps.
    let mut rest = rest;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rest.is_empty() && Instant::now() < deadline {
        producer.wait_for_room("a", rest[0].size());
        let Admitted {
            results: more,
            rest: left,
            held_by,
        } = producer.try_put_records("a", rest).unwrap();
        assert_eq!(held_by.is_some(), !left.is_empty());
        futures.extend(more.into_iter().map(Result::unwrap));
        rest = left;
    }
    assert!(rest.is_empty());
    producer.flush();
    assert_eq!(futures.len(), 25);
    for f in &futures {
        assert!(f.wait(Duration::ZERO).unwrap().is_success());
    }
    assert!(!kinesis.records("a").unwrap().is_empty());
}

#[test]
fn try_put_records_to_hands_back_what_the_caps_hold() {
    let kinesis = kinesis();
    let config = holding_at_most(10);
    let producer = SyncProducer::new(config, Arc::new(kinesis.clone())).unwrap();
    let outcomes = Outcomes::new();
    let Admitted {
        results: ids,
        rest,
        held_by,
    } = producer
        .try_put_records_to("a", records("k", 25), &outcomes)
        .unwrap();
    assert_eq!((ids.len(), rest.len()), (10, 15));
    assert_eq!(held_by, Some(Hold::Caps));
    assert_eq!(rest[0].partition_key, "k10", "the rest untouched, in order");
    producer.flush();
    let settled: Vec<_> = outcomes.wait(Duration::from_secs(1)).collect();
    assert_eq!(settled.len(), 10);
    assert!(settled.iter().all(|(_, r)| r.is_success()));
}

#[test]
fn try_put_record_refs_to_hands_back_what_the_caps_hold() {
    let kinesis = kinesis();
    let producer = SyncProducer::new(holding_at_most(10), Arc::new(kinesis.clone())).unwrap();
    let outcomes = Outcomes::new();
    let owned = records("k", 25);
    let refs: Vec<PutRecordRef<'_>> = owned
        .iter()
        .map(|r| PutRecordRef::new(&r.partition_key, &r.data))
        .collect();
    let Admitted {
        results: ids,
        rest,
        held_by,
    } = producer
        .try_put_record_refs_to("a", &refs, &outcomes)
        .unwrap();
    assert_eq!((ids.len(), rest.len()), (10, 15));
    assert_eq!(held_by, Some(Hold::Caps));
    assert_eq!(rest, refs[10..], "the rest untouched, in order");
    producer.flush();
    let settled: Vec<_> = outcomes.wait(Duration::from_secs(1)).collect();
    assert_eq!(settled.len(), 10);
    assert!(settled.iter().all(|(_, r)| r.is_success()));
}

#[test]
fn try_put_records_to_delivers_outcomes_to_the_queue() {
    let kinesis = kinesis();
    let producer = SyncProducer::new(Config::default(), Arc::new(kinesis.clone())).unwrap();
    let outcomes = Outcomes::new();
    let Admitted {
        results: ids,
        rest,
        held_by,
    } = producer
        .try_put_records_to("a", records("k", 100), &outcomes)
        .unwrap();
    assert!(rest.is_empty());
    assert_eq!(held_by, None);
    let mut ids: Vec<_> = ids.into_iter().map(Result::unwrap).collect();
    let mut settled = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while outcomes.pending() > 0 && Instant::now() < deadline {
        for (id, result) in outcomes.wait(Duration::from_secs(1)) {
            assert!(result.is_success());
            settled.push(id);
        }
    }
    ids.sort();
    settled.sort();
    assert_eq!(settled, ids);
}

#[test]
fn metrics_are_kept_as_the_async_producers() {
    let kinesis = kinesis();
    let config = Config::builder()
        .metrics_level(MetricsLevel::Detailed)
        .build()
        .unwrap();
    let producer = SyncProducer::new(config, Arc::new(kinesis.clone())).unwrap();
    let results = producer.put_records("a", records("k", 7)).unwrap();
    assert_eq!(results.len(), 7);
    producer.flush();
    let put = producer.metrics(Some(MetricName::UserRecordsPut), Duration::ZERO);
    assert_eq!(put[0].sum, 7.0);
    assert!(!producer.metrics(None, Duration::ZERO).is_empty());
    // No uploader: zeros.
    assert_eq!(producer.metrics_upload_stats(), UploadStats::default());
}

#[derive(Default)]
struct Collect(Mutex<Vec<MetricsBatch>>);

impl MetricsUploader for Collect {
    fn upload(&self, batch: MetricsBatch) -> UploadFuture {
        self.0.lock().unwrap().push(batch);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[test]
fn the_builder_takes_an_uploader_whose_uploads_are_counted() {
    let kinesis = kinesis();
    let config = Config::builder()
        .metrics_level(MetricsLevel::Summary)
        .metrics_upload_delay(Duration::from_millis(50))
        .build()
        .unwrap();
    let sink = Arc::new(Collect::default());
    let producer = SyncProducer::builder(config, Arc::new(kinesis.clone()))
        .metrics_uploader(sink.clone())
        .build()
        .unwrap();
    assert_eq!(producer.config().metrics_level(), MetricsLevel::Summary);
    drop(producer.put_record("a", PutRecord::new("k", "v")).unwrap());
    producer.flush();
    let deadline = Instant::now() + Duration::from_secs(10);
    while producer.metrics_upload_stats().uploaded == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = producer.metrics_upload_stats();
    assert!(stats.uploaded >= 1);
    assert_eq!(stats.uploaded as usize, sink.0.lock().unwrap().len());
    assert_eq!(producer.shutdown(Duration::from_secs(1)), 0);
}
