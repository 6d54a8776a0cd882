//! The scenario harness: a producer and kpl-sim on one virtual clock, and the
//! invariants every scenario must keep.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kpl_codec::{HashKey, deaggregate};
use kpl_producer::{
    ConfigBuilder, ErrorCode, Outcomes, Producer, PutError, PutRecord, RecordFuture, RecordId,
    RecordResult,
};
use kpl_runtime::{Runtime, Simulation, Timer};
use kpl_sim::Simulator;

pub const STREAM: &str = "scenario";

pub struct Harness {
    pub sim: Simulation,
    pub kinesis: Simulator,
    pub producer: Producer,
}

pub fn harness(config: ConfigBuilder, shards: usize, seed: u64) -> Harness {
    let sim = Simulation::new();
    let kinesis = Simulator::new(sim.runtime().timer().clone(), seed);
    kinesis.create_stream(STREAM, shards).unwrap();
    let producer = Producer::builder(
        config.seed(seed).build().unwrap(),
        Arc::new(kinesis.clone()),
    )
    .build(sim.runtime());
    Harness {
        sim,
        kinesis,
        producer,
    }
}

/// A record put by a scenario: its key, data (which names it uniquely) and where its
/// outcome comes from.
pub struct Put {
    pub partition_key: String,
    pub data: Bytes,
    pub source: Source,
}

/// Where a put's outcome comes from: its own future, or an outcome queue.
pub enum Source {
    Future(RecordFuture),
    Queued(RecordId, Arc<Queued>),
}

/// An outcome queue and what was taken from it; a record with two outcomes fails
/// the test.
pub struct Queued {
    pub outcomes: Outcomes,
    done: Mutex<HashMap<RecordId, RecordResult>>,
}

impl Queued {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            outcomes: Outcomes::new(),
            done: Mutex::new(HashMap::new()),
        })
    }

    fn collect(&self) {
        let mut done = self.done.lock().unwrap();
        for (id, r) in self.outcomes.take() {
            assert!(done.insert(id, r).is_none(), "{id:?} had two outcomes");
        }
    }
}

impl Put {
    pub fn is_resolved(&self) -> bool {
        match &self.source {
            Source::Future(f) => f.is_resolved(),
            Source::Queued(id, q) => {
                q.collect();
                q.done.lock().unwrap().contains_key(id)
            }
        }
    }

    pub fn result(&self) -> Option<RecordResult> {
        match &self.source {
            Source::Future(f) => f.wait(Duration::ZERO),
            Source::Queued(id, q) => {
                q.collect();
                q.done.lock().unwrap().get(id).cloned()
            }
        }
    }
}

/// Puts one record to [`STREAM`] and keeps it in `out` with its future; a refused
/// put fails the test.
pub async fn put_and_keep(
    producer: &Producer,
    partition_key: String,
    data: Bytes,
    out: &Mutex<Vec<Put>>,
) {
    let future = producer
        .put_record(STREAM, PutRecord::new(partition_key.clone(), data.clone()))
        .await
        .expect("accepted");
    out.lock().unwrap().push(Put {
        partition_key,
        data,
        source: Source::Future(future),
    });
}

/// The project's seeded generator, for keys.
pub use kpl_runtime::SplitMix64 as Rng;

/// Spawns a task putting `count` records of `size` bytes at `rate` per second
/// (virtual), with random keys; returns where the puts are collected. Any refused
/// put fails the test.
pub fn spawn_load(
    rt: &Runtime,
    producer: &Producer,
    count: usize,
    size: usize,
    rate: u64,
    seed: u64,
) -> Arc<Mutex<Vec<Put>>> {
    load(rt, producer, count, size, rate, seed, false, 0, 0).0
}

/// Like [`spawn_load`], but a put refused because the producer shuts down ends the
/// load instead of failing the test; returns the puts and whether the load is done.
pub fn spawn_load_until_shutdown(
    rt: &Runtime,
    producer: &Producer,
    count: usize,
    size: usize,
    rate: u64,
    seed: u64,
    queued_percent: u64,
) -> (Arc<Mutex<Vec<Put>>>, Arc<std::sync::atomic::AtomicBool>) {
    load(
        rt,
        producer,
        count,
        size,
        rate,
        seed,
        true,
        queued_percent,
        0,
    )
}

