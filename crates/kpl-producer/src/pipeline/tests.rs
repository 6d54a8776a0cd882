//! The pipeline's rules, stepped by hand with no runtime: records go in, requests
//! come out of `poll_transmit`, the test answers them (by hand, or by calling
//! kpl-sim's `put_records` and taking its ready answer), and time moves only when
//! the test sets it to what `poll_timeout` says.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use kpl_codec::{HashKey, deaggregate};
use kpl_runtime::{Timer, VirtualClock};
use kpl_shardmap::{Refresh, ShardInfo};
use kpl_sim::Simulator;
use kpl_transport::{
    EntryResult, ErrorKind, PutRecordsRequest, PutRecordsResponse, StreamId, Transport,
    TransportError,
};

use super::{Epoch, Rec, StreamPipeline, Transmit};
use crate::completers::Receipt;
use crate::config::{Config, ConfigBuilder};
use crate::result::{ErrorCode, RecordResult};

const THROTTLED: &str = "ProvisionedThroughputExceededException";

/// `n` shards splitting the hash range evenly, as the service makes them.
fn even_shards(n: u128) -> Vec<(ShardInfo, bool)> {
    let width = u128::MAX / n;
    (0..n)
        .map(|i| {
            let start = i * width;
            let end = if i == n - 1 {
                u128::MAX
            } else {
                start + width - 1
            };
            (
                ShardInfo::new(
                    format!("shardId-{i:012}"),
                    HashKey::new(start),
                    HashKey::new(end),
                ),
                false,
            )
        })
        .collect()
}

/// `n` partition keys, `key-0` on.
fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key-{i}")).collect()
}

/// The index of the even shard of `n` that holds `key`.
fn shard_of(key: HashKey, n: u128) -> u128 {
    (key.get() / (u128::MAX / n)).min(n - 1)
}

/// A pipeline, a hand-moved clock, and every outcome it settled (each id once).
struct Bench {
    p: StreamPipeline,
    now: Instant,
    next_id: u64,
    outcomes: HashMap<u64, RecordResult>,
}

impl Bench {
    fn new(config: ConfigBuilder) -> Self {
        let config: Config = config.seed(7).build().expect("config");
        let now = Instant::now();
        Self {
            p: StreamPipeline::new(StreamId::parse("s"), config, None, Epoch::new(now)),
            now,
            next_id: 0,
            outcomes: HashMap::new(),
        }
    }

    /// Puts one record now; returns its id.
    fn put(&mut self, key: &str, data: &'static [u8]) -> u64 {
        self.put_many(&[key], data)[0]
    }

    fn put_many(&mut self, keys: &[impl AsRef<str>], data: &'static [u8]) -> Vec<u64> {
        let (recs, ids) = self.records(keys, data);
        self.p.handle_put(recs, self.now);
        ids
    }

    /// Records under `keys` with `data`, put now, for one put; with their ids.
    fn records(&mut self, keys: &[impl AsRef<str>], data: &'static [u8]) -> (Vec<Rec>, Vec<u64>) {
        let mut recs = Vec::new();
        let mut ids = Vec::new();
        for key in keys {
            let key = key.as_ref();
            let id = self.next_id;
            self.next_id += 1;
            let receipt = Receipt::new(id);
            recs.push(Rec::new(
                key.to_owned(),
                None,
                HashKey::from_partition_key(key),
                Bytes::from_static(data),
                self.now,
                self.p.epoch,
                receipt,
            ));
            ids.push(id);
        }
        (recs, ids)
    }

