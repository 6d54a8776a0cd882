//! The put API, one method per need, each with its contract (kpl-sim on virtual
//! time): `put_record` waits for room and gives a future, `put_records` does the
//! same for a batch, `try_put_records` never waits and says what held the rest
//! back, `try_put_records_to` puts the outcomes on a queue, and
//! `try_put_record_refs_to` does so for borrowed records.

// Tests hand record futures out of simulated tasks on purpose.
#![allow(clippy::async_yields_async)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use kpl_codec::deaggregate;
use kpl_producer::{
    Admitted, Config, Hold, Outcomes, Producer, PutErrorKind, PutRecord, PutRecordRef,
};
use kpl_runtime::{Simulation, Timer};
use kpl_sim::Simulator;

use common::user_records;

/// A producer on one stream of one shard holding at most `cap` records, which
/// keeps records buffered for a minute (only a flush, or the caps, send them).
fn capped(cap: usize) -> (Simulation, Simulator, Producer) {
    let sim = Simulation::new();
    let kinesis = Simulator::new(sim.runtime().timer().clone(), 7);
    kinesis.create_stream("a", 1).unwrap();
    let config = Config::builder()
        .record_max_buffered_time(Duration::from_secs(60))
        .max_outstanding_records(cap)
        .build()
        .unwrap();
    let producer = Producer::builder(config, Arc::new(kinesis.clone())).build(sim.runtime());
    (sim, kinesis, producer)
}

fn records(n: usize) -> Vec<PutRecord> {
    (0..n)
        .map(|i| PutRecord::new(format!("k{i}"), format!("record {i}")))
        .collect()
}

#[test]
fn put_record_waits_for_room_and_gives_the_records_future() {
    let (sim, kinesis, producer) = capped(1);
    let clock = sim.clock().clone();
    let p = producer.clone();
    let (first_settled_before_second_went_in, waited, second, invalid) = sim
        .block_on(async move {
            // Issue G's contract, as written.
            let first = p.put_record("a", PutRecord::new("k0", "v0")).await.unwrap();
            // The cap is reached: this waits until the first settles, and the
            // first is sent at once instead of after its minute in the buffer.
            let t0 = clock.now();
            let second = p.put_record("a", PutRecord::new("k1", "v1")).await.unwrap();
            let waited = clock.now() - t0;
            let settled = first.wait(Duration::ZERO).map(|r| r.is_success());
            // An invalid record is refused at once, whatever the room.
            let invalid = p
                .put_record("a", PutRecord::new("", "v"))
                .await
                .map(drop)
                .map_err(|e| e.kind());
            p.flush().await;
            (settled, waited, second.await, invalid)
        })
        .unwrap();
    assert_eq!(first_settled_before_second_went_in, Some(true));
    assert!(
        waited < Duration::from_secs(60),
        "the caps sent the buffered record at once: {waited:?}"
    );
    assert!(second.is_success());
    assert_eq!(invalid, Err(PutErrorKind::Invalid));
    assert_eq!(user_records(&kinesis, "a"), 2);
    // Shut down: nothing more goes in.
    let p = producer.clone();
    let late = sim
        .block_on(async move {
            p.shutdown(Duration::from_secs(1)).await;
            p.put_record("a", PutRecord::new("k", "v")).await.map(drop)
        })
        .unwrap();
    assert!(late.unwrap_err().is_shutting_down());
}

#[test]
fn put_records_waits_through_the_holds_and_gives_each_record_its_result() {
    let (sim, kinesis, producer) = capped(10);
    let mut batch = records(25);
    // An invalid record gets its error; the others go on.
    batch.insert(5, PutRecord::new("", "invalid"));
    let results = sim
        .block_on(async move {
            let pending = producer.put_records("a", batch).await.unwrap();
            // The last records are still buffered (for longer than they live).
            producer.flush().await;
            let mut results = Vec::new();
            for p in pending {
                results.push(match p {
                    Ok(f) => Ok(f.await),
                    Err(e) => Err(e.kind()),
                });
            }
            results
        })
        .unwrap();
    assert_eq!(results.len(), 26, "one result per record, in order");
    assert_eq!(results[5].as_ref().map(drop), Err(&PutErrorKind::Invalid));
    assert!(
        results
            .iter()
            .enumerate()
            .all(|(i, r)| i == 5 || r.as_ref().is_ok_and(|r| r.is_success()))
    );
    assert_eq!(user_records(&kinesis, "a"), 25);
}