/// Like [`spawn_load_until_shutdown`], over `keys` partition keys (random ones when
/// 0), so that keys repeat and their order can be checked ([`order_violations`]).
#[allow(clippy::too_many_arguments)]
pub fn spawn_keyed_load_until_shutdown(
    rt: &Runtime,
    producer: &Producer,
    count: usize,
    size: usize,
    rate: u64,
    seed: u64,
    queued_percent: u64,
    keys: u64,
) -> (Arc<Mutex<Vec<Put>>>, Arc<std::sync::atomic::AtomicBool>) {
    load(
        rt,
        producer,
        count,
        size,
        rate,
        seed,
        true,
        queued_percent,
        keys,
    )
}

#[allow(clippy::too_many_arguments)]
fn load(
    rt: &Runtime,
    producer: &Producer,
    count: usize,
    size: usize,
    rate: u64,
    seed: u64,
    until_shutdown: bool,
    queued_percent: u64,
    keys: u64,
) -> (Arc<Mutex<Vec<Put>>>, Arc<std::sync::atomic::AtomicBool>) {
    let queued = Queued::new();
    let puts = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (out, finished) = (puts.clone(), done.clone());
    let producer = producer.clone();
    let rt2 = rt.clone();
    rt.spawn(Box::pin(async move {
        let mut rng = Rng::new(seed);
        let start = rt2.now();
        for i in 0..count {
            let due = start + Duration::from_nanos(i as u64 * 1_000_000_000 / rate.max(1));
            if due > rt2.now() {
                rt2.sleep_until(due).await;
            }
            let partition_key = match keys {
                0 => format!("pk-{:x}", rng.next_u64()),
                k => format!("pk-{:x}", rng.next_u64() % k),
            };
            let mut data = format!("record {i:08} ").into_bytes();
            data.resize(size.max(data.len()), b'.');
            let data = Bytes::from(data);
            let source = if rng.next_u64() % 100 < queued_percent {
                // Through an outcome queue, waiting for room as needed.
                let mut records = vec![PutRecord::new(partition_key.clone(), data.clone())];
                loop {
                    match producer.try_put_records_to(STREAM, records, &queued.outcomes) {
                        Ok(kpl_producer::Admitted {
                            results: mut ids,
                            rest,
                            ..
                        }) => {
                            if let Some(id) = ids.pop() {
                                break ids_source(id, &queued, i);
                            }
                            producer.wait_for_room(STREAM, rest[0].size()).await;
                            records = rest;
                        }
                        Err(e) => break Err(e),
                    }
                }
            } else {
                producer
                    .put_record(STREAM, PutRecord::new(partition_key.clone(), data.clone()))
                    .await
                    .map(Source::Future)
            };
            match source {
                Ok(source) => out.lock().unwrap().push(Put {
                    partition_key,
                    data,
                    source,
                }),
                Err(e) if until_shutdown && e.is_shutting_down() => break,
                Err(e) => panic!("put {i} refused: {e}"),
            }
        }
        finished.store(true, std::sync::atomic::Ordering::Release);
    }));
    (puts, done)
}

fn ids_source(
    id: Result<RecordId, PutError>,
    queued: &Arc<Queued>,
    i: usize,
) -> Result<Source, PutError> {
    match id {
        Ok(id) => Ok(Source::Queued(id, queued.clone())),
        Err(e) => panic!("put {i} refused: {e}"),
    }
}

/// Runs the simulation until every put resolved (or `limit` of virtual time).
pub fn run_until_resolved(
    h: &Harness,
    puts: &Arc<Mutex<Vec<Put>>>,
    expected: usize,
    limit: Duration,
) {
    let end = h.sim.clock().now() + limit;
    loop {
        h.sim.run_for(Duration::from_millis(100));
        let done = {
            let p = puts.lock().unwrap();
            p.len() == expected && p.iter().all(Put::is_resolved)
        };
        if done {
            return;
        }
        assert!(
            h.sim.clock().now() < end,
            "records still unresolved after {limit:?} of virtual time: {} of {expected} put, {} outstanding",
            puts.lock().unwrap().len(),
            h.producer.outstanding_records()
        );
    }
}

pub struct Outcome {
    pub results: Vec<(String, Bytes, RecordResult)>,
    /// Successes a consumer reads more than once (each flagged
    /// `may_be_duplicated`).
    pub duplicated: usize,
    /// Failures a consumer reads all the same (each flagged
    /// `may_have_been_stored`).
    pub failed_but_stored: usize,
}