    /// Every request due now.
    fn transmits(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.p.poll_transmit(self.now)).collect()
    }

    /// The one ListShards due now, answered with `shards`.
    fn answer_listing(&mut self, shards: Vec<(ShardInfo, bool)>) {
        let refresh = self.expect_listing();
        self.p.handle_shards(refresh, Ok(shards), self.now);
    }

    fn expect_listing(&mut self) -> Refresh {
        match self.p.poll_transmit(self.now) {
            Some(Transmit::ListShards { refresh, .. }) => refresh,
            Some(Transmit::PutRecords { .. }) => panic!("PutRecords before a ListShards"),
            Some(Transmit::MaxRecordSize) => panic!("MaxRecordSize with records up to 1 MiB"),
            Some(Transmit::ReadShard { .. }) => panic!("ReadShard before a ListShards"),
            None => panic!("no ListShards"),
        }
    }

    /// Moves the clock to the next moment anything is due; panics if nothing is.
    fn advance(&mut self) {
        let at = self.p.poll_timeout(self.now).expect("something is due");
        assert!(at >= self.now, "poll_timeout went back in time");
        self.now = at;
    }

    /// Moves the clock on until requests go; returns them.
    fn next_puts(&mut self) -> Vec<(u64, PutRecordsRequest)> {
        for _ in 0..1_000 {
            let sent = puts(self.transmits());
            if !sent.is_empty() {
                return sent;
            }
            self.advance();
        }
        panic!("no request after 1,000 steps");
    }

    /// Answers every request with `answer`, moving the clock on when nothing is
    /// sent, until `ids` all have an outcome.
    fn answer_until_settled(
        &mut self,
        mut pending: Vec<(u64, PutRecordsRequest)>,
        ids: &[u64],
        answer: impl Fn(&PutRecordsRequest) -> PutRecordsResponse,
    ) {
        while ids.iter().any(|id| !self.outcomes.contains_key(id)) {
            for (req, request) in pending.drain(..) {
                self.p.handle_answer(req, Ok(answer(&request)), self.now);
            }
            self.settle();
            pending = puts(self.transmits());
            if pending.is_empty() && ids.iter().any(|id| !self.outcomes.contains_key(id)) {
                self.advance();
                pending = puts(self.transmits());
            }
        }
    }

    /// Puts one record under `key` now and sends it at once; the service throttles
    /// it. Returns its id.
    fn put_throttled_once(&mut self, key: &str) -> u64 {
        let id = self.put(key, b"x");
        self.p.handle_flush();
        let (req, _) = puts(self.transmits()).remove(0);
        self.p.handle_answer(
            req,
            Ok(PutRecordsResponse::new(vec![failed(THROTTLED)])),
            self.now,
        );
        self.settle();
        id
    }

    /// Takes the outcomes settled so far; a record settled twice fails the test.
    fn settle(&mut self) {
        let settled = self.p.take_settled();
        assert_eq!(settled.outcomes.len(), settled.receipts.len());
        for ((id, result), (_, receipt)) in settled.outcomes.into_iter().zip(settled.receipts) {
            assert_eq!(
                id.0,
                receipt.id(),
                "outcomes and receipts in the same order"
            );
            assert!(
                self.outcomes.insert(id.0, result).is_none(),
                "record {} settled twice",
                id.0
            );
        }
    }
}

fn puts(transmits: Vec<Transmit>) -> Vec<(u64, PutRecordsRequest)> {
    transmits
        .into_iter()
        .map(|t| match t {
            Transmit::PutRecords { id, request } => (id, request),
            Transmit::ListShards { .. } => panic!("unexpected ListShards"),
            Transmit::MaxRecordSize => panic!("unexpected MaxRecordSize"),
            Transmit::ReadShard { .. } => panic!("unexpected ReadShard"),
        })
        .collect()
}

fn ok(shard: &str, seq: u64) -> EntryResult {
    EntryResult::Ok {
        shard_id: shard.to_owned(),
        sequence_number: seq.to_string(),
    }
}

fn failed(code: &str) -> EntryResult {
    EntryResult::Failed {
        code: code.to_owned(),
        message: format!("{code} (test)"),
    }
}

/// Every entry stored on the even shard of `n` its hash key says.
fn all_ok(request: &PutRecordsRequest, n: u128) -> PutRecordsResponse {
    PutRecordsResponse::new(
        request
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                ok(
                    &format!("shardId-{:012}", shard_of(e.hash_key(), n)),
                    i as u64,
                )
            })
            .collect(),
    )
}