#[test]
fn try_put_records_never_waits_and_says_what_held_the_rest_back() {
    let (sim, kinesis, producer) = capped(10);
    let mut batch = records(25);
    batch.insert(3, PutRecord::new("", "invalid"));
    let Admitted {
        results,
        rest,
        held_by,
    } = producer.try_put_records("a", batch).unwrap();
    // Ten taken (and the invalid one refused on the way), the rest handed back.
    assert_eq!(results.len(), 11);
    assert!(results[3].as_ref().is_err_and(|e| e.is_invalid()));
    assert_eq!(held_by, Some(Hold::Caps));
    assert_eq!(rest.len(), 15);
    assert_eq!(rest[0].partition_key, "k10", "the rest untouched, in order");
    // One record is a batch of one: held back the same way, never an error.
    let one = producer
        .try_put_records("a", vec![PutRecord::new("one", "x")])
        .unwrap();
    assert!(one.results.is_empty());
    assert_eq!(one.rest, vec![PutRecord::new("one", "x")]);
    assert_eq!(one.held_by, Some(Hold::Caps));
    // With wait_for_room, it is put_records in steps, every future in hand.
    let mut futures: Vec<_> = results.into_iter().filter_map(Result::ok).collect();
    let p = producer.clone();
    let outcomes = sim
        .block_on(async move {
            let mut rest = rest;
            while let Some(first) = rest.first() {
                p.wait_for_room("a", first.size()).await;
                let more = p.try_put_records("a", rest).unwrap();
                assert_eq!(more.held_by.is_some(), !more.rest.is_empty());
                futures.extend(more.results.into_iter().map(Result::unwrap));
                rest = more.rest;
            }
            // Everything fits: nothing held.
            p.flush().await;
            let all_in = p.try_put_records("a", records(3)).unwrap();
            assert_eq!((all_in.results.len(), all_in.held_by), (3, None));
            assert!(all_in.rest.is_empty());
            futures.extend(all_in.results.into_iter().map(Result::unwrap));
            p.flush().await;
            futures::future::join_all(futures).await
        })
        .unwrap();
    assert_eq!(outcomes.len(), 28);
    assert!(outcomes.iter().all(|r| r.is_success()));
    assert_eq!(user_records(&kinesis, "a"), 28);
    // Shutting down is the one error of the whole call.
    let p = producer.clone();
    sim.block_on(async move { p.shutdown(Duration::from_secs(1)).await })
        .unwrap();
    assert!(
        producer
            .try_put_records("a", records(1))
            .unwrap_err()
            .is_shutting_down()
    );
}

#[test]
fn try_put_records_to_puts_each_outcome_on_the_queue_once() {
    let (sim, kinesis, producer) = capped(10);
    let outcomes = Outcomes::new();
    let Admitted {
        results: ids,
        rest,
        held_by,
    } = producer
        .try_put_records_to("a", records(25), &outcomes)
        .unwrap();
    assert_eq!((ids.len(), rest.len()), (10, 15));
    assert_eq!(held_by, Some(Hold::Caps));
    assert_eq!(outcomes.pending(), 10);
    let mut ids: Vec<_> = ids.into_iter().map(Result::unwrap).collect();
    let (p, o) = (producer.clone(), outcomes.clone());
    let (more, settled) = sim
        .block_on(async move {
            let mut ids = Vec::new();
            let mut rest = rest;
            while let Some(first) = rest.first() {
                p.wait_for_room("a", first.size()).await;
                let more = p.try_put_records_to("a", rest, &o).unwrap();
                assert_eq!(more.held_by.is_some(), !more.rest.is_empty());
                ids.extend(more.results.into_iter().map(Result::unwrap));
                rest = more.rest;
            }
            p.flush().await;
            let mut settled = Vec::new();
            while o.pending() > 0 {
                settled.extend(o.next().await);
            }
            (ids, settled)
        })
        .unwrap();
    ids.extend(more);
    assert_eq!(ids.len(), 25);
    assert!(settled.iter().all(|(_, r)| r.is_success()));
    let mut settled: Vec<_> = settled.into_iter().map(|(id, _)| id).collect();
    ids.sort();
    settled.sort();
    assert_eq!(settled, ids, "each admitted record once");
    assert_eq!(user_records(&kinesis, "a"), 25);
}