impl Outcome {
    pub fn flagged_duplicates(&self) -> usize {
        self.results
            .iter()
            .filter(|(_, _, r)| r.may_be_duplicated())
            .count()
    }
    pub fn with_attempts_over(&self, n: usize) -> usize {
        self.results
            .iter()
            .filter(|(_, _, r)| r.attempts.len() > n)
            .count()
    }
    pub fn successes(&self) -> usize {
        self.results
            .iter()
            .filter(|(_, _, r)| r.is_success())
            .count()
    }
    pub fn failures_with(&self, code: &str) -> usize {
        self.results
            .iter()
            .filter(|(_, _, r)| {
                !r.is_success() && r.error_code().map(ErrorCode::as_str) == Some(code)
            })
            .count()
    }
    pub fn attempts_with(&self, code: &str) -> usize {
        self.results
            .iter()
            .flat_map(|(_, _, r)| &r.attempts)
            .filter(|a| a.error_code().map(ErrorCode::as_str) == Some(code))
            .count()
    }
}

/// User records stored inside aggregates on a shard whose range does not hold their
/// hash key: a KCL consumer drops them, a consumer that does not filter by range
/// reads them as duplicates.
pub fn copies_outside_ranges(h: &Harness) -> usize {
    let ranges: HashMap<String, (HashKey, HashKey)> = h
        .kinesis
        .shards(STREAM)
        .unwrap()
        .into_iter()
        .map(|s| (s.shard_id, (s.starting_hash_key, s.ending_hash_key)))
        .collect();
    let mut n = 0;
    for record in h.kinesis.records(STREAM).unwrap() {
        let ehk = record.explicit_hash_key.map(|k| k.to_string());
        let (start, end) = ranges[&record.shard_id];
        for u in deaggregate(&record.partition_key, ehk.as_deref(), &record.data).unwrap() {
            let key = u.hash_key().unwrap();
            if key < start || key > end {
                n += 1;
            }
        }
    }
    n
}

/// Checks the invariants of every scenario and returns the outcomes:
/// - every accepted record resolved (exactly once: a result cannot be set twice);
/// - every success is stored in kpl-sim, byte-identical, on a shard whose range holds
///   its hash key, under the reported shard and sequence number;
/// - as a KCL consumer sees the stream (user records outside their shard's range
///   dropped), every success appears exactly once and no failure appears at all,
///   unless its outcome says otherwise: a success read more than once must say it
///   may be duplicated, a failure read at all must say it may have been stored;
/// - every failure carries its attempts, the last one with an error code.
pub fn check_invariants(h: &Harness, puts: &Arc<Mutex<Vec<Put>>>) -> Outcome {
    let stored = h.kinesis.records(STREAM).unwrap_or_default();
    let shards = h.kinesis.shards(STREAM).unwrap_or_default();
    check_invariants_against(h, puts, stored, shards)
}