#[test]
fn records_wait_for_the_first_map_and_leave_aggregated_per_shard_by_their_deadline() {
    let mut b = Bench::new(Config::builder().record_max_buffered_time(Duration::from_millis(100)));
    let keys = keys(40);
    // The first thing out is the listing; nothing is sent before the map.
    let refresh = b.expect_listing();
    let ids = b.put_many(&keys, b"payload");
    let start = b.now;
    assert!(b.transmits().is_empty());
    // The listing takes 5 ms; the records waited for it, and keep their deadline.
    b.now += Duration::from_millis(5);
    b.p.handle_shards(refresh, Ok(even_shards(4)), b.now);
    // Nothing leaves before the records' buffering time, all of it by its end.
    assert!(b.transmits().is_empty());
    let sent = b.next_puts();
    assert!(b.now > start, "waits for the deadline");
    assert!(
        b.now <= start + Duration::from_millis(100),
        "within record_max_buffered_time: {:?}",
        b.now - start
    );
    assert_eq!(sent.len(), 1, "one request");
    let (id, request) = &sent[0];
    // One aggregate per shard, each holding only records of that shard.
    let used: std::collections::HashSet<u128> = keys
        .iter()
        .map(|k| shard_of(HashKey::from_partition_key(k), 4))
        .collect();
    assert_eq!(request.entries.len(), used.len());
    let mut seen = 0;
    for entry in &request.entries {
        let shard = shard_of(entry.hash_key(), 4);
        let users = deaggregate(&entry.partition_key, None, &entry.data).expect("decodes");
        for u in &users {
            assert_eq!(
                shard_of(HashKey::from_partition_key(u.partition_key), 4),
                shard
            );
        }
        seen += users.len();
    }
    assert_eq!(seen, 40);
    let answer = all_ok(request, 4);
    b.p.handle_answer(*id, Ok(answer), b.now);
    b.settle();
    for id in ids {
        let r = &b.outcomes[&id];
        assert!(r.is_success());
        assert_eq!(r.attempts.len(), 1);
    }
    assert!(b.p.is_idle());
}

#[test]
fn a_throttled_record_is_retried_and_keeps_both_attempts() {
    let mut b = Bench::new(Config::builder());
    b.answer_listing(even_shards(1));
    let id = b.put_throttled_once("k");
    assert!(b.outcomes.is_empty(), "a throttled record is not settled");
    // It goes again later (after the limiter has slowed the shard).
    let mut resent = Vec::new();
    for _ in 0..10 {
        b.advance();
        resent = puts(b.transmits());
        if !resent.is_empty() {
            break;
        }
    }
    assert_eq!(resent.len(), 1, "sent again");
    let (req, request) = resent.remove(0);
    b.p.handle_answer(req, Ok(all_ok(&request, 1)), b.now);
    b.settle();
    let r = &b.outcomes[&id];
    assert!(r.is_success());
    assert_eq!(r.attempts.len(), 2);
    assert_eq!(
        r.attempts[0].error_code().map(ErrorCode::as_str),
        Some(THROTTLED)
    );
    assert!(!r.attempts[0].may_have_been_stored());
    assert!(!r.may_be_duplicated());
}

#[test]
fn a_request_refused_for_good_fails_its_records_at_once() {
    let mut b = Bench::new(Config::builder());
    b.answer_listing(even_shards(2));
    let ids = b.put_many(&["a", "b", "c"], b"x");
    b.p.handle_flush();
    for (req, _) in puts(b.transmits()) {
        b.p.handle_answer(
            req,
            Err(TransportError::new(ErrorKind::AccessDenied, "not allowed")
                .with_code("AccessDeniedException")),
            b.now,
        );
    }
    b.settle();
    for id in ids {
        let r = &b.outcomes[&id];
        assert!(!r.is_success());
        assert_eq!(r.attempts.len(), 1);
        assert_eq!(
            r.error_code().map(ErrorCode::as_str),
            Some("AccessDeniedException")
        );
    }
    assert!(b.transmits().is_empty(), "nothing is resent");
}