#[test]
fn try_put_record_refs_to_copies_each_record_it_takes_and_hands_back_the_rest() {
    let (sim, kinesis, producer) = capped(10);
    let outcomes = Outcomes::new();
    // Small data, data over the packer's 4 KiB, an explicit hash key, an invalid
    // record (no key): one buffer of keys and one of data, as a caller holds them.
    let keys: String = (0..12).map(|i| format!("key-{i:02}")).collect();
    let mut data = Vec::new();
    let sizes: Vec<usize> = (0..12)
        .map(|i| if i == 5 { 5_000 } else { 10 + i })
        .collect();
    for (i, size) in sizes.iter().enumerate() {
        data.extend((0..*size).map(|j| (i * 31 + j) as u8));
    }
    type Stored = (String, Option<String>, Vec<u8>);
    let expected: Vec<Stored>;
    let (results, held_by) = {
        let mut at = 0;
        let refs: Vec<PutRecordRef<'_>> = sizes
            .iter()
            .enumerate()
            .map(|(i, size)| {
                let key = if i == 3 { "" } else { &keys[i * 6..i * 6 + 6] };
                let r = PutRecordRef::new(key, &data[at..at + size]);
                at += size;
                if i == 7 { r.explicit_hash_key("42") } else { r }
            })
            .collect();
        expected = refs
            .iter()
            .take(11)
            .filter(|r| !r.partition_key.is_empty())
            .map(|r| {
                let ehk = r.explicit_hash_key.map(str::to_owned);
                (r.partition_key.to_owned(), ehk, r.data.to_vec())
            })
            .collect();
        let admitted = producer
            .try_put_record_refs_to("a", &refs, &outcomes)
            .unwrap();
        // Held back: the last, as it was given.
        assert_eq!(admitted.rest, vec![refs[11]]);
        (admitted.results, admitted.held_by)
    };
    // The caller's buffers are its own again: the producer copied what it took.
    drop(keys);
    drop(data);
    assert_eq!(held_by, Some(Hold::Caps));
    assert_eq!(results.len(), 11);
    assert!(results[3].as_ref().is_err_and(|e| e.is_invalid()));
    assert_eq!(outcomes.pending(), 10);
    let o = outcomes.clone();
    let settled = sim
        .block_on(async move {
            producer.flush().await;
            let mut settled = Vec::new();
            while o.pending() > 0 {
                settled.extend(o.next().await);
            }
            settled
        })
        .unwrap();
    assert_eq!(settled.len(), 10);
    assert!(settled.iter().all(|(_, r)| r.is_success()));
    let mut stored: Vec<Stored> = kinesis
        .records("a")
        .unwrap()
        .iter()
        .flat_map(|k| {
            let ehk = k.explicit_hash_key.map(|h| h.to_string());
            deaggregate(&k.partition_key, ehk.as_deref(), &k.data)
                .unwrap()
                .into_iter()
                .map(|u| {
                    let ehk = u.explicit_hash_key.map(str::to_owned);
                    (u.partition_key.to_owned(), ehk, u.data.to_vec())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    stored.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(stored, expected, "each record taken stored once, as put");
    assert!(
        stored
            .iter()
            .any(|(_, ehk, _)| ehk.as_deref() == Some("42"))
    );
}