/// [`check_invariants`] against what the stream held at some moment (a scenario that
/// deletes the stream reads it first).
pub fn check_invariants_against(
    h: &Harness,
    puts: &Arc<Mutex<Vec<Put>>>,
    stored: Vec<kpl_sim::StoredRecord>,
    shards: Vec<kpl_transport::ShardDescription>,
) -> Outcome {
    let puts = std::mem::take(&mut *puts.lock().unwrap());
    let mut results = Vec::new();
    for p in puts {
        let r = p.result().expect("every accepted record resolved");
        if let Source::Queued(_, q) = &p.source {
            assert_eq!(q.outcomes.pending(), 0, "an outcome queue still waits");
        }
        results.push((p.partition_key, p.data, r));
    }
    assert_eq!(h.producer.outstanding_records(), 0);

    let ranges: HashMap<String, (HashKey, HashKey)> = shards
        .into_iter()
        .map(|s| (s.shard_id, (s.starting_hash_key, s.ending_hash_key)))
        .collect();
    // What a consumer reads: (data) → (shard, sequence number), in-range only.
    let mut consumed: HashMap<Bytes, Vec<(String, String)>> = HashMap::new();
    for record in &stored {
        let ehk = record.explicit_hash_key.map(|k| k.to_string());
        let users = deaggregate(&record.partition_key, ehk.as_deref(), &record.data).unwrap();
        // No aggregate mixes shards: some shard of the stream's history holds every
        // user record of it.
        let keys: Vec<HashKey> = users.iter().map(|u| u.hash_key().unwrap()).collect();
        assert!(
            ranges
                .values()
                .any(|(s, e)| keys.iter().all(|k| s <= k && k <= e)),
            "an aggregate mixes the keys of several shards"
        );
        let (start, end) = ranges[&record.shard_id];
        for u in users {
            let key = u.hash_key().unwrap();
            if key < start || key > end {
                continue; // the KCL drops it
            }
            consumed
                .entry(Bytes::copy_from_slice(u.data))
                .or_default()
                .push((record.shard_id.clone(), record.sequence_number.clone()));
        }
    }
    let (mut duplicated, mut failed_but_stored) = (0, 0);
    for (pk, data, r) in &results {
        let seen = consumed.get(data).map_or(0, Vec::len);
        if r.is_success() {
            assert!(seen >= 1, "a success must reach a consumer ({pk})");
            if seen > 1 {
                assert!(
                    r.may_be_duplicated(),
                    "a success read {seen} times must say it may be duplicated ({pk}: {:?})",
                    r.attempts
                );
                duplicated += 1;
            }
            let copies = &consumed[data];
            let (shard, _) = copies
                .iter()
                .find(|(_, seq)| r.sequence_number.as_deref() == Some(seq.as_str()))
                .unwrap_or_else(|| {
                    panic!("the reported sequence number is not one a consumer reads ({pk})")
                });
            assert_eq!(
                r.shard_id.as_deref(),
                Some(shard.as_str()),
                "reported shard"
            );
            let (start, end) = ranges[shard];
            let key = HashKey::from_partition_key(pk);
            assert!(start <= key && key <= end);
            assert!(r.attempts.last().unwrap().is_success());
        } else if seen > 0 {
            assert!(
                r.may_have_been_stored(),
                "a failed record read by a consumer must say it may have been stored ({pk}: {:?})",
                r.attempts
            );
            failed_but_stored += 1;
        } else {
            assert!(!r.attempts.is_empty(), "failures carry their attempts");
            assert!(r.error_code().is_some());
        }
    }
    Outcome {
        results,
        duplicated,
        failed_but_stored,
    }
}

/// How many user records `stream` holds (its aggregates taken apart).
pub fn user_records(kinesis: &Simulator, stream: &str) -> usize {
    kinesis
        .records(stream)
        .unwrap()
        .iter()
        .map(|k| deaggregate(&k.partition_key, None, &k.data).unwrap().len())
        .sum()
}

/// Order as a KCL consumer reads the stream: shards parents first, each in sequence
/// order, user records outside their shard's range dropped, first copies only (a
/// record is its data). A record's place in its key's order is the first number in
/// its data (`record 00000012 ...`, `key-3 00000005`). Returns how many records are
/// read after a record of their key put later.
pub fn order_violations(
    stored: &[kpl_sim::StoredRecord],
    shards: &[kpl_transport::ShardDescription],
) -> usize {
    use std::collections::HashSet;
    // Parents before children.
    let known: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    let mut done: HashSet<&str> = HashSet::new();
    let mut order = Vec::new();
    while order.len() < shards.len() {
        let before = order.len();
        for s in shards {
            let parents_done = [&s.parent_shard_id, &s.adjacent_parent_shard_id]
                .into_iter()
                .flatten()
                .all(|p| done.contains(p.as_str()) || !known.contains(p.as_str()));
            if !done.contains(s.shard_id.as_str()) && parents_done {
                done.insert(&s.shard_id);
                order.push(s);
            }
        }
        assert!(order.len() > before, "shard lineage has a cycle");
    }
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut violations = 0;
    for shard in order {
        let mut records: Vec<_> = stored
            .iter()
            .filter(|r| r.shard_id == shard.shard_id)
            .collect();
        records.sort_by(|a, b| a.sequence_number.cmp(&b.sequence_number));
        for r in records {
            let ehk = r.explicit_hash_key.map(|k| k.to_string());
            let Ok(users) = deaggregate(&r.partition_key, ehk.as_deref(), &r.data) else {
                continue;
            };
            for u in users {
                let Ok(hk) = u.hash_key() else { continue };
                if hk < shard.starting_hash_key || hk > shard.ending_hash_key {
                    continue;
                }
                if !seen.insert(u.data.to_vec()) {
                    continue;
                }
                let Some(n) = std::str::from_utf8(u.data)
                    .ok()
                    .and_then(|t| t.split(' ').find_map(|w| w.parse::<u64>().ok()))
                else {
                    continue;
                };
                let prev = last.entry(u.partition_key.to_owned()).or_insert(n);
                if *prev > n {
                    violations += 1;
                } else {
                    *prev = n;
                }
            }
        }
    }
    violations
}