#[test]
fn a_late_answer_settles_what_was_not_resent_yet() {
    let mut b = Bench::new(Config::builder().request_timeout(Duration::from_secs(2)));
    b.answer_listing(even_shards(1));
    let id = b.put("k", b"x");
    b.p.handle_flush();
    let (req, request) = puts(b.transmits()).remove(0);
    let sent_at = b.now;
    // The request's timeout passes: nothing settles, nothing goes at once.
    b.advance();
    assert!(b.now >= sent_at + Duration::from_secs(2));
    assert!(b.transmits().is_empty(), "not resent at the timeout");
    b.settle();
    assert!(b.outcomes.is_empty());
    // The answer comes before the resend: stored once, one attempt.
    b.p.handle_answer(req, Ok(all_ok(&request, 1)), b.now);
    b.settle();
    let r = &b.outcomes[&id];
    assert!(r.is_success());
    assert_eq!(r.attempts.len(), 1);
    assert!(!r.may_be_duplicated());
    // Nothing is left to send.
    for _ in 0..3 {
        if let Some(at) = b.p.poll_timeout(b.now) {
            b.now = at.max(b.now);
        }
        assert!(puts(b.transmits()).is_empty());
    }
}

#[test]
fn a_record_resent_after_a_timeout_says_it_may_be_duplicated() {
    let mut b = Bench::new(Config::builder().request_timeout(Duration::from_secs(2)));
    b.answer_listing(even_shards(1));
    let id = b.put("k", b"x");
    b.p.handle_flush();
    let (first, _) = puts(b.transmits()).remove(0);
    // The timeout, then half a timeout more: resent.
    let mut resent = Vec::new();
    for _ in 0..5 {
        b.advance();
        resent = puts(b.transmits());
        if !resent.is_empty() {
            break;
        }
    }
    let (second, request) = resent.remove(0);
    assert_ne!(first, second);
    b.p.handle_answer(second, Ok(all_ok(&request, 1)), b.now);
    b.settle();
    let r = &b.outcomes[&id];
    assert!(r.is_success());
    assert_eq!(r.attempts.len(), 2);
    assert!(r.attempts[0].may_have_been_stored());
    assert!(r.may_be_duplicated());
    // The first answer, coming later still, settles nothing again.
    b.p.handle_answer(first, Ok(all_ok(&request, 1)), b.now);
    b.settle();
}

#[test]
fn a_record_that_never_gets_through_expires_once_at_its_time_to_live() {
    let ttl = Duration::from_secs(3);
    let mut b = Bench::new(Config::builder().record_ttl(ttl));
    b.answer_listing(even_shards(1));
    let id = b.put("k", b"x");
    let arrival = b.now;
    b.p.handle_flush();
    let mut attempts = 0;
    while !b.outcomes.contains_key(&id) {
        for (req, request) in puts(b.transmits()) {
            attempts += 1;
            let n = request.entries.len();
            b.p.handle_answer(
                req,
                Ok(PutRecordsResponse::new(vec![failed(THROTTLED); n])),
                b.now,
            );
        }
        b.settle();
        if b.outcomes.contains_key(&id) {
            break;
        }
        b.advance();
        assert!(b.now <= arrival + ttl, "settled by its time to live");
    }
    let r = &b.outcomes[&id];
    assert!(!r.is_success());
    assert_eq!(r.error_code(), Some(&ErrorCode::Expired));
    assert_eq!(r.attempts.len(), attempts + 1);
    assert!(attempts >= 2, "retried while it lived: {attempts}");
    assert!(!r.may_have_been_stored());
}

#[test]
fn the_congestion_window_starts_with_one_request_in_flight() {
    let mut b = Bench::new(Config::builder());
    b.answer_listing(even_shards(4));
    // About 2 MB over four shards: several requests' worth.
    let keys = keys(2_000);
    static DATA: [u8; 1_000] = [7; 1_000];
    let ids = b.put_many(&keys, &DATA);
    b.p.handle_flush();
    let first = b.next_puts();
    assert_eq!(first.len(), 1, "slow start: one request");
    // Until it is answered, nothing else goes (short of its timeout).
    let (req, request) = first.into_iter().next().expect("one");
    let sent_at = b.now;
    while b
        .p
        .poll_timeout(b.now)
        .is_some_and(|at| at < sent_at + Duration::from_secs(1))
    {
        b.advance();
        assert!(b.transmits().is_empty(), "a second request in slow start");
    }
    b.p.handle_answer(req, Ok(all_ok(&request, 4)), b.now);
    // One answer: slow start lets twice as much out, and no more until one is
    // answered.
    let answered_at = b.now;
    let mut next = puts(b.transmits());
    while b
        .p
        .poll_timeout(b.now)
        .is_some_and(|at| at < answered_at + Duration::from_secs(1))
    {
        b.advance();
        next.extend(puts(b.transmits()));
    }
    // The window counts 256 KiB a request: one request's worth at first, twice
    // that after one answer.
    let unit = 256 * 1024;
    let first_bytes = request.size();
    let next_bytes: usize = next.iter().map(|(_, r)| r.size()).sum();
    assert!(first_bytes <= unit, "first: {first_bytes}");
    assert!(
        next_bytes > first_bytes && next_bytes <= 2 * unit,
        "after one answer: {next_bytes} bytes in flight (first {first_bytes})"
    );
    // Answer everything from here on; every record settles once, stored.
    b.answer_until_settled(next, &ids, |request| all_ok(request, 4));
    assert!(ids.iter().all(|id| b.outcomes[id].is_success()));
}

#[test]
fn an_aggregate_landing_on_an_unknown_shard_waits_for_the_map_and_resends_what_is_out_of_range() {
    let mut b = Bench::new(Config::builder());
    b.answer_listing(even_shards(1));
    // Records on both halves of the one shard.
    let keys = keys(20);
    let ids = b.put_many(&keys, b"payload");
    b.p.handle_flush();
    let (req, request) = puts(b.transmits()).remove(0);
    assert_eq!(request.entries.len(), 1, "one aggregate");
    // Meanwhile the shard was split at its midpoint: the aggregate landed on the
    // child its first key says.
    let children = even_shards(2);
    let child = |i: u128| format!("shardId-{:012}", 1 + i);
    let landed = shard_of(request.entries[0].hash_key(), 2);
    b.p.handle_answer(
        req,
        Ok(PutRecordsResponse::new(vec![ok(&child(landed), 1)])),
        b.now,
    );
    b.settle();
    assert!(
        b.outcomes.is_empty(),
        "not settled before the map says where it is"
    );
    // A refresh is asked for; it lists the children (and the closed parent).
    let mut listing = vec![(even_shards(1).remove(0).0, true)];
    for (i, (s, _)) in children.into_iter().enumerate() {
        listing.push((ShardInfo::new(child(i as u128), s.start(), s.end()), false));
    }
    b.answer_listing(listing);
    b.settle();
    let in_range: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|&id| shard_of(HashKey::from_partition_key(&keys[id as usize]), 2) == landed)
        .collect();
    assert!(!in_range.is_empty() && in_range.len() < ids.len());
    for id in &in_range {
        let r = &b.outcomes[id];
        assert!(r.is_success());
        assert_eq!(r.shard_id.as_deref(), Some(child(landed).as_str()));
    }
    // The others are resent, raw or aggregated, to their own child.
    let resent = puts(b.transmits());
    b.answer_until_settled(resent, &ids, |request| {
        PutRecordsResponse::new(
            request
                .entries
                .iter()
                .map(|e| ok(&child(shard_of(e.hash_key(), 2)), 2))
                .collect(),
        )
    });
    for id in ids.iter().filter(|id| !in_range.contains(id)) {
        let r = &b.outcomes[id];
        assert!(r.is_success());
        assert_eq!(r.attempts.len(), 2);
        assert_eq!(r.attempts[0].error_code(), Some(&ErrorCode::WrongShard));
        assert!(r.attempts[0].may_have_been_stored());
        assert_ne!(r.shard_id.as_deref(), Some(child(landed).as_str()));
    }
}

#[test]
fn shutdown_fails_what_is_held_and_leaves_what_is_in_flight_to_its_answer() {
    let mut b = Bench::new(Config::builder());
    b.answer_listing(even_shards(1));
    let sent = b.put("sent", b"x");
    b.p.handle_flush();
    let (req, request) = puts(b.transmits()).remove(0);
    let held = b.put("held", b"y");
    assert_eq!(b.p.handle_shutdown(b.now), 1);
    b.settle();
    assert_eq!(b.outcomes[&held].error_code(), Some(&ErrorCode::Shutdown));
    assert!(!b.outcomes.contains_key(&sent));
    assert!(!b.p.is_idle(), "a request is in flight");
    b.p.handle_answer(req, Ok(all_ok(&request, 1)), b.now);
    b.settle();
    assert!(b.outcomes[&sent].is_success());
    assert!(b.p.is_idle());
}

/// After a shutdown, what a request in flight hands back (a connection that broke,
/// an entry throttled) fails as shut down with that attempt kept: nothing goes
/// round again until its time to live while the caller waits for the shutdown.
#[test]
fn after_a_shutdown_records_a_failed_request_hands_back_fail_at_once() {
    for broken in [true, false] {
        let (code, answer) = if broken {
            let e = TransportError::new(ErrorKind::Transient, "refused");
            ("ConnectionError", Err(e.with_code("ConnectionError")))
        } else {
            (
                THROTTLED,
                Ok(PutRecordsResponse::new(vec![failed(THROTTLED)])),
            )
        };
        let mut b = Bench::new(Config::builder().record_ttl(Duration::from_secs(120)));
        b.answer_listing(even_shards(1));
        let id = b.put("k", b"x");
        b.p.handle_flush();
        let (req, _) = puts(b.transmits()).remove(0);
        assert_eq!(b.p.handle_shutdown(b.now), 0, "{code}: in flight");
        b.now += Duration::from_millis(3);
        b.p.handle_answer(req, answer, b.now);
        assert!(
            b.transmits().is_empty(),
            "{code}: nothing is sent after a shutdown"
        );
        b.settle();
        let r = &b.outcomes[&id];
        assert_eq!(r.error_code(), Some(&ErrorCode::Shutdown), "{code}");
        assert_eq!(
            r.attempts.len(),
            2,
            "{code}: its failed attempt, then the shutdown"
        );
        assert_eq!(
            r.attempts[0].error_code().map(ErrorCode::as_str),
            Some(code)
        );
        assert!(b.p.is_idle(), "{code}");
        // Whatever is due later (the map's refresh) sends no record.
        if let Some(at) = b.p.poll_timeout(b.now) {
            b.now = at;
        }
        let later = b.transmits();
        assert!(
            !later
                .iter()
                .any(|t| matches!(t, Transmit::PutRecords { .. })),
            "{code}: nothing is resent"
        );
    }
}

#[test]
fn the_admission_limit_follows_the_shard_count() {
    let config = Config::builder().record_ttl(Duration::from_secs(60));
    let mut b = Bench::new(config.clone());
    let refresh = b.expect_listing();
    assert_eq!(b.p.poll_admission(), None, "no map, no new limit");
    b.p.handle_shards(refresh, Ok(even_shards(4)), b.now);
    assert!(b.transmits().is_empty());
    let limit = b.p.poll_admission().expect("a limit once the map is known");
    // What four shards store in a quarter of the time to live.
    assert_eq!(limit, 4 * (1 << 20) * 15);
    let config = config.seed(7).build().expect("config");
    assert_eq!(limit, super::drain_limit(&config, 4, None));
    assert_eq!(b.p.poll_admission(), None, "said once");
}

/// kpl-sim answers, called by hand: 5,000 records over 8 shards reach the service
/// once each, with outcomes that say where.
#[test]
fn stepped_against_kpl_sim_every_record_is_stored_once() {
    let clock = Arc::new(VirtualClock::new());
    let sim = Simulator::new(clock.clone(), 3);
    sim.create_stream("s", 8).expect("stream");
    let mut b = Bench::new(Config::builder().record_max_buffered_time(Duration::from_millis(50)));
    b.now = clock.now();
    let keys: Vec<String> = (0..5_000).map(|i| format!("user-{i}")).collect();
    let mut ids = Vec::new();
    let mut next = 0;
    let answer = |t: Transmit, b: &mut Bench| match t {
        Transmit::ListShards { refresh, open_only } => {
            let shards = sim
                .shards("s")
                .expect("shards")
                .into_iter()
                .filter(|s| !open_only || !s.closed)
                .map(|s| {
                    (
                        ShardInfo::new(s.shard_id, s.starting_hash_key, s.ending_hash_key),
                        s.closed,
                    )
                })
                .collect();
            b.p.handle_shards(refresh, Ok(shards), b.now);
        }
        Transmit::PutRecords { id, request } => {
            let result = sim
                .put_records(request)
                .now_or_never()
                .expect("kpl-sim answers at once without faults");
            b.p.handle_answer(id, result, b.now);
        }
        Transmit::MaxRecordSize => {
            let result = Transport::max_record_size(&sim, &StreamId::parse("s"))
                .now_or_never()
                .expect("kpl-sim answers at once");
            b.p.handle_max_record_size(result, b.now);
        }
        Transmit::ReadShard { .. } => panic!("a read without verify before resend"),
    };
    while b.outcomes.len() < keys.len() {
        // 500 records every 10 ms.
        if next < keys.len() {
            let batch: Vec<&str> = keys[next..(next + 500).min(keys.len())]
                .iter()
                .map(String::as_str)
                .collect();
            next += batch.len();
            ids.extend(b.put_many(&batch, b"some data"));
        }
        while let Some(t) = b.p.poll_transmit(b.now) {
            answer(t, &mut b);
        }
        b.settle();
        let wake = b.p.poll_timeout(b.now);
        let step = b.now + Duration::from_millis(10);
        b.now = match wake {
            Some(at) if next >= keys.len() => at.max(b.now),
            Some(at) => at.clamp(b.now, step),
            None => step,
        };
        clock.advance_to(b.now);
    }
    assert!(ids.iter().all(|id| b.outcomes[id].is_success()));
    // What the service holds: each user record once, on the shard its key says.
    let stored = sim.records("s").expect("records");
    let shards = sim.shards("s").expect("shards");
    let mut count: HashMap<String, usize> = HashMap::new();
    for k in &stored {
        for u in deaggregate(&k.partition_key, None, &k.data).expect("decodes") {
            let key = HashKey::from_partition_key(u.partition_key);
            let home = shards
                .iter()
                .find(|s| s.starting_hash_key <= key && key <= s.ending_hash_key)
                .expect("a shard");
            assert_eq!(home.shard_id, k.shard_id, "stored in its shard's range");
            *count.entry(u.partition_key.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(count.len(), keys.len());
    assert!(count.values().all(|&n| n == 1));
    assert!(
        stored.len() < keys.len() / 10,
        "aggregated: {}",
        stored.len()
    );
}

/// Until the stream's record limit is read, 1 MiB applies: a larger raw record waits
/// for the answer, then goes (the stream's limit is 10 MiB) or fails as too large
/// (the service says nothing: 1 MiB), unsent.
#[test]
fn a_record_over_1_mib_waits_for_the_streams_limit() {
    let big: &'static [u8] = Box::leak(vec![b'x'; 2 << 20].into_boxed_slice());
    for (limit, sent) in [(Some(10 << 20), true), (None, false)] {
        let mut b = Bench::new(
            Config::builder()
                .max_user_record_size(10 << 20)
                .record_max_buffered_time(Duration::from_millis(10)),
        );
        let id = b.put("k", big);
        let mut asked = false;
        let mut refresh = None;
        for t in b.transmits() {
            match t {
                Transmit::MaxRecordSize => asked = true,
                Transmit::ListShards { refresh: r, .. } => refresh = Some(r),
                _ => panic!("only the limit and the listing are asked for first"),
            }
        }
        assert!(asked, "the limit is asked for");
        b.p.handle_shards(refresh.expect("a listing"), Ok(even_shards(1)), b.now);
        for _ in 0..20 {
            assert!(
                puts(b.transmits()).is_empty(),
                "sent before the limit is known"
            );
            if b.p.poll_timeout(b.now).is_none() {
                break;
            }
            b.advance();
        }
        b.p.handle_max_record_size(Ok(limit), b.now);
        if sent {
            let out = b.next_puts();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].1.entries[0].data.len(), 2 << 20);
        } else {
            assert!(puts(b.transmits()).is_empty());
            b.settle();
            let r = &b.outcomes[&id];
            assert!(!r.is_success());
            assert_eq!(r.error_code(), Some(&ErrorCode::RecordTooLarge));
        }
    }
}

#[test]
fn records_stored_by_their_first_attempt_get_the_outcome_that_attempt_makes() {
    let mut b = Bench::new(Config::builder());
    b.answer_listing(even_shards(1));
    // A record throttled once: its outcome keeps its history.
    let retried = b.put_throttled_once("retried");
    let early = b.put("early", b"x");
    let put_early = b.now;
    b.now += Duration::from_millis(30);
    let late = b.put("late", b"x");
    let put_late = b.now;
    b.p.handle_flush();
    let sent = b.next_puts();
    let sent_at = b.now;
    b.now += Duration::from_millis(7);
    for (req, request) in sent {
        b.p.handle_answer(req, Ok(all_ok(&request, 1)), b.now);
    }
    b.settle();
    b.answer_until_settled(Vec::new(), &[retried], |r| all_ok(r, 1));
    let shard: Arc<str> = "shardId-000000000000".into();
    for (id, put_at) in [(early, put_early), (late, put_late)] {
        let r = &b.outcomes[&id];
        let expected = RecordResult {
            success: true,
            shard_id: Some(shard.clone()),
            sequence_number: r.sequence_number.clone(),
            attempts: crate::result::Attempts::one(crate::result::Attempt {
                started: sent_at,
                delay: sent_at - put_at,
                duration: Duration::from_millis(7),
                shard_id: Some(shard.clone()),
                outcome: Ok(()),
            }),
        };
        assert_eq!(*r, expected, "record {id}");
    }
    // One aggregate: one sequence number, shared.
    let (e, l) = (&b.outcomes[&early], &b.outcomes[&late]);
    assert!(e.sequence_number.is_some());
    assert!(Arc::ptr_eq(
        e.sequence_number.as_ref().expect("stored"),
        l.sequence_number.as_ref().expect("stored")
    ));
    let r = &b.outcomes[&retried];
    assert!(r.is_success());
    assert_eq!(r.attempts.len(), 2);
    assert_eq!(
        r.attempts[0].error_code(),
        Some(&ErrorCode::from(THROTTLED))
    );
    assert_eq!(r.attempts[1].shard_id, Some(shard));
    assert!(b.p.is_idle());
}

/// A put's records wait in the put's own vector (the aggregation's slab adopts
/// it): not moved from where the put wrote them until sealed, and the vector freed
/// once the last of them is.
#[test]
fn a_puts_records_wait_in_its_own_vector_until_the_last_of_them_is_sealed() {
    let mut b = Bench::new(Config::builder());
    b.answer_listing(even_shards(2));
    let (recs, ids) = b.records(&keys(8), b"d");
    let (from, to) = (recs.as_ptr(), recs.as_ptr().wrapping_add(recs.len()));
    b.p.handle_put(recs, b.now);
    let slab = b.p.aggregation.slab();
    assert_eq!((slab.len(), slab.chunks()), (8, 1));
    assert!(
        slab.values()
            .all(|r| (from..to).contains(&std::ptr::from_ref(r))),
        "held where the put wrote them"
    );
    let sent = b.next_puts();
    let slab = b.p.aggregation.slab();
    assert_eq!(
        (slab.len(), slab.chunks()),
        (0, 0),
        "sealed, the vector is freed"
    );
    b.answer_until_settled(sent, &ids, |r| all_ok(r, 2));
    assert!(ids.iter().all(|id| b.outcomes[id].is_success()));
}
